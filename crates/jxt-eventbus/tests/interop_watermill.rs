//! Kafka interop with Watermill (watermill-kafka v3, `DefaultMarshaler`), in
//! both directions, with a Go program (`tests/interop/watermill`): a record
//! Watermill publishes is read with its UUID as the message id and its
//! metadata as headers; a record this bus publishes with
//! `kafka.producer.id_header: watermill` is read by a Watermill subscriber
//! with the id as UUID and the headers as metadata, nothing else.
#![cfg(feature = "kafka")]

mod interop_support;
mod kafka_support;
mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use jxt_eventbus::config::IdHeader;
use jxt_eventbus::{Delivery, Envelope, EventBus, Message, SubscribeOptions};
use serde_json::{json, Value};

fn lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn watermill_messages_are_read_with_their_uuid_and_metadata() {
    let Some(brokers) = support::kafka_brokers() else {
        return;
    };
    let Some(go) = interop_support::go::go() else {
        return;
    };
    let topic = support::unique_name("interop-wm-in");
    kafka_support::create_topic(&brokers, &topic, 1).await;
    let sent: Vec<Value> = (0..3)
        .map(|i| {
            json!({
                "uuid": uuid::Uuid::new_v4().to_string(),
                "payload": format!("watermill {i}"),
                "metadata": {"trace": format!("t-{i}"), "X-Tenant-ID": "42", "empty": ""},
            })
        })
        .collect();
    let stdin: String = sent.iter().map(|l| format!("{l}\n")).collect();
    tokio::task::spawn_blocking({
        let (brokers, topic) = (brokers.clone(), topic.clone());
        move || {
            interop_support::go::run(
                &go,
                "watermill",
                &["-mode", "publish", "-brokers", &brokers, "-topic", &topic],
                &stdin,
            )
        }
    })
    .await
    .unwrap();

    let bus = kafka_support::bus(&brokers, &support::unique_name("interop-wm-g")).await;
    let seen: Arc<Mutex<Vec<Message>>> = Arc::default();
    let s = seen.clone();
    bus.subscribe(
        &topic,
        move |d: Delivery| {
            s.lock().unwrap().push(d.into_message());
            std::future::ready(Ok(()))
        },
        SubscribeOptions::new(),
    )
    .await
    .unwrap();
    support::eventually("three Watermill messages", 30, || {
        seen.lock().unwrap().len() == 3
    })
    .await;
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    for (m, l) in seen.iter().zip(&sent) {
        assert_eq!(m.id, l["uuid"].as_str().unwrap());
        assert_eq!(m.payload(), l["payload"].as_str().unwrap().as_bytes());
        let headers: BTreeMap<&str, &str> = m
            .headers
            .iter()
            .map(|(n, v)| (n, std::str::from_utf8(v.unwrap()).unwrap()))
            .collect();
        let metadata: BTreeMap<&str, &str> = l["metadata"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str().unwrap()))
            .collect();
        assert_eq!(
            headers, metadata,
            "metadata as headers, the UUID header taken out"
        );
        assert_eq!(jxt_eventbus::EventInfo::of(m).tenant_id, Some(42));
    }
    bus.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watermill_subscriber_reads_this_bus_with_id_and_headers_intact() {
    let Some(brokers) = support::kafka_brokers() else {
        return;
    };
    let Some(go) = interop_support::go::go() else {
        return;
    };
    let topic = support::unique_name("interop-wm-out");
    kafka_support::create_topic(&brokers, &topic, 1).await;
    let mut config = kafka_support::config(&brokers, &support::unique_name("interop-wm-p"));
    config.kafka.producer.id_header = IdHeader::Watermill;
    let bus = EventBus::from_config(config).await.unwrap();
    let mut expected = Vec::new();
    for i in 0..3 {
        let m = Message::new(format!("rust {i}"))
            .with_header("a", i.to_string())
            .with_header("Content-Type", "text/plain");
        expected.push(json!({
            "uuid": m.id,
            "payload": format!("rust {i}"),
            "metadata": {"a": i.to_string(), "Content-Type": "text/plain"},
        }));
        bus.publish(&topic, m).await.unwrap();
    }
    let env = Envelope::new("order-1", "OrderCreated", 1, &json!({"n": 1}))
        .unwrap()
        .with_tenant_id(7);
    bus.publish_envelope(&topic, &env).await.unwrap();
    expected.push(json!({
        "uuid": env.event_id,
        "payload": String::from_utf8(env.to_bytes().unwrap()).unwrap(),
        "metadata": {
            "X-Event-ID": env.event_id,
            "X-Aggregate-ID": "order-1",
            "X-Event-Version": "1",
            "X-Event-Type": "OrderCreated",
            "X-Tenant-ID": "7",
        },
    }));
    bus.shutdown().await.unwrap();

    let group = support::unique_name("interop-wm-sub");
    let out = tokio::task::spawn_blocking(move || {
        interop_support::go::run(
            &go,
            "watermill",
            &[
                "-mode",
                "subscribe",
                "-brokers",
                &brokers,
                "-topic",
                &topic,
                "-group",
                &group,
                "-count",
                "4",
            ],
            "",
        )
    })
    .await
    .unwrap();
    assert_eq!(lines(&out), expected);
}
