//! Bus configuration: plain serde structs with documented defaults.
//!
//! Load it from YAML or TOML plus `EVENTBUS_` environment overrides with
//! [`BusConfig::load`], from a section of the service's own file with
//! [`BusConfig::load_section`], from the service's figment with
//! [`BusConfig::load_from`], or build it in code. Unknown keys are errors, and
//! every error names the field path and what is allowed. Durations are human
//! strings (`"250ms"`, `"30s"`, `"2m"`). Every field's default is listed in
//! `docs/configuration.md` and on the field below.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
pub(crate) use problems::Problems;

mod bounds;
mod env;
mod health;
mod kafka;
mod load;
mod nats;
mod problems;
mod redact;
mod scalar;

pub use env::{environment_overrides, DEV_PREFIX, ENV_PREFIX};
/// The figment version the loaders take providers of
/// ([`BusConfig::load_from`]).
pub use figment;
pub use health::{HealthConfig, JxtCoreHealthConfig, ProbeConfig, StatusConfig};
#[cfg(feature = "kafka")]
pub(crate) use kafka::{has_own_field as property_has_own_field, is_secret as is_secret_property};
pub use kafka::{
    Acks, Compression, IdHeader, KafkaConfig, KafkaConsumerConfig, KafkaNetConfig,
    KafkaProducerConfig, KafkaSaslConfig, KafkaTlsConfig, OffsetReset, Partitioner, SaslMechanism,
    Secret, TopicCompression, TopicSettings, TopicStrategy,
};
pub use nats::{
    NatsAuth, NatsConfig, NatsConsumerSettings, NatsRetention, NatsSharing, NatsStorage,
    NatsStreamSettings, NatsTls, NatsTopicSettings,
};
#[cfg(feature = "nats")]
pub(crate) use redact::{
    split_credentials, url as masked_url, urls as masked_urls, UrlCredentials,
};

/// Which broker the bus talks to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// In-process broker; nothing survives the process. The default.
    #[default]
    Memory,
    /// Apache Kafka (cargo feature `kafka`).
    Kafka,
    /// NATS JetStream (cargo feature `nats`).
    Nats,
}

impl BackendKind {
    /// Stable lower-case name, used in errors and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Memory => "memory",
            BackendKind::Kafka => "kafka",
            BackendKind::Nats => "nats",
        }
    }
}

/// How records of one subscription are ordered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ordering {
    /// Records with the same key are handled one at a time in order; different
    /// keys run concurrently. Keyless records keep partition order.
    #[default]
    Key,
    /// Each partition is handled one record at a time, in order.
    Partition,
    /// No order: every record may run concurrently with any other.
    Unordered,
}

/// Where a consumer group that has no committed position starts. (Where a
/// Kafka partition goes when its committed position is gone is
/// `kafka.consumer.offset_reset`.)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartFrom {
    /// The oldest retained record: nothing published before the first
    /// subscribe is missed. The default.
    #[default]
    Earliest,
    /// Only records published after the group joined.
    Latest,
}

/// What [`shutdown`](crate::EventBus::shutdown) does with records fetched
/// but not started yet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ShutdownMode {
    /// Records already running in handlers finish; buffered records are left
    /// unacknowledged and go to the group's next owner. A Ctrl-C stops in
    /// about one handler's time, whatever was prefetched. The default.
    #[default]
    FinishRunning,
    /// Every buffered record is handled before the bus stops (bounded by
    /// `dispatch.shutdown_timeout`): fewer redeliveries, a longer stop.
    DrainBuffered,
}

/// How envelopes are written, for the consumers that read them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnvelopeConfig {
    /// `number` (current jxt-core, which refuses a string) or `string`
    /// (consumers on older jxt-core envelopes, which refuse a number). This
    /// bus reads both. Default `number`.
    pub tenant_id: crate::envelope::TenantIdEncoding,
}

