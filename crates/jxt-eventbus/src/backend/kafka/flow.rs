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
//!
//! The dispatcher's `pause` and `resume` run on async runtime workers, so
//! they never wait: they only queue the request on a channel. The pause
//! state belongs to the poll thread (its lock is taken only there, rebalance
//! callbacks included), which applies the requests in order before it looks
//! at a record and while it waits — and which may block in librdkafka's own
//! pause and resume (they wait on the broker threads) without holding up
//! anyone else.

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::TopicPartitionList;
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use crate::backend::{Record, TopicPartition};

/// Longest the poll thread waits for a paused partition whose record it
/// holds to be resumed before pausing it in librdkafka. Other partitions'
/// records wait that long too, but the dispatcher still has up to their caps
/// buffered, so handlers keep working; a pause applied in librdkafka costs
/// a refetch instead. With handlers that spend CPU (20 µs per record) the
/// dispatcher resumes a partition 30–60 ms after pausing it: at 20 ms nearly
/// every pause reached librdkafka and the handlers idled about half the
/// time waiting for refetches (consumer path 0.45–0.48 of the keyed consumer
/// written by hand, against 1.0–1.4 at 250 ms).
pub(super) const HOLD_WAIT: Duration = Duration::from_millis(250);
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

/// A request of the dispatcher.
enum Request {
    Pause(Vec<TopicPartition>),
    Resume(Vec<TopicPartition>),
}

/// The poll thread's pause state.
struct State {
    requests: Receiver<Request>,
    /// Paused by the dispatcher.
    paused: HashSet<TopicPartition>,
    /// Records polled while their partition was paused (or had held records
    /// already), with when the first was held.
    held: HashMap<TopicPartition, (Instant, Vec<Record>)>,
    /// Paused in librdkafka.
    in_client: HashSet<TopicPartition>,
}

impl State {
    fn apply(&mut self, request: Request) {
        match request {
            Request::Pause(tps) => self.paused.extend(tps),
            Request::Resume(tps) => {
                for tp in &tps {
                    self.paused.remove(tp);
                }
            }
        }
    }

    /// Applies the requests queued so far.
    fn catch_up(&mut self) {
        loop {
            match self.requests.try_recv() {
                Ok(r) => self.apply(r),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return,
            }
        }
    }
}

/// Pause state: requests from the dispatcher (through the consumer handle),
/// applied by the poll thread.
pub(super) struct Flow {
    requests: Sender<Request>,
    /// Locked only by the poll thread.
    state: Mutex<State>,
}

impl Default for Flow {
    fn default() -> Self {
        let (requests, inbox) = std::sync::mpsc::channel();
        Flow {
            requests,
            state: Mutex::new(State {
                requests: inbox,
                paused: HashSet::default(),
                held: HashMap::default(),
                in_client: HashSet::default(),
            }),
        }
    }
}

impl std::fmt::Debug for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flow").finish_non_exhaustive()
    }
}

impl Flow {
    /// Poll thread only.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The dispatcher pauses `partitions` (applied by the poll thread).
    /// Never waits.
    pub(super) fn pause(&self, partitions: &[TopicPartition]) {
        // The poll thread's end is gone only when the consumer is: nothing
        // left to pause then.
        let _ = self.requests.send(Request::Pause(partitions.to_vec()));
    }

    /// The dispatcher resumes `partitions`; wakes a waiting poll thread.
    /// Never waits.
    pub(super) fn resume(&self, partitions: &[TopicPartition]) {
        let _ = self.requests.send(Request::Resume(partitions.to_vec()));
    }

    /// Poll thread: returns the record when it may go to the dispatcher now,
    /// or holds it (`None`) when its partition is paused or has records
    /// held before it; then the caller stops polling and calls [`Self::wait`].
    pub(super) fn admit(&self, record: Record) -> Option<Record> {
        let mut st = self.lock();
        st.catch_up();
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
        None
    }

