//! The admin API: workspaces, API keys, process definitions, and read access to customers
//! and activity. Every route needs `Authorization: Bearer $ADMIN_TOKEN`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::auth::Admin;
use super::error::ApiError;
use super::events::{EventRecord, event_json};
use super::extract::{JsonBody, json_object};
use super::openapi::{
    BadRequest, Internal, NotFound, PayloadTooLarge, Unauthorized, Unavailable,
    UnsupportedMediaType,
};
use crate::engine::ProcessDefinition;

fn created_or_ok(created: bool) -> StatusCode {
    if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
}

/// The body of a workspace PUT.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // Read from the JSON value; this type documents the shape.
pub struct WorkspaceRequest {
    /// Non-empty after trimming, at most 255 bytes.
    #[schema(min_length = 1, max_length = 255, pattern = r"\S")]
    name: String,
}

/// A workspace.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkspaceResponse {
    id: String,
    /// Trimmed.
    name: String,
}

/// A new API key: the only time the key itself is shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyResponse {
    id: Uuid,
    key: String,
}

/// A stored API key, without the key itself.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeySummary {
    id: Uuid,
    /// Unix milliseconds.
    created_at: i64,
    /// Unix milliseconds; `null` while the key works.
    revoked_at: Option<i64>,
}

/// A workspace's API keys, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyList {
    data: Vec<ApiKeySummary>,
}

/// A stored process definition.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessResponse {
    id: String,
    workspace_id: String,
    /// Increases with every changed definition; an unchanged one keeps its version.
    #[schema(minimum = 1)]
    version: i32,
}

/// A customer and the fields stored for it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomerResponse {
    spektr_id: Uuid,
    reference: String,
    /// Every stored field, including `external_data_failure` once a step finished.
    #[schema(value_type = Object)]
    fields: Map<String, Value>,
}

/// An execution's activity history.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActivityResponse {
    /// The execution's id, in its canonical lowercase hyphenated form.
    execution_id: String,
    /// Oldest first.
    #[schema(value_type = Vec<EventRecord>)]
    activity: Vec<Value>,
}

/// Create a workspace, or rename it.
#[utoipa::path(
    put,
    path = "/admin/v1/workspaces/{workspaceId}",
    tag = "admin",
    params(("workspaceId" = String, Path, pattern = r"^[A-Za-z0-9._-]{1,64}$",
            description = "1-64 letters, digits, '-', '_' or '.'")),
    request_body(content = WorkspaceRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Renamed (or unchanged)", body = WorkspaceResponse),
        (status = 201, description = "Created", body = WorkspaceResponse),
        BadRequest, Unauthorized, NotFound, PayloadTooLarge, UnsupportedMediaType, Internal,
        Unavailable,
    ),
    security(("adminToken" = [])),
)]
pub async fn put_workspace(
    State(state): State<AppState>,
    _: Admin,
    Path(workspace_id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<WorkspaceResponse>), ApiError> {
    let body = json_object(&body, &["name"])?;
    let Some(name) = body.get("name").and_then(Value::as_str) else {
        return Err(ApiError::bad_request("'name' must be a non-empty string"));
    };
    let created = state.engine.put_workspace(&workspace_id, name).await?;
    let body = WorkspaceResponse {
        id: workspace_id,
        name: name.trim().to_owned(),
    };
    Ok((created_or_ok(created), Json(body)))
}

/// Create an API key for a workspace.
#[utoipa::path(
    post,
    path = "/admin/v1/workspaces/{workspaceId}/api-keys",
    tag = "admin",
    params(("workspaceId" = String, Path)),
    responses(
        (status = 201, description = "Created; the key is shown only now", body = ApiKeyResponse),
        BadRequest, Unauthorized, NotFound, Internal, Unavailable,
    ),
    security(("adminToken" = [])),
)]
pub async fn create_api_key(
    State(state): State<AppState>,
    _: Admin,
    Path(workspace_id): Path<String>,
) -> Result<(StatusCode, Json<ApiKeyResponse>), ApiError> {
    let key = state.engine.create_api_key(&workspace_id).await?;
    let body = ApiKeyResponse {
        id: key.id,
        key: key.key,
    };
    Ok((StatusCode::CREATED, Json(body)))
}

/// List a workspace's API keys, revoked ones included (the keys themselves are never shown
/// again).
#[utoipa::path(
    get,
    path = "/admin/v1/workspaces/{workspaceId}/api-keys",
    tag = "admin",
    params(("workspaceId" = String, Path)),
    responses(
        (status = 200, description = "The workspace's keys, oldest first", body = ApiKeyList),
        Unauthorized, NotFound, Internal, Unavailable,
    ),
    security(("adminToken" = [])),
)]
pub async fn list_api_keys(
    State(state): State<AppState>,
    _: Admin,
    Path(workspace_id): Path<String>,
) -> Result<Json<ApiKeyList>, ApiError> {
    let keys = state.engine.api_keys(&workspace_id).await?;
    let data = keys
        .into_iter()
        .map(|key| ApiKeySummary {
            id: key.id,
            created_at: key.created_at_ms,
            revoked_at: key.revoked_at_ms,
        })
        .collect();
    Ok(Json(ApiKeyList { data }))
}

