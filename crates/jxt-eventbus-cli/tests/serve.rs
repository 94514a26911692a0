//! `eventbus serve` and `eventbus demo --serve` answer on their endpoints
//! and stop cleanly on SIGTERM.

mod common;
#[path = "../../jxt-eventbus/tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

/// Starts `eventbus ARGS` and returns it with the address it announced on
/// its first line of `serving http://ADDR` output.
fn start(args: &[&str], env: &[(&str, &str)]) -> (Child, SocketAddr) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_eventbus"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("EVENTBUS_") {
            cmd.env_remove(name);
        }
    }
    let mut child = cmd
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("eventbus ended before it served")
            .unwrap();
        if let Some(rest) = line.strip_prefix("serving http://") {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    (child, addr)
}

fn terminate(mut child: Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert_eq!(exit.code(), Some(0), "serve ends cleanly on SIGTERM");
}

#[tokio::test]
async fn serve_answers_health_and_metrics_on_memory() {
    let (child, addr) = start(&["serve", "--listen", "127.0.0.1:0"], &[]);
    let health = support::http_get::get(addr, "/healthz").await;
    assert_eq!(health.status, 200, "{}", health.body);
    let ready = support::http_get::get(addr, "/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    let metrics = support::http_get::get(addr, "/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.body.contains("# EOF"), "{}", metrics.body);
    let status = support::http_get::get(addr, "/status").await;
    assert!(
        status.body.contains("\"backend\":\"memory\""),
        "{}",
        status.body
    );
    let page = support::http_get::get(addr, "/").await;
    assert_eq!(page.status, 200, "the status page");
    terminate(child);
}

#[cfg(feature = "kafka")]
#[tokio::test]
async fn serve_reports_the_kafka_broker_healthy() {
    let Some(brokers) = support::kafka_brokers() else {
        return;
    };
    let (child, addr) = start(
        &["--brokers", &brokers, "serve", "--listen", "127.0.0.1:0"],
        &[],
    );
    let health = support::http_get::get(addr, "/healthz").await;
    assert_eq!(health.status, 200, "{}", health.body);
    let status = support::http_get::get(addr, "/status").await;
    assert!(
        status.body.contains("\"backend\":\"kafka\""),
        "{}",
        status.body
    );
    terminate(child);
}

#[tokio::test]
async fn demo_serve_keeps_the_demo_bus_up() {
    let (child, addr) = start(&["demo", "--serve", "127.0.0.1:0"], &[]);
    let status = support::http_get::get(addr, "/status").await;
    assert_eq!(status.status, 200);
    assert!(status.body.contains("payments"), "{}", status.body);
    let metrics = support::http_get::get(addr, "/metrics").await;
    assert!(
        metrics
            .body
            .contains("eventbus_dead_lettered_total{topic=\"payments\",backend=\"memory\"} 1"),
        "{}",
        metrics.body
    );
    terminate(child);
}
