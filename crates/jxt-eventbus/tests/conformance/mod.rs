//! The backend conformance suite: the bus contract, written once, run against
//! every backend. A backend's test binary implements [`Harness`] and expands
//! [`conformance_tests!`].

#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jxt_eventbus::{
    BusConfig, Delivery, ErrorKind, EventBus, HandlerError, HandlerResult, ListOptions, Message,
    ReplayOptions, SubscribeOptions,
};

use crate::support::handled::{parse, record, Log, Seen};
use crate::support::wait_for;

mod raw_bytes;
mod replay_scope;
pub use raw_bytes::*;
pub use replay_scope::*;

pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a backend provides to the suite.
pub trait Harness: Send + Sync + 'static {
    /// A new bus on the shared broker, in `group`, with `tweak` applied to a
    /// test-friendly configuration.
    fn bus<'a>(
        &'a self,
        group: &'a str,
        tweak: &'a (dyn Fn(&mut BusConfig) + Sync),
    ) -> BoxFut<'a, EventBus>;
    /// Creates a topic with `partitions` partitions (and its dead-letter topic).
    fn create_topic<'a>(&'a self, topic: &'a str, partitions: u32) -> BoxFut<'a, ()>;
    /// A unique name.
    fn unique(&self, prefix: &str) -> String;
    /// Whether topics have partitions that the members of a group divide
    /// among themselves (memory, Kafka). JetStream has none: a topic is one
    /// partition, handled by one member of a group at a time (the pinned
    /// one, `nats.consumer.sharing: pinned`). Either way one member owns all
    /// records of a key.
    fn partitions(&self) -> bool {
        true
    }
    /// Whether a header value may be any bytes or null (memory, Kafka);
    /// NATS headers are text, and other values are refused at publish.
    fn header_values_are_bytes(&self) -> bool {
        true
    }
}

/// Test-friendly defaults: fast retries, bounded waits.
pub fn test_config(config: &mut BusConfig) {
    config.retry.initial_backoff = Duration::from_millis(5);
    config.retry.max_backoff = Duration::from_millis(50);
    config.retry.jitter = false;
    config.dispatch.revoke_timeout = Duration::from_secs(10);
    config.dispatch.shutdown_timeout = Duration::from_secs(20);
}

pub fn no_tweak(_: &mut BusConfig) {}

/// Publishes `per_key` records for each of `keys` keys, interleaved.
pub async fn publish_keyed(
    bus: &EventBus,
    topic: &str,
    keys: usize,
    per_key: u64,
) -> HashSet<(String, u64)> {
    let mut all = HashSet::new();
    for seq in 0..per_key {
        for k in 0..keys {
            let key = format!("k{k}");
            bus.publish(topic, record(&key, seq))
                .await
                .expect("publish");
            all.insert((key, seq));
        }
    }
    all
}

/// A handler that logs every delivery.
pub fn logging(
    log: &Log,
    bus: &'static str,
) -> impl Fn(Delivery) -> BoxFut<'static, HandlerResult> + Send + Sync + 'static {
    let log = log.clone();
    move |d: Delivery| {
        log.push(&d, bus);
        Box::pin(async { Ok(()) })
    }
}

const WAIT: Duration = Duration::from_secs(60);

/// Key prefix of the sentinel records of [`settle`].
const SENTINEL: &str = "sentinel-";

/// Publishes one sentinel record to every partition of `topic` (keys
/// `sentinel-N`, published until the receipts cover every partition) and
/// returns their keys.
async fn publish_sentinels(
    h: &dyn Harness,
    bus: &EventBus,
    topic: &str,
    partitions: u32,
) -> HashSet<String> {
    let want = if h.partitions() {
        partitions as usize
    } else {
        1
    };
    let (mut covered, mut keys) = (HashSet::new(), HashSet::new());
    for i in 0.. {
        assert!(i < 1000, "no sentinel key reached every partition");
        let key = format!("{SENTINEL}{i}");
        let receipt = bus
            .publish(topic, record(&key, 0))
            .await
            .expect("publish sentinel");
        keys.insert(key);
        covered.insert(receipt.partition);
        if covered.len() == want {
            return keys;
        }
    }
    unreachable!()
}

