//! jxt-core's health-check heartbeats: the captured ones (Kafka and NATS)
//! read and re-encode byte for byte, and on Kafka a Rust bus publishes
//! heartbeats of jxt-core's shape to the topic while reading a Go
//! instance's heartbeat from it — started by hand, or configured
//! (`health.jxt_core`).
#![cfg(feature = "kafka")]

mod interop_support;
mod kafka_support;
mod support;

use std::time::Duration;

use jxt_eventbus::health::jxt_core::{JxtCoreHealthOptions, JxtCoreHeartbeat, DEFAULT_TOPIC};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};

/// Every captured heartbeat: (topic, value).
fn captured(dir: &std::path::Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let kafka = interop_support::json(dir, "health/kafka-records.json");
    for topic in [DEFAULT_TOPIC, "jxt-core-kafka-health-check"] {
        for r in kafka[topic].as_array().unwrap() {
            assert!(r["key"].is_null() && r["headers"].as_array().unwrap().is_empty());
            out.push((
                topic.to_string(),
                r["value"]["text"].as_str().unwrap().to_string(),
            ));
        }
    }
    let nats = interop_support::json(dir, "nats/messages.json");
    for m in nats["on_the_wire"].as_array().unwrap() {
        if m["subject"] == DEFAULT_TOPIC {
            out.push((
                DEFAULT_TOPIC.into(),
                m["data"]["text"].as_str().unwrap().into(),
            ));
        }
    }
    assert_eq!(out.len(), 3);
    out
}

#[test]
fn captured_heartbeats_read_and_reencode_byte_for_byte() {
    let Some(dir) = interop_support::fixtures() else {
        return;
    };
    for (topic, value) in captured(&dir) {
        let hb = JxtCoreHeartbeat::from_slice(value.as_bytes()).unwrap();
        assert_eq!(hb.version, "2.0.0");
        assert_eq!(
            hb.source,
            format!("{}-eventbus", hb.event_bus_type),
            "{topic}"
        );
        assert!(hb.instance_id().starts_with(&hb.source));
        assert_eq!(String::from_utf8(hb.to_bytes()).unwrap(), value, "{topic}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rust_bus_and_a_go_instance_see_each_others_heartbeats() {
    let Some(dir) = interop_support::fixtures() else {
        return;
    };
    let Some(brokers) = support::kafka_brokers() else {
        return;
    };
    let topic = support::unique_name("interop-health");
    kafka_support::create_topic(&brokers, &topic, 1).await;
    // A Go instance's heartbeat, as jxt-core writes it: no key, no headers.
    let (_, go_value) = captured(&dir).remove(0);
    let go = JxtCoreHeartbeat::from_slice(go_value.as_bytes()).unwrap();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    producer
        .send(
            FutureRecord::<(), str>::to(&topic).payload(&go_value),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();

    let bus = kafka_support::bus(&brokers, &support::unique_name("interop-health-g")).await;
    let health = bus
        .start_jxt_core_health(JxtCoreHealthOptions::new().topic(&topic))
        .await
        .unwrap();
    let ours = health.instance_id().to_string();
    assert!(ours.starts_with("kafka-eventbus-"), "{ours}");
    support::eventually("the Go heartbeat and our own", 30, || {
        let peers = health.peers();
        peers.iter().any(|p| p.instance_id() == go.instance_id())
            && peers.iter().any(|p| p.instance_id() == ours)
    })
    .await;

    // What a Go reader finds on the topic: our heartbeat in jxt-core's shape.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", support::unique_name("interop-raw"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let record = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no Rust heartbeat on {topic}"
        );
        let Some(r) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let r = r.unwrap();
        let hb = JxtCoreHeartbeat::from_slice(r.payload().unwrap()).unwrap();
        if hb.instance_id() == ours {
            break r.detach();
        }
    };
    assert_eq!(record.key(), None);
    let value: serde_json::Value = serde_json::from_slice(record.payload().unwrap()).unwrap();
    let go_value: serde_json::Value = serde_json::from_str(&go_value).unwrap();
    let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&value), keys(&go_value), "jxt-core's fields");
    assert_eq!(value["version"], "2.0.0");
    assert_eq!(value["metadata"]["checkType"], "periodic");
    drop(health);
    bus.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bus_configured_for_jxt_core_health_publishes_and_reads_heartbeats() {
    let Some(dir) = interop_support::fixtures() else {
        return;
    };
    let Some(brokers) = support::kafka_brokers() else {
        return;
    };
    let topic = support::unique_name("interop-health-cfg");
    kafka_support::create_topic(&brokers, &topic, 1).await;
    let (_, go_value) = captured(&dir).remove(1);
    let go = JxtCoreHeartbeat::from_slice(go_value.as_bytes()).unwrap();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    producer
        .send(
            FutureRecord::<(), str>::to(&topic).payload(&go_value),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();

    let mut config = kafka_support::config(&brokers, &support::unique_name("interop-health-c"));
    config.health.jxt_core.enabled = true;
    config.health.jxt_core.topic = topic.clone();
    config.health.jxt_core.interval = Duration::from_millis(200);
    let bus = jxt_eventbus::EventBus::from_config(config).await.unwrap();
    // Our own heartbeats keep coming: at least two from this bus's instance
    // replace each other, and the Go one stays.
    support::eventually("the Go heartbeat and our own", 30, || {
        let peers = bus.jxt_core_peers();
        peers.iter().any(|p| p.instance_id() == go.instance_id())
            && peers
                .iter()
                .any(|p| p.instance_id().starts_with("kafka-eventbus-") && p != &go)
    })
    .await;
    assert_eq!(bus.jxt_core_peers().len(), 2);
    bus.shutdown().await.unwrap();
}
