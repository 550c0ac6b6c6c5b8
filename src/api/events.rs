//! Public routes for integrations that cannot receive webhooks: the event feed, and finding
//! executions (with their tokens) from what an event carries.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::actions::NodeType;
use super::auth::Workspace;
use super::error::ApiError;
use super::openapi::{BadRequest, Internal, Unauthorized, Unavailable};
use crate::engine::model::{Event, ExecutionStatus};
use crate::store::{ExecutionFilter, ExecutionSummary, FeedCursor};
use crate::validation::ExpectedField;

/// An event as the feed and the activity history list it: the body delivered to webhooks,
/// plus its `id` and `seq`. (The body is stored as JSON when the change commits; this type
/// describes it.)
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
#[allow(dead_code)] // Documents the stored JSON.
pub struct EventRecord {
    /// Unique; the `webhook-id` of its deliveries.
    id: Uuid,
    /// Increases along one execution's events. On SQLite it counts the workspace's events
    /// without gaps; on Postgres it comes from one sequence for the database.
    #[schema(minimum = 1)]
    seq: i64,
    #[schema(rename = "type")]
    event_type: EventType,
    workspace_id: String,
    spektr_id: Uuid,
    /// Unix ms, database clock.
    created_at: i64,
    event_data: EventData,
}

/// What happened.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)] // Events are stored as JSON; this type documents their `type`.
pub enum EventType {
    ProcessStarted,
    ExternalDataWaiting,
    ExternalDataReceived,
    ExternalDataTimedOut,
    ProcessCompleted,
}

/// The event's details: the execution's identifiers always, the step's on External Step
/// events, and what belongs to the event's type.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
#[allow(dead_code)] // Documents the stored JSON.
pub struct EventData {
    /// The execution's id.
    context_id: Uuid,
    process_id: String,
    process_name: String,
    process_type: String,
    /// The customer's reference.
    reference: String,
    /// External Step events.
    #[schema(nullable = false)]
    step_type: Option<NodeType>,
    /// External Step events.
    #[schema(nullable = false)]
    step_id: Option<String>,
    /// External Step events.
    #[schema(nullable = false)]
    step_title: Option<String>,
    /// `external_data_waiting`: the payload contract.
    #[schema(nullable = false)]
    expected_fields: Option<Vec<ExpectedField>>,
    /// `external_data_waiting` and `external_data_timed_out` of a step with a timeout: the
    /// deadline, Unix ms.
    #[schema(nullable = false)]
    expires_at: Option<i64>,
    /// `external_data_received`: the accepted, normalised values.
    #[schema(nullable = false, value_type = Option<Object>)]
    data: Option<Value>,
    /// `external_data_received`, when the submit gave `filledBy`.
    #[schema(nullable = false)]
    filled_by: Option<String>,
    /// `process_completed`: the end step's outcome, or `null` when the process ran past its
    /// last step.
    outcome: Option<String>,
}

/// A page of the event feed.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventPage {
    #[schema(value_type = Vec<EventRecord>)]
    data: Vec<Value>,
    /// Pass as `after` to read on; the same cursor when the page is empty. Opaque: a number
    /// on SQLite, `<txid>-<seq>` on Postgres.
    #[schema(pattern = "^[0-9]+(-[0-9]+)?$")]
    next_cursor: String,
    /// Whether more events follow already.
    has_more: bool,
}

/// Executions found, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionList {
    data: Vec<ExecutionFound>,
    /// Whether more executions match than `limit` let through.
    has_more: bool,
}

/// An execution found by a look-up, with the token to act on it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionFound {
    id: Uuid,
    token: String,
    status: ExecutionStatus,
    process_id: String,
    spektr_id: Uuid,
    reference: String,
    /// 1-based position of the current step.
    #[schema(minimum = 1)]
    current_step: i32,
    /// The waiting step's deadline, Unix ms; `null` when it has none or nothing waits.
    expires_at: Option<i64>,
    /// Unix ms.
    created_at: i64,
    /// Unix ms.
    updated_at: i64,
}

impl From<ExecutionSummary> for ExecutionFound {
    fn from(execution: ExecutionSummary) -> Self {
        ExecutionFound {
            id: execution.id,
            token: execution.token,
            status: execution.status,
            process_id: execution.process_id,
            spektr_id: execution.spektr_id,
            reference: execution.reference,
            current_step: execution.step_index + 1,
            expires_at: execution.deadline_ms,
            created_at: execution.created_at_ms,
            updated_at: execution.updated_at_ms,
        }
    }
}

/// The feed's page size when `limit` is not given, and its largest.
const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;

fn limit(query: &HashMap<String, String>) -> Result<i64, ApiError> {
    limit_within(query, DEFAULT_LIMIT, MAX_LIMIT)
}