/// The end condition of a "nothing more arrives" check, instead of a sleep:
/// a sentinel record is published after everything else to every partition
/// of `topic` and handled (so every record before it was delivered), then
/// every bus of the group has nothing queued or running (so everything
/// delivered before the sentinels finished) and reports no lag (everything
/// is committed, so even a rebalance cannot deliver anything again). A
/// duplicate can only have happened before this returns.
async fn settle(h: &dyn Harness, topic: &str, partitions: u32, log: &Log, buses: &[&EventBus]) {
    let keys = publish_sentinels(h, buses[0], topic, partitions).await;
    wait_for("every sentinel handled", WAIT, || {
        let seen: HashSet<String> = log
            .all()
            .into_iter()
            .filter(|s| s.topic == topic)
            .map(|s| s.key)
            .collect();
        keys.iter().all(|k| seen.contains(k))
    })
    .await;
    crate::support::wait_settled(buses, WAIT).await;
}

/// Handler invocations of records other than [`settle`]'s sentinels.
fn without_sentinels(log: &Log) -> Vec<Seen> {
    log.all()
        .into_iter()
        .filter(|s| !s.key.starts_with(SENTINEL))
        .collect()
}

/// The records of [`without_sentinels`] handled more than once, with the
/// buses and offsets of each handling.
fn duplicates(log: &Log) -> Vec<Vec<Seen>> {
    let mut by_record: BTreeMap<(String, String, u64), Vec<Seen>> = BTreeMap::new();
    for s in without_sentinels(log) {
        by_record
            .entry((s.topic.clone(), s.key.clone(), s.seq))
            .or_default()
            .push(s);
    }
    by_record.into_values().filter(|v| v.len() > 1).collect()
}

/// Distinct (key, seq) pairs of [`without_sentinels`].
fn distinct_data(log: &Log) -> HashSet<(String, u64)> {
    without_sentinels(log)
        .into_iter()
        .map(|s| (s.key, s.seq))
        .collect()
}

fn assert_key_order(seen: &[Seen]) {
    let mut by_key: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for s in seen {
        by_key.entry(&s.key).or_default().push(s.seq);
    }
    for (k, seqs) in by_key {
        // Retries repeat a seq; order means never going backwards.
        assert!(
            seqs.windows(2).all(|w| w[0] <= w[1]),
            "key {k} out of order: {seqs:?}"
        );
    }
}

// ---------------------------------------------------------------- the cases

pub async fn publish_subscribe(h: &dyn Harness) {
    let topic = h.unique("pubsub");
    h.create_topic(&topic, 3).await;
    let bus = h.bus(&h.unique("g"), &no_tweak).await;
    let log = Log::default();
    bus.subscribe(&topic, logging(&log, "a"), SubscribeOptions::new())
        .await
        .unwrap();
    let mut msg = record("order-1", 0).with_header("x-test", "yes");
    msg.id = "fixed-id-1".into();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let probe = h.unique("probe");
    h.create_topic(&probe, 1).await;
    bus.subscribe(
        &probe,
        move |d: Delivery| {
            let tx = tx.clone();
            async move {
                tx.send(d.message().clone()).unwrap();
                Ok(())
            }
        },
        SubscribeOptions::new(),
    )
    .await
    .unwrap();
    bus.publish(&probe, msg.clone()).await.unwrap();
    let got = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.id, "fixed-id-1");
    assert_eq!(got.key_str(), Some("order-1"));
    assert_eq!(got.payload, msg.payload);
    assert_eq!(got.headers.get_str("x-test"), Some("yes"));

    let sent = publish_keyed(&bus, &topic, 10, 20).await;
    wait_for("all records", WAIT, || log.distinct().len() == sent.len()).await;
    settle(h, &topic, 3, &log, &[&bus]).await;
    assert_eq!(distinct_data(&log), sent);
    assert_eq!(
        without_sentinels(&log).len(),
        sent.len(),
        "no record handled twice when nothing fails"
    );
    bus.shutdown().await.unwrap();
}

