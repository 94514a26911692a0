//! Handlers: user code that processes one [`Delivery`] at a time.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;

use futures::future::BoxFuture;

use crate::delivery::Delivery;
use crate::error::BoxError;

/// How a handler failure should be treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Trying again may succeed (a dependency was down, a lock timed out).
    /// The record is retried inside its key lane with backoff.
    Retryable,
    /// Trying again cannot succeed (bad data, a rule was violated). The
    /// record is not retried.
    Permanent,
    /// The payload could not be decoded. Permanent.
    Decode,
    /// The handler panicked. Permanent.
    Panic,
    /// The handler did not finish within its per-attempt timeout. Retryable.
    Timeout,
}

impl ErrorKind {
    /// Whether a record failing with this kind is retried.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Retryable | ErrorKind::Timeout)
    }

    /// Stable lower-case name, used in headers and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Retryable => "retryable",
            ErrorKind::Permanent => "permanent",
            ErrorKind::Decode => "decode",
            ErrorKind::Panic => "panic",
            ErrorKind::Timeout => "timeout",
        }
    }
}

/// A handler's failure: a kind that decides retry or not, and a message.
#[derive(Debug)]
pub struct HandlerError {
    kind: ErrorKind,
    message: Cow<'static, str>,
    source: Option<BoxError>,
}

impl HandlerError {
    /// A failure that may succeed when tried again.
    pub fn retryable(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Retryable, message)
    }

    /// A failure that cannot succeed when tried again.
    pub fn permanent(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Permanent, message)
    }

    /// A failure of the given kind.
    pub fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        HandlerError {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the underlying error.
    #[must_use]
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The same error with another kind (used by classifiers).
    #[must_use]
    pub fn with_kind(mut self, kind: ErrorKind) -> Self {
        self.kind = kind;
        self
    }

    /// The kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the record will be retried.
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} handler error: {}", self.kind.as_str(), self.message)
    }
}

impl std::error::Error for HandlerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// What a handler returns.
pub type HandlerResult = Result<(), HandlerError>;

/// Processes deliveries of one subscription.
///
/// Concurrency contract: the bus calls `handle` for at most one record per
/// key (per lane) at a time, and for many keys concurrently, so an
/// implementation must be `Send + Sync`. A returned `Ok` acknowledges the
/// record; an `Err` is retried or dead-lettered according to its kind. A
/// panic is caught and treated as an [`ErrorKind::Panic`] failure.
///
/// A handler runs on the async runtime and must not block it: the bus runs
/// the records of several keys one after another on one task as long as
/// their handlers finish without waiting, and hands the others to a new task
/// as soon as one waits. Blocking calls (synchronous I/O, long computations)
/// belong in `tokio::task::spawn_blocking`.
///
/// Any `Fn(Delivery) -> impl Future<Output = HandlerResult>` is a handler.
pub trait Handler: Send + Sync + 'static {
    /// Handles one delivery.
    fn handle(&self, delivery: Delivery) -> BoxFuture<'static, HandlerResult>;
}

impl<F, Fut> Handler for F
where
    F: Fn(Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    fn handle(&self, delivery: Delivery) -> BoxFuture<'static, HandlerResult> {
        Box::pin(self(delivery))
    }
}
