//! The `eventbus` binary as a user runs it.

use std::process::Command;

// The library's broker helpers: the same addresses, and the same skip or
// failure (`EVENTBUS_DEV_REQUIRE_BROKERS=1`) when a broker does not answer.
#[path = "../../jxt-eventbus/tests/support/mod.rs"]
mod support;

mod common;

fn eventbus(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_eventbus"))
        .args(args)
        .output()
        .expect("run eventbus")
}

/// `eventbus config` with no `EVENTBUS_*` variable but `vars`.
fn eventbus_config(args: &[&str], vars: &[(&str, &str)]) -> std::process::Output {
    common::eventbus()
        .arg("config")
        .args(args)
        .envs(vars.iter().copied())
        .output()
        .expect("run eventbus")
}

/// The one JSON line a successful `eventbus bench --json` printed.
fn json_line(out: std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(line.trim()).expect("one JSON object")
}

#[test]
fn demo_exits_zero_and_verifies_order() {
    let out = eventbus(&["demo"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("per-aggregate order verified"), "{stdout}");
    assert!(stdout.contains("1 dead-lettered"), "{stdout}");
    assert!(
        stdout.contains("order-13 v3 (permanent: card declined)"),
        "{stdout}"
    );
}

#[test]
fn memory_bench_prints_one_json_line() {
    let out = eventbus(&[
        "bench",
        "--backend",
        "memory",
        "--messages",
        "20000",
        "--keys",
        "100",
        "--json",
    ]);
    let v = json_line(out);
    for key in [
        "backend",
        "messages",
        "msgs_per_sec",
        "baseline_msgs_per_sec",
        "ratio",
        "p50_us",
        "p99_us",
        "peak_rss_mb",
        "cpu_us_per_msg",
        "baseline_cpu_us_per_msg",
    ] {
        assert!(v.get(key).is_some(), "missing {key}: {v}");
    }
    assert_eq!(v["messages"], 20000);
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert!(v["commit"].as_str().is_some_and(|c| !c.is_empty()), "{v}");
    assert_eq!(v["per_key_order_held"], true);
    assert!(v["msgs_per_sec"].as_f64().unwrap() > 0.0);
}

/// Runs a broker benchmark with a few records and returns its JSON line,
/// its headline checked.
fn broker_bench(backend: &str, env: (&str, String), extra: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_eventbus"))
        .args([
            "bench",
            "--backend",
            backend,
            "--messages",
            "3000",
            "--keys",
            "50",
            "--partitions",
            "2",
            "--rounds",
            "1",
            "--json",
        ])
        .args(extra)
        .env(env.0, env.1)
        .output()
        .expect("run eventbus");
    let v = json_line(out);
    assert_eq!(v["backend"], backend);
    assert_eq!(v["messages"], 3000);
    assert_eq!(v["per_key_order_held"], true, "{v}");
    assert_compared(&v, "");
    v
}

/// A comparison of the JSON line: rounds ran, both sides moved records.
fn assert_compared(v: &serde_json::Value, what: &str) {
    let c = if what.is_empty() { v } else { &v[what] };
    assert_eq!(c["rounds"], 1, "{what}: {v}");
    for key in ["msgs_per_sec", "baseline_msgs_per_sec", "ratio"] {
        let x = c[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{what}.{key}: {v}"));
        assert!(x > 0.0, "{what}.{key} = {x}: {v}");
    }
    assert!(c["baseline"].as_str().is_some_and(|b| !b.is_empty()), "{v}");
}

#[cfg(feature = "nats")]
#[test]
fn nats_bench_compares_with_a_plain_and_a_pinned_consumer_in_either_sharing() {
    let Some(url) = support::nats_url() else {
        return;
    };
    let v = broker_bench("nats", ("EVENTBUS_DEV_NATS_URL", url.clone()), &[]);
    assert_eq!(v["nats_sharing"], "pinned");
    assert_compared(&v, "pinned_end_to_end");
    assert!(v["pinned_end_to_end"]["baseline"]
        .as_str()
        .unwrap()
        .contains("pinned"));
    let v = broker_bench(
        "nats",
        ("EVENTBUS_DEV_NATS_URL", url),
        &["--nats-sharing", "shared"],
    );
    assert_eq!(v["nats_sharing"], "shared");
}

#[cfg(feature = "kafka")]
#[test]
fn kafka_bench_reports_end_to_end_and_the_consumer_path() {
    let Some(brokers) = support::kafka_brokers() else {
        return;
    };
    let v = broker_bench("kafka", ("EVENTBUS_KAFKA_BROKERS", brokers), &[]);
    assert!(v.get("nats_sharing").is_none());
    assert_compared(&v, "keyed_end_to_end");
    assert_compared(&v, "consumer_path");
    // Each consumer-path side's resident set, apart from the other sides.
    let path = &v["consumer_path"];
    for side in ["", "baseline_"] {
        let peak = path[format!("{side}side_peak_rss_mb")].as_f64();
        let growth = path[format!("{side}side_rss_growth_mb")].as_f64();
        assert!(
            matches!((peak, growth), (Some(p), Some(g)) if p > 0.0 && (0.0..=p).contains(&g)),
            "{side}side_peak_rss_mb {peak:?}, {side}side_rss_growth_mb {growth:?}: {path}"
        );
    }
}

/// `--topics`: one bus growing through the steps, one JSON line per step,
/// nothing revoked while topics are added.
#[cfg(feature = "kafka")]
#[test]
fn kafka_topics_bench_grows_one_bus_and_revokes_nothing() {
    let Some(brokers) = support::kafka_brokers() else {
        return;
    };
    let out = Command::new(env!("CARGO_BIN_EXE_eventbus"))
        .args([
            "bench",
            "--backend",
            "kafka",
            "--topics",
            "1,3",
            "--partitions",
            "2",
            "--messages",
            "600",
            "--keys",
            "30",
            "--idle-window",
            "200ms",
            "--json",
        ])
        .env("EVENTBUS_KAFKA_BROKERS", brokers)
        .output()
        .expect("run eventbus");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 2, "one line per step: {lines:?}");
    for (v, (topics, added_from, added)) in lines.iter().zip([(1, 1, 1), (3, 2, 2)]) {
        assert_eq!(v["mode"], "topics", "{v}");
        assert_eq!(v["topics"], topics, "{v}");
        assert_eq!(v["added_from"], added_from, "{v}");
        assert_eq!(v["assigned_partitions"], topics * 2, "{v}");
        assert_eq!(v["revoked_while_adding"], 0, "{v}");
        assert_eq!(v["revoked_while_flowing"], 0, "{v}");
        assert_eq!(v["lost_partitions"], serde_json::json!([]), "{v}");
        assert_eq!(v["per_key_order_held"], true, "{v}");
        for key in ["subscribe_ms", "assigned_ms", "first_record_ms"] {
            let times = v[key].as_array().unwrap_or_else(|| panic!("{key}: {v}"));
            assert_eq!(times.len(), added, "{key}: {v}");
            assert!(times.iter().all(|t| t.as_f64().unwrap() > 0.0), "{v}");
        }
        assert!(v["msgs_per_sec"].as_f64().unwrap() > 0.0, "{v}");
        assert!(v["idle_rss_mb"].as_f64().unwrap() > 0.0, "{v}");
    }
}

#[test]
fn bad_topics_bench_arguments_are_refused() {
    let refused = |args: &[&str], says: &str| {
        let out = eventbus(args);
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    };
    // Usage errors, before anything connects.
    refused(&["bench", "--topics", "0"], "--topics");
    refused(&["bench", "--topics", "3", "--rounds", "2"], "--rounds");
    refused(&["bench", "--idle-window", "1s"], "--topics");
    refused(
        &["bench", "--backend", "kafka", "--topics", "10,5"],
        "must increase",
    );
    refused(&["bench", "--topics", "2"], "Kafka only");
    refused(
        &[
            "bench",
            "--backend",
            "kafka",
            "--topics",
            "10",
            "--keys",
            "5",
        ],
        "--keys (5) must be at least",
    );
    let out = eventbus(&["bench", "--topics", "3", "--rounds", "2"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn config_check_names_the_bad_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bus.yaml");
    std::fs::write(
        &path,
        "dispatch:\n  max_concurrency: 8\n  revoke_timeout: soon\n",
    )
    .unwrap();
    let out = eventbus_config(&["--check", path.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("dispatch.revoke_timeout"), "{stderr}");

    std::fs::write(&path, "group: orders\ndispatch:\n  max_concurrency: 8\n").unwrap();
    let out = eventbus_config(&["--check", path.to_str().unwrap()], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let defaults = eventbus(&["config"]);
    assert!(defaults.status.success());
    assert!(String::from_utf8_lossy(&defaults.stdout).contains("max_concurrency = 64"));
}

#[test]
fn config_check_applies_and_lists_the_environment() {
    let out = eventbus_config(
        &["--check"],
        &[
            ("EVENTBUS_KAFKA_BROKERS", "k1:9092,k2:9092"),
            ("EVENTBUS_DISPATCH__MAX_CONCURRENCY", "8"),
            ("EVENTBUS_DEV_REQUIRE_BROKERS", "1"),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("defaults: valid"), "{stdout}");
    assert!(
        stdout.contains("EVENTBUS_KAFKA_BROKERS sets kafka.brokers"),
        "{stdout}"
    );
    assert!(
        stdout.contains("EVENTBUS_DISPATCH__MAX_CONCURRENCY sets dispatch.max_concurrency"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("k1:9092"),
        "values are not shown: {stdout}"
    );
    assert!(!stdout.contains("EVENTBUS_DEV_"), "{stdout}");

    let out = eventbus_config(&["--check"], &[("EVENTBUS_DISPATCH_MAX_CONCURENCY", "8")]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("EVENTBUS_DISPATCH_MAX_CONCURENCY"),
        "{stderr}"
    );
    assert!(
        stderr.contains("EVENTBUS_DISPATCH__MAX_CONCURRENCY"),
        "{stderr}"
    );
}

#[test]
fn bad_bench_arguments_are_refused() {
    let out = eventbus(&["bench", "--size", "8"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--size"));
    let out = eventbus(&["bench", "--handler-latency", "soon"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--handler-latency"));
}

/// The bus side runs with the loaded configuration: unordered dispatch
/// breaks per-key order, and the order check says so.
#[test]
fn bench_runs_the_bus_with_the_configuration_and_checks_its_order() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("unordered.yaml");
    std::fs::write(&file, "dispatch:\n  ordering: unordered\n").unwrap();
    let out = common::eventbus()
        .args([
            "--config",
            file.to_str().unwrap(),
            "bench",
            "--backend",
            "memory",
        ])
        .args([
            "--messages",
            "20000",
            "--keys",
            "10",
            "--rounds",
            "1",
            "--json",
        ])
        .output()
        .expect("run eventbus");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("per-key order was violated"), "{stderr}");
    let line = String::from_utf8(out.stdout).unwrap();
    let v: serde_json::Value = serde_json::from_str(line.trim()).expect("one JSON object");
    assert_eq!(v["per_key_order_held"], false, "{v}");
}

/// `--only bus` runs the bus side alone and reports its rate and CPU.
#[test]
fn bench_only_runs_one_side() {
    let out = eventbus(&[
        "bench",
        "--backend",
        "memory",
        "--only",
        "bus",
        "--messages",
        "20000",
        "--rounds",
        "2",
        "--json",
    ]);
    let v = json_line(out);
    assert_eq!(v["side"], "bus", "{v}");
    let rates = v["msgs_per_sec_per_round"].as_array().expect("rates");
    assert_eq!(rates.len(), 2, "{v}");
    assert!(rates.iter().all(|r| r.as_f64().unwrap() > 0.0), "{v}");
    let out = eventbus(&["bench", "--backend", "memory", "--only", "keyed"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--only bus"));
}

#[test]
fn handler_work_is_done_on_both_sides_and_reported() {
    let out = eventbus(&[
        "bench",
        "--backend",
        "memory",
        "--messages",
        "400",
        "--keys",
        "100",
        "--rounds",
        "1",
        "--handler-latency",
        "2ms",
        "--handler-cpu",
        "10us",
        "--json",
    ]);
    let v = json_line(out);
    assert_eq!(v["handler_latency_us"], 2000);
    assert_eq!(v["handler_cpu_us"], 10);
    // The baseline handles one record at a time: 400 records of at least
    // 2 ms each cannot go faster than 500/s, the bus's 64 lanes can.
    let baseline = v["baseline_msgs_per_sec"].as_f64().unwrap();
    assert!(baseline <= 500.0, "{v}");
    assert!(v["msgs_per_sec"].as_f64().unwrap() > baseline, "{v}");
}

#[test]
fn config_errors_are_lines_without_backtrace_or_secret() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "dispatch:\n  max_concurrency: 0\nnats:\n  pull_batch: 0\n  servers: [\"nats://bob:918273645@127.0.0.1:4222\"]\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let out = eventbus_config(&["--check", path], &[("RUST_BACKTRACE", "1")]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.to_lowercase().contains("backtrace"), "{stderr}");
    assert!(!stderr.contains("918273645"), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "one line per problem: {stderr}");
    for (line, field) in lines
        .iter()
        .zip(["dispatch.max_concurrency", "nats.pull_batch"])
    {
        assert!(line.contains(field) && line.contains("bad.yaml"), "{line}");
    }
}

#[test]
fn config_check_reads_a_section_of_a_service_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("billing.yaml");
    std::fs::write(
        &file,
        "service:\n  name: billing\n  port: 8080\neventbus:\n  group: billing\n  dispatch:\n    max_concurrency: 8\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let out = eventbus_config(
        &["--check", path, "--section", "eventbus"],
        &[("EVENTBUS_DISPATCH__MAX_BATCH", "4")],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("(section eventbus): valid"), "{stdout}");
    assert!(stdout.contains("\"billing\""), "{stdout}");
    assert!(
        stdout.contains("EVENTBUS_DISPATCH__MAX_BATCH sets dispatch.max_batch"),
        "{stdout}"
    );

    // The whole file is no bus configuration; a missing section is named.
    let out = eventbus_config(&["--check", path], &[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown field"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = eventbus_config(&["--check", path, "--section", "bus"], &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`bus`") && stderr.contains("no such section"),
        "{stderr}"
    );
}
