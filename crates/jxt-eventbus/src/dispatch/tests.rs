//! Deterministic tests of the dispatcher's state machine.
//!
//! A fake consumer takes the dispatcher's pause, resume and store calls; the
//! test plays the backend's part by sending scripted `Assigned`, `Records`
//! and `Revoked` events, and finishes each handler call when it chooses.
//! Time is paused: a revoke timeout passes only when every task is idle, so
//! each ordering below happens exactly as written.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use super::*;
use crate::backend::{PartitionLag, Producer, PublishReceipt};
use crate::config::{DeadLetterConfig, RetryConfig};
use crate::delivery::Delivery;
use crate::handler::{Handler, HandlerResult};
use crate::metrics::BusMetrics;

/// What the dispatcher asked of the consumer, and what it acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Call {
    Pause(Vec<TopicPartition>),
    Resume(Vec<TopicPartition>),
    Store(TopicPartition, i64),
    /// A per-record acknowledgement: (partition, offset, tag of the assignment).
    Ack(TopicPartition, i64, u64),
    /// Noted by the property test: a record sent to the dispatcher, and one
    /// whose handler was told to succeed.
    Delivered(TopicPartition, i64),
    Finished(TopicPartition, i64),
}

#[derive(Debug, Default)]
struct FakeConsumer {
    calls: Arc<Mutex<Vec<Call>>>,
}

impl FakeConsumer {
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait]
impl Consumer for FakeConsumer {
    async fn subscribe(&self, _topics: &[String]) -> crate::Result<()> {
        Ok(())
    }
    fn pause(&self, partitions: &[TopicPartition]) {
        self.calls
            .lock()
            .unwrap()
            .push(Call::Pause(partitions.to_vec()));
    }
    fn resume(&self, partitions: &[TopicPartition]) {
        self.calls
            .lock()
            .unwrap()
            .push(Call::Resume(partitions.to_vec()));
    }
    fn store(&self, partition: &TopicPartition, next_offset: i64) {
        self.calls
            .lock()
            .unwrap()
            .push(Call::Store(partition.clone(), next_offset));
    }
    async fn commit(&self) -> crate::Result<()> {
        Ok(())
    }
    async fn lag(&self) -> crate::Result<Vec<PartitionLag>> {
        Ok(Vec::new())
    }
    async fn close(&self) -> crate::Result<()> {
        Ok(())
    }
}

#[derive(Debug)]
struct FakeAck {
    calls: Arc<Mutex<Vec<Call>>>,
    partition: TopicPartition,
    offset: i64,
    tag: u64,
}

impl RecordAck for FakeAck {
    fn ack(self: Box<Self>) {
        self.calls
            .lock()
            .unwrap()
            .push(Call::Ack(self.partition, self.offset, self.tag));
    }
}

#[derive(Debug)]
struct NullProducer;

#[async_trait]
impl Producer for NullProducer {
    async fn send(&self, _topic: &str, _message: Message) -> crate::Result<PublishReceipt> {
        Ok(PublishReceipt {
            partition: 0,
            offset: 0,
        })
    }
    async fn flush(&self, _timeout: Duration) -> crate::Result<()> {
        Ok(())
    }
}

/// One handler call, finished when the test sends its result. Dropping the
/// handler future drops the receiver: `finish.is_closed()` then tells that
/// the call was cancelled.
#[derive(Debug)]
struct Started {
    offset: i64,
    finish: oneshot::Sender<HandlerResult>,
}

impl Started {
    fn ok(self) {
        let _ = self.finish.send(Ok(()));
    }
}

struct Fixture {
    consumer: Arc<FakeConsumer>,
    events: mpsc::Sender<ConsumerEvent>,
    handle: DispatcherHandle,
    metrics: BusMetrics,
    revoke_timeout: Duration,
}

const TOPIC: &str = "orders";

fn tp(p: i32) -> TopicPartition {
    TopicPartition::new(TOPIC, p)
}

