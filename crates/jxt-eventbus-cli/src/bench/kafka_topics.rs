//! `eventbus bench --topics 1,10,50,100,200` on Kafka: what topics cost one
//! bus.
//!
//! The scale question is "topics 1 → 200 on one bus": how long a
//! subscription takes as topics pile up, whether adding one revokes anything
//! already owned (it must not: one consumer, cooperative-sticky), what the
//! topics cost while idle, and whether spreading the records over them costs
//! throughput. One bus grows through the steps given:
//!
//! 1. Up front, the largest step's number of topics, each of `--partitions`
//!    partitions, is created (the admin client, in batches), and one
//!    sentinel record is published to each, so a new group finds a record
//!    waiting in every topic.
//! 2. The bus, one group, subscribes the topics one after another up to the
//!    step's count. For each, from the `subscribe` call: when the call
//!    returned, when every partition of the topic was owned (the
//!    dispatcher's stats, polled every 2 ms), and when its sentinel was
//!    handled. Before and after each, the dispatcher's owned partitions: any
//!    partition of an earlier topic that left is named in the report, and
//!    its `revoked_total` is compared over the step.
//! 3. With the step's topics subscribed and nothing to read, the process's
//!    CPU time (`/proc/self/stat`) over `--idle-window`, and its RSS after.
//! 4. `--messages` records, key `k` always on topic `k % topics` (so per-key
//!    order can be checked), published through the bus in windows of
//!    `--window` and handled by the same handlers: msg/s from the first
//!    publish to the last record handled, latency, CPU per record.
//!
//! Each step prints its line as soon as it is measured. Nothing is compared
//! against a raw client here: the figures are the bus's own, read across
//! the steps.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use futures::future::{join_all, try_join_all};
use jxt_eventbus::{Delivery, EventBus, HandlerResult, Message, SubscribeOptions, TopicPartition};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use serde::Serialize;

use super::kafka::bus_config;
use super::{cpu_since, key_of, payload, process_cpu, BenchArgs, BenchBackend, Build, Tally};

/// The key of the one record waiting in each topic before it is subscribed.
const SENTINEL: &[u8] = b"bench-topics-sentinel";
/// How long one topic may take from `subscribe` to its sentinel handled.
const PER_TOPIC: Duration = Duration::from_secs(60);
/// Topics created per admin request.
const CREATE_BATCH: usize = 50;

/// The JSON line of one step of a `--topics` run: the bus with `topics`
/// topics subscribed.
#[derive(Debug, Serialize)]
pub(crate) struct TopicsReport {
    #[serde(flatten)]
    build: Build,
    backend: BenchBackend,
    mode: &'static str,
    /// Topics subscribed on the bus at this step.
    topics: usize,
    partitions: u32,
    messages: u64,
    keys: u64,
    size: usize,
    concurrency: usize,
    /// The number (1-based) of the first topic added in this step; the
    /// arrays below hold the topics added in this step, in order.
    added_from: usize,
    /// Per topic: `subscribe` call → it returned.
    subscribe_ms: Vec<f64>,
    /// Per topic: `subscribe` call → every partition of the topic owned.
    assigned_ms: Vec<f64>,
    /// Per topic: `subscribe` call → its sentinel record handled.
    first_record_ms: Vec<f64>,
    subscribe_ms_p50: f64,
    first_record_ms_p50: f64,
    first_record_ms_max: f64,
    /// Partitions revoked (the dispatcher's `revoked_total`) while this
    /// step's topics were added; must be 0.
    revoked_while_adding: u64,
    /// Partitions of earlier topics no longer owned after a later topic was
    /// added, `topic/partition`; must be empty.
    lost_partitions: Vec<String>,
    /// Partitions owned once this step's topics were subscribed.
    assigned_partitions: usize,
    /// Partitions assigned since the bus started (each topic's once when
    /// nothing was revoked).
    assigned_total: u64,
    idle_window_s: f64,
    /// CPU time of the whole process per second of the idle window.
    idle_cpu_ms_per_s: f64,
    /// Resident set size before the bus started, and at the end of the idle
    /// window.
    rss_mb_before_bus: f64,
    idle_rss_mb: f64,
    /// The throughput point: `messages` records spread over the `topics`,
    /// from the first publish to the last record handled.
    msgs_per_sec: f64,
    /// The same records from the first publish to the last one
    /// acknowledged by the broker: when it is close to `msgs_per_sec`, the
    /// publishing bounds the rate.
    publish_msgs_per_sec: f64,
    p50_us: Option<u64>,
    p99_us: Option<u64>,
    cpu_us_per_msg: Option<f64>,
    /// Partitions revoked while the records flowed; must be 0.
    revoked_while_flowing: u64,
    per_key_order_held: bool,
    peak_rss_mb: f64,
}

