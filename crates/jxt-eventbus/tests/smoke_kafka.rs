//! Smoke tests proving that a real Kafka broker answers: create a topic,
//! produce a record and consume it back through a consumer group.
//!
//! Needs `scripts/services up` (or `EVENTBUS_KAFKA_BROKERS`); the 3-node test
//! also needs `EVENTBUS_DEV_KAFKA_CLUSTER_BROKERS` (`scripts/services up
//! --kafka-brokers 3`). See docs/development.md.
#![cfg(feature = "kafka")]

mod support;

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(30);

fn admin(brokers: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client")
}

async fn create_topic(brokers: &str, topic: &str, partitions: i32, replication: i32) {
    let results = admin(brokers)
        .create_topics(
            &[NewTopic::new(
                topic,
                partitions,
                TopicReplication::Fixed(replication),
            )],
            &AdminOptions::new().operation_timeout(Some(TIMEOUT)),
        )
        .await
        .expect("create_topics request");
    for result in results {
        match result {
            Ok(_) => {}
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                panic!("topic {name} already exists; unique_name() should prevent that")
            }
            Err((name, code)) => panic!("creating topic {name} failed: {code:?}"),
        }
    }
}

async fn delete_topic(brokers: &str, topic: &str) {
    // Best effort: a leftover topic only costs disk in a throw-away broker.
    let _ = admin(brokers)
        .delete_topics(&[topic], &AdminOptions::new())
        .await;
}

fn producer(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer")
}

fn consumer(brokers: &str, group: &str) -> StreamConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "10000")
        .create()
        .expect("consumer")
}

/// Produce one record with key and header, read it back through a consumer
/// group, commit it, and check the committed offset.
async fn roundtrip(brokers: &str, topic: &str) {
    let payload = format!("hello from {topic}");
    let delivery = producer(brokers)
        .send(
            FutureRecord::to(topic)
                .key("key-1")
                .payload(&payload)
                .headers(OwnedHeaders::new().insert(Header {
                    key: "trace",
                    value: Some("abc"),
                })),
            TIMEOUT,
        )
        .await
        .map_err(|(err, _)| err)
        .expect("delivery");
    assert_eq!(delivery.partition, 0);
    assert!(delivery.offset >= 0);

    let group = support::unique_name("smoke-group");
    let consumer = consumer(brokers, &group);
    consumer.subscribe(&[topic]).expect("subscribe");
    let message = tokio::time::timeout(TIMEOUT, consumer.recv())
        .await
        .expect("no record within 30s")
        .expect("consume");
    assert_eq!(message.topic(), topic);
    assert_eq!(message.partition(), delivery.partition);
    assert_eq!(message.offset(), delivery.offset);
    assert_eq!(message.key(), Some(&b"key-1"[..]));
    assert_eq!(message.payload(), Some(payload.as_bytes()));
    let headers = message.headers().expect("headers");
    let trace = headers
        .iter()
        .find(|h| h.key == "trace")
        .expect("trace header");
    assert_eq!(trace.value, Some(&b"abc"[..]));

    consumer
        .commit_message(&message, CommitMode::Sync)
        .expect("commit");
    let mut wanted = TopicPartitionList::new();
    wanted.add_partition(topic, delivery.partition);
    let committed = consumer
        .committed_offsets(wanted, TIMEOUT)
        .expect("committed offsets");
    let elem = committed
        .find_partition(topic, delivery.partition)
        .expect("partition in committed list");
    assert_eq!(elem.offset(), Offset::Offset(delivery.offset + 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_topic_produce_consume_commit() {
    let Some(brokers) = support::kafka_brokers() else {
        return;
    };
    let topic = support::unique_name("smoke-kafka");
    create_topic(&brokers, &topic, 1, 1).await;
    roundtrip(&brokers, &topic).await;
    delete_topic(&brokers, &topic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_topics_are_not_auto_created() {
    let Some(brokers) = support::kafka_brokers() else {
        return;
    };
    let topic = support::unique_name("smoke-missing");
    // A client that asks the broker to auto-create topics on metadata
    // requests: the broker must refuse (auto.create.topics.enable=false).
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("allow.auto.create.topics", "true")
        .create()
        .expect("metadata client");
    for _ in 0..2 {
        let metadata = probe
            .fetch_metadata(Some(&topic), TIMEOUT)
            .expect("metadata");
        let entry = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .expect("topic entry in metadata");
        assert!(
            entry.error().is_some() && entry.partitions().is_empty(),
            "broker created topic {topic} on a metadata request: auto.create.topics.enable must be false"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_cluster_replicated_topic_roundtrip() {
    let Some(brokers) = support::kafka_cluster_brokers() else {
        return;
    };
    let topic = support::unique_name("smoke-rf3");
    create_topic(&brokers, &topic, 1, 3).await;

    // Every replica should be assigned and, on a healthy cluster, in sync.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let metadata = admin(&brokers)
            .inner()
            .fetch_metadata(Some(&topic), TIMEOUT)
            .expect("metadata");
        assert!(
            metadata.brokers().len() >= 3,
            "expected a cluster of at least 3 brokers, metadata lists {}",
            metadata.brokers().len()
        );
        let partition = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .and_then(|t| {
                t.partitions()
                    .first()
                    .map(|p| (p.replicas().len(), p.isr().len()))
            });
        if let Some((replicas, isr)) = partition {
            assert_eq!(replicas, 3, "topic {topic} should have 3 replicas");
            if isr == 3 {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "topic {topic} did not reach 3 in-sync replicas within 30s: {partition:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    roundtrip(&brokers, &topic).await;
    delete_topic(&brokers, &topic).await;
}
