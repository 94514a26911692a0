//! The chaos suite's parts: a consumer that runs in a child process (the
//! test binary itself, started on its ignored `chaos_child` test) and logs
//! every handled record with one write, and the [`checker`] that reads the
//! logs.
#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod checker;
#[cfg(feature = "kafka")]
pub mod kafka_cluster;
pub mod resume;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jxt_eventbus::{BusConfig, Delivery, EventBus, Message, SubscribeOptions};

use checker::Line;

/// Tells the test binary it runs as a chaos child; the value is the JSON
/// of [`ChildSpec`].
pub const CHILD_ENV: &str = "EVENTBUS_DEV_CHAOS_CHILD";

/// The ignored test of every chaos test binary that its children run as.
pub const CHILD_TEST: &str = "chaos_child";

/// How much a scenario does: the short form in `scripts/test`, the full
/// form with `EVENTBUS_DEV_CHAOS_FULL=1` (`scripts/chaos`).
pub struct Form {
    pub records: u64,
    pub keys: u64,
    /// SIGKILLs of the kill loop.
    pub kills: u32,
    /// Leaves and joins of the churn test.
    pub churn: u32,
}

/// True for the full form (`EVENTBUS_DEV_CHAOS_FULL=1`).
pub fn full() -> bool {
    std::env::var("EVENTBUS_DEV_CHAOS_FULL").is_ok_and(|v| v == "1")
}

pub fn form() -> Form {
    if full() {
        Form {
            records: 200_000,
            keys: 1_000,
            kills: 20,
            churn: 30,
        }
    } else {
        Form {
            records: 20_000,
            keys: 200,
            kills: 5,
            churn: 6,
        }
    }
}

/// What a child consumes and where it logs.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ChildSpec {
    pub config: BusConfig,
    pub topic: String,
    pub log: PathBuf,
    /// Each handler waits this long (a little work, so kills land mid-record).
    pub handler_delay_us: u64,
    /// Records whose `seq % slow_every == 0`, of keys whose number is a
    /// multiple of 10, take `slow_ms` (0: none): handlers that outlive a
    /// revoke.
    #[serde(default)]
    pub slow_every: u64,
    #[serde(default)]
    pub slow_ms: u64,
}

impl ChildSpec {
    /// A consumer of `topic` whose handlers take 50 µs, none slow.
    pub fn new(config: BusConfig, topic: impl Into<String>, log: PathBuf) -> Self {
        ChildSpec {
            config,
            topic: topic.into(),
            log,
            handler_delay_us: 50,
            slow_every: 0,
            slow_ms: 0,
        }
    }
}

