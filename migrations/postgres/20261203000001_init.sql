-- Times are Unix milliseconds by the database clock (the contract speaks milliseconds, and
-- one clock keeps replicas with skewed clocks in agreement).
create function now_ms() returns bigint
language sql volatile
as $$ select (extract(epoch from clock_timestamp()) * 1000)::bigint $$;

create table workspaces (
    id text primary key,
    name text not null,
    -- Last event sequence number handed out; bumped in the transaction that writes events.
    event_seq bigint not null default 0,
    created_at_ms bigint not null default now_ms(),
    updated_at_ms bigint not null default now_ms()
);

create table api_keys (
    id uuid primary key,
    workspace_id text not null references workspaces (id),
    key_hash text not null unique,
    created_at_ms bigint not null default now_ms()
);

create table processes (
    workspace_id text not null references workspaces (id),
    id text not null,
    current_version integer not null,
    created_at_ms bigint not null default now_ms(),
    updated_at_ms bigint not null default now_ms(),
    primary key (workspace_id, id)
);

-- Versions are immutable: a running execution keeps the definition it started with.
create table process_versions (
    workspace_id text not null,
    process_id text not null,
    version integer not null,
    definition text not null,
    created_at_ms bigint not null default now_ms(),
    primary key (workspace_id, process_id, version),
    foreign key (workspace_id, process_id) references processes (workspace_id, id)
);

create table customers (
    spektr_id uuid primary key,
    workspace_id text not null references workspaces (id),
    reference text not null,
    fields jsonb not null default '{}',
    created_at_ms bigint not null default now_ms(),
    updated_at_ms bigint not null default now_ms(),
    unique (workspace_id, reference)
);

create table executions (
    id uuid primary key,
    workspace_id text not null references workspaces (id),
    process_id text not null,
    process_version integer not null,
    spektr_id uuid not null references customers (spektr_id),
    token text not null unique,
    status text not null,
    step_index integer not null,
    deadline_ms bigint,
    outcome text,
    created_at_ms bigint not null default now_ms(),
    updated_at_ms bigint not null default now_ms(),
    foreign key (workspace_id, process_id, process_version)
        references process_versions (workspace_id, process_id, version)
);

-- Only waiting steps with a deadline are in this index, so the sweeper's cost does not grow
-- with finished executions or with steps that wait forever.
create index executions_due on executions (deadline_ms)
    where status = 'pending' and deadline_ms is not null;
create index executions_customer on executions (spektr_id);

create table events (
    id uuid primary key,
    workspace_id text not null references workspaces (id),
    seq bigint not null,
    execution_id uuid references executions (id),
    type text not null,
    created_at_ms bigint not null,
    body jsonb not null,
    unique (workspace_id, seq)
);
create index events_execution on events (execution_id, seq);

create table idempotency_keys (
    workspace_id text not null,
    key text not null,
    fingerprint text not null,
    state text not null,
    owner uuid not null,
    locked_until_ms bigint not null,
    response_status integer,
    response_body text,
    created_at_ms bigint not null,
    primary key (workspace_id, key)
);
create index idempotency_keys_created on idempotency_keys (created_at_ms);
