//! The Kafka producer: every publish resolves with the broker's delivery
//! report, bounded by `kafka.producer.message_timeout`.
//!
//! `send` ensures the topic (once), enqueues the record in librdkafka and
//! awaits its delivery report. `send_batch` enqueues every record first, in
//! order, and then awaits all reports, so a batch costs about one round trip
//! instead of one per record; its reports are gathered in one place and the
//! publisher is woken once per batch ([`super::reports`]). The idempotent
//! producer keeps the order of records of a partition across retries.
//!
//! A fatal client error (an idempotent producer fenced, or out of sequence)
//! makes a librdkafka producer unusable for good. The first publish that
//! meets it, or the next health check, rebuilds the producer — a new
//! idempotent session with the same settings — counts it in
//! `producer_restarts_total`, and publishes the records that failed with it
//! once more on the new one. Until a rebuild succeeds, health says why.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use prometheus_client::metrics::counter::Counter;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, Producer as _, ThreadedProducer};
use tokio::time::Instant;

use super::admin::TopicAdmin;
use super::client_config;
use super::context::{BusClientContext, LastError};
use super::reports::{Reports, Ticket};
use super::{errors, mapping};
use crate::backend::{Producer, PublishReceipt};
use crate::config::BusConfig;
use crate::error::{Error, Result};
use crate::message::Message;

/// How long to wait before retrying an enqueue into a full local queue.
const QUEUE_FULL_NAP: Duration = Duration::from_millis(2);
/// How much longer than `message_timeout` a publish waits for its delivery
/// reports. librdkafka times out a queued record at `message_timeout`, but
/// a record in flight to a broker that died is reported only once its
/// request failed — 8.5 s after a SIGKILL with a 5 s `message_timeout` in
/// the chaos test. The caller's bound is `message_timeout`: a record
/// without a report by then is a `Timeout`, its outcome unknown (librdkafka
/// may still store it, once, as the producer is idempotent).
const REPORT_GRACE: Duration = Duration::from_millis(500);

type Client = ThreadedProducer<BusClientContext>;

/// The bus's producer.
pub(super) struct KafkaProducer {
    /// Swapped whole when a fatal error forces a rebuild; a publish loads it
    /// without taking a lock.
    producer: ArcSwap<Client>,
    config: Arc<BusConfig>,
    /// Shared by every producer this one builds, for health's reasons.
    last_error: LastError,
    /// One rebuild at a time (a rare path: an async lock is fine).
    rebuilding: tokio::sync::Mutex<()>,
    restarts: Counter,
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

/// A producer client with the bus's settings, reporting to `last_error`.
fn create(config: &BusConfig, last_error: &LastError) -> Result<Client> {
    let context = BusClientContext {
        last_error: last_error.clone(),
    };
    client_config::producer(config)
        .create_with_context(context)
        .map_err(|e| client_config::config_error(&config.kafka, "producer", &e))
}

impl KafkaProducer {
    /// Creates the producer client.
    ///
    /// # Errors
    /// [`Error::Config`] for settings librdkafka refuses.
    pub(super) fn new(
        config: Arc<BusConfig>,
        last_error: LastError,
        topics: Arc<TopicAdmin>,
        restarts: Counter,
    ) -> Result<Self> {
        let producer = create(&config, &last_error)?;
        Ok(KafkaProducer {
            producer: ArcSwap::from_pointee(producer),
            message_timeout: config.kafka.producer.message_timeout,
            config,
            last_error,
            rebuilding: tokio::sync::Mutex::new(()),
            restarts,
            topics,
        })
    }

    /// The current producer client.
    pub(super) fn client(&self) -> Arc<Client> {
        self.producer.load_full()
    }

