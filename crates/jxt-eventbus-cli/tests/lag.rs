//! `eventbus lag` on a group a real bus committed in, on Kafka and NATS:
//! the lag after records arrived behind the group's position, and
//! `--max-lag` exiting 3.

mod common;
#[path = "../../jxt-eventbus/tests/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::eventbus_run;
use jxt_eventbus::{BusConfig, Delivery, EventBus, SubscribeOptions};

/// A group that handled and committed `handled` records of `topic`, then
/// was shut down; then `behind` more were published by the binary.
async fn group_behind(
    backend: &[&str],
    config: BusConfig,
    topic: &str,
    handled: usize,
    behind: usize,
) {
    let publish = |n: usize| {
        let mut args: Vec<String> = backend.iter().map(|s| s.to_string()).collect();
        args.extend(["publish".into(), topic.into(), "--lines".into()]);
        let lines: String = (0..n).map(|i| format!("record {i}\n")).collect();
        let r = common::run(common::eventbus().args(&args).write_stdin(lines));
        r.ok();
    };
    publish(handled);
    let bus = EventBus::from_config(config).await.unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let s = seen.clone();
    bus.subscribe(
        topic,
        move |_d: Delivery| {
            s.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        },
        SubscribeOptions::new(),
    )
    .await
    .unwrap();
    support::eventually("the group handled every record", 60, || {
        seen.load(Ordering::SeqCst) >= handled
    })
    .await;
    support::wait_settled(&[&bus], Duration::from_secs(60)).await;
    bus.shutdown().await.unwrap();
    publish(behind);
}

fn check_lag(backend: &[&str], group: &str, topic: &str, behind: u64) {
    let with = |extra: &[&str]| -> Vec<String> {
        backend
            .iter()
            .chain(["--group", group].iter())
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
    };
    let args = with(&["--json", "lag", "--topic", topic]);
    let r = eventbus_run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    r.ok();
    let lines = r.json();
    let total = lines.last().unwrap();
    assert_eq!(total["total_lag"], behind, "{r}");
    assert_eq!(total["group"], group, "{r}");
    assert!(
        lines[..lines.len() - 1]
            .iter()
            .any(|row| row["oldest_age_secs"].as_f64().is_some()),
        "{r}"
    );

    let over = (behind - 1).to_string();
    let args = with(&["lag", "--topic", topic, "--max-lag", &over]);
    let r = eventbus_run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    r.code(3);
    assert!(r.stdout.contains(&format!("total lag {behind}")), "{r}");
    assert!(r.stderr.contains(&format!("over --max-lag {over}")), "{r}");

    let at = behind.to_string();
    let args = with(&["lag", "--topic", topic, "--max-lag", &at]);
    let r = eventbus_run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    r.ok();
}

#[cfg(feature = "kafka")]
#[tokio::test(flavor = "multi_thread")]
async fn kafka_lag_counts_what_arrived_after_the_commit() {
    let Some(brokers) = support::kafka_brokers() else {
        return;
    };
    let topic = support::unique_name("cli-lag");
    let group = support::unique_name("cli-lag-group");
    let mut config = BusConfig {
        backend: jxt_eventbus::BackendKind::Kafka,
        group: group.clone(),
        ..BusConfig::default()
    };
    config.kafka.brokers = vec![brokers.clone()];
    let backend = ["--brokers", brokers.as_str()];
    group_behind(&backend, config, &topic, 6, 4).await;
    check_lag(&backend, &group, &topic, 4);
    // Without --topic: the topics the group has positions on.
    let r = eventbus_run(&["--brokers", &brokers, "--group", &group, "lag"]);
    r.ok();
    assert!(r.stdout.contains(&topic), "{r}");
}

#[cfg(feature = "nats")]
#[tokio::test(flavor = "multi_thread")]
async fn nats_lag_counts_pending_records_of_the_durable_consumer() {
    let Some(url) = support::nats_url() else {
        return;
    };
    let topic = support::unique_name("cli-lag");
    let group = support::unique_name("cli-lag-group");
    let mut config = BusConfig {
        backend: jxt_eventbus::BackendKind::Nats,
        group: group.clone(),
        ..BusConfig::default()
    };
    config.nats.servers = vec![url.clone()];
    let backend = ["--nats-url", url.as_str()];
    group_behind(&backend, config, &topic, 6, 4).await;
    check_lag(&backend, &group, &topic, 4);
    let r = eventbus_run(&["--nats-url", &url, "--group", &group, "--json", "lag"]);
    r.ok();
    assert!(r.stdout.contains(&topic), "{r}");
}
