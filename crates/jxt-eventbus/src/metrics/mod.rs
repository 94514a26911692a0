//! Prometheus metrics of a bus, on an explicit
//! [`prometheus_client`] registry — no global state, so two buses in one
//! process never share or collide.
//!
//! By default every bus owns a registry ([`EventBus::metrics_registry`]). An
//! application that serves its own registry creates a [`BusMetrics`],
//! [`register`](BusMetrics::register)s it there and hands it to the builder
//! with [`EventBusBuilder::metrics`]. Two buses on one application registry
//! must be told apart with a sub-registry label:
//!
//! ```
//! use jxt_eventbus::metrics::BusMetrics;
//! use prometheus_client::registry::Registry;
//!
//! let mut registry = Registry::default();
//! let billing = BusMetrics::new();
//! billing.register(registry.sub_registry_with_label(("bus".into(), "billing".into())));
//! let shipping = BusMetrics::new();
//! shipping.register(registry.sub_registry_with_label(("bus".into(), "shipping".into())));
//! ```
//!
//! Every metric is named `eventbus_*` and labelled with `backend`, and with
//! `topic` where it is about one topic:
//!
//! | metric | type | labels | what |
//! |--------|------|--------|------|
//! | `messages_published_total` | counter | `topic`, `result` (`ok`, `error`) | publishes and their outcome |
//! | `publish_duration_seconds` | histogram | `topic` | time until the backend acknowledged |
//! | `publisher_in_flight` | gauge | | publishes awaiting the backend |
//! | `messages_consumed_total` | counter | `topic`, `result` (`ok`, `dead_lettered`) | records finished |
//! | `handler_duration_seconds` | histogram | `topic` | one handler attempt |
//! | `processing_errors_total` | counter | `topic`, `kind` | failed attempts by error kind |
//! | `retries_total` | counter | `topic` | attempts after the first |
//! | `dead_lettered_total` | counter | `topic` | records written to the dead-letter topic |
//! | `dead_letter_pointers_total` | counter | `topic` | dead letters the broker refused for good (too large, topic missing, not authorized), written as payload-less pointer records instead (also counted in `dead_lettered_total`) |
//! | `handlers_cancelled_total` | counter | `topic` | running handlers dropped because their partition was released (revoke timeout, lost assignment, shutdown deadline); their records stay unacknowledged |
//! | `in_flight_records` | gauge | | records queued in lanes or running |
//! | `running_records` | gauge | | records in handlers |
//! | `live_lanes` | gauge | `topic` | key lanes (aggregate processors) alive: with queued or running records |
//! | `active_lanes` | gauge | `topic` | lanes with a batch running; `live_lanes − active_lanes` are waiting for concurrency (a lane with no records does not exist, so there are no idle lanes to count) |
//! | `assigned_partitions` | gauge | | partitions owned |
//! | `paused_partitions` | gauge | | partitions paused by back-pressure |
//! | `rebalances_total` | counter | `kind` (`assigned`, `revoked`) | partitions assigned or revoked |
//! | `offset_resets_total` | counter | `topic`, `partition` | Kafka: a committed position was no longer in the log and the partition was reset (`kafka.consumer.offset_reset`) |
//! | `consumer_lag` | gauge | `topic`, `partition` | records not yet committed |
//! | `backlog_detected` | gauge | | 1 when the last backlog check found one |
//! | `recovery_mode` | gauge | | 1 while in recovery mode |
//! | `broker_reachable` | gauge | | 1 when the last background broker check answered |
//! | `stalled_partitions` | gauge | | partitions whose commit position stood still with unfinished records past `health.stall_after` (set when health is read) |
//!
//! Lag and backlog gauges are set by the backlog check (every
//! `backlog.check_interval`; not at all when `backlog.enabled` is false).
//!
//! [`EventBus::metrics_registry`]: crate::EventBus::metrics_registry
//! [`EventBusBuilder::metrics`]: crate::EventBusBuilder::metrics

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use rustc_hash::FxHashMap as HashMap;

use crate::backend::PartitionLag;
use crate::handler::HandlerError;
use crate::health::dead_letters::DeadLetterHealth;

mod recent_errors;
pub(crate) mod throughput;

pub(crate) use recent_errors::RecentErrors;
pub use recent_errors::{RecentError, RECENT_ERRORS};
pub use throughput::ThroughputPoint;
use throughput::{Throughput, TopicCounters};

/// Labels `backend`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    /// Backend name (`memory`, `kafka`, `nats`).
    pub backend: &'static str,
}

