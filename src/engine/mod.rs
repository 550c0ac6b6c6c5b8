//! The process engine: every operation the API and the sweeper perform. It validates input,
//! decides state changes with the pure `transition` module, and has the store apply each
//! change with its events in one transaction. It never sees HTTP types.

pub mod definition;
pub mod error;
pub mod model;
pub mod sweeper;
pub mod transition;
pub mod webhooks;

mod keys;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::Notify;
use tracing::instrument;
use uuid::Uuid;

use crate::events::EventContext;
use crate::store::{
    Change, IdempotencyBegin, IdempotencyClaim, IdempotencyTimes, IdempotentResponse,
    LockedExecution, NewEvent, NewExecution, ProcessPut, Store,
};
use crate::validation;

pub use definition::{EXTERNAL_DATA_FAILURE, ProcessDefinition, Step};
pub use error::EngineError;
pub use keys::NewApiKey;
use model::{Customer, Event, Execution, ExecutionStatus};
use transition::Position;

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub idempotency: IdempotencyTimes,
    /// Which hosts webhook endpoints may point at.
    pub hosts: crate::events::client::HostPolicy,
}

/// The process engine; cheap to share behind an `Arc`.
pub struct Engine {
    store: Arc<dyn Store>,
    options: EngineOptions,
    /// Parsed definitions by (workspace, process, version); versions never change once stored.
    definitions: RwLock<HashMap<(String, String, i32), Arc<ProcessDefinition>>>,
    /// Authenticated API keys by hash; keys cannot be revoked, so entries never go stale.
    api_keys: RwLock<HashMap<String, String>>,
    /// Woken whenever a new deadline is stored, so the sweeper can sleep until the earliest.
    deadline_added: Arc<Notify>,
    /// Woken after every committed change, so the delivery worker looks at the outbox.
    events_written: Arc<Notify>,
}

/// A start request, already authenticated for `workspace_id`.
#[derive(Debug, Clone)]
pub struct StartCommand {
    pub workspace_id: String,
    pub process_id: String,
    /// The request's `data` object: `reference` plus fields to prefill.
    pub data: Value,
}

/// What a start returns; also the stored idempotent response body.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Started {
    pub token: String,
    pub available_languages: Vec<String>,
    pub spektr_id: Uuid,
}

/// A submit request, already authenticated for `workspace_id`.
#[derive(Debug, Clone)]
pub struct SubmitCommand {
    pub workspace_id: String,
    pub token: String,
    pub payload: Value,
    pub filled_by: Option<String>,
}

/// An execution as seen through its token, with the definition it runs.
#[derive(Debug, Clone)]
pub struct ExecutionView {
    pub execution: Execution,
    pub definition: Arc<ProcessDefinition>,
    pub now_ms: i64,
}

impl ExecutionView {
    /// The External Step the execution waits on, if it does.
    pub fn waiting_step(&self) -> Option<&definition::ExternalDataStep> {
        if self.execution.status != ExecutionStatus::Pending {
            return None;
        }
        match self
            .definition
            .steps
            .get(self.execution.step_index as usize)
        {
            Some(Step::ExternalData(step)) => Some(step),
            _ => None,
        }
    }
}

/// The body of a successful submit.
pub const SUBMIT_RESPONSE: &str = r#"{"status":"completed"}"#;

impl Engine {
    /// An engine over `store`.
    pub fn new(store: Arc<dyn Store>, options: EngineOptions) -> Self {
        Engine {
            store,
            options,
            definitions: RwLock::new(HashMap::new()),
            api_keys: RwLock::new(HashMap::new()),
            deadline_added: Arc::new(Notify::new()),
            events_written: Arc::new(Notify::new()),
        }
    }

