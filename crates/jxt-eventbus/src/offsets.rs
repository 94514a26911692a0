//! Commit positions that never pass an unfinished record.
//!
//! For each partition the tracker keeps the delivered-but-unfinished offsets
//! in delivery order. The commit position is the lowest unfinished offset, or
//! the highest delivered offset + 1 when nothing is outstanding. Gaps in the
//! offsets (compaction, transaction markers, stream sequences of other
//! subjects) are fine: only delivered offsets are tracked.
//!
//! Records finished above the commit position are reported too
//! ([`PartitionOffsets::finished_above`]): a backend that can keep them with
//! the commit (Kafka's commit metadata) spares the next owner handling them
//! again. Only delivered offsets whose handling finished are ever listed.

use std::collections::VecDeque;
use std::ops::Range;
use std::time::SystemTime;

/// Delivered and finished offsets of one partition.
#[derive(Debug, Default)]
pub struct PartitionOffsets {
    /// Delivered offsets in ascending order with their finished flag. The front
    /// is always unfinished (finished entries are popped from the front).
    window: VecDeque<(i64, bool)>,
    /// Publish time of each window entry, same order (kept apart so the
    /// offset search stays on a compact array).
    times: VecDeque<SystemTime>,
    /// Highest delivered offset + 1.
    next: Option<i64>,
    /// Last position returned by [`PartitionOffsets::complete`].
    reported: Option<i64>,
    /// Finished entries in `window` (all above the position).
    finished: usize,
}

impl PartitionOffsets {
    /// Notes that `offset` was handed out. Offsets must arrive in ascending
    /// order; a lower or repeated offset (a redelivery after a rewind) is
    /// ignored for position purposes and reported as `false`.
    pub fn deliver(&mut self, offset: i64) -> bool {
        self.deliver_at(offset, SystemTime::now())
    }

    /// As [`PartitionOffsets::deliver`], noting when the record was published
    /// (for the age of the oldest unfinished record).
    pub fn deliver_at(&mut self, offset: i64, published: SystemTime) -> bool {
        if self.next.is_some_and(|n| offset < n) {
            return false;
        }
        self.window.push_back((offset, false));
        self.times.push_back(published);
        self.next = Some(offset + 1);
        true
    }

    /// Notes that `offset` finished. Returns the new commit position when it
    /// advanced.
    pub fn complete(&mut self, offset: i64) -> Option<i64> {
        let idx = self
            .window
            .binary_search_by_key(&offset, |(o, _)| *o)
            .ok()?;
        if !self.window[idx].1 {
            self.window[idx].1 = true;
            self.finished += 1;
        }
        if idx != 0 {
            return None;
        }
        while self.window.front().is_some_and(|(_, done)| *done) {
            self.window.pop_front();
            self.times.pop_front();
            self.finished -= 1;
        }
        let position = self.position()?;
        if self.reported.is_some_and(|r| r >= position) {
            return None;
        }
        self.reported = Some(position);
        Some(position)
    }

    /// Current commit position: lowest unfinished offset, else highest
    /// delivered + 1; `None` before anything was delivered.
    pub fn position(&self) -> Option<i64> {
        match self.window.front() {
            Some((o, _)) => Some(*o),
            None => self.next,
        }
    }

    /// Finished offsets above the commit position, as ascending runs of
    /// consecutive offsets, at most `max_runs` of them (the lowest). Empty
    /// when nothing above the position finished (checked in O(1)).
    pub fn finished_above(&self, max_runs: usize) -> Vec<Range<i64>> {
        let mut runs: Vec<Range<i64>> = Vec::new();
        if self.finished == 0 || max_runs == 0 {
            return runs;
        }
        let mut left = self.finished;
        for &(o, done) in &self.window {
            if !done {
                continue;
            }
            let full = runs.len() == max_runs;
            match runs.last_mut() {
                Some(r) if r.end == o => r.end = o + 1,
                _ if full => break,
                _ => runs.push(o..o + 1),
            }
            left -= 1;
            if left == 0 {
                break;
            }
        }
        runs
    }

