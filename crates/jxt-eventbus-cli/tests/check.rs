//! `eventbus check` and the rules every command follows: exit codes, one
//! line per error, no backtrace.

mod common;
#[path = "../../jxt-eventbus/tests/support/mod.rs"]
mod support;

use std::time::Duration;

use common::{eventbus, eventbus_run, run};

#[test]
fn memory_check_validates_the_configuration_only() {
    let r = eventbus_run(&["check"]);
    r.ok();
    assert!(r.stdout.contains("config"), "{r}");
    assert!(r.stdout.contains("memory backend: in-process"), "{r}");
}

#[test]
fn a_dead_kafka_broker_fails_the_check_within_its_bound_named_once() {
    let r = eventbus_run(&[
        "--brokers",
        "127.0.0.1:1",
        "check",
        "--timeout",
        "3s",
        "--topic",
        "t1",
    ]);
    r.code(1);
    assert!(r.took < Duration::from_secs(6), "took {:?}: {r}", r.took);
    assert!(r.stdout.contains("FAILED"), "{r}");
    assert!(
        r.stdout
            .contains("no Kafka broker answered at 127.0.0.1:1 within 3s"),
        "{r}"
    );
    assert!(r.stdout.contains("skipped"), "{r}");
    // The brokers named in the report, the error one line, no client log.
    assert_eq!(r.stderr.lines().count(), 1, "{r}");
    assert!(r.stderr.starts_with("eventbus: error: check failed"), "{r}");
}

#[test]
fn a_dead_nats_server_fails_the_check_within_its_bound() {
    let r = eventbus_run(&[
        "--nats-url",
        "nats://127.0.0.1:1",
        "check",
        "--timeout",
        "3s",
    ]);
    r.code(1);
    assert!(r.took < Duration::from_secs(6), "took {:?}: {r}", r.took);
    assert!(r.stdout.contains("nats://127.0.0.1:1"), "{r}");
    assert_eq!(r.stderr.lines().count(), 1, "{r}");
}

#[test]
fn errors_are_one_line_without_a_backtrace() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bus.yaml");
    std::fs::write(&path, "dispatch:\n  max_concurrency: many\n").unwrap();
    let r = run(eventbus()
        .env("RUST_BACKTRACE", "1")
        .env("RUST_LIB_BACKTRACE", "1")
        .args(["--config", path.to_str().unwrap(), "bench"]));
    r.code(1);
    assert_eq!(r.stderr.lines().count(), 1, "{r}");
    assert!(r.stderr.contains("dispatch.max_concurrency"), "{r}");
    assert!(!r.stderr.contains("backtrace"), "{r}");
    assert!(
        !r.stderr.contains("\u{1b}["),
        "no colour off a terminal: {r}"
    );
    // -v: each cause on a line, still no backtrace.
    let r = run(eventbus().env("RUST_BACKTRACE", "1").args([
        "-v",
        "--config",
        path.to_str().unwrap(),
        "check",
    ]));
    r.code(1);
    assert!(!r.stderr.to_lowercase().contains("backtrace"), "{r}");
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &[
            "--brokers",
            "k:9092",
            "--nats-url",
            "nats://n:4222",
            "check",
        ][..],
        &["--backend", "nats", "--brokers", "k:9092", "check"],
        &["bench", "--partitions", "0"],
        &["bench", "--rounds", "0"],
        &["bench", "--messages", "0"],
        &["bench", "--size", "8"],
        &["check", "--timeout", "soon"],
        &["no-such-command"],
        &["--brokers", "k:9092", "demo"],
        &["--config", "bus.yaml", "config"],
        &["tail"],
    ] {
        let r = eventbus_run(args);
        r.code(2);
        assert!(!r.stderr.is_empty(), "{args:?}: {r}");
    }
}

#[test]
fn completions_are_printed_for_each_shell() {
    use predicates::prelude::*;
    for (shell, marker) in [
        ("bash", "_eventbus()"),
        ("zsh", "#compdef eventbus"),
        ("fish", "complete -c eventbus"),
    ] {
        eventbus()
            .args(["completions", shell])
            .assert()
            .success()
            .stdout(predicate::str::contains(marker).and(predicate::str::contains("tail")))
            .stderr(predicate::str::is_empty());
    }
}

