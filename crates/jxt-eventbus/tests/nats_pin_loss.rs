//! A pinned bus (`nats.consumer.sharing: pinned`) whose connection stalls —
//! a loopback proxy stops forwarding without closing the sockets:
//!
//! * for longer than the pin lifetime: it loses its topic to the group's
//!   standby, and nothing it held may run once the standby may have
//!   started: no key is handled on two buses at overlapping times, no record
//!   starts after a later record of its key started on another bus, and
//!   nothing is lost;
//! * or it is reset, losing what the server had sent: the bus reconnects at
//!   once, keeps its topic, and takes no new record before those it had out
//!   are due again, so no key goes backwards.
#![cfg(feature = "nats")]

mod nats_support;
mod support;

use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::stream::StorageType;
use jxt_eventbus::{Delivery, EventBus, Message, SubscribeOptions};
use nats_support::proxy::TcpProxy;
use nats_support::StreamCleanup;
use support::eventually;

const KEYS: u64 = 500;
/// `ack_wait`; the pin lifetime is twice as long.
const ACK_WAIT: Duration = Duration::from_secs(2);
/// How long the pinned bus's connection stalls: longer than the pin lifetime
/// (4 s) plus the standby's poll, so the standby is pinned meanwhile.
const STALL: Duration = Duration::from_secs(7);

/// One handler run: which bus, which record, when it started and ended
/// (ended also when the run was cancelled).
#[derive(Clone, Debug)]
struct Run {
    bus: &'static str,
    key: u64,
    seq: u64,
    start: Instant,
    end: Instant,
}

#[derive(Clone, Default)]
struct Journal(Arc<Mutex<Vec<Run>>>);

/// Logs its run when dropped, so that a cancelled handler is logged too.
struct Running {
    journal: Journal,
    bus: &'static str,
    key: u64,
    seq: u64,
    start: Instant,
}

impl Drop for Running {
    fn drop(&mut self) {
        let run = Run {
            bus: self.bus,
            key: self.key,
            seq: self.seq,
            start: self.start,
            end: Instant::now(),
        };
        self.journal.0.lock().unwrap().push(run);
    }
}

impl Journal {
    fn runs(&self) -> Vec<Run> {
        self.0.lock().unwrap().clone()
    }

    fn distinct(&self) -> HashSet<(u64, u64)> {
        self.runs().iter().map(|r| (r.key, r.seq)).collect()
    }

    fn by(&self, bus: &str) -> usize {
        self.runs().iter().filter(|r| r.bus == bus).count()
    }
}

/// 5 to 50 ms, fixed per record.
fn handling_time(key: u64, seq: u64) -> Duration {
    let h = BuildHasherDefault::<DefaultHasher>::default().hash_one((key, seq));
    Duration::from_millis(5 + h % 46)
}

async fn subscribe(bus: &EventBus, topic: &str, name: &'static str, journal: &Journal) {
    let journal = journal.clone();
    bus.subscribe(
        topic,
        move |d: Delivery| {
            let journal = journal.clone();
            async move {
                let text = std::str::from_utf8(d.payload()).unwrap();
                let (key, seq) = text.split_once(':').unwrap();
                let (key, seq): (u64, u64) = (key.parse().unwrap(), seq.parse().unwrap());
                let _run = Running {
                    journal,
                    bus: name,
                    key,
                    seq,
                    start: Instant::now(),
                };
                tokio::time::sleep(handling_time(key, seq)).await;
                Ok(())
            }
        },
        SubscribeOptions::new(),
    )
    .await
    .unwrap();
}

/// Violations of the group's ownership contract in `runs`: runs of one key
/// on two buses at overlapping times, and runs that started after a later
/// record of their key had started on another bus.
fn violations(runs: &[Run]) -> (Vec<String>, Vec<String>) {
    let mut by_key: BTreeMap<u64, Vec<&Run>> = BTreeMap::new();
    for r in runs {
        by_key.entry(r.key).or_default().push(r);
    }
    let (mut overlaps, mut overtaken) = (Vec::new(), Vec::new());
    for (key, runs) in by_key {
        for (i, a) in runs.iter().enumerate() {
            for b in &runs[i + 1..] {
                if a.bus != b.bus && a.start < b.end && b.start < a.end {
                    overlaps.push(format!(
                        "key {key}: seq {} on {} and seq {} on {} overlap",
                        a.seq, a.bus, b.seq, b.bus
                    ));
                }
            }
            for b in &runs {
                if a.bus != b.bus && b.seq > a.seq && b.start < a.start {
                    overtaken.push(format!(
                        "key {key}: seq {} started on {} {:?} after seq {} started on {}",
                        a.seq,
                        a.bus,
                        a.start - b.start,
                        b.seq,
                        b.bus
                    ));
                }
            }
        }
    }
    (overlaps, overtaken)
}

/// Runs, in start order per key, that started after a later record of their
/// key had started (on any bus).
fn backwards(runs: &[Run]) -> Vec<String> {
    let mut by_key: BTreeMap<u64, Vec<&Run>> = BTreeMap::new();
    for r in runs {
        by_key.entry(r.key).or_default().push(r);
    }
    let mut out = Vec::new();
    for (key, mut runs) in by_key {
        runs.sort_by_key(|r| r.start);
        let mut highest = None;
        for r in runs {
            if highest.is_some_and(|h| r.seq < h) {
                out.push(format!("key {key}: seq {} after seq {highest:?}", r.seq));
            }
            highest = highest.max(Some(r.seq));
        }
    }
    out
}

