//! The Kafka topic strategies: create_only, create_or_update, validate_only.
#![cfg(feature = "kafka")]

mod kafka_support;
mod support;

use std::time::Duration;

use jxt_eventbus::config::{TopicCompression, TopicSettings, TopicStrategy};
use jxt_eventbus::{Delivery, Error, EventBus, Message, SubscribeOptions};
use kafka_support::{config, create_topic, partition_count};
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;

async fn topic_config(brokers: &str, topic: &str, name: &str) -> Option<String> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin");
    let results = admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &AdminOptions::new())
        .await
        .expect("describe");
    let resource = results.into_iter().next().unwrap().expect("resource");
    resource.get(name).and_then(|e| e.value.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_only_creates_missing_topics_with_their_settings() {
    let Some(brokers) = support::kafka_brokers() else {
        return;
    };
    let topic = support::unique_name("created");
    let listed = support::unique_name("listed");
    let mut c = config(&brokers, &support::unique_name("g-create"));
    c.kafka.topic_defaults.partitions = Some(3);
    c.kafka.topics.insert(
        listed.clone(),
        TopicSettings {
            partitions: Some(2),
            retention: Some(Duration::from_secs(3_600)),
            compression: Some(TopicCompression::Lz4),
            ..TopicSettings::default()
        },
    );
    let bus = EventBus::from_config(c).await.expect("bus");
    // Listed topics exist after build.
    assert_eq!(partition_count(&brokers, &listed), 2);
    assert_eq!(
        topic_config(&brokers, &listed, "retention.ms")
            .await
            .as_deref(),
        Some("3600000")
    );
    assert_eq!(
        topic_config(&brokers, &listed, "compression.type")
            .await
            .as_deref(),
        Some("lz4")
    );
    // Others on first use, with the defaults.
    assert_eq!(partition_count(&brokers, &topic), 0);
    bus.publish(&topic, Message::new("x").with_key("k"))
        .await
        .expect("publish creates the topic");
    assert_eq!(partition_count(&brokers, &topic), 3);
    bus.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_or_update_adds_partitions_and_sets_config() {
    let Some(brokers) = support::kafka_brokers() else {
        return;
    };
    let topic = support::unique_name("updated");
    create_topic(&brokers, &topic, 1).await;
    let mut c = config(&brokers, &support::unique_name("g-update"));
    c.kafka.topic_strategy = TopicStrategy::CreateOrUpdate;
    c.kafka.topics.insert(
        topic.clone(),
        TopicSettings {
            partitions: Some(4),
            retention: Some(Duration::from_secs(7_200)),
            ..TopicSettings::default()
        },
    );
    let bus = EventBus::from_config(c).await.expect("bus");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while partition_count(&brokers, &topic) != 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "partitions not added"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        topic_config(&brokers, &topic, "retention.ms")
            .await
            .as_deref(),
        Some("7200000")
    );
    bus.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_only_refuses_missing_or_different_topics() {
    let Some(brokers) = support::kafka_brokers() else {
        return;
    };
    let existing = support::unique_name("existing");
    create_topic(&brokers, &existing, 2).await;
    let missing = support::unique_name("missing");

    let mut c = config(&brokers, &support::unique_name("g-validate"));
    c.kafka.topic_strategy = TopicStrategy::ValidateOnly;
    let bus = EventBus::from_config(c.clone()).await.expect("bus");
    let err = bus.publish(&missing, Message::new("x")).await.unwrap_err();
    assert!(
        matches!(&err, Error::Publish { retryable: false, reason, .. } if reason.contains("validate_only")),
        "{err:?}"
    );
    let err = bus
        .subscribe(
            &missing,
            |_d: Delivery| async { Ok(()) },
            SubscribeOptions::new(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Subscribe { reason, .. } if reason.contains("does not exist")),
        "{err:?}"
    );
    assert_eq!(partition_count(&brokers, &missing), 0, "nothing created");
    bus.publish(&existing, Message::new("x"))
        .await
        .expect("publish to an existing topic");
    bus.shutdown().await.expect("shutdown");

    c.kafka.topics.insert(
        existing.clone(),
        TopicSettings {
            partitions: Some(5),
            ..TopicSettings::default()
        },
    );
    let err = EventBus::from_config(c).await.unwrap_err();
    assert!(
        matches!(&err, Error::Config { field, reason } if field == &format!("kafka.topics.{existing}") && reason.contains("2 partitions, 5 configured")),
        "{err:?}"
    );
}
