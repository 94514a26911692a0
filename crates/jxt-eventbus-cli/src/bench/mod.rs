//! `eventbus bench`: end-to-end throughput and latency of the bus and of the
//! raw client doing the same hand-off, side by side in one run.
//!
//! Every message carries its send time and its key's sequence number in the
//! first bytes of the payload; both sides' handlers do the same work on it
//! (record latency, check per-key order, count), so the ratio measures what
//! the bus adds and nothing else. No sleeps are measured.
//!
//! Backends run several rounds (`--rounds`, rotating which side goes
//! first), so one disturbed round does not decide the result: the report
//! gives the median rates and the median of the per-round ratios.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::Notify;

mod human;
#[cfg(feature = "kafka")]
mod kafka;
#[cfg(feature = "kafka")]
mod kafka_e2e;
#[cfg(feature = "kafka")]
mod kafka_topics;
mod memory;
#[cfg(feature = "nats")]
mod nats;
mod only;
mod rss;

/// An end-to-end side of the Kafka benchmark, for `--only`.
#[derive(Clone, Copy, Debug, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum OnlySide {
    /// The bus.
    Bus,
    /// rdkafka, handling each record where it polled it.
    InPlace,
    /// rdkafka, keyed by hand.
    Keyed,
}

/// Which backend to measure.
#[derive(Clone, Copy, Debug, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum BenchBackend {
    Memory,
    Kafka,
    Nats,
}

/// Arguments of `eventbus bench`. The backend and where its brokers are
/// come from the global options: `--backend` (default memory), `--brokers`,
/// `--nats-url`, `--config` (its `kafka.brokers` / `nats.servers`), and the
/// rig's variables when none is given.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Backend to measure (from `--backend`, `--brokers`, `--nats-url` or
    /// the configuration).
    #[arg(skip = BenchBackend::Memory)]
    pub(crate) backend: BenchBackend,
    /// Kafka bootstrap brokers (from `--brokers`, the configuration, or
    /// `EVENTBUS_KAFKA_BROKERS`).
    #[arg(skip)]
    pub(crate) brokers: String,
    /// NATS server URL (from `--nats-url`, the configuration, or
    /// `EVENTBUS_DEV_NATS_URL`).
    #[arg(skip)]
    pub(crate) nats_url: String,
    /// Messages per side.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) messages: u64,
    /// Distinct keys (aggregates).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) keys: u64,
    /// Payload size in bytes (at least 24).
    #[arg(long, default_value_t = 256, value_parser = payload_size)]
    pub(crate) size: usize,
    /// Partitions of the benchmark topic.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) partitions: u32,
    /// Handler concurrency of the bus (lanes at once; sets
    /// `dispatch.max_concurrency`), and workers of the keyed consumer
    /// written by hand.
    #[arg(long, default_value_t = 64, value_parser = at_least_one)]
    pub(crate) concurrency: usize,
    /// Publishes in flight before their acknowledgements are awaited, on
    /// both sides (Kafka; the bus through `publish_batch`).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) window: u64,
    /// Measured rounds, each running every side, the first side
    /// rotating; the report gives medians.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) rounds: u32,
    /// NATS: how the bus's group shares a topic (`nats.consumer.sharing`).
    /// `pinned`, the default, keeps per-key order across a group; `shared`
    /// does not, and saves the server the pin header on every record. The
    /// baselines are the same either way.
    #[arg(long, value_enum, default_value = "pinned")]
    pub(crate) nats_sharing: NatsSharingArg,
    /// Each handler, on every side, also waits this long per record (an
    /// async sleep: a handler waiting on a database or an HTTP call), e.g.
    /// `1ms`. Default: none.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    pub(crate) handler_latency: Duration,
    /// Each handler, on every side, also spins this long per record (CPU
    /// work), e.g. `20us`. Default: none.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    pub(crate) handler_cpu: Duration,
    /// The bus hands its handler up to this many records per call
    /// (`subscribe_batch`, 2 batches in flight, 5 ms linger); the
    /// `--handler-latency` wait is then paid once per call (a bulk write),
    /// `--handler-cpu` still per record. The raw sides keep one record per
    /// call. Default: one record per call.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) batch: Option<u64>,
    /// Run only this side, `--rounds` times, and print its rate and CPU with
    /// no comparison: for profiling one side alone (`perf record --
    /// eventbus bench --only bus`, see `scripts/profile`). Kafka: the
    /// end-to-end sides; memory: `bus`.
    #[arg(long, value_enum)]
    pub(crate) only: Option<OnlySide>,
    /// Kafka: instead of the comparison with the raw client, one bus
    /// subscribes topics (each of `--partitions` partitions) one after
    /// another up to each of these counts in turn (e.g. `1,10,50,100,200`,
    /// increasing), and reports per step: per topic the time from
    /// `subscribe` to its partitions owned and its first record handled,
    /// the partitions revoked meanwhile (must be 0), the idle CPU and RSS,
    /// and the throughput of `--messages` records spread over the topics
    /// subscribed (docs/benchmarks-scale.md). One JSON line per step.
    #[arg(long, value_delimiter = ',', value_parser = topic_count,
          conflicts_with_all = ["rounds", "nats_sharing", "batch", "handler_latency", "handler_cpu", "only"])]
    pub(crate) topics: Vec<usize>,
    /// With `--topics`: how long every topic stays subscribed with nothing
    /// to read while the process's CPU time is measured.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s", requires = "topics")]
    pub(crate) idle_window: Duration,
    /// Print one JSON line instead of a table (`--json`).
    #[arg(skip)]
    pub(crate) json: bool,
    /// The loaded configuration (`--config`, `EVENTBUS_*`): the bus sides
    /// start from it, so settings such as `dispatch` or `kafka.consumer`
    /// can be compared on one binary. The benchmark sets the backend, the
    /// brokers, the group and `dispatch.max_concurrency` (`--concurrency`),
    /// and on NATS the pull batch and ack window its raw consumers use too.
    #[arg(skip)]
    pub(crate) config: Box<jxt_eventbus::BusConfig>,
}

