//! Executions: starting them, reading them through their token, submitting External Step
//! data, and timing steps out. Each change is decided here, inside the store's transaction,
//! by the pure `transition` module.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};
use tracing::instrument;
use uuid::Uuid;

use super::definition::{self, EXTERNAL_DATA_FAILURE, ProcessDefinition, Step};
use super::model::{Execution, ExecutionStatus};
use super::transition::{self, Position};
use super::{Engine, EngineError, keys};
use crate::events::EventContext;
use crate::monitoring::{self, TimeoutTrigger};
use crate::store::{
    Change, IdempotencyClaim, IdempotentResponse, LockedExecution, NewEvent, NewExecution,
    StartContext, StoreError,
};
use crate::validation;

/// A start request, already authenticated for `workspace_id`.
#[derive(Debug, Clone)]
pub struct StartCommand {
    pub workspace_id: String,
    pub process_id: String,
    /// The request's `data` object: `reference` plus fields to prefill.
    pub data: Value,
}

/// What a start returns; also the stored idempotent response body.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Started {
    /// The execution's token: read its step and submit with it.
    pub token: String,
    pub available_languages: Vec<String>,
    /// The customer's id: the same for every start with the same reference.
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
        let token = keys::token();
        let new = NewExecution {
            id: Uuid::now_v7(),
            token_hash: keys::hash(&token),
            token,
            workspace_id: command.workspace_id.clone(),
            process_id: command.process_id.clone(),
            process_version: process.version,
            reference,
            prefill,
        };
        let mut started = None;
        let mut refused = None;
        let mut decide = |context: &StartContext| {
            if !new.prefill.is_empty()
                && let Err(error) = check_customer_size(&context.customer.fields, "prefill")
            {
                refused = Some(error);
                return None;
            }
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
            let completion = monitoring::completion(&change);
            let deadline_in = change.deadline_ms.map(|deadline| deadline - context.now_ms);
            started = Some((response, deadline_in, completion));
            Some(change)
        };
        self.store.start_execution(new.clone(), &mut decide).await?;
        if let Some(error) = refused {
            return Err(error);
        }
        let (response, deadline_in, completion) =
            started.ok_or(EngineError::Conflict("start was not decided"))?;
        monitoring::execution_started();
        if let Some(outcome) = completion {
            monitoring::execution_completed(outcome);
        }
        if let Some(in_ms) = deadline_in {
            self.alarm.deadline_stored(in_ms);
        }
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
            .load_execution(&keys::hash(token))
            .await?
            .filter(|snapshot| snapshot.execution.workspace_id == workspace_id)
            .ok_or(EngineError::NotFound("execution"))?;
        let execution = snapshot.execution;
        let definition = self.stored_definition(&execution).await?;
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
        let mut verdict: Result<Option<i64>, EngineError> = Err(EngineError::NotFound("execution"));
        let mut completion = None;
        let mut decide = |locked: &LockedExecution| {
            let (outcome, change) = self.decide_submit(locked, &command, claim.as_ref());
            verdict = outcome;
            completion = change.as_ref().and_then(monitoring::completion);
            change
        };
        let committed = match self
            .store
            .advance_execution(&keys::hash(&command.token), &mut decide)
            .await
        {
            Err(StoreError::NotFound) => {
                return Err(EngineError::NotFound("execution"));
            }
            other => other?,
        };
        if committed {
            if matches!(verdict, Err(EngineError::TimeoutElapsed)) {
                monitoring::step_timed_out(TimeoutTrigger::Submit);
            }
            if let Some(outcome) = completion {
                monitoring::execution_completed(outcome);
            }
        }
        if let Ok(Some(in_ms)) = verdict {
            self.alarm.deadline_stored(in_ms);
        }
        verdict.map(|_| ())
    }

    /// The submit decision for a locked execution: the outcome for the caller (with whether a
    /// new deadline was set) and the change to commit, if any.
    fn decide_submit(
        &self,
        locked: &LockedExecution,
        command: &SubmitCommand,
        claim: Option<&IdempotencyClaim>,
    ) -> (Result<Option<i64>, EngineError>, Option<Change>) {
        let execution = &locked.execution;
        if execution.workspace_id != command.workspace_id {
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
        if let Err(error) = check_customer_size(&fields, "payload") {
            return (Err(error), None);
        }
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
        let deadline_in = change.deadline_ms.map(|deadline| deadline - locked.now_ms);
        (Ok(deadline_in), Some(change))
    }

    /// Times out up to `limit` steps whose deadline has passed; returns how many.
    #[instrument(skip_all)]
    pub async fn sweep_once(&self, limit: i64) -> Result<usize, EngineError> {
        let mut next_deadline_in: Option<i64> = None;
        // Recorded only once the batch commits. Keyed by execution because a Postgres batch
        // retried after a deadlock decides its rows again. (A row decided only by the failed
        // attempt, and taken by another sweeper before the retry, would still be counted: a
        // rare overcount, acceptable for a metric.)
        let mut decided: HashMap<Uuid, (i64, Option<String>)> = HashMap::new();
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
            if let Some(deadline) = change.deadline_ms {
                let in_ms = deadline - locked.now_ms;
                next_deadline_in =
                    Some(next_deadline_in.map_or(in_ms, |soonest| soonest.min(in_ms)));
            }
            let lateness_ms = locked.now_ms - locked.execution.deadline_ms.unwrap_or(locked.now_ms);
            decided.insert(
                locked.execution.id,
                (lateness_ms, monitoring::completion(&change)),
            );
            Some(change)
        };
        let timed_out = self.store.time_out_due(limit, &mut decide).await?;
        for (lateness_ms, completion) in decided.into_values() {
            monitoring::step_timed_out(TimeoutTrigger::Sweeper { lateness_ms });
            if let Some(outcome) = completion {
                monitoring::execution_completed(outcome);
            }
        }
        if let Some(in_ms) = next_deadline_in {
            self.alarm.deadline_stored(in_ms);
        }
        Ok(timed_out)
    }

    /// Milliseconds until the earliest stored deadline, by the database clock.
    pub async fn next_deadline_in(&self) -> Result<Option<i64>, EngineError> {
        Ok(self.store.next_deadline_in().await?)
    }

    /// Also wakes the sweeper when another process announces a deadline due soon.
    pub fn listen_for_deadlines(&self, shutdown: tokio_util::sync::CancellationToken) {
        self.store.listen_for_deadlines(self.alarm.bell(), shutdown);
    }

    /// The sweeper's alarm, which writers ring when they store a deadline.
    pub fn alarm(&self) -> Arc<super::sweeper::Alarm> {
        self.alarm.clone()
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
    if reference.chars().any(char::is_control) {
        return Err(EngineError::InvalidInput(
            "'data.reference' must not contain control characters".to_owned(),
        ));
    }
    if object.contains_key(EXTERNAL_DATA_FAILURE) {
        return Err(EngineError::InvalidInput(format!(
            "'data.{EXTERNAL_DATA_FAILURE}' is set by the server and cannot be prefilled"
        )));
    }
    let fields = object.iter().filter(|(key, _)| key.as_str() != "reference");
    if fields.clone().count() > MAX_PREFILL_FIELDS {
        return Err(EngineError::InvalidInput(format!(
            "'data' may prefill at most {MAX_PREFILL_FIELDS} fields per start"
        )));
    }
    if let Some((key, _)) = fields.clone().find(|(key, _)| !is_valid_field_key(key)) {
        let shown: String = key.chars().take(64).collect();
        return Err(EngineError::InvalidInput(format!(
            "'data' field keys must be 1 to 255 bytes without control characters \
             (refused {shown:?})"
        )));
    }
    let prefill = fields
        .filter(|(_, value)| !value.is_null())
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    Ok((reference.to_owned(), prefill))
}

