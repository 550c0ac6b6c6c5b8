//! Persistence: one `Store` trait, implemented once per backend. Every method is one domain
//! operation that owns its transaction; all SQL lives in `postgres.rs` and `sqlite.rs`.

mod outbox;
mod postgres;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::engine::model::{Customer, Event, Execution, ExecutionStatus};

pub use outbox::{
    AttemptRecord, DeliveryNext, DeliveryRecord, DueDelivery, Endpoint, EndpointPatch,
    ExecutionFilter, ExecutionSummary, FeedCursor, FeedEntry, OutboxStore,
};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    /// Lowercase name for logs and health output.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }
}

/// Failures of the store, with backend error codes already translated.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row the operation needs does not exist.
    #[error("not found")]
    NotFound,
    /// Someone else changed or holds what this operation wanted to change.
    #[error("conflict: {0}")]
    Conflict(&'static str),
    /// The database could not be reached or did not answer in time.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// Anything else the database reported.
    #[error("database error: {0}")]
    Backend(#[source] sqlx::Error),
    /// Stored data that does not parse (a bug or a manual edit).
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_) => StoreError::Unavailable(error),
            sqlx::Error::Database(db) if db.code().is_some_and(|code| is_transient(&code)) => {
                StoreError::Unavailable(error)
            }
            _ => StoreError::Backend(error),
        }
    }
}

/// Database error codes that mean "not now" rather than "wrong": Postgres connection
/// exceptions (08…) and administrator shutdowns (57P…), SQLite busy and locked (5, 6 and
/// their extended codes).
fn is_transient(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("57P")
        || matches!(code, "5" | "6" | "261" | "262" | "517")
}

/// Pool and connection settings.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub max_connections: u32,
    pub acquire_timeout: std::time::Duration,
    /// A deadline stored less than this many milliseconds ahead is announced to the sweepers
    /// of other processes (Postgres `NOTIFY`); later ones are found by their regular pass.
    pub announce_deadlines_within_ms: i64,
}

/// An API key as stored: only its hash.
#[derive(Debug, Clone)]
pub struct ApiKeyRecord {
    pub id: Uuid,
    pub workspace_id: String,
    pub key_hash: String,
}

/// An API key as the admin API lists it (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeySummary {
    pub id: Uuid,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

/// The current version of a process definition.
#[derive(Debug, Clone)]
pub struct ProcessRecord {
    pub version: i32,
    pub definition: String,
}

/// What storing a process definition did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessPut {
    pub created: bool,
    pub version: i32,
}

/// An execution and the database's current time.
#[derive(Debug, Clone)]
pub struct ExecutionSnapshot {
    pub execution: Execution,
    pub now_ms: i64,
}

/// An execution and its customer, locked for the duration of a decision.
#[derive(Debug, Clone)]
pub struct LockedExecution {
    pub execution: Execution,
    pub customer: Customer,
    pub definition: String,
    pub now_ms: i64,
}

/// What a new execution's start needs from its customer.
#[derive(Debug, Clone)]
pub struct StartContext {
    pub customer: Customer,
    pub now_ms: i64,
}

/// A new execution; its state comes from the `Change` the engine decides.
#[derive(Debug, Clone)]
pub struct NewExecution {
    pub id: Uuid,
    pub token: String,
    /// What the execution is found by (see `engine::keys::hash`).
    pub token_hash: String,
    pub workspace_id: String,
    pub process_id: String,
    pub process_version: i32,
    pub reference: String,
    /// Fields merged (top-level) into the customer's fields before deciding.
    pub prefill: Map<String, Value>,
}

/// An event to write in the same transaction as the change that caused it.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: Uuid,
    pub execution_id: Option<Uuid>,
    pub kind: &'static str,
    pub created_at_ms: i64,
    pub body: Value,
}

/// A state change decided by the engine and applied atomically by the store.
#[derive(Debug, Clone)]
pub struct Change {
    pub status: ExecutionStatus,
    pub step_index: i32,
    pub deadline_ms: Option<i64>,
    pub outcome: Option<String>,
    /// The customer's complete new fields, if they change.
    pub customer_fields: Option<Map<String, Value>>,
    pub events: Vec<NewEvent>,
    /// The response to remember under an idempotency key, committed with the change.
    pub idempotent_response: Option<IdempotentResponse>,
}

/// Ownership of an idempotency key while its first request runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyClaim {
    pub workspace_id: String,
    pub key: String,
    pub owner: Uuid,
}

/// What a request finds under its idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyBegin {
    /// The key is new (or expired, or abandoned): this request runs and owns it.
    Claimed(IdempotencyClaim),
    /// The same request already finished: answer with its stored response.
    Replay { status: u16, body: String },
    /// The key was used for a different request.
    Mismatch,
    /// The first request with this key is still running.
    InFlight,
}

