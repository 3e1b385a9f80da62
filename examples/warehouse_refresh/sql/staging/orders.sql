-- sql/staging/orders.sql
CREATE OR REPLACE TABLE {{ target_table }} AS
SELECT *
FROM source.orders
WHERE ordered_at > DATE_SUB(CURRENT_DATE(), INTERVAL {{ days_back }} DAY)
