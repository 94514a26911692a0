//! Apache Kafka backend settings.
//!
//! Every field maps to one librdkafka property (named in its doc) or to a
//! choice the backend makes; fields the backend must control for its
//! delivery guarantees (offset storing, the assignor, auto-commit) are not
//! configurable at all. Anything else librdkafka offers goes through the
//! `properties` maps, which refuse keys that have a field here so that no
//! setting has two sources.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::problems::Problems;
use crate::error::{Error, Result};

// The mappings to librdkafka properties are used only by the backend; the
// settings themselves are parsed and validated in every build, so a config
// file means the same with or without the `kafka` feature.
#[cfg_attr(not(feature = "kafka"), allow(dead_code))]
mod consumer;
#[cfg_attr(not(feature = "kafka"), allow(dead_code))]
mod producer;
mod properties;
#[cfg_attr(not(feature = "kafka"), allow(dead_code))]
mod security;
mod topics;

pub use consumer::{KafkaConsumerConfig, OffsetReset};
pub use producer::{Acks, Compression, IdHeader, KafkaProducerConfig, Partitioner};
pub use security::{KafkaNetConfig, KafkaSaslConfig, KafkaTlsConfig, SaslMechanism, Secret};
pub use topics::{TopicCompression, TopicSettings, TopicStrategy};

#[cfg(feature = "kafka")]
pub(crate) use properties::has_own_field;
pub(crate) use properties::{is_secret, Redacted};

/// Kafka settings (used when `backend: kafka`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port` (`bootstrap.servers`). More than one
    /// lets the bus start while a broker is down. Required with
    /// `backend: kafka` (in the file, or `EVENTBUS_KAFKA_BROKERS=a:9092,b:9092`):
    /// there is no default broker. Default empty.
    pub brokers: Vec<String>,
    /// Client id sent to the brokers (`client.id`), visible in broker logs
    /// and quotas. Default `"jxt-eventbus"`.
    pub client_id: String,
    /// How long `build()` waits for a broker to answer a metadata request,
    /// and how long `health()` waits for one. Default 10s.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Check at `build()` that a broker answers (within `connect_timeout`)
    /// and fail with the reason when none does. Set to false to start while
    /// Kafka is down: publishes then fail with timeouts, and `health()`
    /// reports the backend unhealthy, until a broker is reachable.
    /// Default true.
    pub verify_connection: bool,
    /// Static group membership (`group.instance.id`). When set, a restart of
    /// this bus within `consumer.session_timeout` gets its partitions back
    /// without a rebalance; shutdown does not leave the group, so its
    /// partitions wait for the session timeout before moving. Must be unique
    /// per bus instance in the group (a second bus with the same id fences
    /// the first). Default unset (dynamic membership).
    pub group_instance_id: Option<String>,
    /// Producer settings.
    pub producer: KafkaProducerConfig,
    /// Consumer settings.
    pub consumer: KafkaConsumerConfig,
    /// Network timeouts.
    pub net: KafkaNetConfig,
    /// TLS to the brokers. Unset: plaintext (unless `properties` set
    /// `security.protocol`). Default unset.
    pub tls: Option<KafkaTlsConfig>,
    /// SASL authentication (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512). Other
    /// mechanisms (GSSAPI, OAUTHBEARER) go through `properties`.
    /// Default unset.
    pub sasl: Option<KafkaSaslConfig>,
    /// What the bus does about topics it publishes to or subscribes to:
    /// create missing ones, update, only validate, or leave them alone.
    /// Default `create_only`.
    pub topic_strategy: TopicStrategy,
    /// Settings of topics the bus creates (or checks), unless `topics` has
    /// an entry for the topic. Default: every field unset (broker defaults).
    pub topic_defaults: TopicSettings,
    /// Per-topic settings, keyed by topic name; unset fields fall back to
    /// `topic_defaults`. Topics listed here are ensured at `build()`; others
    /// when first published to or subscribed. Default empty.
    pub topics: BTreeMap<String, TopicSettings>,
    /// How long one topic admin operation (describe, create, alter) may
    /// take. Default 30s.
    #[serde(with = "humantime_serde")]
    pub admin_timeout: Duration,
    /// Any other librdkafka property, applied to every client (producer,
    /// consumer, admin). Keys that have a field in this section, and keys
    /// the backend manages itself, are refused with the field to use.
    /// Default empty.
    #[serde(deserialize_with = "super::scalar::text_map")]
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: Vec::new(),
            client_id: "jxt-eventbus".into(),
            connect_timeout: Duration::from_secs(10),
            verify_connection: true,
            group_instance_id: None,
            producer: KafkaProducerConfig::default(),
            consumer: KafkaConsumerConfig::default(),
            net: KafkaNetConfig::default(),
            tls: None,
            sasl: None,
            topic_strategy: TopicStrategy::CreateOnly,
            topic_defaults: TopicSettings::default(),
            topics: BTreeMap::new(),
            admin_timeout: Duration::from_secs(30),
            properties: BTreeMap::new(),
        }
    }
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("client_id", &self.client_id)
            .field("connect_timeout", &self.connect_timeout)
            .field("verify_connection", &self.verify_connection)
            .field("group_instance_id", &self.group_instance_id)
            .field("producer", &self.producer)
            .field("consumer", &self.consumer)
            .field("net", &self.net)
            .field("tls", &self.tls)
            .field("sasl", &self.sasl)
            .field("topic_strategy", &self.topic_strategy)
            .field("topic_defaults", &self.topic_defaults)
            .field("topics", &self.topics)
            .field("admin_timeout", &self.admin_timeout)
            .field("properties", &Redacted(&self.properties))
            .finish()
    }
}

