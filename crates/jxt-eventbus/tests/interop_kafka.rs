//! Kafka interop with jxt-core (sarama): the same key lands on the same
//! partition from a Go and a Rust producer, and `publish_envelope` writes
//! the record jxt-core's `PublishEnvelope` writes.
//!
//! jxt-core's producer uses sarama's `NewHashPartitioner`:
//! `p = int32(fnv1a_32(key)) % n; if p < 0 { p = -p }`. librdkafka's
//! `fnv1a_random` takes the absolute value of the hash first and then the
//! (unsigned) remainder; both give the same partition for every key
//! (`|h| mod n == |h rem n|`, and for h = i32::MIN the unsigned 2^31 gives
//! the same remainder), which the tests below check for the fixture keys and
//! partition counts 1 to 64, against `kafka/partitions.csv`, and live
//! against a Go program producing with sarama itself.
#![cfg(feature = "kafka")]

mod interop_support;
mod kafka_support;
mod support;

use std::path::Path;
use std::time::Duration;

use jxt_eventbus::config::Partitioner;
use jxt_eventbus::{Envelope, EventBus, Message};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers as _, Message as _};
use rdkafka::{Offset, TopicPartitionList};

const FNV_OFFSET: u32 = 0x811C_9DC5;
const FNV_PRIME: u32 = 0x0100_0193;

fn fnv1a_32(key: &[u8]) -> u32 {
    key.iter().fold(FNV_OFFSET, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(FNV_PRIME)
    })
}

/// sarama v1.46 `hashPartitioner.Partition`, default mode.
fn sarama_partition(key: &[u8], n: i32) -> i32 {
    let p = (fnv1a_32(key) as i32) % n;
    if p < 0 {
        -p
    } else {
        p
    }
}

/// librdkafka 2.12 `rd_fnv1a` (abs of the signed hash, wrapping as the C
/// code does on two's-complement machines) then
/// `rd_kafka_msg_partitioner_fnv1a`'s `uint32 % partition_cnt`.
fn librdkafka_fnv1a_partition(key: &[u8], n: i32) -> i32 {
    let mut h = FNV_OFFSET as i32;
    for b in key {
        h ^= i32::from(*b);
        h = h.wrapping_mul(FNV_PRIME as i32);
    }
    if h < 0 {
        h = h.wrapping_neg();
    }
    ((h as u32) % (n as u32)) as i32
}

/// `key,partitions,partition` rows of kafka/partitions.csv.
fn fixture_partitions(dir: &Path) -> Vec<(String, i32, i32)> {
    let text = String::from_utf8(interop_support::read(dir, "kafka/partitions.csv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("key,partitions,partition"));
    lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut f = l.rsplitn(3, ',');
            let partition = f.next().unwrap().parse().unwrap();
            let n = f.next().unwrap().parse().unwrap();
            (f.next().unwrap().to_string(), n, partition)
        })
        .collect()
}

/// 1,000 aggregate ids of the shapes services use.
fn live_keys() -> Vec<String> {
    (0..1000)
        .map(|i| match i % 4 {
            0 => format!("order-{i}"),
            1 => format!("tenant:{}/account.{i}_x", i % 17),
            2 => format!("0195939e-6f2b-7c3d-9a1e-{:012x}", i * 7919),
            _ => format!("{}", i * 104_729),
        })
        .collect()
}

#[test]
fn sarama_arithmetic_reproduces_the_captured_partitions() {
    let Some(dir) = interop_support::fixtures() else {
        return;
    };
    let rows = fixture_partitions(&dir);
    assert_eq!(rows.len(), 960);
    for (key, n, partition) in &rows {
        assert_eq!(
            sarama_partition(key.as_bytes(), *n),
            *partition,
            "{key} over {n}"
        );
    }
}

#[test]
fn librdkafka_fnv1a_agrees_with_sarama_for_every_key_and_1_to_64_partitions() {
    let Some(dir) = interop_support::fixtures() else {
        return;
    };
    let mut keys: Vec<String> = fixture_partitions(&dir).into_iter().map(|r| r.0).collect();
    keys.extend(live_keys());
    keys.sort();
    keys.dedup();
    let mut differ = Vec::new();
    for key in &keys {
        for n in 1..=64 {
            let (s, r) = (
                sarama_partition(key.as_bytes(), n),
                librdkafka_fnv1a_partition(key.as_bytes(), n),
            );
            if s != r {
                differ.push(format!("{key} over {n}: sarama {s}, librdkafka {r}"));
            }
        }
    }
    assert!(differ.is_empty(), "{} differ: {differ:?}", differ.len());
    // The one hash where the two orders of abs and remainder could part:
    // i32::MIN. Both give 2^31 mod n.
    for n in 1..=64i32 {
        let h = i32::MIN;
        let sarama = (h % n).abs();
        let librdkafka = ((h.wrapping_neg() as u32) % n as u32) as i32;
        assert_eq!(sarama, librdkafka, "i32::MIN over {n}");
    }
}

