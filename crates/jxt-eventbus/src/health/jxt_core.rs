//! jxt-core's health-check heartbeats, so a mixed fleet of Go (jxt-core) and
//! Rust services sees each other's heartbeats.
//!
//! jxt-core's `StartHealthCheckPublisher` publishes one heartbeat at once and
//! then every 2 minutes, with a plain publish (no key, no headers), to
//! [`DEFAULT_TOPIC`] (`jxt-core-health-check`) — or, when its
//! `Enterprise.HealthCheck` is enabled without a topic, to
//! `jxt-core-<backend>-health-check` ([`backend_topic`]). The payload is
//! camelCase JSON in this order: `messageId` (`hc-<unix nanos>-<16 hex>`),
//! `timestamp` (RFC 3339, nanoseconds), `source` (`kafka-eventbus`),
//! `eventBusType` (`kafka`), `version` (always `"2.0.0"`), `metadata`
//! (`checkType: "periodic"`, `instanceId: "<source>-<unix seconds>"`).
//!
//! With `health.jxt_core.enabled` the bus publishes such heartbeats and
//! reads everyone's from the topic ([`crate::EventBus::jxt_core_peers`]: the
//! last heartbeat of each instance); [`crate::EventBus::start_jxt_core_health`]
//! does the same on demand ([`JxtCoreHealth::peers`]). The subscription uses the bus's group: on Kafka, with
//! several buses in one group, the bus that owns the topic's partition sees
//! the heartbeats.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, FixedOffset, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// jxt-core's default health-check topic (its `Enterprise.HealthCheck` is
/// off by default, and then this one is used).
pub const DEFAULT_TOPIC: &str = "jxt-core-health-check";

/// The version jxt-core v1.7.5 writes in every heartbeat.
pub const VERSION: &str = "2.0.0";

/// jxt-core's per-backend topic (`kafka`, `nats`), used when its health
/// check is enabled without a topic.
pub fn backend_topic(backend: &str) -> String {
    format!("jxt-core-{backend}-health-check")
}

/// The last heartbeat of each instance, by instance id.
pub(crate) type Peers = Arc<Mutex<BTreeMap<String, JxtCoreHeartbeat>>>;

/// One heartbeat, as jxt-core writes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct JxtCoreHeartbeat {
    /// `hc-<unix nanos>-<16 hex>`.
    pub message_id: String,
    /// When it was sent (RFC 3339 with nanoseconds).
    #[serde(with = "go_time")]
    pub timestamp: DateTime<FixedOffset>,
    /// `<backend>-eventbus`.
    pub source: String,
    /// `kafka`, `nats` or `memory`.
    pub event_bus_type: String,
    /// Always [`VERSION`] from jxt-core.
    pub version: String,
    /// `checkType` and `instanceId` (keys sorted, as Go writes a map).
    pub metadata: BTreeMap<String, String>,
}

impl JxtCoreHeartbeat {
    /// A periodic heartbeat of `instance_id` from a bus on `backend`, sent
    /// `at`.
    pub fn new(backend: &str, instance_id: &str, at: SystemTime) -> Self {
        let nanos = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let random = uuid::Uuid::new_v4().as_u128() as u64;
        JxtCoreHeartbeat {
            message_id: format!("hc-{nanos}-{random:016x}"),
            timestamp: DateTime::<Utc>::from(at).fixed_offset(),
            source: format!("{backend}-eventbus"),
            event_bus_type: backend.to_string(),
            version: VERSION.to_string(),
            metadata: BTreeMap::from([
                ("checkType".to_string(), "periodic".to_string()),
                ("instanceId".to_string(), instance_id.to_string()),
            ]),
        }
    }

    /// `metadata.instanceId`, or the source when there is none.
    pub fn instance_id(&self) -> &str {
        self.metadata
            .get("instanceId")
            .map_or(self.source.as_str(), String::as_str)
    }

    /// The JSON jxt-core writes.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Plain ASCII fields: serde_json's escaping equals Go's here, and
        // the timestamp is written in Go's format.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a heartbeat.
    ///
    /// # Errors
    /// [`Error::InvalidMessage`] when `bytes` are not one.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes)
            .map_err(|e| Error::InvalidMessage(format!("not a jxt-core heartbeat: {e}")))
    }
}

