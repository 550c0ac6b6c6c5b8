-- GET /v2/public/actions/{token}: PostgresStore::load_execution (one statement, no transaction;
-- the definition comes from the engine's cache of stored versions).
select id, workspace_id, process_id, process_version, spektr_id,
       token, status, step_index, deadline_ms, outcome, now_ms() as now_ms
from executions
-- The server hashes the token in Rust; here Postgres does, which costs it a little more.
where token_hash = encode(sha256(convert_to(:run || '-' || :n, 'UTF8')), 'hex');
