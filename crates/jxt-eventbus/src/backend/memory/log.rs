//! Topic storage of the in-memory broker: partitions of retained records,
//! each behind its own lock.
//!
//! A partition's lock covers its records, the committed position of every
//! group in it (retention depends on them) and the fetchers to wake when it
//! grows — everything a publish, a fetch or an offset store of that
//! partition touches, and nothing of any other partition. Publishers to
//! different partitions, and consumers of different partitions, never wait
//! for each other.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::message::Message;

/// The retained records of one partition. Offsets start at 0 and never
/// repeat. Records below `start` were released once every group passed
/// them: no fetch, listing or new group sees them again. They are dropped
/// from memory later, by the next publish to the partition
/// ([`PartitionLog::compact`]), not by the commit that released them: the
/// commit comes from the dispatcher, the one task every record of a bus
/// passes through, and freeing the records there cost it a quarter of its
/// time; the publisher that allocated them frees them more cheaply.
#[derive(Debug, Default)]
pub(super) struct PartitionLog {
    /// Offset of `records[0]`.
    base: i64,
    /// Lowest offset still retained (`base <= start <= end`).
    start: i64,
    records: VecDeque<Arc<Message>>,
}

impl PartitionLog {
    /// Offset the next record will get.
    pub(super) fn end(&self) -> i64 {
        self.base + self.records.len() as i64
    }

    /// Lowest offset still retained: where a group reading from the
    /// earliest record starts.
    pub(super) fn start(&self) -> i64 {
        self.start
    }

    /// Records retained (not yet released).
    pub(super) fn len(&self) -> usize {
        (self.end() - self.start) as usize
    }

    pub(super) fn append(&mut self, message: Message) -> i64 {
        self.records.push_back(Arc::new(message));
        self.end() - 1
    }

    pub(super) fn get(&self, offset: i64) -> Option<&Arc<Message>> {
        if offset < self.start {
            return None;
        }
        let idx = usize::try_from(offset - self.base).ok()?;
        self.records.get(idx)
    }

    /// The retained records with their offsets.
    pub(super) fn iter(&self) -> impl Iterator<Item = (i64, &Arc<Message>)> {
        let skip = (self.start - self.base) as usize;
        (self.start..).zip(self.records.iter().skip(skip))
    }

    /// Releases records below `position`; true when any was released.
    pub(super) fn release_below(&mut self, position: i64) -> bool {
        let start = position.clamp(self.start, self.end());
        let released = start != self.start;
        self.start = start;
        released
    }

    /// Drops the released records from memory.
    pub(super) fn compact(&mut self) {
        while self.base < self.start && self.records.pop_front().is_some() {
            self.base += 1;
        }
    }
}

/// What a partition's lock guards.
#[derive(Debug, Default)]
pub(super) struct PartitionState {
    pub(super) log: PartitionLog,
    /// Committed position (next offset to read) per group. Kept when
    /// members leave, like a broker keeps a group's offsets.
    pub(super) committed: HashMap<String, i64>,
    /// The fetchers of the members owning this partition, by member id:
    /// woken when a record is appended.
    pub(super) readers: Vec<(u64, Arc<Notify>)>,
}

impl PartitionState {
    /// Releases the records every group holding a position passed; true
    /// when any was released.
    pub(super) fn release(&mut self) -> bool {
        match self.committed.values().min() {
            Some(&min) => self.log.release_below(min),
            None => false,
        }
    }

    /// Moves `group`'s committed position forward to `next_offset` (never
    /// back) and releases what no group needs any more; true when records
    /// were released.
    pub(super) fn commit(&mut self, group: &str, next_offset: i64) -> bool {
        match self.committed.get_mut(group) {
            Some(c) => *c = (*c).max(next_offset),
            None => {
                self.committed.insert(group.to_string(), next_offset);
            }
        }
        self.release()
    }
}

/// One partition: its state and the publishers waiting for room in it.
#[derive(Debug, Default)]
pub(super) struct Partition {
    state: Mutex<PartitionState>,
    /// Woken when records are released.
    pub(super) space: Notify,
}

impl Partition {
    pub(super) fn lock(&self) -> MutexGuard<'_, PartitionState> {
        // Every mutation is a single step: a panic elsewhere while holding
        // the lock leaves consistent state, so keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A topic: fixed partitions, keyed records always land in the same one.
#[derive(Debug)]
pub(super) struct TopicLog {
    pub(super) partitions: Box<[Partition]>,
    next_keyless: AtomicUsize,
}

impl TopicLog {
    pub(super) fn new(partitions: u32) -> Self {
        TopicLog {
            partitions: (0..partitions.max(1))
                .map(|_| Partition::default())
                .collect(),
            next_keyless: AtomicUsize::new(0),
        }
    }

    /// Partition for a record: a stable hash of the key, round-robin without.
    pub(super) fn partition_for(&self, key: Option<&[u8]>) -> usize {
        let n = self.partitions.len();
        match key {
            Some(k) => {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                k.hash(&mut h);
                (h.finish() % n as u64) as usize
            }
            None => (self.next_keyless.fetch_add(1, Ordering::Relaxed) + 1) % n,
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
        assert!(p.release_below(3));
        assert!(!p.release_below(3));
        assert_eq!(p.start(), 3);
        assert_eq!(p.len(), 2);
        assert!(p.get(2).is_none(), "released, though still in memory");
        assert_eq!(p.records.len(), 5);
        p.compact();
        assert_eq!((p.base, p.records.len()), (3, 2), "dropped from memory");
        assert!(p.get(2).is_none());
        assert_eq!(p.get(3).unwrap().payload()[0], 3);
        let offsets: Vec<i64> = p.iter().map(|(o, _)| o).collect();
        assert_eq!(offsets, [3, 4]);
        assert_eq!(p.append(Message::new(vec![9])), 5);
        assert_eq!(p.end(), 6);
        assert!(p.release_below(99));
        assert_eq!(p.start(), 6, "never past the end");
    }

    #[test]
    fn records_are_kept_for_the_slowest_group() {
        let mut s = PartitionState::default();
        for i in 0..4 {
            s.log.append(Message::new(vec![i]));
        }
        s.committed.insert("slow".into(), 0);
        assert!(!s.commit("fast", 4), "the slow group still needs them");
        assert_eq!(s.committed["fast"], 4);
        assert!(!s.commit("fast", 2), "positions never move back");
        assert_eq!(s.committed["fast"], 4);
        assert!(s.commit("slow", 3));
        assert_eq!(s.log.start(), 3);
    }

    #[test]
    fn keys_stick_to_partitions() {
        let t = TopicLog::new(8);
        let a = t.partition_for(Some(b"order-1"));
        for _ in 0..10 {
            assert_eq!(t.partition_for(Some(b"order-1")), a);
        }
        let spread: std::collections::HashSet<_> = (0..100)
            .map(|i| t.partition_for(Some(format!("k{i}").as_bytes())))
            .collect();
        assert!(spread.len() > 4);
        let keyless: std::collections::HashSet<_> = (0..8).map(|_| t.partition_for(None)).collect();
        assert_eq!(keyless.len(), 8, "round-robin without a key");
    }
}
