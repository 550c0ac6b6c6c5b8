#!/usr/bin/env bash
# Property-based fuzzing of the HTTP API against its own OpenAPI document, with schemathesis.
#
# Builds the server (debug), starts it on a fresh SQLite file with examples/bootstrap.json and
# an admin token, and runs schemathesis against GET /openapi.json, with each operation's
# credentials taken from its security schemes (scripts/fuzz-api.toml). Every generated request
# must get an answer that is not a 5xx and that matches the document: status code, content
# type, headers and body schema; and each public action must have succeeded at least once, so
# that a run stopped at the door fails. Any finding fails the script. With FUZZ_POSTGRES_URL
# set, the same run follows on a fresh Postgres database.
#
#   FUZZ_POSTGRES_URL   a Postgres server (postgres://user@host:port); unset = SQLite only
#   FUZZ_MAX_EXAMPLES   test cases per operation and phase (default 40)
#   FUZZ_SEED           schemathesis seed (default fixed, so CI runs are repeatable)
#   FUZZ_WORKERS        concurrent workers (default 2)
#
# schemathesis is installed, pinned, into target/fuzz-venv (created on first use).
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
venv=target/fuzz-venv
max_examples=${FUZZ_MAX_EXAMPLES:-40}
seed=${FUZZ_SEED:-20261203}
workers=${FUZZ_WORKERS:-2}
admin_token=fuzz-admin-token-0123456789
api_key=$(python3 -c 'import json; print(json.load(open("examples/bootstrap.json"))["workspaces"][0]["apiKeys"][0])')

if [ "$("$venv/bin/schemathesis" --version 2>/dev/null)" != "schemathesis, version $SCHEMATHESIS_VERSION" ]; then
    echo "== installing schemathesis $SCHEMATHESIS_VERSION into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

echo "== building the server"
cargo build --quiet --bin spektr-server

work=$(mktemp -d)
server_pid=
database=
cleanup() {
    stop_server
    if [ -n "$database" ]; then
        psql "$FUZZ_POSTGRES_URL/postgres" -qc "drop database if exists $database with (force)" \
            >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
stop_server() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=
    fi
}
trap cleanup EXIT

# fuzz NAME DATABASE_URL: one server on that database, one schemathesis run against it.
fuzz() {
    local name=$1 database_url=$2 port base status=0 metrics series
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    base=http://127.0.0.1:$port
    echo "== $name: schemathesis $SCHEMATHESIS_VERSION, $max_examples examples per operation, seed $seed"

    # No webhook ever leaves the machine: the delivery worker is off, and endpoints may only
    # be registered for the loopback address (others answer 400).
    DATABASE_URL="$database_url" BIND_ADDR="127.0.0.1:$port" ADMIN_TOKEN="$admin_token" \
        BOOTSTRAP_FILE=examples/bootstrap.json SPEKTR_DELIVERY_ENABLED=false \
        SPEKTR_WEBHOOK_ALLOWED_HOSTS=127.0.0.1 RUST_LOG=warn \
        target/debug/spektr-server >"$work/$name.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 1 100); do
        curl -fsS "$base/readyz" >/dev/null 2>&1 && break
        kill -0 "$server_pid" 2>/dev/null || { cat "$work/$name.log"; echo "FAIL: server exited" >&2; exit 1; }
        sleep 0.1
    done
    curl -fsS "$base/readyz" >/dev/null

    # A run whose requests all bounced off authentication or routing would pass while testing
    # nothing: each public action must have answered with success at least once. Whether the
    # stateful phase pairs a fresh token with a valid payload is luck (two workers race), so a
    # run that found nothing but missed a success is followed by up to two more, with other
    # seeds, on the same server; the successes may come from any of them.
    local attempt
    local -a missing=()
    for attempt in 0 1 2; do
        FUZZ_API_KEY=$api_key FUZZ_ADMIN_TOKEN=$admin_token \
        "$venv/bin/schemathesis" --config-file scripts/fuzz-api.toml run "$base/openapi.json" \
            --checks "${FUZZ_CHECKS:-not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance}" \
            --max-examples "$max_examples" --seed "$((seed + attempt))" --workers "$workers" \
            --request-timeout 10 --no-color --report junit --report-dir "target/fuzz-report/$name" \
            || status=$?
        [ "$status" -eq 0 ] || break
        metrics=$(curl -fsS "$base/metrics")
        missing=()
        for series in 'route="/v2/public/actions/processId/{processId}/workspaceId/{workspaceId}",method="POST",status="201"' \
                      'route="/v2/public/actions/{token}",method="GET",status="200"' \
                      'route="/v3/public/actions/{token}",method="POST",status="200"'; do
            grep -qF "spektr_http_requests_total{$series}" <<<"$metrics" || missing+=("$series")
        done
        [ "${#missing[@]}" -eq 0 ] && break
        echo "== $name: no success yet for ${missing[*]}; another run (seed $((seed + attempt + 1)))"
    done
    if [ "$status" -eq 0 ] && [ "${#missing[@]}" -gt 0 ]; then
        for series in "${missing[@]}"; do
            echo "FAIL: no successful request reached $series" >&2
        done
        status=1
    fi
    stop_server

    if grep -q "panicked" "$work/$name.log"; then
        echo "FAIL: the server panicked during fuzzing:" >&2
        grep -B2 -A5 "panicked" "$work/$name.log" >&2
        status=1
    fi
    if [ "$status" -ne 0 ]; then
        echo "FAIL: $name: schemathesis reported findings (exit $status); server log:" >&2
        tail -50 "$work/$name.log" >&2
        exit 1
    fi
    echo "PASS: $name: no findings"
}

fuzz sqlite "sqlite://$work/fuzz.db"
if [ -n "${FUZZ_POSTGRES_URL:-}" ]; then
    database="spektr_fuzz_$$"
    psql "$FUZZ_POSTGRES_URL/postgres" -qc "create database $database" >/dev/null
    fuzz postgres "$FUZZ_POSTGRES_URL/$database"
fi
