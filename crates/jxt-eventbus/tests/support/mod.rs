//! Shared helpers for the integration tests that talk to real brokers.
//!
//! Broker addresses come from the environment that `scripts/services up`
//! prints (see docs/development.md):
//!
//! * `EVENTBUS_KAFKA_BROKERS` (default `127.0.0.1:9092`)
//! * `EVENTBUS_DEV_NATS_URL` (default `nats://127.0.0.1:4222`)
//! * `EVENTBUS_DEV_KAFKA_CLUSTER_BROKERS` (no default: the 3-node tests run only
//!   when it is set, e.g. after `scripts/services up --kafka-brokers 3`)
//!
//! When a broker does not answer a TCP connect, a test is skipped with a note
//! on stderr, unless `EVENTBUS_DEV_REQUIRE_BROKERS=1` (as in CI), where it fails.
//!
//! Use it from a test file with `mod support;`.
#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod handled;
pub mod http_get;
pub mod private_kafka;
pub mod secure_kafka;
pub mod workload;

use std::io::Write as _;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Polls `cond` every 10ms until it holds; panics naming `what` after
/// `timeout`.
pub async fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until none of `buses` has records queued or running and each
/// reports no lag: everything delivered finished and is committed, so not
/// even a rebalance can deliver it again. The end condition of an
/// exactly-once count, instead of a sleep.
pub async fn wait_settled(buses: &[&jxt_eventbus::EventBus], timeout: Duration) {
    wait_for("nothing buffered and everything committed", timeout, || {
        futures::executor::block_on(async {
            for bus in buses {
                if bus.dispatch_stats().await.is_some_and(|s| s.buffered > 0) {
                    return false;
                }
                match bus.lag().await {
                    Ok(lags) if lags.iter().all(|l| l.lag() == 0) => {}
                    _ => return false,
                }
            }
            true
        })
    })
    .await;
}

/// Waits until health reports the component `name` unhealthy, polling every
/// 50 ms; fails with the last health seen after `timeout`.
pub async fn unhealthy_component(
    bus: &jxt_eventbus::EventBus,
    name: &str,
    timeout: Duration,
) -> jxt_eventbus::health::ComponentHealth {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let h = bus.health().await;
        if let Some(c) = h.component(name) {
            if c.state == jxt_eventbus::HealthState::Unhealthy {
                return c.clone();
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "health never reported `{name}` unhealthy: {h:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// [`wait_for`] with the limit in seconds.
pub async fn eventually(what: &str, secs: u64, cond: impl FnMut() -> bool) {
    wait_for(what, Duration::from_secs(secs), cond).await;
}

/// The value of one series (`name{labels}`) in an OpenMetrics text, if
/// present.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .map(|v| v.trim().parse().unwrap())
    })
}

/// Kafka bootstrap servers used when `EVENTBUS_KAFKA_BROKERS` is unset.
pub const DEFAULT_KAFKA_BROKERS: &str = "127.0.0.1:9092";
/// NATS URL used when `EVENTBUS_DEV_NATS_URL` is unset.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

const KAFKA_ENV: &str = "EVENTBUS_KAFKA_BROKERS";
const KAFKA_CLUSTER_ENV: &str = "EVENTBUS_DEV_KAFKA_CLUSTER_BROKERS";
const NATS_ENV: &str = "EVENTBUS_DEV_NATS_URL";
const REQUIRE_ENV: &str = "EVENTBUS_DEV_REQUIRE_BROKERS";

/// How long one reachability probe may take per address.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// True when `EVENTBUS_DEV_REQUIRE_BROKERS` asks for a failure instead of a skip.
pub fn brokers_required() -> bool {
    matches!(
        std::env::var(REQUIRE_ENV)
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
            .as_str(),
        "1" | "true" | "yes" | "on"
    )
}

/// Kafka bootstrap servers (`host:port,...`) when at least one answers,
/// else `None` after a skip note (or a panic under
/// `EVENTBUS_DEV_REQUIRE_BROKERS=1`).
pub fn kafka_brokers() -> Option<String> {
    let brokers = env_or(KAFKA_ENV, DEFAULT_KAFKA_BROKERS);
    let endpoints = kafka_endpoints(&brokers);
    match first_unreachable_if_none_answer(&endpoints) {
        Ok(()) => Some(brokers),
        Err(why) => unavailable("Kafka", KAFKA_ENV, &brokers, &why),
    }
}