    /// The signal the delivery worker waits on.
    pub fn events_written(&self) -> Arc<Notify> {
        self.events_written.clone()
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
        if name.is_empty() || name.len() > 255 {
            return Err(EngineError::InvalidInput(
                "'name' must be a non-empty string of at most 255 bytes".to_owned(),
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
        if let Some(workspace) = read(&self.api_keys).get(&hash) {
            return Ok(Some(workspace.clone()));
        }
        let Some(record) = self.store.find_api_key(&hash).await? else {
            return Ok(None);
        };
        if !keys::hashes_match(&record.key_hash, &hash) {
            return Ok(None);
        }
        let mut cache = write(&self.api_keys);
        if cache.len() >= 10_000 {
            cache.clear();
        }
        cache.insert(hash, record.workspace_id.clone());
        Ok(Some(record.workspace_id))
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

    /// Starts an execution of a process for the customer named by `data.reference`.
    #[instrument(skip_all, fields(workspace_id = %command.workspace_id,
                                  process_id = %command.process_id))]
    pub async fn start(
        &self,
        command: StartCommand,
        claim: Option<IdempotencyClaim>,
    ) -> Result<Started, EngineError> {
        let (reference, prefill) = parse_start_data(&command.data)?;
        if !definition::is_valid_id(&command.process_id) {
            return Err(EngineError::NotFound("process"));
        }
        let process = self
            .store
            .get_process(&command.workspace_id, &command.process_id)
            .await?
            .ok_or(EngineError::NotFound("process"))?;
        let definition = self.definition(
            &command.workspace_id,
            &command.process_id,
            process.version,
            &process.definition,
        )?;
        let new = NewExecution {
            id: Uuid::now_v7(),
            token: keys::token(),
            workspace_id: command.workspace_id.clone(),
            process_id: command.process_id.clone(),
            process_version: process.version,
            reference,
            prefill,
        };
        let mut started = None;
        let mut decide = |context: &crate::store::StartContext| {
            let events = EventContext {
                workspace_id: &new.workspace_id,
                spektr_id: context.customer.spektr_id,
                reference: &new.reference,
                execution_id: new.id,
                process_id: &new.process_id,
                definition: &definition,
                now_ms: context.now_ms,
            };
            let mut change = settle(
                &events,
                transition::enter(&definition, 0),
                vec![events.started()],
            );
            let response = Started {
                token: new.token.clone(),
                available_languages: definition.available_languages.clone(),
                spektr_id: context.customer.spektr_id,
            };
            change.idempotent_response = claim.clone().map(|claim| IdempotentResponse {
                claim,
                status: 201,
                body: serde_json::to_string(&response).unwrap_or_default(),
            });
            started = Some((response, change.deadline_ms.is_some()));
            change
        };
        self.store.start_execution(new.clone(), &mut decide).await?;
        let (response, has_deadline) =
            started.ok_or(EngineError::Conflict("start was not decided"))?;
        if has_deadline {
            self.deadline_added.notify_one();
        }
        self.events_written.notify_one();
        tracing::debug!(execution_id = %new.id, "execution started");
        Ok(response)
    }

    /// The execution behind a token, as its workspace sees it.
    pub async fn execution(
        &self,
        workspace_id: &str,
        token: &str,
    ) -> Result<ExecutionView, EngineError> {
        let snapshot = self
            .store
            .load_execution(token)
            .await?
            .filter(|snapshot| keys::tokens_match(&snapshot.execution.token, token))
            .filter(|snapshot| snapshot.execution.workspace_id == workspace_id)
            .ok_or(EngineError::NotFound("execution"))?;
        let execution = snapshot.execution;
        let definition = self.definition(
            &execution.workspace_id,
            &execution.process_id,
            execution.process_version,
            &snapshot.definition,
        )?;
        Ok(ExecutionView {
            execution,
            definition,
            now_ms: snapshot.now_ms,
        })
    }

    /// Validates and stores an External Step payload, then moves the process on. After the
    /// deadline, times the step out instead and reports `TimeoutElapsed`.
    #[instrument(skip_all, fields(workspace_id = %command.workspace_id))]
    pub async fn submit(
        &self,
        command: SubmitCommand,
        claim: Option<IdempotencyClaim>,
    ) -> Result<(), EngineError> {
        let mut verdict: Result<bool, EngineError> = Err(EngineError::NotFound("execution"));
        let mut decide = |locked: &LockedExecution| {
            let (outcome, change) = self.decide_submit(locked, &command, claim.as_ref());
            verdict = outcome;
            change
        };
        match self
            .store
            .advance_execution(&command.token, &mut decide)
            .await
        {
            Err(crate::store::StoreError::NotFound) => {
                return Err(EngineError::NotFound("execution"));
            }
            other => other?,
        };
        if verdict.as_ref().is_ok_and(|has_deadline| *has_deadline) {
            self.deadline_added.notify_one();
        }
        self.events_written.notify_one();
        verdict.map(|_| ())
    }

    /// The submit decision for a locked execution: the outcome for the caller (with whether a
    /// new deadline was set) and the change to commit, if any.
    fn decide_submit(
        &self,
        locked: &LockedExecution,
        command: &SubmitCommand,
        claim: Option<&IdempotencyClaim>,
    ) -> (Result<bool, EngineError>, Option<Change>) {
        let execution = &locked.execution;
        if execution.workspace_id != command.workspace_id
            || !keys::tokens_match(&execution.token, &command.token)
        {
            return (Err(EngineError::NotFound("execution")), None);
        }
        let definition = match self.locked_definition(locked) {
            Ok(definition) => definition,
            Err(error) => return (Err(error), None),
        };
        let Some(step) = waiting_step(execution, &definition) else {
            return (Err(EngineError::NotWaiting), None);
        };
        if execution
            .deadline_ms
            .is_some_and(|deadline| deadline <= locked.now_ms)
        {
            let change = time_out(locked, &definition, step);
            return (Err(EngineError::TimeoutElapsed), Some(change));
        }
        let values = match validation::validate(&command.payload, &step.expected_fields) {
            Ok(values) => values,
            Err(errors) => return (Err(EngineError::PayloadInvalid(errors)), None),
        };

        let mut fields = locked.customer.fields.clone();
        fields.extend(values.clone());
        fields.insert(EXTERNAL_DATA_FAILURE.to_owned(), Value::Bool(false));
        let events = event_context(locked, &definition);
        let received = events.received(step, &values, command.filled_by.as_deref());
        let position = transition::leave(&definition, execution.step_index as usize, &fields);
        let mut change = settle(&events, position, vec![received]);
        change.customer_fields = Some(fields);
        change.idempotent_response = claim.map(|claim| IdempotentResponse {
            claim: claim.clone(),
            status: 200,
            body: SUBMIT_RESPONSE.to_owned(),
        });
        (Ok(change.deadline_ms.is_some()), Some(change))
    }

    /// Times out up to `limit` steps whose deadline has passed; returns how many.
    #[instrument(skip_all)]
    pub async fn sweep_once(&self, limit: i64) -> Result<usize, EngineError> {
        let mut new_deadline = false;
        let mut decide = |locked: &LockedExecution| {
            let definition = match self.locked_definition(locked) {
                Ok(definition) => definition,
                Err(error) => {
                    tracing::error!(execution_id = %locked.execution.id, error = %error,
                                    "cannot time out: stored definition unreadable");
                    return None;
                }
            };
            let step = waiting_step(&locked.execution, &definition)?;
            let change = time_out(locked, &definition, step);
            new_deadline |= change.deadline_ms.is_some();
            Some(change)
        };
        let timed_out = self.store.time_out_due(limit, &mut decide).await?;
        if new_deadline {
            self.deadline_added.notify_one();
        }
        if timed_out > 0 {
            self.events_written.notify_one();
        }
        Ok(timed_out)
    }

    /// Milliseconds until the earliest stored deadline, by the database clock.
    pub async fn next_deadline_in(&self) -> Result<Option<i64>, EngineError> {
        Ok(self.store.next_deadline_in().await?)
    }

    /// Also wakes the sweeper when another process announces a deadline due soon.
    pub fn listen_for_deadlines(&self, shutdown: tokio_util::sync::CancellationToken) {
        self.store
            .listen_for_deadlines(self.deadline_added.clone(), shutdown);
    }

    /// Resolves when a deadline is stored after the last call returned.
    pub async fn deadline_added(&self) {
        self.deadline_added.notified().await;
    }

    /// Deletes expired idempotency records, in bounded batches.
    pub async fn purge_idempotency(&self, limit: i64) -> Result<u64, EngineError> {
        Ok(self
            .store
            .purge_idempotency(self.options.idempotency.ttl_ms, limit)
            .await?)
    }

    fn locked_definition(
        &self,
        locked: &LockedExecution,
    ) -> Result<Arc<ProcessDefinition>, EngineError> {
        let execution = &locked.execution;
        self.definition(
            &execution.workspace_id,
            &execution.process_id,
            execution.process_version,
            &locked.definition,
        )
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
        let definition: ProcessDefinition = serde_json::from_str(stored).map_err(|error| {
            EngineError::Internal(crate::store::StoreError::Corrupt(error.to_string()))
        })?;
        let definition = Arc::new(definition);
        write(&self.definitions).insert(key, definition.clone());
        Ok(definition)
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
            "'{what}' must be 1-64 characters of letters, digits, '-', '_' or '.'"
        )))
    }
}

