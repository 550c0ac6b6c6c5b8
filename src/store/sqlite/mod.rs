//! The SQLite store: the zero-setup default for one server process.
//!
//! All writes go through a pool of one connection, so transactions never wait on each other
//! for SQLite's single write lock (and never fail to upgrade a read lock into it); reads use
//! their own pool and, in WAL mode, never block on the writer.

mod webhooks;

use std::borrow::Cow;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, SqlSafeStr, Sqlite, Transaction};
use tokio::sync::Notify;
use uuid::Uuid;

use super::{
    ApiKeyRecord, ApiKeySummary, Backend, Change, Decide, DecideStart, ExecutionSnapshot,
    IdempotencyBegin, IdempotencyClaim, IdempotencyTimes, IdempotentResponse, LockedExecution,
    NewEvent, NewExecution, PoolStats, ProcessPut, ProcessRecord, StartContext, Store, StoreError,
    StoreOptions, parse_fields, parse_status,
};
use crate::engine::keys;
use crate::engine::model::{Customer, Event, Execution};

/// SQLite-backed store.
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    deliveries_queued: Arc<Notify>,
}

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
            include_str!("../../../migrations/sqlite/20261203000001_init.sql"),
        ),
        migration(
            20261203000002,
            "webhooks",
            include_str!("../../../migrations/sqlite/20261203000002_webhooks.sql"),
        ),
        migration(
            20261203000004,
            "waiting_index",
            include_str!("../../../migrations/sqlite/20261203000004_waiting_index.sql"),
        ),
        migration(
            20261203000005,
            "api_key_revocation",
            include_str!("../../../migrations/sqlite/20261203000005_api_key_revocation.sql"),
        ),
        migration(
            20261204000006,
            "token_hash",
            include_str!("../../../migrations/sqlite/20261204000006_token_hash.sql"),
        ),
    ])
}

impl SqliteStore {
    /// Opens (creating file and folder if needed) and migrates the database.
    pub async fn connect(url: &str, options: &StoreOptions) -> anyhow::Result<Self> {
        let connect = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        if let Some(folder) = Path::new(connect.get_filename()).parent()
            && !folder.as_os_str().is_empty()
        {
            std::fs::create_dir_all(folder)?;
        }
        // A SQLite connection is a file handle in this process, with nothing on the other end
        // to go away: it needs no ping before use (sqlx still checks it when it is released).
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect.clone())
            .await?;
        migrator().run(&writer).await?;
        hash_unhashed_tokens(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .test_before_acquire(false)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect.read_only(true))
            .await?;
        Ok(SqliteStore {
            writer,
            reader,
            deliveries_queued: Arc::new(Notify::new()),
        })
    }
}