    /// Poll thread: hands the held records of resumed partitions to
    /// `deliver` (in order) and resumes them in librdkafka if they were
    /// paused there. Runs before the next poll, so held records precede
    /// newer ones.
    pub(super) fn release(&self, consumer: &impl PauseClient, mut deliver: impl FnMut(Record)) {
        let mut st = self.lock();
        st.catch_up();
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
        let mut st = self.lock();
        loop {
            st.catch_up();
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
                // A resume arriving meanwhile is applied by the next
                // `release`, on this thread, after this pause.
                drop(st);
                if let Err(e) = consumer.pause(&tpl) {
                    tracing::debug!(error = %e, "pause failed (partitions not assigned)");
                }
                st = self.lock();
                continue;
            }
            let Some(oldest) = oldest else {
                return;
            };
            let left = (oldest + HOLD_WAIT).saturating_duration_since(now);
            match st.requests.recv_timeout(left) {
                Ok(r) => st.apply(r),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Rebalance (poll thread): `partitions` were assigned or revoked; their
    /// pause state and held records are dropped (held records were never
    /// delivered, so the group reads them again). Requests queued before
    /// are applied first, so none of them outlives the change.
    pub(super) fn forget(&self, partitions: &[TopicPartition]) {
        let mut st = self.lock();
        st.catch_up();
        for tp in partitions {
            st.paused.remove(tp);
            st.held.remove(tp);
            st.in_client.remove(tp);
        }
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

    /// A client whose pause blocks until the test lets it go, as
    /// librdkafka's does while the partition's broker thread is busy.
    struct SlowClient {
        entered: std::sync::mpsc::SyncSender<()>,
        release: Mutex<std::sync::mpsc::Receiver<()>>,
    }

    impl PauseClient for SlowClient {
        fn pause(&self, _: &TopicPartitionList) -> KafkaResult<()> {
            let _ = self.entered.send(());
            let _ = lock_ignoring_poison(&self.release).recv();
            Ok(())
        }

        fn resume(&self, _: &TopicPartitionList) -> KafkaResult<()> {
            Ok(())
        }
    }

    fn lock_ignoring_poison<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The dispatcher's pause and resume run on runtime workers: they must
    /// not wait while the poll thread is inside a client call.
    #[test]
    fn pause_and_resume_never_wait_for_the_client() {
        let flow = std::sync::Arc::new(Flow::default());
        let p0 = TopicPartition::new("t", 0);
        flow.pause(std::slice::from_ref(&p0));
        // A full hold makes the poll thread pause the partition in the client.
        for offset in 0..MAX_HELD as i64 {
            assert!(flow.admit(record(0, offset)).is_none());
        }
        let (entered_tx, entered) = std::sync::mpsc::sync_channel(1);
        let (release, release_rx) = std::sync::mpsc::channel();
        let client = SlowClient {
            entered: entered_tx,
            release: Mutex::new(release_rx),
        };
        let poll_thread = std::thread::spawn({
            let flow = flow.clone();
            move || flow.wait(&client)
        });
        entered
            .recv_timeout(Duration::from_secs(10))
            .expect("the poll thread calls the client's pause");
        // The client's pause is in progress: the dispatcher's calls return.
        let (done_tx, done) = std::sync::mpsc::channel();
        let dispatcher = std::thread::spawn({
            let flow = flow.clone();
            let p1 = TopicPartition::new("t", 1);
            move || {
                flow.pause(std::slice::from_ref(&p1));
                flow.resume(std::slice::from_ref(&p1));
                flow.resume(std::slice::from_ref(&p0));
                let _ = done_tx.send(());
            }
        });
        let answered = done.recv_timeout(Duration::from_secs(10));
        release.send(()).unwrap();
        poll_thread.join().unwrap();
        dispatcher.join().unwrap();
        assert!(
            answered.is_ok(),
            "the dispatcher's pause/resume waited for the client's pause"
        );
    }

    #[test]
    fn forget_drops_held_records() {
        let flow = Flow::default();
        let p0 = TopicPartition::new("t", 0);
        flow.pause(std::slice::from_ref(&p0));
        assert!(flow.admit(record(0, 2)).is_none());
        flow.forget(std::slice::from_ref(&p0));
        assert!(flow.lock().held.is_empty());
        assert!(flow.admit(record(0, 3)).is_some());
    }
}
