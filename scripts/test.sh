#!/usr/bin/env bash
# Runs every test: unit tests and the HTTP suite on SQLite, then the HTTP suite again on
# Postgres (a fresh database, dropped afterwards).
#
#   TEST_POSTGRES_URL   server to use (default postgres://postgres@127.0.0.1:5432)
#   REQUIRE_POSTGRES=1  fail instead of skipping when Postgres is not reachable (set in CI)
set -euo pipefail
cd "$(dirname "$0")/.."

pg_server=${TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432}
log=$(mktemp)
trap 'rm -f "$log"' EXIT

echo "== tests on SQLite"
cargo test --all-targets

echo "== tests on Postgres ($pg_server)"
if ! psql "$pg_server/postgres" -Atqc 'select 1' >/dev/null 2>&1; then
    if [ "${REQUIRE_POSTGRES:-0}" = 1 ]; then
        echo "FAIL: Postgres at $pg_server is not reachable and REQUIRE_POSTGRES=1" >&2
        exit 1
    fi
    echo "SKIPPED: Postgres at $pg_server is not reachable (set REQUIRE_POSTGRES=1 to fail)"
    exit 0
fi
database="spektr_test_$$"
psql "$pg_server/postgres" -qc "create database $database" >/dev/null
trap 'psql "$pg_server/postgres" -qc "drop database if exists $database with (force)" >/dev/null 2>&1; rm -f "$log"' EXIT
TEST_DATABASE_URL="$pg_server/$database" cargo test --test api 2>&1 | tee "$log"
passed=$(grep -Eo 'test result: ok\. [0-9]+ passed' "$log" | grep -Eo '[0-9]+' | head -1 || true)
if [ -z "$passed" ] || [ "$passed" -eq 0 ]; then
    echo "FAIL: the Postgres run executed no tests" >&2
    exit 1
fi
echo "Postgres: $passed tests passed"
