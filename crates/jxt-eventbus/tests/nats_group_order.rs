//! Several buses of one group on one topic over NATS JetStream: with
//! `nats.consumer.sharing: pinned` (the default) one bus handles the topic
//! and per-key order holds across the group; when that bus shuts down,
//! unsubscribes or is dropped mid-stream, another takes over at once and no
//! record is lost or handled before an earlier record of its key; a busy
//! pinned bus keeps its topic; the group's topics spread over its buses.
//! `sharing: shared` spreads records over the group, and a group switches
//! between the two only while none of its buses pulls.
#![cfg(feature = "nats")]

mod nats_support;
mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, PriorityPolicy};
use async_nats::jetstream::stream::StorageType;
use jxt_eventbus::config::NatsSharing;
use jxt_eventbus::{BusConfig, Delivery, Error, EventBus, Message, SubscribeOptions};
use nats_support::StreamCleanup;
use support::eventually;

const WAIT: Duration = Duration::from_secs(20);
const KEYS: u64 = 40;

/// What the handlers of every bus of the group did, in the order they
/// started, plus the contract violations seen on the way.
#[derive(Default)]
struct Tracker {
    state: Mutex<TrackerState>,
}

#[derive(Default)]
struct TrackerState {
    /// (bus, key, seq) at handler start.
    handled: Vec<(&'static str, u64, u64)>,
    /// When each bus started its first handler.
    first: HashMap<&'static str, Instant>,
    /// Key -> bus running a record of it now.
    running: HashMap<u64, &'static str>,
    /// Key -> highest seq whose handler finished.
    finished: HashMap<u64, u64>,
    violations: Vec<String>,
}

impl Tracker {
    fn start(&self, bus: &'static str, key: u64, seq: u64, concurrency_checked: bool) {
        let mut s = self.state.lock().unwrap();
        if let Some(other) = s.running.get(&key) {
            if concurrency_checked {
                let v = format!("key {key}: seq {seq} started on {bus} while {other} runs one");
                s.violations.push(v);
            }
        }
        if let Some(&done) = s.finished.get(&key) {
            if seq < done {
                let v = format!("key {key}: seq {seq} on {bus} after seq {done} finished");
                s.violations.push(v);
            }
        }
        s.running.insert(key, bus);
        s.first.entry(bus).or_insert_with(Instant::now);
        s.handled.push((bus, key, seq));
    }

    fn finish(&self, key: u64, seq: u64) {
        let mut s = self.state.lock().unwrap();
        s.running.remove(&key);
        let done = s.finished.entry(key).or_default();
        *done = (*done).max(seq);
    }

    fn distinct(&self) -> HashSet<(u64, u64)> {
        let s = self.state.lock().unwrap();
        s.handled.iter().map(|&(_, k, q)| (k, q)).collect()
    }

    fn handled_by(&self, bus: &str) -> usize {
        let s = self.state.lock().unwrap();
        s.handled.iter().filter(|h| h.0 == bus).count()
    }

    /// The bus that started the latest record.
    fn last_bus(&self) -> Option<&'static str> {
        self.state.lock().unwrap().handled.last().map(|h| h.0)
    }

    fn handled_count(&self) -> usize {
        self.state.lock().unwrap().handled.len()
    }

    /// The buses that started records since the first `from`.
    fn buses_since(&self, from: usize) -> Vec<&'static str> {
        let s = self.state.lock().unwrap();
        let mut buses: Vec<_> = s.handled[from..].iter().map(|h| h.0).collect();
        buses.sort_unstable();
        buses.dedup();
        buses
    }

    fn first(&self, bus: &str) -> Option<Instant> {
        self.state.lock().unwrap().first.get(bus).copied()
    }

    fn assert_clean(&self) {
        let s = self.state.lock().unwrap();
        assert!(
            s.violations.is_empty(),
            "{} per-key violations, first: {:?}",
            s.violations.len(),
            &s.violations[..s.violations.len().min(5)]
        );
        // Across the whole group, a key's records start in publish order; a
        // record handed over unfinished may start again, never an earlier one.
        let mut by_key: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for &(_, k, q) in &s.handled {
            by_key.entry(k).or_default().push(q);
        }
        for (k, seqs) in by_key {
            let backwards = seqs.windows(2).find(|w| w[1] < w[0]);
            assert!(backwards.is_none(), "key {k} went backwards: {seqs:?}");
        }
    }
}

