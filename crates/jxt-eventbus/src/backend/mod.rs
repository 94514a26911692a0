//! The backend boundary: a producer, a consumer and its acknowledgements.
//!
//! Backends only move bytes and acknowledgements. Ordering, retries,
//! back-pressure decisions and commit positions are decided once, above this
//! boundary, by the dispatcher; a backend carries them out.
//!
//! A consumer reports to the dispatcher through one bounded channel of
//! [`ConsumerEvent`]s, in this order per partition: `Assigned`, then
//! `Records`, then `Revoked`. It never sends records of a partition before its
//! `Assigned` or after its `Revoked`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use crate::error::Result;
use crate::message::Message;

#[cfg(feature = "kafka")]
pub mod kafka;
pub mod memory;
#[cfg(feature = "nats")]
pub mod nats;

/// A partition of a topic.
#[derive(Clone, Debug, Eq, PartialOrd, Ord)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: Arc<str>,
    /// Partition number (0 on backends without partitions).
    pub partition: i32,
}

impl TopicPartition {
    /// A topic partition.
    pub fn new(topic: impl Into<Arc<str>>, partition: i32) -> Self {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

/// Equal topic and partition. The records of a topic share one name
/// (`Arc<str>`), so the name is compared by address first: the dispatcher
/// compares partitions several times per record.
impl PartialEq for TopicPartition {
    fn eq(&self, other: &Self) -> bool {
        self.partition == other.partition
            && (Arc::ptr_eq(&self.topic, &other.topic) || self.topic == other.topic)
    }
}

impl std::hash::Hash for TopicPartition {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.topic.hash(state);
        self.partition.hash(state);
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.topic, self.partition)
    }
}

/// Acknowledges one record on backends that acknowledge per record
/// (JetStream). Cumulative backends (memory, Kafka) leave it out and rely on
/// [`Consumer::store`].
pub trait RecordAck: Send + Sync + fmt::Debug {
    /// Acknowledges the record: it was handled.
    fn ack(self: Box<Self>);

    /// Acknowledges a record that was written to its dead-letter topic and
    /// must never be delivered again (JetStream: `+TERM`). By default the
    /// same as [`RecordAck::ack`].
    fn dead_lettered(self: Box<Self>) {
        self.ack();
    }
}

/// A record read by a consumer.
#[derive(Debug)]
pub struct Record {
    /// Where it was read.
    pub partition: TopicPartition,
    /// Offset (or stream sequence) within the partition.
    pub offset: i64,
    /// The message, shared: handing it to the handler (and again on each
    /// retry) costs a reference count, not a copy.
    pub message: Arc<Message>,
    /// Per-record acknowledgement, on backends that need one.
    pub ack: Option<Box<dyn RecordAck>>,
}

/// What a consumer reports to the dispatcher.
#[derive(Debug)]
pub enum ConsumerEvent {
    /// These partitions are now owned by this consumer.
    Assigned(Vec<TopicPartition>),
    /// Records, in offset order per partition.
    Records(Vec<Record>),
    /// These partitions are being taken away. The dispatcher stops handing
    /// them out, waits (bounded) for their in-flight records, stores their
    /// final positions (unless `lost`) and then answers on `done`; the
    /// backend commits the stored positions before it releases them.
    Revoked {
        /// Partitions being revoked.
        partitions: Vec<TopicPartition>,
        /// The assignment was lost (session expired): nothing may be committed.
        lost: bool,
        /// Answered when the dispatcher is done with the partitions.
        done: oneshot::Sender<()>,
    },
}

/// Result of a successful publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishReceipt {
    /// Partition the record was stored in.
    pub partition: i32,
    /// Its offset (or stream sequence).
    pub offset: i64,
}

/// Lag of one partition for the consumer's group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionLag {
    /// The partition.
    pub partition: TopicPartition,
    /// Offset after the last record in the log.
    pub log_end: i64,
    /// The group's committed position (next offset to read).
    pub committed: i64,
}

impl PartitionLag {
    /// Records not yet committed by the group.
    pub fn lag(&self) -> i64 {
        (self.log_end - self.committed).max(0)
    }
}

/// Writes records.
///
/// Shared by every publisher of the bus; implementations are called
/// concurrently and must not serialize publishes behind one lock.
#[async_trait]
pub trait Producer: Send + Sync + fmt::Debug {
    /// Stores one record and resolves when the broker acknowledged it.
    ///
    /// # Errors
    /// A typed publish error: timeout, unreachable broker, too large, closed.
    async fn send(&self, topic: &str, message: Message) -> Result<PublishReceipt>;

