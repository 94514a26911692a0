//! Publishing to JetStream: every publish waits for the stream's PubAck.
//!
//! The message id goes in `Nats-Msg-Id`, so publishing the same message
//! again (after a timeout, say) within the stream's duplicate window stores
//! it once. Publishes from many tasks run concurrently on the one connection;
//! nothing serializes them. [`Producer::send_batch`] puts a whole batch
//! on the wire before waiting for the acks, for throughput. A publish the
//! server refuses for the user's permissions fails at once with the
//! server's words (see `permissions`), not after `publish_timeout`.

use std::collections::VecDeque;
use std::future::IntoFuture;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::context::{PublishAckFuture, PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::Context;
use async_nats::Subject;
use async_trait::async_trait;
use tokio::sync::Notify;

use super::convert;
use super::permissions::{DenialWatch, PublishDenials};
use super::streams::StreamRegistry;
use crate::backend::{Producer, PublishReceipt};
use crate::config::TopicStrategy;
use crate::error::{Error, Result};
use crate::message::Message;

/// Publishes of one batch awaiting their acks at once; also bounds the
/// JetStream context's in-flight ack permits a batch holds.
const BATCH_WINDOW: usize = 1024;

/// A publish on the wire (or why it could not be sent) and when its PubAck
/// is due.
type Pending = (Result<PublishAckFuture>, tokio::time::Instant);

#[derive(Debug)]
pub(crate) struct NatsProducer {
    js: Context,
    streams: Arc<StreamRegistry>,
    publish_timeout: Duration,
    in_flight: Arc<InFlight>,
    denials: Arc<PublishDenials>,
}

/// Counts publishes not yet resolved, for [`Producer::flush`].
#[derive(Debug, Default)]
struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

/// Publishes counted in [`InFlight`] until dropped.
struct InFlightGuard(Arc<InFlight>, usize);

impl InFlight {
    /// Counts `n` publishes until the guard is dropped (a batch counts as a
    /// whole until its last result is in).
    fn enter(self: &Arc<Self>, n: usize) -> InFlightGuard {
        self.count.fetch_add(n, Ordering::AcqRel);
        InFlightGuard(self.clone(), n)
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(self.1, Ordering::AcqRel) == self.1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl NatsProducer {
    pub(crate) fn new(
        js: Context,
        streams: Arc<StreamRegistry>,
        publish_timeout: Duration,
        denials: Arc<PublishDenials>,
    ) -> Self {
        NatsProducer {
            js,
            streams,
            publish_timeout,
            in_flight: Arc::default(),
            denials,
        }
    }

    /// Applies the topic strategy the first time `topic` is published to.
    async fn prepare(&self, topic: &str) -> Result<()> {
        if self.streams.strategy() == TopicStrategy::Skip {
            return Ok(());
        }
        self.streams
            .ensure(topic)
            .await
            .map(|_| ())
            .map_err(|e| Error::Publish {
                topic: topic.to_string(),
                reason: e.to_string(),
                retryable: e.is_retryable(),
                source: Some(Box::new(e)),
            })
    }

    /// Puts one publish on the wire; the returned future resolves with its ack.
    async fn start(
        &self,
        topic: &str,
        subject: &Subject,
        message: Message,
    ) -> Result<PublishAckFuture> {
        let headers = convert::headers(topic, &message)?;
        let publish = PublishMessage::build()
            .payload(message.payload.clone().unwrap_or_default())
            .headers(headers);
        self.js
            .send_publish(subject.clone(), publish)
            .await
            .map_err(|e| self.error(topic, e))
    }

    /// Awaits the PubAck until `deadline` (`publish_timeout` after the
    /// record went out, not after the wait began, so the records of a batch
    /// whose PubAcks are lost time out together rather than one after
    /// another), or the server's refusal of the subject, whichever comes
    /// first.
    async fn finish(
        &self,
        topic: &str,
        pending: Pending,
        denied: &mut DenialWatch,
    ) -> Result<PublishReceipt> {
        if let Some(why) = denied.seen() {
            return Err(refused(topic, why));
        }
        let (ack, deadline) = pending;
        let ack = tokio::select! {
            ack = tokio::time::timeout_at(deadline, ack?.into_future()) => ack
                .map_err(|_| self.timeout())?
                .map_err(|e| self.error(topic, e))?,
            why = denied.refused() => return Err(refused(topic, &why)),
        };
        Ok(PublishReceipt {
            partition: 0,
            offset: i64::try_from(ack.sequence).unwrap_or(i64::MAX),
        })
    }

    /// A record put on the wire now, with the moment its PubAck is due.
    async fn sent(&self, topic: &str, subject: &Subject, message: Message) -> Pending {
        let ack = self.start(topic, subject, message).await;
        (ack, tokio::time::Instant::now() + self.publish_timeout)
    }

    fn timeout(&self) -> Error {
        Error::Timeout {
            operation: "publish (waiting for the JetStream PubAck)",
            after: self.publish_timeout,
        }
    }

    fn error(&self, topic: &str, e: PublishError) -> Error {
        let (reason, retryable) = match e.kind() {
            PublishErrorKind::TimedOut => return self.timeout(),
            PublishErrorKind::StreamNotFound => {
                self.streams.forget(topic);
                // Under `skip` nothing will create it: retrying cannot help
                // until an operator does.
                let skip = self.streams.strategy() == TopicStrategy::Skip;
                (
                    format!(
                        "no JetStream stream captures subject `{topic}`{}",
                        if skip {
                            " (nats.topic_strategy is `skip`: create the stream)"
                        } else {
                            " (it was deleted?); the next publish sets it up again"
                        }
                    ),
                    !skip,
                )
            }
            PublishErrorKind::MaxPayloadExceeded => (format!("message too large: {e}"), false),
            PublishErrorKind::BrokenPipe => (
                "the connection was lost before the PubAck arrived; the record may be stored \
                 (publishing it again is de-duplicated by its id)"
                    .to_string(),
                true,
            ),
            PublishErrorKind::MaxAckPending => {
                ("too many publishes awaiting acks".to_string(), true)
            }
            _ => {
                // A refusal by the stream (limits with discard new, sealed,
                // ...) carries the server's error; anything else is transport.
                let refused = std::error::Error::source(&e)
                    .is_some_and(|s| s.is::<async_nats::jetstream::Error>());
                (format!("JetStream refused the publish: {e}"), !refused)
            }
        };
        Error::Publish {
            topic: topic.to_string(),
            reason,
            retryable,
            source: Some(Box::new(e)),
        }
    }
}

/// A publish the server refused for the user's permissions.
fn refused(topic: &str, why: &str) -> Error {
    Error::Publish {
        topic: topic.to_string(),
        reason: format!(
            "the NATS server refused it for this user's permissions ({why}): the user's \
             `publish` permissions must allow subject `{topic}`"
        ),
        retryable: false,
        source: None,
    }
}

fn clone_publish_error(topic: &str, e: &Error) -> Error {
    Error::Publish {
        topic: topic.to_string(),
        reason: e.to_string(),
        retryable: e.is_retryable(),
        source: None,
    }
}

#[async_trait]
impl Producer for NatsProducer {
    async fn send(&self, topic: &str, message: Message) -> Result<PublishReceipt> {
        let _guard = self.in_flight.enter(1);
        self.prepare(topic).await?;
        let mut denied = self.denials.watch(topic);
        let pending = self.sent(topic, &Subject::from(topic), message).await;
        self.finish(topic, pending, &mut denied).await
    }

    /// Puts the whole batch on the wire before awaiting the PubAcks, up to
    /// 1024 at a time. Results come back in order, one per message; a failure
    /// does not stop the others. PubAcks come back in publish order, so they
    /// are awaited one after another: a wake-up now and then, no future per
    /// record. Each record's wait ends `publish_timeout` after it went out,
    /// so a batch whose PubAcks are lost resolves about `publish_timeout`
    /// after its last record was sent.
    async fn send_batch(&self, topic: &str, messages: Vec<Message>) -> Vec<Result<PublishReceipt>> {
        let n = messages.len();
        let _guard = self.in_flight.enter(n);
        if let Err(e) = self.prepare(topic).await {
            return (0..n)
                .map(|_| Err(clone_publish_error(topic, &e)))
                .collect();
        }
        let mut results = Vec::with_capacity(n);
        let mut window = VecDeque::with_capacity(n.min(BATCH_WINDOW));
        let subject = Subject::from(topic);
        let mut denied = self.denials.watch(topic);
        for message in messages {
            if window.len() >= BATCH_WINDOW {
                if let Some(oldest) = window.pop_front() {
                    results.push(self.finish(topic, oldest, &mut denied).await);
                }
            }
            window.push_back(self.sent(topic, &subject, message).await);
        }
        for pending in window {
            results.push(self.finish(topic, pending, &mut denied).await);
        }
        results
    }

    async fn flush(&self, timeout: Duration) -> Result<()> {
        let wait = async {
            loop {
                let idle = self.in_flight.idle.notified();
                tokio::pin!(idle);
                idle.as_mut().enable();
                if self.in_flight.count.load(Ordering::Acquire) == 0 {
                    return;
                }
                idle.await;
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| Error::Timeout {
                operation: "producer flush",
                after: timeout,
            })
    }
}