/// Labels `topic`, `backend`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabels {
    /// Topic.
    pub topic: Arc<str>,
    /// Backend name.
    pub backend: &'static str,
}

/// Labels `topic`, `backend`, `result`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// Topic.
    pub topic: Arc<str>,
    /// Backend name.
    pub backend: &'static str,
    /// Outcome.
    pub result: &'static str,
}

/// Labels `topic`, `backend`, `kind`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// Topic.
    pub topic: Arc<str>,
    /// Backend name.
    pub backend: &'static str,
    /// Error kind.
    pub kind: &'static str,
}

/// Labels `backend`, `kind`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendKindLabels {
    /// Backend name.
    pub backend: &'static str,
    /// What happened.
    pub kind: &'static str,
}

/// Labels `topic`, `backend`, `partition`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    /// Topic.
    pub topic: Arc<str>,
    /// Backend name.
    pub backend: &'static str,
    /// Partition number.
    pub partition: i32,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The metric families of one bus. Cloning shares the metrics.
#[derive(Clone, Debug)]
pub struct BusMetrics {
    /// `messages_published_total{topic, backend, result}`.
    pub published: Family<ResultLabels, Counter>,
    /// `publish_duration_seconds{topic, backend}`.
    pub publish_duration: HistogramFamily<TopicLabels>,
    /// `publisher_in_flight{backend}`.
    pub publisher_in_flight: Family<BackendLabels, Gauge>,
    /// `messages_consumed_total{topic, backend, result}`.
    pub consumed: Family<ResultLabels, Counter>,
    /// `handler_duration_seconds{topic, backend}`.
    pub handler_duration: HistogramFamily<TopicLabels>,
    /// `processing_errors_total{topic, backend, kind}`.
    pub processing_errors: Family<KindLabels, Counter>,
    /// `retries_total{topic, backend}`.
    pub retries: Family<TopicLabels, Counter>,
    /// `dead_lettered_total{topic, backend}`.
    pub dead_lettered: Family<TopicLabels, Counter>,
    /// `dead_letter_pointers_total{topic, backend}`.
    pub dead_letter_pointers: Family<TopicLabels, Counter>,
    /// `handlers_cancelled_total{topic, backend}`.
    pub handlers_cancelled: Family<TopicLabels, Counter>,
    /// `in_flight_records{backend}`.
    pub in_flight: Family<BackendLabels, Gauge>,
    /// `running_records{backend}`.
    pub running: Family<BackendLabels, Gauge>,
    /// `live_lanes{topic, backend}`.
    pub live_lanes: Family<TopicLabels, Gauge>,
    /// `active_lanes{topic, backend}`.
    pub active_lanes: Family<TopicLabels, Gauge>,
    /// `assigned_partitions{backend}`.
    pub assigned_partitions: Family<BackendLabels, Gauge>,
    /// `paused_partitions{backend}`.
    pub paused_partitions: Family<BackendLabels, Gauge>,
    /// `rebalances_total{backend, kind}`.
    pub rebalances: Family<BackendKindLabels, Counter>,
    /// `offset_resets_total{topic, backend, partition}`.
    pub offset_resets: Family<PartitionLabels, Counter>,
    /// `consumer_lag{topic, backend, partition}`.
    pub consumer_lag: Family<PartitionLabels, Gauge>,
    /// `backlog_detected{backend}`.
    pub backlog_detected: Family<BackendLabels, Gauge>,
    /// `recovery_mode{backend}`.
    pub recovery_mode: Family<BackendLabels, Gauge>,
    /// `broker_reachable{backend}`.
    pub broker_reachable: Family<BackendLabels, Gauge>,
    /// `stalled_partitions{backend}`.
    pub stalled_partitions: Family<BackendLabels, Gauge>,
    /// `producer_restarts_total{backend}`.
    pub producer_restarts: Family<BackendLabels, Counter>,
}

impl Default for BusMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl BusMetrics {
    /// New, unregistered families.
    pub fn new() -> Self {
        BusMetrics {
            published: Family::default(),
            publish_duration: Family::new_with_constructor(latency_histogram),
            publisher_in_flight: Family::default(),
            consumed: Family::default(),
            handler_duration: Family::new_with_constructor(latency_histogram),
            processing_errors: Family::default(),
            retries: Family::default(),
            dead_lettered: Family::default(),
            dead_letter_pointers: Family::default(),
            handlers_cancelled: Family::default(),
            in_flight: Family::default(),
            running: Family::default(),
            live_lanes: Family::default(),
            active_lanes: Family::default(),
            assigned_partitions: Family::default(),
            paused_partitions: Family::default(),
            rebalances: Family::default(),
            offset_resets: Family::default(),
            consumer_lag: Family::default(),
            backlog_detected: Family::default(),
            recovery_mode: Family::default(),
            broker_reachable: Family::default(),
            stalled_partitions: Family::default(),
            producer_restarts: Family::default(),
        }
    }