/// Splits a start request's `data` into the reference and the fields to prefill.
fn parse_start_data(data: &Value) -> Result<(String, Map<String, Value>), EngineError> {
    let Some(object) = data.as_object() else {
        return Err(EngineError::InvalidInput(
            "'data' must be a JSON object".to_owned(),
        ));
    };
    let reference = match object.get("reference") {
        Some(Value::String(reference)) if !reference.trim().is_empty() => reference.trim(),
        _ => {
            return Err(EngineError::InvalidInput(
                "'data.reference' must be a non-empty string".to_owned(),
            ));
        }
    };
    if reference.len() > 255 {
        return Err(EngineError::InvalidInput(
            "'data.reference' must be at most 255 bytes".to_owned(),
        ));
    }
    let prefill = object
        .iter()
        .filter(|(key, value)| key.as_str() != "reference" && !value.is_null())
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    Ok((reference.to_owned(), prefill))
}

fn waiting_step<'a>(
    execution: &Execution,
    definition: &'a ProcessDefinition,
) -> Option<&'a definition::ExternalDataStep> {
    if execution.status != ExecutionStatus::Pending {
        return None;
    }
    match definition
        .steps
        .get(usize::try_from(execution.step_index).ok()?)
    {
        Some(Step::ExternalData(step)) => Some(step),
        _ => None,
    }
}

