//! Helpers shared by the Kafka integration tests: bus configuration, topic
//! creation and group inspection with plain rdkafka clients.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::collections::BTreeMap;
use std::time::Duration;

use jxt_eventbus::{BackendKind, BusConfig, EventBus};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

pub const TIMEOUT: Duration = Duration::from_secs(30);

/// A test-friendly bus configuration on `brokers` in `group`.
pub fn config(brokers: &str, group: &str) -> BusConfig {
    let mut c = BusConfig {
        backend: BackendKind::Kafka,
        group: group.to_string(),
        ..BusConfig::default()
    };
    c.kafka.brokers = brokers.split(',').map(str::to_string).collect();
    c.kafka.producer.linger = Duration::from_millis(1);
    c.kafka.consumer.session_timeout = Duration::from_secs(10);
    // Members learn of a rebalance from their next heartbeat: keep
    // rebalances quick in tests.
    c.kafka.consumer.heartbeat_interval = Duration::from_millis(500);
    c.retry.initial_backoff = Duration::from_millis(5);
    c.retry.max_backoff = Duration::from_millis(50);
    c.dispatch.revoke_timeout = Duration::from_secs(10);
    c.dispatch.shutdown_timeout = Duration::from_secs(20);
    c
}

pub async fn bus(brokers: &str, group: &str) -> EventBus {
    EventBus::from_config(config(brokers, group))
        .await
        .expect("kafka bus")
}

fn admin(brokers: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client")
}

pub async fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    for r in admin(brokers)
        .create_topics([&new], &opts)
        .await
        .expect("create_topics")
    {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => panic!("creating topic {name} failed: {code:?}"),
        }
    }
}

/// Partitions of `topic` as the broker reports them (0 when missing).
pub fn partition_count(brokers: &str, topic: &str) -> usize {
    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("metadata client");
    let md = client
        .fetch_metadata(Some(topic), TIMEOUT)
        .expect("metadata");
    md.topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map_or(0, |t| t.partitions().len())
}

/// Members of `group` as the coordinator reports them.
pub fn group_members(brokers: &str, group: &str) -> usize {
    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("group client");
    let list = client
        .fetch_group_list(Some(group), TIMEOUT)
        .expect("group list");
    list.groups()
        .iter()
        .find(|g| g.name() == group)
        .map_or(0, |g| g.members().len())
}

/// Committed position of `group` per partition of `topic` (`None` where
/// nothing was committed).
pub fn committed(brokers: &str, group: &str, topic: &str, partitions: i32) -> Vec<Option<i64>> {
    committed_with_metadata(brokers, group, topic, partitions)
        .into_iter()
        .map(|(offset, _)| offset)
        .collect()
}

/// Committed position and commit metadata of `group` per partition of
/// `topic`.
pub fn committed_with_metadata(
    brokers: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> Vec<(Option<i64>, String)> {
    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .expect("offsets client");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = client
        .committed_offsets(tpl, TIMEOUT)
        .expect("committed offsets");
    (0..partitions)
        .map(|p| match got.find_partition(topic, p) {
            Some(e) => match e.offset() {
                Offset::Offset(o) => (Some(o), e.metadata().to_string()),
                _ => (None, e.metadata().to_string()),
            },
            None => (None, String::new()),
        })
        .collect()
}

use crate::support::handled::Seen;

/// Panics when a key's records were invoked out of publish order (a repeat
/// of the same record is allowed only where `allow_repeats`).
pub fn assert_key_order(seen: &[Seen], allow_repeats: bool) {
    let mut by_key: BTreeMap<(&str, &str), Vec<u64>> = BTreeMap::new();
    for s in seen {
        by_key.entry((&s.topic, &s.key)).or_default().push(s.seq);
    }
    for ((topic, key), seqs) in by_key {
        let ok = seqs.windows(2).all(|w| {
            if allow_repeats {
                w[0] <= w[1]
            } else {
                w[0] < w[1]
            }
        });
        assert!(ok, "{topic}/{key} out of order: {seqs:?}");
    }
}