/// The whole bus configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusConfig {
    /// Backend. Default `memory`.
    pub backend: BackendKind,
    /// Consumer group of this bus: buses with the same group share the
    /// partitions of a topic (each record goes to one of them); buses with
    /// different groups each get every record. Default `"jxt-eventbus"`.
    pub group: String,
    /// Where a group without a committed position starts. Default `earliest`.
    pub start_from: StartFrom,
    /// Keyed dispatch: concurrency, ordering and memory bounds.
    pub dispatch: DispatchConfig,
    /// Retries of failed handler attempts.
    pub retry: RetryConfig,
    /// Where records go that cannot be handled.
    pub dead_letter: DeadLetterConfig,
    /// Backlog detection and recovery mode.
    pub backlog: BacklogConfig,
    /// Health rules and the heartbeat probe.
    pub health: HealthConfig,
    /// How [`publish_envelope`](crate::EventBus::publish_envelope) writes
    /// envelopes.
    pub envelope: EnvelopeConfig,
    /// Limits `publish` calls of this bus with a token bucket (publishes wait
    /// for a token). Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish_rate_limit: Option<crate::middleware::RateLimit>,
    /// In-memory backend settings.
    pub memory: MemoryConfig,
    /// Apache Kafka backend settings.
    pub kafka: KafkaConfig,
    /// NATS JetStream backend settings.
    pub nats: NatsConfig,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            backend: BackendKind::Memory,
            group: "jxt-eventbus".into(),
            start_from: StartFrom::Earliest,
            dispatch: DispatchConfig::default(),
            retry: RetryConfig::default(),
            dead_letter: DeadLetterConfig::default(),
            backlog: BacklogConfig::default(),
            health: HealthConfig::default(),
            envelope: EnvelopeConfig::default(),
            publish_rate_limit: None,
            memory: MemoryConfig::default(),
            kafka: KafkaConfig::default(),
            nats: NatsConfig::default(),
        }
    }
}

/// Keyed dispatch settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DispatchConfig {
    /// Default ordering of subscriptions. Default `key`.
    pub ordering: Ordering,
    /// Lanes (keys) handled concurrently per subscription. Higher values use
    /// more handler parallelism; per-key order is kept regardless. Default 64.
    pub max_concurrency: usize,
    /// Live lanes (keys with queued or running records) per subscription.
    /// When reached, intake pauses until lanes finish; no lane is evicted.
    /// Default 10000.
    pub max_processors: usize,
    /// Records buffered or running per partition before that partition is
    /// paused (it resumes at half). Default 1000.
    pub max_buffered_per_partition: usize,
    /// Records buffered or running in the whole bus before every partition is
    /// paused (resumes at half). Bounds memory whatever the backlog. On
    /// NATS it is also the consumer's `max_ack_pending` unless
    /// `nats.max_ack_pending` is set. Counts of this section are 1 to
    /// 4294967295. Default 10000.
    pub max_buffered: usize,
    /// Records of one lane handed to a handler task in one go (they still run
    /// one after another). Larger batches cost less per record but hold a
    /// revoke longer. Default 32.
    pub max_batch: usize,
    /// How long a revoke waits for the revoked partitions' running records;
    /// then their handlers are cancelled (futures dropped) and the
    /// partitions released uncommitted (the records are redelivered).
    /// Default 30s.
    #[serde(with = "humantime_serde")]
    pub revoke_timeout: Duration,
    /// How long [`shutdown`](crate::EventBus::shutdown) lets records finish
    /// (those running, or with `drain_buffered` every buffered one too)
    /// before it commits and closes. Default 30s.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Whether shutdown finishes only the running records (`finish_running`,
    /// the rest is redelivered to the group) or every buffered record
    /// (`drain_buffered`). Either way publishing stays open until the
    /// records finished, so handlers that publish keep working. Default
    /// `finish_running`.
    pub shutdown_mode: ShutdownMode,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            ordering: Ordering::Key,
            max_concurrency: 64,
            max_processors: 10_000,
            max_buffered_per_partition: 1_000,
            max_buffered: 10_000,
            max_batch: 32,
            revoke_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(30),
            shutdown_mode: ShutdownMode::FinishRunning,
        }
    }
}

/// Retry settings for failed handler attempts. Retries happen inside the
/// record's key lane, so later records of that key wait; other keys flow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts per record, the first included, for retryable errors. After
    /// the last, the record is dead-lettered. Default 5.
    pub max_attempts: u32,
    /// Delay before the second attempt; at least 1ms (zero would retry a
    /// failing record, or a dead letter that cannot be written, in a busy
    /// loop). Default 100ms.
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Longest delay between attempts, and the delay between attempts of a
    /// record that is retried without end (`dead_letter.enabled: false`);
    /// 1ms to 365 days. Default 10s.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Growth factor of the delay, at least 1. Default 2.0.
    pub multiplier: f32,
    /// Randomize delays (up to +100%) so that failing keys do not retry in
    /// lock-step. Default true.
    pub jitter: bool,
    /// Stop retrying a record once this long has passed since its first
    /// failure, even with attempts left (it is then dead-lettered). Default:
    /// no limit.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_elapsed: Option<Duration>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: true,
            max_elapsed: None,
        }
    }
}

/// Dead-letter settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeadLetterConfig {
    /// Send permanently failing records to a dead-letter topic. When false,
    /// such a record is retried (at `retry.max_backoff`) until it succeeds or
    /// its partition is revoked: never skipped, but its lane and its
    /// partition's commit position wait. Default true.
    pub enabled: bool,
    /// Suffix appended to the topic name to form its dead-letter topic.
    /// Default `".dlq"`.
    pub suffix: String,
}

