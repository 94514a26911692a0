//! Inspecting and replaying dead letters.
//!
//! Both read `<topic><dead_letter.suffix>` with the consumer group
//! `<group>.dlq-replay`, so the dead letters "still tracked" are the ones that
//! group has not committed: a replay commits what it put back, a listing
//! commits nothing.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{EventBus, SubscribeOptions};
use crate::backend::ConsumerEvent;
use crate::config::DeadLetterConfig;
use crate::delivery::Delivery;
use crate::dispatch::worker::dlq_headers;
use crate::dispatch::{Command, Dispatcher, WorkerContext, EVENT_CHANNEL};
use crate::error::{Error, Result};
use crate::handler::HandlerError;
use crate::message::Message;

/// Header set on a record put back by a replay: how many times it was replayed.
pub const REPLAYED_HEADER: &str = "x-dlq-replayed";

/// Header on a replayed record: the message id it had when it failed. The
/// replay gets a fresh id, since brokers that de-duplicate by id (JetStream's
/// `Nats-Msg-Id`) would otherwise drop it as a duplicate of the original.
pub const REPLAYED_FROM_ID_HEADER: &str = "x-dlq-replayed-from-id";

/// How often a replay checks whether the dead-letter topic is drained.
const POLL: Duration = Duration::from_millis(50);

/// A dead-lettered record with its provenance.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    /// Partition of the dead-letter topic.
    pub partition: i32,
    /// Offset in the dead-letter topic.
    pub offset: i64,
    /// Topic the record failed on.
    pub original_topic: Option<String>,
    /// The last error message.
    pub error: Option<String>,
    /// The last error kind.
    pub error_kind: Option<String>,
    /// Attempts made.
    pub attempts: Option<u32>,
    /// The record as dead-lettered (original key, payload and headers plus
    /// the `x-dlq-*` headers).
    pub message: Message,
}

impl DeadLetter {
    fn new(partition: i32, offset: i64, message: Message) -> Self {
        let h = &message.headers;
        let text = |name| h.get_str(name).map(str::to_string);
        DeadLetter {
            partition,
            offset,
            original_topic: text(dlq_headers::ORIGINAL_TOPIC),
            error: text(dlq_headers::ERROR),
            error_kind: text(dlq_headers::ERROR_KIND),
            attempts: h
                .get_str(dlq_headers::ATTEMPTS)
                .and_then(|a| a.parse().ok()),
            message,
        }
    }
}

/// What a replay did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Records published back to their original topic.
    pub replayed: usize,
}

impl EventBus {
    fn dead_letter_topic(&self, topic: &str) -> String {
        format!("{topic}{}", self.inner.config.dead_letter.suffix)
    }

    fn replay_group(&self) -> String {
        format!("{}.dlq-replay", self.inner.config.group)
    }

    /// Lists up to `max` dead letters of `topic` not yet replayed, without
    /// acknowledging anything. It stops when no record arrived for `idle`
    /// after the dead-letter topic was assigned, or after `timeout`.
    ///
    /// # Errors
    /// [`Error::Closed`] after shutdown; a backend error when the dead-letter
    /// topic cannot be read; [`Error::Timeout`] when it was never assigned.
    ///
    /// # Cancel safety
    /// Not cancel safe: a dropped call may leave its reader in the group until
    /// the backend notices.
    pub async fn list_dead_letters(
        &self,
        topic: &str,
        max: usize,
        idle: Duration,
        timeout: Duration,
    ) -> Result<Vec<DeadLetter>> {
        self.ensure_not_shutting_down()?;
        let dlq = self.dead_letter_topic(topic);
        let (tx, mut events) = mpsc::channel(EVENT_CHANNEL);
        let consumer = self
            .inner
            .backend
            .consumer(&self.replay_group(), tx)
            .await?;
        consumer.subscribe(std::slice::from_ref(&dlq)).await?;
        let deadline = Instant::now() + timeout;
        let mut assigned = false;
        let mut out = Vec::new();
        loop {
            let wait = if assigned {
                idle
            } else {
                deadline.saturating_duration_since(Instant::now())
            };
            let event = match tokio::time::timeout(
                wait.min(deadline.saturating_duration_since(Instant::now())),
                events.recv(),
            )
            .await
            {
                Ok(Some(e)) => e,
                Ok(None) | Err(_) => break,
            };
            match event {
                ConsumerEvent::Assigned(_) => assigned = true,
                ConsumerEvent::Records(records) => {
                    for r in records {
                        if out.len() < max {
                            out.push(DeadLetter::new(
                                r.partition.partition,
                                r.offset,
                                Arc::unwrap_or_clone(r.message),
                            ));
                        }
                    }
                    if out.len() >= max {
                        break;
                    }
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
                operation: "listing dead letters (topic never assigned)",
                after: timeout,
            });
        }
        Ok(out)
    }