/// A finished response stored under a claimed key.
#[derive(Debug, Clone)]
pub struct IdempotentResponse {
    pub claim: IdempotencyClaim,
    pub status: u16,
    pub body: String,
}

/// Idempotency timing.
#[derive(Debug, Clone, Copy)]
pub struct IdempotencyTimes {
    /// How long a finished response is replayed.
    pub ttl_ms: i64,
    /// How long a running request owns its key before another may take it over.
    pub lease_ms: i64,
}

/// Decides a change for a locked execution; `None` leaves it untouched.
pub type Decide<'a> = &'a mut (dyn FnMut(&LockedExecution) -> Option<Change> + Send);

/// Decides the state of a new execution once its customer is known; `None` refuses the start,
/// and the store then rolls back, keeping nothing (not even a new customer).
pub type DecideStart<'a> = &'a mut (dyn FnMut(&StartContext) -> Option<Change> + Send);

/// The storage operations the engine needs.
#[async_trait]
pub trait Store: OutboxStore {
    /// Which database this is.
    fn backend(&self) -> Backend;

    /// Checks that the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// The newest applied migration version.
    async fn schema_version(&self) -> Result<i64, StoreError>;

    /// Creates or renames a workspace; true when it was created.
    async fn put_workspace(&self, id: &str, name: &str) -> Result<bool, StoreError>;

    /// Whether the workspace exists.
    async fn workspace_exists(&self, id: &str) -> Result<bool, StoreError>;

    /// Stores an API key's hash; a hash already stored is left as it is.
    async fn add_api_key(
        &self,
        workspace_id: &str,
        id: Uuid,
        key_hash: &str,
    ) -> Result<(), StoreError>;

    /// Finds an API key that has not been revoked by its hash.
    async fn find_api_key(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>, StoreError>;

    /// A workspace's keys, revoked ones included, oldest first.
    async fn list_api_keys(&self, workspace_id: &str) -> Result<Vec<ApiKeySummary>, StoreError>;

    /// Revokes a key (revoking it again keeps the first time); `None` for an unknown key,
    /// else its hash.
    async fn revoke_api_key(
        &self,
        workspace_id: &str,
        id: Uuid,
    ) -> Result<Option<String>, StoreError>;

    /// Stores a definition as the process's new current version, unless it equals the
    /// current one.
    async fn put_process(
        &self,
        workspace_id: &str,
        id: &str,
        definition: &str,
    ) -> Result<ProcessPut, StoreError>;

    /// The current version of a process.
    async fn get_process(
        &self,
        workspace_id: &str,
        id: &str,
    ) -> Result<Option<ProcessRecord>, StoreError>;

    /// A customer of a workspace.
    async fn get_customer(
        &self,
        workspace_id: &str,
        spektr_id: Uuid,
    ) -> Result<Option<Customer>, StoreError>;

    /// An execution's events, oldest first; `None` when the workspace has no such execution.
    async fn list_execution_events(
        &self,
        workspace_id: &str,
        execution_id: Uuid,
    ) -> Result<Option<Vec<Event>>, StoreError>;

    /// Claims an idempotency key, or says why the request may not run.
    async fn begin_idempotent(
        &self,
        workspace_id: &str,
        key: &str,
        fingerprint: &str,
        times: IdempotencyTimes,
    ) -> Result<IdempotencyBegin, StoreError>;

    /// Gives a claimed key up, so that a retry runs afresh.
    async fn release_idempotent(&self, claim: &IdempotencyClaim) -> Result<(), StoreError>;

    /// Deletes up to `limit` idempotency records older than `ttl_ms`; returns how many.
    async fn purge_idempotency(&self, ttl_ms: i64, limit: i64) -> Result<u64, StoreError>;

    /// Creates the customer if needed, merges `prefill` into its fields, and inserts the
    /// execution in the state `decide` returns, with its events, in one transaction.
    async fn start_execution(
        &self,
        new: NewExecution,
        decide: DecideStart<'_>,
    ) -> Result<(), StoreError>;

    /// An execution by its token's hash, unlocked, for reading. Its definition is not read: versions
    /// never change, so the engine keeps them and asks `process_version` only once.
    async fn load_execution(
        &self,
        token_hash: &str,
    ) -> Result<Option<ExecutionSnapshot>, StoreError>;

    /// One stored version of a process definition.
    async fn process_version(
        &self,
        workspace_id: &str,
        process_id: &str,
        version: i32,
    ) -> Result<Option<String>, StoreError>;

    /// Locks the execution whose token has this hash and its customer, and applies what
    /// `decide` returns. Returns whether a change was committed; `NotFound` for an unknown
    /// token.
    async fn advance_execution(
        &self,
        token_hash: &str,
        decide: Decide<'_>,
    ) -> Result<bool, StoreError>;

    /// Locks up to `limit` pending executions whose deadline has passed (skipping any that
    /// another transaction holds) and applies what `decide` returns for each, in one
    /// transaction. Returns how many changed.
    async fn time_out_due(&self, limit: i64, decide: Decide<'_>) -> Result<usize, StoreError>;

    /// Calls `wake.notify_one()` whenever another process announces a deadline that is due
    /// soon, until `shutdown`. Only Postgres has several processes; SQLite ignores this.
    fn listen_for_deadlines(&self, _wake: Arc<Notify>, _shutdown: CancellationToken) {}

    /// How many events of one type exist, and for how many distinct executions.
    async fn count_events(&self, kind: &str) -> Result<(i64, i64), StoreError>;

    /// Milliseconds from the database's now until the earliest pending deadline (negative
    /// when it has passed), or `None` when nothing waits with a deadline.
    async fn next_deadline_in(&self) -> Result<Option<i64>, StoreError>;

    /// How many executions wait on an External Step (all workspaces).
    async fn count_waiting(&self) -> Result<i64, StoreError>;

    /// The connection pools' figures, without touching the database.
    fn pool_stats(&self) -> Vec<PoolStats>;
}

/// A connection pool's figures at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Which pool: `main` on Postgres; `writer` and `reader` on SQLite.
    pub pool: &'static str,
    /// Connections open, busy or idle.
    pub size: u32,
    /// Open connections not in use.
    pub idle: u32,
    /// The most connections the pool opens.
    pub max: u32,
}

impl PoolStats {
    fn of<DB: sqlx::Database>(pool: &'static str, of: &sqlx::Pool<DB>) -> Self {
        PoolStats {
            pool,
            size: of.size(),
            idle: u32::try_from(of.num_idle()).unwrap_or(u32::MAX),
            max: of.options().get_max_connections(),
        }
    }
}

/// Connects to the database named by `url` (`postgres://…` or `sqlite://…`) and migrates it.
pub async fn connect(url: &str, options: &StoreOptions) -> anyhow::Result<Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::connect(url, options).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url, options).await?))
    } else {
        anyhow::bail!("unsupported DATABASE_URL scheme: expected postgres:// or sqlite://")
    }
}

