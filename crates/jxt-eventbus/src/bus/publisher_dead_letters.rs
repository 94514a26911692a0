//! jxt-core's *publisher* dead letters: listing and replaying them.
//!
//! jxt-core (v1.7.5) has no consumer-side dead-letter topic. Its Kafka
//! publisher, when `Enterprise.Publisher.ErrorHandling.DeadLetterTopic` is
//! set and the broker refused a record, writes the record to that one topic
//! (shared by every original topic) as: **no key**, the original value, and
//! only the headers `X-Original-Topic`, `X-Error-Message` (sarama's error
//! text) and `X-Timestamp` (RFC 3339, seconds, the publisher's offset). The
//! original key and headers are dropped.
//!
//! Both operations read that topic with this bus's replay group
//! (`<group>.dlq-replay`, as [`EventBus::list_dead_letters`]): a listing
//! commits nothing, a replay commits what it put back.
//!
//! **Replay** publishes each record to its `X-Original-Topic`, one at a time
//! in dead-letter order. When the value is a jxt-core envelope, the record
//! gets back what jxt-core's `PublishEnvelope` gives it: the aggregate id as
//! key and the `X-*` headers, so it lands on its aggregate's partition. It
//! still arrives *after* every event of that aggregate published since the
//! failure: handlers must tolerate that (the envelope's `event_version`
//! tells). A value that is not an envelope is replayed without a key, as
//! jxt-core's `Publish` sent it, so it goes to any partition and has no
//! order relative to other records.
//!
//! Replay publishes only to the topics its caller names: a header never
//! chooses a topic that may then be created (`kafka.topic_strategy:
//! create_only` creates a missing topic on publish). A record for another
//! topic stops the replay with an error naming it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, FixedOffset};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{EventBus, ReplayReport, REPLAYED_HEADER};
use crate::backend::{Consumer, ConsumerEvent, Record};
use crate::dispatch::EVENT_CHANNEL;
use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::message::Message;

/// The topic the record was meant for.
pub const ORIGINAL_TOPIC_HEADER: &str = "X-Original-Topic";
/// Why the broker refused it (sarama's error text).
pub const ERROR_MESSAGE_HEADER: &str = "X-Error-Message";
/// When jxt-core dead-lettered it (RFC 3339, seconds).
pub const TIMESTAMP_HEADER: &str = "X-Timestamp";

/// How long the reader waits for records before it checks whether the
/// topic is drained.
const POLL: Duration = Duration::from_millis(100);

/// A record jxt-core's publisher could not publish.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PublisherDeadLetter {
    /// Partition of the dead-letter topic.
    pub partition: i32,
    /// Offset in the dead-letter topic.
    pub offset: i64,
    /// `X-Original-Topic`.
    pub original_topic: Option<String>,
    /// `X-Error-Message`.
    pub error: Option<String>,
    /// `X-Timestamp`, when it is RFC 3339.
    pub failed_at: Option<DateTime<FixedOffset>>,
    /// The record as stored (no key; the original value).
    pub message: Message,
}

impl PublisherDeadLetter {
    fn new(partition: i32, offset: i64, message: Message) -> Self {
        let text = |name| message.headers.get_str(name).map(str::to_string);
        PublisherDeadLetter {
            partition,
            offset,
            original_topic: text(ORIGINAL_TOPIC_HEADER),
            error: text(ERROR_MESSAGE_HEADER),
            failed_at: message
                .headers
                .get_str(TIMESTAMP_HEADER)
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok()),
            message,
        }
    }

    /// The message a replay publishes (see the module docs): for an
    /// envelope, what `publish_envelope` would send (key, id and `X-*`
    /// headers) with the value kept byte for byte; otherwise the value
    /// alone. Both carry [`REPLAYED_HEADER`].
    pub fn replay_message(&self) -> Message {
        let payload = self.message.payload.clone();
        let envelope = payload
            .as_deref()
            .map(|p| Envelope::from_slice(p).and_then(|e| e.to_message()));
        let mut message = match envelope {
            Some(Ok(mut m)) => {
                m.payload = payload;
                m
            }
            _ => Message {
                payload,
                ..Message::new(Bytes::new())
            },
        };
        message.headers.set(REPLAYED_HEADER, "1");
        message
    }
}

