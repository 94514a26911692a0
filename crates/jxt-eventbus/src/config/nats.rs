//! NATS JetStream backend settings.
//!
//! How topics map onto JetStream (subjects, streams, durable consumers) is
//! described in the backend's module documentation (`backend::nats`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::problems::Problems;
use super::{bounds, Secret, TopicStrategy};
use crate::error::{Error, Result};

/// NATS settings (used when `backend: nats`). `Debug` shows server URLs
/// with their passwords masked.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    /// Server URLs (`nats://host:port`, `tls://host:port`). The client
    /// connects to one and fails over to the others, and to the servers the
    /// cluster announces. Credentials in a URL (`nats://user:password@host`,
    /// `nats://token@host`) are used when `auth` sets none, and are masked
    /// wherever a URL is shown (errors, logs, health, `Debug`). Default
    /// `["nats://127.0.0.1:4222"]`.
    pub servers: Vec<String>,
    /// Connection name shown in the server's monitoring. Default: unset, the
    /// bus uses `jxt-eventbus/<group>`.
    pub connection_name: Option<String>,
    /// Credentials. Default: none.
    pub auth: NatsAuth,
    /// TLS. Default: off unless a `tls://` URL or the server asks for it.
    pub tls: NatsTls,
    /// JetStream domain (leaf-node setups); unset uses the account's own
    /// JetStream. Default: unset.
    pub domain: Option<String>,
    /// How long connecting to a server may take; the first connection failing
    /// fails [`build`](crate::EventBusBuilder::build). Default 5s.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Timeout of JetStream API requests (stream and consumer admin, consumer
    /// info for lag). Default 10s.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How long a publish waits for the stream's PubAck before it fails with
    /// [`Error::Timeout`] (the record may still have been stored; publishing
    /// it again is de-duplicated by its id), counted from when the record
    /// went out — in a batch too, so a batch whose PubAcks are lost fails
    /// about this long after its last record was sent. Default 10s.
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
    /// Consumer `ack_wait`: a delivered record that is neither acknowledged
    /// nor marked in progress within this time is redelivered. Records
    /// waiting in a key lane or running in a handler are marked in progress
    /// every `ack_wait / 3`, so a slow handler is not redelivered while this
    /// bus lives; after a crash, its unfinished records are redelivered to the
    /// group once this elapses. Default 30s.
    #[serde(with = "humantime_serde")]
    pub ack_wait: Duration,
    /// Consumer `max_ack_pending`: records of one topic delivered to the
    /// whole group and not yet acknowledged. The server stops delivering at
    /// this count, so it caps the group's parallelism. Default: unset, which
    /// uses `dispatch.max_buffered` (one bus's whole buffer; with
    /// `consumer.sharing: shared`, raise it for groups of several members).
    /// JetStream's own default of 1000 is not used: it would stall a bus
    /// whose buffer is larger.
    pub max_ack_pending: Option<u32>,
    /// Records asked for per pull request. Larger batches cost fewer round
    /// trips. A topic never holds more than
    /// `dispatch.max_buffered_per_partition` plus one batch: no pull request
    /// is sent that could exceed it. Capped at half of
    /// `dispatch.max_buffered_per_partition`. Default 256.
    pub pull_batch: usize,
    /// Lifetime of a pull request on the server. Default 30s.
    #[serde(with = "humantime_serde")]
    pub pull_expires: Duration,
    /// Idle heartbeat the server sends while a pull request waits. Two missed
    /// heartbeats make the bus re-check the consumer (recreating it if it was
    /// deleted) and pull again. At most half of `pull_expires`. Default 5s.
    #[serde(with = "humantime_serde")]
    pub idle_heartbeat: Duration,
    /// How the buses of one group share a topic's records. Default: one bus
    /// at a time (`sharing: pinned`).
    pub consumer: NatsConsumerSettings,
    /// What the bus does about a topic's stream the first time it publishes
    /// or subscribes to the topic. Default `create_only`.
    pub topic_strategy: TopicStrategy,
    /// Stream settings of every topic, unless overridden in `topics`.
    pub stream: NatsStreamSettings,
    /// Per-topic overrides, by topic name. A dead-letter topic
    /// (`<topic><dead_letter.suffix>`) without an entry of its own uses the
    /// settings of its topic (except `stream`). Default: none.
    pub topics: BTreeMap<String, NatsTopicSettings>,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            servers: vec!["nats://127.0.0.1:4222".into()],
            connection_name: None,
            auth: NatsAuth::default(),
            tls: NatsTls::default(),
            domain: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            publish_timeout: Duration::from_secs(10),
            ack_wait: Duration::from_secs(30),
            max_ack_pending: None,
            pull_batch: 256,
            pull_expires: Duration::from_secs(30),
            idle_heartbeat: Duration::from_secs(5),
            consumer: NatsConsumerSettings::default(),
            topic_strategy: TopicStrategy::CreateOnly,
            stream: NatsStreamSettings::default(),
            topics: BTreeMap::new(),
        }
    }
}

