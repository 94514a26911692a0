//! A member of a memory consumer group: fetch loop and rebalancing.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot, Notify};

use super::group::{Member, Owned};
use super::{release, MemoryBroker, TopicLog};
use crate::backend::{Consumer, ConsumerEvent, PartitionLag, Record, TopicPartition};
use crate::config::StartFrom;
use crate::error::Result;

/// Records taken from one partition per fetch, so partitions share the
/// channel fairly.
const FETCH_PER_PARTITION: usize = 64;
/// Upper bound on one fetch.
const FETCH_MAX: usize = 256;
/// How long a rebalance waits for a member to release revoked partitions.
/// The member's own revoke timeout is shorter; this only guards against a
/// member that vanished without answering.
const REVOKE_WAIT: Duration = Duration::from_secs(120);

#[derive(Debug)]
pub(super) struct MemoryConsumer {
    broker: MemoryBroker,
    group: String,
    id: u64,
    start_from: StartFrom,
    closed: Arc<AtomicBool>,
    stop: Arc<Notify>,
}

impl MemoryConsumer {
    pub(super) fn join(
        broker: MemoryBroker,
        group: String,
        id: u64,
        start_from: StartFrom,
        events: mpsc::Sender<ConsumerEvent>,
    ) -> Self {
        {
            let mut state = broker.inner.lock();
            let g = state.groups.entry(group.clone()).or_default();
            g.members.insert(
                id,
                Member {
                    topics: BTreeSet::new(),
                    events: events.clone(),
                    owned: HashMap::new(),
                },
            );
        }
        let stop = Arc::new(Notify::new());
        tokio::spawn(fetch_loop(
            broker.clone(),
            group.clone(),
            id,
            events,
            stop.clone(),
        ));
        MemoryConsumer {
            broker,
            group,
            id,
            start_from,
            closed: Arc::new(AtomicBool::new(false)),
            stop,
        }
    }

    /// Removes the member; its partitions go to the others at the committed
    /// position, so its unfinished records are redelivered.
    fn leave(&self) -> bool {
        if self.closed.swap(true, AtomicOrdering::SeqCst) {
            return false;
        }
        self.stop.notify_one();
        let mut state = self.broker.inner.lock();
        if let Some(g) = state.groups.get_mut(&self.group) {
            g.members.remove(&self.id);
        }
        true
    }
}

impl Drop for MemoryConsumer {
    fn drop(&mut self) {
        if self.leave() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(rebalance(self.broker.clone(), self.group.clone()));
            }
        }
    }
}

async fn fetch_loop(
    broker: MemoryBroker,
    group: String,
    id: u64,
    events: mpsc::Sender<ConsumerEvent>,
    stop: Arc<Notify>,
) {
    loop {
        let data = broker.inner.data.notified();
        tokio::pin!(data);
        data.as_mut().enable();
        let Some(batch) = fetch(&broker, &group, id) else {
            return;
        };
        if batch.is_empty() {
            tokio::select! {
                _ = &mut data => {}
                _ = stop.notified() => return,
            }
            // Let the publishers that woke us append a few more records, so
            // one event carries a batch instead of a single record.
            tokio::task::yield_now().await;
            continue;
        }
        if events.send(ConsumerEvent::Records(batch)).await.is_err() {
            return;
        }
    }
}

/// Takes the next records of every fetchable partition of a member; `None`
/// when the member is gone.
fn fetch(broker: &MemoryBroker, group: &str, id: u64) -> Option<Vec<Record>> {
    let mut state = broker.inner.lock();
    let super::State { topics, groups, .. } = &mut *state;
    let member = groups.get_mut(group)?.members.get_mut(&id)?;
    let mut out = Vec::new();
    for (tp, owned) in member.owned.iter_mut() {
        if !owned.fetchable || owned.paused {
            continue;
        }
        let Some(plog) = topics
            .get(&tp.topic)
            .and_then(|t| t.partitions.get(tp.partition as usize))
        else {
            continue;
        };
        let until = plog.end().min(owned.position + FETCH_PER_PARTITION as i64);
        while owned.position < until && out.len() < FETCH_MAX {
            if let Some(m) = plog.get(owned.position) {
                out.push(Record {
                    partition: tp.clone(),
                    offset: owned.position,
                    message: m.clone(),
                    ack: None,
                });
            }
            owned.position += 1;
        }
        if out.len() >= FETCH_MAX {
            break;
        }
    }
    Some(out)
}

