//! Smoke test proving that a real NATS server with JetStream answers: create
//! a stream, publish with a PubAck, and read back through a durable pull
//! consumer with explicit acks.
//!
//! Needs `scripts/services up` (or `EVENTBUS_DEV_NATS_URL`). See
//! docs/development.md.
#![cfg(feature = "nats")]

mod support;

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;

const TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_jetstream_publish_and_pull_with_explicit_ack() {
    let Some(url) = support::nats_url() else {
        return;
    };
    let client = tokio::time::timeout(TIMEOUT, async_nats::connect(&url))
        .await
        .expect("connect timed out")
        .expect("connect");
    let js = jetstream::new(client);

    let name = support::unique_name("smoke_nats");
    let subject = format!("{name}.events");
    let mut stream = js
        .create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![format!("{name}.>")],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .expect("create stream");

    let mut headers = async_nats::HeaderMap::new();
    headers.insert("trace", "abc");
    let ack = js
        .publish_with_headers(subject.clone(), headers, "hello".into())
        .await
        .expect("publish")
        .await
        .expect("PubAck");
    assert_eq!(ack.stream, name);
    assert_eq!(ack.sequence, 1);
    assert!(!ack.duplicate);
    let ack = js
        .publish(subject.clone(), "world".into())
        .await
        .expect("publish")
        .await
        .expect("PubAck");
    assert_eq!(ack.sequence, 2);
    assert_eq!(stream.info().await.expect("stream info").state.messages, 2);

    let consumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("smoke".to_owned()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .expect("create pull consumer");

    let mut batch = consumer
        .fetch()
        .max_messages(2)
        .expires(Duration::from_secs(10))
        .messages()
        .await
        .expect("fetch");
    let mut payloads = Vec::new();
    while let Some(message) = tokio::time::timeout(TIMEOUT, batch.next())
        .await
        .expect("no message within 30s")
    {
        let message = message.expect("message");
        assert_eq!(message.subject.as_str(), subject);
        let info = message.info().expect("JetStream metadata");
        assert_eq!(info.stream, name);
        if info.stream_sequence == 1 {
            let trace = message
                .headers
                .as_ref()
                .and_then(|h| h.get("trace"))
                .expect("trace header");
            assert_eq!(trace.as_str(), "abc");
        }
        payloads.push(String::from_utf8(message.payload.to_vec()).expect("utf-8"));
        // double_ack waits for the server to confirm the ack.
        message.double_ack().await.expect("ack");
    }
    assert_eq!(payloads, ["hello", "world"]);

    let info = consumer.get_info().await.expect("consumer info");
    assert_eq!(info.num_ack_pending, 0, "every message was acked");
    assert_eq!(info.num_pending, 0, "nothing left to deliver");
    assert_eq!(info.ack_floor.stream_sequence, 2);

    js.delete_stream(&name).await.expect("delete stream");
}
