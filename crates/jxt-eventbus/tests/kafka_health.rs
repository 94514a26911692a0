//! Health on Kafka: `/readyz` follows the broker (503 while Kafka is
//! stopped, 200 once it is back — on a private broker started by
//! `scripts/services`, so the shared one is never stopped), and the heartbeat
//! probe round-trips through the broker.
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