async fn fnv1a_bus(brokers: &str) -> EventBus {
    let mut c = kafka_support::config(brokers, &support::unique_name("interop-g"));
    c.kafka.producer.partitioner = Partitioner::Fnv1aRandom;
    EventBus::from_config(c).await.expect("kafka bus")
}

/// The partition of each key as this bus's producer chose it.
async fn rust_partitions(bus: &EventBus, topic: &str, keys: &[String]) -> Vec<i32> {
    let messages = keys
        .iter()
        .map(|k| Message::new("rust").with_key(k.clone()))
        .collect();
    bus.publish_batch(topic, messages)
        .await
        .expect("publish_batch")
        .into_iter()
        .map(|r| r.expect("publish").partition)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn fnv1a_random_puts_the_fixture_keys_where_jxt_core_put_them() {
    let Some(dir) = interop_support::fixtures() else {
        return;
    };
    let Some(brokers) = support::kafka_brokers() else {
        return;
    };
    let bus = fnv1a_bus(&brokers).await;
    let rows = fixture_partitions(&dir);
    for n in [1, 3, 6, 12] {
        let topic = support::unique_name(&format!("interop-p{n}"));
        kafka_support::create_topic(&brokers, &topic, n).await;
        let (keys, expected): (Vec<String>, Vec<i32>) = rows
            .iter()
            .filter(|r| r.1 == n)
            .map(|r| (r.0.clone(), r.2))
            .unzip();
        assert_eq!(keys.len(), 240);
        assert_eq!(
            rust_partitions(&bus, &topic, &keys).await,
            expected,
            "{n} partitions"
        );
    }
    bus.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn sarama_and_this_bus_put_1000_keys_on_the_same_partitions() {
    let Some(brokers) = support::kafka_brokers() else {
        return;
    };
    let Some(go) = interop_support::go::go() else {
        return;
    };
    let topic = support::unique_name("interop-sarama");
    kafka_support::create_topic(&brokers, &topic, 64).await;
    support::eventually("64 partitions in the metadata", 30, || {
        kafka_support::partition_count(&brokers, &topic) == 64
    })
    .await;
    let keys = live_keys();
    let stdin = keys.join("\n") + "\n";
    let go_out = tokio::task::spawn_blocking({
        let (brokers, topic) = (brokers.clone(), topic.clone());
        move || {
            interop_support::go::run(
                &go,
                "saramahash",
                &["-brokers", &brokers, "-topic", &topic],
                &stdin,
            )
        }
    })
    .await
    .unwrap();
    let sarama: Vec<i32> = go_out.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(sarama.len(), keys.len());
    let bus = fnv1a_bus(&brokers).await;
    let ours = rust_partitions(&bus, &topic, &keys).await;
    let differ: Vec<_> = keys
        .iter()
        .zip(sarama.iter().zip(&ours))
        .filter(|(_, (s, o))| s != o)
        .collect();
    assert!(
        differ.is_empty(),
        "{} of 1000 differ: {differ:?}",
        differ.len()
    );
    // Not all on one partition: the comparison means something.
    let mut used: Vec<i32> = ours.clone();
    used.sort_unstable();
    used.dedup();
    assert!(used.len() > 32, "{} partitions used", used.len());
    bus.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_envelope_writes_the_record_jxt_core_writes() {
    let Some(dir) = interop_support::fixtures() else {
        return;
    };
    let Some(brokers) = support::kafka_brokers() else {
        return;
    };
    let dump = interop_support::json(&dir, "kafka/records-envelope.json");
    // The record with every optional header.
    let theirs = dump["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["headers"].as_array().unwrap().len() == 7)
        .expect("a record with all seven X- headers");
    let value = theirs["value"]["text"].as_str().unwrap();
    let env = Envelope::from_slice(value.as_bytes()).unwrap();
    let topic = support::unique_name("interop-envelope");
    kafka_support::create_topic(&brokers, &topic, 3).await;
    let bus = fnv1a_bus(&brokers).await;
    let receipt = bus.publish_envelope(&topic, &env).await.unwrap();
    bus.shutdown().await.unwrap();

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", support::unique_name("interop-raw"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, receipt.partition, Offset::Offset(receipt.offset))
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let record = consumer
        .poll(Duration::from_secs(30))
        .expect("no record within 30s")
        .unwrap();
    assert_eq!(record.payload(), Some(value.as_bytes()));
    assert_eq!(
        record.key().map(<[u8]>::to_vec),
        interop_support::dumped_bytes(&theirs["key"])
    );
    let ours: Vec<(String, Vec<u8>)> = record
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                .collect()
        })
        .unwrap_or_default();
    let expected: Vec<(String, Vec<u8>)> = theirs["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["name"].as_str().unwrap().to_string(),
                interop_support::dumped_bytes(&h["value"]).unwrap(),
            )
        })
        .collect();
    // jxt-core's headers exactly, then the W3C `traceparent` this bus adds
    // (made from X-Trace-ID; jxt-core ignores it).
    assert_eq!(ours[..expected.len()], expected[..]);
    let extra: Vec<&str> = ours[expected.len()..]
        .iter()
        .map(|h| h.0.as_str())
        .collect();
    assert_eq!(extra, ["traceparent"]);
    let traceparent = String::from_utf8(ours[expected.len()].1.clone()).unwrap();
    assert!(
        traceparent.contains(env.trace_id.as_deref().unwrap()),
        "{traceparent}"
    );
    // Same key, same partitioner: the partition jxt-core chose.
    assert_eq!(
        receipt.partition,
        theirs["partition"].as_i64().unwrap() as i32
    );
}

