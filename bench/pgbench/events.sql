-- PostgresStore::insert_events for the two events of one request: the events (seq from the
-- event sequence, txid from the transaction, both column defaults) and the deliveries that
-- enabled webhook endpoints want, in one statement. Needs :x_id (the execution) and :x_now_ms
-- (the database time the request read). The line "-- include events.sql as P_" that brings it
-- in renames :ev_ to :P_ (start_, submit_: see events.txt).
with inserted as (
    insert into events
        (id, workspace_id, execution_id, type, created_at_ms, body)
    select id, workspace_id, execution_id, type, created_at_ms, body::jsonb
    from unnest(array[bench_uuid7(), bench_uuid7()], array[:ws, :ws]::text[],
                array[:x_id, :x_id]::uuid[],
                array[:ev_type1, :ev_type2],
                array[:x_now_ms, :x_now_ms]::int8[],
                array[:ev_body1, :ev_body2]::text[]) with ordinality
         as u(id, workspace_id, execution_id, type, created_at_ms, body, n)
    order by n
    returning id, workspace_id, type
)
insert into deliveries
    (id, event_id, endpoint_id, workspace_id, status, next_attempt_at_ms)
select gen_random_uuid(), i.id, w.id, i.workspace_id, 'pending', now_ms()
from inserted i
join webhook_endpoints w on w.workspace_id = i.workspace_id and w.enabled
     and (w.event_types is null or w.event_types ? i.type);
