//! Publisher load accounting that survives cancellation.
//!
//! A publish counts as in flight (the `publisher_in_flight` gauge and the
//! publisher backlog gauge) from the moment it is handed to the backend
//! until it resolves. Its future may be dropped at any await point — inside
//! a `tokio::time::timeout`, a `select!`, an aborted task — so the count is
//! held by a guard whose `Drop` gives it back. Without it every cancelled
//! publish would leave the gauges one higher, and the publisher backlog
//! alarm would never clear.

use std::time::Instant;

use crate::backlog::{BacklogShared, PublisherGauge, PublisherState};
use crate::metrics::BoundMetrics;

/// `count` publishes handed to the backend and not yet resolved.
#[must_use = "dropping the guard ends the publishes as cancelled"]
pub(super) struct PublishesInFlight<'a> {
    backlog: &'a BacklogShared,
    metrics: &'a BoundMetrics,
    count: usize,
    started: Instant,
}

impl<'a> PublishesInFlight<'a> {
    /// Counts `count` publishes as in flight.
    pub(super) fn start(
        backlog: &'a BacklogShared,
        metrics: &'a BoundMetrics,
        count: usize,
    ) -> Self {
        metrics.publisher_in_flight.inc_by(count as i64);
        if let Some(s) = backlog.publisher.started(count) {
            backlog.publisher_changed(s);
        }
        PublishesInFlight {
            backlog,
            metrics,
            count,
            started: Instant::now(),
        }
    }

    /// The publishes resolved: `ok` were stored, `failed` were not.
    /// Records their outcome and latency, and ends them as in flight.
    pub(super) fn finish(mut self, topic: &str, ok: u64, failed: u64) {
        let elapsed = self.started.elapsed();
        self.metrics.published(topic, ok, failed, elapsed);
        let count = std::mem::take(&mut self.count);
        self.end(count, |gauge, count| gauge.finished(count, elapsed, ok > 0));
    }

    fn end(
        &self,
        count: usize,
        end: impl FnOnce(&PublisherGauge, usize) -> Option<PublisherState>,
    ) {
        if count == 0 {
            return;
        }
        self.metrics.publisher_in_flight.dec_by(count as i64);
        if let Some(s) = end(&self.backlog.publisher, count) {
            self.backlog.publisher_changed(s);
        }
    }
}

impl Drop for PublishesInFlight<'_> {
    fn drop(&mut self) {
        // Still counted: the publish future was dropped before it resolved.
        let count = std::mem::take(&mut self.count);
        self.end(count, |gauge, count| gauge.cancelled(count));
    }
}
