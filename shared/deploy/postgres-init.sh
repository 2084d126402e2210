#!/bin/sh
# Runs once, when the postgres container initialises its data directory (docker-entrypoint-initdb.d).
# Group roles carry the grants (made by `ledgerq init`, migration 0002); these login users join them.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v api_password="$LEDGERQ_API_DB_PASSWORD" -v worker_password="$LEDGERQ_WORKER_DB_PASSWORD" <<'SQL'
CREATE ROLE ledgerq_api NOLOGIN;
CREATE ROLE ledgerq_worker NOLOGIN;
CREATE ROLE ledgerq_api_login LOGIN PASSWORD :'api_password' IN ROLE ledgerq_api;
CREATE ROLE ledgerq_worker_login LOGIN PASSWORD :'worker_password' IN ROLE ledgerq_worker;
SQL