/// Moves the group toward its target assignment: revoke first (and wait for
/// the owners to finish and commit), then assign at the committed position.
async fn rebalance(broker: MemoryBroker, group: String) {
    let lock = {
        let mut locks = broker
            .inner
            .rebalancing
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        locks.entry(group.clone()).or_default().clone()
    };
    let _serial = lock.lock().await;

    // Phase 1: revoke what moves or is no longer subscribed.
    let mut revokes = Vec::new();
    {
        let mut state = broker.inner.lock();
        let super::State { topics, groups, .. } = &mut *state;
        let Some(g) = groups.get_mut(&group) else {
            return;
        };
        let target = g.target(|t| partitions(topics, t));
        for (id, m) in g.members.iter_mut() {
            let gone: Vec<TopicPartition> = m
                .owned
                .keys()
                .filter(|tp| target.get(*tp) != Some(id))
                .cloned()
                .collect();
            if gone.is_empty() {
                continue;
            }
            for tp in &gone {
                if let Some(o) = m.owned.get_mut(tp) {
                    o.fetchable = false;
                }
            }
            revokes.push((*id, m.events.clone(), gone));
        }
    }
    // The owners keep the partitions (so their final `store` counts) until
    // they answer; only then are the partitions released.
    let mut waits = Vec::new();
    for (_, events, partitions) in revokes {
        let (done, answered) = oneshot::channel();
        let event = ConsumerEvent::Revoked {
            partitions,
            lost: false,
            done,
        };
        if events.send(event).await.is_ok() {
            waits.push(answered);
        }
    }
    for answered in waits {
        // A dropped sender means the member is gone: nothing to wait for.
        let _ = tokio::time::timeout(REVOKE_WAIT, answered).await;
    }
    {
        let mut state = broker.inner.lock();
        if let Some(g) = state.groups.get_mut(&group) {
            for m in g.members.values_mut() {
                m.owned.retain(|_, o| o.fetchable);
            }
        }
    }

    // Phase 2: assign unowned partitions to their target owner, from the
    // committed position.
    let mut assigns = Vec::new();
    {
        let mut state = broker.inner.lock();
        let super::State { topics, groups, .. } = &mut *state;
        let Some(g) = groups.get_mut(&group) else {
            return;
        };
        let target = g.target(|t| partitions(topics, t));
        let mut per_member: HashMap<u64, Vec<TopicPartition>> = HashMap::new();
        for (tp, owner) in target {
            if g.owner(&tp).is_none() {
                per_member.entry(owner).or_default().push(tp);
            }
        }
        for (id, mut tps) in per_member {
            tps.sort();
            let position: Vec<i64> = tps
                .iter()
                .map(|tp| g.committed.get(tp).copied().unwrap_or(0))
                .collect();
            let Some(m) = g.members.get_mut(&id) else {
                continue;
            };
            for (tp, position) in tps.iter().zip(position) {
                m.owned.insert(
                    tp.clone(),
                    Owned {
                        position,
                        fetchable: false,
                        paused: false,
                    },
                );
            }
            assigns.push((id, m.events.clone(), tps));
        }
    }
    for (id, events, tps) in assigns {
        let delivered = events
            .send(ConsumerEvent::Assigned(tps.clone()))
            .await
            .is_ok();
        let mut state = broker.inner.lock();
        if let Some(m) = state
            .groups
            .get_mut(&group)
            .and_then(|g| g.members.get_mut(&id))
        {
            for tp in &tps {
                if delivered {
                    if let Some(o) = m.owned.get_mut(tp) {
                        o.fetchable = true;
                    }
                } else {
                    m.owned.remove(tp);
                }
            }
        }
    }
    broker.inner.data.notify_waiters();
}