    /// Publishes every dead letter of `topic` not yet replayed back to its
    /// original topic, with the [`REPLAYED_HEADER`] counting replays, and
    /// commits them in the dead-letter topic. Records of one key are replayed
    /// one at a time in order. Returns once the dead-letter topic is drained.
    ///
    /// # Errors
    /// [`Error::Closed`] after shutdown; a backend error when the topic cannot
    /// be read; [`Error::Timeout`] when it is not drained within `timeout`
    /// (what was replayed stays replayed and committed).
    ///
    /// # Cancel safety
    /// Not cancel safe: a dropped call stops mid-way; records put back but not
    /// yet committed are replayed again by the next call.
    pub async fn replay_dead_letters(
        &self,
        topic: &str,
        timeout: Duration,
    ) -> Result<ReplayReport> {
        self.ensure_not_shutting_down()?;
        let dlq = self.dead_letter_topic(topic);
        let group = self.replay_group();
        let (tx, events) = mpsc::channel(EVENT_CHANNEL);
        let consumer = self.inner.backend.consumer(&group, tx).await?;
        let ctx = Arc::new(WorkerContext {
            producer: self.inner.producer.clone(),
            retry: self.inner.config.retry.clone(),
            // A failed republish is retried in its lane, never dead-lettered again.
            dead_letter: DeadLetterConfig {
                enabled: false,
                ..self.inner.config.dead_letter.clone()
            },
            group,
            recovering: Arc::new(AtomicBool::new(false)),
            // Unregistered: a replay's records and gauges must not be mixed
            // into the bus's consumer metrics.
            metrics: Arc::new(crate::metrics::BusMetrics::new().bind(self.inner.backend.name())),
            shutdown: Arc::default(),
        });
        let dispatcher = Dispatcher::spawn(
            consumer.clone(),
            events,
            self.inner.config.dispatch.clone(),
            ctx,
        );
        let replayed = Arc::new(AtomicUsize::new(0));
        let (producer, fallback, count) = (
            self.inner.producer.clone(),
            topic.to_string(),
            replayed.clone(),
        );
        let handler = move |d: Delivery| {
            let (producer, fallback, count) = (producer.clone(), fallback.clone(), count.clone());
            async move {
                let mut message = d.into_message();
                let original = message
                    .headers
                    .get_str(dlq_headers::ORIGINAL_TOPIC)
                    .unwrap_or(&fallback)
                    .to_string();
                let times: u32 = message
                    .headers
                    .get_str(REPLAYED_HEADER)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                message
                    .headers
                    .set(REPLAYED_HEADER, (times + 1).to_string());
                message
                    .headers
                    .set(REPLAYED_FROM_ID_HEADER, std::mem::take(&mut message.id));
                message.id = uuid::Uuid::now_v7().to_string();
                message.timestamp = SystemTime::now();
                producer.send(&original, message).await.map_err(|e| {
                    HandlerError::retryable(format!("replay to {original} failed: {e}"))
                })?;
                count.fetch_add(1, AtomicOrdering::Relaxed);
                Ok(())
            }
        };
        let (reply, added) = oneshot::channel();
        let settings = SubscribeOptions::new().resolve(&self.inner.config.dispatch);
        dispatcher
            .send(Command::Subscribe {
                topic: Arc::from(dlq.as_str()),
                handler: Arc::new(handler),
                settings,
                reply,
            })
            .await;
        let _ = added.await;
        consumer.subscribe(std::slice::from_ref(&dlq)).await?;

        let deadline = Instant::now() + timeout;
        let drained = loop {
            tokio::time::sleep(POLL).await;
            let (reply, stats) = oneshot::channel();
            dispatcher.send(Command::Stats { reply }).await;
            let Ok(stats) = stats.await else { break false };
            let lag: i64 = consumer.lag().await?.iter().map(|l| l.lag()).sum();
            if stats.assigned_partitions > 0 && stats.buffered == 0 && lag == 0 {
                break true;
            }
            if Instant::now() >= deadline {
                break false;
            }
        };
        let (reply, finished) = oneshot::channel();
        if dispatcher
            .send(Command::Drain {
                deadline: Instant::now() + self.inner.config.dispatch.shutdown_timeout,
                leave_buffered: false,
                reply,
            })
            .await
        {
            let _ = finished.await;
        }
        consumer.commit().await?;
        consumer.close().await?;
        let report = ReplayReport {
            replayed: replayed.load(AtomicOrdering::Relaxed),
        };
        tracing::info!(topic, replayed = report.replayed, "dead letters replayed");
        if drained {
            Ok(report)
        } else {
            Err(Error::Timeout {
                operation: "replaying dead letters",
                after: timeout,
            })
        }
    }
}