/// The brokers of a 3-node Kafka cluster from `EVENTBUS_DEV_KAFKA_CLUSTER_BROKERS`,
/// when it is set and every broker answers. Unset: `None` with a skip note
/// (this variable is opt-in, so `EVENTBUS_DEV_REQUIRE_BROKERS` does not apply).
/// Set but a broker is down: `None` or a panic as for [`kafka_brokers`].
pub fn kafka_cluster_brokers() -> Option<String> {
    let brokers = match std::env::var(KAFKA_CLUSTER_ENV) {
        Ok(v) if !v.trim().is_empty() => v.trim().to_owned(),
        _ => {
            skip_note(&format!(
                "{KAFKA_CLUSTER_ENV} is not set (start a cluster with \
                 `scripts/services up --kafka-brokers 3` and eval its output)"
            ));
            return None;
        }
    };
    let endpoints = kafka_endpoints(&brokers);
    if endpoints.is_empty() {
        return unavailable(
            "Kafka cluster",
            KAFKA_CLUSTER_ENV,
            &brokers,
            "no host:port in it",
        );
    }
    for endpoint in &endpoints {
        if let Err(why) = reachable(endpoint) {
            return unavailable("Kafka cluster", KAFKA_CLUSTER_ENV, &brokers, &why);
        }
    }
    Some(brokers)
}

/// The NATS server URL(s) when at least one answers, else `None` after a skip
/// note (or a panic under `EVENTBUS_DEV_REQUIRE_BROKERS=1`).
pub fn nats_url() -> Option<String> {
    let url = env_or(NATS_ENV, DEFAULT_NATS_URL);
    let endpoints = nats_endpoints(&url);
    match first_unreachable_if_none_answer(&endpoints) {
        Ok(()) => Some(url),
        Err(why) => unavailable("NATS", NATS_ENV, &url, &why),
    }
}

/// A name no other test run uses, for topics, streams, subjects and groups:
/// `prefix-<pid>-<time>-<counter>`, only `[A-Za-z0-9_-]` (valid for Kafka
/// topics and group ids and for NATS stream, consumer and subject tokens).
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let prefix: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!(
        "{prefix}-{}-{:x}-{n}",
        std::process::id(),
        nanos % (1u128 << 48)
    )
}

fn env_or(name: &str, default: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v.trim().to_owned(),
        _ => default.to_owned(),
    }
}

/// `host:port` entries of a Kafka bootstrap list (`PLAINTEXT://` etc. allowed).
fn kafka_endpoints(brokers: &str) -> Vec<String> {
    brokers
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.rsplit("://").next().unwrap_or(s).to_owned())
        .collect()
}

/// `host:port` entries of a NATS URL list such as `nats://u:p@h:4222,h2`.
fn nats_endpoints(urls: &str) -> Vec<String> {
    urls.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            let s = s.rsplit("://").next().unwrap_or(s);
            let s = s.rsplit('@').next().unwrap_or(s);
            let s = s.split('/').next().unwrap_or(s);
            let has_port = match s.rfind(':') {
                Some(i) => !s[i..].contains(']'),
                None => false,
            };
            if has_port {
                s.to_owned()
            } else {
                format!("{s}:4222")
            }
        })
        .collect()
}

/// Ok when any endpoint accepts a TCP connection; else the last error.
fn first_unreachable_if_none_answer(endpoints: &[String]) -> Result<(), String> {
    let mut last = String::from("no host:port given");
    for endpoint in endpoints {
        match reachable(endpoint) {
            Ok(()) => return Ok(()),
            Err(why) => last = why,
        }
    }
    Err(last)
}

fn reachable(endpoint: &str) -> Result<(), String> {
    let addrs = endpoint
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {endpoint}: {e}"))?;
    let mut last = format!("{endpoint} resolved to no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(_) => return Ok(()),
            Err(e) if addr.to_string() == endpoint => last = format!("{endpoint}: {e}"),
            Err(e) => last = format!("{endpoint} ({addr}): {e}"),
        }
    }
    Err(last)
}

fn unavailable(what: &str, var: &str, value: &str, why: &str) -> Option<String> {
    if brokers_required() {
        panic!(
            "{REQUIRE_ENV}=1 but {what} is not reachable at {var}={value}: {why}. \
             Start it with `scripts/services up` (or unset {REQUIRE_ENV} to skip)."
        );
    }
    skip_note(&format!(
        "{what} is not reachable at {var}={value} ({why}); start it with \
         `eval \"$(scripts/services up)\"`, or set {REQUIRE_ENV}=1 to fail instead"
    ));
    None
}

/// Print a skip note straight to the process's stderr: the test harness
/// captures `eprintln!` output of passing tests, which would hide the skip.
fn skip_note(why: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED {}: {why}", test_name());
}

/// The running test's name (the test harness names each test's thread).
fn test_name() -> String {
    std::thread::current().name().unwrap_or("test").to_owned()
}