fn fixture(tweak: impl FnOnce(&mut DispatchConfig)) -> Fixture {
    let mut config = DispatchConfig {
        revoke_timeout: Duration::from_secs(10),
        ..DispatchConfig::default()
    };
    tweak(&mut config);
    let consumer = Arc::new(FakeConsumer::default());
    let metrics = BusMetrics::new();
    let ctx = Arc::new(WorkerContext {
        producer: Arc::new(NullProducer),
        retry: RetryConfig::default(),
        dead_letter: DeadLetterConfig::default(),
        group: "g".into(),
        recovering: Arc::default(),
        metrics: Arc::new(metrics.bind("fake")),
        shutdown: Arc::default(),
    });
    let (events, events_rx) = mpsc::channel(EVENT_CHANNEL);
    let revoke_timeout = config.revoke_timeout;
    let handle = Dispatcher::spawn(consumer.clone(), events_rx, config, ctx);
    Fixture {
        consumer,
        events,
        handle,
        metrics,
        revoke_timeout,
    }
}

/// Long enough that a test waiting this long has certainly stalled.
const STALLED: Duration = Duration::from_secs(3600);

impl Fixture {
    /// Subscribes `topic` with a handler whose calls the test finishes.
    async fn subscribe(&self, topic: &str) -> mpsc::UnboundedReceiver<Started> {
        let (tx, rx) = mpsc::unbounded_channel();
        let handler = move |d: Delivery| {
            let tx = tx.clone();
            async move {
                let (finish, result) = oneshot::channel();
                let _ = tx.send(Started {
                    offset: d.offset(),
                    finish,
                });
                result.await.unwrap_or(Ok(()))
            }
        };
        self.subscribe_with(topic, Arc::new(handler)).await;
        rx
    }

    async fn subscribe_with(&self, topic: &str, handler: Arc<dyn Handler>) {
        let (reply, done) = oneshot::channel();
        assert!(
            self.handle
                .send(Command::Subscribe {
                    topic: topic.into(),
                    handler: SubscriptionHandler::Records(handler),
                    settings: SubscriptionSettings {
                        ordering: Ordering::Key,
                        max_concurrency: 16,
                        recovery_concurrency: None,
                    },
                    reply,
                })
                .await
        );
        done.await.unwrap();
    }

    async fn unsubscribe(&self, topic: &str) {
        let (reply, done) = oneshot::channel();
        assert!(
            self.handle
                .send(Command::Unsubscribe {
                    topic: topic.into(),
                    reply,
                })
                .await
        );
        done.await.unwrap();
    }

    async fn event(&self, e: ConsumerEvent) {
        self.events.send(e).await.unwrap();
    }

    async fn assign(&self, tps: &[TopicPartition]) {
        self.event(ConsumerEvent::Assigned(tps.to_vec())).await;
    }

    /// Records of one partition, `(offset, key)`, acknowledged under `tag`.
    async fn records(&self, tp: &TopicPartition, tag: u64, records: &[(i64, &str)]) {
        let records = records
            .iter()
            .map(|&(offset, key)| Record {
                partition: tp.clone(),
                offset,
                message: Arc::new(Message::new(format!("{key}:{offset}")).with_key(key)),
                ack: Some(Box::new(FakeAck {
                    calls: self.consumer.calls.clone(),
                    partition: tp.clone(),
                    offset,
                    tag,
                }) as Box<dyn RecordAck>),
            })
            .collect();
        self.event(ConsumerEvent::Records(records)).await;
    }

    async fn revoke(&self, tps: &[TopicPartition], lost: bool) -> oneshot::Receiver<()> {
        let (done, answered) = oneshot::channel();
        self.event(ConsumerEvent::Revoked {
            partitions: tps.to_vec(),
            lost,
            done,
        })
        .await;
        answered
    }

    async fn stats(&self) -> DispatchStats {
        let (reply, stats) = oneshot::channel();
        assert!(self.handle.send(Command::Stats { reply }).await);
        stats.await.unwrap()
    }

    fn stores(&self, p: &TopicPartition) -> Vec<i64> {
        self.consumer
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Store(t, o) if &t == p => Some(o),
                _ => None,
            })
            .collect()
    }

    /// `handlers_cancelled_total` of the topic.
    fn cancelled(&self) -> u64 {
        self.metrics
            .handlers_cancelled
            .get_or_create(&crate::metrics::TopicLabels {
                topic: TOPIC.into(),
                backend: "fake",
            })
            .get()
    }

    fn acks(&self) -> Vec<(i64, u64)> {
        self.consumer
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Ack(_, o, tag) => Some((o, tag)),
                _ => None,
            })
            .collect()
    }
}

/// The next handler call.
async fn started(rx: &mut mpsc::UnboundedReceiver<Started>) -> Started {
    tokio::time::timeout(STALLED, rx.recv())
        .await
        .expect("a handler call started")
        .expect("handler alive")
}