impl TopicsReport {
    /// What went wrong, when anything did: revocations or disorder.
    pub(crate) fn failure(&self) -> Option<String> {
        if self.revoked_while_adding > 0 || !self.lost_partitions.is_empty() {
            return Some(format!(
                "adding topics {}..={} revoked {} partition(s) already owned; lost: {:?}",
                self.added_from, self.topics, self.revoked_while_adding, self.lost_partitions
            ));
        }
        if self.revoked_while_flowing > 0 {
            return Some(format!(
                "{} partition(s) were revoked while the records flowed over {} topics",
                self.revoked_while_flowing, self.topics
            ));
        }
        if !self.per_key_order_held {
            return Some("per-key order was violated on the bus".to_string());
        }
        None
    }

    /// The human-readable summary.
    pub(crate) fn print(&self) {
        println!(
            "kafka, {} topic(s) of {} partition(s) on one bus ({} {})",
            self.topics, self.partitions, self.build.version, self.build.commit
        );
        println!(
            "  topics {}..={}: subscribe -> returned: median {:.1} ms; -> first record handled: median {:.1} ms, max {:.1} ms",
            self.added_from,
            self.topics,
            self.subscribe_ms_p50,
            self.first_record_ms_p50,
            self.first_record_ms_max
        );
        println!(
            "  revoked while adding them: {} (lost: {:?}); partitions owned: {}",
            self.revoked_while_adding, self.lost_partitions, self.assigned_partitions
        );
        println!(
            "  idle {:.0} s: {:.1} ms CPU/s, RSS {:.1} MiB (before the bus: {:.1} MiB)",
            self.idle_window_s, self.idle_cpu_ms_per_s, self.idle_rss_mb, self.rss_mb_before_bus
        );
        println!(
            "  {} records over the topics: {:.0} msg/s (published at {:.0}/s), p50 {:?} µs, p99 {:?} µs, {:?} µs CPU/record, revoked {}",
            self.messages,
            self.msgs_per_sec,
            self.publish_msgs_per_sec,
            self.p50_us,
            self.p99_us,
            self.cpu_us_per_msg,
            self.revoked_while_flowing
        );
    }
}

/// When each topic's sentinel was handled.
#[derive(Debug)]
struct Sentinels {
    handled: Vec<OnceLock<Instant>>,
    /// Sentinels handled more than once (a redelivery after a revoke).
    repeats: AtomicU64,
}

/// The tally of the current step's throughput records, swapped per step.
type CurrentTally = Arc<RwLock<Arc<Tally>>>;

/// Runs the measurement: one bus growing through `steps` (strictly
/// increasing topic counts), `emit` called with each step's report as soon
/// as it is measured.
pub(crate) async fn run(
    args: &BenchArgs,
    steps: &[usize],
    emit: impl FnMut(&TopicsReport) -> Result<()>,
) -> Result<()> {
    let n = *steps.last().context("no --topics step")?;
    if args.keys < n as u64 {
        bail!(
            "--keys ({}) must be at least the largest --topics ({n}): each key lives on one topic, and every topic gets records",
            args.keys
        );
    }
    let brokers = args.brokers.clone();
    let run_id = super::run_id();
    let names: Vec<String> = (0..n)
        .map(|i| format!("bench-topics-{run_id}-{i}"))
        .collect();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .context("admin client")?;
    create_topics(&admin, &names, args.partitions).await?;
    let result = measure(args, &brokers, &names, steps, &run_id, emit).await;
    for chunk in names.chunks(CREATE_BATCH) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let _ = admin.delete_topics(&refs, &AdminOptions::new()).await;
    }
    result
}

async fn create_topics(
    admin: &AdminClient<DefaultClientContext>,
    names: &[String],
    partitions: u32,
) -> Result<()> {
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(60)));
    for chunk in names.chunks(CREATE_BATCH) {
        let new: Vec<NewTopic> = chunk
            .iter()
            .map(|t| NewTopic::new(t, partitions as i32, TopicReplication::Fixed(1)))
            .collect();
        for r in admin.create_topics(&new, &options).await? {
            if let Err((name, code)) = r {
                bail!("cannot create topic {name}: {code}");
            }
        }
    }
    Ok(())
}

/// What adding one step's topics measured.
#[derive(Debug, Default)]
struct Added {
    subscribe_ms: Vec<f64>,
    assigned_ms: Vec<f64>,
    first_record_ms: Vec<f64>,
    lost: Vec<String>,
}

