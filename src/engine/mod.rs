//! The process engine: every operation the API and the sweeper perform. It validates input,
//! decides state changes with the pure `transition` module, and has the store apply each
//! change with its events in one transaction. It never sees HTTP types.

pub mod definition;
pub mod error;
pub mod executions;
pub mod model;
pub mod sweeper;
pub mod transition;
pub mod webhooks;

pub(crate) mod keys;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Notify;
use tracing::instrument;
use uuid::Uuid;

use crate::store::{
    ApiKeySummary, IdempotencyBegin, IdempotencyClaim, IdempotencyTimes, ProcessPut, Store,
    StoreError,
};

pub use definition::{EXTERNAL_DATA_FAILURE, ProcessDefinition, Step};
pub use error::EngineError;
pub use executions::{ExecutionView, SUBMIT_RESPONSE, StartCommand, Started, SubmitCommand};
pub use keys::NewApiKey;
use model::{Customer, Event};

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub idempotency: IdempotencyTimes,
    /// Which hosts webhook endpoints may point at.
    pub hosts: crate::events::client::HostPolicy,
    /// How long an authenticated API key is trusted without asking the store again: the
    /// longest a key revoked through another server process still works here.
    pub api_key_cache_ttl: Duration,
}

/// API keys confirmed by the store: by hash, the workspace and when it was confirmed.
#[derive(Default)]
struct KeyCache {
    entries: HashMap<String, (String, Instant)>,
    /// Revocations made through this process so far; a lookup that overlapped one does not
    /// cache its answer.
    revocations: u64,
}

/// The process engine; cheap to share behind an `Arc`.
pub struct Engine {
    store: Arc<dyn Store>,
    options: EngineOptions,
    /// Parsed definitions by (workspace, process, version); versions never change once stored.
    definitions: RwLock<HashMap<(String, String, i32), Arc<ProcessDefinition>>>,
    /// API keys this process has confirmed recently.
    api_keys: RwLock<KeyCache>,
    /// Rung when a new deadline is stored, so the sweeper can sleep until the earliest.
    alarm: Arc<sweeper::Alarm>,
}

impl Engine {
    /// An engine over `store`.
    pub fn new(store: Arc<dyn Store>, options: EngineOptions) -> Self {
        Engine {
            store,
            options,
            definitions: RwLock::new(HashMap::new()),
            api_keys: RwLock::new(KeyCache::default()),
            alarm: Arc::new(sweeper::Alarm::new()),
        }
    }

    /// The signal the delivery worker waits on.
    pub fn events_written(&self) -> Arc<Notify> {
        self.store.deliveries_queued()
    }