fn subscribe_options() -> SubscribeOptions {
    SubscribeOptions::new()
}

async fn subscribe(
    bus: &EventBus,
    topic: &str,
    name: &'static str,
    tracker: &Arc<Tracker>,
    concurrency_checked: bool,
) -> jxt_eventbus::Result<()> {
    let tracker = tracker.clone();
    bus.subscribe(
        topic,
        move |d: Delivery| {
            let tracker = tracker.clone();
            async move {
                let text = std::str::from_utf8(d.payload()).unwrap();
                let (key, seq) = text.split_once(':').unwrap();
                let (key, seq): (u64, u64) = (key.parse().unwrap(), seq.parse().unwrap());
                tracker.start(name, key, seq, concurrency_checked);
                tokio::time::sleep(Duration::from_millis(1)).await;
                tracker.finish(key, seq);
                Ok(())
            }
        },
        subscribe_options(),
    )
    .await
}

/// Publishes records `from..to` (record `n` is key `n % KEYS`, its
/// `n / KEYS`-th record), each acknowledged by the stream.
async fn publish(publisher: &EventBus, topic: &str, from: u64, to: u64) -> HashSet<(u64, u64)> {
    let mut sent = HashSet::new();
    for n in from..to {
        let (key, seq) = (n % KEYS, n / KEYS);
        let m = Message::new(format!("{key}:{seq}")).with_key(format!("k{key}"));
        publisher.publish(topic, m).await.expect("publish");
        sent.insert((key, seq));
        if n.is_multiple_of(50) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    sent
}

struct Setup {
    url: String,
    topic: String,
    group: String,
    publisher: EventBus,
    cleanup: StreamCleanup,
}

async fn setup(prefix: &str) -> Option<Setup> {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
    let url = support::nats_url()?;
    let cleanup = StreamCleanup::new(&url);
    let topic = support::unique_name(prefix);
    cleanup.add(&topic);
    nats_support::create_stream(&url, &topic, StorageType::File).await;
    let publisher = EventBus::from_config(nats_support::config(&url, &support::unique_name("pub")))
        .await
        .unwrap();
    Some(Setup {
        group: support::unique_name("g"),
        url,
        topic,
        publisher,
        cleanup,
    })
}

impl Setup {
    fn config(&self) -> BusConfig {
        let mut c = nats_support::config(&self.url, &self.group);
        c.dispatch.shutdown_timeout = Duration::from_secs(10);
        c
    }

    async fn bus(&self) -> EventBus {
        EventBus::from_config(self.config()).await.unwrap()
    }

    async fn consumer_config(&self) -> async_nats::jetstream::consumer::Config {
        let client = async_nats::connect(&self.url).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let stream = js.stream_by_subject(self.topic.as_str()).await.unwrap();
        let consumers: Vec<String> = {
            use futures::TryStreamExt;
            js.get_stream(&stream)
                .await
                .unwrap()
                .consumer_names()
                .try_collect()
                .await
                .unwrap()
        };
        let name = consumers
            .iter()
            .find(|n| n.contains(&self.group))
            .expect("the group's consumer");
        js.get_consumer_from_stream::<pull::Config, _, _>(name, &stream)
            .await
            .unwrap()
            .cached_info()
            .config
            .clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_bus_of_the_group_handles_a_topic_in_key_order() {
    let Some(s) = setup("pinned").await else {
        return;
    };
    let tracker = Arc::new(Tracker::default());
    let (a, b) = (s.bus().await, s.bus().await);
    subscribe(&a, &s.topic, "a", &tracker, true).await.unwrap();
    subscribe(&b, &s.topic, "b", &tracker, true).await.unwrap();

    let sent = publish(&s.publisher, &s.topic, 0, 1000).await;
    eventually("every record", WAIT.as_secs(), || {
        tracker.distinct() == sent
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    tracker.assert_clean();
    let (by_a, by_b) = (tracker.handled_by("a"), tracker.handled_by("b"));
    assert_eq!(by_a + by_b, sent.len(), "each record handled once");
    assert!(
        by_a == 0 || by_b == 0,
        "one bus handles the topic: a {by_a}, b {by_b}"
    );
    let c = s.consumer_config().await;
    assert_eq!(c.priority_policy, PriorityPolicy::PinnedClient);
    assert_eq!(c.priority_timeout, Duration::from_secs(60), "2 x ack_wait");
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    s.publisher.shutdown().await.unwrap();
}

/// How the pinned bus lets the topic go.
#[derive(Clone, Copy, PartialEq)]
enum LetGo {
    Shutdown,
    Drop,
    Unsubscribe,
}

/// Publishes while the pinned bus lets go of the topic mid-stream; the
/// standby takes over within a few seconds (far below `pinned_ttl`: the pin
/// was released) and every record is handled, never before an earlier
/// record of its key.
async fn hand_over(prefix: &str, how: LetGo) {
    let Some(s) = setup(prefix).await else {
        return;
    };
    let tracker = Arc::new(Tracker::default());
    let (a, b) = (s.bus().await, s.bus().await);
    // A dropped bus's handlers may still be running when the standby gets
    // their records again: shutdown and unsubscribe wait for them first.
    let concurrency_checked = how != LetGo::Drop;
    subscribe(&a, &s.topic, "a", &tracker, concurrency_checked)
        .await
        .unwrap();
    subscribe(&b, &s.topic, "b", &tracker, concurrency_checked)
        .await
        .unwrap();
    let mut sent = publish(&s.publisher, &s.topic, 0, 400).await;
    let producing = {
        let (publisher, topic) = (s.publisher.clone(), s.topic.clone());
        tokio::spawn(async move { publish(&publisher, &topic, 400, 1600).await })
    };
    eventually("the first records", WAIT.as_secs(), || {
        tracker.distinct().len() >= 200
    })
    .await;
    let (pinned, standby, name) = if tracker.handled_by("a") > 0 {
        (a, b, "b")
    } else {
        (b, a, "a")
    };
    assert_eq!(tracker.handled_by(name), 0, "the standby waits");
    let let_go = Instant::now();
    let pinned = match how {
        LetGo::Shutdown => {
            pinned.shutdown().await.unwrap();
            None
        }
        LetGo::Drop => {
            drop(pinned);
            None
        }
        LetGo::Unsubscribe => {
            pinned.unsubscribe(&s.topic).await.unwrap();
            Some(pinned)
        }
    };
    sent.extend(producing.await.unwrap());
    eventually("every record", WAIT.as_secs(), || {
        tracker.distinct() == sent
    })
    .await;
    let took_over = tracker.first(name).expect("the standby handled records");
    assert!(
        took_over.duration_since(let_go) < Duration::from_secs(10),
        "the standby took over after {:?}",
        took_over.duration_since(let_go)
    );
    tracker.assert_clean();
    standby.shutdown().await.unwrap();
    if let Some(bus) = pinned {
        bus.shutdown().await.unwrap();
    }
    s.publisher.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_hands_the_topic_over_in_key_order() {
    hand_over("handover-shutdown", LetGo::Shutdown).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drop_hands_the_topic_over_in_key_order() {
    hand_over("handover-drop", LetGo::Drop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unsubscribe_hands_the_topic_over_in_key_order() {
    hand_over("handover-unsubscribe", LetGo::Unsubscribe).await;
}

/// The bus that subscribed first holds every topic of the group until a
/// second bus subscribes; then it hands topics over until each holds two,
/// while records flow, in key order and without losing one. After a rolling
/// restart (one bus stops, a new one starts) the topics spread again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_spreads_its_topics_over_its_buses() {
    let Some(s) = setup("balance").await else {
        return;
    };
    let mut topics = vec![s.topic.clone()];
    for _ in 0..3 {
        let topic = support::unique_name("balance");
        s.cleanup.add(&topic);
        nats_support::create_stream(&s.url, &topic, StorageType::File).await;
        topics.push(topic);
    }
    let mut config = s.config();
    config.nats.consumer.balance_interval = Duration::from_secs(1);
    let trackers: Vec<Arc<Tracker>> = topics.iter().map(|_| Arc::default()).collect();
    let a = EventBus::from_config(config.clone()).await.unwrap();
    for (topic, tracker) in topics.iter().zip(&trackers) {
        subscribe(&a, topic, "a", tracker, true).await.unwrap();
    }
    // Publishes records `from..to` to every topic, then waits until every
    // record published so far was handled.
    let mut sent: Vec<HashSet<(u64, u64)>> = vec![HashSet::new(); topics.len()];
    let round = async |sent: &mut Vec<HashSet<(u64, u64)>>, from: u64, to: u64| {
        for (topic, sent) in topics.iter().zip(sent.iter_mut()) {
            sent.extend(publish(&s.publisher, topic, from, to).await);
        }
        eventually("every record so far", WAIT.as_secs(), || {
            trackers
                .iter()
                .zip(sent.iter())
                .all(|(t, sent)| t.distinct() == *sent)
        })
        .await;
    };
    round(&mut sent, 0, 100).await;
    assert!(
        trackers.iter().all(|t| t.handled_by("a") == 100),
        "the first bus handles every topic"
    );

    let b = EventBus::from_config(config.clone()).await.unwrap();
    for (topic, tracker) in topics.iter().zip(&trackers) {
        subscribe(&b, topic, "b", tracker, true).await.unwrap();
    }
    // Records keep flowing while the topics move, in rounds of 20 per
    // topic, until each bus handles two topics.
    let mut next = 100;
    let spread = async |sent: &mut Vec<HashSet<(u64, u64)>>, next: &mut u64, bus: &str| {
        let started = Instant::now();
        loop {
            round(sent, *next, *next + 20).await;
            *next += 20;
            let on_bus = trackers.iter().filter(|t| t.last_bus() == Some(bus));
            if on_bus.count() == 2 {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(40),
                "the topics did not spread: last handled by {:?}",
                trackers.iter().map(|t| t.last_bus()).collect::<Vec<_>>()
            );
        }
    };
    spread(&mut sent, &mut next, "b").await;
    // Settled: a later round is handled where the last one was.
    let placed: Vec<_> = trackers.iter().map(|t| t.last_bus()).collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let from: Vec<_> = trackers.iter().map(|t| t.handled_count()).collect();
    round(&mut sent, next, next + 100).await;
    for ((t, bus), from) in trackers.iter().zip(&placed).zip(from) {
        assert_eq!(
            t.buses_since(from),
            vec![bus.unwrap()],
            "a settled topic moved"
        );
    }
    next += 100;

    // A rolling restart: b stops and a takes its topics back at once; a
    // new bus gets two of them again.
    b.shutdown().await.unwrap();
    round(&mut sent, next, next + 50).await;
    next += 50;
    assert!(trackers.iter().all(|t| t.last_bus() == Some("a")));
    let c = EventBus::from_config(config).await.unwrap();
    for (topic, tracker) in topics.iter().zip(&trackers) {
        subscribe(&c, topic, "c", tracker, true).await.unwrap();
    }
    spread(&mut sent, &mut next, "c").await;
    for t in &trackers {
        t.assert_clean();
    }
    a.shutdown().await.unwrap();
    c.shutdown().await.unwrap();
    s.publisher.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_sharing_spreads_records_over_the_group() {
    let Some(s) = setup("shared").await else {
        return;
    };
    let mut config = s.config();
    config.nats.consumer.sharing = NatsSharing::Shared;
    let tracker = Arc::new(Tracker::default());
    let a = EventBus::from_config(config.clone()).await.unwrap();
    let b = EventBus::from_config(config).await.unwrap();
    subscribe(&a, &s.topic, "a", &tracker, false).await.unwrap();
    subscribe(&b, &s.topic, "b", &tracker, false).await.unwrap();
    let sent = publish(&s.publisher, &s.topic, 0, 1000).await;
    eventually("every record", WAIT.as_secs(), || {
        tracker.distinct() == sent
    })
    .await;
    let (by_a, by_b) = (tracker.handled_by("a"), tracker.handled_by("b"));
    assert!(by_a > 0 && by_b > 0, "both buses pull: a {by_a}, b {by_b}");
    assert_eq!(
        s.consumer_config().await.priority_policy,
        PriorityPolicy::None
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    s.publisher.shutdown().await.unwrap();
}

/// A group whose consumer shares records one by one (made by an older
/// version, or configured `shared`): a pinned bus refuses to join while
/// the others pull, naming the setting, and switches the group once they
/// stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_switches_sharing_only_while_no_bus_pulls() {
    let Some(s) = setup("switch").await else {
        return;
    };
    let mut shared_config = s.config();
    shared_config.nats.consumer.sharing = NatsSharing::Shared;
    let tracker = Arc::new(Tracker::default());
    let shared = EventBus::from_config(shared_config).await.unwrap();
    subscribe(&shared, &s.topic, "shared", &tracker, true)
        .await
        .unwrap();
    let mut sent = publish(&s.publisher, &s.topic, 0, 200).await;
    eventually("the shared bus pulls", WAIT.as_secs(), || {
        tracker.distinct() == sent
    })
    .await;

    let pinned = s.bus().await;
    let err = subscribe(&pinned, &s.topic, "pinned", &tracker, true)
        .await
        .expect_err("a pinned bus cannot join a shared group that is pulling");
    assert!(matches!(err, Error::Subscribe { .. }), "{err}");
    assert!(
        err.to_string().contains("nats.consumer.sharing"),
        "the error names the setting: {err}"
    );
    assert_eq!(
        s.consumer_config().await.priority_policy,
        PriorityPolicy::None
    );

    shared.shutdown().await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while let Err(e) = subscribe(&pinned, &s.topic, "pinned", &tracker, true).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the group never switched: {e}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        s.consumer_config().await.priority_policy,
        PriorityPolicy::PinnedClient
    );
    sent.extend(publish(&s.publisher, &s.topic, 200, 400).await);
    eventually("every record", WAIT.as_secs(), || {
        tracker.distinct() == sent
    })
    .await;
    assert!(tracker.handled_by("pinned") >= 200);
    tracker.assert_clean();
    pinned.shutdown().await.unwrap();
    s.publisher.shutdown().await.unwrap();
}

/// A pinned bus that holds all it may (a stuck handler, buffer full) sends
/// no pull request for records for longer than `pinned_ttl`: it keeps its
/// pin with record-less requests, and the standby gets nothing while it
/// lives.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_busy_pinned_bus_keeps_its_topic() {
    let Some(s) = setup("busy").await else {
        return;
    };
    let mut config = s.config();
    config.nats.consumer.pinned_ttl = Some(Duration::from_secs(1));
    config.dispatch.max_buffered_per_partition = 8;
    let handled: Arc<Mutex<Vec<&'static str>>> = Arc::default();
    let mut buses = Vec::new();
    for name in ["a", "b"] {
        let bus = EventBus::from_config(config.clone()).await.unwrap();
        let handled = handled.clone();
        bus.subscribe(
            &s.topic,
            move |_d: Delivery| {
                let handled = handled.clone();
                async move {
                    let first = {
                        let mut handled = handled.lock().unwrap();
                        handled.push(name);
                        handled.len() == 1
                    };
                    // One key: while the first record runs, the buffer
                    // fills and the bus asks for nothing more.
                    let stuck = if first { 3000 } else { 10 };
                    tokio::time::sleep(Duration::from_millis(stuck)).await;
                    Ok(())
                }
            },
            subscribe_options(),
        )
        .await
        .unwrap();
        buses.push(bus);
    }
    for n in 0..30 {
        let m = Message::new(n.to_string()).with_key("one");
        s.publisher.publish(&s.topic, m).await.unwrap();
    }
    eventually("every record", WAIT.as_secs(), || {
        handled.lock().unwrap().len() >= 30
    })
    .await;
    let handled = handled.lock().unwrap().clone();
    let first = handled[0];
    assert!(
        handled.iter().all(|b| *b == first),
        "the standby took records from a live, busy bus: {handled:?}"
    );
    for bus in buses {
        bus.shutdown().await.unwrap();
    }
    s.publisher.shutdown().await.unwrap();
}
