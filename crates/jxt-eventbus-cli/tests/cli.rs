//! The `eventbus` binary as a user runs it.

use std::process::Command;

fn eventbus(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_eventbus"))
        .args(args)
        .output()
        .expect("run eventbus")
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
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8(out.stdout).unwrap();
    let v: serde_json::Value = serde_json::from_str(line.trim()).expect("one JSON object");
    for key in [
        "backend",
        "messages",
        "msgs_per_sec",
        "baseline_msgs_per_sec",
        "ratio",
        "p50_us",
        "p99_us",
        "peak_rss_mb",
    ] {
        assert!(v.get(key).is_some(), "missing {key}: {v}");
    }
    assert_eq!(v["messages"], 20000);
    assert_eq!(v["per_key_order_held"], true);
    assert!(v["msgs_per_sec"].as_f64().unwrap() > 0.0);
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
    let out = eventbus(&["config", "--check", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("dispatch.revoke_timeout"), "{stderr}");

    std::fs::write(&path, "group: orders\ndispatch:\n  max_concurrency: 8\n").unwrap();
    let out = eventbus(&["config", "--check", path.to_str().unwrap()]);
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
fn bad_bench_arguments_are_refused() {
    let out = eventbus(&["bench", "--size", "8"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--size"));
}
