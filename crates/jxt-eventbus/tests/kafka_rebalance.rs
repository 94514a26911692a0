//! Rebalancing on Kafka: three buses share a group while records flow; one
//! leaves and another joins. Nothing is lost, and each key's records are
//! handled in publish order across all buses. And a handler slower than the
//! revoke timeout is cancelled before its partition goes to the next owner.
#![cfg(feature = "kafka")]

mod kafka_support;
mod support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jxt_eventbus::{Delivery, EventBus, SubscribeOptions};
use kafka_support::{config, create_topic};
use support::handled::{record, Log};
use support::wait_for;

const WAIT: Duration = Duration::from_secs(90);
const PARTITIONS: i32 = 6;

async fn join(brokers: &str, group: &str, topic: &str, log: &Log, name: &'static str) -> EventBus {
    // A member that leaves handles what it fetched first, so it commits all it
    // took and no record is handled twice (the default mode leaves its buffer
    // for redelivery: tests/shutdown.rs).
    let mut c = config(brokers, group);
    c.dispatch.shutdown_mode = jxt_eventbus::ShutdownMode::DrainBuffered;
    let b = EventBus::from_config(c).await.expect("kafka bus");
    let l = log.clone();
    b.subscribe(
        topic,
        move |d: Delivery| {
            l.push(&d, name);
            async {
                tokio::time::sleep(Duration::from_millis(1)).await;
                Ok(())
            }
        },
        SubscribeOptions::new(),
    )
    .await
    .expect("subscribe");
    b
}

