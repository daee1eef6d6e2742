//! The engine's error type.
//!
//! Every error carries a [`ErrorKind`] (what went wrong), an [`Origin`] (whose fault it is:
//! the user's configuration, an external system, or our own code) and whether retrying the
//! operation can help. The runtime uses `retryable` to decide between a restart with backoff
//! and failing the pipeline at once. Messages are scrubbed of secrets when displayed
//! (see [`crate::redact`]).

use std::fmt;

/// Result alias used across the engine and connectors.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The configuration is invalid.
    Config,
    /// An external system could not be reached or refused us.
    Connect,
    /// Local I/O failed (state dir, topic log files).
    Io,
    /// Data could not be decoded or encoded.
    Data,
    /// Persisted state is inconsistent (e.g. a consumer offset beyond the log end).
    State,
    /// A bug or an unexpected condition in our own code.
    Internal,
}

/// Whose fault an error is: shown with a pipeline's last error in `status`, and the exit
/// code of `run` when a pipeline fails (see [`Origin::exit_code`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// The user must change something (config, permissions).
    User,
    /// A system outside the process failed.
    External,
    /// Our code failed.
    Internal,
}

impl Origin {
    /// The exit code of `rivven-connect run` when a pipeline failed for this reason: 2 for
    /// the user's (as for an invalid configuration), 1 for an external system's, 3 for our
    /// own.
    pub fn exit_code(self) -> u8 {
        match self {
            Origin::User => 2,
            Origin::External => 1,
            Origin::Internal => 3,
        }
    }
}

/// An engine error: kind, origin, retry hint, message and optional cause.
#[derive(Debug, thiserror::Error)]
pub struct Error {
    kind: ErrorKind,
    origin: Origin,
    retryable: bool,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    /// A new error with explicit classification.
    pub fn new(
        kind: ErrorKind,
        origin: Origin,
        retryable: bool,
        message: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            origin,
            retryable,
            message: message.into(),
            source: None,
        }
    }

    /// A configuration error (user's, not retryable).
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, Origin::User, false, message)
    }

    /// A connectivity error (external, retryable).
    pub fn connect(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Connect, Origin::External, true, message)
    }

    /// A local I/O error (external, retryable).
    pub fn io(context: impl Into<String>, err: std::io::Error) -> Self {
        let retryable = !matches!(
            err.kind(),
            std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::BrokenPipe
        );
        Self::new(
            ErrorKind::Io,
            Origin::External,
            retryable,
            format!("{}: {err}", context.into()),
        )
        .with_source(err)
    }

    /// A data encoding/decoding error (not retryable: the same data fails again).
    pub fn data(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Data, Origin::External, false, message)
    }

    /// Inconsistent persisted state (not retryable).
    pub fn state(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::State, Origin::Internal, false, message)
    }

    /// A bug or unexpected condition (not retryable).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, Origin::Internal, false, message)
    }

    /// Attach the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Override the retry hint.
    pub fn retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// Prefix the message with context, keeping the classification.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whose fault it is.
    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// Whether retrying can help.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::redact::scrub(&self.message))
    }
}

impl From<arrow::error::ArrowError> for Error {
    fn from(err: arrow::error::ArrowError) -> Self {
        Error::data(err.to_string()).with_source(err)
    }
}