/// Fills in the token hashes of executions stored before tokens were looked up by hash
/// (SQLite cannot compute SHA-256 in SQL, so the migration leaves them empty). Runs before
/// the store serves; a no-op once every row has its hash.
async fn hash_unhashed_tokens(writer: &SqlitePool) -> Result<(), sqlx::Error> {
    loop {
        let mut tx = writer.begin().await?;
        let rows: Vec<(String, String)> =
            sqlx::query_as("select id, token from executions where token_hash is null limit 1000")
                .fetch_all(&mut *tx)
                .await?;
        if rows.is_empty() {
            return Ok(());
        }
        for (id, token) in &rows {
            sqlx::query("update executions set token_hash = ?2 where id = ?1")
                .bind(id)
                .bind(keys::hash(token))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
    }
}

fn uuid_column(row: &SqliteRow, column: &str) -> Result<Uuid, StoreError> {
    let text: String = row.try_get(column)?;
    Uuid::parse_str(&text).map_err(|error| StoreError::Corrupt(format!("{column}: {error}")))
}

fn execution_from_row(row: &SqliteRow) -> Result<Execution, StoreError> {
    Ok(Execution {
        id: uuid_column(row, "id")?,
        workspace_id: row.try_get("workspace_id")?,
        process_id: row.try_get("process_id")?,
        process_version: row.try_get("process_version")?,
        spektr_id: uuid_column(row, "spektr_id")?,
        token: row.try_get("token")?,
        status: parse_status(row.try_get("status")?)?,
        step_index: row.try_get("step_index")?,
        deadline_ms: row.try_get("deadline_ms")?,
        outcome: row.try_get("outcome")?,
    })
}

fn locked_from_row(row: &SqliteRow) -> Result<LockedExecution, StoreError> {
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

/// Returns how many deliveries were queued.
async fn insert_events(
    tx: &mut Transaction<'_, Sqlite>,
    workspace_id: &str,
    events: &[NewEvent],
) -> Result<u64, StoreError> {
    if events.is_empty() {
        return Ok(0);
    }
    let last: i64 = sqlx::query(
        r#"update workspaces set event_seq = event_seq + ?2 where id = ?1
           returning event_seq"#,
    )
    .bind(workspace_id)
    .bind(events.len() as i64)
    .fetch_one(&mut **tx)
    .await?
    .try_get(0)?;
    let first = last - events.len() as i64 + 1;
    for (offset, event) in events.iter().enumerate() {
        sqlx::query(
            r#"insert into events (id, workspace_id, seq, execution_id, type, created_at_ms, body)
               values (?1, ?2, ?3, ?4, ?5, ?6, ?7)"#,
        )
        .bind(event.id.to_string())
        .bind(workspace_id)
        .bind(first + offset as i64)
        .bind(event.execution_id.map(|id| id.to_string()))
        .bind(event.kind)
        .bind(event.created_at_ms)
        .bind(event.body.to_string())
        .execute(&mut **tx)
        .await?;
    }
    let ids: Vec<Uuid> = events.iter().map(|event| event.id).collect();
    queue_deliveries(tx, workspace_id, &ids).await
}

/// The outbox: queues a delivery of each event for every enabled endpoint that wants it.
async fn queue_deliveries(
    tx: &mut Transaction<'_, Sqlite>,
    workspace_id: &str,
    event_ids: &[Uuid],
) -> Result<u64, StoreError> {
    let has_endpoints: bool = sqlx::query(
        "select exists (select 1 from webhook_endpoints where workspace_id = ?1 and enabled)",
    )
    .bind(workspace_id)
    .fetch_one(&mut **tx)
    .await?
    .try_get(0)?;
    if !has_endpoints {
        return Ok(0);
    }
    let mut queued = 0;
    for event_id in event_ids {
        let endpoints = sqlx::query(
            r#"select w.id from events e
               join webhook_endpoints w on w.workspace_id = e.workspace_id and w.enabled
                    and (w.event_types is null
                         or exists (select 1 from json_each(w.event_types)
                                    where value = e.type))
               where e.id = ?1"#,
        )
        .bind(event_id.to_string())
        .fetch_all(&mut **tx)
        .await?;
        for endpoint in &endpoints {
            let endpoint_id: String = endpoint.try_get("id")?;
            sqlx::query(
                r#"insert into deliveries
                   (id, event_id, endpoint_id, workspace_id, status, next_attempt_at_ms)
                   values (?1, ?2, ?3, ?4, 'pending', cast(unixepoch('subsec') * 1000 as integer))"#,
            )
            .bind(Uuid::now_v7().to_string())
            .bind(event_id.to_string())
            .bind(endpoint_id)
            .bind(workspace_id)
            .execute(&mut **tx)
            .await?;
            queued += 1;
        }
    }
    Ok(queued)
}

async fn store_idempotent_response(
    tx: &mut Transaction<'_, Sqlite>,
    response: &IdempotentResponse,
) -> Result<(), StoreError> {
    let updated = sqlx::query(
        r#"update idempotency_keys
           set state = 'done', response_status = ?4, response_body = ?5
           where workspace_id = ?1 and key = ?2 and owner = ?3 and state = 'in_flight'"#,
    )
    .bind(&response.claim.workspace_id)
    .bind(&response.claim.key)
    .bind(response.claim.owner.to_string())
    .bind(i64::from(response.status))
    .bind(&response.body)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if updated == 0 {
        return Err(StoreError::Conflict("idempotency key was taken over"));
    }
    Ok(())
}

async fn update_fields(
    tx: &mut Transaction<'_, Sqlite>,
    spektr_id: Uuid,
    fields: &Map<String, Value>,
) -> Result<(), StoreError> {
    sqlx::query(
        r#"update customers set fields = ?2, updated_at_ms = cast(unixepoch('subsec') * 1000 as integer)
           where spektr_id = ?1"#,
    )
    .bind(spektr_id.to_string())
    .bind(Value::Object(fields.clone()).to_string())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn apply_change(
    tx: &mut Transaction<'_, Sqlite>,
    locked: &LockedExecution,
    change: &Change,
) -> Result<u64, StoreError> {
    sqlx::query(
        r#"update executions
           set status = ?2, step_index = ?3, deadline_ms = ?4, outcome = ?5,
               updated_at_ms = cast(unixepoch('subsec') * 1000 as integer)
           where id = ?1"#,
    )
    .bind(locked.execution.id.to_string())
    .bind(change.status.as_str())
    .bind(change.step_index)
    .bind(change.deadline_ms)
    .bind(&change.outcome)
    .execute(&mut **tx)
    .await?;
    if let Some(fields) = &change.customer_fields {
        update_fields(tx, locked.customer.spektr_id, fields).await?;
    }
    if let Some(response) = &change.idempotent_response {
        store_idempotent_response(tx, response).await?;
    }
    insert_events(tx, &locked.execution.workspace_id, &change.events).await
}

impl SqliteStore {
    fn wake_delivery(&self, queued: u64) {
        if queued > 0 {
            self.deliveries_queued.notify_one();
        }
    }
}

const LOCKED_SELECT: &str = r#"select e.id, e.workspace_id, e.process_id, e.process_version,
       e.spektr_id, e.token, e.status, e.step_index, e.deadline_ms, e.outcome,
       c.reference, c.fields, v.definition,
       cast(unixepoch('subsec') * 1000 as integer) as now_ms
from executions e
join customers c on c.spektr_id = e.spektr_id
join process_versions v on v.workspace_id = e.workspace_id
     and v.process_id = e.process_id and v.version = e.process_version"#;

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("select 1").execute(&self.reader).await?;
        Ok(())
    }

    async fn schema_version(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("select coalesce(max(version), 0) from _sqlx_migrations")
            .fetch_one(&self.reader)
            .await?;
        Ok(row.try_get(0)?)
    }

    async fn put_workspace(&self, id: &str, name: &str) -> Result<bool, StoreError> {
        let mut tx = self.writer.begin_with("begin immediate").await?;
        let exists: bool = sqlx::query("select exists (select 1 from workspaces where id = ?1)")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        sqlx::query(
            r#"insert into workspaces (id, name) values (?1, ?2)
               on conflict (id) do update set name = excluded.name,
                   updated_at_ms = cast(unixepoch('subsec') * 1000 as integer)"#,
        )
        .bind(id)
        .bind(name)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(!exists)
    }

    async fn workspace_exists(&self, id: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("select exists (select 1 from workspaces where id = ?1)")
            .bind(id)
            .fetch_one(&self.reader)
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
            r#"insert into api_keys (id, workspace_id, key_hash) values (?1, ?2, ?3)
               on conflict (key_hash) do nothing"#,
        )
        .bind(id.to_string())
        .bind(workspace_id)
        .bind(key_hash)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn find_api_key(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let row = sqlx::query(
            r#"select id, workspace_id, key_hash from api_keys
                   where key_hash = ?1 and revoked_at_ms is null"#,
        )
        .bind(key_hash)
        .fetch_optional(&self.reader)
        .await?;
        row.map(|row| {
            Ok(ApiKeyRecord {
                id: uuid_column(&row, "id")?,
                workspace_id: row.try_get("workspace_id")?,
                key_hash: row.try_get("key_hash")?,
            })
        })
        .transpose()
    }

    async fn list_api_keys(&self, workspace_id: &str) -> Result<Vec<ApiKeySummary>, StoreError> {
        let rows = sqlx::query(
            r#"select id, created_at_ms, revoked_at_ms from api_keys
               where workspace_id = ?1 order by created_at_ms, id"#,
        )
        .bind(workspace_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ApiKeySummary {
                    id: uuid_column(row, "id")?,
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
            r#"update api_keys set revoked_at_ms =
                   coalesce(revoked_at_ms, cast(unixepoch('subsec') * 1000 as integer))
               where workspace_id = ?1 and id = ?2
               returning key_hash"#,
        )
        .bind(workspace_id)
        .bind(id.to_string())
        .fetch_optional(&self.writer)
        .await?;
        Ok(hash)
    }

    async fn put_process(
        &self,
        workspace_id: &str,
        id: &str,
        definition: &str,
    ) -> Result<ProcessPut, StoreError> {
        let mut tx = self.writer.begin_with("begin immediate").await?;
        let current = sqlx::query(
            r#"select p.current_version, v.definition
               from processes p
               join process_versions v on v.workspace_id = p.workspace_id
                    and v.process_id = p.id and v.version = p.current_version
               where p.workspace_id = ?1 and p.id = ?2"#,
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
        sqlx::query(
            r#"insert into processes (workspace_id, id, current_version) values (?1, ?2, ?3)
               on conflict (workspace_id, id) do update
               set current_version = excluded.current_version,
                   updated_at_ms = cast(unixepoch('subsec') * 1000 as integer)"#,
        )
        .bind(workspace_id)
        .bind(id)
        .bind(version)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            r#"insert into process_versions (workspace_id, process_id, version, definition)
               values (?1, ?2, ?3, ?4)"#,
        )
        .bind(workspace_id)
        .bind(id)
        .bind(version)
        .bind(definition)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ProcessPut { created, version })
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
               where p.workspace_id = ?1 and p.id = ?2"#,
        )
        .bind(workspace_id)
        .bind(id)
        .fetch_optional(&self.reader)
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
            "select reference, fields from customers where workspace_id = ?1 and spektr_id = ?2",
        )
        .bind(workspace_id)
        .bind(spektr_id.to_string())
        .fetch_optional(&self.reader)
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
        let exists: bool = sqlx::query(
            "select exists (select 1 from executions where id = ?1 and workspace_id = ?2)",
        )
        .bind(execution_id.to_string())
        .bind(workspace_id)
        .fetch_one(&self.reader)
        .await?
        .try_get(0)?;
        if !exists {
            return Ok(None);
        }
        let rows = sqlx::query(
            r#"select id, seq, execution_id, type, created_at_ms, body
               from events where execution_id = ?1 order by seq"#,
        )
        .bind(execution_id.to_string())
        .fetch_all(&self.reader)
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
        let mut tx = self.writer.begin_with("begin immediate").await?;
        let claimed = sqlx::query(
            r#"insert into idempotency_keys
               (workspace_id, key, fingerprint, state, owner, locked_until_ms, created_at_ms)
               values (?1, ?2, ?3, 'in_flight', ?4,
                       cast(unixepoch('subsec') * 1000 as integer) + ?5,
                       cast(unixepoch('subsec') * 1000 as integer))
               on conflict (workspace_id, key) do update
               set fingerprint = excluded.fingerprint, state = 'in_flight',
                   owner = excluded.owner, locked_until_ms = excluded.locked_until_ms,
                   created_at_ms = excluded.created_at_ms,
                   response_status = null, response_body = null
               where idempotency_keys.created_at_ms
                         < cast(unixepoch('subsec') * 1000 as integer) - ?6
                  or (idempotency_keys.state = 'in_flight'
                      and idempotency_keys.locked_until_ms
                          < cast(unixepoch('subsec') * 1000 as integer))
               returning owner"#,
        )
        .bind(workspace_id)
        .bind(key)
        .bind(fingerprint)
        .bind(owner.to_string())
        .bind(times.lease_ms)
        .bind(times.ttl_ms)
        .fetch_optional(&mut *tx)
        .await?;
        if claimed.is_some() {
            tx.commit().await?;
            return Ok(IdempotencyBegin::Claimed(IdempotencyClaim {
                workspace_id: workspace_id.to_owned(),
                key: key.to_owned(),
                owner,
            }));
        }
        let row = sqlx::query(
            r#"select fingerprint, state, response_status, response_body
               from idempotency_keys where workspace_id = ?1 and key = ?2"#,
        )
        .bind(workspace_id)
        .bind(key)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        let stored: String = row.try_get("fingerprint")?;
        if stored != fingerprint {
            return Ok(IdempotencyBegin::Mismatch);
        }
        let state: String = row.try_get("state")?;
        if state != "done" {
            return Ok(IdempotencyBegin::InFlight);
        }
        let status: i64 = row.try_get("response_status")?;
        Ok(IdempotencyBegin::Replay {
            status: u16::try_from(status)
                .map_err(|_| StoreError::Corrupt("response status".to_owned()))?,
            body: row.try_get("response_body")?,
        })
    }

    async fn release_idempotent(&self, claim: &IdempotencyClaim) -> Result<(), StoreError> {
        sqlx::query(
            r#"delete from idempotency_keys
               where workspace_id = ?1 and key = ?2 and owner = ?3 and state = 'in_flight'"#,
        )
        .bind(&claim.workspace_id)
        .bind(&claim.key)
        .bind(claim.owner.to_string())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn purge_idempotency(&self, ttl_ms: i64, limit: i64) -> Result<u64, StoreError> {
        let deleted = sqlx::query(
            r#"delete from idempotency_keys where rowid in (
                   select rowid from idempotency_keys
                   where created_at_ms < cast(unixepoch('subsec') * 1000 as integer) - ?1
                     and state = 'done'
                   limit ?2)"#,
        )
        .bind(ttl_ms)
        .bind(limit)
        .execute(&self.writer)
        .await?;
        Ok(deleted.rows_affected())
    }

    async fn start_execution(
        &self,
        new: NewExecution,
        decide: DecideStart<'_>,
    ) -> Result<(), StoreError> {
        let mut tx = self.writer.begin_with("begin immediate").await?;
        let existing = sqlx::query(
            r#"select spektr_id, fields, cast(unixepoch('subsec') * 1000 as integer) as now_ms
               from customers where workspace_id = ?1 and reference = ?2"#,
        )
        .bind(&new.workspace_id)
        .bind(&new.reference)
        .fetch_optional(&mut *tx)
        .await?;
        let (spektr_id, mut fields, now_ms) = match existing {
            Some(row) => (
                uuid_column(&row, "spektr_id")?,
                parse_fields(row.try_get("fields")?)?,
                row.try_get("now_ms")?,
            ),
            None => {
                let spektr_id = Uuid::now_v7();
                let row = sqlx::query(
                    r#"insert into customers (spektr_id, workspace_id, reference)
                       values (?1, ?2, ?3)
                       returning cast(unixepoch('subsec') * 1000 as integer) as now_ms"#,
                )
                .bind(spektr_id.to_string())
                .bind(&new.workspace_id)
                .bind(&new.reference)
                .fetch_one(&mut *tx)
                .await?;
                (spektr_id, Map::new(), row.try_get("now_ms")?)
            }
        };
        fields.extend(new.prefill.clone());
        let context = StartContext {
            customer: Customer {
                spektr_id,
                workspace_id: new.workspace_id.clone(),
                reference: new.reference.clone(),
                fields,
            },
            now_ms,
        };
        let Some(change) = decide(&context) else {
            return Ok(());
        };

        // Only a prefill or a decided change alters the customer; skip the write otherwise.
        match (&change.customer_fields, new.prefill.is_empty()) {
            (Some(fields), _) => update_fields(&mut tx, spektr_id, fields).await?,
            (None, false) => update_fields(&mut tx, spektr_id, &context.customer.fields).await?,
            (None, true) => {}
        }
        sqlx::query(
            r#"insert into executions
               (id, workspace_id, process_id, process_version, spektr_id, token, token_hash,
                status, step_index, deadline_ms, outcome)
               values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"#,
        )
        .bind(new.id.to_string())
        .bind(&new.workspace_id)
        .bind(&new.process_id)
        .bind(new.process_version)
        .bind(spektr_id.to_string())
        .bind(&new.token)
        .bind(&new.token_hash)
        .bind(change.status.as_str())
        .bind(change.step_index)
        .bind(change.deadline_ms)
        .bind(&change.outcome)
        .execute(&mut *tx)
        .await?;
        let queued = insert_events(&mut tx, &new.workspace_id, &change.events).await?;
        if let Some(response) = &change.idempotent_response {
            store_idempotent_response(&mut tx, response).await?;
        }
        tx.commit().await?;
        self.wake_delivery(queued);
        Ok(())
    }

    async fn load_execution(
        &self,
        token_hash: &str,
    ) -> Result<Option<ExecutionSnapshot>, StoreError> {
        let row = sqlx::query(
            r#"select id, workspace_id, process_id, process_version, spektr_id,
                      token, status, step_index, deadline_ms, outcome,
                      cast(unixepoch('subsec') * 1000 as integer) as now_ms
               from executions
               where token_hash = ?1"#,
        )
        .bind(token_hash)
        .fetch_optional(&self.reader)
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
               where workspace_id = ?1 and process_id = ?2 and version = ?3"#,
        )
        .bind(workspace_id)
        .bind(process_id)
        .bind(version)
        .fetch_optional(&self.reader)
        .await?;
        Ok(definition)
    }

    async fn advance_execution(
        &self,
        token_hash: &str,
        decide: Decide<'_>,
    ) -> Result<bool, StoreError> {
        // The single writer connection serialises this transaction against every other write,
        // which is what `for update` achieves on Postgres.
        let mut tx = self.writer.begin_with("begin immediate").await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{LOCKED_SELECT} where e.token_hash = ?1"
        )))
        .bind(token_hash)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let locked = locked_from_row(&row)?;
        let Some(change) = decide(&locked) else {
            return Ok(false);
        };
        let queued = apply_change(&mut tx, &locked, &change).await?;
        tx.commit().await?;
        self.wake_delivery(queued);
        Ok(true)
    }

    async fn time_out_due(&self, limit: i64, decide: Decide<'_>) -> Result<usize, StoreError> {
        let mut tx = self.writer.begin_with("begin immediate").await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{LOCKED_SELECT} where e.status = 'pending' and e.deadline_ms is not null \
             and e.deadline_ms <= cast(unixepoch('subsec') * 1000 as integer) \
             order by e.deadline_ms limit ?1"
        )))
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let mut changed = 0;
        let mut queued = 0;
        for row in &rows {
            // Re-read the customer per row: an earlier row in this batch may have changed it.
            // One unreadable row must not hold back every other due step: it stays waiting,
            // and is reported on each pass, while the rest time out.
            let mut locked = match locked_from_row(row) {
                Ok(locked) => locked,
                Err(error) => {
                    super::skip_unreadable(uuid_column(row, "id").ok(), &error);
                    continue;
                }
            };
            let fields: String = sqlx::query("select fields from customers where spektr_id = ?1")
                .bind(locked.customer.spektr_id.to_string())
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
            locked.customer.fields = match parse_fields(&fields) {
                Ok(fields) => fields,
                Err(error) => {
                    super::skip_unreadable(Some(locked.execution.id), &error);
                    continue;
                }
            };
            if let Some(change) = decide(&locked) {
                queued += apply_change(&mut tx, &locked, &change).await?;
                changed += 1;
            }
        }
        tx.commit().await?;
        self.wake_delivery(queued);
        Ok(changed)
    }

    async fn count_events(&self, kind: &str) -> Result<(i64, i64), StoreError> {
        let row = sqlx::query(
            "select count(*), count(distinct execution_id) from events where type = ?1",
        )
        .bind(kind)
        .fetch_one(&self.reader)
        .await?;
        Ok((row.try_get(0)?, row.try_get(1)?))
    }

    async fn next_deadline_in(&self) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query(
            r#"select min(deadline_ms) - cast(unixepoch('subsec') * 1000 as integer)
               from executions where status = 'pending' and deadline_ms is not null"#,
        )
        .fetch_one(&self.reader)
        .await?;
        Ok(row.try_get(0)?)
    }

    async fn count_waiting(&self) -> Result<i64, StoreError> {
        // Answered from the partial index `executions_waiting` alone.
        let row = sqlx::query("select count(*) from executions where status = 'pending'")
            .fetch_one(&self.reader)
            .await?;
        Ok(row.try_get(0)?)
    }

    fn pool_stats(&self) -> Vec<PoolStats> {
        vec![
            PoolStats::of("writer", &self.writer),
            PoolStats::of("reader", &self.reader),
        ]
    }
}