    /// Registers every family on `registry` under the prefix `eventbus`.
    /// Register one bus's metrics once per registry; give a second bus its
    /// own sub-registry (see the module docs).
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("eventbus");
        r.register(
            "messages_published",
            "Messages published, by result",
            self.published.clone(),
        );
        r.register_with_unit(
            "publish_duration",
            "Time from publish until the backend acknowledged",
            Unit::Seconds,
            self.publish_duration.clone(),
        );
        r.register(
            "publisher_in_flight",
            "Publishes awaiting the backend's acknowledgement",
            self.publisher_in_flight.clone(),
        );
        r.register(
            "messages_consumed",
            "Records finished, by result",
            self.consumed.clone(),
        );
        r.register_with_unit(
            "handler_duration",
            "Duration of one handler attempt",
            Unit::Seconds,
            self.handler_duration.clone(),
        );
        r.register(
            "processing_errors",
            "Failed handler attempts, by error kind",
            self.processing_errors.clone(),
        );
        r.register(
            "retries",
            "Handler attempts after the first",
            self.retries.clone(),
        );
        r.register(
            "dead_lettered",
            "Records written to their dead-letter topic",
            self.dead_lettered.clone(),
        );
        r.register(
            "dead_letter_pointers",
            "Dead letters refused by the broker for good and written as payload-less pointer records",
            self.dead_letter_pointers.clone(),
        );
        r.register(
            "handlers_cancelled",
            "Running handlers dropped because their partition was released",
            self.handlers_cancelled.clone(),
        );
        r.register(
            "in_flight_records",
            "Records queued in lanes or running",
            self.in_flight.clone(),
        );
        r.register(
            "running_records",
            "Records running in handlers",
            self.running.clone(),
        );
        r.register(
            "live_lanes",
            "Live key lanes (aggregate processors)",
            self.live_lanes.clone(),
        );
        r.register(
            "active_lanes",
            "Key lanes with a batch running",
            self.active_lanes.clone(),
        );
        r.register(
            "assigned_partitions",
            "Partitions owned by the consumer",
            self.assigned_partitions.clone(),
        );
        r.register(
            "paused_partitions",
            "Partitions paused by back-pressure",
            self.paused_partitions.clone(),
        );
        r.register(
            "rebalances",
            "Partitions assigned or revoked",
            self.rebalances.clone(),
        );
        r.register(
            "offset_resets",
            "Partitions reset because the committed position was no longer in the log",
            self.offset_resets.clone(),
        );
        r.register(
            "consumer_lag",
            "Records not yet committed, per owned partition",
            self.consumer_lag.clone(),
        );
        r.register(
            "backlog_detected",
            "1 when the last backlog check found a backlog",
            self.backlog_detected.clone(),
        );
        r.register(
            "recovery_mode",
            "1 while the bus is in recovery mode",
            self.recovery_mode.clone(),
        );
        r.register(
            "broker_reachable",
            "1 when the last background broker check answered",
            self.broker_reachable.clone(),
        );
        r.register(
            "stalled_partitions",
            "Partitions with unfinished records whose commit position stood still past health.stall_after",
            self.stalled_partitions.clone(),
        );
        r.register(
            "producer_restarts",
            "Producers rebuilt after a fatal client error (Kafka: fenced or out-of-sequence idempotent producer)",
            self.producer_restarts.clone(),
        );
    }

    /// Handles bound to one backend, cached for the hot paths.
    pub(crate) fn bind(&self, backend: &'static str) -> BoundMetrics {
        let b = BackendLabels { backend };
        BoundMetrics {
            backend,
            publisher_in_flight: self.publisher_in_flight.get_or_create_owned(&b),
            in_flight: self.in_flight.get_or_create_owned(&b),
            running: self.running.get_or_create_owned(&b),
            assigned_partitions: self.assigned_partitions.get_or_create_owned(&b),
            paused_partitions: self.paused_partitions.get_or_create_owned(&b),
            assigned: self.rebalances.get_or_create_owned(&BackendKindLabels {
                backend,
                kind: "assigned",
            }),
            revoked: self.rebalances.get_or_create_owned(&BackendKindLabels {
                backend,
                kind: "revoked",
            }),
            backlog_detected: self.backlog_detected.get_or_create_owned(&b),
            recovery_mode: self.recovery_mode.get_or_create_owned(&b),
            broker_reachable: self.broker_reachable.get_or_create_owned(&b),
            stalled_partitions: self.stalled_partitions.get_or_create_owned(&b),
            producer_restarts: self.producer_restarts.get_or_create_owned(&b),
            publish: RwLock::default(),
            lag_partitions: Mutex::default(),
            recent_errors: Arc::default(),
            dead_letters: Arc::default(),
            throughput: Arc::default(),
            started_at: std::time::SystemTime::now(),
            families: self.clone(),
        }
    }
}

