//! Commits as positions advance: one commit request in flight at a time,
//! later advances merged into the next, finished offsets above each
//! position in its commit metadata ([`super::commit_metadata`]).
//!
//! Contract:
//! - Only a position the dispatcher reported (every record below it
//!   finished), or one a previous owner's metadata proves finished, is
//!   committed; a partition's committed position only grows within one
//!   assignment.
//! - Only partitions in the ledger are committed, and a partition leaves it
//!   at its revoke under the commit gate: after a revoke returns, no commit
//!   of that partition is sent. A lost assignment leaves without a commit.
//! - The committer thread waits for each commit's answer before it sends the
//!   next, at least `commit_interval` after the previous one started (the
//!   linger that merges advances); advances noted meanwhile go into the
//!   next request.
//!
//! Records a previous owner finished above its committed position (read at
//! assignment) are not handed to the dispatcher ([`CommitLedger::skip`]):
//! they are gaps to its offset tracker, and they stay in this owner's
//! metadata until its position passes them.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::{Offset, TopicPartitionList};

use super::commit_metadata::{FinishedAbove, METADATA_MAX};
use super::rebalance::RebalanceContext;
use crate::backend::TopicPartition;

/// Wait before a failed commit is tried again.
const RETRY_AFTER: Duration = Duration::from_millis(200);

/// Runs of finished offsets the dispatcher is asked for: each costs at
/// least two bytes of metadata, so more never fit.
pub(super) const FINISHED_RUNS: usize = METADATA_MAX / 2;

/// One assigned partition's commit state.
#[derive(Debug, Default)]
struct PartitionCommit {
    /// Last position reported by the dispatcher, with the finished runs
    /// above it.
    reported: Option<(i64, Vec<Range<i64>>)>,
    /// Highest position known finished in this assignment (committed at
    /// assignment, or computed for a commit).
    floor: Option<i64>,
    /// Offsets the previous owner finished above its committed position.
    inherited: Vec<Range<i64>>,
    /// Last committed (position, metadata), to leave out repeats.
    committed: Option<(i64, String)>,
    /// Changed since the last commit.
    dirty: bool,
}

impl PartitionCommit {
    /// The position and metadata to commit now, if they differ from the last
    /// commit. Advances the floor and prunes inherited offsets below it.
    fn next_commit(&mut self, with_metadata: bool) -> Option<(i64, String)> {
        self.dirty = false;
        let (reported, finished) = match &self.reported {
            Some((p, f)) => (Some(*p), f.as_slice()),
            None => (None, &[][..]),
        };
        let mut position = match (reported, self.floor) {
            (Some(r), Some(f)) => r.max(f),
            (r, f) => r.or(f)?,
        };
        let runs = merge(finished, &self.inherited);
        // Records finished by the previous owner right at the position: the
        // position passes them.
        for r in &runs {
            if r.start <= position && r.end > position {
                position = r.end;
            }
        }
        self.floor = Some(position);
        self.inherited.retain(|r| r.end > position);
        let metadata = if with_metadata {
            let (text, complete) = FinishedAbove::encode(position, &runs, METADATA_MAX);
            if !complete {
                tracing::debug!(
                    position,
                    "finished offsets above the position exceed the commit metadata; the lowest are kept"
                );
            }
            text
        } else {
            String::new()
        };
        let next = (position, metadata);
        if self.committed.as_ref() == Some(&next) {
            return None;
        }
        Some(next)
    }
}