async fn owned(bus: &EventBus) -> usize {
    bus.dispatch_stats()
        .await
        .map_or(0, |s| s.assigned_partitions)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_leave_and_join_while_records_flow() {
    let Some(brokers) = support::kafka_brokers() else {
        return;
    };
    let topic = support::unique_name("rebalance");
    create_topic(&brokers, &topic, PARTITIONS).await;
    let group = support::unique_name("g-rebalance");
    let log = Log::default();
    let a = join(&brokers, &group, &topic, &log, "a").await;
    let b = join(&brokers, &group, &topic, &log, "b").await;
    let c = join(&brokers, &group, &topic, &log, "c").await;
    wait_for("three members sharing the partitions", WAIT, || {
        futures::executor::block_on(async {
            let (oa, ob, oc) = (owned(&a).await, owned(&b).await, owned(&c).await);
            oa > 0 && ob > 0 && oc > 0 && oa + ob + oc == PARTITIONS as usize
        })
    })
    .await;

    const KEYS: usize = 24;
    const ROUNDS: u64 = 150;
    let rounds = Arc::new(AtomicU64::new(0));
    let publisher = {
        let p = b.clone();
        let topic = topic.clone();
        let rounds = rounds.clone();
        tokio::spawn(async move {
            let mut sent = HashSet::new();
            for seq in 0..ROUNDS {
                let round = (0..KEYS).map(|k| {
                    let key = format!("k{k}");
                    sent.insert((topic.clone(), key.clone(), seq));
                    p.publish(&topic, record(&key, seq))
                });
                // Concurrent within a round, rounds in order: a key's records
                // are published in sequence.
                for r in futures::future::join_all(round).await {
                    r.expect("publish");
                }
                rounds.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
            sent
        })
    };

    wait_for("records flowing", WAIT, || {
        rounds.load(Ordering::SeqCst) >= 15
    })
    .await;
    a.shutdown().await.expect("a leaves");
    wait_for("the others took a's partitions", WAIT, || {
        futures::executor::block_on(async { owned(&b).await + owned(&c).await })
            == PARTITIONS as usize
    })
    .await;
    wait_for("more records", WAIT, || rounds.load(Ordering::SeqCst) >= 50).await;
    let d = join(&brokers, &group, &topic, &log, "d").await;
    wait_for("d owns partitions", WAIT, || {
        futures::executor::block_on(owned(&d)) > 0
    })
    .await;

    let sent = publisher.await.expect("publisher");
    wait_for("every record", WAIT, || {
        log.distinct_in_topics().len() == sent.len()
    })
    .await;
    // Nothing buffered and everything committed: no rebalance can deliver a
    // record again, so the counts below are final.
    support::wait_settled(&[&b, &c, &d], WAIT).await;
    let seen = log.all();
    assert_eq!(log.distinct_in_topics(), sent, "no record lost");
    for bus in ["a", "b", "c", "d"] {
        assert!(seen.iter().any(|s| s.bus == bus), "{bus} handled records");
    }
    // In the order handlers were invoked, over all buses, each key's records
    // never go backwards; clean hand-overs (revoke waits, commits, then
    // releases) mean none is handled twice either.
    kafka_support::assert_key_order(&seen, false);
    assert_eq!(seen.len(), sent.len(), "no record handled twice");
    for bus in [&b, &c, &d] {
        bus.shutdown().await.expect("shutdown");
    }
}

/// Start and end of handler calls over two buses, in the order they happened.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Event {
    Start(&'static str, String),
    /// The handler future was dropped before it finished.
    Cancelled(&'static str, String),
    Done(&'static str, String),
}

#[derive(Clone, Default)]
struct Timeline(Arc<Mutex<Vec<Event>>>);

impl Timeline {
    fn push(&self, e: Event) {
        self.0.lock().unwrap().push(e);
    }
    fn all(&self) -> Vec<Event> {
        self.0.lock().unwrap().clone()
    }
    fn count(&self, f: impl Fn(&Event) -> bool) -> usize {
        self.all().iter().filter(|e| f(e)).count()
    }
}

/// Notes the end of a handler call: cancelled if dropped before `done`.
struct EndGuard {
    timeline: Timeline,
    bus: &'static str,
    key: String,
    done: bool,
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        let key = std::mem::take(&mut self.key);
        self.timeline.push(if self.done {
            Event::Done(self.bus, key)
        } else {
            Event::Cancelled(self.bus, key)
        });
    }
}

async fn timed_member(
    brokers: &str,
    group: &str,
    topic: &str,
    timeline: &Timeline,
    name: &'static str,
    handling: Duration,
) -> EventBus {
    let mut c = config(brokers, group);
    c.dispatch.revoke_timeout = Duration::from_secs(2);
    c.dispatch.shutdown_timeout = Duration::from_secs(2);
    let b = EventBus::from_config(c).await.expect("kafka bus");
    let t = timeline.clone();
    b.subscribe(
        topic,
        move |d: Delivery| {
            let key = d.key_str().expect("keyed").to_string();
            t.push(Event::Start(name, key.clone()));
            let guard = EndGuard {
                timeline: t.clone(),
                bus: name,
                key,
                done: false,
            };
            async move {
                // Moves the whole guard into the future (not just a field).
                let mut guard = guard;
                tokio::time::sleep(handling).await;
                guard.done = true;
                Ok(())
            }
        },
        SubscribeOptions::new(),
    )
    .await
    .expect("subscribe");
    b
}

/// Issue 14, item 2: bus `a` runs a handler far slower than its
/// `revoke_timeout` on every record when `b` joins. The revoke must cancel
/// `a`'s handlers of the revoked partition before `b` may start the same
/// keys: no key ever runs on both buses at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_past_its_timeout_cancels_the_running_handlers() {
    let Some(brokers) = support::kafka_brokers() else {
        return;
    };
    let topic = support::unique_name("revoke-cancel");
    create_topic(&brokers, &topic, 2).await;
    let group = support::unique_name("g-revoke-cancel");
    let timeline = Timeline::default();
    let slow = Duration::from_secs(120);
    let a = timed_member(&brokers, &group, &topic, &timeline, "a", slow).await;
    wait_for("a owns both partitions", WAIT, || {
        futures::executor::block_on(owned(&a)) == 2
    })
    .await;
    const KEYS: usize = 8;
    let mut partition_of = HashMap::new();
    for k in 0..KEYS {
        let key = format!("k{k}");
        let receipt = a.publish(&topic, record(&key, 0)).await.expect("publish");
        partition_of.insert(key, receipt.partition);
    }
    assert!(
        partition_of.values().collect::<HashSet<_>>().len() == 2,
        "keys spread over both partitions: {partition_of:?}"
    );
    wait_for("a started every key", WAIT, || {
        timeline.count(|e| matches!(e, Event::Start("a", _))) == KEYS
    })
    .await;

    let b = timed_member(&brokers, &group, &topic, &timeline, "b", Duration::ZERO).await;
    wait_for("b owns a partition", WAIT, || {
        futures::executor::block_on(owned(&b)) == 1
    })
    .await;
    let b_partition = b.dispatch_stats().await.expect("stats").partitions[0]
        .partition
        .partition;
    let b_keys: HashSet<String> = partition_of
        .iter()
        .filter(|(_, p)| **p == b_partition)
        .map(|(k, _)| k.clone())
        .collect();
    wait_for("b handled its partition's keys", WAIT, || {
        timeline.count(|e| matches!(e, Event::Done("b", _))) == b_keys.len()
    })
    .await;

    let events = timeline.all();
    for key in &b_keys {
        let b_start = events
            .iter()
            .position(|e| *e == Event::Start("b", key.clone()))
            .expect("b started the key");
        let a_end = events
            .iter()
            .position(|e| *e == Event::Cancelled("a", key.clone()));
        assert!(
            a_end.is_some_and(|end| end < b_start),
            "{key}: b started it while a's handler still ran (a ended at {a_end:?}, b started at {b_start}): {events:?}"
        );
    }
    // a's handlers of the partition it kept still run: none was cancelled.
    for (key, p) in &partition_of {
        if *p != b_partition {
            assert!(
                !events.contains(&Event::Cancelled("a", key.clone())),
                "{key} cancelled though a kept its partition"
            );
        }
    }
    let registry = a.metrics_registry().expect("registry");
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let cancelled: f64 = text
        .lines()
        .filter(|l| l.starts_with("eventbus_handlers_cancelled_total{") && l.contains(&topic))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum();
    assert_eq!(cancelled as usize, b_keys.len(), "counted: {text}");
    b.shutdown().await.expect("b shutdown");
    // a's other handlers outlast its shutdown timeout: reported, and
    // cancelled at the deadline too.
    assert!(matches!(
        a.shutdown().await,
        Err(jxt_eventbus::Error::Timeout { .. })
    ));
    wait_for("a's remaining handlers cancelled", WAIT, || {
        timeline.count(|e| matches!(e, Event::Cancelled("a", _))) == KEYS
    })
    .await;
}
