//! The Postgres store: the production backend, safe for several server processes at once.

mod webhooks;

use std::borrow::Cow;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Postgres, Row, SqlSafeStr, Transaction};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{
    ApiKeyRecord, ApiKeySummary, Backend, Change, Decide, DecideStart, ExecutionSnapshot,
    IdempotencyBegin, IdempotencyClaim, IdempotencyTimes, IdempotentResponse, LockedExecution,
    NewEvent, NewExecution, PoolStats, ProcessPut, ProcessRecord, StartContext, Store, StoreError,
    StoreOptions, parse_fields, parse_status,
};
use crate::engine::model::{Customer, Event, Execution};

/// Postgres-backed store.
pub struct PostgresStore {
    pool: PgPool,
    announce_within_ms: i64,
    deliveries_queued: Arc<Notify>,
}

/// The channel on which processes announce deadlines that are due soon.
const DEADLINE_CHANNEL: &str = "spektr_deadlines";

/// How often a transaction that lost a deadlock or serialization race is tried again.
const RETRIES: usize = 3;

fn migrator() -> Migrator {
    let migration = |version, name, sql: &'static str| {
        Migration::new(
            version,
            Cow::Borrowed(name),
            MigrationType::Simple,
            sql.into_sql_str(),
            false,
        )
    };
    Migrator::with_migrations(vec![
        migration(
            20261203000001,
            "init",
            include_str!("../../../migrations/postgres/20261203000001_init.sql"),
        ),
        migration(
            20261203000002,
            "webhooks",
            include_str!("../../../migrations/postgres/20261203000002_webhooks.sql"),
        ),
        migration(
            20261203000003,
            "event_order",
            include_str!("../../../migrations/postgres/20261203000003_event_order.sql"),
        ),
        migration(
            20261203000004,
            "waiting_index",
            include_str!("../../../migrations/postgres/20261203000004_waiting_index.sql"),
        ),
        migration(
            20261203000005,
            "api_key_revocation",
            include_str!("../../../migrations/postgres/20261203000005_api_key_revocation.sql"),
        ),
        migration(
            20261204000006,
            "token_hash",
            include_str!("../../../migrations/postgres/20261204000006_token_hash.sql"),
        ),
    ])
}