    /// The store underneath, for health checks and start-up logs.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Creates or renames a workspace; true when created.
    #[instrument(skip_all, fields(workspace_id = %id))]
    pub async fn put_workspace(&self, id: &str, name: &str) -> Result<bool, EngineError> {
        check_id("workspaceId", id)?;
        let name = name.trim();
        if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
            return Err(EngineError::InvalidInput(
                "'name' must be a non-empty string of at most 255 bytes without control \
                 characters"
                    .to_owned(),
            ));
        }
        Ok(self.store.put_workspace(id, name).await?)
    }

    /// Creates an API key for a workspace; the full key is returned only here.
    #[instrument(skip_all, fields(workspace_id = %workspace_id))]
    pub async fn create_api_key(&self, workspace_id: &str) -> Result<NewApiKey, EngineError> {
        let key = NewApiKey::generate();
        self.add_api_key(workspace_id, key.id, &key.key).await?;
        Ok(key)
    }

    /// Stores a given API key (from the bootstrap file) for a workspace.
    pub async fn add_api_key(
        &self,
        workspace_id: &str,
        id: Uuid,
        key: &str,
    ) -> Result<(), EngineError> {
        if !self.store.workspace_exists(workspace_id).await? {
            return Err(EngineError::NotFound("workspace"));
        }
        Ok(self
            .store
            .add_api_key(workspace_id, id, &keys::hash(key))
            .await?)
    }

    /// The workspace an API key belongs to, if the key is valid.
    pub async fn authenticate(&self, key: &str) -> Result<Option<String>, EngineError> {
        let hash = keys::hash(key);
        let revocations = {
            let cache = read(&self.api_keys);
            if let Some((workspace, confirmed)) = cache.entries.get(&hash)
                && confirmed.elapsed() < self.options.api_key_cache_ttl
            {
                return Ok(Some(workspace.clone()));
            }
            cache.revocations
        };
        let Some(record) = self.store.find_api_key(&hash).await? else {
            write(&self.api_keys).entries.remove(&hash);
            return Ok(None);
        };
        if !keys::hashes_match(&record.key_hash, &hash) {
            return Ok(None);
        }
        let mut cache = write(&self.api_keys);
        // A revocation that committed while this lookup ran may have read the key as valid
        // before it; caching that answer would outlive the revocation.
        if cache.revocations == revocations {
            if cache.entries.len() >= 10_000 {
                cache.entries.clear();
            }
            cache
                .entries
                .insert(hash, (record.workspace_id.clone(), Instant::now()));
        }
        Ok(Some(record.workspace_id))
    }

    /// A workspace's API keys, revoked ones included.
    pub async fn api_keys(&self, workspace_id: &str) -> Result<Vec<ApiKeySummary>, EngineError> {
        if !self.store.workspace_exists(workspace_id).await? {
            return Err(EngineError::NotFound("workspace"));
        }
        Ok(self.store.list_api_keys(workspace_id).await?)
    }

    /// Revokes an API key: at once in this process, and in others once their cached
    /// confirmation of it is older than `api_key_cache_ttl`.
    pub async fn revoke_api_key(&self, workspace_id: &str, id: &str) -> Result<(), EngineError> {
        let id = Uuid::parse_str(id).map_err(|_| EngineError::NotFound("API key"))?;
        let hash = self
            .store
            .revoke_api_key(workspace_id, id)
            .await?
            .ok_or(EngineError::NotFound("API key"))?;
        let mut cache = write(&self.api_keys);
        cache.revocations += 1;
        cache.entries.remove(&hash);
        Ok(())
    }

    /// Checks and stores a process definition as the process's current version.
    #[instrument(skip_all, fields(workspace_id = %workspace_id, process_id = %id))]
    pub async fn put_process(
        &self,
        workspace_id: &str,
        id: &str,
        definition: &Value,
    ) -> Result<ProcessPut, EngineError> {
        check_id("processId", id)?;
        let parsed =
            ProcessDefinition::parse(definition).map_err(EngineError::InvalidDefinition)?;
        if !self.store.workspace_exists(workspace_id).await? {
            return Err(EngineError::NotFound("workspace"));
        }
        let canonical = serde_json::to_string(&parsed)
            .map_err(|error| EngineError::InvalidInput(error.to_string()))?;
        Ok(self.store.put_process(workspace_id, id, &canonical).await?)
    }

    /// A customer with its stored fields.
    pub async fn customer(
        &self,
        workspace_id: &str,
        spektr_id: &str,
    ) -> Result<Customer, EngineError> {
        let spektr_id =
            Uuid::parse_str(spektr_id).map_err(|_| EngineError::NotFound("customer"))?;
        self.store
            .get_customer(workspace_id, spektr_id)
            .await?
            .ok_or(EngineError::NotFound("customer"))
    }

    /// An execution's activity history, oldest first.
    pub async fn activity(
        &self,
        workspace_id: &str,
        execution_id: &str,
    ) -> Result<Vec<Event>, EngineError> {
        let id =
            Uuid::parse_str(execution_id).map_err(|_| EngineError::NotFound("execution id"))?;
        self.store
            .list_execution_events(workspace_id, id)
            .await?
            .ok_or(EngineError::NotFound("execution id"))
    }

    /// Claims an idempotency key for a request with this fingerprint.
    pub async fn begin_idempotent(
        &self,
        workspace_id: &str,
        key: &str,
        fingerprint: &str,
    ) -> Result<IdempotencyBegin, EngineError> {
        Ok(self
            .store
            .begin_idempotent(workspace_id, key, fingerprint, self.options.idempotency)
            .await?)
    }

    /// Gives up a claimed key after a request that changed nothing.
    pub async fn release_idempotent(&self, claim: &IdempotencyClaim) -> Result<(), EngineError> {
        Ok(self.store.release_idempotent(claim).await?)
    }

    /// How long a request owns its idempotency key before another may take it over.
    pub fn idempotency_lease(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.options.idempotency.lease_ms.max(0) as u64)
    }

    /// Deletes expired idempotency records, in bounded batches.
    pub async fn purge_idempotency(&self, limit: i64) -> Result<u64, EngineError> {
        Ok(self
            .store
            .purge_idempotency(self.options.idempotency.ttl_ms, limit)
            .await?)
    }
    /// A stored definition, parsed once per version.
    fn definition(
        &self,
        workspace_id: &str,
        process_id: &str,
        version: i32,
        stored: &str,
    ) -> Result<Arc<ProcessDefinition>, EngineError> {
        let key = (workspace_id.to_owned(), process_id.to_owned(), version);
        if let Some(definition) = read(&self.definitions).get(&key) {
            return Ok(definition.clone());
        }
        let definition: ProcessDefinition = serde_json::from_str(stored)
            .map_err(|error| EngineError::Internal(StoreError::Corrupt(error.to_string())))?;
        let definition = Arc::new(definition);
        write(&self.definitions).insert(key, definition.clone());
        Ok(definition)
    }

    /// The definition version `execution` runs, from the cache or else from the store.
    async fn stored_definition(
        &self,
        execution: &model::Execution,
    ) -> Result<Arc<ProcessDefinition>, EngineError> {
        let key = (
            execution.workspace_id.clone(),
            execution.process_id.clone(),
            execution.process_version,
        );
        if let Some(definition) = read(&self.definitions).get(&key) {
            return Ok(definition.clone());
        }
        let stored = self
            .store
            .process_version(&key.0, &key.1, key.2)
            .await?
            .ok_or_else(|| {
                EngineError::Internal(StoreError::Corrupt(format!(
                    "execution {} runs a process version that is not stored",
                    execution.id
                )))
            })?;
        self.definition(&key.0, &key.1, key.2, &stored)
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn check_id(what: &str, id: &str) -> Result<(), EngineError> {
    if definition::is_valid_id(id) {
        Ok(())
    } else {
        Err(EngineError::InvalidInput(format!(
            "'{what}' must be 1-64 characters of letters, digits, '-', '_' or '.', \
             other than '.' and '..'"
        )))
    }
}