/// Parses JSON the store wrote itself. Request bodies are bounded in depth (see
/// `api::extract::MAX_JSON_DEPTH`), but rows written by earlier versions, which accepted
/// payloads nested up to serde_json's default limit of 128, sit a few levels deeper inside
/// their events; those must stay readable, so stored text is read without that limit.
fn parse_stored<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    deserializer.disable_recursion_limit();
    let value = T::deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

/// Reports a due step the sweeper cannot read and therefore leaves waiting.
fn skip_unreadable(execution_id: Option<Uuid>, error: &StoreError) {
    tracing::error!(
        execution_id = ?execution_id,
        %error,
        "sweeper skipped a due step whose stored data it cannot read"
    );
}

/// Parses a stored JSON object.
fn parse_fields(text: &str) -> Result<Map<String, Value>, StoreError> {
    parse_stored(text).map_err(|error| StoreError::Corrupt(format!("fields: {error}")))
}

/// Parses a stored JSON list of attempts.
fn parse_attempts(text: &str) -> Result<Vec<AttemptRecord>, StoreError> {
    let items: Vec<Value> = serde_json::from_str(text)
        .map_err(|error| StoreError::Corrupt(format!("attempts: {error}")))?;
    Ok(items
        .iter()
        .map(|item| AttemptRecord {
            attempt: item["attempt"].as_i64().unwrap_or_default() as i32,
            started_at_ms: item["startedAt"].as_i64().unwrap_or_default(),
            duration_ms: item["durationMs"].as_i64().unwrap_or_default(),
            response_status: item["status"].as_u64().and_then(|s| u16::try_from(s).ok()),
            error: item["error"].as_str().map(str::to_owned),
        })
        .collect())
}

/// Parses a stored status.
fn parse_status(text: &str) -> Result<ExecutionStatus, StoreError> {
    text.parse().map_err(StoreError::Corrupt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_json_deeper_than_the_default_reader_limit_is_read_back() {
        let depth = 200;
        let text = format!(r#"{{"f":{}1{}}}"#, "[".repeat(depth), "]".repeat(depth));
        assert!(
            serde_json::from_str::<Value>(&text).is_err(),
            "default limit"
        );

        let fields = parse_fields(&text).expect("read without the limit");
        assert_eq!(fields["f"].to_string(), text[5..text.len() - 1]);
        assert!(parse_fields(&format!("{text} trailing")).is_err());
    }
}
