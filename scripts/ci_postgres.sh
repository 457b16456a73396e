#!/usr/bin/env bash
# PostgreSQL for the study-storage test (tests/test_study_postgres.py): the server binaries
# (initdb, pg_ctl; apt-get when missing) and the Python driver (the 'postgres' extra) in $VENV.
# The test starts and stops its own throw-away server; nothing here starts a service.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${VENV:-.venv}"
have_server() {
    command -v initdb >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}
if ! have_server; then
    if command -v apt-get >/dev/null 2>&1; then
        sudo=""
        if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
    else
        echo "ci_postgres: no apt-get here; the PostgreSQL test will be skipped" >&2
    fi
fi
"$venv/bin/python" -m pip install --quiet -e ".[postgres]"
if have_server; then echo "ci_postgres: PostgreSQL server binaries and psycopg are ready"; fi
