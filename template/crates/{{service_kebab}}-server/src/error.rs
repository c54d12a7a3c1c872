{%- if is_init -%}
//! Maps the service's domain errors to gRPC status codes, in this one place: a handler returns
//! them with `?`.
{%- else -%}
//! Maps the example flow's domain errors to gRPC status codes, in this one place: the unary
//! handler returns them with `?`, the streaming one sends them as the stream's last item.
{%- endif %}

/// Why processing a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The caller sent an empty id.
    #[error("request id must not be empty")]
    EmptyId,
{%- unless is_init %}
    /// The caller asked a stream for no results, or for more than one call may stream.
    #[error("count must be from 1 to {max}, got {count}")]
    InvalidCount {
        /// The count asked for.
        count: u32,
        /// The largest count allowed.
        max: u32,
    },
    /// The caller asked for a longer pause between two results than a stream may make.
    #[error("interval_ms must be at most {max}, got {interval_ms}")]
    InvalidInterval {
        /// The interval asked for, in milliseconds.
        interval_ms: u32,
        /// The longest interval allowed, in milliseconds.
        max: u32,
    },
{%- endunless %}
    /// The (simulated) database failed.
    #[error("database query failed: {0}")]
    Database(String),
}

impl ProcessError {
    /// The `exception.type` recorded on the span.
    pub fn kind(&self) -> &'static str {
        match self {
{%- if is_init %}
            Self::EmptyId => "InvalidRequest",
{%- else %}
            Self::EmptyId | Self::InvalidCount { .. } | Self::InvalidInterval { .. } => {
                "InvalidRequest"
            }
{%- endif %}
            Self::Database(_) => "DatabaseError",
        }
    }
}

impl From<ProcessError> for tonic::Status {
    fn from(error: ProcessError) -> Self {
        match error {
{%- if is_init %}
            ProcessError::EmptyId => Self::invalid_argument(error.to_string()),
{%- else %}
            ProcessError::EmptyId
            | ProcessError::InvalidCount { .. }
            | ProcessError::InvalidInterval { .. } => Self::invalid_argument(error.to_string()),
{%- endif %}
            ProcessError::Database(_) => Self::unavailable(error.to_string()),
        }
    }
}
