-- GET /v2/public/actions/{token}: PostgresStore::load_execution (one statement, no transaction).
select e.id, e.workspace_id, e.process_id, e.process_version, e.spektr_id,
       e.token, e.status, e.step_index, e.deadline_ms, e.outcome,
       v.definition, now_ms() as now_ms
from executions e
join process_versions v on v.workspace_id = e.workspace_id
     and v.process_id = e.process_id and v.version = e.process_version
where e.token = :run || '-' || :n;
