#!/usr/bin/env bash
# Property-based fuzzing of the HTTP API against its own OpenAPI document, with schemathesis.
#
# Builds the server (debug), starts it on a fresh SQLite file with examples/bootstrap.json and
# an admin token, and runs schemathesis against GET /openapi.json with both credentials. Every
# generated request must get an answer that is not a 5xx and that matches the document: status
# code, content type, headers and body schema. Any finding fails the script.
#
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
cleanup() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base=http://127.0.0.1:$port

# No webhook ever leaves the machine: the delivery worker is off, and endpoints may only be
# registered for the loopback address (others answer 400).
DATABASE_URL="sqlite://$work/fuzz.db" BIND_ADDR="127.0.0.1:$port" ADMIN_TOKEN="$admin_token" \
    BOOTSTRAP_FILE=examples/bootstrap.json SPEKTR_DELIVERY_ENABLED=false \
    SPEKTR_WEBHOOK_ALLOWED_HOSTS=127.0.0.1 RUST_LOG=warn \
    target/debug/spektr-server >"$work/server.log" 2>&1 &
server_pid=$!

for _ in $(seq 1 100); do
    curl -fsS "$base/readyz" >/dev/null 2>&1 && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log"; echo "FAIL: server exited" >&2; exit 1; }
    sleep 0.1
done
curl -fsS "$base/readyz" >/dev/null

echo "== schemathesis $SCHEMATHESIS_VERSION: $max_examples examples per operation, seed $seed"
status=0
"$venv/bin/schemathesis" --config-file scripts/fuzz-api.toml run "$base/openapi.json" \
    --header "x-api-key: $api_key" \
    --header "Authorization: Bearer $admin_token" \
    --checks "${FUZZ_CHECKS:-not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance}" \
    --max-examples "$max_examples" --seed "$seed" --workers "$workers" \
    --request-timeout 10 --no-color --report junit --report-dir target/fuzz-report \
    || status=$?

if grep -q "panicked" "$work/server.log"; then
    echo "FAIL: the server panicked during fuzzing:" >&2
    grep -B2 -A5 "panicked" "$work/server.log" >&2
    status=1
fi
if [ "$status" -ne 0 ]; then
    echo "FAIL: schemathesis reported findings (exit $status); server log: " >&2
    tail -50 "$work/server.log" >&2
    exit 1
fi
echo "PASS: no findings"