mod go_time {
    use chrono::{DateTime, FixedOffset};
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        t: &DateTime<FixedOffset>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::envelope::go_json::format_time(t))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<DateTime<FixedOffset>, D::Error> {
        let s = String::deserialize(d)?;
        crate::envelope::go_json::parse_time(&s).map_err(serde::de::Error::custom)
    }
}

/// What [`crate::EventBus::start_jxt_core_health`] does.
#[derive(Clone, Debug)]
#[must_use]
pub struct JxtCoreHealthOptions {
    pub(crate) topic: String,
    pub(crate) interval: Duration,
    pub(crate) publish: bool,
    pub(crate) subscribe: bool,
}

impl Default for JxtCoreHealthOptions {
    fn default() -> Self {
        JxtCoreHealthOptions {
            topic: DEFAULT_TOPIC.to_string(),
            interval: Duration::from_secs(120),
            publish: true,
            subscribe: true,
        }
    }
}

impl JxtCoreHealthOptions {
    /// Publish to and read [`DEFAULT_TOPIC`] every 2 minutes, as jxt-core.
    pub fn new() -> Self {
        Self::default()
    }

    /// The topic (default [`DEFAULT_TOPIC`]; see [`backend_topic`]).
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = topic.into();
        self
    }

    /// Time between heartbeats (default 2 minutes, jxt-core's).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Whether to publish heartbeats (default true).
    pub fn publish(mut self, on: bool) -> Self {
        self.publish = on;
        self
    }

    /// Whether to read the topic's heartbeats (default true).
    pub fn subscribe(mut self, on: bool) -> Self {
        self.subscribe = on;
        self
    }
}

/// The running heartbeat publisher and reader; stops publishing when
/// dropped (the subscription lives until the bus unsubscribes the topic or
/// shuts down).
#[must_use = "dropping it stops the heartbeats"]
pub struct JxtCoreHealth {
    instance_id: String,
    peers: Peers,
    publisher: Option<tokio::task::JoinHandle<()>>,
}

impl fmt::Debug for JxtCoreHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JxtCoreHealth")
            .field("instance_id", &self.instance_id)
            .finish_non_exhaustive()
    }
}

impl JxtCoreHealth {
    pub(crate) fn new(
        instance_id: String,
        peers: Peers,
        publisher: Option<tokio::task::JoinHandle<()>>,
    ) -> Self {
        JxtCoreHealth {
            instance_id,
            peers,
            publisher,
        }
    }

    /// Records a heartbeat read from the topic.
    pub(crate) fn snapshot(peers: &Peers) -> Vec<JxtCoreHeartbeat> {
        peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Records a heartbeat read from the topic (the later one of an
    /// instance replaces the earlier).
    pub(crate) fn record(peers: &Peers, hb: JxtCoreHeartbeat) {
        peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(hb.instance_id().to_string(), hb);
    }

    /// This bus's `instanceId` in its heartbeats.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// The last heartbeat read from each instance (this bus's own
    /// included), by instance id.
    pub fn peers(&self) -> Vec<JxtCoreHeartbeat> {
        Self::snapshot(&self.peers)
    }
}

impl Drop for JxtCoreHealth {
    fn drop(&mut self) {
        if let Some(p) = self.publisher.take() {
            p.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_have_jxt_core_shape() {
        let at = UNIX_EPOCH + Duration::new(1_796_447_905, 769_112_996);
        let hb = JxtCoreHeartbeat::new("kafka", "kafka-eventbus-1796447905", at);
        let text = String::from_utf8(hb.to_bytes()).unwrap();
        let prefix = r#"{"messageId":"hc-1796447905769112996-"#;
        assert!(text.starts_with(prefix), "{text}");
        assert_eq!(
            &text[prefix.len() + 16..],
            r#"","timestamp":"2026-12-05T05:18:25.769112996Z","source":"kafka-eventbus","eventBusType":"kafka","version":"2.0.0","metadata":{"checkType":"periodic","instanceId":"kafka-eventbus-1796447905"}}"#
        );
        assert_eq!(JxtCoreHeartbeat::from_slice(text.as_bytes()).unwrap(), hb);
        assert_eq!(backend_topic("nats"), "jxt-core-nats-health-check");
    }
}
