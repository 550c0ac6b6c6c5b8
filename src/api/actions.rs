//! The public actions of the guide: start a process, read the current step, submit data.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::AppState;
use super::auth::Workspace;
use super::error::ApiError;
use super::extract::{IdempotencyKey, JsonBody};
use super::idempotency;
use crate::engine::{ExecutionView, SUBMIT_RESPONSE, StartCommand, SubmitCommand};
use crate::validation::ExpectedField;

/// `GET /v2/public/actions/{token}` while the execution waits on an External Step.
#[derive(Debug, Serialize)]
pub struct CurrentStepResponse {
    /// The step the execution waits on; `null` once it waits on nothing.
    pub node: Option<NodeResponse>,
    pub execution: ExecutionResponse,
}

/// The External Step an execution waits on.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeResponse {
    #[serde(rename = "type")]
    pub node_type: &'static str,
    pub node_id: String,
    pub submit_url: String,
    pub expected_fields: Vec<ExpectedField>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

/// An execution as Spektr describes it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionResponse {
    pub id: String,
    pub status: &'static str,
    pub token: String,
    /// 1-based position of the current step.
    pub current_step: i32,
    pub parent_id: Option<String>,
    pub error: Option<String>,
    pub min_step: i32,
    pub max_step: i32,
    /// The end step's outcome, once completed at one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

impl From<ExecutionView> for CurrentStepResponse {
    fn from(view: ExecutionView) -> Self {
        let node = view.waiting_step().map(|step| NodeResponse {
            node_type: "externalData",
            node_id: step.id.clone(),
            submit_url: format!("public/actions/{}", view.execution.token),
            expected_fields: step.expected_fields.clone(),
            expires_at: view.execution.deadline_ms,
        });
        let execution = view.execution;
        CurrentStepResponse {
            node,
            execution: ExecutionResponse {
                id: execution.id.to_string(),
                status: execution.status.as_str(),
                token: execution.token,
                current_step: execution.step_index + 1,
                parent_id: None,
                error: None,
                min_step: 1,
                max_step: view.definition.steps.len() as i32,
                outcome: execution.outcome,
            },
        }
    }
}

/// `POST /v2/public/actions/processId/{processId}/workspaceId/{workspaceId}`.
pub async fn start_process(
    State(state): State<AppState>,
    Workspace(workspace_id): Workspace,
    Path((process_id, path_workspace)): Path<(String, String)>,
    IdempotencyKey(key): IdempotencyKey,
    uri: Uri,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    // Another workspace's key learns nothing about this one: same answer as a missing process.
    if path_workspace != workspace_id {
        return Err(ApiError::not_found("Process not found in this workspace"));
    }
    let data = match body.get("data") {
        Some(data) if data.is_object() => data.clone(),
        _ => return Err(ApiError::bad_request("'data' must be a JSON object")),
    };
    let fingerprint = idempotency::fingerprint(&uri, &body);
    let command = StartCommand {
        workspace_id: workspace_id.clone(),
        process_id,
        data,
    };
    idempotency::run_once(
        &state.engine,
        &workspace_id,
        key,
        fingerprint,
        |claim| async {
            let started = state.engine.start(command, claim).await?;
            Ok((StatusCode::CREATED, Json(started)).into_response())
        },
    )
    .await
}

/// `GET /v2/public/actions/{token}`.
pub async fn get_current_step(
    State(state): State<AppState>,
    Workspace(workspace_id): Workspace,
    Path(token): Path<String>,
) -> Result<Json<CurrentStepResponse>, ApiError> {
    let view = state.engine.execution(&workspace_id, &token).await?;
    Ok(Json(view.into()))
}

/// `POST /v3/public/actions/{token}` (and the same on v2).
pub async fn submit_external_data(
    State(state): State<AppState>,
    Workspace(workspace_id): Workspace,
    Path(token): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    IdempotencyKey(key): IdempotencyKey,
    uri: Uri,
    JsonBody(payload): JsonBody,
) -> Result<Response, ApiError> {
    let fingerprint = idempotency::fingerprint(&uri, &payload);
    let filled_by = query
        .get("filledBy")
        .cloned()
        .filter(|value| !value.is_empty());
    if filled_by.as_ref().is_some_and(|value| value.len() > 255) {
        return Err(ApiError::bad_request(
            "'filledBy' must be at most 255 bytes",
        ));
    }
    let command = SubmitCommand {
        workspace_id: workspace_id.clone(),
        token,
        payload,
        filled_by,
    };
    idempotency::run_once(
        &state.engine,
        &workspace_id,
        key,
        fingerprint,
        |claim| async {
            state.engine.submit(command, claim).await?;
            // The same bytes the engine stores for an idempotent replay.
            let headers = [(header::CONTENT_TYPE, "application/json")];
            Ok((StatusCode::OK, headers, SUBMIT_RESPONSE).into_response())
        },
    )
    .await
}
