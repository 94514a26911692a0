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

    /// The message followed by the chain of sources (`message: cause:
    /// cause's cause`), as logged and written to the `x-dlq-error` header.
    /// A source whose text the message already ends with is not repeated.
    pub fn detail(&self) -> Cow<'_, str> {
        let mut text = Cow::Borrowed(self.message());
        let mut next = std::error::Error::source(self);
        while let Some(cause) = next {
            let cause_text = cause.to_string();
            if !text.ends_with(&cause_text) {
                let t = text.to_mut();
                t.push_str(": ");
                t.push_str(&cause_text);
            }
            next = cause.source();
        }
        text
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

/// `?` on a bus error inside a handler (a publish from the handler, say):
/// retryable when [`Error::is_retryable`](crate::Error::is_retryable) says so,
/// else permanent; the error is kept as the source.
impl From<crate::Error> for HandlerError {
    fn from(e: crate::Error) -> Self {
        let kind = if e.is_retryable() {
            ErrorKind::Retryable
        } else {
            ErrorKind::Permanent
        };
        HandlerError::new(kind, e.to_string()).with_source(e)
    }
}

/// `?` on a JSON error inside a handler: the payload could not be decoded
/// ([`ErrorKind::Decode`]: dead-lettered, not retried).
impl From<serde_json::Error> for HandlerError {
    fn from(e: serde_json::Error) -> Self {
        HandlerError::new(ErrorKind::Decode, e.to_string()).with_source(e)
    }
}

/// Says how an application error is to be treated, so `?` works on any
/// `Result` inside a handler:
///
/// ```
/// use jxt_eventbus::{Delivery, HandlerResult, ResultExt};
///
/// async fn handle(delivery: Delivery) -> HandlerResult {
///     let text = std::str::from_utf8(delivery.payload()).permanent()?;
///     let amount: u64 = text.parse().permanent()?;
///     charge(amount).await.retryable()?; // a flaky dependency: retried
///     Ok(())
/// }
/// # async fn charge(_: u64) -> std::io::Result<()> { Ok(()) }
/// ```
pub trait ResultExt<T> {
    /// On error, a [`ErrorKind::Retryable`] failure with the error as source.
    ///
    /// # Errors
    /// The converted error.
    fn retryable(self) -> Result<T, HandlerError>;

    /// On error, a [`ErrorKind::Permanent`] failure with the error as source.
    ///
    /// # Errors
    /// The converted error.
    fn permanent(self) -> Result<T, HandlerError>;
}

impl<T, E> ResultExt<T> for Result<T, E>
where
    E: std::error::Error + Send + Sync + 'static,
{
    fn retryable(self) -> Result<T, HandlerError> {
        self.map_err(|e| HandlerError::retryable(e.to_string()).with_source(e))
    }

    fn permanent(self) -> Result<T, HandlerError> {
        self.map_err(|e| HandlerError::permanent(e.to_string()).with_source(e))
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
/// Cancellation: the returned future may be dropped at any await point when
/// the record's partition is released while it runs (a revoke past
/// `dispatch.revoke_timeout`, a lost assignment, the shutdown deadline), so
/// that the partition's next owner never runs the same key at the same
/// time. The record is then not acknowledged and is delivered again; work
/// already done must be safe to repeat, as with any at-least-once delivery.
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn bus_errors_convert_by_retryability_and_keep_their_source() {
        let closed: HandlerError = crate::Error::Closed.into();
        assert_eq!(closed.kind(), ErrorKind::Permanent);
        assert!(matches!(
            closed
                .source()
                .and_then(|s| s.downcast_ref::<crate::Error>()),
            Some(crate::Error::Closed)
        ));
        let timeout: HandlerError = crate::Error::Timeout {
            operation: "publish",
            after: std::time::Duration::from_secs(1),
        }
        .into();
        assert_eq!(timeout.kind(), ErrorKind::Retryable);
        assert_eq!(timeout.message(), "publish timed out after 1s");
    }

    #[test]
    fn detail_shows_the_source_chain_once() {
        let io = std::io::Error::other("connection refused");
        let e = HandlerError::retryable("charging card").with_source(io);
        assert_eq!(e.detail(), "charging card: connection refused");
        // Converted errors carry their own text as the message: not twice.
        let closed: HandlerError = crate::Error::Closed.into();
        assert_eq!(closed.detail(), "the event bus is closed");
        assert_eq!(HandlerError::permanent("bad").detail(), "bad");
    }

    #[test]
    fn json_errors_are_decode_failures() {
        fn decode(bytes: &[u8]) -> Result<u64, HandlerError> {
            Ok(serde_json::from_slice::<u64>(bytes)?)
        }
        let e = decode(b"{").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Decode);
        assert!(!e.is_retryable());
        assert!(e.source().is_some());
    }

    #[test]
    fn any_result_says_retryable_or_permanent() {
        let io: std::io::Result<()> = Err(std::io::Error::other("db down"));
        let e = io.retryable().unwrap_err();
        assert_eq!((e.kind(), e.message()), (ErrorKind::Retryable, "db down"));
        let parsed = "x".parse::<u32>().permanent().unwrap_err();
        assert_eq!(parsed.kind(), ErrorKind::Permanent);
        assert!(parsed.source().is_some());
    }
}
