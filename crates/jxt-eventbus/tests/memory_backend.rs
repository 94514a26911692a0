//! Memory-backend behaviour beyond the conformance suite: bounded memory,
//! bounded retention, lag, incremental subscription, start position.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use jxt_eventbus::config::{MemoryConfig, StartFrom};
use jxt_eventbus::{
    BusConfig, Delivery, Error, EventBus, HealthState, MemoryBroker, Message, SubscribeOptions,
};
use support::eventually;
use tokio::sync::Semaphore;

/// An in-memory broker with `partitions` partitions per topic, defaults otherwise.
fn broker(partitions: u32) -> MemoryBroker {
    MemoryBroker::new(MemoryConfig {
        partitions,
        ..MemoryConfig::default()
    })
}

async fn bus(broker: &MemoryBroker, group: &str, tweak: impl FnOnce(&mut BusConfig)) -> EventBus {
    let mut config = BusConfig {
        group: group.into(),
        ..BusConfig::default()
    };
    tweak(&mut config);
    EventBus::builder()
        .config(config)
        .memory_broker(broker.clone())
        .build()
        .await
        .unwrap()
}

/// Polls the bus's dispatcher counters until `cond` holds (30 s at most).
async fn wait_stats(
    bus: &EventBus,
    what: &str,
    cond: impl Fn(&jxt_eventbus::dispatch::DispatchStats) -> bool,
) {
    for _ in 0..3_000 {
        if bus.dispatch_stats().await.is_some_and(|s| cond(&s)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "timed out waiting for {what}: {:?}",
        bus.dispatch_stats().await
    );
}

/// A handler that waits for a permit per record and counts what it handled.
fn gated(
    gate: &Arc<Semaphore>,
    done: &Arc<AtomicUsize>,
) -> impl Fn(Delivery) -> futures::future::BoxFuture<'static, jxt_eventbus::HandlerResult>
       + Send
       + Sync
       + 'static {
    let (gate, done) = (gate.clone(), done.clone());
    move |_d: Delivery| {
        let (gate, done) = (gate.clone(), done.clone());
        Box::pin(async move {
            gate.acquire().await.unwrap().forget();
            done.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_backlog_is_held_in_the_broker_not_in_the_bus() {
    let broker = broker(2);
    let publisher = bus(&broker, "pub", |_| {}).await;
    for i in 0..20_000 {
        publisher
            .publish(
                "backlog",
                Message::new("x").with_key(format!("k{}", i % 500)),
            )
            .await
            .unwrap();
    }
    let b = bus(&broker, "g", |c| {
        c.dispatch.max_buffered_per_partition = 100;
        c.dispatch.max_buffered = 150;
        c.dispatch.max_concurrency = 4;
    })
    .await;
    let gate = Arc::new(Semaphore::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    b.subscribe("backlog", gated(&gate, &done), SubscribeOptions::new())
        .await
        .unwrap();
    wait_stats(&b, "both partitions paused", |s| s.paused_partitions == 2).await;
    let stats = b.dispatch_stats().await.unwrap();
    // Caps plus at most the batches already in the backend channel.
    assert!(
        stats.buffered <= 150 + 4 * 256,
        "buffered {}",
        stats.buffered
    );
    assert!(stats.paused_partitions > 0, "{stats:?}");
    let lag: i64 = b.lag().await.unwrap().iter().map(|l| l.lag()).sum();
    assert_eq!(
        lag, 20_000,
        "nothing committed while the handler is blocked"
    );
    gate.add_permits(1_000_000);
    eventually("backlog drained", 30, || {
        done.load(Ordering::SeqCst) == 20_000
    })
    .await;
    eventually("lag zero", 30, || {
        futures::executor::block_on(b.lag())
            .unwrap()
            .iter()
            .all(|l| l.lag() == 0)
    })
    .await;
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_waits_for_slow_groups_and_fails_clearly_after_its_timeout() {
    let broker = MemoryBroker::new(MemoryConfig {
        partitions: 1,
        max_retained_per_partition: 10,
        publish_timeout: Duration::from_millis(200),
    });
    let b = bus(&broker, "slow", |_| {}).await;
    let gate = Arc::new(Semaphore::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    b.subscribe("full", gated(&gate, &done), SubscribeOptions::new())
        .await
        .unwrap();
    for i in 0..10 {
        b.publish("full", Message::new(format!("{i}")))
            .await
            .unwrap();
    }
    let started = std::time::Instant::now();
    let err = b
        .publish("full", Message::new("one too many"))
        .await
        .unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert!(
        matches!(
            err,
            Error::Publish {
                retryable: true,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("max_retained_per_partition"),
        "{err}"
    );
    // A publish that waits is let through as soon as the group catches up.
    let b2 = b.clone();
    let waiting = tokio::spawn(async move { b2.publish("full", Message::new("late")).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    gate.add_permits(100);
    waiting.await.unwrap().unwrap();
    eventually("all accepted records handled", 30, || {
        done.load(Ordering::SeqCst) == 11
    })
    .await;
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_topics_at_runtime_revokes_nothing() {
    let broker = MemoryBroker::new(MemoryConfig::default());
    let b = bus(&broker, "many", |_| {}).await;
    let done = Arc::new(AtomicUsize::new(0));
    let p = b.clone();
    let publisher = tokio::spawn(async move {
        for i in 0..2_000 {
            p.publish(
                &format!("topic-{}", i % 10),
                Message::new("x").with_key(format!("k{i}")),
            )
            .await
            .unwrap();
            if i % 100 == 0 {
                tokio::task::yield_now().await;
            }
        }
    });
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    for t in 0..10 {
        let (done, seen) = (done.clone(), seen.clone());
        b.subscribe(
            &format!("topic-{t}"),
            move |d: Delivery| {
                let (done, seen) = (done.clone(), seen.clone());
                async move {
                    let at = (d.topic().to_string(), d.partition(), d.offset());
                    seen.lock().unwrap().push(at);
                    done.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            },
            SubscribeOptions::new(),
        )
        .await
        .unwrap();
    }
    publisher.await.unwrap();
    eventually("every record of every topic", 30, || {
        done.load(Ordering::SeqCst) == 2_000
    })
    .await;
    let stats = b.dispatch_stats().await.unwrap();
    assert_eq!(stats.revoked_total, 0, "{stats:?}");
    assert_eq!(stats.assigned_partitions, 40);
    assert_eq!(
        broker.group_members("many"),
        1,
        "one consumer for all topics"
    );
    // No partition was revoked and no handler failed, so nothing can be
    // delivered again later: every record was handled exactly once.
    let handled = seen.lock().unwrap().clone();
    let distinct: std::collections::HashSet<_> = handled.iter().collect();
    assert_eq!(distinct.len(), 2_000, "a record was handled twice");
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_from_latest_skips_what_came_before() {
    // One partition: keyless records run in partition order, so an old
    // record, had it been delivered, would be handled before the new one.
    let broker = broker(1);
    let b = bus(&broker, "late", |c| c.start_from = StartFrom::Latest).await;
    for _ in 0..5 {
        b.publish("news", Message::new("old")).await.unwrap();
    }
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    b.subscribe(
        "news",
        move |d: Delivery| {
            let s = s.clone();
            async move {
                s.lock().unwrap().push(d.payload().clone());
                Ok(())
            }
        },
        SubscribeOptions::new(),
    )
    .await
    .unwrap();
    b.publish("news", Message::new("new")).await.unwrap();
    eventually("the new record", 30, || {
        seen.lock().unwrap().iter().any(|p| &p[..] == b"new")
    })
    .await;
    assert_eq!(
        seen.lock().unwrap().clone(),
        vec![bytes::Bytes::from("new")]
    );
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lane_cap_pauses_intake_without_evicting_lanes() {
    let broker = broker(1);
    let b = bus(&broker, "lanes", |c| {
        c.dispatch.max_processors = 20;
        c.dispatch.max_concurrency = 2;
    })
    .await;
    let gate = Arc::new(Semaphore::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    b.subscribe("keys", gated(&gate, &done), SubscribeOptions::new())
        .await
        .unwrap();
    for i in 0..2_000 {
        b.publish("keys", Message::new("x").with_key(format!("k{i}")))
            .await
            .unwrap();
    }
    wait_stats(&b, "the partition paused", |s| s.paused_partitions == 1).await;
    let stats = b.dispatch_stats().await.unwrap();
    assert!(
        stats.live_lanes >= 20 && stats.live_lanes <= 20 + 4 * 256,
        "{stats:?}"
    );
    gate.add_permits(1_000_000);
    eventually("all keys handled", 30, || {
        done.load(Ordering::SeqCst) == 2_000
    })
    .await;
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_while_a_rebalance_waits_for_a_busy_member() {
    let broker = broker(2);
    let a = bus(&broker, "shared", |c| {
        c.dispatch.revoke_timeout = Duration::from_secs(30)
    })
    .await;
    let gate = Arc::new(Semaphore::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    a.subscribe("busy", gated(&gate, &done), SubscribeOptions::new())
        .await
        .unwrap();
    for i in 0..10 {
        a.publish("busy", Message::new("x").with_key(format!("k{i}")))
            .await
            .unwrap();
    }
    wait_stats(&a, "every record running in a", |s| s.running == 10).await;
    // b joins: a must give up a partition whose handler is blocked, so b's
    // subscribe waits on a's revoke.
    let b = bus(&broker, "shared", |_| {}).await;
    let b2 = b.clone();
    let (g2, d2) = (gate.clone(), done.clone());
    let joining = tokio::spawn(async move {
        b2.subscribe("busy", gated(&g2, &d2), SubscribeOptions::new())
            .await
    });
    wait_stats(&a, "a's revoke to begin", |s| s.revoked_total > 0).await;
    // The gate is shut: the revoke cannot finish, so neither can the join.
    assert!(
        !joining.is_finished(),
        "the rebalance waits for a's running records"
    );
    for bus in [&a, &b] {
        let health = tokio::time::timeout(Duration::from_secs(1), bus.health())
            .await
            .expect("health does not wait for the rebalance");
        // `b` is still joining (no partition yet): degraded, never unhealthy.
        assert_ne!(health.overall, HealthState::Unhealthy, "{health:?}");
        tokio::time::timeout(Duration::from_secs(1), bus.lag())
            .await
            .expect("lag does not wait for the rebalance")
            .unwrap();
    }
    gate.add_permits(1_000);
    joining.await.unwrap().unwrap();
    eventually("all handled", 30, || done.load(Ordering::SeqCst) >= 10).await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// Lanes are handed to worker tasks several at a time. A record that waits
/// (a handler not ready at once, or a retry backoff) must not hold back the
/// other keys handed out with it: here the waiting records only finish once
/// every other key was handled, so a held-back lane would never finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_record_never_holds_back_other_keys() {
    let broker = broker(1);
    let b = bus(&broker, "shifts", |c| {
        c.dispatch.max_concurrency = 64;
        c.retry.initial_backoff = Duration::from_millis(20);
        c.retry.max_backoff = Duration::from_millis(20);
        c.retry.max_attempts = 1_000;
    })
    .await;
    const OTHERS: usize = 300;
    let others_done = Arc::new(AtomicUsize::new(0));
    let all_others = Arc::new(tokio::sync::Notify::new());
    let (done, all) = (others_done.clone(), all_others.clone());
    let waiting_done = Arc::new(AtomicUsize::new(0));
    let waited = waiting_done.clone();
    b.subscribe(
        "mixed",
        move |d: Delivery| {
            let (done, all, waited) = (done.clone(), all.clone(), waited.clone());
            async move {
                match d.key_str() {
                    // Pending until every other key was handled.
                    Some("waits") => {
                        while done.load(Ordering::SeqCst) < OTHERS {
                            let _ = tokio::time::timeout(Duration::from_millis(50), all.notified())
                                .await;
                        }
                        waited.fetch_add(1, Ordering::SeqCst);
                        Ok(())
                    }
                    // Fails (retryable) until every other key was handled.
                    Some("retries") if done.load(Ordering::SeqCst) < OTHERS => {
                        Err(jxt_eventbus::HandlerError::retryable("not yet"))
                    }
                    Some("retries") => {
                        waited.fetch_add(1, Ordering::SeqCst);
                        Ok(())
                    }
                    _ => {
                        if done.fetch_add(1, Ordering::SeqCst) + 1 == OTHERS {
                            all.notify_waiters();
                        }
                        Ok(())
                    }
                }
            }
        },
        SubscribeOptions::new(),
    )
    .await
    .unwrap();
    // The waiting keys first, then the others: one fetch, one partition, so
    // they are handed out together.
    let mut batch = vec![
        Message::new("w").with_key("waits"),
        Message::new("r").with_key("retries"),
    ];
    batch.extend((0..OTHERS).map(|i| Message::new("x").with_key(format!("k{i}"))));
    for r in b.publish_batch("mixed", batch).await.unwrap() {
        r.unwrap();
    }
    eventually("every record handled", 30, || {
        others_done.load(Ordering::SeqCst) == OTHERS && waiting_done.load(Ordering::SeqCst) == 2
    })
    .await;
    b.shutdown().await.unwrap();
}
