//! Throughput over the last minutes, for the status page: the bus's
//! cumulative counts (handled, published, retried, dead-lettered), sampled
//! every [`SAMPLE_EVERY`] into a ring of [`SAMPLES`] points. Reading it is a
//! short lock and no broker call; the counters are the metrics' own, so the
//! figures agree with `/metrics`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::counter::Counter;
use rustc_hash::FxHashMap as HashMap;

/// How often the counts are sampled.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// How many samples are kept: 10 minutes at [`SAMPLE_EVERY`].
pub(crate) const SAMPLES: usize = 120;

/// Cumulative counts at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    /// Records whose handler succeeded.
    pub(crate) handled: u64,
    /// Publishes acknowledged by the backend.
    pub(crate) published: u64,
    /// Attempts after the first.
    pub(crate) retried: u64,
    /// Records written to a dead-letter topic.
    pub(crate) dead_lettered: u64,
}

/// Rates per second over one sampling interval, ending at `at`.
#[derive(Clone, Debug, PartialEq)]
pub struct ThroughputPoint {
    /// End of the interval.
    pub at: SystemTime,
    /// Records handled per second.
    pub handled: f64,
    /// Records published per second.
    pub published: f64,
    /// Retries per second.
    pub retried: f64,
    /// Dead letters per second.
    pub dead_lettered: f64,
}

/// The counters of one subscribed topic.
#[derive(Clone, Debug)]
pub(crate) struct TopicCounters {
    pub(crate) handled: Counter,
    pub(crate) retried: Counter,
    pub(crate) dead_lettered: Counter,
}

/// The counters to sum and the samples taken.
#[derive(Debug, Default)]
pub(crate) struct Throughput {
    topics: Mutex<HashMap<Arc<str>, TopicCounters>>,
    published: Mutex<Vec<Counter>>,
    samples: Mutex<VecDeque<(SystemTime, Totals)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Throughput {
    /// Counts `topic`'s records (a topic subscribed again keeps one entry:
    /// its counters are the same).
    pub(crate) fn add_topic(&self, topic: Arc<str>, counters: TopicCounters) {
        lock(&self.topics).insert(topic, counters);
    }

    /// Counts the acknowledged publishes of one more topic.
    pub(crate) fn add_published(&self, ok: Counter) {
        lock(&self.published).push(ok);
    }

    /// The counts now.
    pub(crate) fn totals(&self) -> Totals {
        let mut t = Totals {
            published: lock(&self.published).iter().map(Counter::get).sum(),
            ..Totals::default()
        };
        for c in lock(&self.topics).values() {
            t.handled += c.handled.get();
            t.retried += c.retried.get();
            t.dead_lettered += c.dead_lettered.get();
        }
        t
    }

    /// Dead letters written per topic since the bus started, by topic name.
    pub(crate) fn dead_lettered_by_topic(&self) -> Vec<(Arc<str>, u64)> {
        let mut v: Vec<_> = lock(&self.topics)
            .iter()
            .map(|(t, c)| (t.clone(), c.dead_lettered.get()))
            .collect();
        v.sort();
        v
    }

    /// Takes a sample, dropping the oldest beyond [`SAMPLES`] + 1 (the
    /// extra one starts the first interval).
    pub(crate) fn sample(&self, at: SystemTime) {
        let totals = self.totals();
        let mut s = lock(&self.samples);
        if s.len() > SAMPLES {
            s.pop_front();
        }
        s.push_back((at, totals));
    }

    /// Rates between consecutive samples, oldest first.
    pub(crate) fn history(&self) -> Vec<ThroughputPoint> {
        let s = lock(&self.samples);
        let rate = |a: u64, b: u64, secs: f64| b.saturating_sub(a) as f64 / secs;
        s.iter()
            .zip(s.iter().skip(1))
            .filter_map(|((t0, a), (t1, b))| {
                let secs = t1.duration_since(*t0).ok()?.as_secs_f64();
                (secs > 0.0).then(|| ThroughputPoint {
                    at: *t1,
                    handled: rate(a.handled, b.handled, secs),
                    published: rate(a.published, b.published, secs),
                    retried: rate(a.retried, b.retried, secs),
                    dead_lettered: rate(a.dead_lettered, b.dead_lettered, secs),
                })
            })
            .collect()
    }
}

/// Samples `throughput` now and every [`SAMPLE_EVERY`] until the bus is
/// dropped.
pub(crate) fn spawn_sampler(throughput: Weak<Throughput>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(t) = throughput.upgrade() else {
                return;
            };
            t.sample(SystemTime::now());
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_consecutive_samples_and_the_ring_is_bounded() {
        let t = Throughput::default();
        let c = TopicCounters {
            handled: Counter::default(),
            retried: Counter::default(),
            dead_lettered: Counter::default(),
        };
        t.add_topic(Arc::from("orders"), c.clone());
        // Subscribing again must not count twice.
        t.add_topic(Arc::from("orders"), c.clone());
        let ok = Counter::default();
        t.add_published(ok.clone());
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        t.sample(start);
        c.handled.inc_by(50);
        c.dead_lettered.inc_by(5);
        ok.inc_by(100);
        t.sample(start + SAMPLE_EVERY);
        let h = t.history();
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].handled, 10.0);
        assert_eq!(h[0].published, 20.0);
        assert_eq!(h[0].dead_lettered, 1.0);
        assert_eq!(h[0].retried, 0.0);
        assert_eq!(t.dead_lettered_by_topic(), vec![(Arc::from("orders"), 5)]);
        for i in 2..500u32 {
            t.sample(start + SAMPLE_EVERY * i);
        }
        assert_eq!(t.history().len(), SAMPLES);
    }
}
