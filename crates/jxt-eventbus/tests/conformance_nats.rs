//! The conformance suite on NATS JetStream (`scripts/services up`, or
//! `EVENTBUS_DEV_NATS_URL`). Topics are created as streams up front, as an
//! operator would; their dead-letter topics are created by the bus's topic
//! strategy (`create_only`). Every stream is deleted afterwards.
#![cfg(feature = "nats")]

mod conformance;
mod nats_support;
mod support;

use async_nats::jetstream::stream::StorageType;
use conformance::{test_config, BoxFut, Harness};
use jxt_eventbus::{BusConfig, EventBus};
use nats_support::StreamCleanup;

struct Nats {
    url: String,
    cleanup: StreamCleanup,
}

impl Harness for Nats {
    fn bus<'a>(
        &'a self,
        group: &'a str,
        tweak: &'a (dyn Fn(&mut BusConfig) + Sync),
    ) -> BoxFut<'a, EventBus> {
        Box::pin(async move {
            let mut config = nats_support::config(&self.url, group);
            test_config(&mut config);
            tweak(&mut config);
            EventBus::builder()
                .config(config)
                .build()
                .await
                .expect("nats bus")
        })
    }

    fn create_topic<'a>(&'a self, topic: &'a str, _partitions: u32) -> BoxFut<'a, ()> {
        Box::pin(async move {
            self.cleanup.add(topic);
            nats_support::create_stream(&self.url, topic, StorageType::File).await;
        })
    }

    fn unique(&self, prefix: &str) -> String {
        support::unique_name(prefix)
    }

    fn partitions(&self) -> bool {
        false
    }

    fn header_values_are_bytes(&self) -> bool {
        false
    }
}

async fn nats() -> Option<Nats> {
    let url = support::nats_url()?;
    Some(Nats {
        cleanup: StreamCleanup::new(&url),
        url,
    })
}

conformance_tests!(nats());
