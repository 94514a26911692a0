//! Health on Kafka: `/readyz` follows the broker (503 while Kafka is
//! stopped, 200 once it is back — on a private broker started by
//! `scripts/services`, so the shared one is never stopped), the heartbeat
//! probe round-trips through the broker, and `/status` answers at once
//! during a subscription change without asking the broker per request.
#![cfg(all(feature = "kafka", feature = "http"))]

mod kafka_support;
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jxt_eventbus::config::ProbeConfig;
use jxt_eventbus::{Delivery, EventBus, HealthState, Message, SubscribeOptions};
use support::http_get::get;
use support::private_kafka::PrivateKafka;

/// Polls `/readyz` until it answers `status`; returns the body.
async fn readyz_until(addr: std::net::SocketAddr, status: u16, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let r = get(addr, "/readyz").await;
        if r.status == status {
            return r.body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz still {} after {within:?}: {}",
            r.status,
            r.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_kafka_is_down_and_200_when_it_returns() {
    // The shared broker answering shows the rig (java, jars) is in place.
    if support::kafka_brokers().is_none() {
        return;
    }
    let kafka = PrivateKafka::start();
    let mut config = kafka_support::config(&kafka.brokers, "g-readiness");
    config.health.check_interval = Duration::from_millis(200);
    config.health.broker_unreachable_after = Duration::from_secs(2);
    config.kafka.connect_timeout = Duration::from_secs(2);
    let bus = EventBus::from_config(config).await.unwrap();
    let handled = Arc::new(AtomicUsize::new(0));
    let h = handled.clone();
    bus.subscribe(
        "readiness",
        move |_: Delivery| {
            h.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        },
        SubscribeOptions::new(),
    )
    .await
    .unwrap();
    let server = jxt_eventbus::http::serve(bus.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = server.local_addr();
    readyz_until(addr, 200, Duration::from_secs(60)).await;

    kafka.stop();
    let body = readyz_until(addr, 503, Duration::from_secs(20)).await;
    assert!(body.contains("broker"), "{body}");
    // Past `broker_unreachable_after` the bus is unhealthy, not just unready.
    let deadline = Instant::now() + Duration::from_secs(20);
    while bus.health().await.overall != HealthState::Unhealthy {
        assert!(Instant::now() < deadline, "{:?}", bus.health().await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Liveness is not readiness: the process is fine, the broker is not.
    assert_eq!(get(addr, "/healthz").await.status, 200);

    kafka.restart();
    readyz_until(addr, 200, Duration::from_secs(90)).await;
    // And it works again end to end.
    bus.publish("readiness", Message::new("back").with_key("k"))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while handled.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the record published after the restart was not handled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bus.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeat_probe_round_trips_through_kafka() {
    let Some(brokers) = support::kafka_brokers() else {
        return;
    };
    let mut config = kafka_support::config(&brokers, &support::unique_name("g-probe"));
    config.health.probe = ProbeConfig {
        enabled: true,
        topic: support::unique_name("health"),
        interval: Duration::from_millis(200),
        timeout: Duration::from_secs(5),
        max_missed: 3,
    };
    let bus = EventBus::from_config(config).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let probe = loop {
        let h = bus.health().await;
        let probe = h.component("probe").expect("probe component").clone();
        if probe.reason.contains("round trip") || Instant::now() > deadline {
            break probe;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(probe.state, HealthState::Healthy, "{probe:?}");
    assert!(probe.reason.contains("round trip"), "{probe:?}");
    bus.shutdown().await.unwrap();
}

/// `/status` answers at once while a subscription change is held up by a
/// rebalance, and repeated requests are answered from one lag reading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_answers_at_once_during_a_subscribe_and_reads_lag_in_the_background() {
    let Some(brokers) = support::kafka_brokers() else {
        return;
    };
    let (first, second) = (support::unique_name("st-a"), support::unique_name("st-b"));
    kafka_support::create_topic(&brokers, &first, 2).await;
    kafka_support::create_topic(&brokers, &second, 1).await;
    let group = support::unique_name("g-status");
    let mut config = kafka_support::config(&brokers, &group);
    // A revoke waits this long for the handlers still running.
    config.dispatch.revoke_timeout = Duration::from_secs(60);
    config.health.status.lag_max_age = Duration::from_secs(3600);
    let a = EventBus::from_config(config.clone()).await.unwrap();

    // Bus A handles one record of each partition of `first` and holds on
    // to both until released.
    let (release, released) = tokio::sync::watch::channel(false);
    let running = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let r = running.clone();
    a.subscribe(
        &first,
        move |d: Delivery| {
            r.lock().unwrap().insert(d.partition());
            let mut released = released.clone();
            async move {
                let _ = released.wait_for(|r| *r).await;
                Ok(())
            }
        },
        SubscribeOptions::new(),
    )
    .await
    .unwrap();
    let mut partitions = std::collections::BTreeSet::new();
    for i in 0.. {
        let receipt = a
            .publish(&first, Message::new("x").with_key(format!("k{i}")))
            .await
            .unwrap();
        partitions.insert(receipt.partition);
        if partitions.len() == 2 {
            break;
        }
    }
    support::eventually("both partitions have a record running", 30, || {
        running.lock().unwrap().len() == 2
    })
    .await;
    let server = jxt_eventbus::http::serve(a.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = server.local_addr();

    // Bus B joins the group: A must give up a partition whose record is
    // still running, so A's consumer waits in the revoke.
    let b = EventBus::from_config(config.clone()).await.unwrap();
    let b_subscribe = tokio::spawn({
        let (b, first) = (b.clone(), first.clone());
        async move {
            b.subscribe(
                &first,
                |_: Delivery| async { Ok(()) },
                SubscribeOptions::new(),
            )
            .await
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while a.dispatch_stats().await.map_or(0, |s| s.revoked_total) == 0 {
        assert!(Instant::now() < deadline, "bus A was never asked to revoke");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Meanwhile A subscribes to another topic: the change waits for the
    // consumer, which waits for the revoke.
    let a_subscribe = tokio::spawn({
        let (a, second) = (a.clone(), second.clone());
        async move {
            a.subscribe(
                &second,
                |_: Delivery| async { Ok(()) },
                SubscribeOptions::new(),
            )
            .await
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while !a
        .dispatch_stats()
        .await
        .is_some_and(|s| s.topics.contains(&second))
    {
        assert!(Instant::now() < deadline, "the subscribe never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let started = Instant::now();
    let reply = tokio::time::timeout(Duration::from_secs(5), get(addr, "/status"))
        .await
        .expect("/status answered within 5 s during a subscription change");
    let took = started.elapsed();
    assert!(
        !a_subscribe.is_finished(),
        "the subscribe was still in progress"
    );
    assert_eq!(reply.status, 200);
    let doc: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(doc["subscription_change_in_progress"], true, "{doc}");
    assert!(
        took < Duration::from_secs(2),
        "/status took {took:?} during a subscription change"
    );

    release.send(true).unwrap();
    a_subscribe.await.unwrap().unwrap();
    b_subscribe.await.unwrap().unwrap();

    // Lag is read in the background; requests read the latest reading.
    let deadline = Instant::now() + Duration::from_secs(30);
    let checked_at = loop {
        let doc: serde_json::Value =
            serde_json::from_str(&get(addr, "/status").await.body).unwrap();
        if let Some(at) = doc["lag_checked_at"].as_str() {
            break at.to_string();
        }
        assert!(Instant::now() < deadline, "lag was never read: {doc}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for _ in 0..50 {
        let doc: serde_json::Value =
            serde_json::from_str(&get(addr, "/status").await.body).unwrap();
        assert_eq!(
            doc["lag_checked_at"].as_str(),
            Some(checked_at.as_str()),
            "a request read the lag from the broker again"
        );
        assert_eq!(doc["subscription_change_in_progress"], false);
    }
    server.stop();
    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
}
