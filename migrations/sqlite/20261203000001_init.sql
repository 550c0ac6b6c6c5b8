-- Times are Unix milliseconds by the database clock; ids are UUID text; JSON is text.
create table workspaces (
    id text primary key,
    name text not null,
    event_seq integer not null default 0,
    created_at_ms integer not null default (cast(unixepoch('subsec') * 1000 as integer)),
    updated_at_ms integer not null default (cast(unixepoch('subsec') * 1000 as integer))
);

create table api_keys (
    id text primary key,
    workspace_id text not null references workspaces (id),
    key_hash text not null unique,
    created_at_ms integer not null default (cast(unixepoch('subsec') * 1000 as integer))
);

create table processes (
    workspace_id text not null references workspaces (id),
    id text not null,
    current_version integer not null,
    created_at_ms integer not null default (cast(unixepoch('subsec') * 1000 as integer)),
    updated_at_ms integer not null default (cast(unixepoch('subsec') * 1000 as integer)),
    primary key (workspace_id, id)
);

create table process_versions (
    workspace_id text not null,
    process_id text not null,
    version integer not null,
    definition text not null,
    created_at_ms integer not null default (cast(unixepoch('subsec') * 1000 as integer)),
    primary key (workspace_id, process_id, version),
    foreign key (workspace_id, process_id) references processes (workspace_id, id)
);

create table customers (
    spektr_id text primary key,
    workspace_id text not null references workspaces (id),
    reference text not null,
    fields text not null default '{}',
    created_at_ms integer not null default (cast(unixepoch('subsec') * 1000 as integer)),
    updated_at_ms integer not null default (cast(unixepoch('subsec') * 1000 as integer)),
    unique (workspace_id, reference)
);

create table executions (
    id text primary key,
    workspace_id text not null references workspaces (id),
    process_id text not null,
    process_version integer not null,
    spektr_id text not null references customers (spektr_id),
    token text not null unique,
    status text not null,
    step_index integer not null,
    deadline_ms integer,
    outcome text,
    created_at_ms integer not null default (cast(unixepoch('subsec') * 1000 as integer)),
    updated_at_ms integer not null default (cast(unixepoch('subsec') * 1000 as integer)),
    foreign key (workspace_id, process_id, process_version)
        references process_versions (workspace_id, process_id, version)
);

create index executions_due on executions (deadline_ms)
    where status = 'pending' and deadline_ms is not null;
create index executions_customer on executions (spektr_id);

create table events (
    id text primary key,
    workspace_id text not null references workspaces (id),
    seq integer not null,
    execution_id text references executions (id),
    type text not null,
    created_at_ms integer not null,
    body text not null,
    unique (workspace_id, seq)
);
create index events_execution on events (execution_id, seq);

create table idempotency_keys (
    workspace_id text not null,
    key text not null,
    fingerprint text not null,
    state text not null,
    owner text not null,
    locked_until_ms integer not null,
    response_status integer,
    response_body text,
    created_at_ms integer not null,
    primary key (workspace_id, key)
);
create index idempotency_keys_created on idempotency_keys (created_at_ms);