impl KafkaConfig {
    /// Checks the Kafka section: value ranges, combinations librdkafka
    /// refuses, and pass-through properties that collide with a field.
    ///
    /// # Errors
    /// [`Error::Config`] naming the field under `kafka.` and what is
    /// allowed; [`Error::InvalidConfig`] when there are several problems.
    pub fn validate(&self) -> Result<()> {
        let mut p = Problems::default();
        if self.brokers.iter().any(|b| b.trim().is_empty()) {
            p.push(Error::config(
                "kafka.brokers",
                "an entry is empty: give `host:port` for each broker",
            ));
        }
        if self.client_id.is_empty() {
            p.push(Error::config("kafka.client_id", "must not be empty"));
        }
        p.check(positive("kafka.connect_timeout", self.connect_timeout));
        p.check(positive("kafka.admin_timeout", self.admin_timeout));
        p.check(super::bounds::at_most_timer(
            "kafka.connect_timeout",
            self.connect_timeout,
        ));
        p.check(super::bounds::at_most_timer(
            "kafka.admin_timeout",
            self.admin_timeout,
        ));
        if let Some(id) = &self.group_instance_id {
            if id.is_empty() || crate::validate::topic(id).is_err() {
                p.push(Error::config(
                    "kafka.group_instance_id",
                    format!("{id:?} is not allowed: use 1 to 249 characters of A-Z a-z 0-9 . _ -"),
                ));
            }
        }
        p.check(self.producer.validate());
        p.check(self.consumer.validate());
        p.check(self.net.validate());
        if let Some(sasl) = &self.sasl {
            p.check(sasl.validate());
        }
        p.check(self.topic_defaults.validate("kafka.topic_defaults"));
        for (name, settings) in &self.topics {
            if crate::validate::topic(name).is_err() {
                p.push(Error::config(
                    format!("kafka.topics.{name}"),
                    "not a valid topic name: use 1 to 249 characters of A-Z a-z 0-9 . _ -",
                ));
            }
            p.check(settings.validate(&format!("kafka.topics.{name}")));
        }
        let security = self.tls.is_some() || self.sasl.is_some();
        p.check(properties::check(
            "kafka.properties",
            &self.properties,
            security,
        ));
        p.check(properties::check(
            "kafka.producer.properties",
            &self.producer.properties,
            security,
        ));
        p.check(properties::check(
            "kafka.consumer.properties",
            &self.consumer.properties,
            security,
        ));
        p.finish()
    }

    /// Settings for `topic`: its `topics` entry over `topic_defaults`.
    pub fn topic_settings(&self, topic: &str) -> TopicSettings {
        match self.topics.get(topic) {
            Some(t) => t.over(&self.topic_defaults),
            None => self.topic_defaults.clone(),
        }
    }
}

fn positive(field: &str, d: Duration) -> Result<()> {
    if d.is_zero() {
        return Err(Error::config(
            field,
            "0 is not allowed: use a duration such as \"10s\"",
        ));
    }
    Ok(())
}

/// Milliseconds for a librdkafka `*.ms` property, at least 1 for a non-zero
/// duration.
fn millis(d: Duration) -> u128 {
    let ms = d.as_millis();
    if ms == 0 && !d.is_zero() {
        1
    } else {
        ms
    }
}

/// A librdkafka `*.ms` property must fit in an i32.
fn at_most_i32_ms(field: &str, d: Duration) -> Result<()> {
    if millis(d) > i32::MAX as u128 {
        return Err(Error::config(
            field,
            format!("{d:?} is too long: at most {}ms", i32::MAX),
        ));
    }
    Ok(())
}

