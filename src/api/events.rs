//! Public routes for integrations that cannot receive webhooks: the event feed, and finding
//! executions (with their tokens) from what an event carries.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use serde_json::{Value, json};
use uuid::Uuid;

use super::AppState;
use super::auth::Workspace;
use super::error::ApiError;
use crate::engine::model::Event;
use crate::store::{ExecutionFilter, FeedCursor};

/// The feed's page size when `limit` is not given, and its largest.
const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;

fn limit(query: &HashMap<String, String>) -> Result<i64, ApiError> {
    match query.get("limit") {
        None => Ok(DEFAULT_LIMIT),
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|limit| (1..=MAX_LIMIT).contains(limit))
            .ok_or_else(|| ApiError::bad_request(format!("'limit' must be 1 to {MAX_LIMIT}"))),
    }
}

/// An event's body with its `id` and `seq`, as the feed and the activity history list it.
pub fn event_json(event: Event) -> Value {
    let mut body = event.body;
    body["id"] = json!(event.id);
    body["seq"] = json!(event.seq);
    body
}

/// `GET /v2/public/events?after={cursor}&limit=…`: the workspace's events in order.
pub async fn list_events(
    State(state): State<AppState>,
    Workspace(workspace_id): Workspace,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
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
    let data: Vec<Value> = entries
        .into_iter()
        .map(|entry| event_json(entry.event))
        .collect();
    Ok(Json(
        json!({ "data": data, "nextCursor": next.to_string(), "hasMore": has_more }),
    ))
}

/// `GET /v2/public/executions?reference=…` (or `spektrId=…`, or `contextId=…`).
pub async fn find_executions(
    State(state): State<AppState>,
    Workspace(workspace_id): Workspace,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let uuid = |key: &str, text: &str| {
        Uuid::parse_str(text).map_err(|_| ApiError::bad_request(format!("'{key}' must be a UUID")))
    };
    let filter = match (
        query.get("reference"),
        query.get("spektrId"),
        query.get("contextId"),
    ) {
        (Some(reference), None, None) if !reference.is_empty() => {
            ExecutionFilter::Reference(reference.clone())
        }
        (None, Some(id), None) => ExecutionFilter::SpektrId(uuid("spektrId", id)?),
        (None, None, Some(id)) => ExecutionFilter::ExecutionId(uuid("contextId", id)?),
        _ => {
            return Err(ApiError::bad_request(
                "Give exactly one of 'reference', 'spektrId' or 'contextId'",
            ));
        }
    };
    let executions = state
        .engine
        .find_executions(&workspace_id, filter, limit(&query)?)
        .await?;
    let data: Vec<Value> = executions
        .into_iter()
        .map(|execution| {
            json!({
                "id": execution.id,
                "token": execution.token,
                "status": execution.status.as_str(),
                "processId": execution.process_id,
                "spektrId": execution.spektr_id,
                "reference": execution.reference,
                "currentStep": execution.step_index + 1,
                "expiresAt": execution.deadline_ms,
                "createdAt": execution.created_at_ms,
                "updatedAt": execution.updated_at_ms,
            })
        })
        .collect();
    Ok(Json(json!({ "data": data })))
}
