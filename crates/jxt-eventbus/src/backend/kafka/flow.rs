//! The dispatcher's pause and resume, applied by the poll thread.
//!
//! Pausing a partition in librdkafka drops what it prefetched for it; after
//! the resume those records are fetched again, and that fetch waits behind
//! the fetch in flight (up to `kafka.consumer.fetch_max_wait` when the other
//! partitions have nothing new). Most pauses are short: the dispatcher
//! resumes a partition at half its cap, often within milliseconds. So a
//! pause is first only noted. When the poll thread polls a record of a
//! paused partition it holds it and stops polling until the partition is
//! resumed, at most [`HOLD_WAIT`]; only a pause that outlasts that wait is
//! applied in librdkafka. Held records are delivered at the resume, before
//! any later record of their partition.
//!
//! Memory stays bounded: a partition holds at most [`MAX_HELD`] records
//! (in practice one, as polling stops at the first), and none once it is
//! paused in librdkafka, which then fetches nothing more for it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::TopicPartitionList;
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use crate::backend::{Record, TopicPartition};

/// Longest the poll thread waits for a paused partition whose record it
/// holds to be resumed before pausing it in librdkafka. Other partitions'
/// records wait that long too, so it stays short.
pub(super) const HOLD_WAIT: Duration = Duration::from_millis(20);
/// Records held for one partition at most before it is paused in
/// librdkafka at once.
const MAX_HELD: usize = 64;

/// The client calls the flow makes. librdkafka's pause and resume wait for
/// the partitions' broker threads to apply them, so they may take as long
/// as those threads are busy.
pub(super) trait PauseClient {
    fn pause(&self, partitions: &TopicPartitionList) -> KafkaResult<()>;
    fn resume(&self, partitions: &TopicPartitionList) -> KafkaResult<()>;
}

impl<C: ConsumerContext> PauseClient for BaseConsumer<C> {
    fn pause(&self, partitions: &TopicPartitionList) -> KafkaResult<()> {
        rdkafka::consumer::Consumer::pause(self, partitions)
    }

    fn resume(&self, partitions: &TopicPartitionList) -> KafkaResult<()> {
        rdkafka::consumer::Consumer::resume(self, partitions)
    }
}

#[derive(Default)]
struct State {
    /// Paused by the dispatcher.
    paused: HashSet<TopicPartition>,
    /// Records polled while their partition was paused (or had held records
    /// already), with when the first was held.
    held: HashMap<TopicPartition, (Instant, Vec<Record>)>,
    /// Paused in librdkafka.
    in_client: HashSet<TopicPartition>,
}

impl State {
    fn busy(&self) -> bool {
        !self.paused.is_empty() || !self.held.is_empty() || !self.in_client.is_empty()
    }
}

/// Pause state shared by the dispatcher (through the consumer handle) and
/// the poll thread.
#[derive(Default)]
pub(super) struct Flow {
    state: Mutex<State>,
    changed: Condvar,
    /// Anything paused, held or paused in the client: the poll thread's
    /// fast path skips the lock when false.
    busy: AtomicBool,
}

