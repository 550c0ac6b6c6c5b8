//! Domain records shared by the engine and the store.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

/// An execution's status, as Spektr names them. Stored as lowercase text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionStatus {
    /// Moving between steps; only ever seen inside a transaction here, since every step that
    /// is not an External Step finishes at once.
    Running,
    /// Waiting on an External Step.
    Pending,
    /// Stopped by an error.
    Failed,
    /// Finished.
    Completed,
}

impl ExecutionStatus {
    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionStatus::Running => "running",
            ExecutionStatus::Pending => "pending",
            ExecutionStatus::Failed => "failed",
            ExecutionStatus::Completed => "completed",
        }
    }
}

impl fmt::Display for ExecutionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ExecutionStatus {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "running" => Ok(ExecutionStatus::Running),
            "pending" => Ok(ExecutionStatus::Pending),
            "failed" => Ok(ExecutionStatus::Failed),
            "completed" => Ok(ExecutionStatus::Completed),
            other => Err(format!("unknown execution status '{other}'")),
        }
    }
}

/// One run of a process for one customer.
#[derive(Debug, Clone, PartialEq)]
pub struct Execution {
    pub id: Uuid,
    pub workspace_id: String,
    pub process_id: String,
    pub process_version: i32,
    pub spektr_id: Uuid,
    pub token: String,
    pub status: ExecutionStatus,
    pub step_index: i32,
    /// Unix ms by the database clock; set only while waiting on a step with a timeout.
    pub deadline_ms: Option<i64>,
    pub outcome: Option<String>,
}

/// A customer of a workspace: one per reference.
#[derive(Debug, Clone, PartialEq)]
pub struct Customer {
    pub spektr_id: Uuid,
    pub workspace_id: String,
    pub reference: String,
    pub fields: Map<String, Value>,
}

/// A stored event: an activity-history entry and, later, a delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: Uuid,
    pub seq: i64,
    pub execution_id: Option<Uuid>,
    pub kind: String,
    pub created_at_ms: i64,
    /// The guide-shaped body: `type`, `workspaceId`, `spektrId`, `createdAt`, `eventData`.
    pub body: Value,
}