impl BenchArgs {
    /// The per-record work of every side's handler.
    pub(crate) fn work(&self) -> Work {
        Work {
            latency: self.handler_latency,
            cpu: self.handler_cpu,
            batch: self.batch.map(|n| n as usize),
        }
    }

    /// The workload a report names.
    pub(crate) fn workload(&self) -> Workload {
        Workload {
            backend: self.backend,
            messages: self.messages,
            keys: self.keys,
            size: self.size,
            partitions: self.partitions,
            concurrency: self.concurrency,
            work: self.work(),
        }
    }
}

/// Work a handler does per record besides the tally, the same on every
/// side: CPU spun, then time waited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Work {
    #[serde(rename = "handler_latency_us", serialize_with = "micros")]
    latency: Duration,
    #[serde(rename = "handler_cpu_us", serialize_with = "micros")]
    cpu: Duration,
    /// Records per call of the bus's handler (`subscribe_batch`).
    #[serde(rename = "bus_batch_records")]
    batch: Option<usize>,
}

fn micros<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_micros() as u64)
}

impl Work {
    /// `, handlers wait 1ms and spin 20µs`, or nothing.
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.latency.is_zero() {
            parts.push(format!("wait {:?}", self.latency));
        }
        if !self.cpu.is_zero() {
            parts.push(format!("spin {:?}", self.cpu));
        }
        let batch = match self.batch {
            Some(n) => format!(", the bus's handler takes up to {n} records per call"),
            None => String::new(),
        };
        if parts.is_empty() {
            batch
        } else {
            format!(", handlers {}{batch}", parts.join(" and "))
        }
    }

    fn is_none(&self) -> bool {
        self.latency.is_zero() && self.cpu.is_zero()
    }

    fn spin(&self) {
        if !self.cpu.is_zero() {
            let until = Instant::now() + self.cpu;
            while Instant::now() < until {
                std::hint::spin_loop();
            }
        }
    }

    /// On a tokio task: spins, then sleeps.
    async fn run(&self) {
        self.spin();
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
    }

    /// A batch of `records` on a tokio task: spins per record, then sleeps
    /// once.
    async fn run_batch(&self, records: usize) {
        for _ in 0..records {
            self.spin();
        }
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
    }

    /// On a plain thread (the in-place loops): spins, then sleeps.
    #[cfg(feature = "kafka")]
    fn run_blocking(&self) {
        self.spin();
        if !self.latency.is_zero() {
            std::thread::sleep(self.latency);
        }
    }
}

fn payload_size(text: &str) -> std::result::Result<usize, String> {
    let n: usize = text.parse().map_err(|e| format!("{e}"))?;
    if n < HEADER {
        return Err(format!(
            "must be at least {HEADER} bytes (send time, key and sequence)"
        ));
    }
    Ok(n)
}