impl std::fmt::Debug for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flow")
            .field("busy", &self.busy.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Flow {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, st: &State) {
        self.busy.store(st.busy(), Ordering::Release);
    }

    /// The dispatcher pauses `partitions` (applied by the poll thread).
    pub(super) fn pause(&self, partitions: &[TopicPartition]) {
        let mut st = self.lock();
        st.paused.extend(partitions.iter().cloned());
        self.update(&st);
    }

    /// The dispatcher resumes `partitions`; wakes a waiting poll thread.
    pub(super) fn resume(&self, partitions: &[TopicPartition]) {
        let mut st = self.lock();
        for tp in partitions {
            st.paused.remove(tp);
        }
        self.update(&st);
        drop(st);
        self.changed.notify_all();
    }

    /// Poll thread: returns the record when it may go to the dispatcher now,
    /// or holds it (`None`) when its partition is paused or has records
    /// held before it; then the caller stops polling and calls [`Self::wait`].
    pub(super) fn admit(&self, record: Record) -> Option<Record> {
        if !self.busy.load(Ordering::Acquire) {
            return Some(record);
        }
        let mut st = self.lock();
        let tp = &record.partition;
        if !st.paused.contains(tp) && !st.held.contains_key(tp) {
            return Some(record);
        }
        let tp = tp.clone();
        st.held
            .entry(tp)
            .or_insert_with(|| (Instant::now(), Vec::new()))
            .1
            .push(record);
        self.update(&st);
        None
    }

    /// Poll thread: hands the held records of resumed partitions to
    /// `deliver` (in order) and resumes them in librdkafka if they were
    /// paused there. Runs before the next poll, so held records precede
    /// newer ones.
    pub(super) fn release(
        &self,
        consumer: &impl PauseClient,
        mut deliver: impl FnMut(Record),
    ) {
        if !self.busy.load(Ordering::Acquire) {
            return;
        }
        let mut st = self.lock();
        let ready: Vec<TopicPartition> = st
            .held
            .keys()
            .chain(st.in_client.iter())
            .filter(|tp| !st.paused.contains(*tp))
            .cloned()
            .collect();
        if ready.is_empty() {
            return;
        }
        let mut records = Vec::new();
        let mut resume = TopicPartitionList::new();
        for tp in &ready {
            if let Some((_, held)) = st.held.remove(tp) {
                records.extend(held);
            }
            if st.in_client.remove(tp) {
                resume.add_partition(&tp.topic, tp.partition);
            }
        }
        self.update(&st);
        drop(st);
        records.into_iter().for_each(&mut deliver);
        if resume.count() > 0 {
            if let Err(e) = consumer.resume(&resume) {
                tracing::debug!(error = %e, "resume failed (partitions not assigned)");
            }
        }
    }

    /// Poll thread: while a paused partition holds records, waits for a
    /// resume; a partition whose records were held for [`HOLD_WAIT`] (or
    /// that holds [`MAX_HELD`]) is paused in librdkafka and no longer
    /// waited for.
    pub(super) fn wait(&self, consumer: &impl PauseClient) {
        if !self.busy.load(Ordering::Acquire) {
            return;
        }
        let mut st = self.lock();
        loop {
            let now = Instant::now();
            let mut oldest: Option<Instant> = None;
            let mut overdue = Vec::new();
            for (tp, (since, held)) in &st.held {
                if !st.paused.contains(tp) {
                    // Resumed: deliver before polling more.
                    return;
                }
                if st.in_client.contains(tp) {
                    continue;
                }
                if now >= *since + HOLD_WAIT || held.len() >= MAX_HELD {
                    overdue.push(tp.clone());
                } else {
                    oldest = Some(oldest.map_or(*since, |o| o.min(*since)));
                }
            }
            if !overdue.is_empty() {
                let mut tpl = TopicPartitionList::with_capacity(overdue.len());
                for tp in overdue {
                    tpl.add_partition(&tp.topic, tp.partition);
                    st.in_client.insert(tp);
                }
                self.update(&st);
                if let Err(e) = consumer.pause(&tpl) {
                    tracing::debug!(error = %e, "pause failed (partitions not assigned)");
                }
            }
            let Some(oldest) = oldest else {
                return;
            };
            let left = (oldest + HOLD_WAIT).saturating_duration_since(now);
            st = self
                .changed
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Rebalance: `partitions` were assigned or revoked; their pause state
    /// and held records are dropped (held records were never delivered, so
    /// the group reads them again).
    pub(super) fn forget(&self, partitions: &[TopicPartition]) {
        let mut st = self.lock();
        for tp in partitions {
            st.paused.remove(tp);
            st.held.remove(tp);
            st.in_client.remove(tp);
        }
        self.update(&st);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;

    fn record(p: i32, offset: i64) -> Record {
        Record {
            partition: TopicPartition::new("t", p),
            offset,
            message: std::sync::Arc::new(Message::new("x")),
            ack: None,
        }
    }

    #[test]
    fn holds_records_of_paused_partitions_until_resumed() {
        let flow = Flow::default();
        let p0 = TopicPartition::new("t", 0);
        assert!(flow.admit(record(0, 1)).is_some(), "nothing paused");
        flow.pause(std::slice::from_ref(&p0));
        assert!(flow.admit(record(1, 7)).is_some(), "other partitions pass");
        assert!(flow.admit(record(0, 2)).is_none());
        flow.resume(std::slice::from_ref(&p0));
        // Resumed but not yet released: a later record must not overtake.
        assert!(flow.admit(record(0, 3)).is_none());
        let st = flow.lock();
        let held: Vec<i64> = st.held[&p0].1.iter().map(|r| r.offset).collect();
        assert_eq!(held, vec![2, 3]);
    }

    #[test]
    fn forget_drops_held_records() {
        let flow = Flow::default();
        let p0 = TopicPartition::new("t", 0);
        flow.pause(std::slice::from_ref(&p0));
        assert!(flow.admit(record(0, 2)).is_none());
        flow.forget(std::slice::from_ref(&p0));
        assert!(!flow.busy.load(Ordering::Acquire));
        assert!(flow.admit(record(0, 3)).is_some());
    }
}
