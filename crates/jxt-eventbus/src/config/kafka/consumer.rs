//! Kafka consumer settings.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{at_most_i32_ms, in_range, millis, positive, Redacted};
use crate::config::problems::Problems;
use crate::error::{Error, Result};

/// Where a partition goes when the group's committed position is no longer
/// in the log (`kafka.consumer.offset_reset`, librdkafka's
/// `auto.offset.reset`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OffsetReset {
    /// The oldest record still retained: the records after the lost
    /// position that are still there are handled. The default.
    #[default]
    Earliest,
    /// The end of the log: every record still retained is skipped.
    Latest,
}

impl OffsetReset {
    pub(crate) fn as_property(self) -> &'static str {
        match self {
            OffsetReset::Earliest => "earliest",
            OffsetReset::Latest => "latest",
        }
    }
}

/// Consumer settings. Where a group without a committed position starts is
/// the bus-wide [`start_from`](crate::BusConfig::start_from); where a
/// partition whose committed position is gone goes is `offset_reset`. The
/// consumer always uses the `cooperative-sticky` assignor and stores offsets
/// only for finished records; neither is configurable.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConsumerConfig {
    /// How long the group waits for a heartbeat before it declares this bus
    /// dead and moves its partitions (`session.timeout.ms`). Shorter means
    /// faster failover and more false alarms on a loaded host. Default 45s.
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    /// Heartbeat period (`heartbeat.interval.ms`); below
    /// `session_timeout`, typically a third of it or less. Default 3s.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Longest gap between two polls before the member is removed from the
    /// group (`max.poll.interval.ms`; jxt-core `max_processing_time`). The
    /// bus polls from its own thread, also while handlers run and partitions
    /// are paused, so only a revoke waiting on slow handlers comes near it:
    /// keep it above `dispatch.revoke_timeout`. Default 300s.
    #[serde(with = "humantime_serde")]
    pub max_processing_time: Duration,
    /// Bytes a fetch waits for before the broker answers
    /// (`fetch.min.bytes`). Default 1.
    pub fetch_min_bytes: u32,
    /// Bytes one fetch returns at most (`fetch.max.bytes`).
    /// Default 52428800.
    pub fetch_max_bytes: u32,
    /// Bytes one fetch returns per partition at most
    /// (`max.partition.fetch.bytes`). Default 1048576.
    pub max_partition_fetch_bytes: u32,
    /// How long the broker holds a fetch waiting for `fetch_min_bytes`
    /// (`fetch.wait.max.ms`). Default 500ms.
    #[serde(with = "humantime_serde")]
    pub fetch_max_wait: Duration,
    /// Bytes fetched ahead of the bus and held by the client
    /// (`queued.max.messages.kbytes`, rounded up to KiB). Together with
    /// `dispatch.max_buffered` this bounds the consumer's memory whatever the
    /// backlog. Default 67108864 (64 MiB).
    pub prefetch_max_bytes: u64,
    /// Least time between the starts of two commits. Positions are
    /// committed as they advance, one commit request at a time; advances
    /// that come while one is in flight (or within this interval) are merged
    /// into the next. `0s` commits again as soon as the previous commit was
    /// answered: a crash then redelivers only the records that were running
    /// and those finished during one commit round trip. A longer interval
    /// sends fewer commit requests and lets a crash redeliver up to this
    /// much more finished work. Revokes and shutdown commit synchronously
    /// regardless. Default 0s.
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// Where a partition goes when the group's committed position is no
    /// longer in the log (removed by retention, or a topic recreated):
    /// `earliest` handles what is still retained after it, `latest` skips
    /// it all (`auto.offset.reset`). Independent of `start_from`, which
    /// applies only to partitions the group never committed. Every reset is
    /// logged as a warning and counted in `eventbus_offset_resets_total`.
    /// Default `earliest`.
    pub offset_reset: OffsetReset,
    /// Other librdkafka properties for the consumer only. Default empty.
    #[serde(deserialize_with = "super::super::scalar::text_map")]
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConsumerConfig {
    fn default() -> Self {
        KafkaConsumerConfig {
            session_timeout: Duration::from_secs(45),
            heartbeat_interval: Duration::from_secs(3),
            max_processing_time: Duration::from_secs(300),
            fetch_min_bytes: 1,
            fetch_max_bytes: 52_428_800,
            max_partition_fetch_bytes: 1_048_576,
            fetch_max_wait: Duration::from_millis(500),
            prefetch_max_bytes: 64 * 1024 * 1024,
            commit_interval: Duration::ZERO,
            offset_reset: OffsetReset::Earliest,
            properties: BTreeMap::new(),
        }
    }
}