impl Default for DeadLetterConfig {
    fn default() -> Self {
        DeadLetterConfig {
            enabled: true,
            suffix: ".dlq".into(),
        }
    }
}

/// Backlog detection and recovery mode. A backlog exists when the lag over
/// the partitions this bus owns is over `max_lag`, or the oldest record
/// handed to a handler and not finished was published more than `max_age`
/// ago.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BacklogConfig {
    /// Check for a backlog periodically and enter recovery mode when found.
    /// Default true.
    pub enabled: bool,
    /// Time between checks; each asks the broker for lag. Default 5s.
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
    /// Lag (records) above which a backlog exists. Default 10000.
    pub max_lag: i64,
    /// Age of the oldest unfinished record above which a backlog exists.
    /// Default 60s.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Consecutive checks without a backlog before recovery mode ends.
    /// Default 3.
    pub clean_checks: u32,
    /// Publisher side: publishes awaiting the broker above which a publisher
    /// backlog is reported (callbacks, health degraded). Default 10000.
    pub max_publish_in_flight: usize,
    /// Publisher side: moving-average publish latency above which a
    /// publisher backlog is reported. Default 5s.
    #[serde(with = "humantime_serde")]
    pub max_publish_latency: Duration,
}

impl Default for BacklogConfig {
    fn default() -> Self {
        BacklogConfig {
            enabled: true,
            check_interval: Duration::from_secs(5),
            max_lag: 10_000,
            max_age: Duration::from_secs(60),
            clean_checks: 3,
            max_publish_in_flight: 10_000,
            max_publish_latency: Duration::from_secs(5),
        }
    }
}

/// In-memory backend settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryConfig {
    /// Partitions of a topic created on first use. Default 4.
    pub partitions: u32,
    /// Records a partition keeps for the slowest group. When a group is this
    /// far behind, `publish` waits for it (never drops). Default 100000.
    pub max_retained_per_partition: usize,
    /// How long `publish` waits for room before it fails. Default 5s.
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            partitions: 4,
            max_retained_per_partition: 100_000,
            publish_timeout: Duration::from_secs(5),
        }
    }
}

impl BusConfig {
    /// Checks value ranges and combinations that serde cannot, and with
    /// the `kafka` feature and `backend: kafka`, the Kafka client settings
    /// with librdkafka itself (property names and values), without
    /// connecting.
    ///
    /// # Errors
    /// [`Error::Config`] naming the field and what is allowed, or
    /// [`Error::InvalidConfig`] listing every problem when there are
    /// several.
    pub fn validate(&self) -> Result<()> {
        let mut p = Problems::default();
        if self.group.is_empty() || crate::validate::topic(&self.group).is_err() {
            p.push(Error::config(
                "group",
                format!(
                    "{:?} is not a valid group name: use 1 to 249 characters of A-Z a-z 0-9 . _ -",
                    self.group
                ),
            ));
        }
        p.check(bounds::check(self));
        let r = &self.retry;
        p.check(at_least("retry.max_attempts", r.max_attempts as usize, 1));
        if !(r.multiplier >= 1.0 && r.multiplier.is_finite()) {
            p.push(Error::config(
                "retry.multiplier",
                format!("{} is not allowed: use a number >= 1.0", r.multiplier),
            ));
        }
        if r.initial_backoff > r.max_backoff {
            p.push(Error::config(
                "retry.initial_backoff",
                format!(
                    "{:?} is longer than retry.max_backoff ({:?})",
                    r.initial_backoff, r.max_backoff
                ),
            ));
        }
        if self.dead_letter.enabled
            && (self.dead_letter.suffix.is_empty()
                || crate::validate::topic(&format!("t{}", self.dead_letter.suffix)).is_err())
        {
            p.push(Error::config(
                "dead_letter.suffix",
                format!(
                    "{:?} does not form valid topic names: use characters of A-Z a-z 0-9 . _ -",
                    self.dead_letter.suffix
                ),
            ));
        }
        if let Some(l) = &self.publish_rate_limit {
            p.check(l.validate("publish_rate_limit"));
        }
        let b = &self.backlog;
        if b.check_interval < Duration::from_millis(10) {
            p.push(Error::config(
                "backlog.check_interval",
                format!("{:?} is too short: use at least 10ms", b.check_interval),
            ));
        }
        if b.max_lag < 0 {
            p.push(Error::config("backlog.max_lag", "must not be negative"));
        }
        p.check(at_least("backlog.clean_checks", b.clean_checks as usize, 1));
        p.check(self.health.validate());
        let m = &self.memory;
        if !(1..=10_000).contains(&m.partitions) {
            p.push(Error::config(
                "memory.partitions",
                format!("{} is not allowed: use 1 to 10000", m.partitions),
            ));
        }
        if self.backend == BackendKind::Kafka && self.kafka.brokers.is_empty() {
            p.push(Error::config(
                "kafka.brokers",
                "not set, and `backend: kafka` needs it: list the bootstrap brokers \
                 (`kafka.brokers: [\"host:9092\"]` in the file, or \
                 EVENTBUS_KAFKA_BROKERS=host:9092,host2:9092)",
            ));
        }
        p.check(self.kafka.validate());
        p.check(self.nats.validate());
        #[cfg(feature = "kafka")]
        p.check(crate::backend::kafka::check_properties(&self.kafka));
        // librdkafka's own check adds timers of several sections: only once
        // they are known to be in range.
        #[cfg(feature = "kafka")]
        if self.backend == BackendKind::Kafka && p.is_empty() {
            p.check(crate::backend::kafka::validate_client_config(self));
        }
        p.finish()
    }
}

