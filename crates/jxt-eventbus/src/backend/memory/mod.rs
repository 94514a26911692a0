//! The in-memory broker: partitioned topics, consumer groups with committed
//! positions, redelivery of unfinished records when a member leaves, lag, and
//! bounded retention (publish waits for slow groups, it never drops).
//!
//! Buses that should talk to each other share a [`MemoryBroker`]; a bus built
//! without one gets a private broker. There is no process-global state, and
//! no broker-wide lock on the record path: each partition has its own lock
//! and each group member its own (see `BrokerInner` for which is taken
//! where), so publishers and consumers of different partitions never wait
//! for each other.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::backend::{Backend, ConsumerEvent, PublishReceipt};
use crate::config::{MemoryConfig, StartFrom};
use crate::error::{Error, Result};
use crate::message::Message;

mod consumer;
mod drained;
mod group;
mod log;
#[cfg(test)]
mod tests;

use consumer::MemoryConsumer;
use group::Group;
use log::{Partition, TopicLog};

/// A handle to an in-process broker. Cloning shares the broker.
#[derive(Clone, Debug)]
pub struct MemoryBroker {
    inner: Arc<BrokerInner>,
}

/// The broker's state, split so that the record path (publish, fetch,
/// offset store, pause) takes only the lock of the partition it touches and
/// of the member doing it — never one lock of the whole broker:
///
/// | lock | taken by |
/// |------|----------|
/// | `topics` (read/write) | read on every publish to find the topic; written only to create one |
/// | a partition's (`log::Partition`) | publish, fetch, store and lag of that partition |
/// | a member's (`group::MemberShared`) | its fetch loop, pause, resume, store, lag; rebalances |
/// | `groups` | joins, leaves, subscription changes and rebalances |
///
/// Locks are taken in that order from the bottom up — `groups`, then a
/// member's, then `topics`, then a partition's — and none is held across an
/// await.
#[derive(Debug)]
struct BrokerInner {
    config: MemoryConfig,
    topics: RwLock<HashMap<Arc<str>, Arc<TopicLog>>>,
    groups: Mutex<HashMap<String, Group>>,
    /// Topics whose publishes fail (fault injection for tests), with a flag
    /// so that publishes skip the set while it is empty.
    unavailable: Mutex<HashSet<String>>,
    any_unavailable: AtomicBool,
    next_member: AtomicU64,
    /// One rebalance at a time per group.
    rebalancing: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Woken when positions move, for [`MemoryBroker::drained`].
    settle: drained::SettleWatch,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every mutation is a single step: a panic elsewhere while holding a
    // lock leaves consistent state, so keep serving rather than poisoning.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl BrokerInner {
    fn groups(&self) -> MutexGuard<'_, HashMap<String, Group>> {
        lock(&self.groups)
    }

    fn existing_topic(&self, name: &str) -> Option<Arc<TopicLog>> {
        self.topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// The topic, created with `partitions` partitions on first use.
    fn topic_or_create(&self, name: &str, partitions: u32) -> Arc<TopicLog> {
        if let Some(t) = self.existing_topic(name) {
            return t;
        }
        self.topics
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(Arc::from(name))
            .or_insert_with(|| Arc::new(TopicLog::new(partitions)))
            .clone()
    }

    fn topic(&self, name: &str) -> Arc<TopicLog> {
        self.topic_or_create(name, self.config.partitions)
    }

    fn all_topics(&self) -> Vec<Arc<TopicLog>> {
        self.topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn partitions_of(&self, topic: &str) -> u32 {
        self.existing_topic(topic)
            .map_or(0, |t| t.partitions.len() as u32)
    }

    fn check_available(&self, topic: &str) -> Result<()> {
        if self.any_unavailable.load(AtomicOrdering::Acquire)
            && lock(&self.unavailable).contains(topic)
        {
            return Err(Error::Publish {
                topic: topic.to_string(),
                reason: "topic is unavailable (MemoryBroker::set_unavailable)".into(),
                retryable: true,
                source: None,
            });
        }
        Ok(())
    }
}

impl MemoryBroker {
    /// A new, empty broker.
    pub fn new(config: MemoryConfig) -> Self {
        MemoryBroker {
            inner: Arc::new(BrokerInner {
                config,
                topics: RwLock::default(),
                groups: Mutex::default(),
                unavailable: Mutex::default(),
                any_unavailable: AtomicBool::new(false),
                next_member: AtomicU64::new(1),
                rebalancing: Mutex::default(),
                settle: drained::SettleWatch::default(),
            }),
        }
    }

    /// Creates a topic with `partitions` partitions; no-op if it exists.
    /// Topics are otherwise created on first use with
    /// [`MemoryConfig::partitions`].
    pub fn create_topic(&self, topic: &str, partitions: u32) {
        self.inner.topic_or_create(topic, partitions);
    }

    /// Offset after the last record of each partition of `topic`.
    pub fn end_offsets(&self, topic: &str) -> Vec<i64> {
        self.inner
            .existing_topic(topic)
            .map(|t| t.partitions.iter().map(|p| p.lock().log.end()).collect())
            .unwrap_or_default()
    }

    /// Committed position of `group` for each partition of `topic` (`None`
    /// where the group never read that partition).
    pub fn committed(&self, group: &str, topic: &str) -> Vec<Option<i64>> {
        self.inner
            .existing_topic(topic)
            .map(|t| {
                t.partitions
                    .iter()
                    .map(|p| p.lock().committed.get(group).copied())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Records of `topic` still retained, as `(partition, offset, message)`.
    pub fn retained(&self, topic: &str) -> Vec<(i32, i64, Message)> {
        let Some(t) = self.inner.existing_topic(topic) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (p, partition) in t.partitions.iter().enumerate() {
            let st = partition.lock();
            for (offset, m) in st.log.iter() {
                out.push((p as i32, offset, Message::clone(m)));
            }
        }
        out
    }

    /// Number of members currently in `group`.
    pub fn group_members(&self, group: &str) -> usize {
        self.inner
            .groups()
            .get(group)
            .map_or(0, |g| g.members.len())
    }

    /// Makes publishes to `topic` fail (retryable) until called again with
    /// `false` — fault injection, to see what the bus does when a broker
    /// refuses a write (for example to a dead-letter topic).
    pub fn set_unavailable(&self, topic: &str, unavailable: bool) {
        let mut set = lock(&self.inner.unavailable);
        if unavailable {
            set.insert(topic.to_string());
        } else {
            set.remove(topic);
        }
        self.inner
            .any_unavailable
            .store(!set.is_empty(), AtomicOrdering::Release);
    }

    /// Forgets a group's committed positions (it no longer holds back
    /// retention). Fails if the group has members.
    ///
    /// # Errors
    /// [`Error::Backend`] when members are still in the group.
    pub fn delete_group(&self, group: &str) -> Result<()> {
        // Held throughout, so that no member joins and subscribes meanwhile.
        let mut groups = self.inner.groups();
        if groups.get(group).is_some_and(|g| !g.members.is_empty()) {
            return Err(backend_error(format!("group {group:?} still has members")));
        }
        groups.remove(group);
        for t in self.inner.all_topics() {
            for p in t.partitions.iter() {
                let released = {
                    let mut st = p.lock();
                    st.committed.remove(group).is_some() && st.release()
                };
                if released {
                    p.space.notify_waiters();
                }
            }
        }
        drop(groups);
        self.inner.settle.moved();
        Ok(())
    }

    pub(crate) fn backend(&self, start_from: StartFrom) -> MemoryBackend {
        MemoryBackend {
            broker: self.clone(),
            start_from,
        }
    }

    async fn publish(&self, topic: &str, message: Message) -> Result<PublishReceipt> {
        self.inner.check_available(topic)?;
        let log = self.inner.topic(topic);
        let p = log.partition_for(message.key.as_deref());
        let partition = &log.partitions[p];
        let mut message = match self.try_append(partition, p, message) {
            Ok(receipt) => return Ok(receipt),
            Err(message) => message,
        };
        // Full: wait for room, registered before looking again so that room
        // made in between is not missed.
        let deadline = tokio::time::Instant::now() + self.inner.config.publish_timeout;
        loop {
            let space = partition.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            self.inner.check_available(topic)?;
            message = match self.try_append(partition, p, message) {
                Ok(receipt) => return Ok(receipt),
                Err(message) => message,
            };
            if tokio::time::timeout_at(deadline, space).await.is_err() {
                return Err(Error::Publish {
                    topic: topic.to_string(),
                    reason: format!(
                        "memory partition is full: the slowest consumer group is {} records behind \
                         (memory.max_retained_per_partition) and no room was made within {:?} \
                         (memory.publish_timeout)",
                        self.inner.config.max_retained_per_partition,
                        self.inner.config.publish_timeout
                    ),
                    retryable: true,
                    source: None,
                });
            }
        }
    }

    /// Appends `message` to partition `p`, or hands it back when the
    /// partition is full. Wakes the fetchers of the partition's owners.
    // Handing the message back by value lets the caller retry without a
    // clone; it is the Ok path that must stay cheap, and it does.
    #[allow(clippy::result_large_err)]
    fn try_append(
        &self,
        partition: &Partition,
        p: usize,
        message: Message,
    ) -> std::result::Result<PublishReceipt, Message> {
        let mut st = partition.lock();
        st.log.compact();
        if st.log.len() >= self.inner.config.max_retained_per_partition {
            return Err(message);
        }
        let offset = st.log.append(message);
        for (_, reader) in &st.readers {
            reader.notify_one();
        }
        Ok(PublishReceipt {
            partition: p as i32,
            offset,
        })
    }
}

fn backend_error(reason: String) -> Error {
    Error::Backend {
        backend: "memory",
        reason,
        retryable: false,
        source: None,
    }
}

/// The memory backend of one bus.
#[derive(Debug)]
pub(crate) struct MemoryBackend {
    broker: MemoryBroker,
    start_from: StartFrom,
}

#[derive(Debug)]
struct MemoryProducer {
    broker: MemoryBroker,
}

#[async_trait]
impl crate::backend::Producer for MemoryProducer {
    async fn send(&self, topic: &str, message: Message) -> Result<PublishReceipt> {
        self.broker.publish(topic, message).await
    }

    async fn flush(&self, _timeout: Duration) -> Result<()> {
        // `send` resolves only once stored: nothing is ever pending.
        Ok(())
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn producer(&self) -> Arc<dyn crate::backend::Producer> {
        Arc::new(MemoryProducer {
            broker: self.broker.clone(),
        })
    }

    async fn consumer(
        &self,
        group: &str,
        events: mpsc::Sender<ConsumerEvent>,
    ) -> Result<Arc<dyn crate::backend::Consumer>> {
        let id = self
            .broker
            .inner
            .next_member
            .fetch_add(1, AtomicOrdering::Relaxed);
        Ok(Arc::new(MemoryConsumer::join(
            self.broker.clone(),
            group.to_string(),
            id,
            self.start_from,
            events,
        )))
    }
}