/// Returns once every task is idle: with time paused the clock only moves
/// when nothing else can run, so after this sleep the dispatcher and its
/// workers have handled everything sent before.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// Item 2: a revoke that times out cancels the handler still running, and
/// only then releases the partition.
#[tokio::test(start_paused = true)]
async fn revoke_timeout_cancels_the_running_handler_before_release() {
    let f = fixture(|_| {});
    let mut calls = f.subscribe(TOPIC).await;
    f.assign(&[tp(0)]).await;
    f.records(&tp(0), 1, &[(0, "a")]).await;
    let slow = started(&mut calls).await;
    let began = Instant::now();
    let mut answered = f.revoke(&[tp(0)], false).await;
    // Before the timeout the revoke waits for the running record.
    assert!(
        tokio::time::timeout(f.revoke_timeout - Duration::from_millis(1), &mut answered)
            .await
            .is_err(),
        "released before the revoke timeout"
    );
    assert!(!slow.finish.is_closed(), "handler still running");
    let stats = f.stats().await;
    assert_eq!(
        (stats.running, stats.assigned_partitions),
        (1, 0),
        "a revoking partition is no longer owned, its record still runs"
    );
    tokio::time::timeout(STALLED, answered)
        .await
        .expect("revoke answered")
        .unwrap();
    assert!(began.elapsed() >= f.revoke_timeout);
    assert!(
        slow.finish.is_closed(),
        "the handler future was dropped before the partition was released"
    );
    assert_eq!(f.stores(&tp(0)), vec![0], "nothing finished: position 0");
    assert!(
        f.acks().is_empty(),
        "the cancelled record is not acknowledged"
    );
    assert_eq!(f.cancelled(), 1, "counted");
    let stats = f.stats().await;
    assert_eq!((stats.buffered, stats.running), (0, 0));
}

/// Item 2, lost: nothing will be committed, so the dispatcher does not wait
/// for the revoke timeout: the handler is cancelled at once.
#[tokio::test(start_paused = true)]
async fn lost_assignment_cancels_at_once() {
    let f = fixture(|_| {});
    let mut calls = f.subscribe(TOPIC).await;
    f.assign(&[tp(0)]).await;
    f.records(&tp(0), 1, &[(0, "a"), (1, "b"), (2, "b")]).await;
    let a = started(&mut calls).await;
    let b = started(&mut calls).await;
    let began = Instant::now();
    let answered = f.revoke(&[tp(0)], true).await;
    tokio::time::timeout(STALLED, answered)
        .await
        .expect("lost revoke answered")
        .unwrap();
    assert!(
        began.elapsed() < f.revoke_timeout,
        "a lost assignment waited {:?}",
        began.elapsed()
    );
    assert!(
        a.finish.is_closed() && b.finish.is_closed(),
        "handlers dropped"
    );
    assert_eq!(f.cancelled(), 2);
    assert!(
        f.stores(&tp(0)).is_empty(),
        "nothing stored for a lost partition"
    );
    assert!(f.acks().is_empty());
    let stats = f.stats().await;
    assert_eq!((stats.buffered, stats.running), (0, 0));
}

/// Item 3: the partition is assigned again while its revoke still waits for
/// a running record; finishing the revoke must not erase the new state.
#[tokio::test(start_paused = true)]
async fn assignment_during_a_revoke_keeps_the_new_state() {
    let f = fixture(|_| {});
    let mut calls = f.subscribe(TOPIC).await;
    f.assign(&[tp(0)]).await;
    f.records(&tp(0), 1, &[(0, "a")]).await;
    let old = started(&mut calls).await;
    let answered = f.revoke(&[tp(0)], false).await;
    f.assign(&[tp(0)]).await;
    settle().await;
    old.ok();
    tokio::time::timeout(STALLED, answered)
        .await
        .expect("revoke answered")
        .unwrap();
    // The new owner (this bus again) reads from the committed position.
    f.records(&tp(0), 2, &[(1, "b")]).await;
    let new = started(&mut calls).await;
    assert_eq!(new.offset, 1);
    new.ok();
    settle().await;
    assert_eq!(f.acks(), vec![(0, 1), (1, 2)]);
    assert_eq!(f.stores(&tp(0)).last(), Some(&2), "new generation commits");
    let stats = f.stats().await;
    assert_eq!(stats.assigned_partitions, 1);
    assert_eq!((stats.buffered, stats.running), (0, 0));
}

