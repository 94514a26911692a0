//! Helpers for the tests that run the bus on a real NATS server: bus
//! configuration and removal of the streams a test created.
//!
//! Use it from a test file with `mod nats_support;` (next to `mod support;`).
#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod proxy;
pub mod server;
pub mod tls;

use std::sync::Mutex;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use jxt_eventbus::{BackendKind, BusConfig, Delivery, Error, EventBus, Message, SubscribeOptions};

/// A bus configuration on the NATS server at `url`, in `group`, with fast
/// retries.
pub fn config(url: &str, group: &str) -> BusConfig {
    let mut c = BusConfig {
        backend: BackendKind::Nats,
        group: group.to_string(),
        ..BusConfig::default()
    };
    c.nats.servers = url.split(',').map(str::to_string).collect();
    c.retry.initial_backoff = Duration::from_millis(5);
    c.retry.max_backoff = Duration::from_millis(50);
    c.retry.jitter = false;
    c
}

/// Builds a bus from `config`, publishes one record and waits for it to come
/// back through a subscription; shuts the bus down.
pub async fn round_trip(config: BusConfig) {
    let bus = EventBus::from_config(config).await.expect("bus");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    bus.subscribe(
        "round-trip",
        move |d: Delivery| {
            tx.send(d.payload().clone()).unwrap();
            std::future::ready(Ok(()))
        },
        SubscribeOptions::new(),
    )
    .await
    .unwrap();
    bus.publish("round-trip", Message::new("hello"))
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got[..], b"hello");
    bus.shutdown().await.unwrap();
}

/// The error of building a bus that must not start.
pub async fn refused(config: BusConfig) -> Error {
    EventBus::from_config(config)
        .await
        .expect_err("the bus must not start")
}

/// Creates a stream named after `topic` (which must be a valid stream name)
/// holding only the topic's subject, as an operator would.
pub async fn create_stream(url: &str, topic: &str, storage: stream::StorageType) {
    let client = async_nats::connect(url).await.expect("connect to NATS");
    jetstream::new(client)
        .create_stream(stream::Config {
            name: topic.to_string(),
            subjects: vec![topic.to_string()],
            storage,
            ..Default::default()
        })
        .await
        .expect("create stream");
}

/// Deletes, when dropped, the streams that hold the registered topics and
/// their dead-letter topics, so test runs do not pile up streams on the
/// shared server.
#[derive(Debug)]
pub struct StreamCleanup {
    url: String,
    topics: Mutex<Vec<String>>,
}

impl StreamCleanup {
    pub fn new(url: &str) -> Self {
        StreamCleanup {
            url: url.to_string(),
            topics: Mutex::default(),
        }
    }

    /// Registers a topic (and `<topic>.dlq`) for removal.
    pub fn add(&self, topic: &str) {
        let mut t = self.topics.lock().unwrap();
        t.push(topic.to_string());
        t.push(format!("{topic}.dlq"));
    }
}

impl Drop for StreamCleanup {
    fn drop(&mut self) {
        let topics = std::mem::take(&mut *self.topics.lock().unwrap());
        if topics.is_empty() {
            return;
        }
        let url = self.url.clone();
        // Own thread and runtime: this may run inside (or outside) a test's
        // runtime, which must not be blocked from within.
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let Ok(client) = async_nats::connect(&url).await else {
                    return;
                };
                let js = jetstream::new(client);
                for topic in topics {
                    if let Ok(name) = js.stream_by_subject(topic.as_str()).await {
                        let _ = js.delete_stream(&name).await;
                    }
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// The server's info on the durable consumer of `group` for `topic`.
pub async fn group_consumer_info(
    url: &str,
    topic: &str,
    group: &str,
) -> async_nats::jetstream::consumer::Info {
    use futures::TryStreamExt;
    let js = jetstream::new(async_nats::connect(url).await.expect("connect to NATS"));
    let stream = js
        .get_stream(
            js.stream_by_subject(topic)
                .await
                .expect("the topic's stream"),
        )
        .await
        .expect("stream");
    let names: Vec<String> = stream.consumer_names().try_collect().await.expect("names");
    let name = names
        .iter()
        .find(|n| n.contains(group))
        .expect("the group's consumer");
    stream.consumer_info(name).await.expect("consumer info")
}
