//! Per-key FIFO lanes ("aggregate processors"), as a plain data structure.
//!
//! A lane holds the queued records of one key. At most one batch per lane is
//! running at a time, so records of one key are handled one after another in
//! arrival order; different lanes run concurrently up to `max_concurrency`.
//! A lane exists while it has queued or running records: an empty lane owns
//! no task, channel or buffer, so it is freed as soon as it empties.

use std::collections::VecDeque;

use rustc_hash::FxHashMap as HashMap;
use smallvec::SmallVec;

/// Identifies a lane within one subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum LaneId {
    /// Hash of the record key (`key` ordering). Two keys whose hashes collide
    /// share a lane: that only serializes them, it never reorders.
    Key(u64),
    /// A partition (`partition` ordering, and keyless records in `key` mode).
    Partition(i32),
    /// One lane per record (`unordered`).
    Record(u64),
}

/// The records of one lane handed out to run. When keys interleave, nearly
/// every batch holds one record: that one is kept inline, not allocated.
pub(crate) type Batch<J> = SmallVec<[J; 1]>;

#[derive(Debug)]
struct Lane<J> {
    queue: VecDeque<J>,
    running: bool,
}

/// The lanes of one subscription.
#[derive(Debug)]
pub(crate) struct KeyedLanes<J> {
    lanes: HashMap<LaneId, Lane<J>>,
    /// Lanes with queued records and nothing running, in the order they
    /// became ready. May hold ids of lanes emptied by [`KeyedLanes::retain`];
    /// those are skipped.
    ready: VecDeque<LaneId>,
    running: usize,
    /// Records queued in lanes with nothing running: what
    /// [`KeyedLanes::next_batch`] could hand out now.
    ready_records: usize,
    max_concurrency: usize,
    max_batch: usize,
    /// Queues of freed lanes, kept for reuse: keys' lanes come and go with
    /// every batch, and a reused queue costs no allocation.
    spare: Vec<VecDeque<J>>,
}

/// Freed lane queues kept at most, and the largest capacity kept (so the
/// spares stay small whatever a burst left behind).
const SPARE_QUEUES: usize = 256;
const SPARE_CAPACITY: usize = 16;

impl<J> KeyedLanes<J> {
    pub(crate) fn new(max_concurrency: usize, max_batch: usize) -> Self {
        KeyedLanes {
            lanes: HashMap::default(),
            ready: VecDeque::new(),
            running: 0,
            ready_records: 0,
            max_concurrency: max_concurrency.max(1),
            max_batch: max_batch.max(1),
            spare: Vec::new(),
        }
    }

    /// Queues a record at the end of its lane.
    pub(crate) fn push(&mut self, id: LaneId, job: J) {
        let lane = self.lanes.entry(id).or_insert_with(|| Lane {
            queue: self.spare.pop().unwrap_or_default(),
            running: false,
        });
        lane.queue.push_back(job);
        if !lane.running {
            self.ready_records += 1;
            if lane.queue.len() == 1 {
                self.ready.push_back(id);
            }
        }
    }

    /// The next batch to run, if a concurrency slot is free: the oldest ready
    /// lane's queued records (up to the batch size), in order.
    pub(crate) fn next_batch(&mut self) -> Option<(LaneId, Batch<J>)> {
        self.next_batch_up_to(self.max_batch)
    }

    /// As [`KeyedLanes::next_batch`], with at most `limit` records (at least
    /// one).
    pub(crate) fn next_batch_up_to(&mut self, limit: usize) -> Option<(LaneId, Batch<J>)> {
        if self.running >= self.max_concurrency {
            return None;
        }
        while let Some(id) = self.ready.pop_front() {
            let Some(lane) = self.lanes.get_mut(&id) else {
                continue;
            };
            if lane.running || lane.queue.is_empty() {
                continue;
            }
            let n = lane.queue.len().min(self.max_batch).min(limit.max(1));
            self.ready_records -= lane.queue.len();
            let batch: Batch<J> = lane.queue.drain(..n).collect();
            lane.running = true;
            self.running += 1;
            return Some((id, batch));
        }
        None
    }