impl EventBus {
    /// Lists up to `max` records of jxt-core's publisher dead-letter topic
    /// `dlq_topic` not yet replayed, acknowledging nothing. It stops when no
    /// record arrived for `idle` after the topic was assigned, or after
    /// `timeout`.
    ///
    /// # Errors
    /// [`Error::Closed`] after shutdown; a backend error when the topic
    /// cannot be read; [`Error::Timeout`] when it was never assigned.
    ///
    /// # Cancel safety
    /// Not cancel safe: a dropped call may leave its reader in the group
    /// until the backend notices.
    pub async fn list_publisher_dead_letters(
        &self,
        dlq_topic: &str,
        max: usize,
        idle: Duration,
        timeout: Duration,
    ) -> Result<Vec<PublisherDeadLetter>> {
        self.ensure_open()?;
        let (consumer, mut events) = self.replay_reader(dlq_topic).await?;
        let deadline = Instant::now() + timeout;
        let mut assigned = false;
        let mut out = Vec::new();
        while out.len() < max {
            let left = deadline.saturating_duration_since(Instant::now());
            let wait = if assigned { idle.min(left) } else { left };
            let Ok(Some(event)) = tokio::time::timeout(wait, events.recv()).await else {
                break;
            };
            match event {
                ConsumerEvent::Assigned(_) => assigned = true,
                ConsumerEvent::Records(records) => {
                    out.extend(records.into_iter().take(max - out.len()).map(dead_letter));
                }
                // Nothing was stored, so nothing is committed on release.
                ConsumerEvent::Revoked { done, .. } => {
                    let _ = done.send(());
                }
            }
        }
        consumer.close().await?;
        if !assigned {
            return Err(Error::Timeout {
                operation: "listing publisher dead letters (topic never assigned)",
                after: timeout,
            });
        }
        Ok(out)
    }

