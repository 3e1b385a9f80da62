-- sql/warehouse/facts.sql
-- Built from stage_users ({{ stage_users.bytes_processed }} bytes processed)
-- and stage_orders ({{ stage_orders.bytes_processed }} bytes processed).
CREATE OR REPLACE TABLE {{ target_table }} AS
SELECT
  u.id AS user_id,
  u.name,
  COUNT(o.id) AS orders,
  COALESCE(SUM(o.amount), 0) AS revenue
FROM staging.users AS u
LEFT JOIN staging.orders AS o ON o.user_id = u.id
GROUP BY u.id, u.name
