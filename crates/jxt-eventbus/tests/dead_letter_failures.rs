//! Dead-letter writes that cannot succeed, on real brokers: a record too large
//! for its dead-letter topic becomes a payload-less pointer record (the lane
//! moves on, health and a metric say so), and a dead-letter topic that cannot
//! take even the pointer holds the lane with health saying why.
#![cfg(any(feature = "kafka", feature = "nats"))]

#[cfg(feature = "kafka")]
mod kafka_support;
#[cfg(feature = "nats")]
mod nats_support;
mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jxt_eventbus::health::HealthState;
use jxt_eventbus::{Delivery, EventBus, HandlerError, Message, SubscribeOptions};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(30);

/// Larger than the dead-letter topic accepts (set to [`DLQ_MAX_BYTES`]).
const BIG: usize = 6_000;
const DLQ_MAX_BYTES: usize = 2_048;

/// Subscribes `topic` on `bus`: a payload starting with `big` fails
/// permanently with a long error text; anything else is sent to the returned
/// channel.
async fn fail_big_records(bus: &EventBus, topic: &str) -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    bus.subscribe(
        topic,
        move |d: Delivery| {
            let text = String::from_utf8_lossy(d.payload()).to_string();
            let result = if text.starts_with("big") {
                // Far longer than the bounded `x-dlq-error`.
                Err(HandlerError::permanent("é".repeat(20_000)))
            } else {
                tx.send(text).unwrap();
                Ok(())
            };
            std::future::ready(result)
        },
        SubscribeOptions::new(),
    )
    .await
    .unwrap();
    rx
}

/// Collects every record of `topic` read by its own bus in `group`.
async fn collect(bus: &EventBus, topic: &str) -> Arc<Mutex<Vec<Message>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    bus.subscribe(
        topic,
        move |d: Delivery| {
            s.lock().unwrap().push(d.into_message());
            std::future::ready(Ok(()))
        },
        SubscribeOptions::new(),
    )
    .await
    .unwrap();
    seen
}

fn big_record() -> Message {
    let mut payload = b"big".to_vec();
    payload.resize(BIG, b'x');
    Message::new(payload).with_key("k")
}

/// Publishes a too-large-to-dead-letter record and a sentinel of the same
/// key, and checks the pointer record, health and the metric.
async fn too_large_becomes_a_pointer(
    backend: &str,
    bus: &EventBus,
    reader: &EventBus,
    topic: &str,
) {
    let dlq = format!("{topic}.dlq");
    let mut handled = fail_big_records(bus, topic).await;
    let dead = collect(reader, &dlq).await;
    let big = big_record();
    let hash = format!("{:x}", Sha256::digest(big.payload()));
    bus.publish(topic, big).await.unwrap();
    bus.publish(topic, Message::new("sentinel").with_key("k"))
        .await
        .unwrap();
    // The sentinel waits behind the big record in the key's lane: it runs
    // only once the dead letter was dealt with.
    let next = tokio::time::timeout(WAIT, handled.recv())
        .await
        .expect("the lane moved on after the dead-letter write failed for good");
    assert_eq!(next.as_deref(), Some("sentinel"));

    support::wait_for("the pointer record", WAIT, || {
        !dead.lock().unwrap().is_empty()
    })
    .await;
    let pointer = dead.lock().unwrap()[0].clone();
    let h = &pointer.headers;
    assert!(pointer.payload().is_empty(), "a pointer has no payload");
    assert_eq!(pointer.key_str(), Some("k"));
    assert_eq!(h.get_str("x-dlq-pointer"), Some("true"));
    assert_eq!(h.get_str("x-dlq-original-topic"), Some(topic));
    assert!(h.get_str("x-dlq-original-partition").is_some());
    assert!(h.get_str("x-dlq-original-offset").is_some());
    assert_eq!(h.get_str("x-dlq-error-kind"), Some("permanent"));
    assert_eq!(
        h.get_str("x-dlq-payload-size"),
        Some(BIG.to_string().as_str())
    );
    assert_eq!(h.get_str("x-dlq-payload-sha256"), Some(hash.as_str()));
    let error = h.get_str("x-dlq-error").expect("x-dlq-error");
    assert!(error.len() <= 4096, "bounded: {} bytes", error.len());
    assert!(error.ends_with("[truncated]"), "{error}");
    assert!(
        h.get_str("x-dlq-write-error").is_some(),
        "the pointer says why the full record was not written"
    );

    let health = bus.health().await;
    let c = health.component("dead_letters").expect("dead_letters");
    assert_eq!(c.state, HealthState::Unhealthy, "{c:?}");
    assert!(c.reason.contains("without payload"), "{c:?}");
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &bus.metrics_registry().unwrap()).unwrap();
    let series =
        format!("eventbus_dead_letter_pointers_total{{topic=\"{topic}\",backend=\"{backend}\"}}");
    assert_eq!(support::metric_value(&text, &series), Some(1.0), "{text}");
}

#[cfg(feature = "kafka")]
mod kafka {
    use super::*;
    use jxt_eventbus::config::TopicStrategy;
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::config::ClientConfig;

