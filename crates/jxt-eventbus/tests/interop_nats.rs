//! NATS interop with jxt-core: its `PERSISTENT_STREAM` (subjects `["*"]`)
//! and its durable `persistent-consumer-unified`, created with the very
//! JetStream API requests jxt-core sent (`nats/jetstream-api-requests.json`),
//! its messages published as it publishes them (subject = topic, envelope
//! bytes, no headers). A Rust bus consumes them with its own durable next to
//! jxt-core's, and a Go consumer reading jxt-core's durable the way jxt-core
//! does (nats.go, `tests/interop/jxtcorenats`) reads what the Rust bus
//! publishes. Both see each other's health-check heartbeats.
//!
//! Runs its own nats-server: a stream with subjects `["*"]` on the shared
//! server would capture other tests' subjects.
#![cfg(feature = "nats")]

mod interop_support;
mod nats_support;
mod support;

use std::sync::{Arc, Mutex};

use futures::StreamExt as _;
use jxt_eventbus::health::jxt_core::{JxtCoreHealthOptions, JxtCoreHeartbeat, DEFAULT_TOPIC};
use jxt_eventbus::{Delivery, Envelope, EventBus, SubscribeOptions};
use nats_support::server::NatsServer;
use serde_json::Value;

const TOPIC: &str = "interop_orders";

#[tokio::test(flavor = "multi_thread")]
async fn a_rust_bus_shares_jxt_core_persistent_stream_both_ways() {
    let Some(dir) = interop_support::fixtures() else {
        return;
    };
    let Some(go) = interop_support::go::go() else {
        return;
    };
    let Some(server) = NatsServer::start("") else {
        return;
    };
    let url = server.url();
    let client = async_nats::connect(&url).await.unwrap();

    // jxt-core's stream and consumer, from its own requests.
    let requests = interop_support::json(&dir, "nats/jetstream-api-requests.json");
    for r in requests["requests"].as_array().unwrap() {
        let subject = r["subject"].as_str().unwrap();
        if !(subject.contains(".STREAM.CREATE.") || subject.contains(".CONSUMER.CREATE.")) {
            continue;
        }
        let body = r["data"]["text"].as_str().unwrap().to_string();
        let reply = client
            .request(subject.to_string(), body.into())
            .await
            .unwrap();
        let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
        assert!(reply.get("error").is_none(), "{subject}: {reply}");
    }

    // jxt-core's PublishEnvelope: subject = topic, envelope bytes, no headers.
    let messages = interop_support::json(&dir, "nats/messages.json");
    let go_envelopes: Vec<String> = messages["on_the_wire"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["subject"] == TOPIC)
        .map(|m| {
            assert!(m["headers"].is_null());
            m["data"]["text"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(go_envelopes.len(), 3);
    let js = async_nats::jetstream::new(client.clone());
    for data in &go_envelopes {
        js.publish(TOPIC, data.clone().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }

    // A Rust bus reads them with its own durable consumer.
    let bus = EventBus::from_config(nats_support::config(&url, "rust-service"))
        .await
        .unwrap();
    let seen: Arc<Mutex<Vec<Envelope>>> = Arc::default();
    let s = seen.clone();
    bus.subscribe_envelope(
        TOPIC,
        move |env: Envelope, _d: Delivery| {
            s.lock().unwrap().push(env);
            std::future::ready(Ok(()))
        },
        SubscribeOptions::new(),
    )
    .await
    .unwrap();
    support::eventually("the three jxt-core envelopes", 30, || {
        seen.lock().unwrap().len() == 3
    })
    .await;
    {
        let seen = seen.lock().unwrap();
        for (env, data) in seen.iter().zip(&go_envelopes) {
            assert_eq!(env.to_bytes().unwrap(), data.as_bytes());
        }
        assert_eq!(seen[1].tenant_id, Some(42));
    }

    // The Rust bus publishes; jxt-core's consumer reads it after the three.
    let ours = Envelope::from_slice(go_envelopes[0].as_bytes())
        .unwrap()
        .with_event_id("0195939e-0000-7000-8000-00000000abcd")
        .with_tenant_id(7);
    bus.publish_envelope(TOPIC, &ours).await.unwrap();
    let out = tokio::task::spawn_blocking({
        let url = url.clone();
        move || interop_support::go::run(&go, "jxtcorenats", &["-url", &url, "-count", "4"], "")
    })
    .await
    .unwrap();
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    for (line, data) in lines.iter().zip(&go_envelopes) {
        assert_eq!(line["subject"], TOPIC);
        assert_eq!(line["data"], data.as_str());
        assert_eq!(line["headers"], 0);
    }
    assert_eq!(lines[3]["subject"], TOPIC);
    assert_eq!(
        lines[3]["data"].as_str().unwrap().as_bytes(),
        ours.to_bytes().unwrap()
    );
    // The Rust record carries headers (Nats-Msg-Id, X-Message-Key, X-*),
    // which jxt-core's consumer ignores.
    assert!(lines[3]["headers"].as_u64().unwrap() > 0);

    // The bus used jxt-core's stream: it created none of its own.
    let mut names = js.stream_names();
    let mut streams = Vec::new();
    while let Some(n) = names.next().await {
        streams.push(n.unwrap());
    }
    assert_eq!(streams, ["PERSISTENT_STREAM"]);

    // Health: jxt-core's NATS heartbeat (subject jxt-core-health-check, in
    // the same stream) and this bus's own are both seen.
    let heartbeat = messages["on_the_wire"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["subject"] == DEFAULT_TOPIC)
        .expect("a captured NATS heartbeat");
    let go = JxtCoreHeartbeat::from_slice(heartbeat["data"]["text"].as_str().unwrap().as_bytes())
        .unwrap();
    js.publish(
        DEFAULT_TOPIC,
        heartbeat["data"]["text"]
            .as_str()
            .unwrap()
            .to_string()
            .into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let health = bus
        .start_jxt_core_health(JxtCoreHealthOptions::new())
        .await
        .unwrap();
    let ours = health.instance_id().to_string();
    assert!(ours.starts_with("nats-eventbus-"), "{ours}");
    support::eventually("the Go and the Rust heartbeat", 30, || {
        let peers = health.peers();
        peers.iter().any(|p| p.instance_id() == go.instance_id())
            && peers.iter().any(|p| p.instance_id() == ours)
    })
    .await;
    drop(health);
    bus.shutdown().await.unwrap();
}
