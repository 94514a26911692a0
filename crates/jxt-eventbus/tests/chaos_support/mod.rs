//! The chaos suite's parts: a consumer that runs in a child process (the
//! test binary itself, started on its ignored `chaos_child` test) and logs
//! every handled record with one write, and the [`checker`] that reads the
//! logs.
#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod checker;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jxt_eventbus::{BusConfig, Delivery, EventBus, SubscribeOptions};

use checker::Line;

/// Tells the test binary it runs as a chaos child; the value is the JSON
/// of [`ChildSpec`].
pub const CHILD_ENV: &str = "EVENTBUS_DEV_CHAOS_CHILD";

/// What a child consumes and where it logs.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ChildSpec {
    pub config: BusConfig,
    pub topic: String,
    pub log: PathBuf,
    /// Each handler waits this long (a little work, so kills land mid-record).
    pub handler_delay_us: u64,
}

fn now_ns() -> u128 {
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
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let line = Line {
                    key: key.to_string(),
                    seq: seq.parse().expect("seq"),
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