fn log_if_asked() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// Publishes about 500 records a second (record `n` is key `n % KEYS`, its
/// `n / KEYS`-th record) until `stop`; returns what was acknowledged.
fn produce(
    publisher: &EventBus,
    topic: &str,
    stop: &Arc<AtomicBool>,
) -> tokio::task::JoinHandle<HashSet<(u64, u64)>> {
    let (publisher, topic, stop) = (publisher.clone(), topic.to_string(), stop.clone());
    tokio::spawn(async move {
        let mut sent = HashSet::new();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let batch: Vec<Message> = (n..n + 25)
                .map(|i| {
                    let (key, seq) = (i % KEYS, i / KEYS);
                    sent.insert((key, seq));
                    Message::new(format!("{key}:{seq}")).with_key(format!("k{key}"))
                })
                .collect();
            n += 25;
            for r in publisher.publish_batch(&topic, batch).await.unwrap() {
                r.expect("publish");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        sent
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bus_whose_connection_stalls_past_its_pin_runs_nothing_after_the_standby_took_over() {
    log_if_asked();
    let Some(url) = support::nats_url() else {
        return;
    };
    let cleanup = StreamCleanup::new(&url);
    let topic = support::unique_name("stall");
    cleanup.add(&topic);
    nats_support::create_stream(&url, &topic, StorageType::File).await;
    let group = support::unique_name("g");
    let proxy = TcpProxy::start(&url).await;
    let config = |url: &str| {
        let mut c = nats_support::config(url, &group);
        c.nats.ack_wait = ACK_WAIT;
        c.dispatch.shutdown_timeout = Duration::from_secs(10);
        c
    };
    let publisher = EventBus::from_config(nats_support::config(&url, &support::unique_name("pub")))
        .await
        .unwrap();
    let journal = Journal::default();
    // Bus a goes through the proxy and subscribes first: it is pinned.
    let a = EventBus::from_config(config(&proxy.url())).await.unwrap();
    subscribe(&a, &topic, "a", &journal).await;

    let stop = Arc::new(AtomicBool::new(false));
    let producing = produce(&publisher, &topic, &stop);
    eventually("bus a handles the topic", 20, || journal.by("a") >= 200).await;
    let b = EventBus::from_config(config(&url)).await.unwrap();
    subscribe(&b, &topic, "b", &journal).await;
    assert_eq!(journal.by("b"), 0, "b stands by while a holds the pin");

    let stalled = Instant::now();
    proxy.freeze();
    eventually("bus b takes the topic over", 20, || journal.by("b") > 0).await;
    let took_over = stalled.elapsed();
    tokio::time::sleep(STALL.saturating_sub(stalled.elapsed())).await;
    proxy.thaw();
    // Publishing goes on a little after the stall, then every record must
    // be handled; shutting both buses down ends every handler run.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let sent = producing.await.unwrap();
    eventually("every record handled", 60, || journal.distinct() == sent).await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    publisher.shutdown().await.unwrap();

    let runs = journal.runs();
    let (overlaps, overtaken) = violations(&runs);
    let after_stall = runs
        .iter()
        .filter(|r| r.bus == "a" && r.start > stalled + took_over)
        .count();
    eprintln!(
        "{} records, {} runs (a {}, b {}); b took over after {took_over:?}; \
         a started {after_stall} runs after that; {} overlapping pairs, {} runs overtaken",
        sent.len(),
        runs.len(),
        journal.by("a"),
        journal.by("b"),
        overlaps.len(),
        overtaken.len()
    );
    assert!(
        overlaps.is_empty(),
        "{} pairs of runs of one key overlap on two buses, first: {:?}",
        overlaps.len(),
        &overlaps[..overlaps.len().min(5)]
    );
    assert!(
        overtaken.is_empty(),
        "{} runs started after a later record of their key started on another bus, first: {:?}",
        overtaken.len(),
        &overtaken[..overtaken.len().min(5)]
    );
}

/// How long the server's deliveries pile up in the proxy before the reset
/// drops them.
const BEFORE_RESET: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bus_whose_connection_is_reset_keeps_each_key_in_order() {
    log_if_asked();
    let Some(url) = support::nats_url() else {
        return;
    };
    let cleanup = StreamCleanup::new(&url);
    let topic = support::unique_name("reset");
    cleanup.add(&topic);
    nats_support::create_stream(&url, &topic, StorageType::File).await;
    let proxy = TcpProxy::start(&url).await;
    let mut config = nats_support::config(&proxy.url(), &support::unique_name("g"));
    config.nats.ack_wait = ACK_WAIT;
    config.dispatch.shutdown_timeout = Duration::from_secs(10);
    let publisher = EventBus::from_config(nats_support::config(&url, &support::unique_name("pub")))
        .await
        .unwrap();
    let journal = Journal::default();
    let a = EventBus::from_config(config).await.unwrap();
    subscribe(&a, &topic, "a", &journal).await;
    let stop = Arc::new(AtomicBool::new(false));
    let producing = produce(&publisher, &topic, &stop);
    eventually("the bus handles the topic", 20, || journal.by("a") >= 200).await;

    // What the server sends meanwhile is lost with the connection.
    proxy.freeze();
    tokio::time::sleep(BEFORE_RESET).await;
    proxy.cut();
    proxy.thaw();
    let reset = journal.runs().len();
    eventually("records after the reset", 30, || {
        journal.runs().len() >= reset + 1000
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let sent = producing.await.unwrap();
    eventually("every record handled", 60, || journal.distinct() == sent).await;
    a.shutdown().await.unwrap();
    publisher.shutdown().await.unwrap();

    let runs = journal.runs();
    let backwards = backwards(&runs);
    eprintln!(
        "{} records, {} runs; {} runs started after a later record of their key",
        sent.len(),
        runs.len(),
        backwards.len()
    );
    assert!(
        backwards.is_empty(),
        "{} runs started after a later record of their key, first: {:?}",
        backwards.len(),
        &backwards[..backwards.len().min(5)]
    );
}
