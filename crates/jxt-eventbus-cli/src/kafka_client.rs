//! A Kafka consumer for operator commands, set up from the bus's
//! configuration (brokers, TLS, SASL, properties) but never a member of a
//! group: it is only ever assigned partitions, and never commits.
//!
//! Its context keeps librdkafka's last error instead of logging it, so that
//! a dead broker is reported once, in the command's own error, rather than
//! as a line per connection attempt.

#![cfg(feature = "kafka")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Result};
use jxt_eventbus::BusConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::metadata::Metadata;

/// Keeps the last client error; logs nothing below warn unless asked.
#[derive(Clone, Default)]
pub(crate) struct QuietContext {
    last_error: Arc<Mutex<Option<String>>>,
}

impl QuietContext {
    /// The last error librdkafka reported, if any.
    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl ClientContext for QuietContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        tracing::debug!(target: "librdkafka", ?level, fac, "{message}");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(target: "librdkafka", %error, "{reason}");
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.to_string());
    }
}

impl ConsumerContext for QuietContext {}

/// An assign-only consumer in a throwaway group (`eventbus-<what>-<uuid>`):
/// offsets are never committed (`enable.auto.commit=false`, no commit
/// call), so the group leaves no trace but its name in broker logs.
pub(crate) fn consumer(
    config: &BusConfig,
    what: &str,
) -> Result<(BaseConsumer<QuietContext>, QuietContext)> {
    let group = format!("eventbus-{what}-{}", uuid::Uuid::now_v7());
    consumer_in(config, &group)
}

/// A consumer whose `group.id` is `group`, to read that group's committed
/// offsets. It never subscribes (so it never joins the group) and never
/// commits.
pub(crate) fn consumer_in(
    config: &BusConfig,
    group: &str,
) -> Result<(BaseConsumer<QuietContext>, QuietContext)> {
    let mut client = ClientConfig::new();
    for (k, v) in jxt_eventbus::backend::kafka::consumer_properties(config, group) {
        client.set(k, v);
    }
    client
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false");
    client.remove("group.instance.id");
    let context = QuietContext::default();
    let consumer = client
        .create_with_context(context.clone())
        .map_err(|e| anyhow!("cannot create a Kafka client: {e}"))?;
    Ok((consumer, context))
}

/// The cluster's metadata (every topic, or one), within `timeout`; the error
/// names the brokers once, with librdkafka's last word on why.
pub(crate) async fn metadata(
    consumer: Arc<BaseConsumer<QuietContext>>,
    context: &QuietContext,
    config: &BusConfig,
    topic: Option<String>,
    timeout: Duration,
) -> Result<Metadata> {
    use rdkafka::consumer::Consumer as _;
    let answer =
        tokio::task::spawn_blocking(move || consumer.fetch_metadata(topic.as_deref(), timeout))
            .await?;
    answer.map_err(|e| {
        let why = context.last_error().unwrap_or_else(|| e.to_string());
        anyhow!(
            "no Kafka broker answered at {} within {}: {why}",
            config.kafka.brokers.join(","),
            crate::global::shown(timeout)
        )
    })
}
