//! The public actions of the guide: start a process, read the current step, submit data.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use percent_encoding::percent_decode_str;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::auth::Workspace;
use super::error::ApiError;
use super::extract::{IdempotencyKey, JsonBody};
use super::idempotency;
use super::openapi::{
    BadRequest, Conflict, Internal, NotFound, PayloadTooLarge, Unauthorized, Unavailable,
    Unprocessable, UnsupportedMediaType,
};
use crate::engine::model::ExecutionStatus;
use crate::engine::{ExecutionView, SUBMIT_RESPONSE, StartCommand, Started, SubmitCommand};
use crate::validation::ExpectedField;

/// The body of a start.
#[derive(Debug, ToSchema)]
#[schema(example = json!({"data": {"reference": "customer-123"}}))]
#[allow(dead_code)] // Parsed as JSON by the engine; this type documents the shape.
pub struct StartRequest {
    data: StartData,
}

/// The customer: `reference` names it; every other key is stored as one of its fields
/// (top-level merge, `null`s ignored).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct StartData {
    /// Your id of the customer: one reference is one customer (one `spektrId`) per workspace.
    /// Non-empty after trimming, at most 255 bytes.
    #[schema(min_length = 1, max_length = 255, pattern = r"\S")]
    reference: String,
}

/// The answer of a successful submit.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)] // Documents `SUBMIT_RESPONSE`; a test checks that the two agree.
pub struct SubmitResponse {
    status: SubmitStatus,
}

/// A submit that answers at all was accepted completely.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)] // See `SubmitResponse`.
#[serde(rename_all = "lowercase")]
pub enum SubmitStatus {
    Completed,
}

/// The step an execution waits on, and where the execution is.
#[derive(Debug, Serialize, ToSchema)]
pub struct CurrentStepResponse {
    /// The step the execution waits on; `null` once it waits on nothing.
    pub node: Option<NodeResponse>,
    pub execution: ExecutionResponse,
}

/// The External Step an execution waits on.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeResponse {
    #[serde(rename = "type")]
    pub node_type: NodeType,
    /// The step's id in the process definition.
    pub node_id: String,
    /// Where to submit, relative to the API's version prefix.
    pub submit_url: String,
    /// The payload contract.
    pub expected_fields: Vec<ExpectedField>,
    /// The step's deadline in Unix ms; present only when the step has a timeout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

/// The only kind of step an execution can be seen waiting on.
#[derive(Debug, Serialize, ToSchema)]
pub enum NodeType {
    #[serde(rename = "externalData")]
    ExternalData,
}

/// An execution as Spektr describes it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionResponse {
    pub id: uuid::Uuid,
    /// `pending` while waiting on an External Step, else `completed`.
    pub status: ExecutionStatus,
    pub token: String,
    /// 1-based position of the current step.
    #[schema(minimum = 1)]
    pub current_step: i32,
    /// Always `null`: executions have no parent here.
    pub parent_id: Option<String>,
    /// Always `null`: no step fails here.
    pub error: Option<String>,
    #[schema(minimum = 1, maximum = 1)]
    pub min_step: i32,
    /// The number of steps of the process.
    #[schema(minimum = 1)]
    pub max_step: i32,
    /// The end step's outcome once completed at one; `null` while waiting and after running
    /// past the last step.
    pub outcome: Option<String>,
}

impl From<ExecutionView> for CurrentStepResponse {
    fn from(view: ExecutionView) -> Self {
        let node = view.waiting_step().map(|step| NodeResponse {
            node_type: NodeType::ExternalData,
            node_id: step.id.clone(),
            submit_url: format!("public/actions/{}", view.execution.token),
            expected_fields: step.expected_fields.clone(),
            expires_at: view.execution.deadline_ms,
        });
        let execution = view.execution;
        CurrentStepResponse {
            node,
            execution: ExecutionResponse {
                id: execution.id,
                status: execution.status,
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

/// Start an onboarding process for a customer.
///
/// One `data.reference` is one customer per workspace: the same `spektrId` every time. The
/// answer comes once the execution can take a submission.
#[utoipa::path(
    post,
    path = "/v2/public/actions/processId/{processId}/workspaceId/{workspaceId}",
    tag = "actions",
    params(
        ("processId" = String, Path, description = "The process to start",
         pattern = r"^[A-Za-z0-9._-]{1,64}$"),
        ("workspaceId" = String, Path, description = "The API key's workspace (another answers 404)",
         pattern = r"^[A-Za-z0-9._-]{1,64}$"),
        ("idempotency-key" = Option<String>, Header, nullable = false, pattern = r"^[!-~]{1,255}$",
         description = "Retries with the same key and request replay the first answer (24 h)"),
        ("x-spektr-block-until-ready" = Option<String>, Header, nullable = false,
         description = "Accepted for compatibility; every answer already waits until the execution is ready"),
    ),
    request_body(content = StartRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Started; store the token", body = Started,
         headers(("idempotent-replayed" = bool, description = "Present (true) on a replayed answer")),
         links(
            ("CurrentStep" = (operation_id = "get_current_step",
                              parameters(("token" = "$response.body#/token")))),
            ("Submit" = (operation_id = "submit_external_data_v3",
                         parameters(("token" = "$response.body#/token")))),
            ("Customer" = (operation_id = "get_customer",
                           parameters(("workspaceId" = "$request.path.workspaceId"),
                                      ("spektrId" = "$response.body#/spektrId")))),
         )),
        BadRequest, Unauthorized, NotFound, Conflict, PayloadTooLarge, UnsupportedMediaType,
        Unprocessable, Internal, Unavailable,
    ),
    security(("apiKey" = []), ("apiKeyBearer" = [])),
)]
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

/// The step an execution waits on, and where the execution is.
///
/// `node` is the External Step while the execution waits on one, else `null`.
#[utoipa::path(
    get,
    path = "/v2/public/actions/{token}",
    tag = "actions",
    params(("token" = String, Path, description = "The token the start returned")),
    responses(
        (status = 200, description = "The current step", body = CurrentStepResponse),
        BadRequest, Unauthorized, NotFound, Internal, Unavailable,
    ),
    security(("apiKey" = []), ("apiKeyBearer" = [])),
)]
pub async fn get_current_step(
    State(state): State<AppState>,
    Workspace(workspace_id): Workspace,
    Path(token): Path<String>,
) -> Result<Json<CurrentStepResponse>, ApiError> {
    let view = state.engine.execution(&workspace_id, &token).await?;
    Ok(Json(view.into()))
}

