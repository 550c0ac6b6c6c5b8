-- Webhook endpoints and the delivery outbox. A delivery row per (event, endpoint) is written in
-- the same transaction as the event, so no event is ever lost between commit and send.
create table webhook_endpoints (
    id uuid primary key,
    workspace_id text not null references workspaces (id),
    url text not null,
    description text,
    -- JSON array of event types, or null for every type.
    event_types jsonb,
    secret text not null,
    enabled boolean not null default true,
    created_at_ms bigint not null default now_ms(),
    updated_at_ms bigint not null default now_ms()
);
create index webhook_endpoints_workspace on webhook_endpoints (workspace_id);

create table deliveries (
    id uuid primary key,
    event_id uuid not null references events (id),
    endpoint_id uuid not null references webhook_endpoints (id) on delete cascade,
    workspace_id text not null,
    -- pending, succeeded or failed
    status text not null,
    attempts integer not null default 0,
    next_attempt_at_ms bigint not null,
    -- Set while one process sends it; after this time another may take it over.
    locked_until_ms bigint,
    last_error text,
    created_at_ms bigint not null default now_ms(),
    updated_at_ms bigint not null default now_ms()
);
create index deliveries_due on deliveries (next_attempt_at_ms) where status = 'pending';
create index deliveries_endpoint on deliveries (endpoint_id, created_at_ms);
create index deliveries_event on deliveries (event_id);

create table delivery_attempts (
    id uuid primary key,
    delivery_id uuid not null references deliveries (id) on delete cascade,
    attempt integer not null,
    started_at_ms bigint not null,
    duration_ms bigint not null,
    response_status integer,
    error text
);
create index delivery_attempts_delivery on delivery_attempts (delivery_id, attempt);

create index executions_reference on executions (workspace_id, spektr_id);