pub async fn fan_out_across_groups(h: &dyn Harness) {
    let topic = h.unique("fanout");
    h.create_topic(&topic, 2).await;
    let a = h.bus(&h.unique("ga"), &no_tweak).await;
    let b = h.bus(&h.unique("gb"), &no_tweak).await;
    let (la, lb) = (Log::default(), Log::default());
    a.subscribe(&topic, logging(&la, "a"), SubscribeOptions::new())
        .await
        .unwrap();
    b.subscribe(&topic, logging(&lb, "b"), SubscribeOptions::new())
        .await
        .unwrap();
    let sent = publish_keyed(&a, &topic, 5, 20).await;
    wait_for("both groups", WAIT, || {
        la.distinct().len() == sent.len() && lb.distinct().len() == sent.len()
    })
    .await;
    assert_eq!(la.distinct(), sent);
    assert_eq!(lb.distinct(), sent);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

pub async fn competing_consumers(h: &dyn Harness) {
    let topic = h.unique("compete");
    h.create_topic(&topic, 4).await;
    let group = h.unique("g");
    let a = h.bus(&group, &no_tweak).await;
    let b = h.bus(&group, &no_tweak).await;
    let log = Log::default();
    a.subscribe(&topic, logging(&log, "a"), SubscribeOptions::new())
        .await
        .unwrap();
    b.subscribe(&topic, logging(&log, "b"), SubscribeOptions::new())
        .await
        .unwrap();
    // Let the group settle so both own partitions.
    wait_for("both members assigned", WAIT, || {
        futures::executor::block_on(async {
            let sa = a
                .dispatch_stats()
                .await
                .map_or(0, |s| s.assigned_partitions);
            let sb = b
                .dispatch_stats()
                .await
                .map_or(0, |s| s.assigned_partitions);
            sa > 0 && sb > 0 && (!h.partitions() || sa + sb == 4)
        })
    })
    .await;
    let sent = publish_keyed(&a, &topic, 40, 10).await;
    wait_for("all records", WAIT, || log.distinct().len() == sent.len()).await;
    settle(h, &topic, 4, &log, &[&a, &b]).await;
    let all = without_sentinels(&log);
    assert_eq!(
        all.len(),
        sent.len(),
        "each record handled once in the group"
    );
    let by_a = all.iter().filter(|s| s.bus == "a").count();
    if h.partitions() {
        assert!(
            by_a > 0 && by_a < all.len(),
            "work shared: a handled {by_a} of {}",
            all.len()
        );
    } else {
        assert!(
            by_a == 0 || by_a == all.len(),
            "a one-partition topic is handled by one member: a handled {by_a} of {}",
            all.len()
        );
    }
    // A key is handled by one member only.
    let mut owner: HashMap<&str, &str> = HashMap::new();
    for s in &all {
        assert_eq!(
            *owner.entry(&s.key).or_insert(s.bus),
            s.bus,
            "key {} on two members",
            s.key
        );
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

pub async fn per_key_order_under_concurrency(h: &dyn Harness) {
    let topic = h.unique("order");
    h.create_topic(&topic, 2).await;
    let bus = h
        .bus(&h.unique("g"), &|c| c.dispatch.max_concurrency = 16)
        .await;
    let log = Log::default();
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let per_key_running: Arc<Mutex<HashSet<String>>> = Arc::default();
    let (l, r, p, pk) = (
        log.clone(),
        running.clone(),
        peak.clone(),
        per_key_running.clone(),
    );
    bus.subscribe(
        &topic,
        move |d: Delivery| {
            let (l, r, p, pk) = (l.clone(), r.clone(), p.clone(), pk.clone());
            async move {
                let key = d.key_str().unwrap().to_string();
                assert!(
                    pk.lock().unwrap().insert(key.clone()),
                    "two records of {key} at once"
                );
                let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                l.push(&d, "a");
                let (_, seq) = parse(&d);
                tokio::time::sleep(Duration::from_micros(200 * (seq % 5))).await;
                r.fetch_sub(1, Ordering::SeqCst);
                pk.lock().unwrap().remove(&key);
                Ok(())
            }
        },
        SubscribeOptions::new(),
    )
    .await
    .unwrap();
    let sent = publish_keyed(&bus, &topic, 20, 50).await;
    wait_for("all records", WAIT, || log.distinct().len() == sent.len()).await;
    assert_key_order(&log.all());
    let peak = peak.load(Ordering::SeqCst);
    assert!(peak > 1, "different keys ran concurrently (peak {peak})");
    assert!(peak <= 16, "concurrency cap held (peak {peak})");
    bus.shutdown().await.unwrap();
}

pub async fn redelivery_after_handler_error(h: &dyn Harness) {
    let topic = h.unique("redeliver");
    h.create_topic(&topic, 2).await;
    let bus = h.bus(&h.unique("g"), &no_tweak).await;
    let log = Log::default();
    let l = log.clone();
    bus.subscribe(
        &topic,
        move |d: Delivery| {
            l.push(&d, "a");
            let (_, seq) = parse(&d);
            let fail = seq % 3 == 0 && d.attempt() < 3;
            async move {
                if fail {
                    Err(HandlerError::retryable("dependency down"))
                } else {
                    Ok(())
                }
            }
        },
        SubscribeOptions::new(),
    )
    .await
    .unwrap();
    let sent = publish_keyed(&bus, &topic, 4, 9).await;
    wait_for("all records", WAIT, || log.distinct().len() == sent.len()).await;
    wait_for("retries done", WAIT, || log.len() == sent.len() + 2 * 4 * 3).await;
    let all = log.all();
    for s in all.iter().filter(|s| s.seq % 3 == 0) {
        assert!(s.attempt <= 3);
    }
    assert_eq!(
        all.iter().filter(|s| s.attempt == 3).count(),
        12,
        "each failing record tried 3 times"
    );
    assert_key_order(&all);
    bus.shutdown().await.unwrap();
}

pub async fn unsubscribe_stops_only_that_topic(h: &dyn Harness) {
    let (t1, t2) = (h.unique("unsub1"), h.unique("unsub2"));
    h.create_topic(&t1, 2).await;
    h.create_topic(&t2, 2).await;
    let group = h.unique("g");
    let bus = h.bus(&group, &no_tweak).await;
    let (l1, l2) = (Log::default(), Log::default());
    bus.subscribe(&t1, logging(&l1, "a"), SubscribeOptions::new())
        .await
        .unwrap();
    bus.subscribe(&t2, logging(&l2, "a"), SubscribeOptions::new())
        .await
        .unwrap();
    let s1 = publish_keyed(&bus, &t1, 3, 5).await;
    wait_for("t1 records", WAIT, || l1.distinct().len() == s1.len()).await;
    bus.unsubscribe(&t1).await.unwrap();
    assert!(
        bus.unsubscribe(&t1).await.is_err(),
        "second unsubscribe is an error"
    );
    let later: HashSet<_> = (100..110).map(|i| ("k0".to_string(), i)).collect();
    for (k, i) in &later {
        bus.publish(&t1, record(k, *i)).await.unwrap();
    }
    let s2 = publish_keyed(&bus, &t2, 3, 5).await;
    wait_for("t2 records", WAIT, || l2.distinct().len() == s2.len()).await;
    // Subscribing again resumes from the committed position: only the later records.
    let l3 = Log::default();
    bus.subscribe(&t1, logging(&l3, "a"), SubscribeOptions::new())
        .await
        .unwrap();
    wait_for("backlog after resubscribe", WAIT, || {
        l3.distinct().len() == later.len()
    })
    .await;
    // Once the bus has read t1 to its end, handled by the new handler:
    settle(h, &t1, 2, &l3, &[&bus]).await;
    assert_eq!(distinct_data(&l3), later);
    assert_eq!(l1.distinct(), s1, "nothing handled after unsubscribe");
    bus.shutdown().await.unwrap();
}

pub async fn shutdown_drains_and_commits(h: &dyn Harness) {
    let topic = h.unique("drain");
    h.create_topic(&topic, 2).await;
    let group = h.unique("g");
    // Drains its whole buffer, so it commits everything it fetched (the
    // default mode leaves the buffer for redelivery: tests/shutdown.rs).
    let a = h
        .bus(&group, &|c: &mut BusConfig| {
            c.dispatch.shutdown_mode = jxt_eventbus::ShutdownMode::DrainBuffered
        })
        .await;
    let log = Log::default();
    let l = log.clone();
    a.subscribe(
        &topic,
        move |d: Delivery| {
            let l = l.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                l.push(&d, "a");
                Ok(())
            }
        },
        SubscribeOptions::new(),
    )
    .await
    .unwrap();
    let sent = publish_keyed(&a, &topic, 4, 50).await;
    wait_for("some handled", WAIT, || log.len() >= 10).await;
    a.shutdown().await.unwrap();
    let handled_by_a = log.len();
    assert!(matches!(
        a.publish(&topic, record("k0", 999)).await,
        Err(jxt_eventbus::Error::Closed)
    ));
    let b = h.bus(&group, &no_tweak).await;
    b.subscribe(&topic, logging(&log, "b"), SubscribeOptions::new())
        .await
        .unwrap();
    wait_for("the rest", WAIT, || log.distinct().len() == sent.len()).await;
    settle(h, &topic, 2, &log, &[&b]).await;
    assert_eq!(
        without_sentinels(&log).len(),
        sent.len(),
        "no duplicates: a finished and committed all it took ({handled_by_a}): {:?}",
        duplicates(&log)
    );
    b.shutdown().await.unwrap();
}

pub async fn no_loss_when_a_member_dies(h: &dyn Harness) {
    let topic = h.unique("crash");
    h.create_topic(&topic, 2).await;
    let group = h.unique("g");
    let a = h.bus(&group, &no_tweak).await;
    let log = Log::default();
    let l = log.clone();
    a.subscribe(
        &topic,
        move |d: Delivery| {
            let l = l.clone();
            async move {
                // Slow keys and fast keys: completions finish out of order.
                let slow = d.key_str() == Some("k0");
                tokio::time::sleep(Duration::from_millis(if slow { 30 } else { 1 })).await;
                l.push(&d, "a");
                Ok(())
            }
        },
        SubscribeOptions::new(),
    )
    .await
    .unwrap();
    let sent = publish_keyed(&a, &topic, 8, 40).await;
    wait_for("some handled", WAIT, || log.len() >= 40).await;
    drop(a); // a crash: no drain, no final commit
    let b = h.bus(&group, &no_tweak).await;
    b.subscribe(&topic, logging(&log, "b"), SubscribeOptions::new())
        .await
        .unwrap();
    wait_for("every record handled at least once", WAIT, || {
        log.distinct().len() == sent.len()
    })
    .await;
    assert_eq!(log.distinct(), sent);
    assert_key_order(
        &log.all()
            .into_iter()
            .filter(|s| s.bus == "b")
            .collect::<Vec<_>>(),
    );
    b.shutdown().await.unwrap();
}

pub async fn poison_records_go_to_the_dead_letter_topic(h: &dyn Harness) {
    let topic = h.unique("poison");
    h.create_topic(&topic, 2).await;
    let dlq = format!("{topic}.dlq");
    let group = h.unique("g");
    let bus = h.bus(&group, &no_tweak).await;
    let log = Log::default();
    let l = log.clone();
    bus.subscribe(
        &topic,
        move |d: Delivery| {
            l.push(&d, "a");
            let (_, seq) = parse(&d);
            async move {
                match seq % 10 {
                    3 => Err(HandlerError::permanent("rule violated")),
                    7 => panic!("boom at {seq}"),
                    _ => Ok(()),
                }
            }
        },
        SubscribeOptions::new(),
    )
    .await
    .unwrap();
    let dead = Log::default();
    let kinds: Arc<Mutex<Vec<(String, String, String)>>> = Arc::default();
    let (d2, k2) = (dead.clone(), kinds.clone());
    let reader = h.bus(&h.unique("dlq-reader"), &no_tweak).await;
    reader
        .subscribe(
            &dlq,
            move |d: Delivery| {
                d2.push(&d, "dlq");
                let hd = d.headers();
                k2.lock().unwrap().push((
                    hd.get_str("x-dlq-error-kind").unwrap_or("").to_string(),
                    hd.get_str("x-dlq-original-topic").unwrap_or("").to_string(),
                    hd.get_str("x-dlq-consumer-group").unwrap_or("").to_string(),
                ));
                async { Ok(()) }
            },
            SubscribeOptions::new(),
        )
        .await
        .unwrap();
    let sent = publish_keyed(&bus, &topic, 3, 20).await;
    let bad: HashSet<_> = sent
        .iter()
        .filter(|(_, s)| s % 10 == 3 || s % 10 == 7)
        .cloned()
        .collect();
    wait_for("all handled", WAIT, || log.distinct().len() == sent.len()).await;
    wait_for("dead letters", WAIT, || dead.distinct().len() == bad.len()).await;
    assert_eq!(dead.distinct(), bad);
    for (kind, original, g) in kinds.lock().unwrap().iter() {
        assert!(kind == "permanent" || kind == "panic", "{kind}");
        assert_eq!(original, &topic);
        assert_eq!(g, &group);
    }
    // Permanent failures are not retried.
    assert_eq!(log.len(), sent.len());
    bus.shutdown().await.unwrap();
    reader.shutdown().await.unwrap();
}

pub async fn dead_letters_can_be_listed_and_replayed(h: &dyn Harness) {
    let topic = h.unique("replay");
    h.create_topic(&topic, 2).await;
    let bus = h.bus(&h.unique("g"), &no_tweak).await;
    let broken = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let log = Log::default();
    let replays = Arc::new(AtomicUsize::new(0));
    let (l, b, r) = (log.clone(), broken.clone(), replays.clone());
    bus.subscribe(
        &topic,
        move |d: Delivery| {
            l.push(&d, "a");
            if d.headers().get_str(jxt_eventbus::REPLAYED_HEADER) == Some("1")
                && d.headers()
                    .get_str(jxt_eventbus::REPLAYED_FROM_ID_HEADER)
                    .is_some()
            {
                r.fetch_add(1, Ordering::SeqCst);
            }
            let (_, seq) = parse(&d);
            let fail = seq % 5 == 0 && b.load(Ordering::SeqCst);
            async move {
                if fail {
                    Err(HandlerError::permanent("not yet"))
                } else {
                    Ok(())
                }
            }
        },
        SubscribeOptions::new(),
    )
    .await
    .unwrap();
    let sent = publish_keyed(&bus, &topic, 4, 10).await;
    let bad: HashSet<_> = sent.iter().filter(|(_, s)| s % 5 == 0).cloned().collect();
    wait_for("all handled once", WAIT, || {
        log.distinct().len() == sent.len()
    })
    .await;
    let idle = Duration::from_secs(2);
    let mut listed = Vec::new();
    for _ in 0..10 {
        listed = bus
            .list_dead_letters(&topic, &ListOptions::new().idle(idle).timeout(WAIT))
            .await
            .expect("list");
        if listed.len() == bad.len() {
            break;
        }
    }
    assert_eq!(listed.len(), bad.len(), "{listed:?}");
    for d in &listed {
        assert_eq!(d.original_topic.as_deref(), Some(topic.as_str()));
        assert_eq!(d.error_kind.as_deref(), Some("permanent"));
        assert_eq!(d.error.as_deref(), Some("not yet"));
    }
    let listed_again = bus
        .list_dead_letters(&topic, &ListOptions::new().idle(idle).timeout(WAIT))
        .await
        .expect("list");
    assert_eq!(
        listed_again.len(),
        bad.len(),
        "listing acknowledges nothing"
    );

    broken.store(false, Ordering::SeqCst);
    let report = bus
        .replay_dead_letters(&topic, &ReplayOptions::new().timeout(WAIT))
        .await
        .expect("replay");
    assert_eq!(report.replayed, bad.len());
    wait_for("replayed records handled again", WAIT, || {
        replays.load(Ordering::SeqCst) == bad.len()
    })
    .await;
    let after = bus
        .list_dead_letters(&topic, &ListOptions::new().idle(idle).timeout(WAIT))
        .await
        .expect("list");
    assert!(
        after.is_empty(),
        "replayed records leave the tracked set: {after:?}"
    );
    // The first pass handled each record once (permanent failures are not
    // retried); the replayed ones follow, in order per key.
    let all = log.all();
    assert_eq!(all.len(), sent.len() + bad.len());
    assert_key_order(&all[sent.len()..]);
    bus.shutdown().await.unwrap();
}

pub async fn a_backlog_puts_the_bus_in_recovery_mode_until_caught_up(h: &dyn Harness) {
    let topic = h.unique("backlog");
    h.create_topic(&topic, 2).await;
    let publisher = h.bus(&h.unique("pub"), &no_tweak).await;
    let sent = publish_keyed(&publisher, &topic, 10, 100).await;
    let bus = h
        .bus(&h.unique("g"), &|c| {
            c.backlog.check_interval = Duration::from_millis(100);
            c.backlog.max_lag = 100;
            c.backlog.clean_checks = 2;
        })
        .await;
    let changes = Arc::new(Mutex::new(Vec::new()));
    let ch = changes.clone();
    bus.on_backlog_change(move |c| {
        ch.lock().unwrap().push(matches!(
            c,
            jxt_eventbus::backlog::BacklogChange::RecoveryEntered(_)
        ));
    });
    let log = Log::default();
    let in_recovery = Arc::new(AtomicUsize::new(0));
    let (l, r) = (log.clone(), in_recovery.clone());
    bus.subscribe(
        &topic,
        move |d: Delivery| {
            l.push(&d, "a");
            if d.in_recovery() {
                r.fetch_add(1, Ordering::SeqCst);
            }
            // Slow enough that the backlog outlives a few checks on any backend.
            async {
                tokio::time::sleep(Duration::from_millis(2)).await;
                Ok(())
            }
        },
        SubscribeOptions::new().max_concurrency(2),
    )
    .await
    .unwrap();
    wait_for("recovery mode", WAIT, || bus.is_recovering()).await;
    wait_for("all records", WAIT, || log.distinct().len() == sent.len()).await;
    tokio::time::timeout(WAIT, bus.caught_up())
        .await
        .expect("caught up");
    assert!(
        in_recovery.load(Ordering::SeqCst) > 0,
        "handlers saw recovery mode"
    );
    assert_eq!(
        *changes.lock().unwrap(),
        vec![true, false],
        "entered once, left once"
    );
    bus.shutdown().await.unwrap();
    publisher.shutdown().await.unwrap();
}

pub async fn rejects_bad_input(h: &dyn Harness) {
    let bus = h.bus(&h.unique("g"), &no_tweak).await;
    let topic = h.unique("bad");
    h.create_topic(&topic, 1).await;
    // A raw key is any bytes; an envelope's aggregate id follows jxt-core's rule.
    let mut bad_id = jxt_eventbus::Envelope::new("order-1", "Created", 1, &1).unwrap();
    bad_id.aggregate_id = "bad key".into();
    let err = bus.publish_envelope(&topic, &bad_id).await.unwrap_err();
    assert!(
        matches!(err, jxt_eventbus::Error::InvalidMessage(_)),
        "{err}"
    );
    let err = bus
        .publish("bad topic", Message::new("x"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("topic"), "{err}");
    let env = jxt_eventbus::Envelope::new("order-1", "Created", 0, &1).unwrap();
    assert!(bus.publish_envelope(&topic, &env).await.is_err());
    bus.shutdown().await.unwrap();
    let err = bus.publish(&topic, Message::new("x")).await.unwrap_err();
    assert!(matches!(err, jxt_eventbus::Error::Closed));
    assert!(matches!(
        bus.subscribe(
            &topic,
            |_d: Delivery| async { Ok(()) },
            SubscribeOptions::new()
        )
        .await,
        Err(jxt_eventbus::Error::Closed)
    ));
    let _ = ErrorKind::Panic;
}

/// Expands to one `#[tokio::test]` per case, each with a fresh harness from
/// `$make` (an async expression).
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@cases $make;
            publish_subscribe, fan_out_across_groups, competing_consumers,
            per_key_order_under_concurrency, redelivery_after_handler_error,
            unsubscribe_stops_only_that_topic, shutdown_drains_and_commits,
            no_loss_when_a_member_dies, poison_records_go_to_the_dead_letter_topic,
            dead_letters_can_be_listed_and_replayed, replay_is_scoped_to_the_group,
            replay_refuses_unallowed_targets_and_tired_records,
            a_backlog_puts_the_bus_in_recovery_mode_until_caught_up, rejects_bad_input,
            keys_payloads_and_headers_are_bytes_end_to_end);
    };
    (@cases $make:expr; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(h) = $make.await else { return };
                tokio::time::timeout(
                    std::time::Duration::from_secs(120),
                    conformance::$case(&h),
                )
                .await
                .expect("case timed out");
            }
        )*
    };
}
