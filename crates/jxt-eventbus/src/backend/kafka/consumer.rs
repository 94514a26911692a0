//! The bus's one Kafka consumer: a handle over a librdkafka consumer driven
//! by its own thread ([`super::poll_loop`]).
//!
//! The dispatcher's calls are cheap and safe at any time, rebalances
//! included, and never wait on the poll thread or librdkafka (they run on
//! the async runtime's workers): `pause`/`resume` queue the change for the
//! poll thread ([`super::flow`]), `store` notes the position in memory
//! (a short lock) for the committer thread ([`super::commits`]) to commit.
//! Subscription changes and close go to the thread as commands, since they
//! interact with rebalance callbacks that only that thread serves.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::KafkaError;
use tokio::sync::oneshot;

use super::admin::TopicAdmin;
use super::errors;
use super::lag;
use super::poll_loop::{self, Command};
use super::rebalance::RebalanceContext;
use crate::backend::{Consumer, PartitionLag, TopicPartition};
use crate::config::StartFrom;
use crate::error::{Error, Result};

/// How long lag and commit requests may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Extra time for a subscription change beyond a revoke's wait.
const SUBSCRIBE_SETTLE: Duration = Duration::from_secs(30);

/// Settings the consumer handle needs.
#[derive(Debug, Clone)]
pub(super) struct ConsumerSettings {
    pub(super) group: String,
    pub(super) start_from: StartFrom,
    pub(super) revoke_wait: Duration,
    pub(super) admin_timeout: Duration,
}

/// The bus's Kafka consumer.
pub(super) struct KafkaConsumer {
    /// The poll thread owns the client; it closes and destroys it on that
    /// thread (destroying an open consumer serves rebalance callbacks, which
    /// must never run on the async runtime).
    consumer: Weak<BaseConsumer<RebalanceContext>>,
    ctx: Arc<RebalanceContext>,
    commands: mpsc::Sender<Command>,
    topics: Arc<TopicAdmin>,
    settings: ConsumerSettings,
    closed: AtomicBool,
}

impl std::fmt::Debug for KafkaConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConsumer")
            .field("group", &self.settings.group)
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl KafkaConsumer {
    /// Starts the poll thread of `consumer`.
    ///
    /// # Errors
    /// A backend error when the thread cannot be started.
    pub(super) fn start(
        consumer: BaseConsumer<RebalanceContext>,
        topics: Arc<TopicAdmin>,
        settings: ConsumerSettings,
    ) -> Result<Self> {
        let consumer = Arc::new(consumer);
        let ctx = consumer.context().clone();
        let (commands, inbox) = mpsc::channel();
        let handle = Arc::downgrade(&consumer);
        let group = settings.group.clone();
        std::thread::Builder::new()
            .name(format!("kafka-consumer-{}", settings.group))
            .spawn(move || poll_loop::run(consumer, inbox, group))
            .map_err(|e| {
                errors::backend(
                    format!("cannot start the consumer thread: {e}"),
                    false,
                    None,
                )
            })?;
        Ok(KafkaConsumer {
            consumer: handle,
            ctx,
            commands,
            topics,
            settings,
            closed: AtomicBool::new(false),
        })
    }

    /// Runs a blocking librdkafka call off the async runtime.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&BaseConsumer<RebalanceContext>) -> T + Send + 'static,
    ) -> Result<T> {
        let consumer = self.consumer.upgrade().ok_or(Error::Closed)?;
        tokio::task::spawn_blocking(move || f(&consumer))
            .await
            .map_err(|e| errors::backend(format!("consumer task failed: {e}"), true, None))
    }
}

#[async_trait]
impl Consumer for KafkaConsumer {
    async fn subscribe(&self, topics: &[String]) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        for topic in topics {
            self.topics
                .ensure(topic, self.settings.admin_timeout)
                .await
                .map_err(|e| Error::Subscribe {
                    topic: topic.clone(),
                    reason: e.reason,
                })?;
        }
        let (reply, answer) = oneshot::channel();
        let command = Command::Subscribe {
            topics: topics.to_vec(),
            wait: self.settings.revoke_wait + SUBSCRIBE_SETTLE,
            reply,
        };
        if self.commands.send(command).is_err() {
            return Err(Error::Closed);
        }
        answer.await.map_err(|_| Error::Closed)?
    }

    fn pause(&self, partitions: &[TopicPartition]) {
        self.ctx.flow.pause(partitions);
    }

    fn access_denied(&self) -> Option<String> {
        self.ctx.access.current(std::time::Instant::now())
    }

    fn resume(&self, partitions: &[TopicPartition]) {
        self.ctx.flow.resume(partitions);
    }

    fn store(&self, partition: &TopicPartition, next_offset: i64) {
        self.ctx.store(partition, next_offset, Vec::new());
    }

    fn finished_runs_wanted(&self) -> usize {
        super::commits::FINISHED_RUNS
    }

    fn store_finished(
        &self,
        partition: &TopicPartition,
        next_offset: i64,
        finished_above: Vec<std::ops::Range<i64>>,
    ) {
        self.ctx.store(partition, next_offset, finished_above);
    }

    async fn commit(&self) -> Result<()> {
        self.blocking(|c| c.context().commits.commit_now(c))
            .await?
            .map_err(|e: KafkaError| Error::Commit {
                reason: format!("the group coordinator refused the commit: {e}"),
                source: Some(Box::new(e)),
            })
    }

    async fn lag(&self) -> Result<Vec<PartitionLag>> {
        let start_from = self.settings.start_from;
        self.blocking(move |c| lag::assigned_lag(c, start_from, REQUEST_TIMEOUT))
            .await?
            .map_err(|e| errors::backend(format!("cannot read the lag: {e}"), true, Some(e)))
    }

    async fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // The caller drained the dispatcher (or does not read its events any
        // more): the final revoke commits what was stored without waiting.
        self.ctx.begin_close();
        let (reply, closed) = oneshot::channel();
        if self
            .commands
            .send(Command::Close { reply: Some(reply) })
            .is_err()
        {
            return Ok(());
        }
        // The close serves a final revoke (bounded by the revoke wait) and a
        // LeaveGroup request.
        let bound = self.settings.revoke_wait + REQUEST_TIMEOUT;
        match tokio::time::timeout(bound, closed).await {
            Ok(_) => Ok(()),
            Err(_) => Err(Error::Timeout {
                operation: "kafka consumer close",
                after: bound,
            }),
        }
    }
}

impl Drop for KafkaConsumer {
    fn drop(&mut self) {
        // Dropped without `close` (a crash of the bus): the thread still
        // releases the partitions and leaves the group, committing only
        // positions of finished records.
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.ctx.begin_close();
            let _ = self.commands.send(Command::Close { reply: None });
        }
    }
}