impl PostgresStore {
    /// Connects, and migrates the schema to the newest version.
    pub async fn connect(url: &str, options: &StoreOptions) -> anyhow::Result<Self> {
        let connect = PgConnectOptions::from_str(url)?;
        // sqlx pings a connection when it goes back to the pool, and by default again when it
        // is taken out: two extra round trips around every request's one statement. One that
        // went back a moment ago was checked then, so only a connection idle for longer is
        // pinged before use (a dead one is dropped and another taken).
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .test_before_acquire(false)
            .before_acquire(|connection, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IDLE_CONNECTIONS_AFTER {
                        connection.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(connect)
            .await?;
        migrator().run(&pool).await?;
        Ok(PostgresStore {
            pool,
            announce_within_ms: options.announce_deadlines_within_ms,
            deliveries_queued: Arc::new(Notify::new()),
        })
    }
}

/// A pooled connection idle for at least this long is pinged before it is used, so one that
/// the database closed meanwhile (a restart, an idle timeout) is replaced instead of failing
/// a request.
const PING_IDLE_CONNECTIONS_AFTER: Duration = Duration::from_secs(1);

/// Pause before listening again after the listener lost or could not get its connection.
const LISTEN_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Wakes the sweeper for each announced deadline, and whenever the listener (re)connects:
/// announcements made while it was not listening are lost, so the sweeper looks for due steps
/// at once instead of after its regular interval. A lost connection is re-established here,
/// at a steady pace, until the database is back.
async fn listen(pool: PgPool, wake: Arc<Notify>) {
    loop {
        match subscribe(&pool).await {
            Ok(mut listener) => {
                wake.notify_one();
                loop {
                    match listener.try_recv().await {
                        Ok(Some(_)) => wake.notify_one(),
                        Ok(None) => {
                            tracing::warn!("deadline listener lost its connection");
                            break;
                        }
                        Err(error) => {
                            tracing::warn!(error = %error, "deadline listener failed");
                            break;
                        }
                    }
                }
            }
            Err(error) => tracing::warn!(error = %error, "cannot listen for deadlines; retrying"),
        }
        tokio::time::sleep(LISTEN_RETRY_PAUSE).await;
    }
}

async fn subscribe(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    // Left on, sqlx reconnects inside `try_recv` and retries I/O errors without a pause.
    listener.eager_reconnect(false);
    listener.listen(DEADLINE_CHANNEL).await?;
    Ok(listener)
}

/// Whether a failed transaction lost a race that a retry can win.
fn is_retryable(error: &StoreError) -> bool {
    match error {
        StoreError::Backend(sqlx::Error::Database(db)) => {
            matches!(db.code().as_deref(), Some("40P01" | "40001"))
        }
        _ => false,
    }
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505"))
}

fn execution_from_row(row: &PgRow) -> Result<Execution, StoreError> {
    Ok(Execution {
        id: row.try_get("id")?,
        workspace_id: row.try_get("workspace_id")?,
        process_id: row.try_get("process_id")?,
        process_version: row.try_get("process_version")?,
        spektr_id: row.try_get("spektr_id")?,
        token: row.try_get("token")?,
        status: parse_status(row.try_get("status")?)?,
        step_index: row.try_get("step_index")?,
        deadline_ms: row.try_get("deadline_ms")?,
        outcome: row.try_get("outcome")?,
    })
}

fn locked_from_row(row: &PgRow) -> Result<LockedExecution, StoreError> {
    let execution = execution_from_row(row)?;
    Ok(LockedExecution {
        customer: Customer {
            spektr_id: execution.spektr_id,
            workspace_id: execution.workspace_id.clone(),
            reference: row.try_get("reference")?,
            fields: parse_fields(row.try_get("fields")?)?,
        },
        execution,
        definition: row.try_get("definition")?,
        now_ms: row.try_get("now_ms")?,
    })
}

/// Writes events. Their `seq` comes from one sequence and their `txid` is the writing
/// transaction's, which is all the feed needs to list them in a safe order; no row is shared
/// between transactions, so writers of one workspace commit side by side.
/// Returns how many deliveries were queued.
async fn insert_events(
    tx: &mut Transaction<'_, Postgres>,
    events: &[(String, NewEvent)],
) -> Result<u64, StoreError> {
    if events.is_empty() {
        return Ok(0);
    }
    let mut columns = EventColumns::default();
    for (workspace_id, event) in events {
        columns.push(workspace_id, event);
    }
    // One statement for the whole set (a sweeper batch writes hundreds of events), which also
    // queues a delivery per event for every enabled endpoint that wants it: the outbox.
    // `order by n` numbers the events in the order they were decided.
    let queued = sqlx::query(
        r#"with inserted as (
               insert into events
                   (id, workspace_id, execution_id, type, created_at_ms, body)
               select id, workspace_id, execution_id, type, created_at_ms, body::jsonb
               from unnest($1::uuid[], $2::text[], $3::uuid[], $4::text[], $5::int8[],
                           $6::text[]) with ordinality
                    as u(id, workspace_id, execution_id, type, created_at_ms, body, n)
               order by n
               returning id, workspace_id, type
           )
           insert into deliveries
               (id, event_id, endpoint_id, workspace_id, status, next_attempt_at_ms)
           select gen_random_uuid(), i.id, w.id, i.workspace_id, 'pending', now_ms()
           from inserted i
           join webhook_endpoints w on w.workspace_id = i.workspace_id and w.enabled
                and (w.event_types is null or w.event_types ? i.type)"#,
    )
    .bind(columns.ids)
    .bind(columns.workspace_ids)
    .bind(columns.execution_ids)
    .bind(columns.kinds)
    .bind(columns.created_at_ms)
    .bind(columns.bodies)
    .execute(&mut **tx)
    .await?;
    Ok(queued.rows_affected())
}

/// Events as column arrays, for one `unnest` insert.
#[derive(Default)]
struct EventColumns {
    ids: Vec<Uuid>,
    workspace_ids: Vec<String>,
    execution_ids: Vec<Option<Uuid>>,
    kinds: Vec<&'static str>,
    created_at_ms: Vec<i64>,
    bodies: Vec<String>,
}

impl EventColumns {
    fn push(&mut self, workspace_id: &str, event: &NewEvent) {
        self.ids.push(event.id);
        self.workspace_ids.push(workspace_id.to_owned());
        self.execution_ids.push(event.execution_id);
        self.kinds.push(event.kind);
        self.created_at_ms.push(event.created_at_ms);
        self.bodies.push(event.body.to_string());
    }
}

async fn store_idempotent_response(
    tx: &mut Transaction<'_, Postgres>,
    response: &IdempotentResponse,
) -> Result<(), StoreError> {
    let updated = sqlx::query(
        r#"update idempotency_keys
           set state = 'done', response_status = $4, response_body = $5
           where workspace_id = $1 and key = $2 and owner = $3 and state = 'in_flight'"#,
    )
    .bind(&response.claim.workspace_id)
    .bind(&response.claim.key)
    .bind(response.claim.owner)
    .bind(i32::from(response.status))
    .bind(&response.body)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if updated == 0 {
        // The lease ran out and another request took the key over: this one must not commit.
        return Err(StoreError::Conflict("idempotency key was taken over"));
    }
    Ok(())
}

/// Applies a decided change to a locked execution and its customer.
async fn apply_change(
    tx: &mut Transaction<'_, Postgres>,
    locked: &LockedExecution,
    change: &Change,
) -> Result<(), StoreError> {
    sqlx::query(
        r#"update executions
           set status = $2, step_index = $3, deadline_ms = $4, outcome = $5,
               updated_at_ms = now_ms()
           where id = $1"#,
    )
    .bind(locked.execution.id)
    .bind(change.status.as_str())
    .bind(change.step_index)
    .bind(change.deadline_ms)
    .bind(&change.outcome)
    .execute(&mut **tx)
    .await?;
    if let Some(fields) = &change.customer_fields {
        sqlx::query(
            r#"update customers set fields = $2::jsonb, updated_at_ms = now_ms()
               where spektr_id = $1"#,
        )
        .bind(locked.customer.spektr_id)
        .bind(Value::Object(fields.clone()).to_string())
        .execute(&mut **tx)
        .await?;
    }
    if let Some(response) = &change.idempotent_response {
        store_idempotent_response(tx, response).await?;
    }
    Ok(())
}

impl PostgresStore {
    fn wake_delivery(&self, queued: u64) {
        if queued > 0 {
            self.deliveries_queued.notify_one();
        }
    }