/// Item 4: unsubscribe and subscribe again while a batch of the old
/// subscription still runs. Its key's next records wait for it, and its
/// completion must not free the new subscription's lane of the same key.
#[tokio::test(start_paused = true)]
async fn resubscribe_with_work_in_flight_keeps_one_batch_per_key() {
    let f = fixture(|_| {});
    let mut old_calls = f.subscribe(TOPIC).await;
    f.assign(&[tp(0)]).await;
    f.records(&tp(0), 1, &[(0, "a")]).await;
    let old = started(&mut old_calls).await;
    f.unsubscribe(TOPIC).await;
    let mut calls = f.subscribe(TOPIC).await;
    f.records(&tp(0), 1, &[(1, "a"), (2, "b")]).await;
    settle().await;
    let mut running = Vec::new();
    while let Ok(s) = calls.try_recv() {
        running.push(s);
    }
    let offsets: Vec<i64> = running.iter().map(|s| s.offset).collect();
    assert_eq!(
        offsets,
        vec![2],
        "only key b starts: offset 1 of key a waits for offset 0 of key a"
    );
    let other_key = running.pop().unwrap();
    old.ok();
    let first = started(&mut calls).await;
    assert_eq!(first.offset, 1);
    f.records(&tp(0), 1, &[(3, "a")]).await;
    other_key.ok();
    settle().await;
    assert!(
        calls.try_recv().is_err(),
        "offset 3 of key a started while offset 1 of key a still runs"
    );
    first.ok();
    let second = started(&mut calls).await;
    assert_eq!(second.offset, 3);
    second.ok();
    settle().await;
    let stats = f.stats().await;
    assert_eq!((stats.buffered, stats.running, stats.live_lanes), (0, 0, 0));
    assert_eq!(f.stores(&tp(0)).last(), Some(&4));
}

/// Item 5: records of a topic without a handler are held (never skipped),
/// and count towards the caps, so the partition is paused.
#[tokio::test(start_paused = true)]
async fn records_without_a_handler_count_towards_the_caps() {
    let f = fixture(|c| c.max_buffered_per_partition = 4);
    let unrouted = TopicPartition::new("nobody-listens", 0);
    f.assign(std::slice::from_ref(&unrouted)).await;
    f.records(&unrouted, 1, &[(0, "a"), (1, "b"), (2, "c"), (3, "d")])
        .await;
    settle().await;
    assert!(
        f.consumer
            .calls()
            .contains(&Call::Pause(vec![unrouted.clone()])),
        "partition paused at its cap: {:?}",
        f.consumer.calls()
    );
    assert!(f.stores(&unrouted).is_empty(), "never skipped");
    // Released on revoke at the first held record.
    let answered = f.revoke(std::slice::from_ref(&unrouted), false).await;
    tokio::time::timeout(STALLED, answered)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(f.stores(&unrouted), vec![0]);
}

/// A completion of an old generation, arriving after its partition was
/// released and assigned again, neither acknowledges nor moves the new
/// generation's position.
#[tokio::test(start_paused = true)]
async fn late_completion_of_an_old_generation_is_ignored() {
    let f = fixture(|_| {});
    let mut calls = f.subscribe(TOPIC).await;
    f.assign(&[tp(0)]).await;
    f.records(&tp(0), 1, &[(0, "a")]).await;
    let old = started(&mut calls).await;
    let answered = f.revoke(&[tp(0)], false).await;
    tokio::time::timeout(STALLED, answered)
        .await
        .unwrap()
        .unwrap();
    f.assign(&[tp(0)]).await;
    f.records(&tp(0), 2, &[(0, "b")]).await;
    let new = started(&mut calls).await;
    // Whatever became of the old call, finishing it now changes nothing.
    old.ok();
    settle().await;
    assert!(f.acks().is_empty(), "old generation acknowledged");
    assert_eq!(f.stores(&tp(0)), vec![0], "only the revoke's store");
    let stats = f.stats().await;
    assert_eq!(stats.buffered, 1, "the new record still counted");
    new.ok();
    settle().await;
    assert_eq!(f.acks(), vec![(0, 2)]);
    assert_eq!(f.stores(&tp(0)), vec![0, 1]);
}