    async fn create_topic_with(brokers: &str, topic: &str, config: &[(&str, &str)]) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .create()
            .expect("admin client");
        let mut new = NewTopic::new(topic, 1, TopicReplication::Fixed(1));
        for (k, v) in config {
            new = new.set(k, v);
        }
        let opts = AdminOptions::new().operation_timeout(Some(WAIT));
        for r in admin.create_topics([&new], &opts).await.expect("create") {
            r.expect("topic created");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_letter_too_large_for_its_topic_becomes_a_pointer() {
        let Some(brokers) = support::kafka_brokers() else {
            return;
        };
        let topic = support::unique_name("dlq-big");
        kafka_support::create_topic(&brokers, &topic, 1).await;
        let max = DLQ_MAX_BYTES.to_string();
        create_topic_with(
            &brokers,
            &format!("{topic}.dlq"),
            &[("max.message.bytes", &max)],
        )
        .await;
        let bus = kafka_support::bus(&brokers, &support::unique_name("g")).await;
        let reader = kafka_support::bus(&brokers, &support::unique_name("r")).await;
        too_large_becomes_a_pointer("kafka", &bus, &reader, &topic).await;
        bus.shutdown().await.unwrap();
        reader.shutdown().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_missing_dead_letter_topic_holds_the_lane_and_health_says_so() {
        let Some(brokers) = support::kafka_brokers() else {
            return;
        };
        let topic = support::unique_name("dlq-missing");
        let dlq = format!("{topic}.dlq");
        kafka_support::create_topic(&brokers, &topic, 1).await;
        let mut config = kafka_support::config(&brokers, &support::unique_name("g"));
        config.kafka.topic_strategy = TopicStrategy::ValidateOnly;
        let bus = EventBus::from_config(config).await.unwrap();
        let mut handled = fail_big_records(&bus, &topic).await;
        bus.publish(&topic, Message::new("big, small enough").with_key("k"))
            .await
            .unwrap();
        bus.publish(&topic, Message::new("sentinel").with_key("k"))
            .await
            .unwrap();
        let waiting = support::unhealthy_component(&bus, "dead_letters", WAIT).await;
        assert!(waiting.reason.contains("wait"), "{waiting:?}");
        assert!(waiting.reason.contains(&dlq), "{waiting:?}");
        assert!(
            handled.try_recv().is_err(),
            "the sentinel must wait behind the record whose dead letter is not written"
        );
        // The operator creates the topic: the dead letter is written in full
        // and the lane moves on.
        kafka_support::create_topic(&brokers, &dlq, 1).await;
        let next = tokio::time::timeout(WAIT, handled.recv())
            .await
            .expect("the lane moved on once the topic existed");
        assert_eq!(next.as_deref(), Some("sentinel"));
        let health = bus.health().await;
        let c = health.component("dead_letters").unwrap();
        assert_eq!(c.state, HealthState::Healthy, "{c:?}");
        bus.shutdown().await.unwrap();
    }
}

#[cfg(feature = "nats")]
mod nats {
    use super::*;
    use async_nats::jetstream::{self, stream};
    use nats_support::StreamCleanup;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_letter_too_large_for_its_stream_becomes_a_pointer() {
        let Some(url) = support::nats_url() else {
            return;
        };
        let cleanup = StreamCleanup::new(&url);
        let topic = support::unique_name("dlqbig");
        cleanup.add(&topic);
        let js = jetstream::new(async_nats::connect(&url).await.unwrap());
        js.create_stream(stream::Config {
            name: format!("{topic}-dlq"),
            subjects: vec![format!("{topic}.dlq")],
            max_message_size: DLQ_MAX_BYTES as i32,
            ..Default::default()
        })
        .await
        .expect("dead-letter stream");
        let bus = EventBus::from_config(nats_support::config(&url, &support::unique_name("g")))
            .await
            .unwrap();
        let reader = EventBus::from_config(nats_support::config(&url, &support::unique_name("r")))
            .await
            .unwrap();
        too_large_becomes_a_pointer("nats", &bus, &reader, &topic).await;
        bus.shutdown().await.unwrap();
        reader.shutdown().await.unwrap();
    }
}

/// Two groups that both dead-letter one record write two dead letters: the
/// second must not be dropped as a duplicate of the first (JetStream
/// de-duplicates by message id).
async fn each_group_writes_its_own_dead_letter(
    bus1: &EventBus,
    bus2: &EventBus,
    reader: &EventBus,
    topic: &str,
) {
    let dlq = format!("{topic}.dlq");
    for bus in [bus1, bus2] {
        bus.subscribe(
            topic,
            |_d: Delivery| std::future::ready(Err(HandlerError::permanent("no"))),
            SubscribeOptions::new(),
        )
        .await
        .unwrap();
    }
    let dead = collect(reader, &dlq).await;
    bus1.publish(topic, Message::new("x").with_key("k"))
        .await
        .unwrap();
    support::wait_for("a dead letter from each group", WAIT, || {
        let d = dead.lock().unwrap();
        let groups: std::collections::HashSet<_> = d
            .iter()
            .filter_map(|m| {
                m.headers
                    .get_str("x-dlq-consumer-group")
                    .map(str::to_string)
            })
            .collect();
        groups.len() == 2
    })
    .await;
}

#[cfg(feature = "nats")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_each_group_writes_its_own_dead_letter() {
    let Some(url) = support::nats_url() else {
        return;
    };
    let cleanup = nats_support::StreamCleanup::new(&url);
    let topic = support::unique_name("dlqgroups");
    cleanup.add(&topic);
    let bus = |g: &str| EventBus::from_config(nats_support::config(&url, &support::unique_name(g)));
    let (one, two, reader) = (
        bus("g1").await.unwrap(),
        bus("g2").await.unwrap(),
        bus("r").await.unwrap(),
    );
    each_group_writes_its_own_dead_letter(&one, &two, &reader, &topic).await;
    for b in [one, two, reader] {
        b.shutdown().await.unwrap();
    }
}
