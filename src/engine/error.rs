//! Engine failures, in domain terms; the API maps each to a status and the error envelope.

use crate::store::StoreError;
use crate::validation::PayloadErrors;

/// Why an engine operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The thing named does not exist in the caller's workspace.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A request value is unusable; the message says which and why.
    #[error("{0}")]
    InvalidInput(String),
    /// A process definition has problems, each named.
    #[error("invalid process definition")]
    InvalidDefinition(Vec<String>),
    /// A payload does not match the step's expected fields.
    #[error("external data payload validation failed")]
    PayloadInvalid(PayloadErrors),
    /// The execution is not waiting on an External Step.
    #[error("the process is not currently waiting on an External Step")]
    NotWaiting,
    /// The step's deadline passed; the step has been timed out.
    #[error("the External Step timeout has already elapsed")]
    TimeoutElapsed,
    /// A concurrent request holds or changed what this one needed.
    #[error("conflict: {0}")]
    Conflict(&'static str),
    /// The database is unreachable.
    #[error("database unavailable")]
    Unavailable(#[source] StoreError),
    /// Anything else: a bug or a database failure.
    #[error("internal error")]
    Internal(#[source] StoreError),
}

impl From<StoreError> for EngineError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => EngineError::NotFound("record"),
            StoreError::Conflict(what) => EngineError::Conflict(what),
            StoreError::Unavailable(_) => EngineError::Unavailable(error),
            StoreError::Backend(_) | StoreError::Corrupt(_) => EngineError::Internal(error),
        }
    }
}