fn topic_count(text: &str) -> std::result::Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n @ 1..=1000) => Ok(n),
        Ok(_) => Err("must be 1 to 1000 topics".to_string()),
        Err(e) => Err(e.to_string()),
    }
}

fn at_least_one(text: &str) -> std::result::Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_string()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// The version and commit of this binary, for the JSON line. The commit
/// comes from the build script (`git rev-parse`), `unknown` outside a
/// checkout.
#[derive(Debug, Serialize)]
struct Build {
    version: &'static str,
    commit: &'static str,
}

const BUILD: Build = Build {
    version: env!("CARGO_PKG_VERSION"),
    commit: env!("JXT_EVENTBUS_GIT_COMMIT"),
};

/// `--nats-sharing`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum NatsSharingArg {
    Pinned,
    Shared,
}

/// Figures of one side.
#[derive(Clone, Debug)]
pub(crate) struct SideResult {
    pub(crate) elapsed: Duration,
    /// Publish → handler latency; `None` where records were published
    /// before the measured interval (it would only measure the backlog).
    pub(crate) p50_us: Option<u64>,
    pub(crate) p99_us: Option<u64>,
    pub(crate) ordered: bool,
    /// CPU time of the whole process while the side ran, when measured.
    pub(crate) cpu: Option<Duration>,
    /// The process's resident set while the side ran, when measured.
    pub(crate) rss: Option<rss::RssSpan>,
}

/// What a backend's benchmark measured.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// (bus, baseline) per round.
    pub(crate) rounds: Vec<(SideResult, SideResult)>,
    /// What the baseline is.
    pub(crate) baseline: &'static str,
    /// Rate at which the bus published the records, when measured apart.
    pub(crate) publish_msgs_per_sec: Option<f64>,
    /// A second comparison reported beside the headline (Kafka: the consumer
    /// path on a filled topic against a hand-written keyed consumer).
    pub(crate) consumer_path: Option<Box<Outcome>>,
    /// The bus against a raw client that also gives the bus's guarantee,
    /// on the same rounds as the headline.
    pub(crate) reference: Option<Reference>,
}

/// A comparison reported beside the headline, under its own name: the bus
/// against the raw client doing what the bus does by default and the
/// headline's baseline leaves out (Kafka `keyed_end_to_end`: keyed parallel
/// handling written by hand; NATS `pinned_end_to_end`: the pinned priority
/// group that keeps per-key order across a group), so the bus's own share
/// of the gap is visible.
#[derive(Debug)]
pub(crate) struct Reference {
    pub(crate) name: &'static str,
    pub(crate) outcome: Box<Outcome>,
}

