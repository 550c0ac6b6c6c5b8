//! `idempotency-key` handling: a retried request replays the first answer, a key reused for
//! another request is refused, and a key whose first request is still running answers 409.
//! The engine stores the answer in the same transaction as the change it reports, so a
//! request with a key changes state exactly once.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::error::ApiError;
use crate::engine::{Engine, EngineError};
use crate::store::{IdempotencyBegin, IdempotencyClaim};

/// Identifies a POST for idempotency: path with query, and the parsed body (so whitespace
/// and key order do not matter).
pub fn fingerprint(uri: &Uri, body: &Value) -> String {
    let path_and_query = uri
        .path_and_query()
        .map_or(uri.path(), |value| value.as_str());
    let mut hasher = Sha256::new();
    hasher.update(b"POST ");
    hasher.update(path_and_query.as_bytes());
    hasher.update(b"\n");
    hasher.update(body.to_string().as_bytes());
    hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Runs `operation` at most once per key. Without a key it simply runs.
pub async fn run_once<F, Fut>(
    engine: &Arc<Engine>,
    workspace_id: &str,
    key: Option<String>,
    fingerprint: String,
    operation: F,
) -> Result<Response, ApiError>
where
    F: FnOnce(Option<IdempotencyClaim>) -> Fut,
    Fut: Future<Output = Result<Response, ApiError>>,
{
    let Some(key) = key else {
        return operation(None).await;
    };
    match engine
        .begin_idempotent(workspace_id, &key, &fingerprint)
        .await?
    {
        IdempotencyBegin::Claimed(claim) => {
            let result = operation(Some(claim.clone())).await;
            if result.is_err() {
                // Nothing was stored under the key; let a retry run afresh.
                if let Err(error) = engine.release_idempotent(&claim).await {
                    tracing::warn!(error = %error, "could not release idempotency key");
                    tokio::spawn(release_later(engine.clone(), claim));
                }
            }
            result
        }
        IdempotencyBegin::Replay { status, body } => Ok(replay(status, body)),
        IdempotencyBegin::Mismatch => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "This idempotency-key was already used with a different request",
        )),
        IdempotencyBegin::InFlight => Err(ApiError::new(
            StatusCode::CONFLICT,
            "A request with this idempotency-key is still being processed; retry later",
        )),
    }
}

/// Pause between attempts to give up a key while the database is unreachable.
const RELEASE_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Keeps trying to give up the key of a failed request whose release the database did not
/// take (it was unreachable, typically the very outage that failed the request), so that a
/// retry after the outage runs instead of answering 409 until the claim's lease runs out.
///
/// NOTE: safe whatever the failed request did: a release only removes a claim that is still
/// in flight and owned by this request, never a stored answer (a transaction whose commit
/// went through although its answer was lost) or another request's claim.
async fn release_later(engine: Arc<Engine>, claim: IdempotencyClaim) {
    let started = Instant::now();
    while started.elapsed() < engine.idempotency_lease() {
        tokio::time::sleep(RELEASE_RETRY_PAUSE).await;
        match engine.release_idempotent(&claim).await {
            Ok(()) => return,
            Err(EngineError::Unavailable(_)) => {}
            Err(error) => {
                tracing::warn!(error = %error, "could not release idempotency key");
                return;
            }
        }
    }
}

fn replay(status: u16, body: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}
