-- PostgresStore::advance_once's first statement: the execution behind the token, its customer
-- and its definition, both rows locked. Sets :x_id, :x_spektr_id, :x_now_ms, … for what follows.
select e.id, e.workspace_id, e.process_id, e.process_version, e.spektr_id,
       e.token, e.status, e.step_index, e.deadline_ms, e.outcome,
       c.reference, c.fields::text as fields, v.definition,
       now_ms() as now_ms
from executions e
join customers c on c.spektr_id = e.spektr_id
join process_versions v on v.workspace_id = e.workspace_id
     and v.process_id = e.process_id and v.version = e.process_version
where e.token_hash = encode(sha256(convert_to(:run || '-' || :n, 'UTF8')), 'hex')
for update of e, c \gset x_
