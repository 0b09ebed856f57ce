-- The prediction warehouse lives beside Airflow's metadata DB; stpipe applies its own schema
-- (sql/NNN_*.sql) on first connection.
CREATE USER stpipe WITH PASSWORD 'stpipe';
CREATE DATABASE warehouse OWNER stpipe;