    /// Publishes every record of jxt-core's publisher dead-letter topic
    /// `dlq_topic` not yet replayed to its `X-Original-Topic`, which must be
    /// one of `topics` (see the module docs for key, headers and ordering),
    /// one at a time in order, and commits it. Returns once the topic is
    /// drained.
    ///
    /// # Errors
    /// [`Error::Closed`] after shutdown; a backend error when the topic
    /// cannot be read; [`Error::InvalidMessage`] for a record whose
    /// `X-Original-Topic` is missing or not in `topics`, and the publish
    /// error when a record cannot be put back (the replay stops there; that
    /// record and the ones after it stay in the topic); [`Error::Timeout`]
    /// when it is not drained within `timeout`. What was replayed before
    /// stays replayed and committed.
    ///
    /// # Cancel safety
    /// Not cancel safe: a dropped call stops mid-way; a record put back but
    /// not yet committed is replayed again by the next call.
    pub async fn replay_publisher_dead_letters(
        &self,
        dlq_topic: &str,
        topics: &[&str],
        timeout: Duration,
    ) -> Result<ReplayReport> {
        self.ensure_open()?;
        let (consumer, mut events) = self.replay_reader(dlq_topic).await?;
        let deadline = Instant::now() + timeout;
        let mut assigned = false;
        let mut report = ReplayReport::default();
        let outcome = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break Err(Error::Timeout {
                    operation: "replaying publisher dead letters",
                    after: timeout,
                });
            }
            match tokio::time::timeout(POLL.min(left), events.recv()).await {
                Ok(Some(ConsumerEvent::Assigned(_))) => assigned = true,
                Ok(Some(ConsumerEvent::Records(records))) => {
                    if let Err(e) = self
                        .replay_records(&*consumer, records, topics, &mut report)
                        .await
                    {
                        break Err(e);
                    }
                }
                // Records are finished one by one before the next event is
                // read, so every position is stored already.
                Ok(Some(ConsumerEvent::Revoked { done, .. })) => {
                    let _ = done.send(());
                }
                Ok(None) => break Err(Error::Closed),
                Err(_) if assigned => {
                    consumer.commit().await?;
                    let lag: i64 = consumer.lag().await?.iter().map(|l| l.lag()).sum();
                    if lag == 0 {
                        break Ok(());
                    }
                }
                Err(_) => {}
            }
        };
        consumer.commit().await?;
        consumer.close().await?;
        tracing::info!(
            dlq_topic,
            replayed = report.replayed,
            "publisher dead letters replayed"
        );
        outcome.map(|()| report)
    }

    async fn replay_reader(
        &self,
        dlq_topic: &str,
    ) -> Result<(Arc<dyn Consumer>, mpsc::Receiver<ConsumerEvent>)> {
        crate::validate::topic(dlq_topic)?;
        let (tx, events) = mpsc::channel(EVENT_CHANNEL);
        let group = format!("{}.dlq-replay", self.inner.config.group);
        let consumer = self.inner.backend.consumer(&group, tx).await?;
        consumer.subscribe(&[dlq_topic.to_string()]).await?;
        Ok((consumer, events))
    }

    async fn replay_records(
        &self,
        consumer: &dyn Consumer,
        records: Vec<Record>,
        topics: &[&str],
        report: &mut ReplayReport,
    ) -> Result<()> {
        for mut record in records {
            let (partition, offset, ack) =
                (record.partition.clone(), record.offset, record.ack.take());
            let letter = dead_letter(record);
            let topic = letter
                .original_topic
                .as_deref()
                .filter(|t| topics.contains(t))
                .ok_or_else(|| {
                    Error::InvalidMessage(format!(
                        "publisher dead letter {partition}@{offset} is for {ORIGINAL_TOPIC_HEADER} {:?}, \
                         which is not among the topics to replay ({topics:?}); add it to replay the record",
                        letter.original_topic
                    ))
                })?;
            self.inner
                .producer
                .send(topic, letter.replay_message())
                .await?;
            if let Some(ack) = ack {
                ack.ack();
            }
            consumer.store(&partition, offset + 1);
            report.replayed += 1;
        }
        Ok(())
    }
}

fn dead_letter(r: Record) -> PublisherDeadLetter {
    PublisherDeadLetter::new(
        r.partition.partition,
        r.offset,
        Arc::unwrap_or_clone(r.message),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_jxt_core_headers_and_rebuilds_the_envelope_record() {
        let env = Envelope::new("order-1", "OrderCreated", 1, &serde_json::json!({"a": 1}))
            .unwrap()
            .with_tenant_id(7);
        let value = env.to_bytes().unwrap();
        let stored = Message::new(value.clone())
            .with_header(ORIGINAL_TOPIC_HEADER, "orders")
            .with_header(ERROR_MESSAGE_HEADER, "kafka server: Message was too large")
            .with_header(TIMESTAMP_HEADER, "2026-12-05T13:18:25+08:00");
        let letter = PublisherDeadLetter::new(0, 5, stored);
        assert_eq!(letter.original_topic.as_deref(), Some("orders"));
        assert_eq!(
            letter.failed_at.unwrap().to_rfc3339(),
            "2026-12-05T13:18:25+08:00"
        );
        let m = letter.replay_message();
        assert_eq!(m.key_str(), Some("order-1"));
        assert_eq!(m.payload()[..], value[..]);
        assert_eq!(m.id, env.event_id);
        assert_eq!(m.headers.get_str("X-Tenant-ID"), Some("7"));
        assert_eq!(m.headers.get_str(ORIGINAL_TOPIC_HEADER), None);
        assert_eq!(m.headers.get_str(REPLAYED_HEADER), Some("1"));

        let plain = PublisherDeadLetter::new(0, 6, Message::new("raw bytes"));
        let m = plain.replay_message();
        assert_eq!(m.key, None);
        assert_eq!(m.payload(), "raw bytes");
        assert_eq!(plain.original_topic, None);
    }
}
