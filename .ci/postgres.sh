#!/usr/bin/env bash
# Make sure a local PostgreSQL runs and has the test role and database; idempotent.
# Prints the URL the tests use.
set -euo pipefail
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "installing: postgresql" >&2
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi
version="$(ls /etc/postgresql | sort -V | tail -1)"
if [ -z "$version" ]; then
    echo "no PostgreSQL cluster configured under /etc/postgresql" >&2
    exit 1
fi
if ! pg_lsclusters -h | awk -v v="$version" '$1==v && $2=="main" {print $4}' | grep -q online; then
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2
fi
psql_as_postgres() { $SUDO su postgres -c "psql -v ON_ERROR_STOP=1 -qtA $*"; }
for _ in $(seq 1 50); do
    psql_as_postgres "-c 'select 1'" >/dev/null 2>&1 && break
    sleep 0.2
done
if [ "$(psql_as_postgres "-c \"select 1 from pg_roles where rolname='stager'\"")" != "1" ]; then
    psql_as_postgres "-c \"create role stager login password 'stager-test-only' createdb\"" >&2
fi
if [ "$(psql_as_postgres "-c \"select 1 from pg_database where datname='stager_test'\"")" != "1" ]; then
    psql_as_postgres "-c 'create database stager_test owner stager'" >&2
fi
port="$(pg_lsclusters -h | awk -v v="$version" '$1==v && $2=="main" {print $3}')"
echo "postgresql://stager:stager-test-only@127.0.0.1:${port}/stager_test"
