//! Maps the service's domain errors to gRPC status codes, in this one place: a handler returns
//! them with `?`.

/// Why processing a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The caller sent an empty id.
    #[error("request id must not be empty")]
    EmptyId,
    /// The (simulated) database failed.
    #[error("database query failed: {0}")]
    Database(String),
}

impl ProcessError {
    /// The `exception.type` recorded on the span.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::EmptyId => "InvalidRequest",
            Self::Database(_) => "DatabaseError",
        }
    }
}

impl From<ProcessError> for tonic::Status {
    fn from(error: ProcessError) -> Self {
        match error {
            ProcessError::EmptyId => Self::invalid_argument(error.to_string()),
            ProcessError::Database(_) => Self::unavailable(error.to_string()),
        }
    }
}
