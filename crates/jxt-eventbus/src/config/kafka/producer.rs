//! Kafka producer settings.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{at_most_i32_ms, in_range, millis, positive, Redacted};
use crate::config::problems::Problems;
use crate::error::{Error, Result};

/// Broker acknowledgements a publish waits for (`acks`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Acks {
    /// Every in-sync replica stored the record: survives the loss of the
    /// leader. Required by the idempotent producer. The default.
    #[default]
    All,
    /// Only the partition leader stored it: a leader failure right after the
    /// acknowledgement can lose it.
    Leader,
    /// No acknowledgement: `publish` resolves when the record is sent and
    /// its offset is unknown (-1). Records can be lost silently.
    None,
}

impl Acks {
    pub(crate) fn as_property(self) -> &'static str {
        match self {
            Acks::All => "all",
            Acks::Leader => "1",
            Acks::None => "0",
        }
    }
}

/// Compression of produced batches (`compression.codec`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// No compression: least CPU, most bytes on the wire and on disk. The
    /// default.
    #[default]
    None,
    /// gzip: small output, slow.
    Gzip,
    /// snappy: fast, moderate ratio.
    Snappy,
    /// lz4: fast, moderate ratio; a good choice for most text payloads.
    Lz4,
    /// zstd: best ratio for its speed; needs brokers 2.1 or later.
    Zstd,
}

impl Compression {
    pub(crate) fn as_property(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// How a record's key picks its partition (`partitioner`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Partitioner {
    /// Murmur2 hash of the key, as the Java client does, so Java and Rust
    /// producers put a key on the same partition; keyless records go to a
    /// random partition. The default.
    #[default]
    Murmur2Random,
    /// Murmur2 hash of the key; keyless records all go to one partition.
    Murmur2,
    /// CRC32 hash of the key (librdkafka's own default); keyless records
    /// random.
    ConsistentRandom,
    /// CRC32 hash of the key; keyless records all go to one partition.
    Consistent,
    /// FNV-1a hash of the key, the same partition as sarama's
    /// `NewHashPartitioner` (jxt-core's producer) for every key; keyless
    /// records random. Choose it when Go (jxt-core/sarama) and Rust
    /// producers write keyed records to the same topic, or per-aggregate
    /// order is lost between them. Checked against jxt-core's captured
    /// partitions and live against sarama (`tests/interop_kafka.rs`).
    Fnv1aRandom,
    /// Ignore the key: every record to a random partition. Breaks per-key
    /// order across partitions.
    Random,
}

impl Partitioner {
    pub(crate) fn as_property(self) -> &'static str {
        match self {
            Partitioner::Murmur2Random => "murmur2_random",
            Partitioner::Murmur2 => "murmur2",
            Partitioner::ConsistentRandom => "consistent_random",
            Partitioner::Consistent => "consistent",
            Partitioner::Fnv1aRandom => "fnv1a_random",
            Partitioner::Random => "random",
        }
    }
}

/// The record header carrying [`crate::Message::id`]. A consumer of this bus
/// reads either, so the choice only matters to other readers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdHeader {
    /// `X-Message-ID`, left out when jxt-core's `X-Event-ID` already holds
    /// the id (envelopes), so envelope records carry exactly jxt-core's
    /// headers. The default.
    #[default]
    XMessageId,
    /// `_watermill_message_uuid`, where Watermill's Kafka marshaler reads a
    /// message's UUID: a Watermill subscriber then sees the id as its UUID
    /// and the other headers as its metadata.
    Watermill,
}

impl IdHeader {
    /// The header name.
    pub fn name(self) -> &'static str {
        match self {
            IdHeader::XMessageId => "X-Message-ID",
            IdHeader::Watermill => "_watermill_message_uuid",
        }
    }
}

