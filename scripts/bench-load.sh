#!/usr/bin/env bash
# Load benchmark of the public API, on Postgres and/or SQLite, with a Postgres ceiling.
#
#   scripts/bench-load.sh [postgres|sqlite|all]      (default all)
#   BENCH_QUICK=1 scripts/bench-load.sh              (a few minutes, to check that it works)
#
# For each backend, in order (docs/benchmarks.md explains every figure):
#   1. builds the release server and examples/bench_load.rs;
#   2. creates a fresh database and times the server's start-up twice (exec until /healthz
#      answers): on the empty database (migrations, bootstrap) and once more on the migrated
#      one; then reads the idle RSS;
#   3. runs examples/bench_load.rs against it: start, current step, submit invalid, submit
#      valid and whole lifecycles, at each concurrency, each for BENCH_STEP_SECS, with the
#      server's CPU and memory;
#   4. Postgres only: stops the server and runs pgbench with the statements the server
#      issues for each kind of request (bench/pgbench/*.sql), at the same concurrency and on
#      the same database, as the ceiling;
# then (Postgres, unless BENCH_SWEEPER=0) runs scripts/bench-sweeper.sh for the sweeper
# figures, and prints one summary with the issue's targets.
#
# Settings (environment):
#   BENCH_QUICK=1              short steps, a small sweeper run (defaults marked q: below)
#   BENCH_STEP_SECS            measured seconds per step (10; q: 3)
#   BENCH_WARMUP_SECS          unmeasured seconds before each step (1; q: 0.5)
#   BENCH_CONCURRENCY          comma-separated (1,8,32,128)
#   BENCH_CEILING_MAX_CLIENTS  most pgbench clients (the server's pool size, 10 unless
#                              BENCH_DB_MAX_CONNECTIONS says otherwise): the server never
#                              has more transactions in Postgres than that, and more
#                              clients only make Postgres slower on 2 cores
#   BENCH_SWEEPER=0            skip the sweeper run
#   BENCH_SWEEPER_BACKLOG, BENCH_SWEEPER_BURST, BENCH_SWEEPER_RATE, BENCH_SWEEPER_SECS
#                              passed to bench-sweeper.sh (100000, 100000, 500, 20;
#                              q: 10000, 10000, 500, 5)
#   BENCH_POSTGRES_URL         Postgres server without a database name
#                              (postgres://postgres@127.0.0.1:5432)
#   BENCH_PORT                 server port on 127.0.0.1 (18182)
#   BENCH_DB_MAX_CONNECTIONS   server pool size (server default when unset)
#   BENCH_SERVER_BIN           server binary to measure (target/release/spektr-server), e.g.
#                              a copy built from another commit, for an A/B comparison
#   BENCH_OUT_DIR              results, logs, raw lines (target/bench-load)
#   BENCH_KEEP_DB=1            keep the Postgres database
set -euo pipefail
cd "$(dirname "$0")/.."

backends=${1:-all}
case $backends in
    all) backends="postgres sqlite" ;;
    postgres | sqlite) ;;
    *) echo "usage: $0 [postgres|sqlite|all]" >&2; exit 2 ;;
esac
quick=${BENCH_QUICK:-0}
q() { [ "$quick" = 1 ] && echo "$2" || echo "$1"; }
step_secs=${BENCH_STEP_SECS:-$(q 10 3)}
warmup_secs=${BENCH_WARMUP_SECS:-$(q 1 0.5)}
concurrency=${BENCH_CONCURRENCY:-1,8,32,128}
ceiling_max=${BENCH_CEILING_MAX_CLIENTS:-${BENCH_DB_MAX_CONNECTIONS:-10}}
pg_server=${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432}
pg_server=${pg_server%/}
port=${BENCH_PORT:-18182}
out_dir=${BENCH_OUT_DIR:-target/bench-load}

