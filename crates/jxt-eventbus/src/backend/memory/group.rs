//! Consumer groups of the in-memory broker: members, ownership and the
//! assignment they should converge to.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::backend::{ConsumerEvent, TopicPartition};

/// Fetch state of one owned partition.
#[derive(Debug)]
pub(super) struct Owned {
    /// Next offset to hand out.
    pub(super) position: i64,
    /// False while an `Assigned` or `Revoked` event is in flight, so no record
    /// is sent before its `Assigned` or after its `Revoked`.
    pub(super) fetchable: bool,
    /// Paused by the dispatcher.
    pub(super) paused: bool,
}

#[derive(Debug)]
pub(super) struct Member {
    pub(super) topics: BTreeSet<Arc<str>>,
    pub(super) events: mpsc::Sender<ConsumerEvent>,
    pub(super) owned: HashMap<TopicPartition, Owned>,
}

#[derive(Debug, Default)]
pub(super) struct Group {
    pub(super) members: BTreeMap<u64, Member>,
    /// Committed position (next offset to read) per partition. Kept when
    /// members leave, like a broker keeps a group's offsets.
    pub(super) committed: HashMap<TopicPartition, i64>,
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

    /// Current owner of a partition.
    pub(super) fn owner(&self, tp: &TopicPartition) -> Option<u64> {
        self.members
            .iter()
            .find(|(_, m)| m.owned.contains_key(tp))
            .map(|(id, _)| *id)
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
            owned: HashMap::new(),
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