impl std::fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsConfig")
            .field("servers", &super::redact::MaskedUrls(&self.servers))
            .field("connection_name", &self.connection_name)
            .field("auth", &self.auth)
            .field("tls", &self.tls)
            .field("domain", &self.domain)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("publish_timeout", &self.publish_timeout)
            .field("ack_wait", &self.ack_wait)
            .field("max_ack_pending", &self.max_ack_pending)
            .field("pull_batch", &self.pull_batch)
            .field("pull_expires", &self.pull_expires)
            .field("idle_heartbeat", &self.idle_heartbeat)
            .field("consumer", &self.consumer)
            .field("topic_strategy", &self.topic_strategy)
            .field("stream", &self.stream)
            .field("topics", &self.topics)
            .finish()
    }
}

/// How the buses of one group share each topic's durable consumer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConsumerSettings {
    /// Which buses of the group receive a topic's records. Default `pinned`.
    /// Every bus of a group must use the same value: a bus refuses to
    /// subscribe while other buses of its group pull the topic with the
    /// other one, and switches the group's consumer when none does.
    pub sharing: NatsSharing,
    /// With `sharing: pinned`, how long the pinned bus keeps a topic after
    /// it stopped pulling (it crashed or lost its connection) before a
    /// standby bus takes over. A bus that shuts down, is dropped or
    /// unsubscribes hands over at once; a live bus renews its pin even while
    /// paused. Default: unset, twice `ack_wait`, so that the records a
    /// crashed bus held are redelivered before the standby is pinned and
    /// per-key order holds across the crash. Shorter values take over sooner
    /// after a crash, but the crashed bus's records may then come after
    /// later records of their keys. At least 1s.
    #[serde(with = "humantime_serde")]
    pub pinned_ttl: Option<Duration>,
    /// With `sharing: pinned`, spread the group's topics over its buses: a
    /// bus pinned to at least two topics more than another bus of the group
    /// subscribed to one of them hands that topic over to it (in key order,
    /// as when it unsubscribes), and a free topic goes to the bus with the
    /// fewest. Without it a standby takes a topic only when its bus stops,
    /// so the bus that started first keeps them all. Default `true`.
    pub balance: bool,
    /// How often a bus compares its topics with the rest of its group (one
    /// core NATS request to the group's buses). Default `10s`, at least 1s.
    #[serde(with = "humantime_serde")]
    pub balance_interval: Duration,
}

impl Default for NatsConsumerSettings {
    fn default() -> Self {
        NatsConsumerSettings {
            sharing: NatsSharing::default(),
            pinned_ttl: None,
            balance: true,
            balance_interval: Duration::from_secs(10),
        }
    }
}

