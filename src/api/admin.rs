//! The admin API: workspaces, API keys, process definitions, and read access to customers
//! and activity. Every route needs `Authorization: Bearer $ADMIN_TOKEN`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::AppState;
use super::auth::Admin;
use super::error::ApiError;
use super::extract::JsonBody;

fn created_or_ok(created: bool) -> StatusCode {
    if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
}

/// `PUT /admin/v1/workspaces/{workspaceId}` `{"name"}`.
pub async fn put_workspace(
    State(state): State<AppState>,
    _: Admin,
    Path(workspace_id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Some(name) = body.get("name").and_then(Value::as_str) else {
        return Err(ApiError::bad_request("'name' must be a non-empty string"));
    };
    let created = state.engine.put_workspace(&workspace_id, name).await?;
    let body = json!({ "id": workspace_id, "name": name.trim() });
    Ok((created_or_ok(created), Json(body)))
}

/// `POST /admin/v1/workspaces/{workspaceId}/api-keys`.
pub async fn create_api_key(
    State(state): State<AppState>,
    _: Admin,
    Path(workspace_id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let key = state.engine.create_api_key(&workspace_id).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": key.id, "key": key.key })),
    ))
}

/// `PUT /admin/v1/workspaces/{workspaceId}/processes/{processId}` with a definition.
pub async fn put_process(
    State(state): State<AppState>,
    _: Admin,
    Path((workspace_id, process_id)): Path<(String, String)>,
    JsonBody(definition): JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let put = state
        .engine
        .put_process(&workspace_id, &process_id, &definition)
        .await?;
    let body = json!({
        "id": process_id,
        "workspaceId": workspace_id,
        "version": put.version,
    });
    Ok((created_or_ok(put.created), Json(body)))
}

/// `GET /admin/v1/workspaces/{workspaceId}/customers/{spektrId}`.
pub async fn get_customer(
    State(state): State<AppState>,
    _: Admin,
    Path((workspace_id, spektr_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let customer = state.engine.customer(&workspace_id, &spektr_id).await?;
    Ok(Json(json!({
        "spektrId": customer.spektr_id,
        "reference": customer.reference,
        "fields": customer.fields,
    })))
}

/// `GET /admin/v1/workspaces/{workspaceId}/executions/{executionId}/activity`.
pub async fn get_activity(
    State(state): State<AppState>,
    _: Admin,
    Path((workspace_id, execution_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let events = state.engine.activity(&workspace_id, &execution_id).await?;
    let activity: Vec<Value> = events.into_iter().map(super::events::event_json).collect();
    Ok(Json(
        json!({ "executionId": execution_id, "activity": activity }),
    ))
}