async fn measure(
    args: &BenchArgs,
    brokers: &str,
    names: &[String],
    steps: &[usize],
    run_id: &str,
    mut emit: impl FnMut(&TopicsReport) -> Result<()>,
) -> Result<()> {
    let rss_before = rss_mb();
    let bus = EventBus::from_config(bus_config(args, brokers, &format!("bench-topics-{run_id}")))
        .await
        .with_context(|| format!("cannot start the bus on Kafka at {brokers}"))?;
    // One record waiting in every topic before the group reads it.
    try_join_all(
        names
            .iter()
            .map(|t| bus.publish(t, Message::new(SENTINEL.to_vec()).with_key(SENTINEL))),
    )
    .await
    .context("publishing the sentinels")?;
    let sentinels = Arc::new(Sentinels {
        handled: names.iter().map(|_| OnceLock::new()).collect(),
        repeats: AtomicU64::new(0),
    });
    let current: CurrentTally = Arc::new(RwLock::new(Tally::new(0, 1, args.work())));
    let mut next = 0;
    for &n in steps {
        // The dispatcher starts with the first subscription.
        let before = bus.dispatch_stats().await.unwrap_or_default();
        let added_from = next + 1;
        let mut added = Added::default();
        while next < n {
            add_topic(&bus, args, names, next, &sentinels, &current, &mut added).await?;
            next += 1;
        }
        let after_adding = stats(&bus).await?;

        // Idle: these topics subscribed, every sentinel handled, nothing to read.
        let cpu_before = process_cpu();
        tokio::time::sleep(args.idle_window).await;
        let idle_cpu = cpu_since(cpu_before).unwrap_or_default();
        let idle_rss = rss_mb();

        // Throughput: the records spread over the topics, key k on topic k % n.
        let tally = Tally::new(args.messages, args.keys, args.work());
        *current.write().unwrap_or_else(|e| e.into_inner()) = tally.clone();
        let cpu_before = process_cpu();
        tally.start();
        let publishing = Instant::now();
        publish_spread(&bus, &names[..n], args).await?;
        let published = publishing.elapsed();
        let flowed = tally.wait(Duration::from_secs(600)).await?;
        let flow_cpu = cpu_since(cpu_before);
        let end = stats(&bus).await?;

        let sorted = |v: &[f64]| {
            let mut v = v.to_vec();
            v.sort_by(f64::total_cmp);
            v
        };
        let first_sorted = sorted(&added.first_record_ms);
        let report = TopicsReport {
            build: super::BUILD,
            backend: BenchBackend::Kafka,
            mode: "topics",
            topics: n,
            partitions: args.partitions,
            messages: args.messages,
            keys: args.keys,
            size: args.size,
            concurrency: args.concurrency,
            added_from,
            subscribe_ms_p50: round1(super::median(sorted(&added.subscribe_ms))),
            first_record_ms_p50: round1(super::median(first_sorted.clone())),
            first_record_ms_max: first_sorted.last().copied().unwrap_or(0.0),
            subscribe_ms: added.subscribe_ms,
            assigned_ms: added.assigned_ms,
            first_record_ms: added.first_record_ms,
            revoked_while_adding: after_adding.revoked_total - before.revoked_total,
            lost_partitions: added.lost,
            assigned_partitions: after_adding.assigned_partitions,
            assigned_total: after_adding.assigned_total,
            idle_window_s: args.idle_window.as_secs_f64(),
            idle_cpu_ms_per_s: round1(
                idle_cpu.as_secs_f64() * 1e3 / args.idle_window.as_secs_f64().max(1e-9),
            ),
            rss_mb_before_bus: rss_before,
            idle_rss_mb: idle_rss,
            msgs_per_sec: (args.messages as f64 / flowed.elapsed.as_secs_f64()).round(),
            publish_msgs_per_sec: (args.messages as f64 / published.as_secs_f64()).round(),
            p50_us: flowed.p50_us,
            p99_us: flowed.p99_us,
            cpu_us_per_msg: flow_cpu
                .map(|c| (c.as_secs_f64() * 1e6 / args.messages as f64 * 100.0).round() / 100.0),
            revoked_while_flowing: end.revoked_total - after_adding.revoked_total,
            per_key_order_held: flowed.ordered && sentinels.repeats.load(Ordering::Relaxed) == 0,
            peak_rss_mb: super::peak_rss_mb(),
        };
        let failure = report.failure();
        emit(&report)?;
        if let Some(failure) = failure {
            // Leave the bus as it is for a look at its logs; the topics go.
            bail!("{failure}");
        }
    }
    bus.shutdown().await?;
    Ok(())
}

