//! Admin routes of event delivery: webhook endpoints, their deliveries, and redelivery.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::auth::Admin;
use super::error::ApiError;
use super::events::{EventType, limit_within};
use super::extract::{JsonBody, json_object};
use super::openapi::{
    BadRequest, Internal, NotFound, PayloadTooLarge, Unauthorized, Unavailable,
    UnsupportedMediaType,
};
use crate::engine::webhooks::NewEndpoint;
use crate::store::{DeliveryRecord, Endpoint, EndpointPatch};

/// A webhook endpoint.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEndpoint {
    id: Uuid,
    url: String,
    description: Option<String>,
    /// The event types delivered; `null` means every type.
    #[schema(value_type = Option<Vec<EventType>>)]
    event_types: Option<Vec<String>>,
    enabled: bool,
    /// Unix ms.
    created_at: i64,
    /// Unix ms.
    updated_at: i64,
    /// The signing secret (`whsec_…`); shown only when created or rotated.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    secret: Option<String>,
}

impl WebhookEndpoint {
    fn new(endpoint: Endpoint, with_secret: bool) -> Self {
        WebhookEndpoint {
            id: endpoint.id,
            url: endpoint.url,
            description: endpoint.description,
            event_types: endpoint.event_types,
            enabled: endpoint.enabled,
            created_at: endpoint.created_at_ms,
            updated_at: endpoint.updated_at_ms,
            secret: with_secret.then_some(endpoint.secret),
        }
    }
}

/// A workspace's endpoints, secrets omitted.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    data: Vec<WebhookEndpoint>,
}

/// The body that registers an endpoint.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)] // Read from the JSON value; this type documents the shape.
pub struct NewWebhook {
    /// An `http` or `https` URL, at most 2048 bytes, allowed by the host lists.
    #[schema(
        max_length = 2048,
        format = "uri",
        example = "http://127.0.0.1:9000/spektr-events"
    )]
    url: String,
    /// The event types to deliver; omitted or `null` means every type, `[]` none.
    event_types: Option<Vec<EventType>>,
    #[schema(max_length = 2048)]
    description: Option<String>,
}

/// The body that changes an endpoint; what is omitted (or `null`, for `url`) stays.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)] // Read from the JSON value; this type documents the shape.
pub struct WebhookPatch {
    #[schema(max_length = 2048, format = "uri")]
    url: Option<String>,
    /// `null` means every type.
    event_types: Option<Vec<EventType>>,
    /// `null` clears it.
    #[schema(max_length = 2048)]
    description: Option<String>,
    #[schema(nullable = false)]
    enabled: Option<bool>,
}

/// A delivery of one event to one endpoint, with every attempt.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    id: Uuid,
    event_id: Uuid,
    #[schema(value_type = EventType)]
    event_type: String,
    #[schema(value_type = DeliveryStatus)]
    status: String,
    /// Unix ms of the next attempt while `pending`.
    next_attempt_at: Option<i64>,
    last_error: Option<String>,
    /// Unix ms.
    created_at: i64,
    attempts: Vec<DeliveryAttempt>,
}

/// Where a delivery is.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // Stored as text; this type documents the values.
pub enum DeliveryStatus {
    Pending,
    Succeeded,
    Failed,
}

/// One request to the endpoint.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryAttempt {
    /// 1 for the first.
    attempt: i32,
    /// Unix ms.
    started_at: i64,
    duration_ms: i64,
    /// The endpoint's HTTP status; `null` when no answer came.
    response_status: Option<u16>,
    /// Why the attempt failed, if it did.
    error: Option<String>,
}

impl From<&DeliveryRecord> for Delivery {
    fn from(delivery: &DeliveryRecord) -> Self {
        Delivery {
            id: delivery.id,
            event_id: delivery.event_id,
            event_type: delivery.event_type.clone(),
            status: delivery.status.clone(),
            next_attempt_at: delivery.next_attempt_at_ms,
            last_error: delivery.last_error.clone(),
            created_at: delivery.created_at_ms,
            attempts: delivery
                .attempts
                .iter()
                .map(|attempt| DeliveryAttempt {
                    attempt: attempt.attempt,
                    started_at: attempt.started_at_ms,
                    duration_ms: attempt.duration_ms,
                    response_status: attempt.response_status,
                    error: attempt.error.clone(),
                })
                .collect(),
        }
    }
}

/// An endpoint's newest deliveries.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    data: Vec<Delivery>,
}

