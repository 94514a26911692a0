//! The bus's one consumer group on Kafka: many topics in one member without
//! revocations, lag while a backlog waits, static membership.
#![cfg(feature = "kafka")]

mod kafka_support;
mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use jxt_eventbus::{Delivery, EventBus, SubscribeOptions};
use kafka_support::{bus, create_topic, group_members};
use support::handled::{record, Log};
use support::wait_for;
use tokio::sync::Semaphore;

const WAIT: Duration = Duration::from_secs(90);

fn logging(
    log: &Log,
) -> impl Fn(Delivery) -> futures::future::Ready<jxt_eventbus::HandlerResult> + Send + Sync + 'static
{
    let log = log.clone();
    move |d: Delivery| {
        log.push(&d, "a");
        futures::future::ready(Ok(()))
    }
}

/// Subscribing ten topics one after another while records flow keeps one
/// member in the group, revokes nothing already owned, and handles every
/// record exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_topics_one_member_no_revocations() {
    let Some(brokers) = support::kafka_brokers() else {
        return;
    };
    const TOPICS: usize = 10;
    const PARTITIONS: i32 = 3;
    const ROUNDS: u64 = 40;
    const KEYS: usize = 6;
    let topics: Vec<String> = (0..TOPICS)
        .map(|i| support::unique_name(&format!("multi{i}")))
        .collect();
    join_all(topics.iter().map(|t| create_topic(&brokers, t, PARTITIONS))).await;
    let group = support::unique_name("g-multi");
    let bus = bus(&brokers, &group).await;
    let log = Log::default();

    // Records flow to every topic for the whole test, subscribed or not yet.
    let publisher = {
        let bus = bus.clone();
        let topics = topics.clone();
        tokio::spawn(async move {
            let mut sent = HashSet::new();
            for seq in 0..ROUNDS {
                let mut round = Vec::new();
                for t in &topics {
                    for k in 0..KEYS {
                        let key = format!("k{k}");
                        sent.insert((t.clone(), key.clone(), seq));
                        round.push((t.clone(), record(&key, seq)));
                    }
                }
                for r in join_all(round.into_iter().map(|(t, m)| {
                    let bus = bus.clone();
                    async move { bus.publish(&t, m).await }
                }))
                .await
                {
                    r.expect("publish");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            sent
        })
    };

    for (i, t) in topics.iter().enumerate() {
        bus.subscribe(t, logging(&log), SubscribeOptions::new())
            .await
            .expect("subscribe");
        let owned = (i + 1) * PARTITIONS as usize;
        wait_for("the new topic's partitions", WAIT, || {
            futures::executor::block_on(bus.dispatch_stats())
                .is_some_and(|s| s.assigned_partitions == owned)
        })
        .await;
        let stats = bus.dispatch_stats().await.expect("stats");
        assert_eq!(stats.revoked_total, 0, "nothing revoked by subscribe {i}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(
        group_members(&brokers, &group),
        1,
        "one member in the group"
    );

    let sent = publisher.await.expect("publisher");
    wait_for("every record", WAIT, || {
        log.distinct_in_topics().len() == sent.len()
    })
    .await;
    // Nothing buffered and everything committed: the counts below are final.
    support::wait_settled(&[&bus], WAIT).await;
    assert_eq!(log.distinct_in_topics(), sent);
    // A member that lost its assignment (a missed session timeout on a
    // loaded machine) rightly handles records again: say so first.
    let stats = bus.dispatch_stats().await.expect("stats");
    assert_eq!(stats.revoked_total, 0, "no partition revoked: {stats:?}");
    assert_eq!(stats.assigned_total, (TOPICS as u64) * PARTITIONS as u64);
    let all = log.all();
    // On failure, say where the repeats were read: the same offset twice is a
    // redelivery, two offsets a duplicate write.
    let mut seen_at = std::collections::HashMap::new();
    for s in &all {
        seen_at
            .entry((&s.topic, &s.key, s.seq))
            .or_insert_with(Vec::new)
            .push((s.partition, s.offset, s.attempt));
    }
    let twice: Vec<_> = seen_at.iter().filter(|(_, v)| v.len() > 1).collect();
    assert_eq!(
        log.len(),
        sent.len(),
        "each record handled exactly once; handled twice (partition, offset, attempt): {twice:?}"
    );
    kafka_support::assert_key_order(&log.all(), false);
    assert_eq!(group_members(&brokers, &group), 1, "still one member");
    bus.shutdown().await.expect("shutdown");
}

/// Lag is log end minus committed position, read from the brokers, also
/// while the records wait in paused partitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_counts_records_not_yet_committed() {
    let Some(brokers) = support::kafka_brokers() else {
        return;
    };
    let topic = support::unique_name("lag");
    create_topic(&brokers, &topic, 2).await;
    let mut config = kafka_support::config(&brokers, &support::unique_name("g-lag"));
    // A small cap, so that the backlog sits in paused partitions.
    config.dispatch.max_buffered_per_partition = 4;
    let bus = EventBus::from_config(config).await.expect("bus");
    for i in 0..60u64 {
        bus.publish(&topic, record(&format!("k{}", i % 7), i))
            .await
            .expect("publish");
    }
    let gate = Arc::new(Semaphore::new(0));
    let log = Log::default();
    let (g, l) = (gate.clone(), log.clone());
    bus.subscribe(
        &topic,
        move |d: Delivery| {
            let (g, l) = (g.clone(), l.clone());
            async move {
                g.acquire().await.expect("gate").forget();
                l.push(&d, "a");
                Ok(())
            }
        },
        SubscribeOptions::new(),
    )
    .await
    .expect("subscribe");
    wait_for("partitions paused", WAIT, || {
        futures::executor::block_on(bus.dispatch_stats()).is_some_and(|s| s.paused_partitions == 2)
    })
    .await;
    let lag = bus.lag().await.expect("lag");
    assert_eq!(lag.len(), 2, "{lag:?}");
    assert_eq!(lag.iter().map(|l| l.log_end).sum::<i64>(), 60, "{lag:?}");
    assert_eq!(lag.iter().map(|l| l.lag()).sum::<i64>(), 60, "{lag:?}");

    gate.add_permits(1_000);
    wait_for("all handled", WAIT, || log.len() == 60).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let lag = bus.lag().await.expect("lag");
        if lag.iter().map(|l| l.lag()).sum::<i64>() == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "lag stayed {lag:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bus.shutdown().await.expect("shutdown");
}

/// With `group.instance.id` the bus consumes as usual and is one member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_membership() {
    let Some(brokers) = support::kafka_brokers() else {
        return;
    };
    let topic = support::unique_name("static");
    create_topic(&brokers, &topic, 2).await;
    let group = support::unique_name("g-static");
    let mut config = kafka_support::config(&brokers, &group);
    config.kafka.group_instance_id = Some(support::unique_name("instance"));
    let bus = EventBus::from_config(config).await.expect("bus");
    let log = Log::default();
    bus.subscribe(&topic, logging(&log), SubscribeOptions::new())
        .await
        .expect("subscribe");
    for i in 0..20u64 {
        bus.publish(&topic, record("k", i)).await.expect("publish");
    }
    wait_for("records", WAIT, || log.len() == 20).await;
    assert_eq!(group_members(&brokers, &group), 1);
    bus.shutdown().await.expect("shutdown");
}