/// A revoke while the partition is paused by back-pressure: queued records
/// are dropped unacknowledged, the running one finishes, the position stops
/// at the first unfinished record, and a new assignment starts clean.
#[tokio::test(start_paused = true)]
async fn revoke_during_pause() {
    let f = fixture(|c| c.max_buffered_per_partition = 2);
    let mut calls = f.subscribe(TOPIC).await;
    f.assign(&[tp(0)]).await;
    f.records(&tp(0), 1, &[(0, "a"), (1, "a"), (2, "a")]).await;
    settle().await;
    assert!(f.consumer.calls().contains(&Call::Pause(vec![tp(0)])));
    let first = started(&mut calls).await;
    assert_eq!(first.offset, 0);
    // The batch runs 0..=2 in order; revoke while 0 runs.
    let answered = f.revoke(&[tp(0)], false).await;
    first.ok();
    let second = started(&mut calls).await;
    second.ok();
    let third = started(&mut calls).await;
    third.ok();
    tokio::time::timeout(STALLED, answered)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(f.stores(&tp(0)).last(), Some(&3));
    // Assigned again: not paused, records flow.
    f.assign(&[tp(0)]).await;
    f.records(&tp(0), 2, &[(3, "b")]).await;
    let next = started(&mut calls).await;
    assert_eq!(next.offset, 3);
    next.ok();
    settle().await;
    let stats = f.stats().await;
    assert_eq!((stats.paused_partitions, stats.buffered), (0, 0));
    assert_eq!(f.stores(&tp(0)).last(), Some(&4));
}

/// Queued (not started) records of a revoked partition are dropped without
/// acknowledgement; the position stops at the first of them.
#[tokio::test(start_paused = true)]
async fn revoke_drops_queued_records_unacknowledged() {
    let f = fixture(|c| c.max_batch = 1);
    let mut calls = f.subscribe(TOPIC).await;
    f.assign(&[tp(0)]).await;
    f.records(&tp(0), 1, &[(0, "a"), (1, "a"), (2, "a")]).await;
    let first = started(&mut calls).await;
    let answered = f.revoke(&[tp(0)], false).await;
    first.ok();
    tokio::time::timeout(STALLED, answered)
        .await
        .unwrap()
        .unwrap();
    settle().await;
    assert!(calls.try_recv().is_err(), "no queued record started");
    assert_eq!(f.acks(), vec![(0, 1)]);
    assert_eq!(f.stores(&tp(0)).last(), Some(&1));
}

mod interleavings {
    //! Random interleavings of assignments, records, revokes (lost or not),
    //! handler completions, re-subscriptions and time, checked against the dispatcher's two
    //! promises: a key never runs twice at once, and a stored position never
    //! passes a record that did not finish.

