-- POST /v3/public/actions/{token} with a payload that fails validation:
-- PostgresStore::advance_once up to the decision, which changes nothing, so the transaction
-- is rolled back (sqlx rolls back a dropped transaction).
begin;
-- include lock-execution.sql
rollback;