/// Revoke an API key.
///
/// Requests with it are refused at once by this server process, and by every other one
/// within `SPEKTR_API_KEY_CACHE_SECS`. Revoking a revoked key changes nothing. A revoked key
/// stays revoked even when a bootstrap file names it.
#[utoipa::path(
    delete,
    path = "/admin/v1/workspaces/{workspaceId}/api-keys/{keyId}",
    tag = "admin",
    params(("workspaceId" = String, Path), ("keyId" = String, Path, description = "A UUID")),
    responses(
        (status = 204, description = "Revoked"),
        Unauthorized, NotFound, Internal, Unavailable,
    ),
    security(("adminToken" = [])),
)]
pub async fn revoke_api_key(
    State(state): State<AppState>,
    _: Admin,
    Path((workspace_id, key_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.engine.revoke_api_key(&workspace_id, &key_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Store a process definition as the process's current version.
///
/// Running executions keep the version they started with. A refused definition answers 400
/// with `details.problems` naming every problem.
#[utoipa::path(
    put,
    path = "/admin/v1/workspaces/{workspaceId}/processes/{processId}",
    tag = "admin",
    params(
        ("workspaceId" = String, Path),
        ("processId" = String, Path, pattern = r"^[A-Za-z0-9._-]{1,64}$",
         description = "1-64 letters, digits, '-', '_' or '.'"),
    ),
    request_body(content = ProcessDefinition, content_type = "application/json"),
    responses(
        (status = 200, description = "Stored as a new version, or unchanged", body = ProcessResponse),
        (status = 201, description = "Created", body = ProcessResponse),
        BadRequest, Unauthorized, NotFound, PayloadTooLarge, UnsupportedMediaType, Internal,
        Unavailable,
    ),
    security(("adminToken" = [])),
)]
pub async fn put_process(
    State(state): State<AppState>,
    _: Admin,
    Path((workspace_id, process_id)): Path<(String, String)>,
    JsonBody(definition): JsonBody,
) -> Result<(StatusCode, Json<ProcessResponse>), ApiError> {
    let put = state
        .engine
        .put_process(&workspace_id, &process_id, &definition)
        .await?;
    let body = ProcessResponse {
        id: process_id,
        workspace_id,
        version: put.version,
    };
    Ok((created_or_ok(put.created), Json(body)))
}

/// A customer with its stored fields.
#[utoipa::path(
    get,
    path = "/admin/v1/workspaces/{workspaceId}/customers/{spektrId}",
    tag = "admin",
    params(("workspaceId" = String, Path), ("spektrId" = String, Path, description = "The customer's id (a UUID)")),
    responses(
        (status = 200, description = "The customer", body = CustomerResponse),
        BadRequest, Unauthorized, NotFound, Internal, Unavailable,
    ),
    security(("adminToken" = [])),
)]
pub async fn get_customer(
    State(state): State<AppState>,
    _: Admin,
    Path((workspace_id, spektr_id)): Path<(String, String)>,
) -> Result<Json<CustomerResponse>, ApiError> {
    let customer = state.engine.customer(&workspace_id, &spektr_id).await?;
    Ok(Json(CustomerResponse {
        spektr_id: customer.spektr_id,
        reference: customer.reference,
        fields: customer.fields,
    }))
}

/// An execution's activity history, oldest first.
#[utoipa::path(
    get,
    path = "/admin/v1/workspaces/{workspaceId}/executions/{executionId}/activity",
    tag = "admin",
    params(("workspaceId" = String, Path), ("executionId" = String, Path, description = "The execution's id (a UUID)")),
    responses(
        (status = 200, description = "The execution's events", body = ActivityResponse),
        BadRequest, Unauthorized, NotFound, Internal, Unavailable,
    ),
    security(("adminToken" = [])),
)]
pub async fn get_activity(
    State(state): State<AppState>,
    _: Admin,
    Path((workspace_id, execution_id)): Path<(String, String)>,
) -> Result<Json<ActivityResponse>, ApiError> {
    let events = state.engine.activity(&workspace_id, &execution_id).await?;
    let activity = events.into_iter().map(event_json).collect();
    // Found, so the id parsed: answer it in its canonical form, however it was written.
    let execution_id = Uuid::parse_str(&execution_id).map_or(execution_id, |id| id.to_string());
    Ok(Json(ActivityResponse {
        execution_id,
        activity,
    }))
}
