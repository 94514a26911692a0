//! The Kafka producer: every publish resolves with the broker's delivery
//! report, bounded by `kafka.producer.message_timeout`.
//!
//! `send` ensures the topic (once), enqueues the record in librdkafka and
//! awaits its delivery report. `send_batch` enqueues every record first, in
//! order, and then awaits all reports, so a batch costs about one round trip
//! instead of one per record. The idempotent producer keeps the order of
//! records of a partition across retries.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::channel::oneshot::Canceled;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer as _};
use tokio::time::Instant;

use super::admin::TopicAdmin;
use super::context::BusClientContext;
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
    producer: FutureProducer<BusClientContext>,
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
        producer: FutureProducer<BusClientContext>,
        topics: Arc<TopicAdmin>,
        message_timeout: Duration,
    ) -> Self {
        KafkaProducer {
            producer,
            topics,
            message_timeout,
        }
    }

    pub(super) fn client(&self) -> &FutureProducer<BusClientContext> {
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

    /// Hands the record to librdkafka, waiting (up to the message timeout)
    /// while its local queue is full.
    async fn enqueue(&self, topic: &str, message: &Message) -> Result<DeliveryFuture> {
        let headers = mapping::headers(message);
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic)
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
            match self.producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
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

    async fn delivered(&self, topic: &str, delivery: DeliveryFuture) -> Result<PublishReceipt> {
        let bound = self.message_timeout + REPORT_GRACE;
        match tokio::time::timeout(bound, delivery).await {
            Ok(report) => self.report(topic, report),
            Err(_) => Err(self.timeout("kafka publish (no delivery report)")),
        }
    }

    fn report(
        &self,
        topic: &str,
        report: std::result::Result<OwnedDeliveryResult, Canceled>,
    ) -> Result<PublishReceipt> {
        match report {
            Ok(Ok(d)) => Ok(PublishReceipt {
                partition: d.partition,
                offset: d.offset,
            }),
            Ok(Err((e, _))) => Err(errors::publish(topic, e, self.message_timeout)),
            Err(Canceled) => Err(Error::Publish {
                topic: topic.to_string(),
                reason: "the producer was closed before the record was acknowledged".into(),
                retryable: true,
                source: None,
            }),
        }
    }

    /// Awaits the reports of a batch in order, under one timer (not one per
    /// record): reports arrive about in enqueue order, so waiting on each in
    /// turn costs a wake-up now and then, not a future per record.
    async fn delivered_all(
        &self,
        topic: &str,
        pending: Vec<Result<DeliveryFuture>>,
    ) -> Vec<Result<PublishReceipt>> {
        let expiry = tokio::time::sleep(self.message_timeout + REPORT_GRACE);
        tokio::pin!(expiry);
        let mut expired = false;
        let mut results = Vec::with_capacity(pending.len());
        for p in pending {
            let result = match p {
                Err(e) => Err(e),
                Ok(_) if expired => Err(self.timeout("kafka publish (no delivery report)")),
                Ok(delivery) => tokio::select! {
                    biased;
                    report = delivery => self.report(topic, report),
                    _ = &mut expiry => {
                        expired = true;
                        Err(self.timeout("kafka publish (no delivery report)"))
                    }
                },
            };
            results.push(result);
        }
        results
    }
}

#[async_trait]
impl Producer for KafkaProducer {
    async fn send(&self, topic: &str, message: Message) -> Result<PublishReceipt> {
        let deadline = Instant::now() + self.message_timeout;
        self.ensure(topic, deadline).await?;
        let delivery = self.enqueue(topic, &message).await?;
        self.delivered(topic, delivery).await
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
        let mut pending = Vec::with_capacity(messages.len());
        for m in &messages {
            // Each record gets the full timeout from when it was enqueued.
            pending.push(self.enqueue(topic, m).await);
        }
        self.delivered_all(topic, pending).await
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
