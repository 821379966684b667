-- The trace store's own database, next to the lead database (docker-compose.yml's
-- LAB_TRACE_STORE_URL). The official image runs this once, as POSTGRES_USER, on an empty volume;
-- the lab creates the tables itself.
CREATE DATABASE lab_traces;
