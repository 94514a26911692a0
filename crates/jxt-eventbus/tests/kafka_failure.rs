//! Kafka failures that need no broker: an unreachable broker at build time,
//! at publish time and in health, and configuration librdkafka refuses.
#![cfg(feature = "kafka")]

mod kafka_support;
mod support;

use std::time::{Duration, Instant};

use jxt_eventbus::config::TopicStrategy;
use jxt_eventbus::{Error, EventBus, HealthState, Message};

/// Nothing listens on port 1.
const NOWHERE: &str = "127.0.0.1:1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_says_which_brokers_are_unreachable() {
    let mut config = kafka_support::config(NOWHERE, "g-unreachable");
    config.kafka.connect_timeout = Duration::from_secs(2);
    let started = Instant::now();
    let err = EventBus::from_config(config).await.unwrap_err();
    let took = started.elapsed();
    let text = err.to_string();
    assert!(matches!(err, Error::Backend { .. }), "{err:?}");
    assert!(text.contains(NOWHERE), "{text}");
    assert!(text.contains("kafka.brokers"), "{text}");
    assert!(err.is_retryable());
    assert!(took < Duration::from_secs(6), "build took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_times_out_and_health_says_why() {
    for strategy in [TopicStrategy::CreateOnly, TopicStrategy::Skip] {
        let mut config = kafka_support::config(NOWHERE, "g-unreachable");
        config.kafka.verify_connection = false;
        config.kafka.connect_timeout = Duration::from_secs(2);
        config.kafka.producer.message_timeout = Duration::from_secs(2);
        config.kafka.topic_strategy = strategy;
        config.health.check_interval = Duration::from_millis(100);
        config.health.broker_unreachable_after = Duration::from_secs(1);
        let bus = EventBus::from_config(config)
            .await
            .expect("build without checking the brokers");
        let started = Instant::now();
        let err = bus
            .publish("orders", Message::new("x").with_key("k"))
            .await
            .unwrap_err();
        let took = started.elapsed();
        assert!(
            matches!(err, Error::Timeout { after, .. } if after == Duration::from_secs(2)),
            "{strategy:?}: {err:?}"
        );
        assert!(err.is_retryable());
        assert!(
            took >= Duration::from_millis(1_900) && took < Duration::from_secs(5),
            "{strategy:?}: publish took {took:?}"
        );

        // Unreachable from the start: not ready at once, unhealthy once
        // `broker_unreachable_after` has passed.
        let health = bus.health().await;
        assert_ne!(health.overall, HealthState::Healthy, "{health:?}");
        assert!(bus.readiness().await.is_err());
        let deadline = Instant::now() + Duration::from_secs(10);
        let health = loop {
            let h = bus.health().await;
            if h.overall == HealthState::Unhealthy || Instant::now() > deadline {
                break h;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(health.overall, HealthState::Unhealthy, "{health:?}");
        let broker = health.component("broker").expect("broker component");
        assert_eq!(broker.state, HealthState::Unhealthy, "{broker:?}");
        assert!(broker.reason.contains(NOWHERE), "{broker:?}");
        // Nothing to flush but the failed record: shutdown completes.
        bus.shutdown().await.expect("shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_properties_name_their_field() {
    let mut config = kafka_support::config(NOWHERE, "g-config");
    config
        .kafka
        .consumer
        .properties
        .insert("no.such.property".into(), "1".into());
    let err = EventBus::from_config(config).await.unwrap_err();
    assert!(
        matches!(&err, Error::Config { field, .. } if field == "kafka.consumer.properties.no.such.property"),
        "{err:?}"
    );

    let mut config = kafka_support::config(NOWHERE, "g-config");
    config
        .kafka
        .properties
        .insert("enable.auto.offset.store".into(), "true".into());
    let err = EventBus::from_config(config).await.unwrap_err();
    assert!(
        matches!(&err, Error::Config { field, .. } if field == "kafka.properties.enable.auto.offset.store"),
        "{err:?}"
    );

    let mut config = kafka_support::config(NOWHERE, "g-config");
    config
        .kafka
        .producer
        .properties
        .insert("queue.buffering.max.kbytes".into(), "not-a-number".into());
    let err = EventBus::from_config(config).await.unwrap_err();
    assert!(
        matches!(&err, Error::Config { field, .. } if field == "kafka.producer.properties.queue.buffering.max.kbytes"),
        "{err:?}"
    );
}
