//! What the Kafka backend does about topics: the strategy and per-topic
//! settings.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::in_range;
use crate::error::{Error, Result};

/// What the bus does with a topic before it first publishes to it or
/// subscribes to it (jxt-core's topic strategies). Brokers usually have
/// `auto.create.topics.enable=false`; the bus never relies on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TopicStrategy {
    /// Create a missing topic with its settings; leave existing topics as
    /// they are, whatever their settings. The default.
    #[default]
    CreateOnly,
    /// Create a missing topic; on an existing one add partitions up to the
    /// configured count and set the configured retention, compression and
    /// `config` entries. Partitions are never removed and the replication
    /// factor is not changed (a warning says when they differ).
    CreateOrUpdate,
    /// Create nothing: a missing topic, or one whose partitions, replication
    /// factor or configured entries differ, is an error naming the topic and
    /// the difference.
    ValidateOnly,
    /// Do nothing: topics are managed elsewhere. Publishing to a missing
    /// topic fails after `producer.message_timeout`.
    Skip,
}

/// Topic-level compression (`compression.type` of the topic).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TopicCompression {
    /// Keep what the producer sent.
    Producer,
    /// Store uncompressed.
    Uncompressed,
    /// gzip.
    Gzip,
    /// snappy.
    Snappy,
    /// lz4.
    Lz4,
    /// zstd.
    Zstd,
}

impl TopicCompression {
    pub(crate) fn as_config(self) -> &'static str {
        match self {
            TopicCompression::Producer => "producer",
            TopicCompression::Uncompressed => "uncompressed",
            TopicCompression::Gzip => "gzip",
            TopicCompression::Snappy => "snappy",
            TopicCompression::Lz4 => "lz4",
            TopicCompression::Zstd => "zstd",
        }
    }
}

/// Settings of one topic. Unset fields mean "the broker's default" when
/// creating, and "do not check" when validating or updating.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicSettings {
    /// Partitions. More partitions allow more parallel members in a group;
    /// per-key order holds within a partition. Default unset (the broker's
    /// `num.partitions`).
    pub partitions: Option<u32>,
    /// Copies of each partition. Default unset (the broker's
    /// `default.replication.factor`).
    pub replication_factor: Option<u16>,
    /// How long records are kept (`retention.ms`). Default unset.
    #[serde(with = "humantime_serde")]
    pub retention: Option<Duration>,
    /// Bytes kept per partition (`retention.bytes`). Default unset.
    pub retention_bytes: Option<u64>,
    /// Topic-level compression (`compression.type`). Default unset.
    pub compression: Option<TopicCompression>,
    /// Other topic configuration entries (`cleanup.policy`,
    /// `min.insync.replicas`, ...). Default empty.
    #[serde(deserialize_with = "super::super::scalar::text_map")]
    pub config: BTreeMap<String, String>,
}

impl TopicSettings {
    /// These settings with unset fields taken from `defaults`; `config`
    /// entries are merged, these winning.
    pub fn over(&self, defaults: &TopicSettings) -> TopicSettings {
        let mut config = defaults.config.clone();
        config.extend(self.config.iter().map(|(k, v)| (k.clone(), v.clone())));
        TopicSettings {
            partitions: self.partitions.or(defaults.partitions),
            replication_factor: self.replication_factor.or(defaults.replication_factor),
            retention: self.retention.or(defaults.retention),
            retention_bytes: self.retention_bytes.or(defaults.retention_bytes),
            compression: self.compression.or(defaults.compression),
            config,
        }
    }

    /// Topic configuration entries these settings ask for, typed fields
    /// included (`retention.ms`, `retention.bytes`, `compression.type`).
    pub fn config_entries(&self) -> BTreeMap<String, String> {
        let mut out = self.config.clone();
        if let Some(r) = self.retention {
            out.insert("retention.ms".into(), r.as_millis().to_string());
        }
        if let Some(b) = self.retention_bytes {
            out.insert("retention.bytes".into(), b.to_string());
        }
        if let Some(c) = self.compression {
            out.insert("compression.type".into(), c.as_config().into());
        }
        out
    }

    pub(super) fn validate(&self, field: &str) -> Result<()> {
        if let Some(p) = self.partitions {
            in_range(&format!("{field}.partitions"), p, 1, 1_000_000)?;
        }
        if let Some(r) = self.replication_factor {
            in_range(&format!("{field}.replication_factor"), r, 1, 1_000)?;
        }
        if let Some(r) = self.retention {
            if r.as_millis() == 0 || r.as_millis() > i64::MAX as u128 {
                return Err(Error::config(
                    format!("{field}.retention"),
                    format!("{r:?} is not allowed: use a positive duration"),
                ));
            }
        }
        if let Some(b) = self.retention_bytes {
            in_range(&format!("{field}.retention_bytes"), b, 1, i64::MAX as u64)?;
        }
        for (key, typed) in [
            ("retention.ms", "retention"),
            ("retention.bytes", "retention_bytes"),
            ("compression.type", "compression"),
        ] {
            if self.config.contains_key(key) {
                return Err(Error::config(
                    format!("{field}.config.{key}"),
                    format!("set it with {field}.{typed} instead"),
                ));
            }
        }
        Ok(())
    }
}
