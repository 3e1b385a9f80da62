-- Datasets and source tables for running warehouse_refresh against the local emulator.
-- Dates are relative to today, so the workflow's "last N days" filters always pick the same rows.
CREATE SCHEMA IF NOT EXISTS source;
CREATE SCHEMA IF NOT EXISTS staging;
CREATE SCHEMA IF NOT EXISTS warehouse;
CREATE OR REPLACE TABLE source.users (id INT64, name STRING, status STRING, updated_at DATE);
INSERT INTO source.users (id, name, status, updated_at) VALUES
  (1, 'ada', 'active', DATE_SUB(CURRENT_DATE(), INTERVAL 1 DAY)),
  (2, 'grace', 'active', DATE_SUB(CURRENT_DATE(), INTERVAL 3 DAY)),
  (3, 'linus', 'inactive', DATE_SUB(CURRENT_DATE(), INTERVAL 2 DAY)),
  (4, 'edsger', 'active', DATE_SUB(CURRENT_DATE(), INTERVAL 40 DAY));
CREATE OR REPLACE TABLE source.orders (id INT64, user_id INT64, amount FLOAT64, ordered_at DATE);
INSERT INTO source.orders (id, user_id, amount, ordered_at) VALUES
  (10, 1, 12.5, DATE_SUB(CURRENT_DATE(), INTERVAL 1 DAY)),
  (11, 1, 7.5, DATE_SUB(CURRENT_DATE(), INTERVAL 5 DAY)),
  (12, 2, 30.0, DATE_SUB(CURRENT_DATE(), INTERVAL 10 DAY)),
  (13, 3, 99.0, DATE_SUB(CURRENT_DATE(), INTERVAL 2 DAY)),
  (14, 2, 5.0, DATE_SUB(CURRENT_DATE(), INTERVAL 90 DAY));