pub fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Starts the test binary `exe` as a child consuming per `spec`; its stdout
/// and stderr go to `spec.log` with `.out` appended.
pub fn spawn_child(exe: &Path, test_name: &str, spec: &ChildSpec) -> Child {
    let out = File::create(spec.log.with_extension("out")).unwrap();
    Command::new(exe)
        .args([
            "--exact",
            test_name,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, serde_json::to_string(spec).unwrap())
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .expect("start the chaos child")
}

/// The child's body: consume until killed. Every record is logged before
/// its handler returns, so a record the bus acknowledged has its line.
pub async fn run_child() {
    let spec: ChildSpec = serde_json::from_str(
        &std::env::var(CHILD_ENV).expect("run by the chaos tests, with EVENTBUS_DEV_CHAOS_CHILD"),
    )
    .expect("child spec");
    // RUST_LOG (inherited from the test) logs the bus to the child's `.out`.
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    // A test that fails (panics) does not kill its children: each one
    // leaves once its parent is gone, instead of consuming on.
    let parent = std::os::unix::process::parent_id();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if std::os::unix::process::parent_id() != parent {
                eprintln!("chaos child: the test is gone; exiting");
                std::process::exit(3);
            }
        }
    });
    // SIGTERM is the graceful leave (SIGKILL needs no handling); caught from
    // the start, so one that arrives while the bus starts waits for it.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    let log: Arc<File> = Arc::new(
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log)
            .expect("open log"),
    );
    let pid = std::process::id();
    let delay = Duration::from_micros(spec.handler_delay_us);
    let (slow_every, slow) = (
        spec.slow_every,
        (spec.slow_ms > 0).then(|| Duration::from_millis(spec.slow_ms)),
    );
    let bus = EventBus::from_config(spec.config.clone())
        .await
        .expect("child bus");
    bus.subscribe(
        &spec.topic,
        move |d: Delivery| {
            let log = log.clone();
            async move {
                let start_ns = now_ns();
                let text = std::str::from_utf8(d.payload()).expect("payload");
                let (key, seq) = text.split_once(' ').expect("payload is 'key seq'");
                let seq: u64 = seq.parse().expect("seq");
                let key_number: u64 = key.trim_start_matches('k').parse().unwrap_or(1);
                let slow = slow.filter(|_| {
                    key_number.is_multiple_of(10) && seq.is_multiple_of(slow_every.max(1))
                });
                if let Some(slow) = slow {
                    tokio::time::sleep(slow).await;
                } else if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let line = Line {
                    key: key.to_string(),
                    seq,
                    partition: d.partition(),
                    offset: d.offset(),
                    pid,
                    start_ns,
                    end_ns: now_ns(),
                };
                // One write per record: a kill never leaves half a line
                // followed by another.
                (&*log)
                    .write_all(line.to_text().as_bytes())
                    .expect("log write");
                Ok(())
            }
        },
        SubscribeOptions::new(),
    )
    .await
    .expect("subscribe");
    eprintln!("chaos child {pid} consuming {}", spec.topic);
    term.recv().await;
    bus.shutdown().await.expect("graceful shutdown");
    eprintln!("chaos child {pid} left the group");
}

/// Asks `child` to leave gracefully (SIGTERM) and waits until it exited.
pub async fn terminate(child: &mut Child, within: Duration) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM failed");
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(
                status.success(),
                "the child's graceful shutdown failed: {status}"
            );
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the child did not shut down within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether the child logging to `log` has handled a record.
pub fn has_handled(log: &Path) -> bool {
    std::fs::metadata(log).is_ok_and(|m| m.len() > 0)
}

/// Every line of every log in `dir` (files ending in `.log`).
pub fn read_logs(dir: &Path) -> Vec<Line> {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "log") {
            let text = std::fs::read_to_string(&path).unwrap();
            lines.extend(checker::parse_log(&text).unwrap_or_else(|e| panic!("{path:?}: {e}")));
        }
    }
    lines
}

/// A small, seeded random source (xorshift64*), so a failing run can be
/// repeated with its seed.
pub struct Rng(u64);