impl Outcome {
    /// Rounds against one baseline, nothing reported beside them.
    fn new(rounds: Vec<(SideResult, SideResult)>, baseline: &'static str) -> Self {
        Outcome {
            rounds,
            baseline,
            publish_msgs_per_sec: None,
            consumer_path: None,
            reference: None,
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Rates, ratios and CPU of one comparison.
#[derive(Debug, Serialize)]
struct Summary {
    rounds: usize,
    msgs_per_sec: f64,
    baseline_msgs_per_sec: f64,
    ratio: f64,
    ratio_per_round: Vec<f64>,
    msgs_per_sec_per_round: Vec<f64>,
    baseline_msgs_per_sec_per_round: Vec<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cpu_us_per_msg: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    baseline_cpu_us_per_msg: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    publish_msgs_per_sec: Option<f64>,
    /// The largest resident set of the process while the bus's side ran,
    /// over the rounds, MiB (where sampled: the Kafka consumer path).
    #[serde(skip_serializing_if = "Option::is_none")]
    side_peak_rss_mb: Option<f64>,
    /// What the bus's side added to the resident set it started with, at its
    /// peak, the largest over the rounds, MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    side_rss_growth_mb: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    baseline_side_peak_rss_mb: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    baseline_side_rss_growth_mb: Option<f64>,
    baseline: &'static str,
}

impl Summary {
    fn of(outcome: &Outcome, messages: u64) -> Self {
        let rate = |r: &SideResult| messages as f64 / r.elapsed.as_secs_f64();
        let cpu = |r: &SideResult| r.cpu.map(|c| c.as_secs_f64() * 1e6 / messages as f64);
        let rounds = &outcome.rounds;
        let medians = |f: &dyn Fn(&SideResult, &SideResult) -> Option<f64>| {
            let v: Vec<f64> = rounds.iter().filter_map(|(b, r)| f(b, r)).collect();
            (!v.is_empty()).then(|| median(v))
        };
        let ratio_per_round: Vec<f64> = rounds
            .iter()
            .map(|(b, r)| round3(rate(b) / rate(r)))
            .collect();
        Summary {
            rounds: rounds.len(),
            msgs_per_sec: medians(&|b, _| Some(rate(b))).unwrap_or(0.0).round(),
            baseline_msgs_per_sec: medians(&|_, r| Some(rate(r))).unwrap_or(0.0).round(),
            ratio: round3(median(ratio_per_round.clone())),
            ratio_per_round,
            msgs_per_sec_per_round: rounds.iter().map(|(b, _)| rate(b).round()).collect(),
            baseline_msgs_per_sec_per_round: rounds.iter().map(|(_, r)| rate(r).round()).collect(),
            cpu_us_per_msg: medians(&|b, _| cpu(b)).map(|x| (x * 100.0).round() / 100.0),
            baseline_cpu_us_per_msg: medians(&|_, r| cpu(r)).map(|x| (x * 100.0).round() / 100.0),
            publish_msgs_per_sec: outcome.publish_msgs_per_sec.map(f64::round),
            side_peak_rss_mb: largest(rounds.iter().map(|(b, _)| b.rss), rss::RssSpan::peak_mib),
            side_rss_growth_mb: largest(
                rounds.iter().map(|(b, _)| b.rss),
                rss::RssSpan::growth_mib,
            ),
            baseline_side_peak_rss_mb: largest(
                rounds.iter().map(|(_, r)| r.rss),
                rss::RssSpan::peak_mib,
            ),
            baseline_side_rss_growth_mb: largest(
                rounds.iter().map(|(_, r)| r.rss),
                rss::RssSpan::growth_mib,
            ),
            baseline: outcome.baseline,
        }
    }
}

/// The largest `f` of the sampled spans, rounded to 0.1 MiB; `None` when no
/// side was sampled.
fn largest(
    spans: impl Iterator<Item = Option<rss::RssSpan>>,
    f: fn(&rss::RssSpan) -> f64,
) -> Option<f64> {
    spans
        .flatten()
        .map(|s| f(&s))
        .reduce(f64::max)
        .map(|mb| (mb * 10.0).round() / 10.0)
}

/// The workload a JSON line names.
#[derive(Debug, Serialize)]
pub(crate) struct Workload {
    backend: BenchBackend,
    messages: u64,
    keys: u64,
    size: usize,
    partitions: u32,
    /// Lanes of the bus, workers of the keyed-by-hand consumer.
    concurrency: usize,
    #[serde(flatten)]
    work: Work,
}

/// The JSON line.
#[derive(Debug, Serialize)]
struct Report {
    #[serde(flatten)]
    build: Build,
    #[serde(flatten)]
    workload: Workload,
    /// NATS: the bus's `nats.consumer.sharing`.
    #[serde(skip_serializing_if = "Option::is_none")]
    nats_sharing: Option<NatsSharingArg>,
    #[serde(flatten)]
    headline: Summary,
    #[serde(skip_serializing_if = "Option::is_none")]
    p50_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p99_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    baseline_p50_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    baseline_p99_us: Option<u64>,
    /// The [`Reference`], under its name.
    #[serde(flatten)]
    reference: BTreeMap<&'static str, Summary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    consumer_path: Option<Summary>,
    per_key_order_held: bool,
    peak_rss_mb: f64,
}

pub(crate) async fn run(global: &crate::global::Global, mut args: BenchArgs) -> Result<()> {
    let config = global.load()?;
    *args.config = config.clone();
    args.json = global.json;
    args.backend = match config.backend {
        jxt_eventbus::BackendKind::Kafka => BenchBackend::Kafka,
        jxt_eventbus::BackendKind::Nats => BenchBackend::Nats,
        _ => BenchBackend::Memory,
    };
    args.brokers = config.kafka.brokers.join(",");
    let from_rig = global.nats_url.is_empty() && global.config.is_none();
    args.nats_url = match std::env::var("EVENTBUS_DEV_NATS_URL") {
        Ok(url) if from_rig && !url.trim().is_empty() => url,
        _ => config.nats.servers.join(","),
    };
    if !args.topics.is_empty() {
        return run_topics(&args).await;
    }
    if let Some(side) = args.only {
        return only::run(&args, side).await;
    }
    let outcome = match args.backend {
        BenchBackend::Memory => memory::run(&args).await?,
        #[cfg(feature = "kafka")]
        BenchBackend::Kafka => kafka::run(&args).await?,
        #[cfg(feature = "nats")]
        BenchBackend::Nats => nats::run(&args).await?,
        #[allow(unreachable_patterns)]
        other => bail!("the {other:?} benchmark is not compiled in (cargo feature)"),
    };
    let rounds = &outcome.rounds;
    // Latency figures come from the first round.
    let (first_bus, first_raw) = &rounds[0];
    let ordered = |o: &Outcome| o.rounds.iter().all(|(b, _)| b.ordered);
    let report = Report {
        build: BUILD,
        workload: args.workload(),
        nats_sharing: matches!(args.backend, BenchBackend::Nats).then_some(args.nats_sharing),
        headline: Summary::of(&outcome, args.messages),
        p50_us: first_bus.p50_us,
        p99_us: first_bus.p99_us,
        baseline_p50_us: first_raw.p50_us,
        baseline_p99_us: first_raw.p99_us,
        reference: outcome
            .reference
            .iter()
            .map(|r| (r.name, Summary::of(&r.outcome, args.messages)))
            .collect(),
        consumer_path: outcome
            .consumer_path
            .as_deref()
            .map(|o| Summary::of(o, args.messages)),
        per_key_order_held: ordered(&outcome)
            && outcome.consumer_path.as_deref().is_none_or(ordered),
        peak_rss_mb: peak_rss_mb(),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        human::print(&report)?;
    }
    if !report.per_key_order_held {
        bail!("per-key order was violated on the bus side");
    }
    Ok(())
}

/// `--topics 1,10,...`: the topics-on-one-bus measurement
/// ([`kafka_topics`]).
async fn run_topics(args: &BenchArgs) -> Result<()> {
    if let Some(w) = args.topics.windows(2).find(|w| w[0] >= w[1]) {
        bail!(
            "--topics must increase step by step (one bus grows through them): {} then {}",
            w[0],
            w[1]
        );
    }
    if !matches!(args.backend, BenchBackend::Kafka) {
        bail!(
            "--topics measures Kafka only (the backend is {:?}); add --backend kafka",
            args.backend
        );
    }
    #[cfg(feature = "kafka")]
    {
        kafka_topics::run(args, &args.topics, |report| {
            if args.json {
                println!("{}", serde_json::to_string(report)?);
            } else {
                report.print();
            }
            Ok(())
        })
        .await
    }
    #[cfg(not(feature = "kafka"))]
    {
        bail!("the Kafka benchmark is not compiled in (cargo feature `kafka`)")
    }
}

/// Bytes of the payload header: send time (ns), key index, sequence in key.
pub(crate) const HEADER: usize = 24;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// The `i`-th message's key index, sequence within its key, and key string.
pub(crate) fn key_of(i: u64, keys: u64) -> (u64, u64, String) {
    let k = i % keys;
    (k, i / keys, format!("agg-{k}"))
}

/// A payload of `size` bytes stamped with the current time.
pub(crate) fn payload(key: u64, seq: u64, size: usize) -> Vec<u8> {
    let mut p = vec![0u8; size];
    let now = epoch().elapsed().as_nanos() as u64;
    p[0..8].copy_from_slice(&now.to_le_bytes());
    p[8..16].copy_from_slice(&key.to_le_bytes());
    p[16..24].copy_from_slice(&seq.to_le_bytes());
    p
}

/// What every handler does with a payload, on both sides: latency, per-key
/// order and the completion count.
///
/// Its state is split by key into shards, each on cache lines of its own:
/// handlers of different keys on different threads then touch different
/// memory, as real handlers of different aggregates do, so a side that
/// handles keys in parallel pays no contention for the tally itself (one
/// shared counter and histogram lock cost it a cache-line transfer per
/// record, which a side handling everything on one task never pays).
#[derive(Debug)]
pub(crate) struct Tally {
    work: Work,
    expected: u64,
    shards: Vec<Shard>,
    /// Shards that have not counted all their records yet.
    shards_left: AtomicU64,
    finished: Notify,
    started: OnceLock<Instant>,
    ended: OnceLock<Instant>,
}

/// Keys `k` with `k % SHARDS == i` are counted in shard `i`.
const SHARDS: u64 = 64;

#[derive(Debug)]
#[repr(align(128))]
struct Shard {
    /// Records of this shard's keys among the `expected`.
    expected: u64,
    done: AtomicU64,
    /// The next sequence number per key of the shard (index `k / SHARDS`).
    next_seq: Vec<AtomicU64>,
    disorder: AtomicU64,
    latency: Mutex<Histogram<u64>>,
}

impl Tally {
    pub(crate) fn new(expected: u64, keys: u64, work: Work) -> Arc<Self> {
        // Message i has key i % keys: key k gets the i < expected with that rest.
        let per_key = |k: u64| expected / keys + u64::from(k < expected % keys);
        let shards: Vec<Shard> = (0..SHARDS)
            .map(|i| Shard {
                expected: (i..keys).step_by(SHARDS as usize).map(per_key).sum(),
                done: AtomicU64::new(0),
                next_seq: (i..keys)
                    .step_by(SHARDS as usize)
                    .map(|_| AtomicU64::new(0))
                    .collect(),
                disorder: AtomicU64::new(0),
                latency: Mutex::new(
                    Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds"),
                ),
            })
            .collect();
        let left = shards.iter().filter(|s| s.expected > 0).count() as u64;
        Arc::new(Tally {
            work,
            expected,
            shards,
            shards_left: AtomicU64::new(left),
            finished: Notify::new(),
            started: OnceLock::new(),
            ended: OnceLock::new(),
        })
    }

    fn done(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.done.load(Ordering::Acquire))
            .sum()
    }

    /// Marks the start of the measured interval (first publish). Without
    /// it the interval starts at the first handled record.
    pub(crate) fn start(&self) {
        let _ = self.started.set(Instant::now());
    }

    /// Handles one payload on a tokio task: the work, then the tally.
    pub(crate) async fn handle(&self, payload: &[u8]) {
        self.work.run().await;
        self.record(payload);
    }

    /// Handles one payload on a plain thread.
    #[cfg(feature = "kafka")]
    pub(crate) fn handle_blocking(&self, payload: &[u8]) {
        self.work.run_blocking();
        self.record(payload);
    }

    /// Records one handled payload.
    pub(crate) fn record(&self, payload: &[u8]) {
        if self.started.get().is_none() {
            self.start();
        }
        let word =
            |r: std::ops::Range<usize>| u64::from_le_bytes(payload[r].try_into().expect("8 bytes"));
        let sent = word(0..8);
        let (key, seq) = (word(8..16), word(16..24));
        let now = epoch().elapsed().as_nanos() as u64;
        let micros = now.saturating_sub(sent) / 1_000;
        let shard = &self.shards[(key % SHARDS) as usize];
        shard
            .latency
            .lock()
            .expect("histogram lock")
            .saturating_record(micros.max(1));
        // Each key must arrive as 0, 1, 2, ...; redeliveries repeat a lower seq.
        let slot = &shard.next_seq[(key / SHARDS) as usize];
        let expect = slot.load(Ordering::Acquire);
        if seq == expect {
            slot.store(seq + 1, Ordering::Release);
        } else if seq > expect {
            shard.disorder.fetch_add(1, Ordering::Relaxed);
        }
        if shard.done.fetch_add(1, Ordering::AcqRel) + 1 == shard.expected
            && self.shards_left.fetch_sub(1, Ordering::AcqRel) == 1
        {
            let _ = self.ended.set(Instant::now());
            self.finished.notify_one();
        }
    }

    /// Subscribes the tallying handler to `topic` on `bus`: every side's
    /// bus runs the same handler.
    pub(crate) async fn subscribe(
        self: &Arc<Self>,
        bus: &jxt_eventbus::EventBus,
        topic: &str,
    ) -> Result<()> {
        use futures::future::Either;
        use jxt_eventbus::{BatchOptions, Delivery, HandlerResult, SubscribeOptions};
        let t = self.clone();
        if let Some(n) = self.work.batch {
            let options = BatchOptions::new(n).linger(Duration::from_millis(5));
            bus.subscribe_batch(
                topic,
                move |batch: Vec<Delivery>| {
                    let t = t.clone();
                    async move {
                        // One wait per call (a bulk write), CPU per record.
                        t.work.run_batch(batch.len()).await;
                        for d in &batch {
                            t.record(d.payload());
                        }
                        Ok(())
                    }
                },
                options,
                SubscribeOptions::new(),
            )
            .await?;
            return Ok(());
        }
        bus.subscribe(
            topic,
            move |d: Delivery| {
                if t.work.is_none() {
                    // No work: no future to allocate, as a trivial handler.
                    t.record(d.payload());
                    return Either::Left(std::future::ready(HandlerResult::Ok(())));
                }
                let t = t.clone();
                Either::Right(async move {
                    t.handle(d.payload()).await;
                    Ok(())
                })
            },
            SubscribeOptions::new(),
        )
        .await?;
        Ok(())
    }

    /// Waits until every message was handled, or fails after `timeout`.
    pub(crate) async fn wait(&self, timeout: Duration) -> Result<SideResult> {
        // `ended` rather than the count: the handler that counts the last
        // record sets it a moment after counting.
        let all = async {
            while self.ended.get().is_none() {
                let _ =
                    tokio::time::timeout(Duration::from_millis(50), self.finished.notified()).await;
            }
        };
        if tokio::time::timeout(timeout, all).await.is_err() {
            bail!(
                "only {} of {} messages were handled within {timeout:?}",
                self.done(),
                self.expected
            );
        }
        let elapsed = match (self.started.get(), self.ended.get()) {
            (Some(s), Some(e)) => e.duration_since(*s),
            _ => Duration::ZERO,
        };
        let mut h = Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds");
        for shard in &self.shards {
            h.add(&*shard.latency.lock().expect("histogram lock"))
                .expect("same bounds");
        }
        let disorder: u64 = self
            .shards
            .iter()
            .map(|s| s.disorder.load(Ordering::Relaxed))
            .sum();
        Ok(SideResult {
            elapsed,
            p50_us: Some(h.value_at_quantile(0.5)),
            p99_us: Some(h.value_at_quantile(0.99)),
            ordered: disorder == 0,
            cpu: None,
            rss: None,
        })
    }
}

/// The bus side of the broker benchmarks: subscribe a tallying handler, then
/// publish `--messages` in pipelined windows of `window` (each window's
/// acknowledgements awaited together) and wait until every message was handled.
#[cfg(any(feature = "kafka", feature = "nats"))]
pub(crate) async fn bus_side_windowed(
    bus: jxt_eventbus::EventBus,
    topic: &str,
    args: &BenchArgs,
    window: u64,
) -> Result<SideResult> {
    let tally = Tally::new(args.messages, args.keys, args.work());
    tally.subscribe(&bus, topic).await?;
    tally.start();
    publish_windows(&bus, topic, args, window).await?;
    let result = tally.wait(Duration::from_secs(600)).await?;
    bus.shutdown().await?;
    Ok(result)
}

/// Publishes `--messages` records through `bus` in pipelined windows of
/// `window` (each window's acknowledgements awaited together).
#[cfg(any(feature = "kafka", feature = "nats"))]
pub(crate) async fn publish_windows(
    bus: &jxt_eventbus::EventBus,
    topic: &str,
    args: &BenchArgs,
    window: u64,
) -> Result<()> {
    let mut from = 0;
    while from < args.messages {
        let to = (from + window.max(1)).min(args.messages);
        let batch = (from..to)
            .map(|i| {
                let (k, seq, key) = key_of(i, args.keys);
                jxt_eventbus::Message::new(payload(k, seq, args.size)).with_key(key)
            })
            .collect();
        for r in bus.publish_batch(topic, batch).await? {
            r?;
        }
        from = to;
    }
    Ok(())
}

/// A name part unique to this run: process id and start time.
#[cfg(any(feature = "kafka", feature = "nats"))]
pub(crate) fn run_id() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    format!(
        "{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    )
}

/// CPU time used since `before` (see [`process_cpu`]).
pub(crate) fn cpu_since(before: Option<Duration>) -> Option<Duration> {
    Some(process_cpu()?.saturating_sub(before?))
}

/// CPU time (user + system) this process used so far, from
/// `/proc/self/stat` (clock ticks of 10 ms).
pub(crate) fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the line.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut f = rest.split_whitespace().skip(11);
    let ticks: u64 = f.next()?.parse::<u64>().ok()? + f.next()?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// Peak resident set size of this process (VmHWM), in MiB.
pub(crate) fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| (kb / 1024.0 * 10.0).round() / 10.0)
}