/// Union of two ascending lists of ranges, as ascending disjoint ranges
/// (adjacent ones joined).
fn merge(a: &[Range<i64>], b: &[Range<i64>]) -> Vec<Range<i64>> {
    let mut all: Vec<Range<i64>> = a.iter().chain(b).cloned().collect();
    all.sort_by_key(|r| r.start);
    let mut out: Vec<Range<i64>> = Vec::with_capacity(all.len());
    for r in all {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

#[derive(Debug, Default)]
struct Ledger {
    partitions: HashMap<TopicPartition, PartitionCommit>,
    dirty: bool,
    stopping: bool,
}

/// The consumer's commit state and its committer thread's signals.
#[derive(Debug)]
pub(super) struct CommitLedger {
    ledger: Mutex<Ledger>,
    wake: Condvar,
    /// Held while a commit is built and sent: a revoke takes it before it
    /// removes its partitions, so no commit of them follows the revoke.
    gate: Mutex<()>,
    /// Least time between the starts of two commits.
    linger: Duration,
    /// Some partition has inherited finished offsets (the poll thread looks
    /// records up only then).
    any_inherited: AtomicBool,
    /// Cleared when the broker refused metadata this long.
    metadata: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl CommitLedger {
    pub(super) fn new(linger: Duration) -> Self {
        CommitLedger {
            ledger: Mutex::default(),
            wake: Condvar::new(),
            gate: Mutex::new(()),
            linger,
            any_inherited: AtomicBool::new(false),
            metadata: AtomicBool::new(true),
        }
    }

    /// Notes newly assigned partitions, with the group's committed positions
    /// and metadata as read at assignment (`None` when they could not be
    /// read: nothing is skipped then).
    pub(super) fn assign(&self, tpl: &TopicPartitionList, committed: Option<&TopicPartitionList>) {
        let mut l = lock(&self.ledger);
        let mut any = false;
        for e in tpl.elements() {
            let tp = TopicPartition::new(e.topic(), e.partition());
            let mut pc = PartitionCommit::default();
            let found = committed.and_then(|c| c.find_partition(e.topic(), e.partition()));
            if let Some(c) = found {
                if let Offset::Offset(position) = c.offset() {
                    pc.floor = Some(position);
                    // Metadata that is not UTF-8 (another writer's) makes
                    // rdkafka panic: it is ignored like any foreign text.
                    let text =
                        std::panic::catch_unwind(|| c.metadata().to_owned()).unwrap_or_default();
                    if let Some(f) = FinishedAbove::decode(&text, position) {
                        tracing::debug!(partition = %tp, position, runs = f.runs.len(),
                            "records finished by the previous owner are skipped");
                        pc.inherited = f.runs;
                        any = true;
                    }
                    pc.committed = Some((position, text));
                }
            }
            l.partitions.insert(tp, pc);
        }
        if any {
            self.any_inherited.store(true, Ordering::Release);
        }
    }

    /// Whether the record at `offset` of `tp` was finished by the previous
    /// owner (and so is not handed out). Cheap while nothing was inherited.
    pub(super) fn skip(&self, tp: &TopicPartition, offset: i64) -> bool {
        if !self.any_inherited.load(Ordering::Acquire) {
            return false;
        }
        let mut l = lock(&self.ledger);
        let Some(pc) = l.partitions.get_mut(tp) else {
            return false;
        };
        if pc.floor.is_some_and(|f| offset < f) {
            // Below the committed position: the partition was reset
            // (offset out of range, or sought); what was inherited is
            // about other records now.
            pc.inherited.clear();
            return false;
        }
        let i = pc.inherited.partition_point(|r| r.end <= offset);
        pc.inherited.get(i).is_some_and(|r| r.contains(&offset))
    }

    /// Notes a position (and the finished runs above it) from the
    /// dispatcher; ignored for partitions not assigned.
    pub(super) fn store(&self, tp: &TopicPartition, position: i64, finished: Vec<Range<i64>>) {
        let mut l = lock(&self.ledger);
        let Some(pc) = l.partitions.get_mut(tp) else {
            return;
        };
        if pc
            .reported
            .as_ref()
            .is_some_and(|(p, f)| *p == position && *f == finished)
        {
            return;
        }
        pc.reported = Some((position, finished));
        pc.dirty = true;
        l.dirty = true;
        drop(l);
        self.wake.notify_one();
    }

    /// Removes `partitions` from the ledger; unless `lost`, first commits
    /// their last positions synchronously. Waits for a commit in flight.
    pub(super) fn release(
        &self,
        consumer: &BaseConsumer<RebalanceContext>,
        partitions: &[TopicPartition],
        lost: bool,
    ) -> KafkaResult<()> {
        let _gate = lock(&self.gate);
        let with_metadata = self.metadata.load(Ordering::Acquire);
        let mut commits = Vec::new();
        {
            let mut l = lock(&self.ledger);
            for tp in partitions {
                if let Some(mut pc) = l.partitions.remove(tp) {
                    if !lost {
                        if let Some(c) = pc.next_commit(with_metadata) {
                            commits.push((tp.clone(), c));
                        }
                    }
                }
            }
            self.note_inherited(&l);
        }
        self.send(consumer, &commits, "revoke").map(|_| ())
    }

    /// Commits every changed position now (an explicit commit).
    pub(super) fn commit_now(&self, consumer: &BaseConsumer<RebalanceContext>) -> KafkaResult<()> {
        let _gate = lock(&self.gate);
        self.commit_dirty(consumer, "commit")
    }

    /// Clears the poll thread's fast-path flag once no partition has
    /// inherited offsets left.
    fn note_inherited(&self, l: &Ledger) {
        if self.any_inherited.load(Ordering::Acquire)
            && l.partitions.values().all(|pc| pc.inherited.is_empty())
        {
            self.any_inherited.store(false, Ordering::Release);
        }
    }

    /// Ends the committer thread.
    pub(super) fn stop(&self) {
        lock(&self.ledger).stopping = true;
        self.wake.notify_all();
    }

    /// The committer thread: commits changed positions as they come, one
    /// request at a time, until [`CommitLedger::stop`].
    pub(super) fn run(self: Arc<Self>, consumer: Weak<BaseConsumer<RebalanceContext>>) {
        let mut last_start: Option<Instant> = None;
        loop {
            {
                let mut l = lock(&self.ledger);
                while !l.dirty && !l.stopping {
                    l = self.wake.wait(l).unwrap_or_else(|e| e.into_inner());
                }
                if l.stopping {
                    return;
                }
            }
            if let Some(wait) = last_start
                .map(|s| s + self.linger)
                .and_then(|at| at.checked_duration_since(Instant::now()))
            {
                std::thread::sleep(wait);
            }
            last_start = Some(Instant::now());
            let Some(consumer) = consumer.upgrade() else {
                return;
            };
            let result = {
                let _gate = lock(&self.gate);
                self.commit_dirty(&consumer, "advance")
            };
            drop(consumer);
            if result.is_err() {
                std::thread::sleep(RETRY_AFTER);
            }
        }
    }

    /// Commits the changed partitions (the caller holds the gate). A failed
    /// commit leaves them changed, to be tried again.
    fn commit_dirty(
        &self,
        consumer: &BaseConsumer<RebalanceContext>,
        why: &str,
    ) -> KafkaResult<()> {
        let with_metadata = self.metadata.load(Ordering::Acquire);
        let commits: Vec<(TopicPartition, (i64, String))> = {
            let mut l = lock(&self.ledger);
            l.dirty = false;
            let commits = l
                .partitions
                .iter_mut()
                .filter(|(_, pc)| pc.dirty)
                .filter_map(|(tp, pc)| pc.next_commit(with_metadata).map(|c| (tp.clone(), c)))
                .collect();
            self.note_inherited(&l);
            commits
        };
        match self.send(consumer, &commits, why) {
            Ok(()) => {
                let mut l = lock(&self.ledger);
                for (tp, c) in commits {
                    if let Some(pc) = l.partitions.get_mut(&tp) {
                        pc.committed = Some(c);
                    }
                }
                Ok(())
            }
            Err(e) => {
                let mut l = lock(&self.ledger);
                for (tp, _) in &commits {
                    if let Some(pc) = l.partitions.get_mut(tp) {
                        pc.dirty = true;
                        l.dirty = true;
                    }
                }
                Err(e)
            }
        }
    }

    /// Sends one commit request and waits for its answer. A broker that
    /// refuses the metadata's size gets commits without metadata from then
    /// on.
    fn send(
        &self,
        consumer: &BaseConsumer<RebalanceContext>,
        commits: &[(TopicPartition, (i64, String))],
        why: &str,
    ) -> KafkaResult<()> {
        if commits.is_empty() {
            return Ok(());
        }
        let build = |with_metadata: bool| {
            let mut tpl = TopicPartitionList::with_capacity(commits.len());
            for (tp, (position, metadata)) in commits {
                let mut e = tpl.add_partition(&tp.topic, tp.partition);
                let _ = e.set_offset(Offset::Offset(*position));
                if with_metadata && !metadata.is_empty() {
                    e.set_metadata(metadata);
                }
            }
            tpl
        };
        match consumer.commit(&build(true), CommitMode::Sync) {
            Ok(()) => Ok(()),
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::OffsetMetadataTooLarge)) => {
                tracing::warn!(
                    "the group coordinator refuses the commit metadata (offset.metadata.max.bytes \
                     below {METADATA_MAX}); committing positions without finished offsets"
                );
                self.metadata.store(false, Ordering::Release);
                consumer.commit(&build(false), CommitMode::Sync)
            }
            Err(e) => {
                crate::log_limit::warn_limited!(error = %e, why, "commit failed");
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offsets::PartitionOffsets;
    use proptest::prelude::*;

    fn runs_of(offsets: impl IntoIterator<Item = i64>) -> Vec<Range<i64>> {
        let mut runs: Vec<Range<i64>> = Vec::new();
        for o in offsets {
            match runs.last_mut() {
                Some(r) if r.end == o => r.end += 1,
                _ => runs.push(o..o + 1),
            }
        }
        runs
    }

    #[test]
    fn the_position_passes_what_the_previous_owner_finished() {
        // Committed at 10 with 11..13 finished above; this owner finished
        // 10 and has not seen anything past 13 yet.
        let mut pc = PartitionCommit {
            floor: Some(10),
            inherited: runs_of([11, 12]),
            ..PartitionCommit::default()
        };
        pc.reported = Some((11, Vec::new()));
        let (position, metadata) = pc.next_commit(true).unwrap();
        assert_eq!((position, metadata.as_str()), (13, ""));
        assert!(pc.inherited.is_empty());
        // The same report again: nothing new to commit.
        pc.committed = Some((13, String::new()));
        assert_eq!(pc.next_commit(true), None);
    }

    proptest! {
        /// Whatever the previous owner finished and whatever this one
        /// finished, in any order: the committed position never passes an
        /// unfinished record, and the metadata claims only finished ones.
        #[test]
        fn commits_claim_only_finished_records(
            states in proptest::collection::vec(0u8..3, 1..300),
            seed in any::<u64>(),
            steps in 1usize..20,
        ) {
            // 0: finished by the previous owner (skipped), 1: delivered and
            // finished here, 2: delivered and still running.
            let n = states.len() as i64;
            let inherited: Vec<i64> = (1..n).filter(|&o| states[o as usize] == 0).collect();
            let delivered: Vec<i64> = (0..n).filter(|&o| o == 0 || states[o as usize] != 0).collect();
            let mut finishing: Vec<i64> = delivered
                .iter()
                .copied()
                .filter(|&o| o != 0 && states[o as usize] == 1)
                .collect();
            let mut s = seed | 1;
            for i in (1..finishing.len()).rev() {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                finishing.swap(i, (s % (i as u64 + 1)) as usize);
            }
            // Offset 0 (the committed position) finishes too, at some step.
            let zero_at = (s % (steps as u64)) as usize;
            let mut offsets = PartitionOffsets::default();
            for &o in &delivered {
                offsets.deliver(o);
            }
            let mut pc = PartitionCommit {
                floor: Some(0),
                inherited: runs_of(inherited.iter().copied()),
                ..PartitionCommit::default()
            };
            let mut done: std::collections::BTreeSet<i64> = inherited.iter().copied().collect();
            let chunk = finishing.len().div_ceil(steps).max(1);
            let mut last = 0;
            for step in 0..steps {
                if step == zero_at {
                    offsets.complete(0);
                    done.insert(0);
                }
                for &o in finishing.iter().skip(step * chunk).take(chunk) {
                    offsets.complete(o);
                    done.insert(o);
                }
                let position = offsets.position().unwrap();
                pc.reported = Some((position, offsets.finished_above(FINISHED_RUNS)));
                if let Some((committed, metadata)) = pc.next_commit(true) {
                    prop_assert!(committed >= last);
                    last = committed;
                    for o in 0..committed.min(n) {
                        prop_assert!(done.contains(&o), "position {} passes unfinished {}", committed, o);
                    }
                    if !metadata.is_empty() {
                        let claimed = FinishedAbove::decode(&metadata, committed).unwrap();
                        for r in claimed.runs {
                            for o in r {
                                prop_assert!(done.contains(&o), "claims unfinished {}", o);
                            }
                        }
                    }
                    pc.committed = Some((committed, metadata));
                }
            }
        }
    }
}
