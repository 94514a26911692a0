//! The conformance suite on the in-memory backend.

mod conformance;
mod support;

use std::sync::atomic::{AtomicU64, Ordering};

use conformance::{test_config, BoxFut, Harness};
use jxt_eventbus::config::MemoryConfig;
use jxt_eventbus::{BusConfig, EventBus, MemoryBroker};

struct Memory {
    broker: MemoryBroker,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl Harness for Memory {
    fn bus<'a>(
        &'a self,
        group: &'a str,
        tweak: &'a (dyn Fn(&mut BusConfig) + Sync),
    ) -> BoxFut<'a, EventBus> {
        Box::pin(async move {
            let mut config = BusConfig {
                group: group.to_string(),
                ..BusConfig::default()
            };
            test_config(&mut config);
            tweak(&mut config);
            EventBus::builder()
                .config(config)
                .memory_broker(self.broker.clone())
                .build()
                .await
                .expect("memory bus")
        })
    }

    fn create_topic<'a>(&'a self, topic: &'a str, partitions: u32) -> BoxFut<'a, ()> {
        Box::pin(async move { self.broker.create_topic(topic, partitions) })
    }

    fn unique(&self, prefix: &str) -> String {
        format!("{prefix}-{}", COUNTER.fetch_add(1, Ordering::Relaxed))
    }
}

async fn memory() -> Option<Memory> {
    Some(Memory {
        broker: MemoryBroker::new(MemoryConfig::default()),
    })
}

conformance_tests!(memory());