impl Rng {
    pub fn seeded() -> (Self, u64) {
        let seed = std::env::var("EVENTBUS_DEV_CHAOS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| now_ns() as u64 | 1);
        (Rng(seed), seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A duration in `[lo, hi)`.
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = (hi - lo).as_millis() as u64;
        lo + Duration::from_millis(self.next() % span.max(1))
    }
}

/// Waits until every acknowledged record was handled at least once, while
/// the `running` children stay alive.
pub async fn wait_all_handled(
    dir: &std::path::Path,
    sent: &BTreeMap<String, BTreeSet<u64>>,
    running: &mut [&mut std::process::Child],
) {
    let total: usize = sent.values().map(BTreeSet::len).sum();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let lines = read_logs(dir);
        let distinct: BTreeSet<(&str, u64)> =
            lines.iter().map(|l| (l.key.as_str(), l.seq)).collect();
        if distinct.len() >= total {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not every acknowledged record was handled: {}",
            checker::check(sent, &lines)
        );
        for child in running.iter_mut() {
            assert!(
                child.try_wait().unwrap().is_none(),
                "a consumer exited early: see the .out files in {dir:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Publishes `records` records round-robin over `keys` keys, each payload
/// `key seq`, in batches spread over `span`; returns the acknowledged ones.
pub async fn publish(
    bus: EventBus,
    topic: String,
    records: u64,
    keys: u64,
    span: Duration,
) -> BTreeMap<String, BTreeSet<u64>> {
    let mut acked: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    let per_key = records / keys;
    let pause = span / per_key as u32;
    for seq in 0..per_key {
        let batch: Vec<Message> = (0..keys)
            .map(|k| {
                let key = format!("k{k}");
                Message::new(format!("{key} {seq}")).with_key(key)
            })
            .collect();
        // Far past any publish timeout: a batch that takes this long hangs.
        let results =
            tokio::time::timeout(Duration::from_secs(120), bus.publish_batch(&topic, batch))
                .await
                .unwrap_or_else(|_| {
                    panic!("a publish_batch did not resolve within 120 s (seq {seq})")
                })
                .expect("publish batch");
        for (k, r) in results.into_iter().enumerate() {
            // A failed publish is not acknowledged: it is not expected.
            if r.is_ok() {
                acked.entry(format!("k{k}")).or_default().insert(seq);
            }
        }
        tokio::time::sleep(pause).await;
    }
    acked
}

/// The SIGKILL loop on any backend: consumers of `config`'s group in child
/// processes, each killed a random 0.1–3 s after it began handling, while
/// `publisher` publishes to `topic` over the schedule (`per_kill`: about
/// how long a child takes to start handling plus its life); then a last
/// child handles the rest and the checker must find nothing lost, no order
/// violation, no overlap, and records handled by every child. Returns what
/// it saw, for tests that check more (the duplicates' bound).
pub async fn kill_loop(
    backend: &str,
    config: BusConfig,
    topic: &str,
    publisher: &EventBus,
    per_kill: Duration,
) -> KillLoop {
    let form = form();
    let (mut rng, seed) = Rng::seeded();
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let spec = |n: u32| {
        ChildSpec::new(
            config.clone(),
            topic,
            dir.path().join(format!("child-{n}.log")),
        )
    };
    eprintln!(
        "chaos {backend} seed {seed}: {} records, {} keys, {} kills",
        form.records, form.keys, form.kills
    );
    let publishing = tokio::spawn(publish(
        publisher.clone(),
        topic.to_string(),
        form.records,
        form.keys,
        per_kill * form.kills,
    ));
    let started = Instant::now();
    let mut killed_at = BTreeMap::new();
    for n in 0..form.kills {
        let spec = spec(n);
        let mut child = spawn_child(&exe, CHILD_TEST, &spec);
        // A new member gets records only once the group let go of the
        // killed one: the kill lands a random time after it began handling.
        let joined = Instant::now();
        crate::support::wait_for(
            "the child handling records",
            Duration::from_secs(120),
            || has_handled(&spec.log),
        )
        .await;
        let life = rng.between(Duration::from_millis(100), Duration::from_millis(3_000));
        tokio::time::sleep(life).await;
        let pid = child.id();
        child.kill().expect("SIGKILL the child");
        child.wait().unwrap();
        killed_at.insert(pid, now_ns());
        eprintln!(
            "kill {n}: {life:?} after it began handling ({:.1?} after start)",
            joined.elapsed()
        );
    }
    let sent = publishing.await.unwrap();
    // A last consumer finishes the topic.
    let mut last = spawn_child(&exe, CHILD_TEST, &spec(form.kills));
    wait_all_handled(dir.path(), &sent, &mut [&mut last]).await;
    last.kill().unwrap();
    last.wait().unwrap();
    let lines = read_logs(dir.path());
    let report = checker::check(&sent, &lines);
    eprintln!(
        "chaos {backend} kill loop (seed {seed}, {:.0?}): {report}",
        started.elapsed()
    );
    assert!(report.ok(), "{report}");
    assert_eq!(
        report.processes as u32,
        form.kills + 1,
        "every child handled records"
    );
    KillLoop {
        report,
        lines,
        killed_at,
        kills: form.kills,
    }
}

/// What a [`kill_loop`] saw.
pub struct KillLoop {
    pub report: checker::Report,
    pub lines: Vec<Line>,
    /// When each killed child (by pid) was killed, ns since the epoch.
    pub killed_at: BTreeMap<u32, u128>,
    pub kills: u32,
}
