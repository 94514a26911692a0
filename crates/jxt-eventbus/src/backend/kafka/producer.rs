//! The Kafka producer: every publish resolves with the broker's delivery
//! report, bounded by `kafka.producer.message_timeout`.
//!
//! `send` ensures the topic (once), enqueues the record in librdkafka and
//! awaits its delivery report. `send_batch` enqueues every record first, in
//! order, and then awaits all reports, so a batch costs about one round trip
//! instead of one per record; its reports are gathered in one place and the
//! publisher is woken once per batch ([`super::reports`]). The idempotent
//! producer keeps the order of records of a partition across retries.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, Producer as _, ThreadedProducer};
use tokio::time::Instant;

use super::admin::TopicAdmin;
use super::context::BusClientContext;
use super::reports::{Reports, Ticket};
use super::{errors, mapping};
use crate::backend::{Producer, PublishReceipt};
use crate::error::{Error, Result};
use crate::message::Message;

/// How long to wait before retrying an enqueue into a full local queue.
const QUEUE_FULL_NAP: Duration = Duration::from_millis(2);
/// Extra wait for a delivery report beyond `message_timeout`; librdkafka
/// reports a timeout itself by then, this only guards against a lost report.
const REPORT_GRACE: Duration = Duration::from_secs(5);

/// The bus's producer.
pub(super) struct KafkaProducer {
    producer: ThreadedProducer<BusClientContext>,
    topics: Arc<TopicAdmin>,
    message_timeout: Duration,
}

impl std::fmt::Debug for KafkaProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaProducer")
            .field("message_timeout", &self.message_timeout)
            .finish_non_exhaustive()
    }
}

impl KafkaProducer {
    pub(super) fn new(
        producer: ThreadedProducer<BusClientContext>,
        topics: Arc<TopicAdmin>,
        message_timeout: Duration,
    ) -> Self {
        KafkaProducer {
            producer,
            topics,
            message_timeout,
        }
    }

    pub(super) fn client(&self) -> &ThreadedProducer<BusClientContext> {
        &self.producer
    }

    fn timeout(&self, operation: &'static str) -> Error {
        Error::Timeout {
            operation,
            after: self.message_timeout,
        }
    }

    /// Ensures the topic exists per the topic strategy.
    async fn ensure(&self, topic: &str, deadline: Instant) -> Result<()> {
        let left = deadline.saturating_duration_since(Instant::now());
        self.topics.ensure(topic, left).await.map_err(|e| {
            if e.timed_out {
                self.timeout("kafka publish (topic metadata: no broker answered)")
            } else {
                Error::Publish {
                    topic: topic.to_string(),
                    reason: e.reason,
                    retryable: false,
                    source: e.source.map(|s| Box::new(s) as _),
                }
            }
        })
    }

    /// Hands the record to librdkafka with its ticket, waiting (up to the
    /// message timeout) while its local queue is full.
    async fn enqueue(&self, topic: &str, message: &Message, ticket: Box<Ticket>) -> Result<()> {
        let headers = mapping::headers(message);
        let mut record: BaseRecord<'_, [u8], [u8], Box<Ticket>> =
            BaseRecord::with_opaque_to(topic, ticket)
                .payload(&message.payload[..])
                .headers(headers);
        if let Some(key) = &message.key {
            record = record.key(key.as_bytes());
        }
        if let Some(ts) = mapping::timestamp_millis(message.timestamp) {
            record = record.timestamp(ts);
        }
        // Read the clock only once the queue is full: most records never wait.
        let mut deadline = None;
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    let deadline =
                        *deadline.get_or_insert_with(|| Instant::now() + self.message_timeout);
                    if Instant::now() >= deadline {
                        return Err(self.timeout(
                            "kafka publish (local queue full: kafka.producer.buffer_max_messages)",
                        ));
                    }
                    record = back;
                    tokio::time::sleep(QUEUE_FULL_NAP).await;
                }
                Err((e, _)) => return Err(errors::publish(topic, e, self.message_timeout)),
            }
        }
    }

    /// Enqueues `messages` in order and awaits their reports, all under one
    /// timer; each record's result in its place.
    async fn publish(&self, topic: &str, messages: &[Message]) -> Vec<Result<PublishReceipt>> {
        let reports = Reports::new(messages.len());
        let mut refused: Vec<Option<Error>> = Vec::with_capacity(messages.len());
        for (i, m) in messages.iter().enumerate() {
            // A refused record's ticket is dropped with it: nothing to await.
            refused.push(self.enqueue(topic, m, reports.ticket(i)).await.err());
        }
        let all_in = tokio::time::timeout(self.message_timeout + REPORT_GRACE, reports.all())
            .await
            .is_ok();
        if !all_in {
            tracing::warn!(
                topic,
                "kafka delivery reports missing after the message timeout"
            );
        }
        refused
            .into_iter()
            .enumerate()
            .map(|(i, refused)| match (refused, reports.get(i)) {
                (Some(e), _) => Err(e),
                (None, Some(Ok((partition, offset)))) => Ok(PublishReceipt {
                    partition: *partition,
                    offset: *offset,
                }),
                (None, Some(Err(e))) => {
                    Err(errors::publish(topic, e.clone(), self.message_timeout))
                }
                (None, None) => Err(self.timeout("kafka publish (no delivery report)")),
            })
            .collect()
    }
}

#[async_trait]
impl Producer for KafkaProducer {
    async fn send(&self, topic: &str, message: Message) -> Result<PublishReceipt> {
        let deadline = Instant::now() + self.message_timeout;
        self.ensure(topic, deadline).await?;
        let mut results = self.publish(topic, std::slice::from_ref(&message)).await;
        results.pop().expect("one result per record")
    }

    async fn send_batch(&self, topic: &str, messages: Vec<Message>) -> Vec<Result<PublishReceipt>> {
        let deadline = Instant::now() + self.message_timeout;
        if let Err(e) = self.ensure(topic, deadline).await {
            let reason = e.to_string();
            let retryable = e.is_retryable();
            let mut out = Vec::with_capacity(messages.len());
            out.push(Err(e));
            out.extend((1..messages.len()).map(|_| {
                Err(Error::Publish {
                    topic: topic.to_string(),
                    reason: reason.clone(),
                    retryable,
                    source: None,
                })
            }));
            return out;
        }
        self.publish(topic, &messages).await
    }

    async fn flush(&self, timeout: Duration) -> Result<()> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || producer.flush(timeout))
            .await
            .map_err(|e| errors::backend(format!("flush task failed: {e}"), true, None))?
            .map_err(|e| match e.rdkafka_error_code() {
                Some(RDKafkaErrorCode::OperationTimedOut) => Error::Timeout {
                    operation: "kafka producer flush",
                    after: timeout,
                },
                _ => errors::backend(format!("flush failed: {e}"), true, Some(e)),
            })
    }
}