/// How the buses of one group share a topic (`nats.consumer.sharing`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NatsSharing {
    /// One bus of the group receives all of a topic's records (JetStream
    /// priority group, pinned client); the others stand by and take over
    /// when it stops. Per-key order holds across the whole group, as on
    /// Kafka; a topic is handled by one bus at a time. The default.
    #[default]
    Pinned,
    /// Every bus of the group pulls the topic and JetStream spreads the
    /// records among them one by one. Spreads load, but per-key order holds
    /// only within one bus: two records of a key may be handled at once by
    /// two buses, or out of order.
    Shared,
}

/// Credentials for the NATS connection. Set at most one of: `token`;
/// `user` with `password`; `creds_file`; `nkey_seed`. Secrets are redacted
/// in `Debug` output.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsAuth {
    /// Token authentication. Default: unset.
    pub token: Option<Secret>,
    /// User name (with `password`). Default: unset.
    pub user: Option<String>,
    /// Password (with `user`). Default: unset.
    pub password: Option<Secret>,
    /// A `.creds` file (user JWT and NKey seed), as issued by `nsc`.
    /// Default: unset.
    pub creds_file: Option<PathBuf>,
    /// An NKey seed (`SU...`). Default: unset.
    pub nkey_seed: Option<Secret>,
}

/// TLS for the NATS connection.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsTls {
    /// Refuse to connect without TLS. Without it, TLS is still used for
    /// `tls://` URLs and for servers that require it. Default false.
    pub required: bool,
    /// PEM file of CA certificates to trust in addition to the system's.
    /// Default: unset.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for servers that verify clients (with
    /// `key_file`). Default: unset.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`. Default: unset.
    pub key_file: Option<PathBuf>,
    /// Start the TLS handshake before the NATS protocol (servers configured
    /// with `handshake_first`). Default false.
    pub handshake_first: bool,
}

/// Where a stream keeps its records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NatsStorage {
    /// On disk: survives server restarts. The default.
    #[default]
    File,
    /// In memory: faster, lost when the server stops.
    Memory,
}

/// When a stream drops records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NatsRetention {
    /// Kept until a limit (`max_age`, `max_bytes`, `max_messages`) removes
    /// the oldest, whether consumed or not; like a Kafka topic. The default.
    #[default]
    Limits,
    /// Kept until every consumer group (durable consumer) acknowledged them.
    Interest,
    /// Removed once acknowledged by the one consumer group allowed on the
    /// stream: a second group fails to subscribe.
    #[serde(alias = "workqueue")]
    WorkQueue,
}

/// Stream settings used for every topic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsStreamSettings {
    /// Storage. Default `file`.
    pub storage: NatsStorage,
    /// Retention. Default `limits`.
    pub retention: NatsRetention,
    /// Copies kept in a cluster, 1 to 5. Default 1.
    pub replicas: usize,
    /// Oldest record kept. Default: unset (no age limit).
    #[serde(with = "humantime_serde")]
    pub max_age: Option<Duration>,
    /// Bytes kept; the oldest records go first. Default: unset (no limit).
    pub max_bytes: Option<u64>,
    /// Records kept; the oldest go first. Default: unset (no limit).
    pub max_messages: Option<u64>,
    /// Window in which a second publish with the same message id is dropped
    /// as a duplicate. Default: unset (the server's, 2 minutes).
    #[serde(with = "humantime_serde")]
    pub duplicate_window: Option<Duration>,
}

impl Default for NatsStreamSettings {
    fn default() -> Self {
        NatsStreamSettings {
            storage: NatsStorage::File,
            retention: NatsRetention::Limits,
            replicas: 1,
            max_age: None,
            max_bytes: None,
            max_messages: None,
            duplicate_window: None,
        }
    }
}