    /// Stores records in order and resolves when each one was acknowledged
    /// or failed; results are in the order of `messages`. Backends that can
    /// pipeline (Kafka) hand every record to the client before awaiting the
    /// first acknowledgement; the default sends one after the other.
    async fn send_batch(&self, topic: &str, messages: Vec<Message>) -> Vec<Result<PublishReceipt>> {
        let mut out = Vec::with_capacity(messages.len());
        for m in messages {
            out.push(self.send(topic, m).await);
        }
        out
    }

    /// Waits until every record handed to [`Producer::send`] is acknowledged.
    ///
    /// # Errors
    /// [`crate::Error::Timeout`] when `timeout` elapses first.
    async fn flush(&self, timeout: Duration) -> Result<()>;
}

/// Reads records for one consumer group and takes acknowledgements.
///
/// One consumer serves the whole bus: every subscribed topic, one group.
/// `pause`, `resume` and `store` are called from the dispatcher task and must
/// not block.
#[async_trait]
pub trait Consumer: Send + Sync + fmt::Debug {
    /// Replaces the set of subscribed topics. Partitions of topics that stay
    /// subscribed keep being processed (incremental rebalancing).
    ///
    /// # Errors
    /// A subscribe error when the backend refuses the topics.
    async fn subscribe(&self, topics: &[String]) -> Result<()>;

    /// Stops fetching these partitions; already fetched records still arrive.
    fn pause(&self, partitions: &[TopicPartition]);

    /// Starts fetching these partitions again.
    fn resume(&self, partitions: &[TopicPartition]);

    /// Why the broker refuses this consumer access now (its ACLs deny
    /// reading a subscribed topic or joining the group), if it does; health
    /// reports the consumer unhealthy with it. Must not block.
    fn access_denied(&self) -> Option<String> {
        None
    }

    /// Records the commit position (next offset to read) of a partition: every
    /// record below it is finished. Committed by the backend as positions
    /// advance (Kafka) or with its own acknowledgements, on revoke and on
    /// close. Ignored for partitions no longer owned.
    fn store(&self, partition: &TopicPartition, next_offset: i64);

    /// How many runs of offsets finished above the commit position the
    /// backend can keep with a commit ([`Consumer::store_finished`]); 0 (the
    /// default) when it keeps none, and the dispatcher does not collect them.
    fn finished_runs_wanted(&self) -> usize {
        0
    }

    /// As [`Consumer::store`], with the offsets finished above `next_offset`
    /// (ascending runs of consecutive offsets, the lowest first; never an
    /// offset that is not finished). A backend that keeps them with the
    /// commit lets the partition's next owner skip those records. By default
    /// they are dropped.
    fn store_finished(
        &self,
        partition: &TopicPartition,
        next_offset: i64,
        finished_above: Vec<std::ops::Range<i64>>,
    ) {
        let _ = finished_above;
        self.store(partition, next_offset);
    }

    /// Commits stored positions now.
    ///
    /// # Errors
    /// [`crate::Error::Commit`] when the broker refuses.
    async fn commit(&self) -> Result<()>;

    /// Lag of every partition this consumer owns.
    ///
    /// # Errors
    /// A backend error when the broker cannot be asked.
    async fn lag(&self) -> Result<Vec<PartitionLag>>;

    /// Commits stored positions and leaves the group.
    ///
    /// # Errors
    /// A backend error; the consumer is closed regardless.
    async fn close(&self) -> Result<()>;
}

/// A broker connection: makes the producer and the consumer.
#[async_trait]
pub trait Backend: Send + Sync + fmt::Debug {
    /// Backend name (`memory`, `kafka`, `nats`), used in errors and metrics.
    fn name(&self) -> &'static str;

    /// The producer (one per bus).
    fn producer(&self) -> Arc<dyn Producer>;

    /// Checks that the broker answers, for health reports.
    ///
    /// # Errors
    /// Why the broker cannot be used (unreachable, timed out).
    async fn check(&self) -> Result<()> {
        Ok(())
    }

    /// The librdkafka handle of the producer, for fault-injection tests
    /// (librdkafka's `rd_kafka_test_fatal_error`). Not part of the API.
    #[cfg(feature = "kafka")]
    #[doc(hidden)]
    fn kafka_native_producer(&self) -> Option<*mut rdkafka::bindings::rd_kafka_t> {
        None
    }

    /// Creates the bus's one consumer in `group`, reporting to `events`.
    ///
    /// # Errors
    /// A backend error when the broker cannot be reached.
    async fn consumer(
        &self,
        group: &str,
        events: mpsc::Sender<ConsumerEvent>,
    ) -> Result<Arc<dyn Consumer>>;
}
