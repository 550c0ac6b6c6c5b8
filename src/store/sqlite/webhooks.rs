//! SQLite SQL of event delivery: endpoints, the delivery outbox, the feed and look-ups.

use async_trait::async_trait;
use serde_json::Value;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use uuid::Uuid;

use super::{SqliteStore, uuid_column};
use crate::engine::model::Event;
use crate::store::outbox::{
    AttemptRecord, DeliveryNext, DeliveryRecord, DueDelivery, Endpoint, EndpointPatch,
    ExecutionFilter, ExecutionSummary, FeedCursor, FeedEntry, OutboxStore,
};
use crate::store::{StoreError, parse_attempts, parse_status};

fn endpoint_from_row(row: &SqliteRow) -> Result<Endpoint, StoreError> {
    let event_types: Option<String> = row.try_get("event_types")?;
    Ok(Endpoint {
        id: uuid_column(row, "id")?,
        workspace_id: row.try_get("workspace_id")?,
        url: row.try_get("url")?,
        description: row.try_get("description")?,
        event_types: event_types
            .map(|text| serde_json::from_str(&text))
            .transpose()
            .map_err(|error| StoreError::Corrupt(format!("event_types: {error}")))?,
        secret: row.try_get("secret")?,
        enabled: row.try_get("enabled")?,
        created_at_ms: row.try_get("created_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
    })
}

pub(super) fn event_from_row(row: &SqliteRow) -> Result<Event, StoreError> {
    let body: String = row.try_get("body")?;
    let execution_id: Option<String> = row.try_get("execution_id")?;
    Ok(Event {
        id: uuid_column(row, "id")?,
        seq: row.try_get("seq")?,
        execution_id: execution_id
            .map(|id| Uuid::parse_str(&id))
            .transpose()
            .map_err(|error| StoreError::Corrupt(error.to_string()))?,
        kind: row.try_get("type")?,
        created_at_ms: row.try_get("created_at_ms")?,
        body: super::super::parse_stored(&body)
            .map_err(|error| StoreError::Corrupt(error.to_string()))?,
    })
}

fn event_types_json(types: &Option<Vec<String>>) -> Option<String> {
    types
        .as_ref()
        .map(|types| Value::from(types.clone()).to_string())
}

const ENDPOINT_COLUMNS: &str = "id, workspace_id, url, description, event_types, secret, enabled, created_at_ms, updated_at_ms";

#[async_trait]
impl OutboxStore for SqliteStore {
    fn deliveries_queued(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.deliveries_queued.clone()
    }

    async fn create_endpoint(&self, endpoint: &Endpoint) -> Result<(), StoreError> {
        sqlx::query(
            r#"insert into webhook_endpoints
               (id, workspace_id, url, description, event_types, secret, enabled)
               values (?1, ?2, ?3, ?4, ?5, ?6, ?7)"#,
        )
        .bind(endpoint.id.to_string())
        .bind(&endpoint.workspace_id)
        .bind(&endpoint.url)
        .bind(&endpoint.description)
        .bind(event_types_json(&endpoint.event_types))
        .bind(&endpoint.secret)
        .bind(endpoint.enabled)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn list_endpoints(&self, workspace_id: &str) -> Result<Vec<Endpoint>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "select {ENDPOINT_COLUMNS} from webhook_endpoints where workspace_id = ?1 \
             order by created_at_ms, id"
        )))
        .bind(workspace_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(endpoint_from_row).collect()
    }

    async fn get_endpoint(
        &self,
        workspace_id: &str,
        id: Uuid,
    ) -> Result<Option<Endpoint>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "select {ENDPOINT_COLUMNS} from webhook_endpoints where workspace_id = ?1 and id = ?2"
        )))
        .bind(workspace_id)
        .bind(id.to_string())
        .fetch_optional(&self.reader)
        .await?;
        row.as_ref().map(endpoint_from_row).transpose()
    }

    async fn update_endpoint(
        &self,
        workspace_id: &str,
        id: Uuid,
        patch: &EndpointPatch,
        secret: Option<&str>,
    ) -> Result<Option<Endpoint>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "update webhook_endpoints set \
                 url = coalesce(?3, url), \
                 description = case when ?4 then ?5 else description end, \
                 event_types = case when ?6 then ?7 else event_types end, \
                 enabled = coalesce(?8, enabled), \
                 secret = coalesce(?9, secret), \
                 updated_at_ms = cast(unixepoch('subsec') * 1000 as integer) \
             where workspace_id = ?1 and id = ?2 \
             returning {ENDPOINT_COLUMNS}"
        )))
        .bind(workspace_id)
        .bind(id.to_string())
        .bind(&patch.url)
        .bind(patch.description.is_some())
        .bind(patch.description.clone().flatten())
        .bind(patch.event_types.is_some())
        .bind(patch.event_types.as_ref().and_then(event_types_json))
        .bind(patch.enabled)
        .bind(secret)
        .fetch_optional(&self.writer)
        .await?;
        row.as_ref().map(endpoint_from_row).transpose()
    }

    async fn delete_endpoint(&self, workspace_id: &str, id: Uuid) -> Result<bool, StoreError> {
        let deleted =
            sqlx::query("delete from webhook_endpoints where workspace_id = ?1 and id = ?2")
                .bind(workspace_id)
                .bind(id.to_string())
                .execute(&self.writer)
                .await?;
        Ok(deleted.rows_affected() > 0)
    }

    async fn claim_deliveries(
        &self,
        limit: i64,
        lease_ms: i64,
        busy: &[Uuid],
    ) -> Result<Vec<DueDelivery>, StoreError> {
        let busy = Value::from(busy.iter().map(Uuid::to_string).collect::<Vec<_>>()).to_string();
        let mut tx = self.writer.begin_with("begin immediate").await?;
        let candidates = sqlx::query(
            r#"select d.id, d.event_id, d.endpoint_id, d.attempts, d.locked_until_ms,
                      w.url, w.secret, e.body
               from deliveries d
               join webhook_endpoints w on w.id = d.endpoint_id
               join events e on e.id = d.event_id
               where d.status = 'pending'
                 and d.next_attempt_at_ms <= cast(unixepoch('subsec') * 1000 as integer)
                 and (d.locked_until_ms is null
                      or d.locked_until_ms < cast(unixepoch('subsec') * 1000 as integer))
                 and w.enabled and d.endpoint_id not in (select value from json_each(?2))
               order by d.next_attempt_at_ms
               limit ?1"#,
        )
        .bind(limit)
        .bind(busy)
        .fetch_all(&mut *tx)
        .await?;
        let mut due = Vec::with_capacity(candidates.len());
        for row in &candidates {
            let id = uuid_column(row, "id")?;
            let attempts: i32 = row.try_get("attempts")?;
            let stale: Option<i64> = row.try_get("locked_until_ms")?;
            if let Some(stale) = stale {
                // The lease ran out: the process that claimed it stopped mid-attempt.
                sqlx::query(
                    r#"insert into delivery_attempts
                       (id, delivery_id, attempt, started_at_ms, duration_ms, error)
                       values (?1, ?2, ?3, ?4, 0,
                               'abandoned: the sending process stopped before recording a result')"#,
                )
                .bind(Uuid::now_v7().to_string())
                .bind(id.to_string())
                .bind(attempts)
                .bind(stale - lease_ms)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query(
                r#"update deliveries
                   set locked_until_ms = cast(unixepoch('subsec') * 1000 as integer) + ?2,
                       attempts = attempts + 1,
                       updated_at_ms = cast(unixepoch('subsec') * 1000 as integer)
                   where id = ?1"#,
            )
            .bind(id.to_string())
            .bind(lease_ms)
            .execute(&mut *tx)
            .await?;
            due.push(DueDelivery {
                id,
                event_id: uuid_column(row, "event_id")?,
                endpoint_id: uuid_column(row, "endpoint_id")?,
                url: row.try_get("url")?,
                secret: row.try_get("secret")?,
                body: row.try_get("body")?,
                attempt: attempts + 1,
            });
        }
        tx.commit().await?;
        Ok(due)
    }

    async fn finish_attempt(
        &self,
        delivery: &DueDelivery,
        record: &AttemptRecord,
        next: DeliveryNext,
    ) -> Result<(), StoreError> {
        let (status, retry_in) = match next {
            DeliveryNext::Succeeded => ("succeeded", None),
            DeliveryNext::RetryIn(ms) => ("pending", Some(ms)),
            DeliveryNext::Failed => ("failed", None),
        };
        let mut tx = self.writer.begin_with("begin immediate").await?;
        let current = sqlx::query(
            r#"update deliveries
               set status = ?3,
                   next_attempt_at_ms = coalesce(
                       cast(unixepoch('subsec') * 1000 as integer) + ?4, next_attempt_at_ms),
                   locked_until_ms = null, last_error = ?5,
                   updated_at_ms = cast(unixepoch('subsec') * 1000 as integer)
               where id = ?1 and attempts = ?2"#,
        )
        .bind(delivery.id.to_string())
        .bind(delivery.attempt)
        .bind(status)
        .bind(retry_in)
        .bind(&record.error)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if current == 0 {
            return Ok(());
        }
        sqlx::query(
            r#"insert into delivery_attempts
               (id, delivery_id, attempt, started_at_ms, duration_ms, response_status, error)
               values (?1, ?2, ?3, ?4, ?5, ?6, ?7)"#,
        )
        .bind(Uuid::now_v7().to_string())
        .bind(delivery.id.to_string())
        .bind(record.attempt)
        .bind(record.started_at_ms)
        .bind(record.duration_ms)
        .bind(record.response_status.map(i64::from))
        .bind(&record.error)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn release_delivery(&self, delivery: &DueDelivery) -> Result<(), StoreError> {
        sqlx::query(
            r#"update deliveries set locked_until_ms = null, attempts = attempts - 1
               where id = ?1 and attempts = ?2"#,
        )
        .bind(delivery.id.to_string())
        .bind(delivery.attempt)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn list_deliveries(
        &self,
        workspace_id: &str,
        endpoint_id: Uuid,
        limit: i64,
    ) -> Result<Option<Vec<DeliveryRecord>>, StoreError> {
        if self
            .get_endpoint(workspace_id, endpoint_id)
            .await?
            .is_none()
        {
            return Ok(None);
        }
        let rows = sqlx::query(
            r#"select d.id, d.event_id, e.type, d.status, d.next_attempt_at_ms, d.last_error,
                      d.created_at_ms,
                      coalesce((select json_group_array(json_object(
                                    'attempt', a.attempt, 'startedAt', a.started_at_ms,
                                    'durationMs', a.duration_ms, 'status', a.response_status,
                                    'error', a.error))
                                from (select * from delivery_attempts
                                      where delivery_id = d.id order by attempt) a),
                               '[]') as attempts
               from deliveries d join events e on e.id = d.event_id
               where d.endpoint_id = ?1
               order by d.created_at_ms desc, d.id desc
               limit ?2"#,
        )
        .bind(endpoint_id.to_string())
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|row| {
                let status: String = row.try_get("status")?;
                Ok(DeliveryRecord {
                    id: uuid_column(row, "id")?,
                    event_id: uuid_column(row, "event_id")?,
                    event_type: row.try_get("type")?,
                    next_attempt_at_ms: (status == "pending")
                        .then(|| row.try_get("next_attempt_at_ms"))
                        .transpose()?,
                    status,
                    last_error: row.try_get("last_error")?,
                    created_at_ms: row.try_get("created_at_ms")?,
                    attempts: parse_attempts(row.try_get("attempts")?)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()
            .map(Some)
    }

    async fn redeliver_event(
        &self,
        workspace_id: &str,
        event_id: Uuid,
    ) -> Result<Option<u64>, StoreError> {
        let mut tx = self.writer.begin_with("begin immediate").await?;
        let event = sqlx::query("select type from events where workspace_id = ?1 and id = ?2")
            .bind(workspace_id)
            .bind(event_id.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        if event.is_none() {
            return Ok(None);
        }
        let queued = super::queue_deliveries(&mut tx, workspace_id, &[event_id]).await?;
        tx.commit().await?;
        self.wake_delivery(queued);
        Ok(Some(queued))
    }

    async fn list_events(
        &self,
        workspace_id: &str,
        after: FeedCursor,
        limit: i64,
    ) -> Result<Vec<FeedEntry>, StoreError> {
        // Writers take turns and number events as they commit, so `seq` alone is the order.
        if after.txid != 0 {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            r#"select id, seq, execution_id, type, created_at_ms, body
               from events where workspace_id = ?1 and seq > ?2
               order by seq limit ?3"#,
        )
        .bind(workspace_id)
        .bind(after.seq)
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|row| {
                let event = event_from_row(row)?;
                Ok(FeedEntry {
                    cursor: FeedCursor {
                        txid: 0,
                        seq: event.seq,
                    },
                    event,
                })
            })
            .collect()
    }

    async fn find_executions(
        &self,
        workspace_id: &str,
        filter: &ExecutionFilter,
        limit: i64,
    ) -> Result<Vec<ExecutionSummary>, StoreError> {
        let (reference, spektr_id, execution_id) = match filter {
            ExecutionFilter::Reference(reference) => (Some(reference.clone()), None, None),
            ExecutionFilter::SpektrId(id) => (None, Some(id.to_string()), None),
            ExecutionFilter::ExecutionId(id) => (None, None, Some(id.to_string())),
        };
        let rows = sqlx::query(
            r#"select e.id, e.token, e.status, e.process_id, e.spektr_id, c.reference,
                      e.step_index, e.deadline_ms, e.created_at_ms, e.updated_at_ms
               from executions e join customers c on c.spektr_id = e.spektr_id
               where e.workspace_id = ?1
                 and (?2 is null or c.reference = ?2)
                 and (?3 is null or e.spektr_id = ?3)
                 and (?4 is null or e.id = ?4)
               order by e.created_at_ms desc, e.id desc
               limit ?5"#,
        )
        .bind(workspace_id)
        .bind(reference)
        .bind(spektr_id)
        .bind(execution_id)
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ExecutionSummary {
                    id: uuid_column(row, "id")?,
                    token: row.try_get("token")?,
                    status: parse_status(row.try_get("status")?)?,
                    process_id: row.try_get("process_id")?,
                    spektr_id: uuid_column(row, "spektr_id")?,
                    reference: row.try_get("reference")?,
                    step_index: row.try_get("step_index")?,
                    deadline_ms: row.try_get("deadline_ms")?,
                    created_at_ms: row.try_get("created_at_ms")?,
                    updated_at_ms: row.try_get("updated_at_ms")?,
                })
            })
            .collect()
    }

    async fn next_delivery_in(&self) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query(
            r#"select min(max(d.next_attempt_at_ms, coalesce(d.locked_until_ms, 0)))
                      - cast(unixepoch('subsec') * 1000 as integer)
               from deliveries d join webhook_endpoints w on w.id = d.endpoint_id
               where d.status = 'pending' and w.enabled"#,
        )
        .fetch_one(&self.reader)
        .await?;
        Ok(row.try_get(0)?)
    }
}
