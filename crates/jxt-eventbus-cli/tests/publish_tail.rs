//! `eventbus publish` then `eventbus tail`, as two processes, on the real
//! brokers: what one publishes the other shows, key, headers, envelope and
//! payload included.

mod common;
#[path = "../../jxt-eventbus/tests/support/mod.rs"]
mod support;

use common::{eventbus, eventbus_run, run};

/// Publishes a keyed record with a header, an envelope and three lines to
/// a new topic, then tails them from the start.
fn round_trip(backend: &[&str]) {
    let topic = support::unique_name("cli-tail");
    let with = |args: &[&str]| -> Vec<String> {
        backend.iter().chain(args).map(|s| s.to_string()).collect()
    };
    let r = eventbus_run(
        &with(&[
            "--json",
            "publish",
            &topic,
            r#"{"n":1}"#,
            "--key",
            "order-1",
            "--header",
            "origin=cli",
        ])
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>(),
    );
    r.ok();
    let receipt = &r.json()[0];
    assert_eq!(receipt["topic"], topic.as_str(), "{r}");
    assert!(receipt["offset"].as_i64().is_some(), "{r}");
    let first_id = receipt["id"].as_str().unwrap().to_string();

    let r = eventbus_run(
        &with(&[
            "publish",
            &topic,
            r#"{"total":3}"#,
            "--envelope",
            "--type",
            "OrderPlaced",
            "--aggregate",
            "order-2",
            "--version",
            "4",
        ])
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>(),
    );
    r.ok();
    assert!(r.stdout.contains("order-2"), "{r}");

    let r = run(eventbus()
        .args(with(&["--json", "publish", &topic, "--lines"]))
        .write_stdin("a\nb\n\nc\n"));
    r.ok();
    assert_eq!(r.json().len(), 3, "blank lines are skipped: {r}");

    let r = eventbus_run(
        &with(&["--json", "tail", &topic, "--from", "earliest", "-n", "5"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    r.ok();
    let records = r.json();
    assert_eq!(records.len(), 5, "{r}");
    let first = &records[0];
    assert_eq!(first["id"], first_id.as_str(), "{r}");
    assert_eq!(first["key"], "order-1", "{r}");
    assert_eq!(first["payload"]["n"], 1, "{r}");
    assert!(
        first["headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h[0] == "origin" && h[1] == "cli"),
        "{r}"
    );
    let envelope = &records[1];
    assert_eq!(envelope["key"], "order-2", "{r}");
    assert_eq!(envelope["envelope"]["event_type"], "OrderPlaced", "{r}");
    assert_eq!(envelope["envelope"]["event_version"], 4, "{r}");
    assert_eq!(envelope["payload"]["total"], 3, "{r}");
    let texts: Vec<&str> = records[2..]
        .iter()
        .map(|r| r["payload"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["a", "b", "c"], "{r}");

    // --key filters; the pretty form shows the envelope.
    let r = eventbus_run(
        &with(&[
            "tail", &topic, "--from", "earliest", "-n", "1", "--key", "order-2",
        ])
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>(),
    );
    r.ok();
    assert!(
        r.stdout
            .contains("envelope: OrderPlaced v4 aggregate order-2"),
        "{r}"
    );
    assert!(r.stdout.contains("\"total\": 3"), "{r}");
    assert!(
        !r.stdout.contains('\u{1b}'),
        "no colour off a terminal: {r}"
    );

    // From an offset: the record at it comes first.
    let second = records[3]["offset"].as_i64().unwrap().to_string();
    let r = eventbus_run(
        &with(&["--json", "tail", &topic, "--from", &second, "-n", "1"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    r.ok();
    assert_eq!(r.json()[0]["payload"], "b", "{r}");
    // A duration ago: everything published within it.
    let r = eventbus_run(
        &with(&["--json", "tail", &topic, "--from", "10m", "-n", "5"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    r.ok();
    assert_eq!(r.json().len(), 5, "{r}");
}

#[cfg(feature = "kafka")]
#[test]
fn kafka_publish_then_tail() {
    let Some(brokers) = support::kafka_brokers() else {
        return;
    };
    round_trip(&["--brokers", &brokers]);
}

#[cfg(feature = "nats")]
#[test]
fn nats_publish_then_tail() {
    let Some(url) = support::nats_url() else {
        return;
    };
    round_trip(&["--nats-url", &url]);
}

#[test]
fn memory_refuses_publish_and_tail_as_usage() {
    for args in [&["publish", "t", "v"][..], &["tail", "t"]] {
        let r = eventbus_run(args);
        r.code(2);
        assert!(
            r.stderr.contains("memory backend lives inside one process"),
            "{r}"
        );
    }
}

#[cfg(feature = "kafka")]
#[test]
fn tail_of_a_missing_topic_says_so() {
    let Some(brokers) = support::kafka_brokers() else {
        return;
    };
    let topic = support::unique_name("cli-missing");
    let r = eventbus_run(&["--brokers", &brokers, "tail", &topic, "-n", "1"]);
    r.code(1);
    assert!(r.stderr.contains("does not exist"), "{r}");
}

/// `tail` from the latest position shows what is published after it
/// started: the test publishes until tail has printed a record (it cannot
/// know when tail's reader is in place, so it keeps publishing).
fn follows(backend: &[&str]) {
    let topic = support::unique_name("cli-follow");
    let with = |args: &[&str]| -> Vec<String> {
        backend.iter().chain(args).map(|s| s.to_string()).collect()
    };
    // The topic must exist before tail starts.
    eventbus_run(
        &with(&["publish", &topic, "before"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )
    .ok();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_eventbus"));
    let child = cmd
        .args(with(&["--json", "tail", &topic, "-n", "1"]))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let child = std::sync::Arc::new(std::sync::Mutex::new(Some(child)));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut sent = 0;
    let output = loop {
        sent += 1;
        eventbus_run(
            &with(&["publish", &topic, &format!("after-{sent}")])
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        )
        .ok();
        let mut guard = child.lock().unwrap();
        if guard.as_mut().unwrap().try_wait().unwrap().is_some() {
            break guard.take().unwrap().wait_with_output().unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "tail showed nothing of {sent} records"
        );
    };
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = String::from_utf8(output.stdout).unwrap();
    let record: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    let payload = record["payload"].as_str().unwrap();
    assert!(
        payload.starts_with("after-"),
        "latest skips what was there: {line}"
    );
}

#[cfg(feature = "kafka")]
#[test]
fn kafka_tail_follows_new_records() {
    let Some(brokers) = support::kafka_brokers() else {
        return;
    };
    follows(&["--brokers", &brokers]);
}

#[cfg(feature = "nats")]
#[test]
fn nats_tail_follows_new_records() {
    let Some(url) = support::nats_url() else {
        return;
    };
    follows(&["--nats-url", &url]);
}

/// Keys and payloads are bytes: a binary key shows in hex, a tombstone as
/// such, a null header value as null.
#[cfg(feature = "kafka")]
#[tokio::test(flavor = "multi_thread")]
async fn tail_shows_binary_keys_and_tombstones() {
    let Some(brokers) = support::kafka_brokers() else {
        return;
    };
    let topic = support::unique_name("cli-bytes");
    let mut config = jxt_eventbus::BusConfig {
        backend: jxt_eventbus::BackendKind::Kafka,
        ..jxt_eventbus::BusConfig::default()
    };
    config.kafka.brokers = vec![brokers.clone()];
    let bus = jxt_eventbus::EventBus::from_config(config).await.unwrap();
    let mut with_null = jxt_eventbus::Message::new("x").with_key([0u8, 0xff, 7]);
    with_null.headers.insert_null("empty");
    bus.publish(&topic, with_null).await.unwrap();
    bus.publish(&topic, jxt_eventbus::Message::tombstone().with_key("gone"))
        .await
        .unwrap();
    bus.shutdown().await.unwrap();

    let r = eventbus_run(&[
        "--brokers",
        &brokers,
        "--json",
        "tail",
        &topic,
        "--from",
        "earliest",
        "-n",
        "2",
    ]);
    r.ok();
    let records = r.json();
    assert_eq!(records[0]["key"], serde_json::Value::Null, "{r}");
    assert_eq!(records[0]["key_hex"], "00ff07", "{r}");
    assert!(
        records[0]["headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h[0] == "empty" && h[1].is_null()),
        "{r}"
    );
    assert_eq!(records[1]["key"], "gone", "{r}");
    assert_eq!(records[1]["payload_format"], "tombstone", "{r}");

    let r = eventbus_run(&[
        "--brokers",
        &brokers,
        "tail",
        &topic,
        "--from",
        "earliest",
        "-n",
        "2",
    ]);
    r.ok();
    assert!(r.stdout.contains("key 0x00ff07"), "{r}");
    assert!(r.stdout.contains("(tombstone: no payload)"), "{r}");
}
