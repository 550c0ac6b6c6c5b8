create table webhook_endpoints (
    id text primary key,
    workspace_id text not null references workspaces (id),
    url text not null,
    description text,
    event_types text,
    secret text not null,
    enabled integer not null default 1,
    created_at_ms integer not null default (cast(unixepoch('subsec') * 1000 as integer)),
    updated_at_ms integer not null default (cast(unixepoch('subsec') * 1000 as integer))
);
create index webhook_endpoints_workspace on webhook_endpoints (workspace_id);

create table deliveries (
    id text primary key,
    event_id text not null references events (id),
    endpoint_id text not null references webhook_endpoints (id) on delete cascade,
    workspace_id text not null,
    status text not null,
    attempts integer not null default 0,
    next_attempt_at_ms integer not null,
    locked_until_ms integer,
    last_error text,
    created_at_ms integer not null default (cast(unixepoch('subsec') * 1000 as integer)),
    updated_at_ms integer not null default (cast(unixepoch('subsec') * 1000 as integer))
);
create index deliveries_due on deliveries (next_attempt_at_ms) where status = 'pending';
create index deliveries_endpoint on deliveries (endpoint_id, created_at_ms);
create index deliveries_event on deliveries (event_id);

create table delivery_attempts (
    id text primary key,
    delivery_id text not null references deliveries (id) on delete cascade,
    attempt integer not null,
    started_at_ms integer not null,
    duration_ms integer not null,
    response_status integer,
    error text
);
create index delivery_attempts_delivery on delivery_attempts (delivery_id, attempt);

create index executions_reference on executions (workspace_id, spektr_id);
