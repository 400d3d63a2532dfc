#!/bin/sh
# Runs once, on the first start of the postgres service: Prefect's own database beside MLflow's.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" -c "CREATE DATABASE prefect"
