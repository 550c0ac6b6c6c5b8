//! The storage side of event delivery: webhook endpoints, the delivery outbox with its
//! attempts, the public event feed and execution look-ups.

use async_trait::async_trait;
use uuid::Uuid;

use super::StoreError;
use crate::engine::model::{Event, ExecutionStatus};

/// A position in a workspace's event feed: the writing transaction's id (0 on SQLite, whose
/// writers take turns, and for Postgres events written before transaction ids were kept) and
/// the event's `seq`. Events are listed in this order.
///
/// Written as `"{txid}-{seq}"`, or as plain `"{seq}"` when `txid` is 0, which keeps the
/// numeric cursors of earlier versions valid.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct FeedCursor {
    pub txid: i64,
    pub seq: i64,
}

impl std::fmt::Display for FeedCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.txid == 0 {
            write!(f, "{}", self.seq)
        } else {
            write!(f, "{}-{}", self.txid, self.seq)
        }
    }
}

impl std::str::FromStr for FeedCursor {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        // Digits only: no sign, no spaces, nothing `i64::from_str` would also take.
        let number = |part: &str| {
            (!part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit()))
                .then(|| part.parse::<i64>().ok())
                .flatten()
                .ok_or(())
        };
        match text.split_once('-') {
            None => Ok(FeedCursor {
                txid: 0,
                seq: number(text)?,
            }),
            Some((txid, seq)) => Ok(FeedCursor {
                txid: number(txid)?,
                seq: number(seq)?,
            }),
        }
    }
}

/// One event of the feed with its position.
#[derive(Debug, Clone)]
pub struct FeedEntry {
    pub cursor: FeedCursor,
    pub event: Event,
}

/// A registered webhook endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub id: Uuid,
    pub workspace_id: String,
    pub url: String,
    pub description: Option<String>,
    /// Event types to deliver; `None` delivers every type.
    pub event_types: Option<Vec<String>>,
    pub secret: String,
    pub enabled: bool,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// Changes to an endpoint; `None` leaves a value as it is.
#[derive(Debug, Clone, Default)]
pub struct EndpointPatch {
    pub url: Option<String>,
    pub description: Option<Option<String>>,
    pub event_types: Option<Option<Vec<String>>>,
    pub enabled: Option<bool>,
}

/// A delivery claimed for sending, with everything the request needs.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub id: Uuid,
    pub event_id: Uuid,
    pub endpoint_id: Uuid,
    pub url: String,
    pub secret: String,
    pub body: String,
    /// This attempt's number, from 1.
    pub attempt: i32,
}

/// What one attempt did.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    pub attempt: i32,
    pub started_at_ms: i64,
    pub duration_ms: i64,
    pub response_status: Option<u16>,
    pub error: Option<String>,
}

/// What happens to a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryNext {
    /// Delivered; done.
    Succeeded,
    /// Try again this many milliseconds from now.
    RetryIn(i64),
    /// The retry schedule is used up.
    Failed,
}

/// A delivery with its attempts, for the admin API.
#[derive(Debug, Clone)]
pub struct DeliveryRecord {
    pub id: Uuid,
    pub event_id: Uuid,
    pub event_type: String,
    pub status: String,
    pub next_attempt_at_ms: Option<i64>,
    pub last_error: Option<String>,
    pub created_at_ms: i64,
    pub attempts: Vec<AttemptRecord>,
}

/// How to find executions.
#[derive(Debug, Clone)]
pub enum ExecutionFilter {
    Reference(String),
    SpektrId(Uuid),
    ExecutionId(Uuid),
}

/// An execution as a look-up lists it.
#[derive(Debug, Clone)]
pub struct ExecutionSummary {
    pub id: Uuid,
    pub token: String,
    pub status: ExecutionStatus,
    pub process_id: String,
    pub spektr_id: Uuid,
    pub reference: String,
    pub step_index: i32,
    pub deadline_ms: Option<i64>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// Storage operations of event delivery.
#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// Woken after every commit that queued deliveries, so the delivery worker only looks at
    /// the outbox when there is something new in it.
    fn deliveries_queued(&self) -> std::sync::Arc<tokio::sync::Notify>;

