-- POST /v2/public/actions/processId/{p}/workspaceId/{w}, without an idempotency-key:
-- Engine::start → PostgresStore::get_process (no transaction), then PostgresStore::start_once
-- with insert_events (the events and their deliveries).
-- Differences: ids come from bench_uuid7() in SQL instead of parameters, the execution insert
-- returns its id, and the event bodies are fixed copies of what the server wrote (events.txt).
select p.current_version, v.definition
from processes p
join process_versions v on v.workspace_id = p.workspace_id
     and v.process_id = p.id and v.version = p.current_version
where p.workspace_id = :ws and p.id = :process;

begin;
insert into customers (spektr_id, workspace_id, reference, fields)
values (bench_uuid7(), :ws, :run || '-' || :n, '{}'::jsonb)
on conflict (workspace_id, reference) do update
set fields = customers.fields || excluded.fields, updated_at_ms = now_ms()
returning spektr_id, fields::text as fields, now_ms() as now_ms \gset x_
\set deadline :x_now_ms + 1800000
insert into executions
(id, workspace_id, process_id, process_version, spektr_id, token, token_hash, status,
 step_index, deadline_ms, outcome)
values (bench_uuid7(), :ws, :process, :version, :x_spektr_id, :run || '-' || :n,
        encode(sha256(convert_to(:run || '-' || :n, 'UTF8')), 'hex'), 'pending', 0, :deadline, null)
returning id \gset x_
-- include events.sql as start_
commit;
