//! The raw librdkafka pass-through maps: which keys they may not hold, and
//! how they are shown.

use std::collections::BTreeMap;
use std::fmt;

use crate::error::{Error, Result};

/// Keys the backend sets itself for its guarantees; no field changes them.
const MANAGED: &[(&str, &str)] = &[
    (
        "enable.auto.offset.store",
        "offsets are stored only for finished records (at-least-once)",
    ),
    (
        "enable.auto.commit",
        "positions are committed by the bus as they advance (kafka.consumer.commit_interval), on revoke and on shutdown",
    ),
    (
        "partition.assignment.strategy",
        "the bus uses cooperative-sticky so that subscribing a topic does not stop the others",
    ),
    (
        "enable.partition.eof",
        "the bus does not use end-of-partition events",
    ),
    (
        "allow.auto.create.topics",
        "topics are created by kafka.topic_strategy, never implicitly",
    ),
    (
        "group.protocol",
        "the bus uses the classic group protocol with cooperative rebalancing",
    ),
];

/// Keys that have a typed field.
const TYPED: &[(&str, &str)] = &[
    ("bootstrap.servers", "kafka.brokers"),
    ("metadata.broker.list", "kafka.brokers"),
    ("client.id", "kafka.client_id"),
    ("group.id", "group"),
    ("group.instance.id", "kafka.group_instance_id"),
    ("auto.offset.reset", "kafka.consumer.offset_reset"),
    ("acks", "kafka.producer.required_acks"),
    ("request.required.acks", "kafka.producer.required_acks"),
    ("enable.idempotence", "kafka.producer.idempotent"),
    ("compression.codec", "kafka.producer.compression"),
    ("compression.type", "kafka.producer.compression"),
    ("linger.ms", "kafka.producer.linger"),
    ("queue.buffering.max.ms", "kafka.producer.linger"),
    ("batch.num.messages", "kafka.producer.batch_max_messages"),
    ("batch.size", "kafka.producer.batch_max_bytes"),
    (
        "queue.buffering.max.messages",
        "kafka.producer.buffer_max_messages",
    ),
    ("message.send.max.retries", "kafka.producer.retries"),
    ("retries", "kafka.producer.retries"),
    ("retry.backoff.ms", "kafka.producer.retry_backoff"),
    ("message.timeout.ms", "kafka.producer.message_timeout"),
    ("delivery.timeout.ms", "kafka.producer.message_timeout"),
    ("partitioner", "kafka.producer.partitioner"),
    ("session.timeout.ms", "kafka.consumer.session_timeout"),
    ("heartbeat.interval.ms", "kafka.consumer.heartbeat_interval"),
    ("max.poll.interval.ms", "kafka.consumer.max_processing_time"),
    ("fetch.min.bytes", "kafka.consumer.fetch_min_bytes"),
    ("fetch.max.bytes", "kafka.consumer.fetch_max_bytes"),
    (
        "max.partition.fetch.bytes",
        "kafka.consumer.max_partition_fetch_bytes",
    ),
    ("fetch.wait.max.ms", "kafka.consumer.fetch_max_wait"),
    (
        "queued.max.messages.kbytes",
        "kafka.consumer.prefetch_max_bytes",
    ),
    ("auto.commit.interval.ms", "kafka.consumer.commit_interval"),
    (
        "socket.connection.setup.timeout.ms",
        "kafka.net.dial_timeout",
    ),
    ("socket.timeout.ms", "kafka.net.socket_timeout"),
    ("socket.keepalive.enable", "kafka.net.keepalive"),
];

/// Security keys: free in the maps (for mechanisms the typed sections do
/// not cover, such as GSSAPI or OAUTHBEARER) unless `kafka.tls` or
/// `kafka.sasl` is set, which own them.
const SECURITY: &[&str] = &[
    "security.protocol",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.key.password",
    "ssl.endpoint.identification.algorithm",
];

/// Refuses keys of a pass-through map at `field` that the backend manages
/// or that have a typed field.
pub(super) fn check(field: &str, map: &BTreeMap<String, String>, security: bool) -> Result<()> {
    for key in map.keys() {
        let k = key.trim();
        let path = format!("{field}.{key}");
        if k.is_empty() {
            return Err(Error::config(path, "empty property name"));
        }
        if let Some((_, why)) = MANAGED.iter().find(|(m, _)| *m == k) {
            return Err(Error::config(
                path,
                format!("managed by the Kafka backend and not configurable: {why}"),
            ));
        }
        if let Some((_, typed)) = TYPED.iter().find(|(t, _)| *t == k) {
            return Err(Error::config(
                path,
                format!("set it with `{typed}` instead"),
            ));
        }
        if security && SECURITY.contains(&k) {
            return Err(Error::config(
                path,
                "set by `kafka.tls` / `kafka.sasl`; configure security in one place",
            ));
        }
    }
    Ok(())
}

/// Whether `key` is managed by the backend or has a typed field (and so
/// is refused by [`check`] whatever its value).
#[cfg_attr(not(feature = "kafka"), allow(dead_code))]
pub(crate) fn has_own_field(key: &str) -> bool {
    let k = key.trim();
    MANAGED.iter().any(|(m, _)| *m == k) || TYPED.iter().any(|(t, _)| *t == k)
}

/// Whether a property's value is secret and must not be shown.
pub(crate) fn is_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["password", "secret", "token", "jaas", "key.pem", "keystore"]
        .iter()
        .any(|s| k.contains(s))
        || k == "ssl.key.pem"
        || k.ends_with(".key")
}

/// Shows a property map with secret values as `"***"`.
pub(crate) struct Redacted<'a>(pub(crate) &'a BTreeMap<String, String>);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| {
                let shown: &str = if is_secret(k) { "***" } else { v };
                (k, shown)
            }))
            .finish()
    }
}