[[ $concurrency =~ ^[0-9]+(,[0-9]+)*$ ]] || { echo "FAIL: BENCH_CONCURRENCY: e.g. 1,8,32" >&2; exit 2; }
[[ $ceiling_max =~ ^[1-9][0-9]*$ ]] || { echo "FAIL: BENCH_CEILING_MAX_CLIENTS" >&2; exit 2; }
for v in "$step_secs" "$warmup_secs"; do
    [[ $v =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "FAIL: step and warm-up must be numbers" >&2; exit 2; }
done

workspace=bench
process=bench-load
api_key=bench-api-key-0123456789abcdef
base_url="http://127.0.0.1:$port"
kinds="start current submit-invalid submit-valid lifecycle"
mkdir -p "$out_dir"
out_dir=$(cd "$out_dir" && pwd)
steps="$out_dir/steps.txt"   # the driver's and pgbench's raw lines
facts="$out_dir/facts.txt"   # start-up, memory
summary="$out_dir/summary.txt"
: >"$steps"
: >"$facts"
work=$(mktemp -d)
server_pid=""
databases=()

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
wall_ns() { date +%s%N; }

stop_server() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$server_pid" 2>/dev/null || true
    fi
    [ -z "$server_pid" ] || wait "$server_pid" 2>/dev/null || true
    server_pid=""
}