/// Publish handles of one topic.
#[derive(Clone, Debug)]
struct PublishHandles {
    ok: Counter,
    error: Counter,
    duration: Histogram,
}

/// The metrics of one bus with its backend label applied and bus-level
/// handles resolved once.
pub(crate) struct BoundMetrics {
    backend: &'static str,
    pub(crate) publisher_in_flight: Gauge,
    pub(crate) in_flight: Gauge,
    pub(crate) running: Gauge,
    pub(crate) assigned_partitions: Gauge,
    pub(crate) paused_partitions: Gauge,
    pub(crate) assigned: Counter,
    pub(crate) revoked: Counter,
    backlog_detected: Gauge,
    recovery_mode: Gauge,
    pub(crate) broker_reachable: Gauge,
    pub(crate) stalled_partitions: Gauge,
    /// Counted by the Kafka producer when it rebuilds itself.
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    pub(crate) producer_restarts: Counter,
    /// Per-topic publish handles: one map read per publish, no allocation
    /// once a topic was seen.
    publish: RwLock<HashMap<Box<str>, PublishHandles>>,
    /// Partitions with a lag gauge, so released ones are removed.
    lag_partitions: Mutex<HashSet<PartitionLabels>>,
    /// The last handler failures of this bus.
    pub(crate) recent_errors: Arc<RecentErrors>,
    /// What the workers report about failed dead-letter writes, for health.
    pub(crate) dead_letters: Arc<DeadLetterHealth>,
    /// Counts over the last minutes, for the status page.
    pub(crate) throughput: Arc<Throughput>,
    /// When the bus was built (one `bind` per bus).
    pub(crate) started_at: std::time::SystemTime,
    families: BusMetrics,
}

impl fmt::Debug for BoundMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundMetrics")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl BoundMetrics {
    /// `offset_resets_total`, labelled per partition by the Kafka consumer.
    #[cfg(feature = "kafka")]
    pub(crate) fn offset_resets(&self) -> Family<PartitionLabels, Counter> {
        self.families.offset_resets.clone()
    }

    fn topic_labels(&self, topic: &str) -> TopicLabels {
        TopicLabels {
            topic: Arc::from(topic),
            backend: self.backend,
        }
    }

    fn publish_handles(&self, topic: &str) -> PublishHandles {
        if let Some(h) = self
            .publish
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(topic)
        {
            return h.clone();
        }
        let topic_arc: Arc<str> = Arc::from(topic);
        let result = |result| ResultLabels {
            topic: topic_arc.clone(),
            backend: self.backend,
            result,
        };
        let f = &self.families;
        let h = PublishHandles {
            ok: f.published.get_or_create_owned(&result("ok")),
            error: f.published.get_or_create_owned(&result("error")),
            duration: f
                .publish_duration
                .get_or_create_owned(&self.topic_labels(topic)),
        };
        let mut map = self.publish.write().unwrap_or_else(|e| e.into_inner());
        map.entry(topic.into())
            .or_insert_with(|| {
                self.throughput.add_published(h.ok.clone());
                h
            })
            .clone()
    }

    /// Records `n` publishes to `topic` that took `elapsed`, `ok` of them
    /// acknowledged.
    pub(crate) fn published(&self, topic: &str, ok: u64, failed: u64, elapsed: Duration) {
        let h = self.publish_handles(topic);
        if ok > 0 {
            h.ok.inc_by(ok);
        }
        if failed > 0 {
            h.error.inc_by(failed);
        }
        let secs = elapsed.as_secs_f64();
        for _ in 0..ok {
            h.duration.observe(secs);
        }
    }

    /// Counts a pointer record written for a dead letter of `topic` (a rare
    /// path: the label lookup is fine).
    pub(crate) fn dead_letter_pointer(&self, topic: &str) {
        self.families
            .dead_letter_pointers
            .get_or_create(&self.topic_labels(topic))
            .inc();
    }

    /// Handles of one subscription, resolved once when it is created.
    pub(crate) fn topic(&self, topic: &Arc<str>) -> TopicMetrics {
        let labels = TopicLabels {
            topic: topic.clone(),
            backend: self.backend,
        };
        let result = |result| ResultLabels {
            topic: topic.clone(),
            backend: self.backend,
            result,
        };
        let f = &self.families;
        let m = TopicMetrics {
            consumed_ok: f.consumed.get_or_create_owned(&result("ok")),
            consumed_dead_lettered: f.consumed.get_or_create_owned(&result("dead_lettered")),
            handler_duration: f.handler_duration.get_or_create_owned(&labels),
            retries: f.retries.get_or_create_owned(&labels),
            dead_lettered: f.dead_lettered.get_or_create_owned(&labels),
            handlers_cancelled: f.handlers_cancelled.get_or_create_owned(&labels),
            live_lanes: f.live_lanes.get_or_create_owned(&labels),
            active_lanes: f.active_lanes.get_or_create_owned(&labels),
            errors: f.processing_errors.clone(),
            recent_errors: self.recent_errors.clone(),
            topic: topic.clone(),
            backend: self.backend,
        };
        self.throughput.add_topic(
            topic.clone(),
            TopicCounters {
                handled: m.consumed_ok.clone(),
                retried: m.retries.clone(),
                dead_lettered: m.dead_lettered.clone(),
            },
        );
        m
    }

    /// Sets the lag gauges from a backlog check and drops the gauges of
    /// partitions no longer owned.
    pub(crate) fn observe_backlog(&self, lags: &[PartitionLag], backlog: bool, recovering: bool) {
        self.backlog_detected.set(backlog as i64);
        self.recovery_mode.set(recovering as i64);
        let mut seen = HashSet::with_capacity(lags.len());
        for l in lags {
            let labels = PartitionLabels {
                topic: l.partition.topic.clone(),
                backend: self.backend,
                partition: l.partition.partition,
            };
            self.families
                .consumer_lag
                .get_or_create(&labels)
                .set(l.lag());
            seen.insert(labels);
        }
        let mut known = self
            .lag_partitions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for gone in known.difference(&seen) {
            self.families.consumer_lag.remove(gone);
        }
        *known = seen;
    }
}

