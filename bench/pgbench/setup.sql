-- Prepares the benchmark database for the pgbench ceiling (psql -v ws=… -v process=…
-- -v version=… -v rows=…). Run after the server's load run, on the same database.

-- A UUID whose first 48 bits are the Unix milliseconds, like the server's Uuid::now_v7(): new
-- rows land at the right-hand end of the primary-key indexes, as the server's do.
create or replace function bench_uuid7() returns uuid language sql volatile as $$
    select (lpad(to_hex((extract(epoch from clock_timestamp()) * 1000)::bigint), 12, '0')
            || substr(replace(gen_random_uuid()::text, '-', ''), 13))::uuid
$$;

-- :rows customers with executions waiting on step 0 (tokens seed-1 … seed-N), as after a
-- start of the server (whose tokens are random; these can be named by pgbench).
begin;
with c as (
    insert into customers (spektr_id, workspace_id, reference, fields)
    select bench_uuid7(), :'ws', 'seed-' || g, '{}'::jsonb
    from generate_series(1, :rows) g
    returning spektr_id, reference)
insert into executions (id, workspace_id, process_id, process_version, spektr_id, token,
                        token_hash, status, step_index, deadline_ms)
select bench_uuid7(), :'ws', :'process', :version, c.spektr_id, c.reference,
       encode(sha256(convert_to(c.reference, 'UTF8')), 'hex'), 'pending', 0, now_ms() + 1800000
from c;
commit;
vacuum analyze;