/// Settings of one topic; unset fields come from [`NatsConfig::stream`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsTopicSettings {
    /// Name of the stream holding the topic. Default: unset, which uses the
    /// stream that already captures the topic's subject, or else creates one
    /// named after the topic.
    pub stream: Option<String>,
    /// Storage. Default: `stream.storage`.
    pub storage: Option<NatsStorage>,
    /// Retention. Default: `stream.retention`.
    pub retention: Option<NatsRetention>,
    /// Replicas. Default: `stream.replicas`.
    pub replicas: Option<usize>,
    /// Oldest record kept. Default: `stream.max_age`.
    #[serde(with = "humantime_serde")]
    pub max_age: Option<Duration>,
    /// Bytes kept. Default: `stream.max_bytes`.
    pub max_bytes: Option<u64>,
    /// Records kept. Default: `stream.max_messages`.
    pub max_messages: Option<u64>,
    /// Duplicate window. Default: `stream.duplicate_window`.
    #[serde(with = "humantime_serde")]
    pub duplicate_window: Option<Duration>,
}

impl NatsConfig {
    /// The pin lifetime of the group's consumers: `None` when the group
    /// shares records record by record.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn pinned_ttl(&self) -> Option<Duration> {
        match self.consumer.sharing {
            NatsSharing::Shared => None,
            NatsSharing::Pinned => Some(self.consumer.pinned_ttl.unwrap_or(self.ack_wait * 2)),
        }
    }

    /// The stream name override and the stream settings of `topic`. A
    /// dead-letter topic without its own entry inherits its topic's settings
    /// but not its stream name.
    pub(crate) fn topic_settings(
        &self,
        topic: &str,
        dead_letter_suffix: &str,
    ) -> (Option<String>, NatsStreamSettings) {
        let (name, entry) = match self.topics.get(topic) {
            Some(t) => (t.stream.clone(), Some(t)),
            None => {
                let base = (!dead_letter_suffix.is_empty())
                    .then(|| topic.strip_suffix(dead_letter_suffix))
                    .flatten();
                (None, base.and_then(|b| self.topics.get(b)))
            }
        };
        let d = &self.stream;
        let settings = match entry {
            None => d.clone(),
            Some(t) => NatsStreamSettings {
                storage: t.storage.unwrap_or(d.storage),
                retention: t.retention.unwrap_or(d.retention),
                replicas: t.replicas.unwrap_or(d.replicas),
                max_age: t.max_age.or(d.max_age),
                max_bytes: t.max_bytes.or(d.max_bytes),
                max_messages: t.max_messages.or(d.max_messages),
                duplicate_window: t.duplicate_window.or(d.duplicate_window),
            },
        };
        (name, settings)
    }

    /// Checks value ranges and combinations that serde cannot.
    ///
    /// # Errors
    /// [`Error::Config`] naming the `nats.*` field and what is allowed;
    /// [`Error::InvalidConfig`] when there are several problems.
    pub fn validate(&self) -> Result<()> {
        let mut p = Problems::default();
        if self.servers.is_empty() {
            p.push(Error::config(
                "nats.servers",
                "empty: list at least one server URL such as nats://127.0.0.1:4222",
            ));
        }
        for (i, s) in self.servers.iter().enumerate() {
            #[cfg(feature = "nats")]
            let bad = s
                .parse::<async_nats::ServerAddr>()
                .err()
                .map(|e| e.to_string());
            #[cfg(not(feature = "nats"))]
            let bad = s.trim().is_empty().then(|| "empty".to_string());
            if let Some(e) = bad {
                p.push(Error::config(
                    format!("nats.servers[{i}]"),
                    format!(
                        "{:?} is not a server URL ({e}): use nats://host:port or tls://host:port",
                        super::redact::url(s)
                    ),
                ));
            }
        }
        p.check(self.validate_auth());
        let tls = &self.tls;
        if tls.cert_file.is_some() != tls.key_file.is_some() {
            p.push(Error::config(
                "nats.tls.cert_file",
                "cert_file and key_file go together: set both or neither",
            ));
        }
        for (field, path) in [
            ("nats.tls.ca_file", &tls.ca_file),
            ("nats.tls.cert_file", &tls.cert_file),
            ("nats.tls.key_file", &tls.key_file),
        ] {
            if let Some(path) = path {
                if !path.is_file() {
                    p.push(Error::config(
                        field,
                        format!("{} does not exist or is not a file", path.display()),
                    ));
                }
            }
        }
        if let Some(domain) = &self.domain {
            if !is_valid_name(domain) {
                p.push(Error::config(
                    "nats.domain",
                    format!(
                        "{domain:?} is not a valid JetStream domain: no spaces, '.', '*' or '>'"
                    ),
                ));
            }
        }
        let mut timers = Problems::default();
        for (field, value, min) in [
            (
                "nats.connect_timeout",
                self.connect_timeout,
                Duration::from_millis(100),
            ),
            (
                "nats.request_timeout",
                self.request_timeout,
                Duration::from_millis(100),
            ),
            (
                "nats.publish_timeout",
                self.publish_timeout,
                Duration::from_millis(100),
            ),
            ("nats.ack_wait", self.ack_wait, Duration::from_secs(1)),
            (
                "nats.pull_expires",
                self.pull_expires,
                Duration::from_secs(1),
            ),
            (
                "nats.idle_heartbeat",
                self.idle_heartbeat,
                Duration::from_millis(100),
            ),
            (
                "nats.consumer.balance_interval",
                self.consumer.balance_interval,
                Duration::from_secs(1),
            ),
        ] {
            timers.check(bounds::timer(field, value, min));
        }
        // Doubling a timer is exact only once it is in range.
        if timers.is_empty() && self.idle_heartbeat * 2 > self.pull_expires {
            timers.push(Error::config(
                "nats.idle_heartbeat",
                format!(
                    "{:?} is more than half of nats.pull_expires ({:?}): the server needs \
                     heartbeats well inside a pull request's lifetime",
                    self.idle_heartbeat, self.pull_expires
                ),
            ));
        }
        p.check(timers.finish());
        if !(1..=10_000).contains(&self.pull_batch) {
            p.push(Error::config(
                "nats.pull_batch",
                format!("{} is not allowed: use 1 to 10000", self.pull_batch),
            ));
        }
        if let Some(ttl) = self.consumer.pinned_ttl {
            if self.consumer.sharing == NatsSharing::Shared {
                p.push(Error::config(
                    "nats.consumer.pinned_ttl",
                    "only applies to nats.consumer.sharing: pinned; remove it or use pinned",
                ));
            }
            p.check(bounds::timer(
                "nats.consumer.pinned_ttl",
                ttl,
                Duration::from_secs(1),
            ));
        }
        if self.max_ack_pending == Some(0) {
            p.push(Error::config(
                "nats.max_ack_pending",
                "0 is not allowed: use at least 1, or leave it unset for dispatch.max_buffered",
            ));
        }
        p.check(validate_stream("nats.stream", &self.stream));
        for (topic, t) in &self.topics {
            let path = format!("nats.topics.{topic}");
            p.check(crate::validate::topic(topic).map_err(|e| Error::config(&path, e.to_string())));
            if let Some(name) = &t.stream {
                if !is_valid_name(name) {
                    p.push(Error::config(
                        format!("{path}.stream"),
                        format!("{name:?} is not a valid stream name: no spaces, '.', '*', '>', '/' or '\\'"),
                    ));
                }
            }
            let (_, merged) = self.topic_settings(topic, "");
            p.check(validate_stream(&path, &merged));
        }
        p.finish()
    }

    fn validate_auth(&self) -> Result<()> {
        let a = &self.auth;
        if a.user.is_some() != a.password.is_some() {
            return Err(Error::config(
                "nats.auth.user",
                "user and password go together: set both or neither",
            ));
        }
        let methods = [
            a.token.is_some(),
            a.user.is_some(),
            a.creds_file.is_some(),
            a.nkey_seed.is_some(),
        ];
        // Credentials in server URLs: the same on every URL, and only when
        // `auth` sets none (they are passed to the client as options, so
        // that no URL it logs holds them).
        let mut in_urls = None;
        for (i, s) in self.servers.iter().enumerate() {
            if let (_, Some(c)) = super::redact::split_credentials(s) {
                if methods.iter().any(|m| *m) {
                    return Err(Error::config(
                        format!("nats.servers[{i}]"),
                        "holds credentials and nats.auth sets some too: use one of them",
                    ));
                }
                if in_urls.get_or_insert_with(|| c.clone()) != &c {
                    return Err(Error::config(
                        format!("nats.servers[{i}]"),
                        "holds other credentials than an earlier server URL: give every \
                         server the same, or set them once in nats.auth",
                    ));
                }
            }
        }
        if methods.iter().filter(|m| **m).count() > 1 {
            return Err(Error::config(
                "nats.auth",
                "more than one method set: use one of token, user/password, creds_file, nkey_seed",
            ));
        }
        if let Some(path) = &a.creds_file {
            if !path.is_file() {
                return Err(Error::config(
                    "nats.auth.creds_file",
                    format!("{} does not exist or is not a file", path.display()),
                ));
            }
        }
        Ok(())
    }
}

