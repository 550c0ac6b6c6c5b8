//! The HTTP surface: routes, shared state and the layers every request passes through.

mod actions;
mod admin;
mod auth;
pub mod error;
mod events;
mod extract;
mod health;
mod idempotency;
pub mod metrics;
mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::engine::Engine;
use error::{ApiError, envelope};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    /// `None` disables the admin API.
    pub admin_token: Option<Arc<str>>,
    /// `None` disables `/metrics`.
    pub metrics: Option<Arc<metrics::MetricsEndpoint>>,
}

/// Limits applied to every request.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The complete router with its layers.
pub fn router(state: AppState, limits: HttpLimits) -> Router {
    let public = Router::new()
        .route(
            "/v2/public/actions/processId/{process_id}/workspaceId/{workspace_id}",
            post(actions::start_process),
        )
        .route(
            "/v2/public/actions/{token}",
            get(actions::get_current_step).post(actions::submit_external_data),
        )
        .route(
            "/v3/public/actions/{token}",
            post(actions::submit_external_data),
        )
        .route("/v2/public/events", get(events::list_events))
        .route("/v2/public/executions", get(events::find_executions));
    let admin = Router::new()
        .route(
            "/admin/v1/workspaces/{workspace_id}",
            put(admin::put_workspace),
        )
        .route(
            "/admin/v1/workspaces/{workspace_id}/api-keys",
            post(admin::create_api_key),
        )
        .route(
            "/admin/v1/workspaces/{workspace_id}/processes/{process_id}",
            put(admin::put_process),
        )
        .route(
            "/admin/v1/workspaces/{workspace_id}/customers/{spektr_id}",
            get(admin::get_customer),
        )
        .route(
            "/admin/v1/workspaces/{workspace_id}/executions/{execution_id}/activity",
            get(admin::get_activity),
        )
        .route(
            "/admin/v1/workspaces/{workspace_id}/webhooks",
            post(webhooks::create_webhook).get(webhooks::list_webhooks),
        )
        .route(
            "/admin/v1/workspaces/{workspace_id}/webhooks/{webhook_id}",
            get(webhooks::get_webhook)
                .patch(webhooks::update_webhook)
                .delete(webhooks::delete_webhook),
        )
        .route(
            "/admin/v1/workspaces/{workspace_id}/webhooks/{webhook_id}/rotate-secret",
            post(webhooks::rotate_webhook_secret),
        )
        .route(
            "/admin/v1/workspaces/{workspace_id}/webhooks/{webhook_id}/deliveries",
            get(webhooks::list_deliveries),
        )
        .route(
            "/admin/v1/workspaces/{workspace_id}/events/{event_id}/redeliver",
            post(webhooks::redeliver_event),
        );
    let layers = ServiceBuilder::new()
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
            let request_id = request
                .headers()
                .get(REQUEST_ID)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default();
            tracing::info_span!("request", method = %request.method(), uri = %request.uri().path(),
                                request_id = %request_id)
        }))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("handler panicked");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")
                .into_response()
        }))
        .layer(middleware::from_fn(ensure_envelope))
        .layer(middleware::from_fn(refuse_nul_in_uri))
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, limits.request_timeout))
        .layer(DefaultBodyLimit::max(limits.max_body_bytes));
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .merge(public)
        .merge(admin)
        .merge(metrics::routes(&state))
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(layers)
        .layer(middleware::from_fn(metrics::track_http))
}

/// A percent-encoded NUL names nothing that can exist (ids, tokens and stored text never hold
/// one), so such paths are unknown and such queries invalid, before any database sees them.
async fn refuse_nul_in_uri(request: Request, next: Next) -> Response {
    if request.uri().path().contains("%00") {
        return ApiError::not_found("No such route").into_response();
    }
    if request
        .uri()
        .query()
        .is_some_and(|query| query.contains("%00"))
    {
        return ApiError::bad_request("Query parameters must not contain the NUL character")
            .into_response();
    }
    next.run(request).await
}

async fn unknown_route() -> ApiError {
    ApiError::not_found("No such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "Method not allowed on this route",
    )
}

/// Rewrites any error response that is not already JSON (a framework rejection, a timeout)
/// into the error envelope, keeping its status and using its text as the message.
async fn ensure_envelope(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let message = match text.trim() {
        "" => status.canonical_reason().unwrap_or("Error").to_owned(),
        text => text.to_owned(),
    };
    let body = serde_json::to_string(&envelope(status, &message, None)).unwrap_or_default();
    parts.headers.insert(
        header::CONTENT_TYPE,
        "application/json".parse().expect("static"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}