/// A submit handler per version: the guide's `submitUrl` carries no version, so v2 and v3
/// answer the same.
macro_rules! submit_handler {
    ($name:ident, $path:tt) => {
        /// Submit the External Step's data.
        ///
        /// The payload's top-level keys are the expected fields' `spektrDataField`s; unknown
        /// keys are ignored. All problems are reported at once in `details`.
        #[utoipa::path(
            post,
            path = $path,
            tag = "actions",
            params(
                ("token" = String, Path, description = "The token the start returned"),
                ("filledBy" = Option<String>, Query, max_length = 255,
                 description = "Who filled the data in (at most 255 bytes), kept in the activity entry"),
                ("idempotency-key" = Option<String>, Header, nullable = false, pattern = r"^[!-~]{1,255}$",
                 description = "Retries with the same key and request replay the first answer (24 h)"),
            ),
            request_body(content = HashMap<String, serde_json::Value>, content_type = "application/json",
                         description = "The payload: one key per expected field",
                         example = json!({"company_name": "External Company Ltd",
                                          "country_of_incorporation": "RO"})),
            responses(
                (status = 200, description = "Accepted and stored; the process moved on",
                 body = SubmitResponse,
                 headers(("idempotent-replayed" = bool, description = "Present (true) on a replayed answer"))),
                BadRequest, Unauthorized, NotFound, Conflict, PayloadTooLarge,
                UnsupportedMediaType, Unprocessable, Internal, Unavailable,
            ),
            security(("apiKey" = []), ("apiKeyBearer" = [])),
        )]
        pub async fn $name(
            state: State<AppState>,
            workspace: Workspace,
            token: Path<String>,
            query: Query<HashMap<String, String>>,
            key: IdempotencyKey,
            uri: Uri,
            payload: JsonBody,
        ) -> Result<Response, ApiError> {
            submit_external_data(state, workspace, token, query, key, uri, payload).await
        }
    };
}

submit_handler!(submit_external_data_v3, "/v3/public/actions/{token}");
submit_handler!(submit_external_data_v2, "/v2/public/actions/{token}");

async fn submit_external_data(
    State(state): State<AppState>,
    Workspace(workspace_id): Workspace,
    Path(token): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    IdempotencyKey(key): IdempotencyKey,
    uri: Uri,
    JsonBody(payload): JsonBody,
) -> Result<Response, ApiError> {
    let fingerprint = idempotency::fingerprint(&uri, &payload);
    let filled_by = filled_by(&uri, &query)?;
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

/// The optional `filledBy` query parameter: at most 255 bytes of text without control
/// characters. Its raw form must decode to UTF-8, which the lenient query parser would
/// otherwise replace with U+FFFD.
fn filled_by(uri: &Uri, query: &HashMap<String, String>) -> Result<Option<String>, ApiError> {
    let undecodable = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.strip_prefix("filledBy="))
        .any(|raw| percent_decode_str(raw).decode_utf8().is_err());
    let Some(value) = query.get("filledBy").filter(|value| !value.is_empty()) else {
        return Ok(None);
    };
    if undecodable || value.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "'filledBy' must be UTF-8 text without control characters",
        ));
    }
    if value.len() > 255 {
        return Err(ApiError::bad_request(
            "'filledBy' must be at most 255 bytes",
        ));
    }
    Ok(Some(value.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_submit_answer_is_the_one_sent() {
        let documented = SubmitResponse {
            status: SubmitStatus::Completed,
        };

        assert_eq!(serde_json::to_string(&documented).unwrap(), SUBMIT_RESPONSE);
    }
}