/// How many fields one start may prefill.
const MAX_PREFILL_FIELDS: usize = 200;
/// How many fields a customer may hold once a prefill or a payload is merged in.
const MAX_CUSTOMER_FIELDS: usize = 1_000;
/// How large a customer's fields may be, serialised as JSON, once a prefill or a payload is
/// merged in.
const MAX_CUSTOMER_FIELDS_BYTES: usize = 256 * 1024;

fn is_valid_field_key(key: &str) -> bool {
    (1..=255).contains(&key.len()) && !key.chars().any(char::is_control)
}

/// Refuses a prefill or a payload (`what`) that would make the customer's stored fields grow
/// past the caps; checked on the merged fields inside the writing transaction, so concurrent
/// writers cannot overshoot. The caps are on the fields clients store: the server's own
/// `external_data_failure` is not counted, so a customer filled to them can still submit and
/// time out.
fn check_customer_size(fields: &Map<String, Value>, what: &str) -> Result<(), EngineError> {
    let clients = ClientFields(fields);
    let mut size = ByteCount(0);
    let bytes = serde_json::to_writer(&mut size, &clients).map_or(usize::MAX, |()| size.0);
    if clients.len() > MAX_CUSTOMER_FIELDS || bytes > MAX_CUSTOMER_FIELDS_BYTES {
        return Err(EngineError::InvalidInput(format!(
            "this {what} would give the customer more than {MAX_CUSTOMER_FIELDS} fields \
             or more than {MAX_CUSTOMER_FIELDS_BYTES} bytes of fields"
        )));
    }
    Ok(())
}

/// A customer's fields without the server's `external_data_failure`, serialised as an object.
struct ClientFields<'a>(&'a Map<String, Value>);

impl ClientFields<'_> {
    fn iter(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.0
            .iter()
            .filter(|(key, _)| key.as_str() != EXTERNAL_DATA_FAILURE)
    }

    fn len(&self) -> usize {
        self.iter().count()
    }
}

impl serde::Serialize for ClientFields<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

/// Counts the bytes written to it, to size JSON without building it.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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