    /// Tells every process's sweeper (on commit) when `change` stores a deadline due sooner
    /// than their regular pass would notice it; returns whether it did.
    async fn announce_deadline(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        change: &Change,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let soon = change
            .deadline_ms
            .is_some_and(|deadline| deadline - now_ms < self.announce_within_ms);
        if soon {
            sqlx::query("select pg_notify($1, '')")
                .bind(DEADLINE_CHANNEL)
                .execute(&mut **tx)
                .await?;
        }
        Ok(soon)
    }

    async fn start_once(
        &self,
        new: &NewExecution,
        decide: DecideStart<'_>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        // The upsert locks the customer row, so concurrent starts for one reference merge
        // their prefills one after the other.
        let row = sqlx::query(
            r#"insert into customers (spektr_id, workspace_id, reference, fields)
               values ($1, $2, $3, $4::jsonb)
               on conflict (workspace_id, reference) do update
               set fields = customers.fields || excluded.fields, updated_at_ms = now_ms()
               returning spektr_id, fields::text as fields, now_ms() as now_ms"#,
        )
        .bind(Uuid::now_v7())
        .bind(&new.workspace_id)
        .bind(&new.reference)
        .bind(Value::Object(new.prefill.clone()).to_string())
        .fetch_one(&mut *tx)
        .await?;
        let context = StartContext {
            customer: Customer {
                spektr_id: row.try_get("spektr_id")?,
                workspace_id: new.workspace_id.clone(),
                reference: new.reference.clone(),
                fields: parse_fields(row.try_get("fields")?)?,
            },
            now_ms: row.try_get("now_ms")?,
        };
        let Some(change) = decide(&context) else {
            return Ok(());
        };

        sqlx::query(
            r#"insert into executions
               (id, workspace_id, process_id, process_version, spektr_id, token, token_hash,
                status, step_index, deadline_ms, outcome)
               values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"#,
        )
        .bind(new.id)
        .bind(&new.workspace_id)
        .bind(&new.process_id)
        .bind(new.process_version)
        .bind(context.customer.spektr_id)
        .bind(&new.token)
        .bind(&new.token_hash)
        .bind(change.status.as_str())
        .bind(change.step_index)
        .bind(change.deadline_ms)
        .bind(&change.outcome)
        .execute(&mut *tx)
        .await?;
        if let Some(fields) = &change.customer_fields {
            sqlx::query(r#"update customers set fields = $2::jsonb where spektr_id = $1"#)
                .bind(context.customer.spektr_id)
                .bind(Value::Object(fields.clone()).to_string())
                .execute(&mut *tx)
                .await?;
        }
        let events: Vec<_> = change
            .events
            .iter()
            .map(|event| (new.workspace_id.clone(), event.clone()))
            .collect();
        let queued = insert_events(&mut tx, &events).await?;
        if let Some(response) = &change.idempotent_response {
            store_idempotent_response(&mut tx, response).await?;
        }
        self.announce_deadline(&mut tx, &change, context.now_ms)
            .await?;
        tx.commit().await?;
        self.wake_delivery(queued);
        Ok(())
    }

    async fn advance_once(&self, token_hash: &str, decide: Decide<'_>) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            r#"select e.id, e.workspace_id, e.process_id, e.process_version, e.spektr_id,
                      e.token, e.status, e.step_index, e.deadline_ms, e.outcome,
                      c.reference, c.fields::text as fields, v.definition,
                      now_ms() as now_ms
               from executions e
               join customers c on c.spektr_id = e.spektr_id
               join process_versions v on v.workspace_id = e.workspace_id
                    and v.process_id = e.process_id and v.version = e.process_version
               where e.token_hash = $1
               for update of e, c"#,
        )
        .bind(token_hash)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let locked = locked_from_row(&row)?;
        let Some(change) = decide(&locked) else {
            return Ok(false);
        };
        apply_change(&mut tx, &locked, &change).await?;
        let events: Vec<_> = change
            .events
            .iter()
            .map(|event| (locked.execution.workspace_id.clone(), event.clone()))
            .collect();
        let queued = insert_events(&mut tx, &events).await?;
        self.announce_deadline(&mut tx, &change, locked.now_ms)
            .await?;
        tx.commit().await?;
        self.wake_delivery(queued);
        Ok(true)
    }

