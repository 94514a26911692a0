//! Streams, consumers and publishing on NATS JetStream: the topic strategies,
//! per-topic stream settings, streams found by subject, the group's durable
//! consumer, de-duplication by message id, batched publishing and lag.
#![cfg(feature = "nats")]

mod nats_support;
mod support;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, PriorityPolicy};
use async_nats::jetstream::{self, stream};
use jxt_eventbus::config::{NatsStorage, NatsTopicSettings, TopicStrategy};
use jxt_eventbus::{BusConfig, Delivery, Error, EventBus, Message, SubscribeOptions};
use nats_support::StreamCleanup;
use tokio::sync::Semaphore;

const WAIT: Duration = Duration::from_secs(30);

async fn js(url: &str) -> jetstream::Context {
    jetstream::new(async_nats::connect(url).await.expect("connect"))
}

async fn stream_of(js: &jetstream::Context, topic: &str) -> Option<stream::Config> {
    let name = js.stream_by_subject(topic).await.ok()?;
    Some(
        js.get_stream(&name)
            .await
            .ok()?
            .cached_info()
            .config
            .clone(),
    )
}

async fn bus(url: &str, tweak: impl FnOnce(&mut BusConfig)) -> EventBus {
    let mut c = nats_support::config(url, &support::unique_name("g"));
    tweak(&mut c);
    EventBus::from_config(c).await.expect("bus")
}

async fn create(js: &jetstream::Context, name: &str, subjects: &[&str]) {
    js.create_stream(stream::Config {
        name: name.to_string(),
        subjects: subjects.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    })
    .await
    .expect("create stream");
}