/// How many deliveries a redelivery queued.
#[derive(Debug, Serialize, ToSchema)]
pub struct Redelivered {
    /// One per enabled endpoint that takes the event's type.
    queued: u64,
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

/// Register a webhook endpoint; the answer shows its signing secret.
#[utoipa::path(
    post,
    path = "/admin/v1/workspaces/{workspaceId}/webhooks",
    tag = "webhooks",
    params(("workspaceId" = String, Path)),
    request_body(content = NewWebhook, content_type = "application/json"),
    responses(
        (status = 201, description = "Registered", body = WebhookEndpoint, links(
            ("Get" = (operation_id = "get_webhook",
                parameters(("workspaceId" = "$request.path.workspaceId"),
                           ("webhookId" = "$response.body#/id")))),
            ("Update" = (operation_id = "update_webhook",
                parameters(("workspaceId" = "$request.path.workspaceId"),
                           ("webhookId" = "$response.body#/id")))),
            ("Rotate" = (operation_id = "rotate_webhook_secret",
                parameters(("workspaceId" = "$request.path.workspaceId"),
                           ("webhookId" = "$response.body#/id")))),
            ("Deliveries" = (operation_id = "list_deliveries",
                parameters(("workspaceId" = "$request.path.workspaceId"),
                           ("webhookId" = "$response.body#/id")))),
            ("Delete" = (operation_id = "delete_webhook",
                parameters(("workspaceId" = "$request.path.workspaceId"),
                           ("webhookId" = "$response.body#/id")))),
        )),
        BadRequest, Unauthorized, NotFound, PayloadTooLarge, UnsupportedMediaType, Internal,
        Unavailable,
    ),
    security(("adminToken" = [])),
)]
pub async fn create_webhook(
    State(state): State<AppState>,
    _: Admin,
    Path(workspace_id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<WebhookEndpoint>), ApiError> {
    let object = json_object(&body, &["url", "eventTypes", "description"])?;
    let url = optional_string(&object, "url")?
        .ok_or_else(|| ApiError::bad_request("'url' is required"))?;
    let new = NewEndpoint {
        url,
        event_types: event_types(object.get("eventTypes"))?,
        description: optional_string(&object, "description")?,
    };
    let endpoint = state.engine.create_endpoint(&workspace_id, new).await?;
    Ok((
        StatusCode::CREATED,
        Json(WebhookEndpoint::new(endpoint, true)),
    ))
}

/// A workspace's webhook endpoints.
#[utoipa::path(
    get,
    path = "/admin/v1/workspaces/{workspaceId}/webhooks",
    tag = "webhooks",
    params(("workspaceId" = String, Path)),
    responses(
        (status = 200, description = "The endpoints, secrets omitted", body = WebhookList),
        BadRequest, Unauthorized, NotFound, Internal, Unavailable,
    ),
    security(("adminToken" = [])),
)]
pub async fn list_webhooks(
    State(state): State<AppState>,
    _: Admin,
    Path(workspace_id): Path<String>,
) -> Result<Json<WebhookList>, ApiError> {
    let endpoints = state.engine.list_endpoints(&workspace_id).await?;
    let data = endpoints
        .into_iter()
        .map(|endpoint| WebhookEndpoint::new(endpoint, false))
        .collect();
    Ok(Json(WebhookList { data }))
}

/// One webhook endpoint.
#[utoipa::path(
    get,
    path = "/admin/v1/workspaces/{workspaceId}/webhooks/{webhookId}",
    tag = "webhooks",
    params(("workspaceId" = String, Path), ("webhookId" = String, Path, description = "A UUID")),
    responses(
        (status = 200, description = "The endpoint, secret omitted", body = WebhookEndpoint),
        BadRequest, Unauthorized, NotFound, Internal, Unavailable,
    ),
    security(("adminToken" = [])),
)]
pub async fn get_webhook(
    State(state): State<AppState>,
    _: Admin,
    Path((workspace_id, id)): Path<(String, String)>,
) -> Result<Json<WebhookEndpoint>, ApiError> {
    let endpoint = state.engine.endpoint(&workspace_id, &id).await?;
    Ok(Json(WebhookEndpoint::new(endpoint, false)))
}

