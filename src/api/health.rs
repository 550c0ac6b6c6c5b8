//! Liveness and readiness probes.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::error::ApiError;
use super::openapi::{Internal, Unavailable};
use crate::store::Backend;

/// The process is up.
#[derive(Debug, Serialize, ToSchema)]
pub struct Liveness {
    status: LiveStatus,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LiveStatus {
    Ok,
}

/// The database answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    status: ReadyStatus,
    backend: Backend,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReadyStatus {
    Ready,
}

/// Liveness: answers while the process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    responses((status = 200, description = "The process is up", body = Liveness), Internal),
)]
pub async fn healthz() -> Json<Liveness> {
    Json(Liveness {
        status: LiveStatus::Ok,
    })
}

/// Readiness: answers 200 when the database answers.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, description = "The database answers", body = Readiness),
        Internal, Unavailable,
    ),
)]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Readiness>, ApiError> {
    let store = state.engine.store();
    match store.ping().await {
        Ok(()) => Ok(Json(Readiness {
            status: ReadyStatus::Ready,
            backend: store.backend(),
        })),
        Err(error) => {
            tracing::warn!(error = %error, "readiness check failed");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "The database is not reachable",
            ))
        }
    }
}