fn noop(_: Delivery) -> std::future::Ready<jxt_eventbus::HandlerResult> {
    std::future::ready(Ok(()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_only_creates_missing_streams_with_their_settings() {
    let Some(url) = support::nats_url() else {
        return;
    };
    let cleanup = StreamCleanup::new(&url);
    let topic = format!("{}.created", support::unique_name("orders"));
    cleanup.add(&topic);
    let t = topic.clone();
    let bus = bus(&url, move |c| {
        c.nats.topics.insert(
            t,
            NatsTopicSettings {
                storage: Some(NatsStorage::Memory),
                max_age: Some(Duration::from_secs(3600)),
                max_messages: Some(1000),
                ..NatsTopicSettings::default()
            },
        );
    })
    .await;
    bus.publish(&topic, Message::new("x")).await.unwrap();
    bus.publish(&format!("{topic}.dlq"), Message::new("x"))
        .await
        .unwrap();
    let js = js(&url).await;
    let s = stream_of(&js, &topic).await.expect("stream created");
    assert!(!s.name.contains('.'), "{}", s.name);
    assert_eq!(s.subjects, vec![topic.clone()]);
    assert_eq!(s.storage, stream::StorageType::Memory);
    assert_eq!(s.max_age, Duration::from_secs(3600));
    assert_eq!(s.max_messages, 1000);
    let dlq = stream_of(&js, &format!("{topic}.dlq"))
        .await
        .expect("dead-letter stream created");
    assert_ne!(dlq.name, s.name);
    assert_eq!(
        dlq.storage,
        stream::StorageType::Memory,
        "the dead-letter topic inherits its topic's settings"
    );
    bus.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_streams_are_kept_updated_or_validated_by_strategy() {
    let Some(url) = support::nats_url() else {
        return;
    };
    let cleanup = StreamCleanup::new(&url);
    let js = js(&url).await;
    let configured = |strategy: TopicStrategy| {
        move |c: &mut BusConfig| {
            c.nats.topic_strategy = strategy;
            c.nats.stream.max_age = Some(Duration::from_secs(600));
        }
    };

    // create_only: an existing stream is used as it is.
    let topic = support::unique_name("keep");
    cleanup.add(&topic);
    create(&js, &topic, &[&topic]).await;
    let b = bus(&url, configured(TopicStrategy::CreateOnly)).await;
    b.subscribe(&topic, noop, SubscribeOptions::new())
        .await
        .unwrap();
    assert_eq!(
        stream_of(&js, &topic).await.unwrap().max_age,
        Duration::ZERO
    );
    b.shutdown().await.unwrap();

    // validate_only: the difference is an error naming it.
    let b = bus(&url, configured(TopicStrategy::ValidateOnly)).await;
    let err = b
        .subscribe(&topic, noop, SubscribeOptions::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Subscribe { .. }), "{err}");
    assert!(
        err.to_string().contains("max_age") && err.to_string().contains("validate_only"),
        "{err}"
    );
    let err = b.publish(&topic, Message::new("x")).await.unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    b.shutdown().await.unwrap();

    // create_or_update: the stream is brought to the configuration.
    let b = bus(&url, configured(TopicStrategy::CreateOrUpdate)).await;
    b.publish(&topic, Message::new("x")).await.unwrap();
    assert_eq!(
        stream_of(&js, &topic).await.unwrap().max_age,
        Duration::from_secs(600)
    );
    b.shutdown().await.unwrap();

    // ... except what JetStream cannot change.
    let b = bus(&url, |c| {
        c.nats.topic_strategy = TopicStrategy::CreateOrUpdate;
        c.nats.stream.storage = NatsStorage::Memory;
    })
    .await;
    let err = b.publish(&topic, Message::new("x")).await.unwrap_err();
    assert!(err.to_string().contains("storage"), "{err}");
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_streams_are_errors_unless_the_strategy_creates_them() {
    let Some(url) = support::nats_url() else {
        return;
    };
    let js = js(&url).await;
    for strategy in [TopicStrategy::ValidateOnly, TopicStrategy::Skip] {
        let topic = support::unique_name("missing");
        let b = bus(&url, |c| c.nats.topic_strategy = strategy).await;
        let err = b.publish(&topic, Message::new("x")).await.unwrap_err();
        assert!(matches!(err, Error::Publish { .. }), "{strategy:?}: {err}");
        assert!(err.to_string().contains(&topic), "{err}");
        let err = b
            .subscribe(&topic, noop, SubscribeOptions::new())
            .await
            .unwrap_err();
        assert!(err.to_string().contains(&topic), "{err}");
        assert!(
            stream_of(&js, &topic).await.is_none(),
            "{strategy:?} created nothing"
        );
        b.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioned_streams_are_found_by_subject_or_name() {
    let Some(url) = support::nats_url() else {
        return;
    };
    let js = js(&url).await;
    let prefix = support::unique_name("shop");
    let shared = format!("SHOP_{}", prefix.replace('-', "_"));
    create(&js, &shared, &[&format!("{prefix}.>")]).await;
    let cleanup = StreamCleanup::new(&url);
    cleanup.add(&format!("{prefix}.orders"));
    let (orders, payments) = (format!("{prefix}.orders"), format!("{prefix}.payments"));
    let (o, s) = (orders.clone(), shared.clone());
    let b = bus(&url, move |c| {
        c.nats.topic_strategy = TopicStrategy::ValidateOnly;
        c.nats.topics.insert(
            o,
            NatsTopicSettings {
                stream: Some(s),
                ..NatsTopicSettings::default()
            },
        );
    })
    .await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for topic in [&orders, &payments] {
        let tx = tx.clone();
        b.subscribe(
            topic,
            move |d: Delivery| {
                tx.send(d.topic().to_string()).unwrap();
                std::future::ready(Ok(()))
            },
            SubscribeOptions::new(),
        )
        .await
        .unwrap();
        b.publish(topic, Message::new("x")).await.unwrap();
    }
    let mut got = vec![
        tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap()
            .unwrap(),
        tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap()
            .unwrap(),
    ];
    got.sort();
    assert_eq!(got, vec![orders.clone(), payments]);
    let info = js.get_stream(&shared).await.unwrap().cached_info().clone();
    assert_eq!(info.state.messages, 2, "both topics live in the one stream");
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_group_consumer_follows_the_configuration() {
    let Some(url) = support::nats_url() else {
        return;
    };
    let cleanup = StreamCleanup::new(&url);
    let topic = support::unique_name("durable");
    cleanup.add(&topic);
    let group = format!("{}.v2", support::unique_name("billing"));
    let mut c = nats_support::config(&url, &group);
    c.nats.ack_wait = Duration::from_secs(45);
    c.dispatch.max_buffered = 4321;
    let b = EventBus::from_config(c).await.unwrap();
    b.subscribe(&topic, noop, SubscribeOptions::new())
        .await
        .unwrap();
    let js = js(&url).await;
    let stream = js
        .get_stream(js.stream_by_subject(topic.as_str()).await.unwrap())
        .await
        .unwrap();
    let mut names = stream.consumer_names();
    let name = futures::StreamExt::next(&mut names).await.unwrap().unwrap();
    assert!(!name.contains('.'), "{name}");
    let info = stream.consumer_info(&name).await.unwrap();
    assert_eq!(info.config.durable_name.as_deref(), Some(name.as_str()));
    assert_eq!(info.config.ack_policy, AckPolicy::Explicit);
    assert_eq!(info.config.ack_wait, Duration::from_secs(45));
    assert_eq!(info.config.max_ack_pending, 4321);
    assert_eq!(info.config.filter_subject, topic);
    assert!(
        info.config.deliver_subject.is_none(),
        "a pull consumer, never core NATS"
    );
    assert_eq!(info.config.priority_policy, PriorityPolicy::PinnedClient);
    assert_eq!(info.config.priority_groups, vec!["bus".to_string()]);
    assert_eq!(
        info.config.priority_timeout,
        Duration::from_secs(90),
        "pinned_ttl defaults to twice ack_wait"
    );
    b.shutdown().await.unwrap();
    // A bus configured otherwise brings the idle group's consumer to its
    // settings.
    let mut c = nats_support::config(&url, &group);
    c.nats.ack_wait = Duration::from_secs(45);
    c.dispatch.max_buffered = 4321;
    c.nats.consumer.pinned_ttl = Some(Duration::from_secs(20));
    let b = EventBus::from_config(c).await.unwrap();
    b.subscribe(&topic, noop, SubscribeOptions::new())
        .await
        .unwrap();
    let info = stream.consumer_info(&name).await.unwrap();
    assert_eq!(info.config.priority_timeout, Duration::from_secs(20));
    b.shutdown().await.unwrap();
    // The group's position outlives the bus.
    assert!(stream.consumer_info(&name).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_acks_deduplicates_and_batches() {
    let Some(url) = support::nats_url() else {
        return;
    };
    let cleanup = StreamCleanup::new(&url);
    let topic = support::unique_name("publish");
    cleanup.add(&topic);
    let b = bus(&url, |_| {}).await;
    let m = Message::new("once").with_id("the-same-id");
    let first = b.publish(&topic, m.clone()).await.unwrap();
    let again = b.publish(&topic, m).await.unwrap();
    assert_eq!(first, again, "the stream kept the first copy only");

    let mut batch: Vec<Message> = (0..500)
        .map(|i| Message::new(format!("{i}")).with_key(format!("k{}", i % 7)))
        .collect();
    batch[250] = Message::new("bad").with_header("x-binary", vec![0xff, 0x00]);
    let results = b.publish_batch(&topic, batch).await.unwrap();
    assert_eq!(results.len(), 500);
    let bad = results[250].as_ref().unwrap_err();
    assert!(
        !bad.is_retryable() && bad.to_string().contains("x-binary"),
        "{bad}"
    );
    let offsets: Vec<i64> = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|r| r.offset)
        .collect();
    assert_eq!(offsets.len(), 499);
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "stored in order");
    let js = js(&url).await;
    let s = js
        .get_stream(js.stream_by_subject(topic.as_str()).await.unwrap())
        .await
        .unwrap();
    assert_eq!(s.cached_info().state.messages, 500);
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_counts_pending_and_unacknowledged_records() {
    let Some(url) = support::nats_url() else {
        return;
    };
    let cleanup = StreamCleanup::new(&url);
    let topic = support::unique_name("lag");
    cleanup.add(&topic);
    let b = bus(&url, |_| {}).await;
    for i in 0..50 {
        b.publish(&topic, Message::new(format!("{i}")).with_key("one-key"))
            .await
            .unwrap();
    }
    let gate = Arc::new(Semaphore::new(0));
    let g = gate.clone();
    b.subscribe(
        &topic,
        move |_d: Delivery| {
            let g = g.clone();
            async move {
                g.acquire().await.unwrap().forget();
                Ok(())
            }
        },
        SubscribeOptions::new(),
    )
    .await
    .unwrap();
    let lag = b.lag().await.unwrap();
    assert_eq!(lag.len(), 1);
    assert_eq!(lag[0].partition.partition, 0);
    assert_eq!(lag[0].lag(), 50, "{lag:?}");
    gate.add_permits(50);
    let deadline = tokio::time::Instant::now() + WAIT;
    while b.lag().await.unwrap()[0].lag() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "lag never drained");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.shutdown().await.unwrap();
}
