//! The conformance suite on Apache Kafka (`scripts/services up`).
//!
//! Topics are created by the harness with the partitions each case asks for;
//! dead-letter topics are created by the bus itself (the default
//! `create_only` topic strategy), since the test broker does not create
//! topics automatically.
#![cfg(feature = "kafka")]

mod conformance;
mod support;

use std::time::Duration;

use conformance::{test_config, BoxFut, Harness};
use jxt_eventbus::{BackendKind, BusConfig, EventBus};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::RDKafkaErrorCode;

struct Kafka {
    brokers: String,
    admin: AdminClient<DefaultClientContext>,
}

impl Harness for Kafka {
    fn bus<'a>(
        &'a self,
        group: &'a str,
        tweak: &'a (dyn Fn(&mut BusConfig) + Sync),
    ) -> BoxFut<'a, EventBus> {
        Box::pin(async move {
            let mut config = BusConfig {
                backend: BackendKind::Kafka,
                group: group.to_string(),
                ..BusConfig::default()
            };
            config.kafka.brokers = self.brokers.split(',').map(str::to_string).collect();
            // Serial publishes in the cases: do not hold each one back
            // waiting for a batch.
            config.kafka.producer.linger = Duration::from_millis(1);
            // A bus dropped without shutdown in a case leaves the group on
            // close; a short session still bounds a real crash.
            config.kafka.consumer.session_timeout = Duration::from_secs(10);
            // Members learn of a rebalance from their next heartbeat.
            config.kafka.consumer.heartbeat_interval = Duration::from_millis(500);
            test_config(&mut config);
            tweak(&mut config);
            EventBus::builder()
                .config(config)
                .build()
                .await
                .expect("kafka bus")
        })
    }

    fn create_topic<'a>(&'a self, topic: &'a str, partitions: u32) -> BoxFut<'a, ()> {
        Box::pin(async move {
            let new = NewTopic::new(topic, partitions as i32, TopicReplication::Fixed(1));
            let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
            for r in self
                .admin
                .create_topics([&new], &opts)
                .await
                .expect("create_topics")
            {
                match r {
                    Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((name, code)) => panic!("creating topic {name} failed: {code:?}"),
                }
            }
        })
    }

    fn unique(&self, prefix: &str) -> String {
        support::unique_name(prefix)
    }
}

async fn kafka() -> Option<Kafka> {
    let brokers = support::kafka_brokers()?;
    let admin = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .expect("admin client");
    Some(Kafka { brokers, admin })
}

conformance_tests!(kafka());