/// Handles of one subscription, passed to its workers so a record costs a
/// few atomic increments and no label lookup.
#[derive(Debug)]
pub(crate) struct TopicMetrics {
    pub(crate) consumed_ok: Counter,
    pub(crate) consumed_dead_lettered: Counter,
    pub(crate) handler_duration: Histogram,
    pub(crate) retries: Counter,
    pub(crate) dead_lettered: Counter,
    pub(crate) handlers_cancelled: Counter,
    pub(crate) live_lanes: Gauge,
    pub(crate) active_lanes: Gauge,
    errors: Family<KindLabels, Counter>,
    recent_errors: Arc<RecentErrors>,
    topic: Arc<str>,
    backend: &'static str,
}

impl TopicMetrics {
    /// Counts a failed attempt and keeps it among the recent errors (the
    /// error path only: a label lookup and a short lock here are fine).
    pub(crate) fn failed(&self, partition: i32, offset: i64, attempt: u32, err: &HandlerError) {
        self.errors
            .get_or_create(&KindLabels {
                topic: self.topic.clone(),
                backend: self.backend,
                kind: err.kind().as_str(),
            })
            .inc();
        self.recent_errors.push(RecentError {
            at: std::time::SystemTime::now(),
            topic: self.topic.clone(),
            partition,
            offset,
            attempt,
            kind: err.kind(),
            message: err.message().to_string(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::ErrorKind;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn names_and_labels() {
        let mut registry = Registry::default();
        let m = BusMetrics::new();
        m.register(&mut registry);
        let b = m.bind("memory");
        b.published("orders", 2, 1, Duration::from_millis(3));
        let t = b.topic(&Arc::from("orders"));
        t.failed(0, 7, 1, &HandlerError::new(ErrorKind::Permanent, "no"));
        assert_eq!(b.recent_errors.list()[0].offset, 7);
        let mut out = String::new();
        encode(&mut out, &registry).unwrap();
        assert!(out.contains(
            r#"eventbus_messages_published_total{topic="orders",backend="memory",result="ok"} 2"#
        ));
        assert!(out.contains(
            r#"eventbus_messages_published_total{topic="orders",backend="memory",result="error"} 1"#
        ));
        assert!(out.contains(
            r#"eventbus_publish_duration_seconds_count{topic="orders",backend="memory"} 2"#
        ));
        assert!(out.contains(
            r#"eventbus_processing_errors_total{topic="orders",backend="memory",kind="permanent"} 1"#
        ));
    }
}