    async fn time_out_due_once(&self, limit: i64, decide: Decide<'_>) -> Result<usize, StoreError> {
        let mut tx = self.pool.begin().await?;
        // SKIP LOCKED lets every replica sweep at once: each takes rows nobody else holds,
        // and a row held by a submit in progress is left for that submit to settle.
        // NOTE: `(select now_ms())` is evaluated once, so it bounds the index scan; a bare
        // `now_ms()` is volatile and would make every pass read the whole index.
        let rows = sqlx::query(
            r#"select e.id, e.workspace_id, e.process_id, e.process_version, e.spektr_id,
                      e.token, e.status, e.step_index, e.deadline_ms, e.outcome,
                      c.reference, c.fields::text as fields, v.definition,
                      now_ms() as now_ms
               from executions e
               join customers c on c.spektr_id = e.spektr_id
               join process_versions v on v.workspace_id = e.workspace_id
                    and v.process_id = e.process_id and v.version = e.process_version
               where e.status = 'pending' and e.deadline_ms is not null
                 and e.deadline_ms <= (select now_ms())
               order by e.deadline_ms
               limit $1
               for update of e, c skip locked"#,
        )
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let mut locked: Vec<LockedExecution> = Vec::with_capacity(rows.len());
        for row in &rows {
            match locked_from_row(row) {
                Ok(row) => locked.push(row),
                // One unreadable row must not hold back every other due step: it stays
                // waiting, and is reported on each pass, while the rest time out.
                Err(error) => super::skip_unreadable(row.try_get("id").ok(), &error),
            }
        }
        // NOTE: the select above already holds every execution and customer row this batch
        // writes, so the updates below cannot wait on another sweeper, and events take no
        // shared row; batches of several sweepers therefore commit side by side.
        locked.sort_by_key(|locked| locked.customer.spektr_id);
        // Rows of one customer see each other's changes, as they would one after the other.
        let mut customers: HashMap<Uuid, Map<String, Value>> = HashMap::new();
        let mut updates = ExecutionColumns::default();
        let mut events = Vec::new();
        let mut announced = false;
        for locked in &mut locked {
            if let Some(fields) = customers.get(&locked.customer.spektr_id) {
                locked.customer.fields = fields.clone();
            }
            let Some(change) = decide(locked) else {
                continue;
            };
            if !announced {
                announced = self
                    .announce_deadline(&mut tx, &change, locked.now_ms)
                    .await?;
            }
            updates.push(locked.execution.id, &change);
            if let Some(fields) = change.customer_fields {
                customers.insert(locked.customer.spektr_id, fields);
            }
            let workspace_id = &locked.execution.workspace_id;
            events.extend(change.events.into_iter().map(|e| (workspace_id.clone(), e)));
        }
        let changed = updates.ids.len();
        if changed == 0 {
            return Ok(0);
        }
        // Set-based writes: a few statements per batch, however large the batch.
        sqlx::query(
            r#"update executions e
               set status = u.status, step_index = u.step_index, deadline_ms = u.deadline_ms,
                   outcome = u.outcome, updated_at_ms = now_ms()
               from unnest($1::uuid[], $2::text[], $3::int4[], $4::int8[], $5::text[])
                    as u(id, status, step_index, deadline_ms, outcome)
               where e.id = u.id"#,
        )
        .bind(updates.ids)
        .bind(updates.statuses)
        .bind(updates.step_indexes)
        .bind(updates.deadlines)
        .bind(updates.outcomes)
        .execute(&mut *tx)
        .await?;
        let mut customers: Vec<_> = customers.into_iter().collect();
        customers.sort_by_key(|(spektr_id, _)| *spektr_id);
        let (spektr_ids, fields): (Vec<Uuid>, Vec<String>) = customers
            .into_iter()
            .map(|(id, fields)| (id, Value::Object(fields).to_string()))
            .unzip();
        sqlx::query(
            r#"update customers c set fields = u.fields::jsonb, updated_at_ms = now_ms()
               from unnest($1::uuid[], $2::text[]) as u(spektr_id, fields)
               where c.spektr_id = u.spektr_id"#,
        )
        .bind(spektr_ids)
        .bind(fields)
        .execute(&mut *tx)
        .await?;
        let queued = insert_events(&mut tx, &events).await?;
        tx.commit().await?;
        self.wake_delivery(queued);
        Ok(changed)
    }
}

/// Execution changes as column arrays, for one `unnest` update.
#[derive(Default)]
struct ExecutionColumns {
    ids: Vec<Uuid>,
    statuses: Vec<&'static str>,
    step_indexes: Vec<i32>,
    deadlines: Vec<Option<i64>>,
    outcomes: Vec<Option<String>>,
}

impl ExecutionColumns {
    fn push(&mut self, id: Uuid, change: &Change) {
        self.ids.push(id);
        self.statuses.push(change.status.as_str());
        self.step_indexes.push(change.step_index);
        self.deadlines.push(change.deadline_ms);
        self.outcomes.push(change.outcome.clone());
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("select 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn schema_version(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("select coalesce(max(version), 0) from _sqlx_migrations")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }

    async fn put_workspace(&self, id: &str, name: &str) -> Result<bool, StoreError> {
        let row = sqlx::query(
            r#"insert into workspaces (id, name) values ($1, $2)
               on conflict (id) do update set name = excluded.name, updated_at_ms = now_ms()
               returning (xmax = 0) as created"#,
        )
        .bind(id)
        .bind(name)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("created")?)
    }

    async fn workspace_exists(&self, id: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("select exists (select 1 from workspaces where id = $1)")
            .bind(id)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }

    async fn add_api_key(
        &self,
        workspace_id: &str,
        id: Uuid,
        key_hash: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            r#"insert into api_keys (id, workspace_id, key_hash) values ($1, $2, $3)
               on conflict (key_hash) do nothing"#,
        )
        .bind(id)
        .bind(workspace_id)
        .bind(key_hash)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn find_api_key(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let row = sqlx::query(
            r#"select id, workspace_id, key_hash from api_keys
                   where key_hash = $1 and revoked_at_ms is null"#,
        )
        .bind(key_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(ApiKeyRecord {
                id: row.try_get("id")?,
                workspace_id: row.try_get("workspace_id")?,
                key_hash: row.try_get("key_hash")?,
            })
        })
        .transpose()
    }

