//! A member of a memory consumer group: fetch loop and rebalancing.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot, Notify};

use super::group::{Member, MemberShared, Owned};
use super::MemoryBroker;
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
    /// Its partitions, shared with its fetch loop and the group's rebalances.
    shared: Arc<MemberShared>,
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
        let shared = Arc::new(MemberShared::default());
        broker
            .inner
            .groups()
            .entry(group.clone())
            .or_default()
            .members
            .insert(
                id,
                Member {
                    topics: BTreeSet::new(),
                    events: events.clone(),
                    shared: shared.clone(),
                },
            );
        let stop = Arc::new(Notify::new());
        tokio::spawn(fetch_loop(shared.clone(), events, stop.clone()));
        MemoryConsumer {
            broker,
            group,
            id,
            start_from,
            shared,
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
        let mut groups = self.broker.inner.groups();
        if let Some(g) = groups.get_mut(&self.group) {
            g.members.remove(&self.id);
        }
        for (tp, o) in self.shared.lock().drain() {
            o.stop_reading(self.id, tp.partition);
        }
        true
    }

    fn set_paused(&self, partitions: &[TopicPartition], paused: bool) {
        let mut owned = self.shared.lock();
        for tp in partitions {
            if let Some(o) = owned.get_mut(tp) {
                o.paused = paused;
            }
        }
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
    shared: Arc<MemberShared>,
    events: mpsc::Sender<ConsumerEvent>,
    stop: Arc<Notify>,
) {
    loop {
        // A wake-up that arrives while fetching is kept as a permit, so the
        // wait below returns at once and nothing is missed.
        let batch = fetch(&shared);
        if batch.is_empty() {
            tokio::select! {
                _ = shared.wake.notified() => {}
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

/// Takes the next records of every fetchable partition of a member.
fn fetch(shared: &MemberShared) -> Vec<Record> {
    let mut owned = shared.lock();
    let mut out = Vec::new();
    for (tp, o) in owned.iter_mut() {
        if !o.fetchable || o.paused {
            continue;
        }
        let Some(partition) = o.log.partitions.get(tp.partition as usize) else {
            continue;
        };
        let st = partition.lock();
        let until = st.log.end().min(o.position + FETCH_PER_PARTITION as i64);
        while o.position < until && out.len() < FETCH_MAX {
            if let Some(m) = st.log.get(o.position) {
                out.push(Record {
                    partition: tp.clone(),
                    offset: o.position,
                    message: m.clone(),
                    ack: None,
                });
            }
            o.position += 1;
        }
        if out.len() >= FETCH_MAX {
            break;
        }
    }
    out
}

/// Moves the group toward its target assignment: revoke first (and wait for
/// the owners to finish and commit), then assign at the committed position.
async fn rebalance(broker: MemoryBroker, group: String) {
    let lock = {
        let mut locks = super::lock(&broker.inner.rebalancing);
        locks.entry(group.clone()).or_default().clone()
    };
    let _serial = lock.lock().await;
    let inner = &broker.inner;

    // Phase 1: revoke what moves or is no longer subscribed.
    let mut revokes = Vec::new();
    {
        let groups = inner.groups();
        let Some(g) = groups.get(&group) else {
            return;
        };
        let target = g.target(|t| inner.partitions_of(t));
        for (id, m) in &g.members {
            let mut owned = m.shared.lock();
            let gone: Vec<TopicPartition> = owned
                .keys()
                .filter(|tp| target.get(*tp) != Some(id))
                .cloned()
                .collect();
            if gone.is_empty() {
                continue;
            }
            for tp in &gone {
                if let Some(o) = owned.get_mut(tp) {
                    o.fetchable = false;
                }
            }
            revokes.push((m.events.clone(), gone));
        }
    }
    // The owners keep the partitions (so their final `store` counts) until
    // they answer; only then are the partitions released.
    let mut waits = Vec::new();
    for (events, partitions) in revokes {
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
        let groups = inner.groups();
        if let Some(g) = groups.get(&group) {
            for (id, m) in &g.members {
                m.shared.lock().retain(|tp, o| {
                    if !o.fetchable {
                        o.stop_reading(*id, tp.partition);
                    }
                    o.fetchable
                });
            }
        }
    }

    // Phase 2: assign unowned partitions to their target owner, from the
    // committed position.
    let mut assigns = Vec::new();
    {
        let groups = inner.groups();
        let Some(g) = groups.get(&group) else {
            return;
        };
        let target = g.target(|t| inner.partitions_of(t));
        let owned_now = g.owned();
        let mut per_member: HashMap<u64, Vec<TopicPartition>> = HashMap::new();
        for (tp, owner) in target {
            if !owned_now.contains(&tp) {
                per_member.entry(owner).or_default().push(tp);
            }
        }
        for (id, mut tps) in per_member {
            let Some(m) = g.members.get(&id) else {
                continue;
            };
            tps.sort();
            let mut owned = m.shared.lock();
            tps.retain(|tp| {
                let Some(log) = inner.existing_topic(&tp.topic) else {
                    return false;
                };
                let Some(partition) = log.partitions.get(tp.partition as usize) else {
                    return false;
                };
                let position = {
                    let mut st = partition.lock();
                    st.readers.push((id, m.shared.wake.clone()));
                    st.committed.get(&group).copied().unwrap_or(0)
                };
                owned.insert(
                    tp.clone(),
                    Owned {
                        log: log.clone(),
                        position,
                        fetchable: false,
                        paused: false,
                    },
                );
                true
            });
            assigns.push((id, m.events.clone(), m.shared.clone(), tps));
        }
    }
    for (id, events, shared, tps) in assigns {
        let delivered = events
            .send(ConsumerEvent::Assigned(tps.clone()))
            .await
            .is_ok();
        let mut owned = shared.lock();
        for tp in &tps {
            if delivered {
                if let Some(o) = owned.get_mut(tp) {
                    o.fetchable = true;
                }
            } else if let Some(o) = owned.remove(tp) {
                o.stop_reading(id, tp.partition);
            }
        }
        drop(owned);
        shared.wake.notify_one();
    }
}

#[async_trait]
impl Consumer for MemoryConsumer {
    async fn subscribe(&self, topics: &[String]) -> Result<()> {
        for t in topics {
            let log = self.broker.inner.topic(t);
            for partition in log.partitions.iter() {
                let mut st = partition.lock();
                let start = match self.start_from {
                    StartFrom::Earliest => st.log.start(),
                    StartFrom::Latest => st.log.end(),
                };
                st.committed.entry(self.group.clone()).or_insert(start);
            }
        }
        {
            let mut groups = self.broker.inner.groups();
            let g = groups.entry(self.group.clone()).or_default();
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
        self.shared.wake.notify_one();
    }

    fn store(&self, partition: &TopicPartition, next_offset: i64) {
        // Held while committing: a rebalance cannot take the partition away
        // in between, so positions of partitions not owned are ignored.
        let owned = self.shared.lock();
        let Some(p) = owned
            .get(partition)
            .and_then(|o| o.log.partitions.get(partition.partition as usize))
        else {
            return;
        };
        if p.lock().commit(&self.group, next_offset) {
            p.space.notify_waiters();
        }
        drop(owned);
        self.broker.inner.settle.moved();
    }

    async fn commit(&self) -> Result<()> {
        // `store` commits immediately on this backend.
        Ok(())
    }

    async fn lag(&self) -> Result<Vec<PartitionLag>> {
        let owned = self.shared.lock();
        let mut out: Vec<PartitionLag> = owned
            .iter()
            .map(|(tp, o)| {
                let (log_end, committed) =
                    o.log
                        .partitions
                        .get(tp.partition as usize)
                        .map_or((0, 0), |p| {
                            let st = p.lock();
                            (
                                st.log.end(),
                                st.committed.get(&self.group).copied().unwrap_or(0),
                            )
                        });
                PartitionLag {
                    partition: tp.clone(),
                    log_end,
                    committed,
                }
            })
            .collect();
        drop(owned);
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
