-- The prediction warehouse lives beside Airflow's metadata DB, owned (like it) by the superuser
-- POSTGRES_USER. No passwords here: airflow-init runs `stpipe warehouse roles`, which applies
-- the schema (sql/NNN_*.sql) and creates the login roles stpipe_writer and stpipe_analyst with
-- the passwords of docker/.env. Runs only when the postgres-data volume is first created.
CREATE DATABASE warehouse;
-- Only the superuser connects to Airflow's metadata DB (PostgreSQL lets PUBLIC connect by default).
REVOKE ALL ON DATABASE airflow FROM PUBLIC;
