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
mod openapi;
mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderName, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

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
    let (routes, openapi) = routes().split_for_parts();
    // No validator: Swagger UI would otherwise send the document's address to an outside
    // service from every browser that opens the page under a non-local host name.
    let docs = SwaggerUi::new("/docs")
        .url("/openapi.json", openapi::finish(openapi))
        .config(utoipa_swagger_ui::Config::default().validator_url("none"));
    let layers = ServiceBuilder::new()
        .layer(middleware::from_fn(drop_unusable_request_id))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request| {
                let request_id = request
                    .headers()
                    .get(REQUEST_ID)
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or_default();
                // The route template, not the path: paths carry execution tokens.
                let route = request
                    .extensions()
                    .get::<MatchedPath>()
                    .map_or("(unmatched)", MatchedPath::as_str);
                tracing::info_span!("request", method = %request.method(), route = %route,
                                request_id = %request_id)
            }),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("handler panicked");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")
                .into_response()
        }))
        .layer(middleware::from_fn(ensure_envelope))
        .layer(middleware::from_fn(check_uri))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            limits.request_timeout,
        ))
        // Refuses a declared Content-Length over the limit before waiting for the body.
        .layer(RequestBodyLimitLayer::new(limits.max_body_bytes))
        .layer(DefaultBodyLimit::max(limits.max_body_bytes));
    routes
        .merge(docs)
        .merge(metrics::routes(&state))
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(layers)
        .layer(middleware::from_fn(metrics::track_http))
}

/// Every route of the API with its OpenAPI description: `routes!` registers each handler at
/// the path its `#[utoipa::path]` documents, so the two cannot differ.
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(actions::start_process))
        .routes(routes!(
            actions::get_current_step,
            actions::submit_external_data_v2
        ))
        .routes(routes!(actions::submit_external_data_v3))
        .routes(routes!(events::list_events))
        .routes(routes!(events::find_executions))
        .routes(routes!(admin::put_workspace))
        .routes(routes!(admin::create_api_key, admin::list_api_keys))
        .routes(routes!(admin::revoke_api_key))
        .routes(routes!(admin::put_process))
        .routes(routes!(admin::get_customer))
        .routes(routes!(admin::get_activity))
        .routes(routes!(webhooks::create_webhook, webhooks::list_webhooks))
        .routes(routes!(
            webhooks::get_webhook,
            webhooks::update_webhook,
            webhooks::delete_webhook
        ))
        .routes(routes!(webhooks::rotate_webhook_secret))
        .routes(routes!(webhooks::list_deliveries))
        .routes(routes!(webhooks::redeliver_event))
}

/// A client's own `x-request-id` is kept when it is a plain token (at most 128 of
/// `A-Z a-z 0-9 . _ : -`); anything else, or several, is replaced by a generated one, so
/// that a client cannot write arbitrary text into log lines and responses.
async fn drop_unusable_request_id(mut request: Request, next: Next) -> Response {
    let headers = request.headers();
    let mut values = headers.get_all(REQUEST_ID).iter();
    let usable = match (values.next(), values.next()) {
        (None, _) => true,
        (Some(value), None) => {
            (1..=128).contains(&value.len())
                && value.as_bytes().iter().all(|byte| {
                    byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b':' | b'-')
                })
        }
        (Some(_), Some(_)) => false,
    };
    if !usable {
        request.headers_mut().remove(REQUEST_ID);
    }
    next.run(request).await
}

/// A percent-encoded NUL names nothing that can exist (ids, tokens and stored text never hold
/// one), so such paths are unknown and such queries invalid, before any database sees them.
/// A query naming a parameter twice is refused too.
async fn check_uri(request: Request, next: Next) -> Response {
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
    if let Some(name) = request.uri().query().and_then(repeated_parameter) {
        return ApiError::bad_request(format!("Query parameter '{name}' is given more than once"))
            .into_response();
    }
    next.run(request).await
}

/// The first query parameter named twice (`limit=1&limit=2`): which one was meant is unclear.
fn repeated_parameter(query: &str) -> Option<String> {
    let mut seen = std::collections::HashSet::new();
    url::form_urlencoded::parse(query.as_bytes())
        .map(|(name, _)| name)
        .find(|name| !seen.insert(name.clone()))
        .map(|name| name.into_owned())
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
        // The body limit's own words, as the JSON extractor says them.
        _ if status == StatusCode::PAYLOAD_TOO_LARGE => "Request body is too large".to_owned(),
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