cleanup() {
    local status=$?
    stop_server
    for database in "${databases[@]}"; do
        if [ "${BENCH_KEEP_DB:-0}" = 1 ]; then
            log "kept database $pg_server/$database"
        else
            psql "$pg_server/postgres" -X -qc "drop database if exists $database with (force)" \
                >/dev/null 2>&1 || log "could not drop database $database"
        fi
    done
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
log "building (release)"
cargo build --release --bin spektr-server --example bench_load
server_bin=${BENCH_SERVER_BIN:-target/release/spektr-server}
load_bin=target/release/examples/bench_load
if [[ " $backends " == *" postgres "* ]]; then
    psql "$pg_server/postgres" -X -Atqc 'select 1' >/dev/null || {
        echo "FAIL: Postgres at $pg_server is not reachable" >&2
        exit 1
    }
    if ! command -v pgbench >/dev/null; then
        log "installing pgbench (Debian package postgresql-contrib)"
        apt-get install -y --no-install-recommends postgresql-contrib >&2
    fi
fi
if curl -s -o /dev/null --max-time 1 "$base_url/healthz"; then
    echo "FAIL: something already listens on $base_url (set BENCH_PORT)" >&2
    exit 1
fi

# The process of the guide's quick start: one External Step with two required fields and a
# 30-minute timeout (so that nothing times out during the run), then two end steps.
cat >"$work/bootstrap.json" <<EOF
{"workspaces": [{"id": "$workspace", "name": "Benchmark", "apiKeys": ["$api_key"],
  "processes": [{"id": "$process", "name": "Benchmark onboarding", "type": "onboarding",
    "steps": [
      {"id": "company-payload", "type": "externalData", "title": "Wait for company payload",
       "expectedFields": [
         {"spektrDataField": "company_name", "type": "string", "required": true},
         {"spektrDataField": "country_of_incorporation", "type": "country", "required": true}],
       "timeoutSeconds": 1800,
       "routes": [{"when": {"field": "external_data_failure", "equals": true},
                   "goto": "manual-review"}]},
      {"id": "approved", "type": "end", "outcome": "approved"},
      {"id": "manual-review", "type": "end", "outcome": "manual_review"}]}]}]}
EOF

# start_server BACKEND DATABASE_URL: starts the server and records its start-up time (exec to
# /healthz answering) as a fact; waits for /readyz.
start_server() {
    local backend=$1 url=$2 what=$3 t0 t1 env=()
    [ -z "${BENCH_DB_MAX_CONNECTIONS:-}" ] ||
        env+=(SPEKTR_DB_MAX_CONNECTIONS="$BENCH_DB_MAX_CONNECTIONS")
    t0=$(wall_ns)
    env "${env[@]}" DATABASE_URL="$url" BIND_ADDR="127.0.0.1:$port" NO_COLOR=1 \
        BOOTSTRAP_FILE="$work/bootstrap.json" RUST_LOG=warn \
        "$server_bin" >>"$out_dir/server-$backend.log" 2>&1 &
    server_pid=$!
    until curl -s -o /dev/null --max-time 1 "$base_url/healthz"; do
        if ! kill -0 "$server_pid" 2>/dev/null; then
            echo "FAIL: the server exited; see $out_dir/server-$backend.log" >&2
            exit 1
        fi
        if [ $(($(wall_ns) - t0)) -gt 60000000000 ]; then
            echo "FAIL: no /healthz within 60 s" >&2
            exit 1
        fi
        sleep 0.005
    done
    t1=$(wall_ns)
    echo "fact backend=$backend startup_${what}_ms=$(((t1 - t0) / 1000000))" >>"$facts"
    until curl -sf -o /dev/null --max-time 2 "$base_url/readyz"; do sleep 0.05; done
}

vm() { awk -v f="$1:" '$1 == f { printf "%.1f", $2 / 1024 }' "/proc/$server_pid/status"; }

# run_backend BACKEND DATABASE_URL
run_backend() {
    local backend=$1 url=$2
    log "$backend: start-up on an empty database, then on the migrated one"
    start_server "$backend" "$url" fresh
    stop_server
    start_server "$backend" "$url" restart
    sleep 2
    echo "fact backend=$backend idle_rss_mb=$(vm VmRSS)" >>"$facts"
    log "$backend: load, concurrency $concurrency, ${step_secs} s per step"
    "$load_bin" --base-url "$base_url" --workspace "$workspace" --process "$process" \
        --api-key "$api_key" --concurrency "$concurrency" --step-secs "$step_secs" \
        --warmup-secs "$warmup_secs" --server-pid "$server_pid" --clk-tck "$(getconf CLK_TCK)" \
        --label "$backend" >>"$steps"
    echo "fact backend=$backend peak_rss_mb=$(vm VmHWM) end_rss_mb=$(vm VmRSS)" >>"$facts"
    stop_server
}

# ---------------------------------------------------------------------------------------------
# The ceiling: pgbench runs, for each kind, the statements the server issues for one request
# (bench/pgbench/<kind>.sql, after a header that picks the row), on the benchmark database.
# Current step, submit invalid and submit valid work on rows seeded here like the server's
# own, with tokens seed-1 … seed-N; start and lifecycle insert new rows, as the server does.
# Prints bench/pgbench/FILE with each "-- include NAME.sql" line replaced by that file, and
# each "-- include NAME.sql as P_" line by that file with its :ev_ variables renamed :P_.
assemble() {
    awk '$1 == "--" && $2 == "include" {
             f = "bench/pgbench/" $3; p = (NF == 5 && $4 == "as") ? ":" $5 : ""
             while ((getline l < f) > 0) { if (p != "") gsub(/:ev_/, p, l); print l }
             close(f); next
         }
         { print }' "bench/pgbench/$1"
}
pgbench_script() { # KIND: the whole script for one transaction of KIND
    case $1 in
        start) assemble next.sql; assemble start.sql ;;
        current) assemble random.sql; assemble current.sql ;;
        submit-invalid) assemble random.sql; assemble submit-invalid.sql ;;
        submit-valid) assemble next.sql; assemble submit-valid.sql ;;
        lifecycle)
            assemble next.sql
            assemble start.sql
            assemble current.sql
            assemble submit-valid.sql
            ;;
    esac
}
# The events' types and bodies, as pgbench variables.
event_vars=()
while IFS= read -r line; do
    [[ -z $line || $line == \#* ]] || event_vars+=(-D "$line")
done <bench/pgbench/events.txt

run_ceiling() {
    local url=$1 version rows=20000 kind c clients run wrap out tps failed
    version=$(psql "$url" -X -Atqc "select current_version from processes
        where workspace_id = '$workspace' and id = '$process'")
    log "postgres: ceiling: seeding $rows waiting executions for pgbench"
    psql "$url" -X -v ON_ERROR_STOP=1 -q -v ws="$workspace" -v process="$process" \
        -v version="$version" -v rows="$rows" -f bench/pgbench/setup.sql
    for c in ${concurrency//,/ }; do
        clients=$((c < ceiling_max ? c : ceiling_max))
        for kind in $kinds; do
            run="$kind-c$c"
            # Random rows among the seeded ones, or the next unused number (wrapping around
            # the seeded rows for submit-valid: its writes cost the same on a second pass).
            case $kind in
                submit-valid | current | submit-invalid) wrap=$rows ;;
                *) wrap=1000000000 ;;
            esac
            pgbench_script "$kind" >"$work/$kind.sql"
            rm -f "$work/log".*
            out=$(pgbench -n -M prepared -T "$step_secs" -c "$clients" \
                -j "$((clients < 2 ? clients : 2))" -D ws="$workspace" -D process="$process" \
                -D version="$version" -D run="$([ "$wrap" = "$rows" ] && echo seed || echo "$run")" \
                -D nclients="$clients" -D seqno=0 -D wrap="$wrap" "${event_vars[@]}" \
                -l --log-prefix="$work/log" -f "$work/$kind.sql" "$url" 2>&1) || {
                echo "FAIL: pgbench $kind at $clients clients:" >&2
                echo "$out" >&2
                exit 1
            }
            echo "$out" >"$out_dir/pgbench-$run.txt"
            tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' <<<"$out")
            failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' <<<"$out")
            # Per-transaction latencies (µs, third column of pgbench's log) as percentiles.
            cat "$work/log".* | awk '{ print $3 }' | sort -n >"$work/lat"
            awk -v b="$c" -v k="$kind" -v cl="$clients" -v tps="$tps" -v f="${failed:-0}" '
                { v[NR] = $1 }
                END {
                    p50 = v[int(NR * 0.5 + 0.999)]; p99 = v[int(NR * 0.99 + 0.999)]
                    printf "ceiling backend=postgres kind=%s concurrency=%s clients=%s " \
                        "tps=%s failed=%s p50_ms=%.2f p99_ms=%.2f max_ms=%.2f\n",
                        k, b, cl, tps, f, p50 / 1000, p99 / 1000, v[NR] / 1000
                }' "$work/lat" >>"$steps"
            log "    $(tail -1 "$steps")"
        done
    done
}

# ---------------------------------------------------------------------------------------------
for backend in $backends; do
    if [ "$backend" = postgres ]; then
        database="spektr_load_$(date +%Y%m%d%H%M%S)_$$"
        psql "$pg_server/postgres" -X -qc "create database $database" >/dev/null
        databases+=("$database")
        run_backend postgres "$pg_server/$database"
        run_ceiling "$pg_server/$database"
    else
        run_backend sqlite "sqlite://$work/sqlite/spektr.db"
    fi
done

sweeper_env="$out_dir/sweeper/summary.env"
rm -f "$sweeper_env"
if [[ " $backends " == *" postgres "* ]] && [ "${BENCH_SWEEPER:-1}" != 0 ]; then
    log "sweeper: scripts/bench-sweeper.sh"
    BENCH_BACKLOG=${BENCH_SWEEPER_BACKLOG:-$(q 100000 10000)} \
        BENCH_BURST=${BENCH_SWEEPER_BURST:-$(q 100000 10000)} \
        BENCH_RATE=${BENCH_SWEEPER_RATE:-500} \
        BENCH_DURATION_SECS=${BENCH_SWEEPER_SECS:-$(q 20 5)} \
        BENCH_OUT_DIR="$out_dir/sweeper" BENCH_PORT="$port" \
        BENCH_POSTGRES_URL="$pg_server" scripts/bench-sweeper.sh >&2
fi

# ---------------------------------------------------------------------------------------------
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
{
    echo "spektr-server load benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "code:     $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(
        [ -z "$(git status --porcelain 2>/dev/null)" ] || echo ' with uncommitted changes')"
    echo "machine:  $(nproc) CPUs ($cpu), $(uname -sr), load average now $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "steps:    ${step_secs} s measured after ${warmup_secs} s warm-up, concurrency $concurrency;" \
        "pgbench clients capped at $ceiling_max"
    echo
    [ -f "$sweeper_env" ] || sweeper_env=/dev/null
    awk -f bench/summary.awk "$facts" "$steps" "$sweeper_env"
} | tee "$summary"
log "summary in $summary; raw lines in $steps and $facts"
