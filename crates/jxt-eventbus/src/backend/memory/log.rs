//! Topic storage of the in-memory broker: partitions of retained records.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::message::Message;

/// The retained records of one partition. Offsets start at 0 and never
/// repeat; records below `base` were released once every group passed them.
#[derive(Debug, Default)]
pub(super) struct PartitionLog {
    pub(super) base: i64,
    pub(super) records: VecDeque<Arc<Message>>,
}

impl PartitionLog {
    /// Offset the next record will get.
    pub(super) fn end(&self) -> i64 {
        self.base + self.records.len() as i64
    }

    pub(super) fn append(&mut self, message: Message) -> i64 {
        self.records.push_back(Arc::new(message));
        self.end() - 1
    }

    pub(super) fn get(&self, offset: i64) -> Option<&Arc<Message>> {
        let idx = usize::try_from(offset - self.base).ok()?;
        self.records.get(idx)
    }

    /// Releases records below `position`.
    pub(super) fn release_below(&mut self, position: i64) {
        while self.base < position && self.records.pop_front().is_some() {
            self.base += 1;
        }
    }
}

/// A topic: fixed partitions, keyed records always land in the same one.
#[derive(Debug)]
pub(super) struct TopicLog {
    pub(super) partitions: Vec<PartitionLog>,
    next_keyless: usize,
}

impl TopicLog {
    pub(super) fn new(partitions: u32) -> Self {
        TopicLog {
            partitions: (0..partitions.max(1))
                .map(|_| PartitionLog::default())
                .collect(),
            next_keyless: 0,
        }
    }

    /// Partition for a record: a stable hash of the key, round-robin without.
    pub(super) fn partition_for(&mut self, key: Option<&str>) -> usize {
        let n = self.partitions.len();
        match key {
            Some(k) => {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                k.hash(&mut h);
                (h.finish() % n as u64) as usize
            }
            None => {
                self.next_keyless = (self.next_keyless + 1) % n;
                self.next_keyless
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_survive_release() {
        let mut p = PartitionLog::default();
        for i in 0..5 {
            assert_eq!(p.append(Message::new(vec![i])), i64::from(i));
        }
        p.release_below(3);
        assert_eq!(p.base, 3);
        assert!(p.get(2).is_none());
        assert_eq!(p.get(3).unwrap().payload[0], 3);
        assert_eq!(p.append(Message::new(vec![9])), 5);
        assert_eq!(p.end(), 6);
    }

    #[test]
    fn keys_stick_to_partitions() {
        let mut t = TopicLog::new(8);
        let a = t.partition_for(Some("order-1"));
        for _ in 0..10 {
            assert_eq!(t.partition_for(Some("order-1")), a);
        }
        let spread: std::collections::HashSet<_> = (0..100)
            .map(|i| t.partition_for(Some(&format!("k{i}"))))
            .collect();
        assert!(spread.len() > 4);
    }
}