    /// Publish time of the oldest unfinished record.
    pub fn oldest_unfinished(&self) -> Option<SystemTime> {
        self.times.front().copied()
    }

    /// Delivered records not yet finished.
    pub fn outstanding(&self) -> usize {
        self.window.iter().filter(|(_, done)| !done).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn waits_for_the_lowest_unfinished() {
        let mut p = PartitionOffsets::default();
        assert_eq!(p.position(), None);
        for o in 10..15 {
            assert!(p.deliver(o));
        }
        assert_eq!(p.complete(12), None);
        assert_eq!(p.complete(11), None);
        assert_eq!(p.position(), Some(10));
        assert_eq!(p.complete(10), Some(13));
        assert_eq!(p.complete(14), None);
        assert_eq!(p.complete(13), Some(15));
        assert_eq!(p.outstanding(), 0);
    }

    #[test]
    fn lists_what_finished_above_the_position() {
        let mut p = PartitionOffsets::default();
        for o in [10, 11, 12, 14, 15, 20] {
            p.deliver(o);
        }
        assert!(p.finished_above(8).is_empty());
        for o in [11, 12, 15, 14, 20] {
            assert_eq!(p.complete(o), None);
        }
        assert_eq!(p.complete(12), None, "a second completion changes nothing");
        // 12 and 14 are not consecutive offsets: 13 was never delivered.
        assert_eq!(p.finished_above(8), vec![11..13, 14..16, 20..21]);
        assert_eq!(p.finished_above(2), vec![11..13, 14..16]);
        assert_eq!(p.complete(10), Some(21));
        assert!(p.finished_above(8).is_empty());
    }

    #[test]
    fn handles_gaps_and_unknown_offsets() {
        let mut p = PartitionOffsets::default();
        p.deliver(3);
        p.deliver(7);
        assert_eq!(p.complete(5), None, "never delivered");
        assert_eq!(p.complete(7), None);
        assert_eq!(p.complete(3), Some(8));
        assert!(!p.deliver(4), "rewind is not tracked");
    }

    proptest! {
        /// Whatever the completion order, the reported position never passes an
        /// unfinished record, only grows, and reaches the end once all finish.
        #[test]
        fn never_passes_an_unfinished_record(
            gaps in proptest::collection::vec(1i64..4, 1..200),
            seed in any::<u64>(),
        ) {
            let mut offsets = Vec::new();
            let mut o = 0;
            for g in gaps { o += g; offsets.push(o); }
            let mut p = PartitionOffsets::default();
            for &o in &offsets { p.deliver(o); }
            let mut order = offsets.clone();
            // Deterministic shuffle from the seed.
            let mut s = seed | 1;
            for i in (1..order.len()).rev() {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                order.swap(i, (s % (i as u64 + 1)) as usize);
            }
            let mut finished = std::collections::BTreeSet::new();
            let mut last = i64::MIN;
            for o in order {
                finished.insert(o);
                let advanced = p.complete(o);
                // What is listed above the position finished, and nothing
                // finished above it is left out.
                let pos = p.position().unwrap();
                let listed: Vec<i64> = p.finished_above(usize::MAX).into_iter().flatten().collect();
                let expected: Vec<i64> = finished.iter().copied().filter(|&f| f > pos).collect();
                prop_assert_eq!(&listed, &expected);
                if let Some(pos) = advanced {
                    prop_assert!(pos > last);
                    last = pos;
                    for &d in offsets.iter().filter(|&&d| d < pos) {
                        prop_assert!(finished.contains(&d), "position {} passes unfinished {}", pos, d);
                    }
                }
            }
            prop_assert_eq!(p.position(), Some(offsets.last().unwrap() + 1));
            prop_assert_eq!(last, offsets.last().unwrap() + 1);
        }
    }
}
