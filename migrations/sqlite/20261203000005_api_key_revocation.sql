-- A revoked key stays stored (so that a bootstrap file naming it cannot bring it back) and
-- no longer authenticates.
alter table api_keys add column revoked_at_ms integer;
create index api_keys_by_workspace on api_keys (workspace_id, created_at_ms, id);
