//! What the bus did lately, as the status page shows it: throughput over
//! the last minutes, dead letters per topic, time since start. All read
//! from memory the bus keeps; nothing asks the broker.

use std::time::SystemTime;

use super::EventBus;
use crate::metrics::ThroughputPoint;

impl EventBus {
    /// Records handled, published, retried and dead-lettered per second,
    /// one point per 5 s over the last 10 minutes, oldest first.
    pub fn throughput(&self) -> Vec<ThroughputPoint> {
        self.inner.metrics.throughput.history()
    }

    /// Records this bus wrote to a dead-letter topic since it started, per
    /// topic they failed on (subscribed topics only, sorted by name).
    pub fn dead_lettered_by_topic(&self) -> Vec<(String, u64)> {
        self.inner
            .metrics
            .throughput
            .dead_lettered_by_topic()
            .into_iter()
            .map(|(t, n)| (t.to_string(), n))
            .collect()
    }

    /// When the bus was built.
    pub fn started_at(&self) -> SystemTime {
        self.inner.metrics.started_at
    }
}