fn validate_stream(path: &str, s: &NatsStreamSettings) -> Result<()> {
    if !(1..=5).contains(&s.replicas) {
        return Err(Error::config(
            format!("{path}.replicas"),
            format!("{} is not allowed: use 1 to 5", s.replicas),
        ));
    }
    for (field, value) in [("max_bytes", s.max_bytes), ("max_messages", s.max_messages)] {
        if let Some(v) = value {
            if v == 0 || v > i64::MAX as u64 {
                return Err(Error::config(
                    format!("{path}.{field}"),
                    format!("{v} is not allowed: use at least 1, or leave it unset for no limit"),
                ));
            }
        }
    }
    if s.max_age.is_some_and(|a| a < Duration::from_secs(1)) {
        return Err(Error::config(
            format!("{path}.max_age"),
            "use at least 1s, or leave it unset for no age limit",
        ));
    }
    if s.duplicate_window.is_some_and(|d| d.is_zero()) {
        return Err(Error::config(
            format!("{path}.duplicate_window"),
            "0 would turn de-duplication off: leave it unset for the server's default",
        ));
    }
    Ok(())
}

/// A JetStream stream, consumer or domain name: no whitespace, `.`, `*`,
/// `>`, path separators or control characters.
pub(crate) fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name.chars().all(|c| {
            !c.is_whitespace() && !c.is_control() && !matches!(c, '.' | '*' | '>' | '/' | '\\')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BusConfig;

    fn yaml(text: &str) -> Result<BusConfig> {
        BusConfig::from_yaml_str(text)
    }

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let c = NatsConfig::default();
        c.validate().unwrap();
        assert_eq!(c.ack_wait, Duration::from_secs(30));
        assert_eq!(c.topic_strategy, TopicStrategy::CreateOnly);
        assert_eq!(c.stream.storage, NatsStorage::File);
    }

    #[test]
    fn yaml_sets_nested_fields_and_topic_overrides() {
        let c = yaml(
            "backend: nats\nnats:\n  ack_wait: 1m\n  topic_strategy: validate_only\n  stream:\n    max_age: 7d\n  topics:\n    orders:\n      storage: memory\n      retention: workqueue\n      stream: ORDERS\n",
        )
        .unwrap();
        assert_eq!(c.nats.ack_wait, Duration::from_secs(60));
        assert_eq!(c.nats.topic_strategy, TopicStrategy::ValidateOnly);
        let (name, s) = c.nats.topic_settings("orders", ".dlq");
        assert_eq!(name.as_deref(), Some("ORDERS"));
        assert_eq!(s.storage, NatsStorage::Memory);
        assert_eq!(s.retention, NatsRetention::WorkQueue);
        assert_eq!(s.max_age, Some(Duration::from_secs(7 * 86400)));
        let (name, s) = c.nats.topic_settings("orders.dlq", ".dlq");
        assert_eq!(name, None, "the dead-letter topic has its own stream");
        assert_eq!(s.storage, NatsStorage::Memory, "but its topic's settings");
        let (_, s) = c.nats.topic_settings("payments", ".dlq");
        assert_eq!(s, c.nats.stream);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("nats:\n  servers: []\n", "nats.servers"),
            ("nats:\n  ack_wait: 10ms\n", "nats.ack_wait"),
            ("nats:\n  idle_heartbeat: 20s\n", "nats.idle_heartbeat"),
            ("nats:\n  pull_batch: 0\n", "nats.pull_batch"),
            ("nats:\n  auth:\n    user: u\n", "nats.auth.user"),
            (
                "nats:\n  auth:\n    token: t\n    nkey_seed: s\n",
                "nats.auth",
            ),
            (
                "nats:\n  tls:\n    cert_file: c.pem\n",
                "nats.tls.cert_file",
            ),
            (
                "nats:\n  tls:\n    ca_file: /no/such/ca.pem\n",
                "nats.tls.ca_file",
            ),
            (
                "nats:\n  stream:\n    replicas: 7\n",
                "nats.stream.replicas",
            ),
            (
                "nats:\n  topics:\n    orders:\n      stream: a.b\n",
                "nats.topics.orders.stream",
            ),
            (
                "nats:\n  topics:\n    orders:\n      max_bytes: 0\n",
                "nats.topics.orders.max_bytes",
            ),
            (
                "nats:\n  stream:\n    retention: forever\n",
                "nats.stream.retention",
            ),
            ("nats:\n  pull_bach: 5\n", "pull_bach"),
            (
                "nats:\n  consumer:\n    sharing: round_robin\n",
                "nats.consumer.sharing",
            ),
            (
                "nats:\n  consumer:\n    sharing: shared\n    pinned_ttl: 1m\n",
                "nats.consumer.pinned_ttl",
            ),
            (
                "nats:\n  consumer:\n    pinned_ttl: 10ms\n",
                "nats.consumer.pinned_ttl",
            ),
            (
                "nats:\n  consumer:\n    balance_interval: 100ms\n",
                "nats.consumer.balance_interval",
            ),
        ];
        for (text, field) in cases {
            let e = yaml(text).unwrap_err().to_string();
            assert!(e.contains(field), "{text:?}: {e}");
        }
    }

    #[test]
    fn groups_are_pinned_by_default_for_twice_ack_wait() {
        let c = NatsConfig::default();
        assert_eq!(c.consumer.sharing, NatsSharing::Pinned);
        assert_eq!(c.pinned_ttl(), Some(Duration::from_secs(60)));
        let c = yaml("nats:\n  consumer:\n    pinned_ttl: 5s\n").unwrap();
        assert_eq!(c.nats.pinned_ttl(), Some(Duration::from_secs(5)));
        let c = yaml("nats:\n  consumer:\n    sharing: shared\n").unwrap();
        assert_eq!(c.nats.pinned_ttl(), None);
    }

    #[test]
    fn debug_output_hides_secrets() {
        let c = yaml("nats:\n  auth:\n    user: alice\n    password: hunter2\n").unwrap();
        let shown = format!("{c:?}");
        assert!(shown.contains("alice"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        let c = yaml("nats:\n  auth:\n    token: s3cr3t-token\n").unwrap();
        assert!(!format!("{c:?}").contains("s3cr3t-token"));
    }

    #[test]
    fn names() {
        assert!(is_valid_name("ORDERS_v2-x"));
        for bad in ["", "a.b", "a b", "a*", "a>", "a/b"] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }
}