fn at_least<T: PartialOrd + std::fmt::Debug>(field: &str, value: T, min: T) -> Result<()> {
    if value < min {
        return Err(Error::config(
            field,
            format!("{value:?} is not allowed: use at least {min:?}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        BusConfig::default().validate().unwrap();
    }

    #[test]
    fn range_errors_name_the_field() {
        let mut c = BusConfig::default();
        c.dispatch.max_concurrency = 0;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("dispatch.max_concurrency"), "{e}");
        let mut c = BusConfig::default();
        c.retry.initial_backoff = Duration::from_secs(60);
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("retry.initial_backoff"));
        let c = BusConfig {
            group: "my group".into(),
            ..BusConfig::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("`group`"));
    }

    /// Values serde accepts but the bus cannot run with: a zero backoff is a
    /// hot loop, huge durations overflow `Instant + Duration`, huge counts
    /// overflow the sums made of them, and a buffer larger than NATS's
    /// `max_ack_pending` range was cast into it.
    #[test]
    fn values_that_would_misbehave_are_refused_with_the_field() {
        type Change = fn(&mut BusConfig);
        let cases: &[(&str, Change)] = &[
            ("retry.max_backoff", |c| {
                c.retry.initial_backoff = Duration::ZERO;
                c.retry.max_backoff = Duration::ZERO;
            }),
            ("retry.initial_backoff", |c| {
                c.retry.initial_backoff = Duration::ZERO
            }),
            ("retry.max_backoff", |c| c.retry.max_backoff = Duration::MAX),
            ("retry.max_elapsed", |c| {
                c.retry.max_elapsed = Some(Duration::MAX)
            }),
            ("dispatch.revoke_timeout", |c| {
                c.dispatch.revoke_timeout = Duration::MAX
            }),
            ("dispatch.shutdown_timeout", |c| {
                c.dispatch.shutdown_timeout = Duration::MAX
            }),
            ("dispatch.max_processors", |c| {
                c.dispatch.max_processors = usize::MAX
            }),
            ("dispatch.max_buffered_per_partition", |c| {
                c.dispatch.max_buffered_per_partition = usize::MAX;
                c.dispatch.max_buffered = usize::MAX;
            }),
            ("memory.publish_timeout", |c| {
                c.memory.publish_timeout = Duration::MAX
            }),
            ("backlog.check_interval", |c| {
                c.backlog.check_interval = Duration::MAX
            }),
            ("health.stall_after", |c| {
                c.health.stall_after = Duration::MAX
            }),
            ("nats.idle_heartbeat", |c| {
                c.nats.idle_heartbeat = Duration::MAX
            }),
            ("nats.ack_wait", |c| c.nats.ack_wait = Duration::MAX),
            ("kafka.connect_timeout", |c| {
                c.kafka.connect_timeout = Duration::MAX
            }),
            ("dispatch.max_buffered", |c| {
                c.backend = BackendKind::Nats;
                c.dispatch.max_buffered = u32::MAX as usize + 1;
            }),
        ];
        for (field, change) in cases {
            let mut c = BusConfig::default();
            change(&mut c);
            let outcome = std::panic::catch_unwind(|| c.validate());
            match outcome {
                Ok(Err(e)) => {
                    let e = e.to_string();
                    assert!(e.contains(field), "{field}: {e}");
                    assert!(e.contains("use"), "{field}: says what is allowed: {e}");
                }
                Ok(Ok(())) => panic!("{field}: accepted"),
                Err(_) => panic!("{field}: validation panicked"),
            }
        }
    }
}