    /// Marks the running batch of a lane finished; the lane becomes ready
    /// again if more records queued meanwhile, else it is freed.
    pub(crate) fn finish(&mut self, id: LaneId) {
        let Some(lane) = self.lanes.get_mut(&id) else {
            return;
        };
        if !lane.running {
            return;
        }
        lane.running = false;
        self.running -= 1;
        if lane.queue.is_empty() {
            if let Some(lane) = self.lanes.remove(&id) {
                if self.spare.len() < SPARE_QUEUES && lane.queue.capacity() <= SPARE_CAPACITY {
                    self.spare.push(lane.queue);
                }
            }
        } else {
            self.ready_records += lane.queue.len();
            self.ready.push_back(id);
        }
    }

    /// Marks a lane running without handing out a batch, so its records wait
    /// until [`KeyedLanes::finish`]: a batch of the same key still runs
    /// elsewhere (an earlier subscription of the topic).
    pub(crate) fn block(&mut self, id: LaneId) {
        let lane = self.lanes.entry(id).or_insert_with(|| Lane {
            queue: self.spare.pop().unwrap_or_default(),
            running: false,
        });
        if !lane.running {
            self.ready_records -= lane.queue.len();
            lane.running = true;
            self.running += 1;
        }
    }

    /// Lanes with a batch running (or blocked).
    pub(crate) fn running_lanes(&self) -> impl Iterator<Item = LaneId> + '_ {
        self.lanes
            .iter()
            .filter(|(_, lane)| lane.running)
            .map(|(id, _)| *id)
    }

    /// Drops queued (not running) records for which `keep` is false; returns
    /// them. Used when partitions are revoked.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&J) -> bool) -> Vec<J> {
        let mut dropped = Vec::new();
        let ready_records = &mut self.ready_records;
        self.lanes.retain(|_, lane| {
            let mut kept = VecDeque::with_capacity(lane.queue.len());
            for job in lane.queue.drain(..) {
                if keep(&job) {
                    kept.push_back(job);
                } else {
                    if !lane.running {
                        *ready_records -= 1;
                    }
                    dropped.push(job);
                }
            }
            lane.queue = kept;
            lane.running || !lane.queue.is_empty()
        });
        dropped
    }

    /// Drops the queued (not running) records of one lane; returns them.
    pub(crate) fn clear(&mut self, id: LaneId) -> Vec<J> {
        let Some(lane) = self.lanes.get_mut(&id) else {
            return Vec::new();
        };
        let dropped: Vec<J> = lane.queue.drain(..).collect();
        if !lane.running {
            self.ready_records -= dropped.len();
            self.lanes.remove(&id);
        }
        dropped
    }

    /// Lanes alive (queued or running records).
    pub(crate) fn live(&self) -> usize {
        self.lanes.len()
    }

    /// Changes the concurrency limit (recovery mode may change it); running
    /// batches above a lowered limit finish normally.
    pub(crate) fn set_max_concurrency(&mut self, n: usize) {
        self.max_concurrency = n.max(1);
    }

    /// Lanes with a batch running.
    pub(crate) fn running(&self) -> usize {
        self.running
    }

    /// Records that could be handed out now (queued in lanes with nothing
    /// running), whatever the concurrency limit.
    pub(crate) fn ready_records(&self) -> usize {
        self.ready_records
    }

    /// [`KeyedLanes::ready_records`] counted the slow way, for tests.
    #[cfg(test)]
    fn ready_records_counted(&self) -> usize {
        self.lanes
            .values()
            .filter(|l| !l.running)
            .map(|l| l.queue.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn one_batch_per_lane_and_concurrency_cap() {
        let mut l = KeyedLanes::new(2, 10);
        l.push(LaneId::Key(1), 1);
        l.push(LaneId::Key(1), 2);
        l.push(LaneId::Key(2), 3);
        l.push(LaneId::Key(3), 4);
        assert_eq!(
            l.next_batch(),
            Some((LaneId::Key(1), Batch::from_slice(&[1, 2])))
        );
        l.push(LaneId::Key(1), 5);
        assert_eq!(
            l.next_batch(),
            Some((LaneId::Key(2), Batch::from_slice(&[3])))
        );
        assert_eq!(l.next_batch(), None, "concurrency 2 reached");
        l.finish(LaneId::Key(2));
        assert_eq!(
            l.next_batch(),
            Some((LaneId::Key(3), Batch::from_slice(&[4])))
        );
        assert_eq!(l.next_batch(), None, "key 1 still running");
        l.finish(LaneId::Key(1));
        assert_eq!(
            l.next_batch(),
            Some((LaneId::Key(1), Batch::from_slice(&[5])))
        );
        l.finish(LaneId::Key(1));
        l.finish(LaneId::Key(3));
        assert_eq!(l.live(), 0);
        assert_eq!(l.running(), 0);
    }

    #[test]
    fn retain_drops_only_queued() {
        let mut l = KeyedLanes::new(4, 1);
        l.push(LaneId::Key(1), 1);
        l.push(LaneId::Key(1), 2);
        l.push(LaneId::Key(2), 3);
        let _ = l.next_batch();
        let dropped = l.retain(|j| *j == 3);
        assert_eq!(dropped, vec![2]);
        assert_eq!(l.ready_records(), 1);
        assert_eq!(l.ready_records(), l.ready_records_counted());
        assert_eq!(l.live(), 2, "lane 1 still running");
        assert_eq!(
            l.next_batch(),
            Some((LaneId::Key(2), Batch::from_slice(&[3])))
        );
    }

    #[test]
    fn a_blocked_lane_waits_for_finish() {
        let mut l = KeyedLanes::new(4, 10);
        l.block(LaneId::Key(1));
        l.push(LaneId::Key(1), 1);
        l.push(LaneId::Key(2), 2);
        assert_eq!(l.ready_records(), 1, "key 1 is blocked");
        assert_eq!(
            l.next_batch(),
            Some((LaneId::Key(2), Batch::from_slice(&[2])))
        );
        assert_eq!(l.next_batch(), None, "key 1 blocked");
        assert_eq!(l.running_lanes().count(), 2);
        l.finish(LaneId::Key(1));
        assert_eq!(
            l.next_batch(),
            Some((LaneId::Key(1), Batch::from_slice(&[1])))
        );
    }

    proptest! {
        /// Under any interleaving of arrivals and completions, records of one
        /// key are started in arrival order and never two at once.
        #[test]
        fn per_key_order_under_random_completion(
            keys in proptest::collection::vec(0u64..8, 1..300),
            picks in proptest::collection::vec(any::<u16>(), 1..600),
            conc in 1usize..6,
            batch in 1usize..4,
        ) {
            let mut l = KeyedLanes::new(conc, batch);
            let mut arrivals = keys.iter().copied().enumerate();
            let mut running: Vec<(LaneId, Batch<(usize, u64)>)> = Vec::new();
            let mut started: HashMap<u64, Vec<usize>> = HashMap::default();
            let mut picks = picks.into_iter().cycle();
            let mut done = 0;
            while done < keys.len() {
                let p = picks.next().unwrap() as usize;
                let mut pushed = false;
                if !p.is_multiple_of(3) || running.is_empty() {
                    if let Some((seq, k)) = arrivals.next() {
                        l.push(LaneId::Key(k), (seq, k));
                        pushed = true;
                    }
                }
                prop_assert_eq!(l.ready_records(), l.ready_records_counted());
                while let Some((id, b)) = l.next_batch_up_to(batch + p % 2) {
                    prop_assert_eq!(l.ready_records(), l.ready_records_counted());
                    prop_assert!(b.len() <= batch, "batch over its limit");
                    prop_assert!(running.iter().all(|(r, _)| *r != id), "lane ran twice at once");
                    for &(seq, k) in &b { started.entry(k).or_default().push(seq); }
                    running.push((id, b));
                }
                prop_assert!(running.len() <= conc);
                // Every turn pushes or finishes something, so the loop ends.
                if !running.is_empty() && (p.is_multiple_of(2) || !pushed) {
                    let (id, b) = running.remove(p % running.len());
                    done += b.len();
                    l.finish(id);
                    prop_assert_eq!(l.ready_records(), l.ready_records_counted());
                }
            }
            for seqs in started.values() {
                prop_assert!(seqs.windows(2).all(|w| w[0] < w[1]), "out of order: {:?}", seqs);
            }
            prop_assert_eq!(l.live(), 0);
        }
    }
}