fn in_range<T: PartialOrd + fmt::Display>(field: &str, value: T, min: T, max: T) -> Result<()> {
    if value < min || value > max {
        return Err(Error::config(
            field,
            format!("{value} is not allowed: use {min} to {max}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BusConfig;

    #[test]
    fn defaults_are_valid() {
        KafkaConfig::default().validate().unwrap();
    }

    #[test]
    fn idempotence_needs_acks_all() {
        let mut c = KafkaConfig::default();
        c.producer.required_acks = Acks::Leader;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("kafka.producer.required_acks"), "{e}");
        c.producer.idempotent = false;
        c.validate().unwrap();
    }

    #[test]
    fn managed_properties_are_refused_with_the_field_to_use() {
        let mut c = KafkaConfig::default();
        c.properties
            .insert("enable.auto.offset.store".into(), "true".into());
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("kafka.properties.enable.auto.offset.store"),
            "{e}"
        );
        assert!(e.contains("managed"), "{e}");

        let mut c = KafkaConfig::default();
        c.producer.properties.insert("acks".into(), "1".into());
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("kafka.producer.required_acks"), "{e}");

        let mut c = KafkaConfig::default();
        c.consumer
            .properties
            .insert("statistics.interval.ms".into(), "0".into());
        c.properties
            .insert("security.protocol".into(), "ssl".into());
        c.validate().unwrap();
        c.sasl = Some(KafkaSaslConfig {
            mechanism: SaslMechanism::ScramSha512,
            username: "u".into(),
            password: Secret::new("p"),
        });
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("kafka.tls"), "{e}");
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let mut c = KafkaConfig {
            sasl: Some(KafkaSaslConfig {
                mechanism: SaslMechanism::Plain,
                username: "alice".into(),
                password: Secret::new("hunter2"),
            }),
            tls: Some(KafkaTlsConfig {
                key_password: Some(Secret::new("keypass")),
                ..KafkaTlsConfig::default()
            }),
            ..KafkaConfig::default()
        };
        c.properties
            .insert("sasl.oauthbearer.client.secret".into(), "s3cr3t".into());
        let shown = format!("{c:?}");
        assert!(shown.contains("alice"), "{shown}");
        for secret in ["hunter2", "keypass", "s3cr3t"] {
            assert!(!shown.contains(secret), "{secret} shown in {shown}");
        }
    }

    /// Loads `path` in a jail with no environment variables, so that the
    /// caller's `EVENTBUS_*` variables do not apply.
    #[allow(clippy::result_large_err)]
    fn load_without_env(path: &std::path::Path) -> Result<BusConfig> {
        let mut out = None;
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            out = Some(BusConfig::load(Some(path)));
            Ok(())
        });
        out.unwrap()
    }

    #[test]
    fn loads_from_yaml_with_durations_and_maps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bus.yaml");
        std::fs::write(
            &path,
            r#"
backend: kafka
kafka:
  brokers: ["k1:9092", "k2:9092"]
  group_instance_id: billing-1
  producer:
    required_acks: all
    compression: zstd
    linger: 2ms
    message_timeout: 15s
  consumer:
    session_timeout: 30s
    fetch_max_wait: 100ms
  sasl:
    mechanism: scram_sha_256
    username: svc
    password: pw
  topic_strategy: create_or_update
  topic_defaults:
    partitions: 6
    retention: 7days
  topics:
    orders:
      partitions: 12
      compression: zstd
  properties:
    statistics.interval.ms: "0"
"#,
        )
        .unwrap();
        let c = load_without_env(&path).unwrap();
        let k = &c.kafka;
        assert_eq!(k.brokers, ["k1:9092", "k2:9092"]);
        assert_eq!(k.producer.compression, Compression::Zstd);
        assert_eq!(k.producer.linger, Duration::from_millis(2));
        assert_eq!(k.consumer.fetch_max_wait, Duration::from_millis(100));
        assert_eq!(k.topic_strategy, TopicStrategy::CreateOrUpdate);
        let orders = k.topic_settings("orders");
        assert_eq!(orders.partitions, Some(12));
        assert_eq!(orders.retention, Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(orders.compression, Some(TopicCompression::Zstd));
        assert_eq!(k.topic_settings("other").partitions, Some(6));
        assert_eq!(k.sasl.as_ref().unwrap().password.expose(), "pw");
    }

    #[test]
    fn unknown_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bus.yaml");
        std::fs::write(&path, "kafka:\n  producer:\n    lingr: 5ms\n").unwrap();
        let e = load_without_env(&path).unwrap_err().to_string();
        assert!(e.contains("lingr"), "{e}");
    }
}