/// Producer settings. The names in parentheses are librdkafka properties;
/// jxt-core's names are given where they differ.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaProducerConfig {
    /// Acknowledgements a publish waits for (`acks`; jxt-core
    /// `required_acks`). Default `all`.
    pub required_acks: Acks,
    /// Idempotent producer (`enable.idempotence`): broker-side
    /// de-duplication of retried batches and per-partition order across
    /// retries. Requires `required_acks: all`. Default true.
    pub idempotent: bool,
    /// Batch compression (`compression.codec`). Default `none`.
    pub compression: Compression,
    /// How long a batch waits for more records before it is sent
    /// (`linger.ms`; jxt-core `flush_frequency`). Longer means bigger
    /// batches and more latency per publish. Default 5ms.
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// Records per batch at most (`batch.num.messages`; jxt-core
    /// `flush_messages`). Default 10000.
    pub batch_max_messages: u32,
    /// Bytes per batch at most (`batch.size`; jxt-core `batch_size`).
    /// Default 1000000.
    pub batch_max_bytes: u32,
    /// Records waiting in the producer's local queue at most
    /// (`queue.buffering.max.messages`; jxt-core `buffer_size`). When full, a
    /// publish waits for room, up to `message_timeout`. Default 100000.
    pub buffer_max_messages: u32,
    /// Retries of a failed produce request (`message.send.max.retries`;
    /// jxt-core `retry_max`). Retries stop at `message_timeout` whatever this
    /// says. Default 2147483647.
    pub retries: u32,
    /// Wait before retrying a produce request (`retry.backoff.ms`).
    /// Default 100ms.
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// Longest time from `publish` to the broker's acknowledgement, retries
    /// included (`message.timeout.ms`; jxt-core `timeout`). A publish fails
    /// with a timeout error after it. Default 30s.
    #[serde(with = "humantime_serde")]
    pub message_timeout: Duration,
    /// Key → partition mapping (`partitioner`). Default `murmur2_random`
    /// (Java clients' choice); `fnv1a_random` is jxt-core's (sarama's).
    pub partitioner: Partitioner,
    /// Header carrying the message id: `x_message_id` (default) or
    /// `watermill` (for Watermill subscribers).
    pub id_header: IdHeader,
    /// Other librdkafka properties for the producer only. Default empty.
    #[serde(deserialize_with = "super::super::scalar::text_map")]
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaProducerConfig {
    fn default() -> Self {
        KafkaProducerConfig {
            required_acks: Acks::All,
            idempotent: true,
            compression: Compression::None,
            linger: Duration::from_millis(5),
            batch_max_messages: 10_000,
            batch_max_bytes: 1_000_000,
            buffer_max_messages: 100_000,
            retries: i32::MAX as u32,
            retry_backoff: Duration::from_millis(100),
            message_timeout: Duration::from_secs(30),
            partitioner: Partitioner::Murmur2Random,
            id_header: IdHeader::XMessageId,
            properties: BTreeMap::new(),
        }
    }
}

impl fmt::Debug for KafkaProducerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaProducerConfig")
            .field("required_acks", &self.required_acks)
            .field("idempotent", &self.idempotent)
            .field("compression", &self.compression)
            .field("linger", &self.linger)
            .field("batch_max_messages", &self.batch_max_messages)
            .field("batch_max_bytes", &self.batch_max_bytes)
            .field("buffer_max_messages", &self.buffer_max_messages)
            .field("retries", &self.retries)
            .field("retry_backoff", &self.retry_backoff)
            .field("message_timeout", &self.message_timeout)
            .field("partitioner", &self.partitioner)
            .field("id_header", &self.id_header)
            .field("properties", &Redacted(&self.properties))
            .finish()
    }
}

impl KafkaProducerConfig {
    pub(super) fn validate(&self) -> Result<()> {
        // Every check is independent (millisecond sums in u128): all run.
        let mut p = Problems::default();
        if self.idempotent && self.required_acks != Acks::All {
            p.push(Error::config(
                "kafka.producer.required_acks",
                format!(
                    "{:?} is not allowed with kafka.producer.idempotent: true; use `all`, \
                     or turn idempotence off (retries may then duplicate or reorder records)",
                    self.required_acks
                ),
            ));
        }
        if self.idempotent && self.retries == 0 {
            p.push(Error::config(
                "kafka.producer.retries",
                "0 is not allowed with kafka.producer.idempotent: true; use at least 1",
            ));
        }
        if self.retries > i32::MAX as u32 {
            p.push(Error::config(
                "kafka.producer.retries",
                format!("{} is too large: at most {}", self.retries, i32::MAX),
            ));
        }
        p.check(in_range(
            "kafka.producer.batch_max_messages",
            self.batch_max_messages,
            1,
            1_000_000,
        ));
        p.check(in_range(
            "kafka.producer.batch_max_bytes",
            self.batch_max_bytes,
            1,
            i32::MAX as u32,
        ));
        p.check(in_range(
            "kafka.producer.buffer_max_messages",
            self.buffer_max_messages,
            1,
            2_147_483_647,
        ));
        if self.linger > Duration::from_secs(900) {
            p.push(Error::config(
                "kafka.producer.linger",
                format!("{:?} is too long: at most 900s", self.linger),
            ));
        }
        p.check(positive(
            "kafka.producer.message_timeout",
            self.message_timeout,
        ));
        p.check(at_most_i32_ms(
            "kafka.producer.message_timeout",
            self.message_timeout,
        ));
        p.check(at_most_i32_ms(
            "kafka.producer.retry_backoff",
            self.retry_backoff,
        ));
        if millis(self.message_timeout) <= millis(self.linger) {
            p.push(Error::config(
                "kafka.producer.message_timeout",
                format!(
                    "{:?} must be longer than kafka.producer.linger ({:?})",
                    self.message_timeout, self.linger
                ),
            ));
        }
        p.finish()
    }
}