    use std::collections::{HashMap as StdHashMap, HashSet as StdHashSet};

    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    enum Op {
        Assign(i32),
        Records(i32, Vec<u8>),
        Revoke(i32, bool),
        Finish(usize),
        Advance(u64),
        /// Unsubscribe and subscribe again, whatever runs.
        Resubscribe,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            1 => (0..2i32).prop_map(Op::Assign),
            2 => (0..2i32, proptest::collection::vec(0u8..4, 1..4))
                .prop_map(|(p, keys)| Op::Records(p, keys)),
            1 => (0..2i32, proptest::bool::weighted(0.3)).prop_map(|(p, lost)| Op::Revoke(p, lost)),
            4 => any::<usize>().prop_map(Op::Finish),
            1 => (1u64..15).prop_map(Op::Advance),
            1 => Just(Op::Resubscribe),
        ]
    }

    /// A handler call in progress, with its key.
    struct Call2 {
        partition: TopicPartition,
        offset: i64,
        finish: oneshot::Sender<HandlerResult>,
    }

    /// Removes the key from the running set when the handler call ends,
    /// however it ends (finished or dropped).
    struct Running {
        active: Arc<Mutex<StdHashSet<String>>>,
        key: String,
    }

    impl Drop for Running {
        fn drop(&mut self) {
            self.active.lock().unwrap().remove(&self.key);
        }
    }

    fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async move {
            let f = fixture(|c| c.max_batch = 2);
            let active: Arc<Mutex<StdHashSet<String>>> = Arc::default();
            let violations: Arc<Mutex<Vec<String>>> = Arc::default();
            let (tx, mut calls) = mpsc::unbounded_channel();
            let handler = {
                let (active, violations) = (active.clone(), violations.clone());
                move |d: Delivery| {
                    let key = d.key_str().unwrap_or_default().to_string();
                    if !active.lock().unwrap().insert(key.clone()) {
                        violations
                            .lock()
                            .unwrap()
                            .push(format!("key {key} started twice at once"));
                    }
                    let guard = Running {
                        active: active.clone(),
                        key,
                    };
                    let (finish, result) = oneshot::channel();
                    let _ = tx.send(Call2 {
                        partition: TopicPartition::new(d.topic().to_string(), d.partition()),
                        offset: d.offset(),
                        finish,
                    });
                    async move {
                        let _guard = guard;
                        result.await.unwrap_or(Ok(()))
                    }
                }
            };
            let handler: Arc<dyn Handler> = Arc::new(handler);
            f.subscribe_with(TOPIC, handler.clone()).await;
            // The backend's view: owned partitions and their next offset.
            let mut owned: StdHashMap<i32, i64> = StdHashMap::new();
            let mut running: Vec<Call2> = Vec::new();
            let mut revokes = Vec::new();
            let committed = |f: &Fixture, p: i32| f.stores(&tp(p)).last().copied().unwrap_or(0);
            for op in ops {
                match op {
                    Op::Assign(p) => {
                        if let std::collections::hash_map::Entry::Vacant(e) = owned.entry(p) {
                            e.insert(committed(&f, p));
                            f.assign(&[tp(p)]).await;
                        }
                    }
                    Op::Records(p, keys) => {
                        let Some(next) = owned.get_mut(&p) else {
                            continue;
                        };
                        let keys: Vec<String> = keys.iter().map(|k| format!("k{k}")).collect();
                        let records: Vec<(i64, &str)> = keys
                            .iter()
                            .enumerate()
                            .map(|(i, k)| (*next + i as i64, k.as_str()))
                            .collect();
                        for (o, _) in &records {
                            f.consumer
                                .calls
                                .lock()
                                .unwrap()
                                .push(Call::Delivered(tp(p), *o));
                        }
                        *next += records.len() as i64;
                        f.records(&tp(p), 0, &records).await;
                    }
                    Op::Revoke(p, lost) => {
                        if owned.remove(&p).is_some() {
                            revokes.push(f.revoke(&[tp(p)], lost).await);
                        }
                    }
                    Op::Finish(i) => {
                        if !running.is_empty() {
                            let c = running.swap_remove(i % running.len());
                            f.consumer
                                .calls
                                .lock()
                                .unwrap()
                                .push(Call::Finished(c.partition.clone(), c.offset));
                            let _ = c.finish.send(Ok(()));
                        }
                    }
                    Op::Advance(secs) => tokio::time::sleep(Duration::from_secs(secs)).await,
                    Op::Resubscribe => {
                        f.unsubscribe(TOPIC).await;
                        f.subscribe_with(TOPIC, handler.clone()).await;
                    }
                }
                settle().await;
                while let Ok(c) = calls.try_recv() {
                    running.push(c);
                }
            }
            // Revoke everything, finishing what runs, until every revoke is
            // answered.
            for p in owned.keys().copied().collect::<Vec<_>>() {
                revokes.push(f.revoke(&[tp(p)], false).await);
            }
            for answered in revokes {
                let mut answered = std::pin::pin!(answered);
                loop {
                    settle().await;
                    while let Ok(c) = calls.try_recv() {
                        running.push(c);
                    }
                    for c in running.drain(..) {
                        f.consumer
                            .calls
                            .lock()
                            .unwrap()
                            .push(Call::Finished(c.partition.clone(), c.offset));
                        let _ = c.finish.send(Ok(()));
                    }
                    if tokio::time::timeout(Duration::from_secs(1), answered.as_mut())
                        .await
                        .is_ok()
                    {
                        break;
                    }
                }
            }
            let stats = f.stats().await;
            prop_assert_eq!((stats.buffered, stats.held, stats.running), (0, 0, 0));
            prop_assert_eq!(stats.assigned_partitions, 0);
            let violations = violations.lock().unwrap().clone();
            prop_assert!(violations.is_empty(), "{:?}", violations);
            // Every stored position, at the moment it was stored, passes
            // only records that were told to succeed.
            let mut delivered: StdHashSet<(TopicPartition, i64)> = StdHashSet::new();
            let mut finished: StdHashSet<(TopicPartition, i64)> = StdHashSet::new();
            for call in f.consumer.calls() {
                match call {
                    Call::Delivered(p, o) => {
                        delivered.insert((p, o));
                    }
                    Call::Finished(p, o) => {
                        finished.insert((p, o));
                    }
                    Call::Store(p, pos) => {
                        for (dp, o) in &delivered {
                            prop_assert!(
                                *dp != p || *o >= pos || finished.contains(&(dp.clone(), *o)),
                                "position {} of {} passes unfinished offset {}",
                                pos,
                                p,
                                o
                            );
                        }
                    }
                    _ => {}
                }
            }
            Ok(())
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn keys_never_run_twice_and_positions_never_pass_unfinished_records(
            ops in proptest::collection::vec(op(), 1..60)
        ) {
            run(ops)?;
        }
    }
}

