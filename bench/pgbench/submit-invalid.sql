-- POST /v3/public/actions/{token} with a payload that fails validation:
-- PostgresStore::advance_once up to the decision, which changes nothing, so the transaction
-- is rolled back (sqlx rolls back a dropped transaction).
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
for update of e, c;
rollback;