    async fn list_api_keys(&self, workspace_id: &str) -> Result<Vec<ApiKeySummary>, StoreError> {
        let rows = sqlx::query(
            r#"select id, created_at_ms, revoked_at_ms from api_keys
               where workspace_id = $1 order by created_at_ms, id"#,
        )
        .bind(workspace_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ApiKeySummary {
                    id: row.try_get("id")?,
                    created_at_ms: row.try_get("created_at_ms")?,
                    revoked_at_ms: row.try_get("revoked_at_ms")?,
                })
            })
            .collect()
    }

    async fn revoke_api_key(
        &self,
        workspace_id: &str,
        id: Uuid,
    ) -> Result<Option<String>, StoreError> {
        let hash = sqlx::query_scalar(
            r#"update api_keys set revoked_at_ms = coalesce(revoked_at_ms, now_ms())
               where workspace_id = $1 and id = $2
               returning key_hash"#,
        )
        .bind(workspace_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(hash)
    }

    async fn put_process(
        &self,
        workspace_id: &str,
        id: &str,
        definition: &str,
    ) -> Result<ProcessPut, StoreError> {
        for _ in 0..RETRIES {
            let mut tx = self.pool.begin().await?;
            let current = sqlx::query(
                r#"select p.current_version, v.definition
                   from processes p
                   join process_versions v on v.workspace_id = p.workspace_id
                        and v.process_id = p.id and v.version = p.current_version
                   where p.workspace_id = $1 and p.id = $2
                   for update of p"#,
            )
            .bind(workspace_id)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            let (created, version) = match current {
                Some(row) => {
                    let version: i32 = row.try_get("current_version")?;
                    let stored: String = row.try_get("definition")?;
                    if stored == definition {
                        return Ok(ProcessPut {
                            created: false,
                            version,
                        });
                    }
                    (false, version + 1)
                }
                None => (true, 1),
            };
            let inserted = if created {
                sqlx::query(
                    r#"insert into processes (workspace_id, id, current_version)
                       values ($1, $2, $3)"#,
                )
            } else {
                sqlx::query(
                    r#"update processes set current_version = $3, updated_at_ms = now_ms()
                       where workspace_id = $1 and id = $2"#,
                )
            }
            .bind(workspace_id)
            .bind(id)
            .bind(version)
            .execute(&mut *tx)
            .await;
            match inserted {
                // Two first PUTs raced; the loser tries again as an update.
                Err(error) if is_unique_violation(&error) => continue,
                other => other?,
            };
            sqlx::query(
                r#"insert into process_versions (workspace_id, process_id, version, definition)
                   values ($1, $2, $3, $4)"#,
            )
            .bind(workspace_id)
            .bind(id)
            .bind(version)
            .bind(definition)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(ProcessPut { created, version });
        }
        Err(StoreError::Conflict("process was changed concurrently"))
    }

    async fn get_process(
        &self,
        workspace_id: &str,
        id: &str,
    ) -> Result<Option<ProcessRecord>, StoreError> {
        let row = sqlx::query(
            r#"select p.current_version, v.definition
               from processes p
               join process_versions v on v.workspace_id = p.workspace_id
                    and v.process_id = p.id and v.version = p.current_version
               where p.workspace_id = $1 and p.id = $2"#,
        )
        .bind(workspace_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(ProcessRecord {
                version: row.try_get("current_version")?,
                definition: row.try_get("definition")?,
            })
        })
        .transpose()
    }

    async fn get_customer(
        &self,
        workspace_id: &str,
        spektr_id: Uuid,
    ) -> Result<Option<Customer>, StoreError> {
        let row = sqlx::query(
            r#"select reference, fields::text as fields from customers
               where workspace_id = $1 and spektr_id = $2"#,
        )
        .bind(workspace_id)
        .bind(spektr_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(Customer {
                spektr_id,
                workspace_id: workspace_id.to_owned(),
                reference: row.try_get("reference")?,
                fields: parse_fields(row.try_get("fields")?)?,
            })
        })
        .transpose()
    }

    async fn list_execution_events(
        &self,
        workspace_id: &str,
        execution_id: Uuid,
    ) -> Result<Option<Vec<Event>>, StoreError> {
        let exists = sqlx::query(
            "select exists (select 1 from executions where id = $1 and workspace_id = $2)",
        )
        .bind(execution_id)
        .bind(workspace_id)
        .fetch_one(&self.pool)
        .await?
        .try_get::<bool, _>(0)?;
        if !exists {
            return Ok(None);
        }
        let rows = sqlx::query(
            r#"select id, seq, execution_id, type, created_at_ms, body::text as body
               from events where execution_id = $1 order by seq"#,
        )
        .bind(execution_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(webhooks::event_from_row)
            .collect::<Result<Vec<_>, StoreError>>()
            .map(Some)
    }

    async fn begin_idempotent(
        &self,
        workspace_id: &str,
        key: &str,
        fingerprint: &str,
        times: IdempotencyTimes,
    ) -> Result<IdempotencyBegin, StoreError> {
        let owner = Uuid::new_v4();
        for _ in 0..RETRIES {
            // Takes the key when it is new, expired, or abandoned by a request whose lease
            // ran out; otherwise leaves the row alone and reports what is there.
            let claimed = sqlx::query(
                r#"insert into idempotency_keys
                   (workspace_id, key, fingerprint, state, owner, locked_until_ms, created_at_ms)
                   values ($1, $2, $3, 'in_flight', $4, now_ms() + $5, now_ms())
                   on conflict (workspace_id, key) do update
                   set fingerprint = excluded.fingerprint, state = 'in_flight',
                       owner = excluded.owner, locked_until_ms = excluded.locked_until_ms,
                       created_at_ms = excluded.created_at_ms,
                       response_status = null, response_body = null
                   where idempotency_keys.created_at_ms < now_ms() - $6
                      or (idempotency_keys.state = 'in_flight'
                          and idempotency_keys.locked_until_ms < now_ms())
                   returning owner"#,
            )
            .bind(workspace_id)
            .bind(key)
            .bind(fingerprint)
            .bind(owner)
            .bind(times.lease_ms)
            .bind(times.ttl_ms)
            .fetch_optional(&self.pool)
            .await?;
            if claimed.is_some() {
                return Ok(IdempotencyBegin::Claimed(IdempotencyClaim {
                    workspace_id: workspace_id.to_owned(),
                    key: key.to_owned(),
                    owner,
                }));
            }
            let existing = sqlx::query(
                r#"select fingerprint, state, response_status, response_body
                   from idempotency_keys where workspace_id = $1 and key = $2"#,
            )
            .bind(workspace_id)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
            // The owner released the key in between: try to take it again.
            let Some(row) = existing else { continue };
            let stored: String = row.try_get("fingerprint")?;
            if stored != fingerprint {
                return Ok(IdempotencyBegin::Mismatch);
            }
            let state: String = row.try_get("state")?;
            if state != "done" {
                return Ok(IdempotencyBegin::InFlight);
            }
            let status: i32 = row.try_get("response_status")?;
            return Ok(IdempotencyBegin::Replay {
                status: u16::try_from(status)
                    .map_err(|_| StoreError::Corrupt("response status".to_owned()))?,
                body: row.try_get("response_body")?,
            });
        }
        Ok(IdempotencyBegin::InFlight)
    }

    async fn release_idempotent(&self, claim: &IdempotencyClaim) -> Result<(), StoreError> {
        sqlx::query(
            r#"delete from idempotency_keys
               where workspace_id = $1 and key = $2 and owner = $3 and state = 'in_flight'"#,
        )
        .bind(&claim.workspace_id)
        .bind(&claim.key)
        .bind(claim.owner)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn purge_idempotency(&self, ttl_ms: i64, limit: i64) -> Result<u64, StoreError> {
        let deleted = sqlx::query(
            r#"delete from idempotency_keys where ctid in (
                   select ctid from idempotency_keys
                   where created_at_ms < (select now_ms()) - $1 and state = 'done'
                   limit $2)"#,
        )
        .bind(ttl_ms)
        .bind(limit)
        .execute(&self.pool)
        .await?;
        Ok(deleted.rows_affected())
    }

    async fn start_execution(
        &self,
        new: NewExecution,
        decide: DecideStart<'_>,
    ) -> Result<(), StoreError> {
        let mut attempt = 0;
        loop {
            match self.start_once(&new, decide).await {
                Err(error) if is_retryable(&error) && attempt + 1 < RETRIES => attempt += 1,
                other => return other,
            }
        }
    }

    async fn load_execution(
        &self,
        token_hash: &str,
    ) -> Result<Option<ExecutionSnapshot>, StoreError> {
        let row = sqlx::query(
            r#"select id, workspace_id, process_id, process_version, spektr_id,
                      token, status, step_index, deadline_ms, outcome, now_ms() as now_ms
               from executions
               where token_hash = $1"#,
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(ExecutionSnapshot {
                execution: execution_from_row(&row)?,
                now_ms: row.try_get("now_ms")?,
            })
        })
        .transpose()
    }

    async fn process_version(
        &self,
        workspace_id: &str,
        process_id: &str,
        version: i32,
    ) -> Result<Option<String>, StoreError> {
        let definition = sqlx::query_scalar(
            r#"select definition from process_versions
               where workspace_id = $1 and process_id = $2 and version = $3"#,
        )
        .bind(workspace_id)
        .bind(process_id)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?;
        Ok(definition)
    }

    async fn advance_execution(
        &self,
        token_hash: &str,
        decide: Decide<'_>,
    ) -> Result<bool, StoreError> {
        let mut attempt = 0;
        loop {
            match self.advance_once(token_hash, decide).await {
                Err(error) if is_retryable(&error) && attempt + 1 < RETRIES => attempt += 1,
                other => return other,
            }
        }
    }

    async fn time_out_due(&self, limit: i64, decide: Decide<'_>) -> Result<usize, StoreError> {
        let mut attempt = 0;
        loop {
            match self.time_out_due_once(limit, decide).await {
                Err(error) if is_retryable(&error) && attempt + 1 < RETRIES => attempt += 1,
                other => return other,
            }
        }
    }

    fn listen_for_deadlines(&self, wake: Arc<Notify>, shutdown: CancellationToken) {
        let pool = self.pool.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = listen(pool, wake) => {}
            }
        });
    }

    async fn count_events(&self, kind: &str) -> Result<(i64, i64), StoreError> {
        let row = sqlx::query(
            "select count(*), count(distinct execution_id) from events where type = $1",
        )
        .bind(kind)
        .fetch_one(&self.pool)
        .await?;
        Ok((row.try_get(0)?, row.try_get(1)?))
    }

    async fn next_deadline_in(&self) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query(
            r#"select min(deadline_ms) - now_ms() from executions
               where status = 'pending' and deadline_ms is not null"#,
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get(0)?)
    }

    async fn count_waiting(&self) -> Result<i64, StoreError> {
        // Answered from the partial index `executions_waiting` alone.
        let row = sqlx::query("select count(*) from executions where status = 'pending'")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }

    fn pool_stats(&self) -> Vec<PoolStats> {
        vec![PoolStats::of("main", &self.pool)]
    }
}