/// A call of a batch handler, finished by the test.
struct BatchStarted {
    records: Vec<(i32, i64)>,
    finish: oneshot::Sender<crate::batch::BatchResult>,
}

impl Fixture {
    /// Subscribes a batch handler whose calls the test finishes.
    async fn subscribe_batches(
        &self,
        options: crate::batch::BatchOptions,
    ) -> mpsc::UnboundedReceiver<BatchStarted> {
        let (tx, rx) = mpsc::unbounded_channel();
        let handler = move |batch: Vec<Delivery>| {
            let tx = tx.clone();
            async move {
                let (finish, result) = oneshot::channel();
                let _ = tx.send(BatchStarted {
                    records: batch.iter().map(|d| (d.partition(), d.offset())).collect(),
                    finish,
                });
                result.await.unwrap_or(Ok(()))
            }
        };
        let spec = BatchSpec {
            handler: Arc::new(handler),
            options,
            attempt_timeout: None,
            classifier: None,
        };
        let (reply, done) = oneshot::channel();
        assert!(
            self.handle
                .send(Command::Subscribe {
                    topic: TOPIC.into(),
                    handler: SubscriptionHandler::Batches(Arc::new(spec)),
                    settings: SubscriptionSettings {
                        ordering: Ordering::Key,
                        max_concurrency: options.max_records() * 2,
                        recovery_concurrency: None,
                    },
                    reply,
                })
                .await
        );
        done.await.unwrap();
        rx
    }
}

/// A batch spans partitions: when one of them is revoked past its timeout,
/// the call is cancelled, that partition's records are left unacknowledged,
/// and the records of the partition still owned are handed over again; the
/// batch then ends and frees its slot for the next one.
#[tokio::test(start_paused = true)]
async fn a_revoke_cancels_a_batch_and_hands_the_owned_records_over_again() {
    let f = fixture(|_| {});
    let options = crate::batch::BatchOptions::new(10)
        .linger(Duration::from_millis(5))
        .max_in_flight(1);
    let mut calls = f.subscribe_batches(options).await;
    f.assign(&[tp(0), tp(1)]).await;
    f.records(&tp(0), 1, &[(0, "a"), (1, "b")]).await;
    f.records(&tp(1), 7, &[(0, "c")]).await;
    let first = tokio::time::timeout(STALLED, calls.recv())
        .await
        .unwrap()
        .unwrap();
    let mut records = first.records.clone();
    records.sort();
    assert_eq!(
        records,
        vec![(0, 0), (0, 1), (1, 0)],
        "one batch of both partitions"
    );

    let answered = f.revoke(&[tp(0)], false).await;
    tokio::time::timeout(STALLED, answered)
        .await
        .expect("revoke answered")
        .unwrap();
    assert!(first.finish.is_closed(), "the call was cancelled");
    assert_eq!(f.cancelled(), 1);
    let again = tokio::time::timeout(STALLED, calls.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        again.records,
        vec![(1, 0)],
        "only the owned partition's record"
    );
    again.finish.send(Ok(())).unwrap();
    settle().await;
    assert_eq!(
        f.acks(),
        vec![(0, 7)],
        "only tp 1's record (tag 7) acknowledged"
    );
    assert_eq!(
        f.stores(&tp(0)),
        vec![0],
        "nothing of the revoked partition"
    );

    // The batch ended: the next one starts.
    f.records(&tp(1), 2, &[(1, "c")]).await;
    let next = tokio::time::timeout(STALLED, calls.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next.records, vec![(1, 1)]);
    next.finish.send(Ok(())).unwrap();
    settle().await;
    assert_eq!(f.stats().await.running, 0);
}
