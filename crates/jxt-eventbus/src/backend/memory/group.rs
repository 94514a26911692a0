//! Consumer groups of the in-memory broker: members, ownership and the
//! assignment they should converge to.
//!
//! Membership changes only in joins, leaves and rebalances (under the
//! broker's group lock). What a member does with its partitions — fetch,
//! pause, resume, store — takes only that member's own lock
//! ([`MemberShared`]) and the partition's.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{mpsc, Notify};

use super::log::TopicLog;
use crate::backend::{ConsumerEvent, TopicPartition};

/// Fetch state of one owned partition.
#[derive(Debug)]
pub(super) struct Owned {
    /// The partition's topic.
    pub(super) log: Arc<TopicLog>,
    /// Next offset to hand out.
    pub(super) position: i64,
    /// False while an `Assigned` or `Revoked` event is in flight, so no record
    /// is sent before its `Assigned` or after its `Revoked`.
    pub(super) fetchable: bool,
    /// Paused by the dispatcher.
    pub(super) paused: bool,
}

/// What a member's consumer and its fetch loop share with rebalances.
#[derive(Debug, Default)]
pub(super) struct MemberShared {
    owned: Mutex<HashMap<TopicPartition, Owned>>,
    /// Wakes the fetch loop: a record appended to an owned partition, a
    /// resume, an assignment.
    pub(super) wake: Arc<Notify>,
}

impl MemberShared {
    pub(super) fn lock(&self) -> MutexGuard<'_, HashMap<TopicPartition, Owned>> {
        self.owned.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Owned {
    /// Member `id` gives partition `partition` up: its fetcher is no
    /// longer woken by new records there.
    pub(super) fn stop_reading(&self, id: u64, partition: i32) {
        if let Some(p) = self.log.partitions.get(partition as usize) {
            p.lock().readers.retain(|(reader, _)| *reader != id);
        }
    }
}

#[derive(Debug)]
pub(super) struct Member {
    pub(super) topics: BTreeSet<Arc<str>>,
    pub(super) events: mpsc::Sender<ConsumerEvent>,
    pub(super) shared: Arc<MemberShared>,
}

#[derive(Debug, Default)]
pub(super) struct Group {
    pub(super) members: BTreeMap<u64, Member>,
}

impl Group {
    /// The owner of every partition the group should read: for each topic,
    /// its partitions dealt round-robin over the members subscribed to it, in
    /// member-id order. Adding a topic never moves another topic's partitions.
    pub(super) fn target(
        &self,
        partitions_of: impl Fn(&str) -> u32,
    ) -> HashMap<TopicPartition, u64> {
        let mut by_topic: BTreeMap<&Arc<str>, Vec<u64>> = BTreeMap::new();
        for (id, m) in &self.members {
            for t in &m.topics {
                by_topic.entry(t).or_default().push(*id);
            }
        }
        let mut target = HashMap::new();
        for (topic, members) in by_topic {
            for p in 0..partitions_of(topic) {
                let owner = members[p as usize % members.len()];
                target.insert(TopicPartition::new(topic.clone(), p as i32), owner);
            }
        }
        target
    }

    /// Every partition some member owns.
    pub(super) fn owned(&self) -> HashSet<TopicPartition> {
        self.members
            .values()
            .flat_map(|m| m.shared.lock().keys().cloned().collect::<Vec<_>>())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(topics: &[&str]) -> Member {
        let (tx, _rx) = mpsc::channel(1);
        Member {
            topics: topics.iter().map(|t| Arc::from(*t)).collect(),
            events: tx,
            shared: Arc::default(),
        }
    }

    #[test]
    fn adding_a_topic_keeps_other_topics_in_place() {
        let mut g = Group::default();
        g.members.insert(1, member(&["a"]));
        g.members.insert(2, member(&["a"]));
        let before = g.target(|_| 4);
        g.members.get_mut(&1).unwrap().topics.insert(Arc::from("b"));
        let after = g.target(|_| 4);
        for (tp, owner) in &before {
            assert_eq!(after[tp], *owner);
        }
        assert_eq!(after.len(), 8);
        assert!(after
            .iter()
            .filter(|(tp, _)| &*tp.topic == "b")
            .all(|(_, o)| *o == 1));
    }

    #[test]
    fn partitions_are_shared_between_members() {
        let mut g = Group::default();
        g.members.insert(7, member(&["a"]));
        g.members.insert(9, member(&["a"]));
        let t = g.target(|_| 4);
        assert_eq!(t.values().filter(|o| **o == 7).count(), 2);
        assert_eq!(t.values().filter(|o| **o == 9).count(), 2);
    }
}