    /// Stores a new endpoint.
    async fn create_endpoint(&self, endpoint: &Endpoint) -> Result<(), StoreError>;

    /// A workspace's endpoints, oldest first.
    async fn list_endpoints(&self, workspace_id: &str) -> Result<Vec<Endpoint>, StoreError>;

    /// One endpoint of a workspace.
    async fn get_endpoint(
        &self,
        workspace_id: &str,
        id: Uuid,
    ) -> Result<Option<Endpoint>, StoreError>;

    /// Applies `patch`; `None` when the workspace has no such endpoint.
    async fn update_endpoint(
        &self,
        workspace_id: &str,
        id: Uuid,
        patch: &EndpointPatch,
        secret: Option<&str>,
    ) -> Result<Option<Endpoint>, StoreError>;

    /// Deletes an endpoint with its deliveries; false when there was none.
    async fn delete_endpoint(&self, workspace_id: &str, id: Uuid) -> Result<bool, StoreError>;

    /// Claims up to `limit` due deliveries for `lease_ms`, skipping deliveries that another
    /// process holds and endpoints in `busy`. Each claim counts as an attempt.
    async fn claim_deliveries(
        &self,
        limit: i64,
        lease_ms: i64,
        busy: &[Uuid],
    ) -> Result<Vec<DueDelivery>, StoreError>;

    /// Records an attempt and schedules what comes next, unless the claim was lost meanwhile.
    async fn finish_attempt(
        &self,
        delivery: &DueDelivery,
        record: &AttemptRecord,
        next: DeliveryNext,
    ) -> Result<(), StoreError>;

    /// Hands a claimed delivery back untried.
    async fn release_delivery(&self, delivery: &DueDelivery) -> Result<(), StoreError>;

    /// An endpoint's newest deliveries with their attempts; `None` for an unknown endpoint.
    async fn list_deliveries(
        &self,
        workspace_id: &str,
        endpoint_id: Uuid,
        limit: i64,
    ) -> Result<Option<Vec<DeliveryRecord>>, StoreError>;

    /// Queues an event again for every enabled endpoint that wants it; `None` for an unknown
    /// event, else how many deliveries were queued (which wakes `deliveries_queued`).
    async fn redeliver_event(
        &self,
        workspace_id: &str,
        event_id: Uuid,
    ) -> Result<Option<u64>, StoreError>;

    /// A workspace's events after `after`, in feed order. Only events whose transaction has
    /// ended and that no transaction still running can precede are listed, so a later read
    /// from the last cursor misses nothing.
    async fn list_events(
        &self,
        workspace_id: &str,
        after: FeedCursor,
        limit: i64,
    ) -> Result<Vec<FeedEntry>, StoreError>;

    /// A workspace's executions matching `filter`, newest first.
    async fn find_executions(
        &self,
        workspace_id: &str,
        filter: &ExecutionFilter,
        limit: i64,
    ) -> Result<Vec<ExecutionSummary>, StoreError>;

    /// Milliseconds until the next delivery is due (negative when overdue), if any is pending.
    async fn next_delivery_in(&self) -> Result<Option<i64>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::FeedCursor;

    #[test]
    fn a_cursor_reads_back_what_it_writes_and_refuses_anything_else() {
        for cursor in [
            FeedCursor { txid: 0, seq: 0 },
            FeedCursor { txid: 0, seq: 17 },
            FeedCursor { txid: 734, seq: 9 },
        ] {
            assert_eq!(cursor.to_string().parse::<FeedCursor>(), Ok(cursor));
        }
        assert_eq!("16".parse(), Ok(FeedCursor { txid: 0, seq: 16 }));
        assert_eq!("0".parse(), Ok(FeedCursor::default()));
        for bad in [
            "",
            "-",
            "-1",
            "1-",
            "+1",
            " 1",
            "1.5",
            "1-2-3",
            "a-1",
            "99999999999999999999",
        ] {
            assert_eq!(bad.parse::<FeedCursor>(), Err(()), "{bad}");
        }
    }
}
