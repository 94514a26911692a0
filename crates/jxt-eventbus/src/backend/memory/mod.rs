//! The in-memory broker: partitioned topics, consumer groups with committed
//! positions, redelivery of unfinished records when a member leaves, lag, and
//! bounded retention (publish waits for slow groups, it never drops).
//!
//! Buses that should talk to each other share a [`MemoryBroker`]; a bus built
//! without one gets a private broker. There is no process-global state.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, Notify};

use crate::backend::{Backend, ConsumerEvent, PublishReceipt, TopicPartition};
use crate::config::{MemoryConfig, StartFrom};
use crate::error::{Error, Result};
use crate::message::Message;

mod consumer;
mod group;
mod log;

use consumer::MemoryConsumer;
use group::Group;
use log::TopicLog;

/// A handle to an in-process broker. Cloning shares the broker.
#[derive(Clone, Debug)]
pub struct MemoryBroker {
    inner: Arc<BrokerInner>,
}

#[derive(Debug)]
struct BrokerInner {
    config: MemoryConfig,
    state: Mutex<State>,
    /// Woken when records are appended or partitions resumed.
    data: Notify,
    /// Woken when committed positions release records.
    space: Notify,
    next_member: AtomicU64,
    /// One rebalance at a time per group.
    rebalancing: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

#[derive(Debug, Default)]
struct State {
    topics: HashMap<Arc<str>, TopicLog>,
    groups: HashMap<String, Group>,
    /// Topics whose publishes fail (fault injection for tests).
    unavailable: std::collections::HashSet<String>,
}

impl MemoryBroker {
    /// A new, empty broker.
    pub fn new(config: MemoryConfig) -> Self {
        MemoryBroker {
            inner: Arc::new(BrokerInner {
                config,
                state: Mutex::default(),
                data: Notify::new(),
                space: Notify::new(),
                next_member: AtomicU64::new(1),
                rebalancing: Mutex::default(),
            }),
        }
    }

    /// Creates a topic with `partitions` partitions; no-op if it exists.
    /// Topics are otherwise created on first use with
    /// [`MemoryConfig::partitions`].
    pub fn create_topic(&self, topic: &str, partitions: u32) {
        let mut state = self.inner.lock();
        state
            .topics
            .entry(Arc::from(topic))
            .or_insert_with(|| TopicLog::new(partitions));
    }

    /// Offset after the last record of each partition of `topic`.
    pub fn end_offsets(&self, topic: &str) -> Vec<i64> {
        let state = self.inner.lock();
        state
            .topics
            .get(topic)
            .map(|t| t.partitions.iter().map(|p| p.end()).collect())
            .unwrap_or_default()
    }

    /// Committed position of `group` for each partition of `topic` (`None`
    /// where the group never read that partition).
    pub fn committed(&self, group: &str, topic: &str) -> Vec<Option<i64>> {
        let state = self.inner.lock();
        let Some(t) = state.topics.get(topic) else {
            return Vec::new();
        };
        let g = state.groups.get(group);
        (0..t.partitions.len() as i32)
            .map(|p| g.and_then(|g| g.committed.get(&TopicPartition::new(topic, p)).copied()))
            .collect()
    }

    /// Records of `topic` still retained, as `(partition, offset, message)`.
    pub fn retained(&self, topic: &str) -> Vec<(i32, i64, Message)> {
        let state = self.inner.lock();
        let Some(t) = state.topics.get(topic) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (p, log) in t.partitions.iter().enumerate() {
            for (i, m) in log.records.iter().enumerate() {
                out.push((p as i32, log.base + i as i64, Message::clone(m)));
            }
        }
        out
    }

    /// Number of members currently in `group`.
    pub fn group_members(&self, group: &str) -> usize {
        self.inner
            .lock()
            .groups
            .get(group)
            .map_or(0, |g| g.members.len())
    }

    /// Makes publishes to `topic` fail (retryable) until called again with
    /// `false` — fault injection, to see what the bus does when a broker
    /// refuses a write (for example to a dead-letter topic).
    pub fn set_unavailable(&self, topic: &str, unavailable: bool) {
        let mut state = self.inner.lock();
        if unavailable {
            state.unavailable.insert(topic.to_string());
        } else {
            state.unavailable.remove(topic);
        }
    }

    /// Forgets a group's committed positions (it no longer holds back
    /// retention). Fails if the group has members.
    ///
    /// # Errors
    /// [`Error::Backend`] when members are still in the group.
    pub fn delete_group(&self, group: &str) -> Result<()> {
        let mut state = self.inner.lock();
        if state
            .groups
            .get(group)
            .is_some_and(|g| !g.members.is_empty())
        {
            return Err(backend_error(format!("group {group:?} still has members")));
        }
        state.groups.remove(group);
        let topics: Vec<Arc<str>> = state.topics.keys().cloned().collect();
        for t in topics {
            release(&mut state, &t);
        }
        drop(state);
        self.inner.space.notify_waiters();
        Ok(())
    }

    pub(crate) fn backend(&self, start_from: StartFrom) -> MemoryBackend {
        MemoryBackend {
            broker: self.clone(),
            start_from,
        }
    }

    async fn publish(&self, topic: &str, message: Message) -> Result<PublishReceipt> {
        let mut message = match self.try_append(topic, message)? {
            Ok(receipt) => return Ok(receipt),
            Err(message) => message,
        };
        // Full: wait for room, registered before looking again so that room
        // made in between is not missed.
        let deadline = tokio::time::Instant::now() + self.inner.config.publish_timeout;
        loop {
            let space = self.inner.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            message = match self.try_append(topic, message)? {
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

    /// Appends `message` to its partition of `topic` (created on first
    /// use), or hands it back when the partition is full.
    fn try_append(
        &self,
        topic: &str,
        message: Message,
    ) -> Result<std::result::Result<PublishReceipt, Message>> {
        let mut state = self.inner.lock();
        if state.unavailable.contains(topic) {
            return Err(Error::Publish {
                topic: topic.to_string(),
                reason: "topic is unavailable (MemoryBroker::set_unavailable)".into(),
                retryable: true,
                source: None,
            });
        }
        if !state.topics.contains_key(topic) {
            let partitions = self.inner.config.partitions;
            state
                .topics
                .insert(Arc::from(topic), TopicLog::new(partitions));
        }
        let Some(log) = state.topics.get_mut(topic) else {
            unreachable!("inserted above");
        };
        let p = log.partition_for(message.key.as_deref());
        let plog = &mut log.partitions[p];
        if plog.records.len() >= self.inner.config.max_retained_per_partition {
            return Ok(Err(message));
        }
        let offset = plog.append(message);
        drop(state);
        self.inner.data.notify_waiters();
        Ok(Ok(PublishReceipt {
            partition: p as i32,
            offset,
        }))
    }
}

impl BrokerInner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent-enough state (every
        // mutation is a single step); keep serving rather than poisoning.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Releases records of `topic` that every group holding a position passed.
fn release(state: &mut State, topic: &Arc<str>) {
    let State { topics, groups, .. } = state;
    let Some(log) = topics.get_mut(topic) else {
        return;
    };
    for (p, plog) in log.partitions.iter_mut().enumerate() {
        let tp = TopicPartition::new(topic.clone(), p as i32);
        let min = groups.values().filter_map(|g| g.committed.get(&tp)).min();
        if let Some(&min) = min {
            plog.release_below(min);
        }
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