/// Change a webhook endpoint.
#[utoipa::path(
    patch,
    path = "/admin/v1/workspaces/{workspaceId}/webhooks/{webhookId}",
    tag = "webhooks",
    params(("workspaceId" = String, Path), ("webhookId" = String, Path, description = "A UUID")),
    request_body(content = WebhookPatch, content_type = "application/json"),
    responses(
        (status = 200, description = "The changed endpoint, secret omitted", body = WebhookEndpoint),
        BadRequest, Unauthorized, NotFound, PayloadTooLarge, UnsupportedMediaType, Internal,
        Unavailable,
    ),
    security(("adminToken" = [])),
)]
pub async fn update_webhook(
    State(state): State<AppState>,
    _: Admin,
    Path((workspace_id, id)): Path<(String, String)>,
    JsonBody(body): JsonBody,
) -> Result<Json<WebhookEndpoint>, ApiError> {
    let object = json_object(&body, &["url", "eventTypes", "description", "enabled"])?;
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
    Ok(Json(WebhookEndpoint::new(endpoint, false)))
}

/// Remove a webhook endpoint.
#[utoipa::path(
    delete,
    path = "/admin/v1/workspaces/{workspaceId}/webhooks/{webhookId}",
    tag = "webhooks",
    params(("workspaceId" = String, Path), ("webhookId" = String, Path, description = "A UUID")),
    responses(
        (status = 204, description = "Removed"),
        BadRequest, Unauthorized, NotFound, Internal, Unavailable,
    ),
    security(("adminToken" = [])),
)]
pub async fn delete_webhook(
    State(state): State<AppState>,
    _: Admin,
    Path((workspace_id, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.engine.delete_endpoint(&workspace_id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Give a webhook endpoint a new signing secret; the answer shows it.
#[utoipa::path(
    post,
    path = "/admin/v1/workspaces/{workspaceId}/webhooks/{webhookId}/rotate-secret",
    tag = "webhooks",
    params(("workspaceId" = String, Path), ("webhookId" = String, Path, description = "A UUID")),
    responses(
        (status = 200, description = "The endpoint with its new secret", body = WebhookEndpoint),
        BadRequest, Unauthorized, NotFound, Internal, Unavailable,
    ),
    security(("adminToken" = [])),
)]
pub async fn rotate_webhook_secret(
    State(state): State<AppState>,
    _: Admin,
    Path((workspace_id, id)): Path<(String, String)>,
) -> Result<Json<WebhookEndpoint>, ApiError> {
    let endpoint = state
        .engine
        .rotate_endpoint_secret(&workspace_id, &id)
        .await?;
    Ok(Json(WebhookEndpoint::new(endpoint, true)))
}

/// An endpoint's newest deliveries, each with every attempt.
#[utoipa::path(
    get,
    path = "/admin/v1/workspaces/{workspaceId}/webhooks/{webhookId}/deliveries",
    tag = "webhooks",
    params(
        ("workspaceId" = String, Path),
        ("webhookId" = String, Path, description = "A UUID"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "At most this many, default 50"),
    ),
    responses(
        (status = 200, description = "Newest first", body = DeliveryList),
        BadRequest, Unauthorized, NotFound, Internal, Unavailable,
    ),
    security(("adminToken" = [])),
)]
pub async fn list_deliveries(
    State(state): State<AppState>,
    _: Admin,
    Path((workspace_id, id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<DeliveryList>, ApiError> {
    let limit = limit_within(&query, 50, 500)?;
    let deliveries = state.engine.deliveries(&workspace_id, &id, limit).await?;
    let data = deliveries.iter().map(Delivery::from).collect();
    Ok(Json(DeliveryList { data }))
}

/// Deliver an event again to every enabled endpoint that takes its type.
#[utoipa::path(
    post,
    path = "/admin/v1/workspaces/{workspaceId}/events/{eventId}/redeliver",
    tag = "webhooks",
    params(("workspaceId" = String, Path), ("eventId" = String, Path, description = "The event's `id` (a UUID)")),
    responses(
        (status = 202, description = "Queued", body = Redelivered),
        BadRequest, Unauthorized, NotFound, Internal, Unavailable,
    ),
    security(("adminToken" = [])),
)]
pub async fn redeliver_event(
    State(state): State<AppState>,
    _: Admin,
    Path((workspace_id, event_id)): Path<(String, String)>,
) -> Result<(StatusCode, Json<Redelivered>), ApiError> {
    let queued = state.engine.redeliver(&workspace_id, &event_id).await?;
    Ok((StatusCode::ACCEPTED, Json(Redelivered { queued })))
}