fn partitions(topics: &HashMap<Arc<str>, TopicLog>, topic: &str) -> u32 {
    topics.get(topic).map_or(0, |t| t.partitions.len() as u32)
}

#[async_trait]
impl Consumer for MemoryConsumer {
    async fn subscribe(&self, topics: &[String]) -> Result<()> {
        {
            let mut state = self.broker.inner.lock();
            let default_partitions = self.broker.inner.config.partitions;
            let super::State {
                topics: logs,
                groups,
                ..
            } = &mut *state;
            let g = groups.entry(self.group.clone()).or_default();
            for t in topics {
                let log = logs
                    .entry(Arc::from(t.as_str()))
                    .or_insert_with(|| TopicLog::new(default_partitions));
                for (p, plog) in log.partitions.iter().enumerate() {
                    let start = match self.start_from {
                        StartFrom::Earliest => plog.base,
                        StartFrom::Latest => plog.end(),
                    };
                    g.committed
                        .entry(TopicPartition::new(t.as_str(), p as i32))
                        .or_insert(start);
                }
            }
            if let Some(m) = g.members.get_mut(&self.id) {
                m.topics = topics.iter().map(|t| Arc::from(t.as_str())).collect();
            }
        }
        rebalance(self.broker.clone(), self.group.clone()).await;
        Ok(())
    }

    fn pause(&self, partitions: &[TopicPartition]) {
        self.set_paused(partitions, true);
    }

    fn resume(&self, partitions: &[TopicPartition]) {
        self.set_paused(partitions, false);
        self.broker.inner.data.notify_waiters();
    }

    fn store(&self, partition: &TopicPartition, next_offset: i64) {
        let mut state = self.broker.inner.lock();
        let Some(g) = state.groups.get_mut(&self.group) else {
            return;
        };
        let owns = g
            .members
            .get(&self.id)
            .is_some_and(|m| m.owned.contains_key(partition));
        if !owns {
            return;
        }
        let c = g.committed.entry(partition.clone()).or_insert(next_offset);
        *c = (*c).max(next_offset);
        release(&mut state, &partition.topic);
        drop(state);
        self.broker.inner.space.notify_waiters();
    }

    async fn commit(&self) -> Result<()> {
        // `store` commits immediately on this backend.
        Ok(())
    }

    async fn lag(&self) -> Result<Vec<PartitionLag>> {
        let state = self.broker.inner.lock();
        let Some(g) = state.groups.get(&self.group) else {
            return Ok(Vec::new());
        };
        let Some(m) = g.members.get(&self.id) else {
            return Ok(Vec::new());
        };
        let mut out: Vec<PartitionLag> = m
            .owned
            .keys()
            .map(|tp| {
                let log_end = state
                    .topics
                    .get(&tp.topic)
                    .and_then(|t| t.partitions.get(tp.partition as usize))
                    .map_or(0, |p| p.end());
                PartitionLag {
                    partition: tp.clone(),
                    log_end,
                    committed: g.committed.get(tp).copied().unwrap_or(0),
                }
            })
            .collect();
        out.sort_by(|a, b| a.partition.cmp(&b.partition));
        Ok(out)
    }

    async fn close(&self) -> Result<()> {
        if self.leave() {
            rebalance(self.broker.clone(), self.group.clone()).await;
        }
        Ok(())
    }
}

impl MemoryConsumer {
    fn set_paused(&self, partitions: &[TopicPartition], paused: bool) {
        let mut state = self.broker.inner.lock();
        let Some(m) = state
            .groups
            .get_mut(&self.group)
            .and_then(|g| g.members.get_mut(&self.id))
        else {
            return;
        };
        for tp in partitions {
            if let Some(o) = m.owned.get_mut(tp) {
                o.paused = paused;
            }
        }
    }
}