impl fmt::Debug for KafkaConsumerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaConsumerConfig")
            .field("session_timeout", &self.session_timeout)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("max_processing_time", &self.max_processing_time)
            .field("fetch_min_bytes", &self.fetch_min_bytes)
            .field("fetch_max_bytes", &self.fetch_max_bytes)
            .field("max_partition_fetch_bytes", &self.max_partition_fetch_bytes)
            .field("fetch_max_wait", &self.fetch_max_wait)
            .field("prefetch_max_bytes", &self.prefetch_max_bytes)
            .field("commit_interval", &self.commit_interval)
            .field("offset_reset", &self.offset_reset)
            .field("properties", &Redacted(&self.properties))
            .finish()
    }
}

impl KafkaConsumerConfig {
    pub(super) fn validate(&self) -> Result<()> {
        // Every check is independent (millisecond sums in u128): all run.
        let mut p = Problems::default();
        p.check(positive(
            "kafka.consumer.session_timeout",
            self.session_timeout,
        ));
        p.check(positive(
            "kafka.consumer.heartbeat_interval",
            self.heartbeat_interval,
        ));
        for (field, d) in [
            ("kafka.consumer.session_timeout", self.session_timeout),
            ("kafka.consumer.heartbeat_interval", self.heartbeat_interval),
            (
                "kafka.consumer.max_processing_time",
                self.max_processing_time,
            ),
            ("kafka.consumer.fetch_max_wait", self.fetch_max_wait),
            ("kafka.consumer.commit_interval", self.commit_interval),
        ] {
            p.check(at_most_i32_ms(field, d));
        }
        if millis(self.heartbeat_interval) >= millis(self.session_timeout) {
            p.push(Error::config(
                "kafka.consumer.heartbeat_interval",
                format!(
                    "{:?} must be shorter than kafka.consumer.session_timeout ({:?})",
                    self.heartbeat_interval, self.session_timeout
                ),
            ));
        }
        if millis(self.max_processing_time) < millis(self.session_timeout) {
            p.push(Error::config(
                "kafka.consumer.max_processing_time",
                format!(
                    "{:?} must be at least kafka.consumer.session_timeout ({:?})",
                    self.max_processing_time, self.session_timeout
                ),
            ));
        }
        p.check(in_range(
            "kafka.consumer.fetch_max_bytes",
            self.fetch_max_bytes,
            1024,
            100_000_000,
        ));
        p.check(in_range(
            "kafka.consumer.fetch_min_bytes",
            self.fetch_min_bytes,
            1,
            self.fetch_max_bytes,
        ));
        p.check(in_range(
            "kafka.consumer.max_partition_fetch_bytes",
            self.max_partition_fetch_bytes,
            1,
            self.fetch_max_bytes,
        ));
        p.check(in_range(
            "kafka.consumer.prefetch_max_bytes",
            self.prefetch_max_bytes,
            1024,
            2_097_151 * 1024,
        ));
        p.finish()
    }

    /// `queued.max.messages.kbytes` for `prefetch_max_bytes`.
    pub(crate) fn prefetch_kbytes(&self) -> u64 {
        self.prefetch_max_bytes.div_ceil(1024)
    }
}