/// A list route's `?limit=`: `default` when absent, refused unless a whole number from 1 to
/// `max`.
pub(super) fn limit_within(
    query: &HashMap<String, String>,
    default: i64,
    max: i64,
) -> Result<i64, ApiError> {
    match query.get("limit") {
        None => Ok(default),
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|limit| (1..=max).contains(limit))
            .ok_or_else(|| ApiError::bad_request(format!("'limit' must be 1 to {max}"))),
    }
}

/// An event's body with its `id` and `seq`, as the feed and the activity history list it.
pub fn event_json(event: Event) -> Value {
    let mut body = event.body;
    body["id"] = json!(event.id);
    body["seq"] = json!(event.seq);
    body
}

/// The workspace's events in a stable order that a cursor never skips.
///
/// Start without `after` (or with `0`), then pass the last `nextCursor`. On Postgres an event
/// is listed once every transaction that began before it has ended, so a cursor never passes
/// an event committed later.
#[utoipa::path(
    get,
    path = "/v2/public/events",
    tag = "events",
    params(
        ("after" = Option<String>, Query, pattern = "^([0-9]+(-[0-9]+)?)?$",
         description = "A `nextCursor` from an earlier page; empty or `0` reads from the start"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000,
         description = "Page size, default 100"),
    ),
    responses(
        (status = 200, description = "A page of events", body = EventPage),
        BadRequest, Unauthorized, Internal, Unavailable,
    ),
    security(("apiKey" = []), ("apiKeyBearer" = [])),
)]
pub async fn list_events(
    State(state): State<AppState>,
    Workspace(workspace_id): Workspace,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<EventPage>, ApiError> {
    let after = match query.get("after").map(String::as_str) {
        None | Some("") => FeedCursor::default(),
        Some(text) => text
            .parse::<FeedCursor>()
            .map_err(|()| ApiError::bad_request("'after' must be a cursor from 'nextCursor'"))?,
    };
    let limit = limit(&query)?;
    // One more than asked tells whether another page exists.
    let mut entries = state
        .engine
        .events_after(&workspace_id, after, limit + 1)
        .await?;
    let has_more = entries.len() as i64 > limit;
    entries.truncate(limit as usize);
    let next = entries.last().map_or(after, |entry| entry.cursor);
    Ok(Json(EventPage {
        data: entries
            .into_iter()
            .map(|entry| event_json(entry.event))
            .collect(),
        next_cursor: next.to_string(),
        has_more,
    }))
}

/// Find executions, with their tokens, from what an event carries.
///
/// Give exactly one of `reference`, `spektrId` or `contextId` (an event's
/// `eventData.contextId`).
#[utoipa::path(
    get,
    path = "/v2/public/executions",
    tag = "events",
    params(
        ("reference" = Option<String>, Query, min_length = 1, description = "The customer's reference"),
        ("spektrId" = Option<String>, Query, format = Uuid, description = "The customer's id"),
        ("contextId" = Option<String>, Query, format = Uuid, description = "The execution's id"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000,
         description = "At most this many, default 100"),
    ),
    responses(
        (status = 200, description = "Matching executions, newest first", body = ExecutionList),
        BadRequest, Unauthorized, Internal, Unavailable,
    ),
    security(("apiKey" = []), ("apiKeyBearer" = [])),
)]
pub async fn find_executions(
    State(state): State<AppState>,
    Workspace(workspace_id): Workspace,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<ExecutionList>, ApiError> {
    let uuid = |key: &str, text: &str| {
        Uuid::parse_str(text).map_err(|_| ApiError::bad_request(format!("'{key}' must be a UUID")))
    };
    let filter = match (
        query.get("reference"),
        query.get("spektrId"),
        query.get("contextId"),
    ) {
        // Trimmed as a start trims it, so the reference a start stored is the one found.
        (Some(reference), None, None) if !reference.trim().is_empty() => {
            ExecutionFilter::Reference(reference.trim().to_owned())
        }
        (Some(_), None, None) => {
            return Err(ApiError::bad_request(
                "'reference' must not be empty or only whitespace",
            ));
        }
        (None, Some(id), None) => ExecutionFilter::SpektrId(uuid("spektrId", id)?),
        (None, None, Some(id)) => ExecutionFilter::ExecutionId(uuid("contextId", id)?),
        _ => {
            return Err(ApiError::bad_request(
                "Give exactly one of 'reference', 'spektrId' or 'contextId'",
            ));
        }
    };
    let limit = limit(&query)?;
    let mut executions = state
        .engine
        .find_executions(&workspace_id, filter, limit + 1)
        .await?;
    let has_more = executions.len() as i64 > limit;
    executions.truncate(limit as usize);
    Ok(Json(ExecutionList {
        data: executions.into_iter().map(ExecutionFound::from).collect(),
        has_more,
    }))
}