/// Every record of `topic` from the beginning, waiting until `n` arrived.
fn read_all(brokers: &str, topic: &str, n: usize) -> Vec<rdkafka::message::OwnedMessage> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", support::unique_name("interop-raw"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut out = Vec::new();
    while out.len() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {n} records on {topic}",
            out.len()
        );
        if let Some(r) = consumer.poll(Duration::from_millis(200)) {
            out.push(r.unwrap().detach());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn jxt_core_publisher_dead_letters_are_listed_and_replayed() {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let Some(dir) = interop_support::fixtures() else {
        return;
    };
    let Some(brokers) = support::kafka_brokers() else {
        return;
    };
    let dump = interop_support::json(&dir, "dlq/publisher-dlq-records.json");
    let captured = &dump["dlq_records"][0];
    let value = captured["value"]["text"].as_str().unwrap().to_string();
    let header = |name: &str| {
        captured["headers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["name"] == name)
            .map(|h| h["value"]["text"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert!(captured["key"].is_null(), "jxt-core writes no key");

    let original = support::unique_name("interop-orig");
    let dlq = support::unique_name("interop-publisher-dlq");
    kafka_support::create_topic(&brokers, &original, 3).await;
    kafka_support::create_topic(&brokers, &dlq, 1).await;
    // Write what jxt-core's publisher writes (its captured record, with the
    // original topic renamed to this test's), and a non-envelope one.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    for (value, error) in [
        (value.as_str(), header("X-Error-Message")),
        (
            "plain bytes",
            "kafka: client has run out of available brokers".into(),
        ),
    ] {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "X-Original-Topic",
                value: Some(original.as_str()),
            })
            .insert(Header {
                key: "X-Error-Message",
                value: Some(error.as_str()),
            })
            .insert(Header {
                key: "X-Timestamp",
                value: Some(header("X-Timestamp").as_str()),
            });
        let record: FutureRecord<'_, (), str> =
            FutureRecord::to(&dlq).payload(value).headers(headers);
        producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }

    let bus = fnv1a_bus(&brokers).await;
    let (idle, timeout) = (Duration::from_secs(2), Duration::from_secs(30));
    let listed = bus
        .list_publisher_dead_letters(&dlq, 10, idle, timeout)
        .await
        .unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].original_topic.as_deref(), Some(original.as_str()));
    assert_eq!(
        listed[0].error.as_deref(),
        Some(header("X-Error-Message").as_str())
    );
    assert_eq!(
        listed[0].failed_at.map(|t| t.to_rfc3339()),
        Some(
            chrono::DateTime::parse_from_rfc3339(&header("X-Timestamp"))
                .unwrap()
                .to_rfc3339()
        )
    );
    assert_eq!(listed[0].message.payload(), value.as_bytes());
    assert_eq!(listed[0].message.key, None);

    // A header never names a topic the caller did not: nothing replayed.
    let refused = bus
        .replay_publisher_dead_letters(&dlq, &["some-other-topic"], timeout)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains(&original), "{refused}");
    let report = bus
        .replay_publisher_dead_letters(&dlq, &[&original], timeout)
        .await
        .unwrap();
    assert_eq!(report.replayed, 2);
    let mut back = read_all(&brokers, &original, 2);
    back.sort_by_key(|m| m.payload().map(<[u8]>::len));
    let (plain, envelope) = (&back[0], &back[1]);
    assert_eq!(plain.payload(), Some(&b"plain bytes"[..]));
    assert_eq!(plain.key(), None);
    // The envelope gets its key and X-* headers back, so it lands on its
    // aggregate's partition (sarama's choice, as jxt-core would have).
    let env = Envelope::from_slice(value.as_bytes()).unwrap();
    assert_eq!(envelope.payload(), Some(value.as_bytes()));
    assert_eq!(envelope.key(), Some(env.aggregate_id.as_bytes()));
    assert_eq!(
        envelope.partition(),
        sarama_partition(env.aggregate_id.as_bytes(), 3)
    );
    let names: Vec<String> = envelope
        .headers()
        .unwrap()
        .iter()
        .map(|h| h.key.to_string())
        .collect();
    assert_eq!(
        names[..5],
        [
            "X-Event-ID",
            "X-Aggregate-ID",
            "X-Event-Version",
            "X-Event-Type",
            "X-Trace-ID"
        ]
    );
    assert!(names.contains(&"x-dlq-replayed".to_string()), "{names:?}");

    // Committed: a second replay finds nothing.
    let again = bus
        .replay_publisher_dead_letters(&dlq, &[&original], timeout)
        .await
        .unwrap();
    assert_eq!(again.replayed, 0);
    bus.shutdown().await.unwrap();
}
