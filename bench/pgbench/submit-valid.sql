-- POST /v3/public/actions/{token} with a valid payload, without an idempotency-key:
-- PostgresStore::advance_once → apply_change (execution, customer fields) → insert_events
-- (the events and their deliveries).
-- Differences: event ids come from bench_uuid7() in SQL, and the event bodies are fixed
-- copies of what the server wrote (events.txt).
begin;
-- include lock-execution.sql
update executions
set status = 'completed', step_index = 1, deadline_ms = null, outcome = 'approved',
    updated_at_ms = now_ms()
where id = :x_id;
update customers set fields = '{"company_name": "Bench Company Ltd","country_of_incorporation": "RO","external_data_failure": false}'::jsonb,
    updated_at_ms = now_ms()
where spektr_id = :x_spektr_id;
-- include events.sql as submit_
commit;