#[cfg(feature = "kafka")]
#[test]
fn kafka_check_reports_each_topic() {
    let Some(brokers) = support::kafka_brokers() else {
        return;
    };
    let missing = support::unique_name("check-missing");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bus.yaml");
    std::fs::write(
        &path,
        format!("backend: kafka\nkafka:\n  brokers: [\"{brokers}\"]\n  topic_strategy: validate_only\n  topics:\n    {missing}: {{}}\n"),
    )
    .unwrap();
    let r = run(eventbus().args(["--config", path.to_str().unwrap(), "--json", "check"]));
    r.code(1);
    let items = r.json();
    assert_eq!(items[1]["item"], "brokers", "{r}");
    assert_eq!(items[1]["status"], "ok", "{r}");
    assert_eq!(items[2]["item"], format!("topic {missing}"), "{r}");
    assert_eq!(items[2]["status"], "failed", "{r}");
    assert!(
        items[2]["detail"]
            .as_str()
            .unwrap()
            .contains("validate_only"),
        "{r}"
    );

    let r = eventbus_run(&["--brokers", &brokers, "check", "--topic", &missing]);
    r.ok();
    assert!(r.stdout.contains("would be created"), "{r}");
}

#[cfg(feature = "nats")]
#[test]
fn nats_check_connects_and_finds_jetstream() {
    let Some(url) = support::nats_url() else {
        return;
    };
    let r = eventbus_run(&["--nats-url", &url, "check", "--topic", "orders.check"]);
    r.ok();
    assert!(r.stdout.contains("JetStream available"), "{r}");
}

#[cfg(feature = "kafka")]
#[test]
fn bench_on_a_dead_kafka_broker_fails_within_the_connect_timeout() {
    let r = eventbus_run(&[
        "bench",
        "--brokers",
        "127.0.0.1:1",
        "--rounds",
        "1",
        "--messages",
        "10",
    ]);
    r.code(1);
    // The connect timeout (10 s) and little more, not an admin call's 60 s.
    assert!(r.took < Duration::from_secs(15), "took {:?}: {r}", r.took);
    assert_eq!(r.stderr.lines().count(), 1, "{r}");
    assert!(
        r.stderr.contains("no Kafka broker answered at 127.0.0.1:1"),
        "{r}"
    );
}

/// Every command that talks to Kafka fails within its bound (the 10 s
/// connect timeout) when no broker answers, with the brokers named once.
#[cfg(feature = "kafka")]
#[test]
fn every_broker_command_fails_within_its_bound_on_a_dead_kafka() {
    let commands: [&[&str]; 5] = [
        &["lag", "--topic", "t"],
        &["tail", "t", "-n", "1"],
        &["publish", "t", "v"],
        &["dlq", "list", "t"],
        &["serve", "--listen", "127.0.0.1:0"],
    ];
    let runs: Vec<_> = commands
        .iter()
        .map(|args| {
            let args: Vec<String> = ["--brokers", "127.0.0.1:1"]
                .iter()
                .chain(args.iter())
                .map(|s| s.to_string())
                .collect();
            std::thread::spawn(move || {
                let r = run(eventbus().args(&args));
                (args, r)
            })
        })
        .collect();
    for handle in runs {
        let (args, r) = handle.join().unwrap();
        r.code(1);
        assert!(
            r.took < Duration::from_secs(15),
            "{args:?} took {:?}: {r}",
            r.took
        );
        assert_eq!(r.stderr.lines().count(), 1, "{args:?}: {r}");
        assert_eq!(r.stderr.matches("127.0.0.1:1").count(), 1, "{args:?}: {r}");
    }
}

/// A password in a NATS URL never reaches the output, whatever fails.
#[test]
fn a_password_in_a_nats_url_is_never_printed() {
    let url = "nats://bob:hunter22@127.0.0.1:1";
    for args in [
        &["--nats-url", url, "check", "--timeout", "3s"][..],
        &["--nats-url", url, "--json", "check", "--timeout", "3s"],
        &["--nats-url", url, "publish", "t", "v"],
        &["--nats-url", url, "-vv", "lag", "--timeout", "3s"],
        &[
            "--nats-url",
            url,
            "-v",
            "tail",
            "t",
            "-n",
            "1",
            "--timeout",
            "3s",
        ],
        &["--nats-url", url, "dlq", "list", "t"],
    ] {
        let r = eventbus_run(args);
        r.code(1);
        assert!(
            !r.stdout.contains("hunter22") && !r.stderr.contains("hunter22"),
            "{args:?}: {r}"
        );
        assert!(
            format!("{}{}", r.stdout, r.stderr).contains("bob:***@127.0.0.1:1"),
            "{args:?}: {r}"
        );
    }
}

/// Every command reads the bus's section of a service's own file.
#[test]
fn check_reads_a_section_of_a_service_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("billing.yaml");
    std::fs::write(
        &path,
        "service:\n  port: 8080\neventbus:\n  group: billing\n",
    )
    .unwrap();
    let path = path.to_str().unwrap();
    let r = eventbus_run(&["--config", path, "--section", "eventbus", "check"]);
    r.ok();
    assert!(r.stdout.contains("group billing"), "{r}");
    let r = eventbus_run(&["--section", "eventbus", "check"]);
    r.code(2);
}
