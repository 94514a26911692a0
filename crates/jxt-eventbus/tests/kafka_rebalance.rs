//! Rebalancing on Kafka: three buses share a group while records flow; one
//! leaves and another joins. Nothing is lost, and each key's records are
//! handled in publish order across all buses.
#![cfg(feature = "kafka")]

mod kafka_support;
mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use jxt_eventbus::{Delivery, EventBus, SubscribeOptions};
use kafka_support::{bus, create_topic};
use support::handled::{record, Log};
use support::wait_for;

const WAIT: Duration = Duration::from_secs(90);
const PARTITIONS: i32 = 6;

async fn join(brokers: &str, group: &str, topic: &str, log: &Log, name: &'static str) -> EventBus {
    let b = bus(brokers, group).await;
    let l = log.clone();
    b.subscribe(
        topic,
        move |d: Delivery| {
            l.push(&d, name);
            async {
                tokio::time::sleep(Duration::from_millis(1)).await;
                Ok(())
            }
        },
        SubscribeOptions::new(),
    )
    .await
    .expect("subscribe");
    b
}

async fn owned(bus: &EventBus) -> usize {
    bus.dispatch_stats()
        .await
        .map_or(0, |s| s.assigned_partitions)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_leave_and_join_while_records_flow() {
    let Some(brokers) = support::kafka_brokers() else {
        return;
    };
    let topic = support::unique_name("rebalance");
    create_topic(&brokers, &topic, PARTITIONS).await;
    let group = support::unique_name("g-rebalance");
    let log = Log::default();
    let a = join(&brokers, &group, &topic, &log, "a").await;
    let b = join(&brokers, &group, &topic, &log, "b").await;
    let c = join(&brokers, &group, &topic, &log, "c").await;
    wait_for("three members sharing the partitions", WAIT, || {
        futures::executor::block_on(async {
            let (oa, ob, oc) = (owned(&a).await, owned(&b).await, owned(&c).await);
            oa > 0 && ob > 0 && oc > 0 && oa + ob + oc == PARTITIONS as usize
        })
    })
    .await;

    const KEYS: usize = 24;
    const ROUNDS: u64 = 150;
    let rounds = Arc::new(AtomicU64::new(0));
    let publisher = {
        let p = b.clone();
        let topic = topic.clone();
        let rounds = rounds.clone();
        tokio::spawn(async move {
            let mut sent = HashSet::new();
            for seq in 0..ROUNDS {
                let round = (0..KEYS).map(|k| {
                    let key = format!("k{k}");
                    sent.insert((topic.clone(), key.clone(), seq));
                    p.publish(&topic, record(&key, seq))
                });
                // Concurrent within a round, rounds in order: a key's records
                // are published in sequence.
                for r in futures::future::join_all(round).await {
                    r.expect("publish");
                }
                rounds.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
            sent
        })
    };

    wait_for("records flowing", WAIT, || {
        rounds.load(Ordering::SeqCst) >= 15
    })
    .await;
    a.shutdown().await.expect("a leaves");
    wait_for("the others took a's partitions", WAIT, || {
        futures::executor::block_on(async { owned(&b).await + owned(&c).await })
            == PARTITIONS as usize
    })
    .await;
    wait_for("more records", WAIT, || rounds.load(Ordering::SeqCst) >= 50).await;
    let d = join(&brokers, &group, &topic, &log, "d").await;
    wait_for("d owns partitions", WAIT, || {
        futures::executor::block_on(owned(&d)) > 0
    })
    .await;

    let sent = publisher.await.expect("publisher");
    wait_for("every record", WAIT, || {
        log.distinct_in_topics().len() == sent.len()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = log.all();
    assert_eq!(log.distinct_in_topics(), sent, "no record lost");
    for bus in ["a", "b", "c", "d"] {
        assert!(seen.iter().any(|s| s.bus == bus), "{bus} handled records");
    }
    // In the order handlers were invoked, over all buses, each key's records
    // never go backwards; clean hand-overs (revoke waits, commits, then
    // releases) mean none is handled twice either.
    kafka_support::assert_key_order(&seen, false);
    assert_eq!(seen.len(), sent.len(), "no record handled twice");
    for bus in [&b, &c, &d] {
        bus.shutdown().await.expect("shutdown");
    }
}
