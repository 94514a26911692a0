//! Where a Kafka partition starts: `start_from` for a group that never
//! committed, the reset policy (`kafka.consumer.offset_reset`, default
//! `earliest`) for a committed position the log no longer has. A reset is
//! logged and counted; with `start_from: latest` it must not skip the
//! backlog.
//!
//! Needs `scripts/services up` (or `EVENTBUS_KAFKA_BROKERS`).
#![cfg(feature = "kafka")]

mod kafka_support;
mod support;

use std::sync::{Arc, Mutex};

use jxt_eventbus::config::StartFrom;
use jxt_eventbus::{BusConfig, Delivery, EventBus, Message, SubscribeOptions};
use kafka_support::{config, create_topic, TIMEOUT};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use support::metric_value;

/// Commits `offset` for partition 0 of `topic` in `group`, as a consumer
/// that read up to there before the log was truncated would have.
fn commit(brokers: &str, group: &str, topic: &str, offset: i64) {
    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("offsets client");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(offset))
        .unwrap();
    client.assign(&tpl).expect("assign");
    client.commit(&tpl, CommitMode::Sync).expect("commit");
}

/// Subscribes `bus` to `topic`, recording payloads, and publishes a
/// sentinel; returns the payloads other than sentinels handled until one
/// was.
async fn handled_until_sentinel(bus: &EventBus, topic: &str) -> Vec<String> {
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let s = seen.clone();
    bus.subscribe(
        topic,
        move |d: Delivery| {
            let s = s.clone();
            async move {
                s.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(d.payload()).into_owned());
                Ok(())
            }
        },
        SubscribeOptions::new(),
    )
    .await
    .unwrap();
    // With `latest`, the end is looked up after the assignment: a sentinel
    // published before that is skipped, so publish until one is handled.
    let deadline = std::time::Instant::now() + TIMEOUT * 2;
    loop {
        bus.publish(topic, Message::new("sentinel").with_key("k"))
            .await
            .unwrap();
        let round = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while std::time::Instant::now() < round {
            if seen.lock().unwrap().iter().any(|p| p == "sentinel") {
                let all = seen.lock().unwrap().clone();
                return all.into_iter().filter(|p| p != "sentinel").collect();
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(std::time::Instant::now() < deadline, "no sentinel handled");
    }
}

fn resets(bus: &EventBus, topic: &str) -> Option<f64> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &bus.metrics_registry().unwrap()).unwrap();
    metric_value(
        &text,
        &format!(
            r#"eventbus_offset_resets_total{{topic="{topic}",backend="kafka",partition="0"}}"#
        ),
    )
}

async fn publish_backlog(brokers: &str, topic: &str, n: usize) {
    let publisher = EventBus::from_config(config(brokers, &support::unique_name("pub")))
        .await
        .unwrap();
    for i in 0..n {
        publisher
            .publish(topic, Message::new(format!("old-{i}")).with_key("k"))
            .await
            .unwrap();
    }
    publisher.shutdown().await.unwrap();
}

fn latest(brokers: &str, group: &str) -> BusConfig {
    BusConfig {
        start_from: StartFrom::Latest,
        ..config(brokers, group)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_position_resets_to_earliest_even_when_starting_from_latest() {
    let Some(brokers) = support::kafka_brokers() else {
        return;
    };
    let topic = support::unique_name("reset");
    create_topic(&brokers, &topic, 1).await;
    publish_backlog(&brokers, &topic, 5).await;
    // The group's position is past the log end: gone, as after retention
    // removed what it pointed at.
    let group = support::unique_name("reset-group");
    commit(&brokers, &group, &topic, 1_000);

    let bus = EventBus::from_config(latest(&brokers, &group))
        .await
        .unwrap();
    let seen = handled_until_sentinel(&bus, &topic).await;
    assert_eq!(
        seen,
        ["old-0", "old-1", "old-2", "old-3", "old-4"],
        "the reset skipped the backlog"
    );
    assert_eq!(resets(&bus, &topic), Some(1.0), "the reset is counted");
    bus.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_group_starting_from_latest_skips_what_came_before() {
    let Some(brokers) = support::kafka_brokers() else {
        return;
    };
    let topic = support::unique_name("latest");
    create_topic(&brokers, &topic, 1).await;
    publish_backlog(&brokers, &topic, 3).await;
    let bus = EventBus::from_config(latest(&brokers, &support::unique_name("latest-group")))
        .await
        .unwrap();
    let seen = handled_until_sentinel(&bus, &topic).await;
    assert!(seen.is_empty(), "{seen:?}");
    assert_eq!(resets(&bus, &topic), None, "a start is not a reset");
    bus.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_policy_of_latest_skips_only_lost_positions() {
    let Some(brokers) = support::kafka_brokers() else {
        return;
    };
    let topic = support::unique_name("reset-latest");
    create_topic(&brokers, &topic, 1).await;
    publish_backlog(&brokers, &topic, 3).await;
    let skip_lost = |group: &str| {
        let mut c = config(&brokers, group);
        c.kafka.consumer.offset_reset = jxt_eventbus::config::OffsetReset::Latest;
        c
    };

    // A new group still starts where `start_from` (earliest) says.
    let bus = EventBus::from_config(skip_lost(&support::unique_name("fresh")))
        .await
        .unwrap();
    let seen = handled_until_sentinel(&bus, &topic).await;
    assert_eq!(seen, ["old-0", "old-1", "old-2"]);
    bus.shutdown().await.unwrap();

    // A lost position goes to the end, and is counted.
    let group = support::unique_name("lost");
    commit(&brokers, &group, &topic, 1_000);
    let bus = EventBus::from_config(skip_lost(&group)).await.unwrap();
    let seen = handled_until_sentinel(&bus, &topic).await;
    assert!(seen.is_empty(), "{seen:?}");
    assert_eq!(resets(&bus, &topic), Some(1.0));
    bus.shutdown().await.unwrap();
}
