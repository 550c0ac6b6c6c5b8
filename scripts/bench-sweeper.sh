#!/usr/bin/env bash
# Benchmarks the timeout sweeper on Postgres with a large backlog of waiting executions.
#
# What it does, in order (results are explained in docs/benchmarks.md):
#   1. builds the release server and the load generator (examples/bench_starts.rs);
#   2. creates a fresh database, starts the release server on it with a bootstrap file of
#      benchmark processes, waits for /readyz;
#   3. seeds BENCH_BACKLOG executions that wait on an External Step whose deadline is a day
#      away (plain SQL, generate_series), then VACUUM ANALYZE;
#   4. steady rate: starts BENCH_RATE executions/s for BENCH_DURATION_SECS over the HTTP API on
#      a process whose step times out after BENCH_STEP_TIMEOUT_SECS, waits until all timed out,
#      and reports the lateness (timeout time - deadline) p50/p99/max;
#      then inserts BENCH_RATE x BENCH_DURATION_SECS executions by SQL whose deadlines follow
#      each other at BENCH_RATE per second, and reports their lateness (the sweeper alone);
#   5. burst: inserts BENCH_BURST waiting executions with one and the same deadline (plain
#      SQL), waits until the sweeper has timed them all out, and reports timeouts/second;
#      then stops the server and, for comparison, times set-based SQL doing the same writes
#      for as many rows;
#   6. prints the results and the machine, and drops the database.
#
# Settings (environment):
#   BENCH_POSTGRES_URL       Postgres server, without a database name
#                            (default postgres://postgres@127.0.0.1:5432)
#   BENCH_PORT               server port on 127.0.0.1 (default 18181)
#   BENCH_BACKLOG            waiting executions seeded (default 1000000)
#   BENCH_RATE               HTTP starts per second in the steady phase (default 500)
#   BENCH_DURATION_SECS      length of the steady phase (default 20)
#   BENCH_STEP_TIMEOUT_SECS  timeoutSeconds of the steady phase's step (default 2)
#   BENCH_BURST              executions sharing one deadline in the burst phase (default 100000)
#   BENCH_BURST_LEAD_MS      how far ahead the burst deadline lies when its insert starts
#                            (default 15000; should cover the insert, else timing starts
#                            at the insert's commit)
#   BENCH_WAIT_LIMIT_SECS    longest wait for any phase to finish (default 600)
#   BENCH_SWEEPER_INTERVAL_MS, BENCH_SWEEPER_BATCH_SIZE, BENCH_DB_MAX_CONNECTIONS
#                            passed to the server when set (server defaults otherwise)
#   BENCH_RUST_LOG           server log filter (default warn,spektr_server::engine::sweeper=info)
#   BENCH_KEEP_DB=1          keep the database afterwards (its name is printed)
#   BENCH_SERVER_BIN         server binary to measure (default target/release/spektr-server),
#                            e.g. a copy built from another commit, for an A/B comparison
#   BENCH_CODE_LABEL         how the results name the code under test (default: git commit)
#   BENCH_OUT_DIR            where the server log and results are kept (default target/bench-sweeper)
#
# Quick run:  BENCH_BACKLOG=10000 BENCH_BURST=10000 BENCH_DURATION_SECS=5 scripts/bench-sweeper.sh
set -euo pipefail
cd "$(dirname "$0")/.."

pg_server=${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432}
pg_server=${pg_server%/}
port=${BENCH_PORT:-18181}
backlog=${BENCH_BACKLOG:-1000000}
rate=${BENCH_RATE:-500}
duration=${BENCH_DURATION_SECS:-20}
step_timeout=${BENCH_STEP_TIMEOUT_SECS:-2}
burst=${BENCH_BURST:-100000}
burst_lead_ms=${BENCH_BURST_LEAD_MS:-15000}
wait_limit=${BENCH_WAIT_LIMIT_SECS:-600}
out_dir=${BENCH_OUT_DIR:-target/bench-sweeper}

