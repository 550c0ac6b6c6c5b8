-- POST /v3/public/actions/{token} with a valid payload, without an idempotency-key:
-- PostgresStore::advance_once → apply_change (execution, customer fields) → insert_events
-- (the workspace's event counter, then the events and their deliveries).
-- Differences: event ids come from bench_uuid7() in SQL, and the event bodies are fixed
-- copies of what the server wrote (events.txt).
begin;
select e.id, e.workspace_id, e.process_id, e.process_version, e.spektr_id,
       e.token, e.status, e.step_index, e.deadline_ms, e.outcome,
       c.reference, c.fields::text as fields, v.definition,
       now_ms() as now_ms
from executions e
join customers c on c.spektr_id = e.spektr_id
join process_versions v on v.workspace_id = e.workspace_id
     and v.process_id = e.process_id and v.version = e.process_version
where e.token = :run || '-' || :n
for update of e, c \gset x_
update executions
set status = 'completed', step_index = 1, deadline_ms = null, outcome = 'approved',
    updated_at_ms = now_ms()
where id = :x_id;
update customers set fields = '{"company_name": "Bench Company Ltd","country_of_incorporation": "RO","external_data_failure": false}'::jsonb,
    updated_at_ms = now_ms()
where spektr_id = :x_spektr_id;
-- events.sql here, with :ev_ read as :submit_
commit;