/// Subscribes topic `i` and waits until every partition of it is owned and
/// its sentinel was handled; records the times and any partition of an
/// earlier topic that left meanwhile.
async fn add_topic(
    bus: &EventBus,
    args: &BenchArgs,
    names: &[String],
    i: usize,
    sentinels: &Arc<Sentinels>,
    current: &CurrentTally,
    added: &mut Added,
) -> Result<()> {
    let topic = &names[i];
    let owned_before = owned(&bus.dispatch_stats().await.unwrap_or_default());
    let started = Instant::now();
    bus.subscribe(
        topic,
        handler(i, sentinels, current),
        SubscribeOptions::new(),
    )
    .await
    .with_context(|| format!("subscribing topic {} ({topic})", i + 1))?;
    added.subscribe_ms.push(ms(started.elapsed()));
    let mut assigned_at = None;
    let after = loop {
        let s = stats(bus).await?;
        let own = s
            .partitions
            .iter()
            .filter(|p| *p.partition.topic == **topic)
            .count();
        if assigned_at.is_none() && own == args.partitions as usize {
            assigned_at = Some(started.elapsed());
        }
        if assigned_at.is_some() && sentinels.handled[i].get().is_some() {
            break s;
        }
        if started.elapsed() > PER_TOPIC {
            bail!(
                "topic {} ({topic}): {own} of {} partitions owned and its sentinel {} after {PER_TOPIC:?}",
                i + 1,
                args.partitions,
                if sentinels.handled[i].get().is_some() {
                    "handled"
                } else {
                    "not handled"
                }
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    added.assigned_ms.push(ms(assigned_at.unwrap_or_default()));
    let handled = *sentinels.handled[i].get().expect("checked above");
    added
        .first_record_ms
        .push(ms(handled.duration_since(started)));
    let now_owned = owned(&after);
    added
        .lost
        .extend(owned_before.difference(&now_owned).map(|tp| {
            format!(
                "{}/{} (while adding topic {})",
                tp.topic,
                tp.partition,
                i + 1
            )
        }));
    Ok(())
}

/// The handler of topic `i`: its sentinel marks the topic as read, every
/// other record goes to the throughput tally.
fn handler(
    i: usize,
    sentinels: &Arc<Sentinels>,
    current: &CurrentTally,
) -> impl Fn(Delivery) -> futures::future::Ready<HandlerResult> + Send + Sync + 'static {
    let (sentinels, current) = (sentinels.clone(), current.clone());
    move |d: Delivery| {
        if d.key() == Some(SENTINEL) {
            if sentinels.handled[i].set(Instant::now()).is_err() {
                sentinels.repeats.fetch_add(1, Ordering::Relaxed);
            }
        } else {
            current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .record(d.payload());
        }
        futures::future::ready(Ok(()))
    }
}

/// Publishes `--messages` records, key `k` on topic `k % N`, in windows of
/// `--window` records (each window's topics published concurrently, their
/// acknowledgements awaited together).
async fn publish_spread(bus: &EventBus, names: &[String], args: &BenchArgs) -> Result<()> {
    let n = names.len() as u64;
    let mut from = 0;
    while from < args.messages {
        let to = (from + args.window).min(args.messages);
        let mut per_topic: Vec<Vec<Message>> = (0..n).map(|_| Vec::new()).collect();
        for i in from..to {
            let (k, seq, key) = key_of(i, args.keys);
            per_topic[(k % n) as usize]
                .push(Message::new(payload(k, seq, args.size)).with_key(key));
        }
        let sends = per_topic
            .into_iter()
            .zip(names)
            .filter(|(batch, _)| !batch.is_empty())
            .map(|(batch, topic)| bus.publish_batch(topic, batch));
        for results in join_all(sends).await {
            for r in results? {
                r?;
            }
        }
        from = to;
    }
    Ok(())
}

async fn stats(bus: &EventBus) -> Result<jxt_eventbus::dispatch::DispatchStats> {
    bus.dispatch_stats()
        .await
        .context("the bus's dispatcher is not running")
}

fn owned(s: &jxt_eventbus::dispatch::DispatchStats) -> BTreeSet<TopicPartition> {
    s.partitions.iter().map(|p| p.partition.clone()).collect()
}

fn ms(d: Duration) -> f64 {
    round1(d.as_secs_f64() * 1e3)
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Current resident set size of this process (VmRSS), in MiB.
fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| round1(kb / 1024.0))
}
