//! Batch handlers: user code that takes up to N records at once, for sinks
//! that write in bulk (a database `INSERT ... VALUES` of many rows, a bulk
//! index request).
//!
//! A batch is formed from key lanes, so the ordering rules of the
//! subscription hold unchanged: with `key` ordering a batch holds records of
//! many keys, the records of one key in order and never in two batches at
//! once. The handler answers for the whole batch or per record
//! ([`BatchError`]); the bus then, for each lane in the batch:
//! - acknowledges the records that succeeded;
//! - retries a record that failed retryably **together with the later
//!   records of its key** (they are handed to the handler again, in order,
//!   in the next attempt's batch), with the subscription's backoff;
//! - dead-letters a record that failed for good, or whose retries ran out,
//!   and goes on with the later records of its key, as a record handler does.
//!
//! Commits still never pass an unfinished record: a record retried in a
//! later attempt holds its partition's position. A record's
//! [`Delivery::attempt`] counts the calls that were given it; the handler
//! duration metric observes one call of the batch handler.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::delivery::Delivery;
use crate::handler::HandlerError;

/// What a batch handler returns.
pub type BatchResult = Result<(), BatchError>;

/// A batch handler's failure: of the whole batch, or of some of its records
/// (by their index in the batch). Records not named succeeded.
#[derive(Debug)]
pub struct BatchError {
    failed: Failed,
}

#[derive(Debug)]
enum Failed {
    All(HandlerError),
    Records(BTreeMap<usize, HandlerError>),
}

impl BatchError {
    /// Every record of the batch failed with `error` (a bulk write that was
    /// refused as a whole).
    pub fn all(error: HandlerError) -> Self {
        BatchError {
            failed: Failed::All(error),
        }
    }

    /// These records failed, each with its error; the others succeeded. An
    /// index past the batch's end is ignored; an index given twice keeps the
    /// last error.
    pub fn records(failures: impl IntoIterator<Item = (usize, HandlerError)>) -> Self {
        BatchError {
            failed: Failed::Records(failures.into_iter().collect()),
        }
    }

    /// Adds (or replaces) the failure of record `index`. On an error of the
    /// whole batch this does nothing: every record failed already.
    pub fn record(&mut self, index: usize, error: HandlerError) {
        if let Failed::Records(m) = &mut self.failed {
            m.insert(index, error);
        }
    }

    /// The error of record `index`, if it failed.
    pub fn error_of(&self, index: usize) -> Option<&HandlerError> {
        match &self.failed {
            Failed::All(e) => Some(e),
            Failed::Records(m) => m.get(&index),
        }
    }

    /// Takes the error of record `index`: the whole batch's error is cloned
    /// as each record's own (a [`HandlerError`]'s source is shared as text).
    pub(crate) fn take(&mut self, index: usize) -> Option<HandlerError> {
        match &mut self.failed {
            Failed::All(e) => Some(HandlerError::new(e.kind(), e.detail().into_owned())),
            Failed::Records(m) => m.remove(&index),
        }
    }
}

impl std::fmt::Display for BatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.failed {
            Failed::All(e) => write!(f, "batch failed: {e}"),
            Failed::Records(m) => write!(f, "{} record(s) of the batch failed", m.len()),
        }
    }
}

impl std::error::Error for BatchError {}

/// `?` on a [`HandlerError`] (and so on anything that converts into one)
/// fails the whole batch.
impl From<HandlerError> for BatchError {
    fn from(e: HandlerError) -> Self {
        BatchError::all(e)
    }
}

impl From<crate::Error> for BatchError {
    fn from(e: crate::Error) -> Self {
        BatchError::all(e.into())
    }
}

impl From<serde_json::Error> for BatchError {
    fn from(e: serde_json::Error) -> Self {
        BatchError::all(e.into())
    }
}

/// Handles a batch of records. Implemented for every
/// `Fn(Vec<Delivery>) -> impl Future<Output = BatchResult>`.
pub trait BatchHandler: Send + Sync + 'static {
    /// Handles `batch`; errors name records by their index in it.
    fn handle(&self, batch: Vec<Delivery>) -> BoxFuture<'static, BatchResult>;
}

impl<F, Fut> BatchHandler for F
where
    F: Fn(Vec<Delivery>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = BatchResult> + Send + 'static,
{
    fn handle(&self, batch: Vec<Delivery>) -> BoxFuture<'static, BatchResult> {
        Box::pin(self(batch))
    }
}

/// How a batch subscription forms its batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub struct BatchOptions {
    pub(crate) max_records: usize,
    pub(crate) linger: Duration,
    pub(crate) max_in_flight: usize,
}

impl Default for BatchOptions {
    /// 100 records, 10 ms linger, 2 batches in flight.
    fn default() -> Self {
        BatchOptions {
            max_records: 100,
            linger: Duration::from_millis(10),
            max_in_flight: 2,
        }
    }
}

impl BatchOptions {
    /// Batches of at most `max_records` records (at least 1), other settings
    /// at their defaults.
    pub fn new(max_records: usize) -> Self {
        BatchOptions {
            max_records: max_records.max(1),
            ..Self::default()
        }
    }

    /// How long the bus waits for a batch to fill before it hands over what
    /// it has. Zero hands over whatever is ready at once.
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Batches of the subscription handled at the same time (at least 1).
    /// Each holds its keys: a key is never in two running batches.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// Most records of one batch.
    pub fn max_records(&self) -> usize {
        self.max_records
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::ErrorKind;

    #[test]
    fn errors_name_records_or_the_whole_batch() {
        let mut e = BatchError::records([(1, HandlerError::permanent("bad row"))]);
        e.record(3, HandlerError::retryable("deadlock"));
        assert!(e.error_of(0).is_none());
        assert_eq!(e.error_of(1).unwrap().kind(), ErrorKind::Permanent);
        assert_eq!(e.take(3).unwrap().kind(), ErrorKind::Retryable);
        assert!(e.take(3).is_none());

        let mut all: BatchError = HandlerError::retryable("db down")
            .with_source(std::io::Error::other("refused"))
            .into();
        let first = all.take(0).unwrap();
        assert_eq!(first.kind(), ErrorKind::Retryable);
        assert_eq!(first.message(), "db down: refused");
        assert!(all.take(7).is_some(), "every record failed");
    }

    #[test]
    fn options_are_at_least_one() {
        let o = BatchOptions::new(0).max_in_flight(0);
        assert_eq!((o.max_records, o.max_in_flight), (1, 1));
    }
}
