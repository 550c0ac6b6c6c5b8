-- Events are numbered from one sequence and remember the transaction that wrote them, so
-- transactions of one workspace no longer queue on a per-workspace counter row until commit.
-- The feed orders events by (txid, seq) and shows only events of transactions older than every
-- transaction still running, so a reader's cursor never passes an event committed later.
create sequence event_seq;
select setval('event_seq', coalesce((select max(seq) from events), 0) + 1, false);

-- Events written before this migration keep txid 0: they are all committed, and their
-- per-workspace numbers keep their order among themselves.
alter table events add column txid bigint not null default 0;
alter table events alter column txid set default pg_current_xact_id()::text::bigint;
alter table events alter column seq set default nextval('event_seq');
alter sequence event_seq owned by events.seq;

alter table events drop constraint events_workspace_id_seq_key;
create index events_feed on events (workspace_id, txid, seq);

-- Each foreign key check costs a lookup per event row, twice per timed-out step. The rows they
-- guard are written by the same transaction (execution) or never deleted (workspace).
alter table events drop constraint events_workspace_id_fkey;
alter table events drop constraint events_execution_id_fkey;

-- (workspace_id, spektr_id) serves every query that looked executions up by customer.
drop index executions_customer;

alter table workspaces drop column event_seq;
