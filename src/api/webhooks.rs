//! Admin routes of event delivery: webhook endpoints, their deliveries, and redelivery.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::AppState;
use super::auth::Admin;
use super::error::ApiError;
use super::extract::JsonBody;
use crate::engine::webhooks::NewEndpoint;
use crate::store::{DeliveryRecord, Endpoint, EndpointPatch};

fn endpoint_json(endpoint: &Endpoint, with_secret: bool) -> Value {
    let mut body = json!({
        "id": endpoint.id,
        "url": endpoint.url,
        "description": endpoint.description,
        "eventTypes": endpoint.event_types,
        "enabled": endpoint.enabled,
        "createdAt": endpoint.created_at_ms,
        "updatedAt": endpoint.updated_at_ms,
    });
    if with_secret {
        body["secret"] = json!(endpoint.secret);
    }
    body
}

fn delivery_json(delivery: &DeliveryRecord) -> Value {
    let attempts: Vec<Value> = delivery
        .attempts
        .iter()
        .map(|attempt| {
            json!({
                "attempt": attempt.attempt,
                "startedAt": attempt.started_at_ms,
                "durationMs": attempt.duration_ms,
                "responseStatus": attempt.response_status,
                "error": attempt.error,
            })
        })
        .collect();
    json!({
        "id": delivery.id,
        "eventId": delivery.event_id,
        "eventType": delivery.event_type,
        "status": delivery.status,
        "nextAttemptAt": delivery.next_attempt_at_ms,
        "lastError": delivery.last_error,
        "createdAt": delivery.created_at_ms,
        "attempts": attempts,
    })
}

fn object(body: &Value, allowed: &[&str]) -> Result<Map<String, Value>, ApiError> {
    let object = body
        .as_object()
        .ok_or_else(|| ApiError::bad_request("The body must be a JSON object"))?;
    if let Some(key) = object.keys().find(|key| !allowed.contains(&key.as_str())) {
        return Err(ApiError::bad_request(format!("unknown property '{key}'")));
    }
    Ok(object.clone())
}

fn optional_string(object: &Map<String, Value>, key: &str) -> Result<Option<String>, ApiError> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) if text.len() <= 2048 => Ok(Some(text.clone())),
        Some(Value::String(_)) => Err(ApiError::bad_request(format!(
            "'{key}' must be at most 2048 bytes"
        ))),
        Some(_) => Err(ApiError::bad_request(format!("'{key}' must be a string"))),
    }
}

fn event_types(value: Option<&Value>) -> Result<Option<Vec<String>>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .map(Some)
            .ok_or_else(|| ApiError::bad_request("'eventTypes' must be an array of strings")),
        Some(_) => Err(ApiError::bad_request(
            "'eventTypes' must be an array of strings",
        )),
    }
}

/// `POST /admin/v1/workspaces/{workspaceId}/webhooks`.
pub async fn create_webhook(
    State(state): State<AppState>,
    _: Admin,
    Path(workspace_id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let object = object(&body, &["url", "eventTypes", "description"])?;
    let url = optional_string(&object, "url")?
        .ok_or_else(|| ApiError::bad_request("'url' is required"))?;
    let new = NewEndpoint {
        url,
        event_types: event_types(object.get("eventTypes"))?,
        description: optional_string(&object, "description")?,
    };
    let endpoint = state.engine.create_endpoint(&workspace_id, new).await?;
    Ok((StatusCode::CREATED, Json(endpoint_json(&endpoint, true))))
}

/// `GET /admin/v1/workspaces/{workspaceId}/webhooks`.
pub async fn list_webhooks(
    State(state): State<AppState>,
    _: Admin,
    Path(workspace_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let endpoints = state.engine.list_endpoints(&workspace_id).await?;
    let data: Vec<Value> = endpoints.iter().map(|e| endpoint_json(e, false)).collect();
    Ok(Json(json!({ "data": data })))
}

/// `GET /admin/v1/workspaces/{workspaceId}/webhooks/{webhookId}`.
pub async fn get_webhook(
    State(state): State<AppState>,
    _: Admin,
    Path((workspace_id, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let endpoint = state.engine.endpoint(&workspace_id, &id).await?;
    Ok(Json(endpoint_json(&endpoint, false)))
}

/// `PATCH /admin/v1/workspaces/{workspaceId}/webhooks/{webhookId}`.
pub async fn update_webhook(
    State(state): State<AppState>,
    _: Admin,
    Path((workspace_id, id)): Path<(String, String)>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let object = object(&body, &["url", "eventTypes", "description", "enabled"])?;
    let enabled = match object.get("enabled") {
        None => None,
        Some(Value::Bool(enabled)) => Some(*enabled),
        Some(_) => return Err(ApiError::bad_request("'enabled' must be a boolean")),
    };
    let patch = EndpointPatch {
        url: optional_string(&object, "url")?,
        description: object
            .contains_key("description")
            .then(|| optional_string(&object, "description"))
            .transpose()?,
        event_types: object
            .contains_key("eventTypes")
            .then(|| event_types(object.get("eventTypes")))
            .transpose()?,
        enabled,
    };
    let endpoint = state
        .engine
        .update_endpoint(&workspace_id, &id, patch)
        .await?;
    Ok(Json(endpoint_json(&endpoint, false)))
}

/// `DELETE /admin/v1/workspaces/{workspaceId}/webhooks/{webhookId}`.
pub async fn delete_webhook(
    State(state): State<AppState>,
    _: Admin,
    Path((workspace_id, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.engine.delete_endpoint(&workspace_id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /admin/v1/workspaces/{workspaceId}/webhooks/{webhookId}/rotate-secret`.
pub async fn rotate_webhook_secret(
    State(state): State<AppState>,
    _: Admin,
    Path((workspace_id, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let endpoint = state
        .engine
        .rotate_endpoint_secret(&workspace_id, &id)
        .await?;
    Ok(Json(endpoint_json(&endpoint, true)))
}

/// `?limit=` of list routes.
#[derive(Debug, Deserialize)]
pub struct LimitQuery {
    limit: Option<i64>,
}

/// `GET /admin/v1/workspaces/{workspaceId}/webhooks/{webhookId}/deliveries`.
pub async fn list_deliveries(
    State(state): State<AppState>,
    _: Admin,
    Path((workspace_id, id)): Path<(String, String)>,
    Query(query): Query<LimitQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = query.limit.unwrap_or(50).clamp(1, 500);
    let deliveries = state.engine.deliveries(&workspace_id, &id, limit).await?;
    let data: Vec<Value> = deliveries.iter().map(delivery_json).collect();
    Ok(Json(json!({ "data": data })))
}

/// `POST /admin/v1/workspaces/{workspaceId}/events/{eventId}/redeliver`.
pub async fn redeliver_event(
    State(state): State<AppState>,
    _: Admin,
    Path((workspace_id, event_id)): Path<(String, String)>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let queued = state.engine.redeliver(&workspace_id, &event_id).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "queued": queued }))))
}
