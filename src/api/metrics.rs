//! `GET /metrics` in the Prometheus text format, and the layer that counts and times every
//! HTTP request by its route template.

use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::ApiError;
use crate::monitoring::{self, Scrape};

/// What `/metrics` needs: the server's figures and, if set, the token a scraper must send.
pub struct MetricsEndpoint {
    pub scrape: Scrape,
    pub token: Option<String>,
}

/// The `/metrics` route, or no route when metrics are disabled (then it is an unknown path).
pub fn routes(state: &AppState) -> Router<AppState> {
    match state.metrics {
        Some(_) => Router::new().route("/metrics", get(render)),
        None => Router::new(),
    }
}

async fn render(State(state): State<AppState>, parts: Parts) -> Result<Response, ApiError> {
    let Some(endpoint) = state.metrics.as_deref() else {
        return Err(ApiError::not_found("No such route"));
    };
    if let Some(expected) = endpoint.token.as_deref() {
        let given = super::auth::bearer(&parts)?.unwrap_or_default();
        if !bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
            return Err(ApiError::unauthorized(
                "Missing or invalid metrics token: send 'Authorization: Bearer <SPEKTR_METRICS_TOKEN>'",
            ));
        }
    }
    let text = endpoint.scrape.render().await;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// Counts and times a request under its route template (`/v2/public/actions/{token}`), never
/// its path, so tokens stay out of the labels and the label values stay few.
pub async fn track_http(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned());
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    monitoring::http_request(
        route.as_deref().unwrap_or(monitoring::UNMATCHED_ROUTE),
        method,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// The method as a label; methods a client makes up are one value, `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_methods_share_one_label() {
        let made_up = Method::from_bytes(b"BREW").expect("a valid token");

        assert_eq!(method_label(&Method::PATCH), "PATCH");
        assert_eq!(method_label(&made_up), "other");
        assert_eq!(method_label(&Method::CONNECT), "other");
    }
}