    /// Rebuilds the producer if librdkafka put it in its fatal state.
    ///
    /// # Errors
    /// A backend error naming the fatal error when the new producer cannot
    /// be created.
    pub(super) async fn recover(&self) -> Result<()> {
        if self.producer.load().client().fatal_error().is_none() {
            return Ok(());
        }
        let _one = self.rebuilding.lock().await;
        let current = self.producer.load_full();
        let Some((code, reason)) = current.client().fatal_error() else {
            return Ok(()); // rebuilt by another caller meanwhile
        };
        let fresh = create(&self.config, &self.last_error).map_err(|e| {
            errors::backend(
                format!("the producer hit a fatal error ({code:?}: {reason}) and could not be rebuilt: {e}"),
                true,
                None,
            )
        })?;
        self.producer.store(Arc::new(fresh));
        self.restarts.inc();
        tracing::warn!(
            ?code,
            %reason,
            "kafka producer hit a fatal error; rebuilt it with a new idempotent session"
        );
        // Destroying a librdkafka client joins its threads: not on a runtime
        // worker (publishes still holding it drop it wherever they end).
        tokio::task::spawn_blocking(move || drop(current));
        Ok(())
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
    async fn enqueue(
        &self,
        producer: &Client,
        topic: &str,
        message: &Message,
        ticket: Box<Ticket>,
    ) -> Result<(), KafkaError> {
        let headers = mapping::headers(message, self.config.kafka.producer.id_header);
        let mut record: BaseRecord<'_, [u8], [u8], Box<Ticket>> =
            BaseRecord::with_opaque_to(topic, ticket).headers(headers);
        // Left unset, key and payload are null on the wire.
        if let Some(payload) = &message.payload {
            record = record.payload(&payload[..]);
        }
        if let Some(key) = &message.key {
            record = record.key(&key[..]);
        }
        if let Some(ts) = mapping::timestamp_millis(message.timestamp) {
            record = record.timestamp(ts);
        }
        // Read the clock only once the queue is full: most records never wait.
        let mut deadline = None;
        loop {
            match producer.send(record) {
                Ok(()) => return Ok(()),
                Err((e @ KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    let deadline =
                        *deadline.get_or_insert_with(|| Instant::now() + self.message_timeout);
                    if Instant::now() >= deadline {
                        return Err(e);
                    }
                    record = back;
                    tokio::time::sleep(QUEUE_FULL_NAP).await;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Publishes `messages` in order; records that failed because the
    /// producer hit a fatal error are published once more after a rebuild.
    async fn publish_recovering(
        &self,
        topic: &str,
        messages: &[Message],
    ) -> Vec<Result<PublishReceipt>> {
        let (mut results, fatal) = self.publish(topic, messages).await;
        if fatal.is_empty() {
            return results;
        }
        if let Err(e) = self.recover().await {
            tracing::error!(error = %e, "kafka producer rebuild failed");
            return results;
        }
        let again: Vec<Message> = fatal.iter().map(|&i| messages[i].clone()).collect();
        let (retried, _) = self.publish(topic, &again).await;
        for (i, r) in fatal.into_iter().zip(retried) {
            results[i] = r;
        }
        results
    }

    /// Enqueues `messages` in order and awaits their reports, all under one
    /// timer; each record's result in its place, and the places of those
    /// that failed with a fatal producer error.
    async fn publish(
        &self,
        topic: &str,
        messages: &[Message],
    ) -> (Vec<Result<PublishReceipt>>, Vec<usize>) {
        let producer = self.client();
        let reports = Reports::new(messages.len());
        let mut refused: Vec<Option<KafkaError>> = Vec::with_capacity(messages.len());
        for (i, m) in messages.iter().enumerate() {
            // A refused record's ticket is dropped with it: nothing to await.
            let enqueued = self.enqueue(&producer, topic, m, reports.ticket(i)).await;
            refused.push(enqueued.err());
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
        let mut fatal = Vec::new();
        let results = refused
            .into_iter()
            .enumerate()
            .map(|(i, refused)| {
                let failed = match (refused, reports.get(i)) {
                    (None, Some(Ok((partition, offset)))) => {
                        return Ok(PublishReceipt {
                            partition: *partition,
                            offset: *offset,
                        })
                    }
                    (None, None) => return Err(self.timeout("kafka publish (no delivery report)")),
                    (Some(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)), _) => {
                        return Err(self.timeout(
                            "kafka publish (local queue full: kafka.producer.buffer_max_messages)",
                        ))
                    }
                    (Some(e), _) => e,
                    (None, Some(Err(e))) => e.clone(),
                };
                if failed.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
                    fatal.push(i);
                }
                Err(errors::publish(topic, failed, self.message_timeout))
            })
            .collect();
        (results, fatal)
    }
}

#[async_trait]
impl Producer for KafkaProducer {
    async fn send(&self, topic: &str, message: Message) -> Result<PublishReceipt> {
        let deadline = Instant::now() + self.message_timeout;
        self.ensure(topic, deadline).await?;
        let mut results = self
            .publish_recovering(topic, std::slice::from_ref(&message))
            .await;
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
        self.publish_recovering(topic, &messages).await
    }

    async fn flush(&self, timeout: Duration) -> Result<()> {
        let producer = self.client();
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
