//! The one error envelope every failing response uses:
//! `{"errorCode": "...", "message": "...", "details": ...}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};

use crate::engine::EngineError;

/// An HTTP error in the contract's shape.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    details: Option<Value>,
}

impl ApiError {
    /// An error with a status and a message for the caller.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            details: None,
        }
    }

    /// Adds machine-readable details.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, message)
    }

    /// The status this error answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

/// The contract's `errorCode` for a status.
pub fn error_code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "BAD_REQUEST_ERROR",
        StatusCode::UNAUTHORIZED => "UNAUTHORIZED_ERROR",
        StatusCode::FORBIDDEN => "FORBIDDEN_ERROR",
        StatusCode::NOT_FOUND => "NOT_FOUND_ERROR",
        StatusCode::METHOD_NOT_ALLOWED => "METHOD_NOT_ALLOWED_ERROR",
        StatusCode::REQUEST_TIMEOUT => "REQUEST_TIMEOUT_ERROR",
        StatusCode::CONFLICT => "CONFLICT_ERROR",
        StatusCode::PAYLOAD_TOO_LARGE => "PAYLOAD_TOO_LARGE_ERROR",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "UNSUPPORTED_MEDIA_TYPE_ERROR",
        StatusCode::UNPROCESSABLE_ENTITY => "UNPROCESSABLE_ENTITY_ERROR",
        StatusCode::TOO_MANY_REQUESTS => "TOO_MANY_REQUESTS_ERROR",
        StatusCode::SERVICE_UNAVAILABLE => "SERVICE_UNAVAILABLE_ERROR",
        status if status.is_client_error() => "BAD_REQUEST_ERROR",
        _ => "INTERNAL_SERVER_ERROR",
    }
}

/// The envelope body, with its keys in the contract's order.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope<'a> {
    pub error_code: &'static str,
    pub message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<&'a Value>,
}

/// The envelope for a status, message and optional details.
pub fn envelope<'a>(
    status: StatusCode,
    message: &'a str,
    details: Option<&'a Value>,
) -> Envelope<'a> {
    Envelope {
        error_code: error_code(status),
        message,
        details,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = envelope(self.status, &self.message, self.details.as_ref());
        (self.status, Json(body)).into_response()
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        match error {
            EngineError::NotFound(what) => ApiError::not_found(not_found_message(what)),
            EngineError::InvalidInput(message) => ApiError::bad_request(message),
            EngineError::InvalidDefinition(problems) => {
                ApiError::bad_request("Invalid process definition")
                    .with_details(json!({ "problems": problems }))
            }
            EngineError::PayloadInvalid(errors) => {
                ApiError::bad_request("External data payload validation failed")
                    .with_details(json!(errors))
            }
            EngineError::NotWaiting => {
                ApiError::bad_request("The process is not currently waiting on an External Step")
            }
            EngineError::TimeoutElapsed => {
                ApiError::bad_request("The External Step timeout has already elapsed")
            }
            EngineError::Conflict(what) => {
                tracing::warn!(conflict = what, "request lost a race");
                ApiError::new(
                    StatusCode::CONFLICT,
                    "A concurrent request changed this resource; retry the request",
                )
            }
            EngineError::Unavailable(source) => {
                tracing::error!(error = %source, "database unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The service is temporarily unavailable; retry later",
                )
            }
            EngineError::Internal(source) => {
                tracing::error!(error = %source, "internal error");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")
            }
        }
    }
}

fn not_found_message(what: &str) -> String {
    match what {
        "execution" => "No execution found for this token".to_owned(),
        "process" => "Process not found in this workspace".to_owned(),
        other => {
            let mut text = other.to_owned();
            if let Some(first) = text.get_mut(0..1) {
                first.make_ascii_uppercase();
            }
            format!("{text} not found")
        }
    }
}
