//! The one error envelope every failing response uses:
//! `{"errorCode": "...", "message": "...", "details": ...}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::{PartialSchema, ToSchema};

use crate::engine::EngineError;
use crate::validation::PayloadErrors;

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

/// The contract's `errorCode`: one per status, so a client can switch on either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    BadRequestError,
    UnauthorizedError,
    ForbiddenError,
    NotFoundError,
    MethodNotAllowedError,
    RequestTimeoutError,
    ConflictError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
    UnprocessableEntityError,
    TooManyRequestsError,
    ServiceUnavailableError,
    InternalServerError,
}

/// The contract's `errorCode` for a status.
pub fn error_code(status: StatusCode) -> ErrorCode {
    match status {
        StatusCode::BAD_REQUEST => ErrorCode::BadRequestError,
        StatusCode::UNAUTHORIZED => ErrorCode::UnauthorizedError,
        StatusCode::FORBIDDEN => ErrorCode::ForbiddenError,
        StatusCode::NOT_FOUND => ErrorCode::NotFoundError,
        StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowedError,
        StatusCode::REQUEST_TIMEOUT => ErrorCode::RequestTimeoutError,
        StatusCode::CONFLICT => ErrorCode::ConflictError,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLargeError,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaTypeError,
        StatusCode::UNPROCESSABLE_ENTITY => ErrorCode::UnprocessableEntityError,
        StatusCode::TOO_MANY_REQUESTS => ErrorCode::TooManyRequestsError,
        StatusCode::SERVICE_UNAVAILABLE => ErrorCode::ServiceUnavailableError,
        status if status.is_client_error() => ErrorCode::BadRequestError,
        _ => ErrorCode::InternalServerError,
    }
}

/// The error envelope every failing response carries.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ErrorEnvelope)]
pub struct Envelope<'a> {
    pub error_code: ErrorCode,
    /// A human-readable explanation.
    pub message: &'a str,
    /// Machine-readable details; present on validation failures only.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = error_details)]
    pub details: Option<&'a Value>,
}

/// `details` of a 400: the payload's problems (a submit) or the definition's (a process PUT).
fn error_details() -> utoipa::openapi::schema::Schema {
    utoipa::openapi::schema::OneOfBuilder::new()
        .item(PayloadErrors::schema())
        .item(DefinitionProblems::schema())
        .build()
        .into()
}

/// `details` of a refused process definition.
#[derive(Debug, Serialize, ToSchema)]
pub struct DefinitionProblems {
    /// Every problem found, one sentence each.
    pub problems: Vec<String>,
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
                    .with_details(json!(DefinitionProblems { problems }))
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