for pair in "BENCH_PORT=$port" "BENCH_BACKLOG=$backlog" "BENCH_BURST=$burst" \
    "BENCH_BURST_LEAD_MS=$burst_lead_ms" "BENCH_WAIT_LIMIT_SECS=$wait_limit"; do
    [[ ${pair#*=} =~ ^[0-9]+$ ]] || { echo "FAIL: ${pair%%=*} must be a whole number" >&2; exit 2; }
done
for pair in "BENCH_RATE=$rate" "BENCH_DURATION_SECS=$duration" \
    "BENCH_STEP_TIMEOUT_SECS=$step_timeout"; do
    [[ ${pair#*=} =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "FAIL: ${pair%%=*} must be a number" >&2; exit 2; }
done

workspace=bench
api_key=bench-api-key-0123456789abcdef
base_url="http://127.0.0.1:$port"
database="spektr_bench_$(date +%Y%m%d%H%M%S)_$$"
db_url="$pg_server/$database"
mkdir -p "$out_dir"
server_log="$out_dir/server.log"
results="$out_dir/results.txt"
work=$(mktemp -d)
server_pid=""
db_created=0

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
# Runs SQL on the benchmark database and prints unaligned, tuples-only output; no statement
# runs longer than the wait limit.
sql() {
    PGOPTIONS="-c statement_timeout=${wait_limit}s" psql "$db_url" -X -v ON_ERROR_STOP=1 -Atq "$@"
}
wall_ms() { date +%s%3N; }

# Stops the server: SIGTERM, then SIGKILL after 10 s.
stop_server() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    server_pid=""
}

cleanup() {
    local status=$?
    stop_server
    if [ "$db_created" = 1 ]; then
        if [ "${BENCH_KEEP_DB:-0}" = 1 ]; then
            log "kept database $db_url"
        else
            psql "$pg_server/postgres" -X -qc "drop database if exists $database with (force)" \
                >/dev/null 2>&1 || log "could not drop database $database"
        fi
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_for LIMIT_SECS SQL: polls SQL (which returns t or f) every 0.2 s until it returns t.
wait_for() {
    local limit=$1 query=$2 deadline
    deadline=$(($(wall_ms) + limit * 1000))
    until [ "$(sql -c "$query")" = t ]; do
        if [ "$(wall_ms)" -ge "$deadline" ]; then
            return 1
        fi
        sleep 0.2
    done
}

# ---------------------------------------------------------------------------------------------
log "1/6 building (release)"
cargo build --release --bin spektr-server
cargo build --release --example bench_starts
server_bin=${BENCH_SERVER_BIN:-target/release/spektr-server}
load_bin=target/release/examples/bench_starts

# ---------------------------------------------------------------------------------------------
log "2/6 creating database $database and starting the server on $base_url"
psql "$pg_server/postgres" -X -Atqc 'select 1' >/dev/null || {
    echo "FAIL: Postgres at $pg_server is not reachable" >&2
    exit 1
}
if curl -s -o /dev/null --max-time 1 "$base_url/healthz"; then
    echo "FAIL: something already listens on $base_url (set BENCH_PORT)" >&2
    exit 1
fi
psql "$pg_server/postgres" -X -qc "create database $database" >/dev/null
db_created=1

step() { # step ID TIMEOUT_SECONDS: an External Step routed to manual review on timeout
    cat <<EOF
{"id": "$1", "name": "Benchmark $1", "type": "onboarding",
 "steps": [
   {"id": "payload", "type": "externalData", "title": "Wait for payload",
    "expectedFields": [{"spektrDataField": "company_name", "type": "string", "required": true}],
    "timeoutSeconds": $2,
    "routes": [{"when": {"field": "external_data_failure", "equals": true}, "goto": "manual-review"}]},
   {"id": "approved", "type": "end", "outcome": "approved"},
   {"id": "manual-review", "type": "end", "outcome": "manual_review"}
 ]}
EOF
}
cat >"$work/bootstrap.json" <<EOF
{"workspaces": [{"id": "$workspace", "name": "Benchmark", "apiKeys": ["$api_key"],
  "processes": [
    $(step bench-steady "$step_timeout"),
    $(step bench-expiry 86400),
    $(step bench-backlog 86400),
    $(step bench-burst 86400),
    $(step bench-ceiling-bare 86400),
    $(step bench-ceiling-full 86400)
  ]}]}
EOF

server_env=(DATABASE_URL="$db_url" BIND_ADDR="127.0.0.1:$port"
    BOOTSTRAP_FILE="$work/bootstrap.json" NO_COLOR=1
    RUST_LOG="${BENCH_RUST_LOG:-warn,spektr_server::engine::sweeper=info}")
[ -n "${BENCH_SWEEPER_INTERVAL_MS:-}" ] &&
    server_env+=(SPEKTR_SWEEPER_INTERVAL_MS="$BENCH_SWEEPER_INTERVAL_MS")
[ -n "${BENCH_SWEEPER_BATCH_SIZE:-}" ] &&
    server_env+=(SPEKTR_SWEEPER_BATCH_SIZE="$BENCH_SWEEPER_BATCH_SIZE")
[ -n "${BENCH_DB_MAX_CONNECTIONS:-}" ] &&
    server_env+=(SPEKTR_DB_MAX_CONNECTIONS="$BENCH_DB_MAX_CONNECTIONS")
env "${server_env[@]}" "$server_bin" >"$server_log" 2>&1 &
server_pid=$!
ready_by=$(($(wall_ms) + 60000))
until curl -sf -o /dev/null --max-time 2 "$base_url/readyz"; do
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "FAIL: the server exited; see $server_log" >&2
        tail -20 "$server_log" >&2
        exit 1
    fi
    if [ "$(wall_ms)" -ge "$ready_by" ]; then
        echo "FAIL: the server was not ready within 60 s; see $server_log" >&2
        exit 1
    fi
    sleep 0.2
done
version_of() {
    sql -c "select version from process_versions where workspace_id = '$workspace'
            and process_id = '$1' order by version desc limit 1"
}

# seed PROCESS COUNT DEADLINE_SQL: inserts COUNT customers and executions waiting on PROCESS's
# External Step (step 0) with deadline DEADLINE_SQL, in one transaction.
seed() {
    local process=$1 count=$2 deadline=$3 from=${4:-1} version
    version=$(version_of "$process")
    sql <<EOF
with c as (
    insert into customers (spektr_id, workspace_id, reference, fields)
    select gen_random_uuid(), '$workspace', '$process-' || g,
           '{"company_name": "Seeded Ltd"}'::jsonb
    from generate_series($from, $from + $count - 1) g
    returning spektr_id, reference)
insert into executions (id, workspace_id, process_id, process_version, spektr_id, token,
                        token_hash, status, step_index, deadline_ms)
select gen_random_uuid(), '$workspace', '$process', $version, c.spektr_id,
       'bench-token-' || c.reference,
       encode(sha256(convert_to('bench-token-' || c.reference, 'UTF8')), 'hex'),
       'pending', 0, $deadline
from c;
EOF
}

# ---------------------------------------------------------------------------------------------
log "3/6 seeding $backlog waiting executions (deadlines 24-25 h away)"
seed_started=$(wall_ms)
chunk=100000
for ((from = 1; from <= backlog; from += chunk)); do
    n=$((backlog - from + 1 < chunk ? backlog - from + 1 : chunk))
    seed bench-backlog "$n" "now_ms() + 86400000 + (random() * 3600000)::bigint" "$from"
    log "    seeded $((from + n - 1)) / $backlog"
done
sql -c 'vacuum analyze'
seed_secs=$(awk -v ms=$(($(wall_ms) - seed_started)) 'BEGIN { printf "%.1f", ms / 1000 }')
waiting=$(sql -c "select count(*) from executions where status = 'pending' and deadline_ms is not null")
log "    $waiting executions waiting, seeded in $seed_secs s"

# The sweeper's two queries (copied from the Postgres store; keep them in step) with the
# backlog and nothing due; the plans are kept next to the server log.
sweep_select="select e.id, e.workspace_id, e.process_id, e.process_version, e.spektr_id,
       e.token, e.status, e.step_index, e.deadline_ms, e.outcome,
       c.reference, c.fields::text as fields, v.definition, now_ms() as now_ms
from executions e
join customers c on c.spektr_id = e.spektr_id
join process_versions v on v.workspace_id = e.workspace_id
     and v.process_id = e.process_id and v.version = e.process_version
where e.status = 'pending' and e.deadline_ms is not null and e.deadline_ms <= (select now_ms())
order by e.deadline_ms
limit ${BENCH_SWEEPER_BATCH_SIZE:-500}
for update of e, c skip locked"
next_deadline="select min(deadline_ms) - now_ms() from executions
where status = 'pending' and deadline_ms is not null"
{
    echo "-- sweeper select, nothing due, $waiting waiting"
    sql -c "begin" -c "explain (analyze, buffers) $sweep_select" -c "rollback"
    echo
    echo "-- next deadline"
    sql -c "explain (analyze, buffers) $next_deadline"
} >"$out_dir/explain.txt" 2>&1
select_ms=$(sql -c "begin" \
    -c "explain (analyze, format json) $sweep_select" -c "rollback" |
    grep -o '"Execution Time": [0-9.]*' | grep -o '[0-9.]*$' || echo "?")
log "    sweeper select with nothing due: $select_ms ms (plan in $out_dir/explain.txt)"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# lateness PROCESS: count, then p50 / p99 / max of when the sweeper read each timed-out step
# of PROCESS (the event's createdAt, the database time of the sweeper's select) and then of
# when it wrote the row (executions.updated_at_ms), each minus the deadline
# (eventData.expiresAt), separated by |.
lateness() {
    sql <<EOF
with t as (
    select ev.created_at_ms - (ev.body->'eventData'->>'expiresAt')::bigint as picked,
           x.updated_at_ms - (ev.body->'eventData'->>'expiresAt')::bigint as written
    from events ev join executions x on x.id = ev.execution_id
    where ev.type = 'external_data_timed_out' and x.process_id = '$1')
select count(*),
       round(percentile_cont(0.5) within group (order by picked)::numeric, 1),
       round(percentile_cont(0.99) within group (order by picked)::numeric, 1),
       max(picked),
       round(percentile_cont(0.5) within group (order by written)::numeric, 1),
       round(percentile_cont(0.99) within group (order by written)::numeric, 1),
       max(written)
from t;
EOF
}

# ---------------------------------------------------------------------------------------------
log "4/6 steady rate: $rate starts/s for $duration s, step timeout $step_timeout s"
starts=$("$load_bin" --base-url "$base_url" --workspace "$workspace" --process bench-steady \
    --api-key "$api_key" --rate "$rate" --duration-secs "$duration" | tail -1) || {
    echo "FAIL: the load generator failed: $starts" >&2
    exit 1
}
log "    $starts"
kv() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }
steady_total=$(kv sent "$starts")
steady_limit=$(awk -v t="$step_timeout" -v w="$wait_limit" 'BEGIN { printf "%d", t + w }')
if ! wait_for "$steady_limit" "select not exists (select 1 from executions
        where process_id = 'bench-steady' and status = 'pending')"; then
    echo "FAIL: steady-phase steps still pending after $steady_limit s" >&2
    exit 1
fi
load_during=$(cut -d' ' -f1-3 /proc/loadavg)
IFS='|' read -r steady_count steady_p50 steady_p99 steady_max steady_w50 steady_w99 steady_wmax \
    < <(lateness bench-steady)
if [ "$steady_count" != "$steady_total" ]; then
    echo "FAIL: $steady_total starts but $steady_count timeout events" >&2
    exit 1
fi
log "    lateness p50/p99/max: $steady_p50 / $steady_p99 / $steady_max ms"

# Steady expiries without starts: executions inserted by SQL ahead of time, with deadlines
# BENCH_RATE per second for BENCH_DURATION_SECS, so that the sweeper alone sets the pace
# (the phase above also measures how fast one workspace takes starts).
expiry_total=$(awk -v r="$rate" -v d="$duration" 'BEGIN { printf "%d", r * d }')
log "    steady expiries: $expiry_total executions inserted by SQL, deadlines $rate/s"
expiry_base=$(sql -c "select now_ms() + $burst_lead_ms")
seed bench-expiry "$expiry_total" \
    "$expiry_base + (substring(c.reference from '[0-9]+\$')::bigint - 1) * 1000 / $rate"
if ! wait_for $((burst_lead_ms / 1000 + wait_limit)) "select not exists (select 1
        from executions where process_id = 'bench-expiry' and status = 'pending')"; then
    echo "FAIL: steady expiries still pending after the wait limit" >&2
    exit 1
fi
IFS='|' read -r expiry_count expiry_p50 expiry_p99 expiry_max expiry_w50 expiry_w99 expiry_wmax \
    < <(lateness bench-expiry)
log "    steady expiries: $expiry_count timed out; lateness written p50/p99/max:" \
    "$expiry_w50 / $expiry_w99 / $expiry_wmax ms"

# ---------------------------------------------------------------------------------------------
log "5/6 burst: $burst executions with one deadline, $burst_lead_ms ms ahead"
batches_before=$(grep -c 'timed out external steps' "$server_log" || true)
burst_deadline=$(sql -c "select now_ms() + $burst_lead_ms")
# In transactions of at most 10,000 rows, so that no long transaction holds back pruning.
for ((from = 1; from <= burst; from += 10000)); do
    n=$((burst - from + 1 < 10000 ? burst - from + 1 : 10000))
    seed bench-burst "$n" "$burst_deadline" "$from"
done
burst_committed=$(sql -c 'select now_ms()')
if [ "$burst_committed" -ge "$burst_deadline" ]; then
    log "    WARNING: the insert committed $((burst_committed - burst_deadline)) ms after the" \
        "deadline, so timing starts at the commit; raise BENCH_BURST_LEAD_MS"
    burst_margin="committed $((burst_committed - burst_deadline)) ms AFTER it; timed from the commit"
else
    burst_margin="committed $((burst_deadline - burst_committed)) ms before it"
fi
burst_start=$((burst_committed > burst_deadline ? burst_committed : burst_deadline))
burst_done=1
wait_for $((burst_lead_ms / 1000 + wait_limit)) "select not exists (select 1 from executions
        where status = 'pending' and deadline_ms is not null
          and deadline_ms <= $burst_deadline)" || burst_done=0
burst_seen=$(sql -c 'select now_ms()')
batches_after=$(grep -c 'timed out external steps' "$server_log" || true)
IFS='|' read -r burst_count burst_first burst_last_pick burst_last_write < <(sql <<EOF
select count(*), min(ev.created_at_ms) - $burst_start, max(ev.created_at_ms) - $burst_start,
       max(x.updated_at_ms) - $burst_start
from events ev join executions x on x.id = ev.execution_id
where ev.type = 'external_data_timed_out' and x.process_id = 'bench-burst';
EOF
)
if [ -z "$burst_count" ] || [ -z "$burst_last_write" ]; then
    echo "FAIL: no timeouts were recorded for the burst" >&2
    exit 1
fi
if [ "$burst_done" = 1 ]; then
    burst_rate=$(awk -v n="$burst_count" -v ms="$burst_last_write" \
        'BEGIN { printf "%.0f", n / (ms > 0 ? ms : 1) * 1000 }')
    log "    all $burst_count timed out; last one written $burst_last_write ms after the deadline"
else
    burst_rate=$(awk -v n="$burst_count" -v ms="$((burst_seen - burst_start))" \
        'BEGIN { printf "%.0f", n / (ms > 0 ? ms : 1) * 1000 }')
    log "    WARNING: only $burst_count of $burst timed out within the wait limit"
fi

# The ceiling runs with the server stopped, so that nothing competes with it.
log "    ceiling: set-based SQL over $burst other rows (server stopped)"
stop_server
seed bench-ceiling-bare "$burst" "now_ms() + 86400000"
seed bench-ceiling-full "$burst" "now_ms() + 86400000"
sql -c 'vacuum analyze executions' -c 'vacuum analyze customers'
t0=$(wall_ms)
sql -c "update executions set status = 'completed', step_index = 2, deadline_ms = null,
            outcome = 'manual_review', updated_at_ms = now_ms()
        where process_id = 'bench-ceiling-bare' and status = 'pending'"
ceiling_bare_ms=$(($(wall_ms) - t0))
# The same writes as the sweeper makes for each step (execution, customer fields, two events
# numbered from the event sequence), in one statement and one transaction.
t0=$(wall_ms)
ceiling_rows=$(sql <<EOF
begin;
with due as (
    select e.id, e.spektr_id, e.deadline_ms, c.reference, c.fields
    from executions e join customers c on c.spektr_id = e.spektr_id
    where e.process_id = 'bench-ceiling-full' and e.status = 'pending'
      and e.deadline_ms is not null
    for update of e, c),
x as (
    update executions e set status = 'completed', step_index = 2, deadline_ms = null,
           outcome = 'manual_review', updated_at_ms = now_ms()
    from due where e.id = due.id
    returning e.id, e.spektr_id, due.deadline_ms, due.reference, due.fields),
cu as (
    update customers c set fields = x.fields || '{"external_data_failure": true}'::jsonb,
           updated_at_ms = now_ms()
    from x where c.spektr_id = x.spektr_id
    returning 1),
n as (select x.*, row_number() over () as rn from x),
ev as (
    insert into events (id, workspace_id, execution_id, type, created_at_ms, body)
    select gen_random_uuid(), '$workspace', n.id,
           case k when 0 then 'external_data_timed_out' else 'process_completed' end, now_ms(),
           jsonb_build_object('type',
               case k when 0 then 'external_data_timed_out' else 'process_completed' end,
               'workspaceId', '$workspace', 'spektrId', n.spektr_id, 'createdAt', now_ms(),
               'eventData', jsonb_build_object('stepType', 'externalData',
                   'stepId', 'payload', 'stepTitle', 'Wait for payload',
                   'expiresAt', n.deadline_ms, 'contextId', n.id,
                   'processId', 'bench-ceiling-full', 'processName', 'Benchmark',
                   'processType', 'onboarding', 'reference', n.reference,
                   'outcome', 'manual_review'))
    from n, generate_series(0, 1) k
    order by n.rn, k
    returning 1)
select (select count(*) from x), (select count(*) from cu), (select count(*) from ev);
commit;
EOF
)
ceiling_full_ms=$(($(wall_ms) - t0))
log "    ceiling rows written (executions|customers|events): $ceiling_rows"
ceiling_rate=$(awk -v n="$burst" -v ms="$ceiling_full_ms" 'BEGIN { printf "%.0f", n / ms * 1000 }')
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------------------------
log "6/6 results"
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
mem=$(free -g | awk '/^Mem:/ { print $2 " GiB total, " $7 " GiB available" }')
pg_version=$(sql -c 'show server_version')
pg_settings=$(sql -c "select string_agg(name || '=' || setting || coalesce(unit, ''), ', '
                                         order by name)
                      from pg_settings where name in ('autovacuum', 'shared_buffers',
                          'synchronous_commit', 'work_mem')")
{
    echo "spektr-server sweeper benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "code:      ${BENCH_CODE_LABEL:-$(git rev-parse --short HEAD 2>/dev/null || echo '?')$(
        [ -z "$(git status --porcelain 2>/dev/null)" ] || echo ' with uncommitted changes')}"
    echo "machine:   $(nproc) CPUs ($cpu), $mem, Postgres $pg_version, $(uname -sr)"
    echo "postgres:  $pg_settings"
    echo "load avg:  before $load_before | after steady phase $load_during | end $load_after"
    echo "server:    sweeper interval ${BENCH_SWEEPER_INTERVAL_MS:-1000 (default)} ms," \
        "batch ${BENCH_SWEEPER_BATCH_SIZE:-500 (default)}," \
        "pool ${BENCH_DB_MAX_CONNECTIONS:-10 (default)}"
    echo "backlog:   $waiting waiting executions (deadline in 24-25 h), seeded in $seed_secs s;"
    echo "           sweeper select with nothing due: $select_ms ms"
    echo
    echo "steady:    $starts"
    printf '  %-44s %10s %10s %10s\n' "lateness (ms), $steady_count timeouts" p50 p99 max
    printf '  %-44s %10s %10s %10s\n' "  read by sweeper (event createdAt - deadline)" \
        "$steady_p50" "$steady_p99" "$steady_max"
    printf '  %-44s %10s %10s %10s\n' "  row written (updated_at_ms - deadline)" \
        "$steady_w50" "$steady_w99" "$steady_wmax"
    echo
    echo "expiries:  $expiry_count of $expiry_total executions inserted by SQL ahead of time," \
        "deadlines $rate/s for $duration s (no starts meanwhile)"
    printf '  %-44s %10s %10s %10s\n' "lateness (ms)" p50 p99 max
    printf '  %-44s %10s %10s %10s\n' "  read by sweeper (event createdAt - deadline)" \
        "$expiry_p50" "$expiry_p99" "$expiry_max"
    printf '  %-44s %10s %10s %10s\n' "  row written (updated_at_ms - deadline)" \
        "$expiry_w50" "$expiry_w99" "$expiry_wmax"
    echo
    echo "burst:     $burst_count of $burst steps with one deadline (inserted by SQL," \
        "$burst_margin)"
    echo "  first timeout read ${burst_first} ms after the deadline," \
        "last read ${burst_last_pick} ms, last written ${burst_last_write} ms"
    echo "  sweeper: $burst_rate timeouts/s over $((batches_after - batches_before)) batches" \
        "$([ "$burst_done" = 1 ] || echo "(NOT FINISHED within the wait limit)")"
    echo "  ceiling: bare UPDATE of $burst executions $ceiling_bare_ms ms;" \
        "same writes as the sweeper, set-based, one transaction: $ceiling_full_ms ms" \
        "($ceiling_rate rows/s)"
} | tee "$results"
log "results in $results, server log in $server_log, plans in $out_dir/explain.txt"
# The same figures as key=value lines, for scripts/bench-load.sh.
{
    echo "steady_target_rate=$rate"
    echo "steady_achieved_rate=$(kv achieved_rate "$starts")"
    echo "steady_start_p50_ms=$(kv latency_p50_ms "$starts")"
    echo "steady_start_p99_ms=$(kv latency_p99_ms "$starts")"
    echo "lateness_read_p50_ms=$steady_p50"
    echo "lateness_read_p99_ms=$steady_p99"
    echo "lateness_written_p50_ms=$steady_w50"
    echo "lateness_written_p99_ms=$steady_w99"
    echo "lateness_written_max_ms=$steady_wmax"
    echo "expiry_count=$expiry_count"
    echo "expiry_written_p50_ms=$expiry_w50"
    echo "expiry_written_p99_ms=$expiry_w99"
    echo "expiry_written_max_ms=$expiry_wmax"
    echo "burst=$burst_count"
    echo "burst_rate=$burst_rate"
    echo "burst_finished=$burst_done"
    echo "ceiling_rate=$ceiling_rate"
} >"$out_dir/summary.env"