fn event_context<'a>(
    locked: &'a LockedExecution,
    definition: &'a ProcessDefinition,
) -> EventContext<'a> {
    EventContext {
        workspace_id: &locked.execution.workspace_id,
        spektr_id: locked.customer.spektr_id,
        reference: &locked.customer.reference,
        execution_id: locked.execution.id,
        process_id: &locked.execution.process_id,
        definition,
        now_ms: locked.now_ms,
    }
}

/// The change that times out `step`: the failure flag, the event, and the route onwards.
fn time_out(
    locked: &LockedExecution,
    definition: &ProcessDefinition,
    step: &definition::ExternalDataStep,
) -> Change {
    let mut fields = locked.customer.fields.clone();
    fields.insert(EXTERNAL_DATA_FAILURE.to_owned(), Value::Bool(true));
    let events = event_context(locked, definition);
    let timed_out = events.timed_out(step, locked.execution.deadline_ms);
    let position = transition::leave(definition, locked.execution.step_index as usize, &fields);
    let mut change = settle(&events, position, vec![timed_out]);
    change.customer_fields = Some(fields);
    change
}

/// The change that puts an execution at `position`, after `events` already decided.
fn settle(events: &EventContext<'_>, position: Position, mut decided: Vec<NewEvent>) -> Change {
    match position {
        Position::Waiting {
            step_index,
            timeout_ms,
        } => {
            let deadline_ms = timeout_ms.map(|timeout| events.now_ms + timeout);
            if let Some(Step::ExternalData(step)) = events.definition.steps.get(step_index) {
                decided.push(events.waiting(step, deadline_ms));
            }
            Change {
                status: ExecutionStatus::Pending,
                step_index: step_index as i32,
                deadline_ms,
                outcome: None,
                customer_fields: None,
                events: decided,
                idempotent_response: None,
            }
        }
        Position::Completed {
            step_index,
            outcome,
        } => {
            decided.push(events.completed(outcome.as_deref()));
            Change {
                status: ExecutionStatus::Completed,
                step_index: step_index as i32,
                deadline_ms: None,
                outcome,
                customer_fields: None,
                events: decided,
                idempotent_response: None,
            }
        }
    }
}
