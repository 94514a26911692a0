//! The crate's error type.

use std::time::Duration;

/// Boxed source error; backend errors are kept only as a `source` so that a
/// broker-client upgrade is not a breaking change of this crate.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Every error the bus returns.
///
/// Variants are named by the operation that failed. Match on them with a
/// wildcard arm: new variants may be added in minor releases.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid. `field` is the dotted path of the
    /// offending field (for example `dispatch.max_concurrency`).
    #[error("invalid configuration at `{field}`: {reason}")]
    Config {
        /// Dotted path of the field.
        field: String,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// Several configuration problems, found together: loading and
    /// [`validate`](crate::BusConfig::validate) report every problem they
    /// find, not only the first. Each is an [`Error::Config`], shown on its
    /// own line. A single problem is always an [`Error::Config`].
    #[error("{}", lines(problems))]
    InvalidConfig {
        /// The problems, each an [`Error::Config`].
        problems: Vec<Error>,
    },
    /// A message was rejected before it reached the backend (bad aggregate
    /// id, zero event version, empty topic, ...). Nothing was published.
    #[error("invalid message: {0}")]
    InvalidMessage(String),
    /// Publishing failed; the record may or may not have been stored unless
    /// `retryable` is false.
    #[error("publish to `{topic}` failed: {reason}")]
    Publish {
        /// Target topic.
        topic: String,
        /// Human explanation.
        reason: String,
        /// Whether trying again can succeed.
        retryable: bool,
        /// Backend error, if any.
        #[source]
        source: Option<BoxError>,
    },
    /// Subscribing or unsubscribing failed.
    #[error("subscribe to `{topic}` failed: {reason}")]
    Subscribe {
        /// Topic of the subscription.
        topic: String,
        /// Human explanation.
        reason: String,
    },
    /// Committing consumer positions failed.
    #[error("commit failed: {reason}")]
    Commit {
        /// Human explanation.
        reason: String,
        /// Backend error, if any.
        #[source]
        source: Option<BoxError>,
    },
    /// An operation did not finish within its deadline.
    #[error("{operation} timed out after {after:?}")]
    Timeout {
        /// What was being done.
        operation: &'static str,
        /// The deadline that elapsed.
        after: Duration,
    },
    /// The bus has been shut down (or is shutting down).
    #[error("the event bus is closed")]
    Closed,
    /// A handler failed (reported by subscription-level tooling such as
    /// dead-letter inspection).
    #[error(transparent)]
    Handler(#[from] crate::handler::HandlerError),
    /// The operator HTTP endpoints could not be served on their address
    /// (in use, not local, not allowed), or a service runner could not
    /// listen for its stop signal.
    #[error("cannot serve the operator endpoints on {addr}: {source}")]
    Serve {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// Any other backend failure (connection, protocol, admin).
    #[error("{backend} backend error: {reason}")]
    Backend {
        /// Backend name (`memory`, `kafka`, `nats`).
        backend: &'static str,
        /// Human explanation.
        reason: String,
        /// Whether trying again can succeed.
        retryable: bool,
        /// Backend error, if any.
        #[source]
        source: Option<BoxError>,
    },
}

impl Error {
    /// Whether retrying the same operation may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Publish { retryable, .. } | Error::Backend { retryable, .. } => *retryable,
            Error::Timeout { .. } | Error::Commit { .. } => true,
            Error::Handler(e) => e.is_retryable(),
            Error::Config { .. }
            | Error::InvalidConfig { .. }
            | Error::InvalidMessage(_)
            | Error::Subscribe { .. }
            | Error::Serve { .. }
            | Error::Closed => false,
        }
    }

    /// The configuration problems of an [`Error::Config`] or an
    /// [`Error::InvalidConfig`], as (field, reason) pairs; empty for other
    /// errors.
    pub fn config_problems(&self) -> Vec<(&str, &str)> {
        match self {
            Error::Config { field, reason } => vec![(field.as_str(), reason.as_str())],
            Error::InvalidConfig { problems } => {
                problems.iter().flat_map(Error::config_problems).collect()
            }
            _ => Vec::new(),
        }
    }

    pub(crate) fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Config {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// One line per problem.
fn lines(problems: &[Error]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
