//! Event bodies, in the guide's shape: `type`, `workspaceId`, `spektrId`, `createdAt` and
//! `eventData`. Each is written in the same transaction as the change it reports; the same
//! rows are the execution's activity history.

pub mod client;
pub mod delivery;
pub mod signing;

use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::engine::definition::{ExternalDataStep, ProcessDefinition};
use crate::store::NewEvent;

/// The process reached an External Step and waits for data.
pub const EXTERNAL_DATA_WAITING: &str = "external_data_waiting";
/// A valid payload was accepted.
pub const EXTERNAL_DATA_RECEIVED: &str = "external_data_received";
/// The step's timeout passed before a valid payload arrived.
pub const EXTERNAL_DATA_TIMED_OUT: &str = "external_data_timed_out";
/// An execution was started.
pub const PROCESS_STARTED: &str = "process_started";
/// An execution finished.
pub const PROCESS_COMPLETED: &str = "process_completed";

/// What every event of one execution shares.
#[derive(Debug, Clone, Copy)]
pub struct EventContext<'a> {
    pub workspace_id: &'a str,
    pub spektr_id: Uuid,
    pub reference: &'a str,
    pub execution_id: Uuid,
    pub process_id: &'a str,
    pub definition: &'a ProcessDefinition,
    /// Database time of the change, Unix ms.
    pub now_ms: i64,
}

impl EventContext<'_> {
    fn event(&self, kind: &'static str, mut data: Map<String, Value>) -> NewEvent {
        data.insert("contextId".to_owned(), json!(self.execution_id));
        data.insert("processId".to_owned(), json!(self.process_id));
        data.insert("processName".to_owned(), json!(self.definition.name));
        data.insert(
            "processType".to_owned(),
            json!(self.definition.process_type),
        );
        data.insert("reference".to_owned(), json!(self.reference));
        NewEvent {
            id: Uuid::now_v7(),
            execution_id: Some(self.execution_id),
            kind,
            created_at_ms: self.now_ms,
            body: json!({
                "type": kind,
                "workspaceId": self.workspace_id,
                "spektrId": self.spektr_id,
                "createdAt": self.now_ms,
                "eventData": data,
            }),
        }
    }

    fn step_data(step: &ExternalDataStep) -> Map<String, Value> {
        Map::from_iter([
            ("stepType".to_owned(), json!("externalData")),
            ("stepId".to_owned(), json!(step.id)),
            ("stepTitle".to_owned(), json!(step.title)),
        ])
    }

    /// `process_started`.
    pub fn started(&self) -> NewEvent {
        self.event(PROCESS_STARTED, Map::new())
    }

    /// `external_data_waiting`, with the payload contract and the deadline if there is one.
    pub fn waiting(&self, step: &ExternalDataStep, expires_at: Option<i64>) -> NewEvent {
        let mut data = Self::step_data(step);
        data.insert("expectedFields".to_owned(), json!(step.expected_fields));
        if let Some(expires_at) = expires_at {
            data.insert("expiresAt".to_owned(), json!(expires_at));
        }
        self.event(EXTERNAL_DATA_WAITING, data)
    }

    /// `external_data_received`, with the accepted values and who filled them in.
    pub fn received(
        &self,
        step: &ExternalDataStep,
        values: &Map<String, Value>,
        filled_by: Option<&str>,
    ) -> NewEvent {
        let mut data = Self::step_data(step);
        data.insert("data".to_owned(), Value::Object(values.clone()));
        if let Some(filled_by) = filled_by {
            data.insert("filledBy".to_owned(), json!(filled_by));
        }
        self.event(EXTERNAL_DATA_RECEIVED, data)
    }

    /// `external_data_timed_out`, with the deadline that passed.
    pub fn timed_out(&self, step: &ExternalDataStep, expired_at: Option<i64>) -> NewEvent {
        let mut data = Self::step_data(step);
        if let Some(expired_at) = expired_at {
            data.insert("expiresAt".to_owned(), json!(expired_at));
        }
        self.event(EXTERNAL_DATA_TIMED_OUT, data)
    }

    /// `process_completed`, with the outcome of the end step reached, if any.
    pub fn completed(&self, outcome: Option<&str>) -> NewEvent {
        let data = Map::from_iter([("outcome".to_owned(), json!(outcome))]);
        self.event(PROCESS_COMPLETED, data)
    }
}
