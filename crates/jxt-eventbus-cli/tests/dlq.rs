//! `eventbus dlq` on a real dead letter: a bus's handler refuses a record
//! for good, the binary lists it with its provenance, shows it, replays it
//! dry and for real, and tail finds it back on its topic.

mod common;
#[path = "../../jxt-eventbus/tests/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{eventbus_run, run};
use jxt_eventbus::{BusConfig, Delivery, EventBus, HandlerError, SubscribeOptions};

fn args<'a>(backend: &'a [&'a str], group: &'a str, rest: &'a [&'a str]) -> Vec<&'a str> {
    backend
        .iter()
        .copied()
        .chain(["--group", group])
        .chain(rest.iter().copied())
        .collect()
}

async fn dead_letter_round(backend: &[&str], config: BusConfig) {
    let group = config.group.clone();
    let topic = support::unique_name("cli-dlq");
    for (key, value) in [("ok-1", "fine"), ("bad", "refused"), ("ok-2", "fine")] {
        let r = eventbus_run(&args(
            backend,
            &group,
            &["publish", &topic, value, "--key", key],
        ));
        r.ok();
    }
    let bus = EventBus::from_config(config).await.unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let s = seen.clone();
    bus.subscribe(
        &topic,
        move |d: Delivery| {
            s.fetch_add(1, Ordering::SeqCst);
            let bad = &d.payload()[..] == b"refused";
            async move {
                if bad {
                    Err(HandlerError::permanent("card declined"))
                } else {
                    Ok(())
                }
            }
        },
        SubscribeOptions::new(),
    )
    .await
    .unwrap();
    support::eventually("three records handled", 60, || {
        seen.load(Ordering::SeqCst) >= 3
    })
    .await;
    // Committed past the bad record: its dead letter was written.
    support::wait_settled(&[&bus], Duration::from_secs(60)).await;
    bus.shutdown().await.unwrap();

    let r = eventbus_run(&args(backend, &group, &["--json", "dlq", "list", &topic]));
    r.ok();
    let letters = r.json();
    assert_eq!(letters.len(), 1, "{r}");
    let d = &letters[0];
    assert_eq!(d["key"], "bad", "{r}");
    assert_eq!(d["original_topic"], topic.as_str(), "{r}");
    assert_eq!(d["group"], group.as_str(), "{r}");
    assert_eq!(d["error_kind"], "permanent", "{r}");
    assert!(
        d["error"].as_str().unwrap().contains("card declined"),
        "{r}"
    );
    assert!(d["last_failure"].as_str().is_some(), "{r}");
    let id = d["id"].as_str().unwrap().to_string();

    // Another group has none.
    let r = eventbus_run(&args(
        backend,
        "someone-else",
        &["--json", "dlq", "list", &topic],
    ));
    r.ok();
    assert!(r.stdout.is_empty(), "{r}");

    let r = eventbus_run(&args(
        backend,
        &group,
        &["dlq", "show", &topic, "--id", &id],
    ));
    r.ok();
    assert!(r.stdout.contains("card declined"), "{r}");
    assert!(r.stdout.contains("refused"), "the payload: {r}");

    let r = eventbus_run(&args(
        backend,
        &group,
        &["dlq", "replay", &topic, "--dry-run"],
    ));
    r.ok();
    assert!(r.stdout.contains("dry run: 1 would be replayed"), "{r}");
    let r = eventbus_run(&args(backend, &group, &["--json", "dlq", "list", &topic]));
    assert_eq!(r.json().len(), 1, "a dry run acknowledges nothing: {r}");

    let r = eventbus_run(&args(backend, &group, &["dlq", "replay", &topic]));
    r.ok();
    assert!(
        r.stdout.contains(&format!("replayed 1 to `{topic}`")),
        "{r}"
    );
    let r = eventbus_run(&args(backend, &group, &["--json", "dlq", "list", &topic]));
    r.ok();
    assert!(
        r.stdout.is_empty(),
        "replayed letters are acknowledged: {r}"
    );

    // The replay is on the topic, marked.
    let r = run(common::eventbus().args(args(
        backend,
        &group,
        &["--json", "tail", &topic, "--from", "earliest", "-n", "4"],
    )));
    r.ok();
    let records = r.json();
    let replayed = &records[3];
    assert_eq!(replayed["key"], "bad", "{r}");
    assert!(
        replayed["headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h[0] == "x-dlq-replayed" && h[1] == "1"),
        "{r}"
    );
}

#[cfg(feature = "kafka")]
#[tokio::test(flavor = "multi_thread")]
async fn kafka_dead_letters_are_listed_shown_and_replayed() {
    let Some(brokers) = support::kafka_brokers() else {
        return;
    };
    let mut config = BusConfig {
        backend: jxt_eventbus::BackendKind::Kafka,
        group: support::unique_name("cli-dlq-group"),
        ..BusConfig::default()
    };
    config.kafka.brokers = vec![brokers.clone()];
    dead_letter_round(&["--brokers", &brokers], config).await;
}

#[cfg(feature = "nats")]
#[tokio::test(flavor = "multi_thread")]
async fn nats_dead_letters_are_listed_shown_and_replayed() {
    let Some(url) = support::nats_url() else {
        return;
    };
    let mut config = BusConfig {
        backend: jxt_eventbus::BackendKind::Nats,
        group: support::unique_name("cli-dlq-group"),
        ..BusConfig::default()
    };
    config.nats.servers = vec![url.clone()];
    dead_letter_round(&["--nats-url", &url], config).await;
}
