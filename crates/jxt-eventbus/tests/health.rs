//! The health model on the memory backend: the stall detector, the
//! per-subscription components and the heartbeat probe.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jxt_eventbus::config::{HealthConfig, MemoryConfig, ProbeConfig};
use jxt_eventbus::{
    BusConfig, Delivery, EventBus, HealthState, HealthStatus, MemoryBroker, Message,
    SubscribeOptions,
};
use tokio::sync::Semaphore;

fn config(health: HealthConfig) -> BusConfig {
    BusConfig {
        health,
        ..BusConfig::default()
    }
}

/// Polls health until `done` holds, for at most `within`; returns the last.
async fn health_until(
    bus: &EventBus,
    within: Duration,
    done: impl Fn(&HealthStatus) -> bool,
) -> HealthStatus {
    let deadline = Instant::now() + within;
    loop {
        let h = bus.health().await;
        if done(&h) || Instant::now() > deadline {
            return h;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn state(h: &HealthStatus, name: &str) -> HealthState {
    h.component(name)
        .unwrap_or_else(|| panic!("no component {name}: {h:?}"))
        .state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_handler_makes_the_bus_unhealthy_until_it_moves() {
    let broker = MemoryBroker::new(MemoryConfig {
        partitions: 2,
        ..MemoryConfig::default()
    });
    let bus = EventBus::builder()
        .config(config(HealthConfig {
            stall_after: Duration::from_millis(300),
            ..HealthConfig::default()
        }))
        .memory_broker(broker)
        .build()
        .await
        .unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let g = gate.clone();
    let handler = move |d: Delivery| {
        let g = g.clone();
        async move {
            if d.key_str() == Some("stuck") {
                // Held until the test lets it go: a handler hung on I/O.
                g.acquire().await.unwrap().forget();
            }
            Ok(())
        }
    };
    bus.subscribe("orders", handler, SubscribeOptions::new())
        .await
        .unwrap();
    bus.subscribe(
        "audit",
        |_d: Delivery| async { Ok(()) },
        SubscribeOptions::new(),
    )
    .await
    .unwrap();
    let h = health_until(&bus, Duration::from_secs(5), |h| h.is_healthy()).await;
    assert!(h.is_healthy(), "{h:?}");
    assert_eq!(state(&h, "subscription:orders"), HealthState::Healthy);
    assert_eq!(state(&h, "subscription:audit"), HealthState::Healthy);

    bus.publish("orders", Message::new("x").with_key("stuck"))
        .await
        .unwrap();
    // Below the threshold the hung handler is just slow.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(bus.health().await.is_healthy());

    let h = health_until(&bus, Duration::from_secs(5), |h| {
        h.overall == HealthState::Unhealthy
    })
    .await;
    assert_eq!(h.overall, HealthState::Unhealthy, "{h:?}");
    let orders = h.component("subscription:orders").unwrap();
    assert_eq!(orders.state, HealthState::Unhealthy, "{orders:?}");
    assert!(orders.reason.contains("stalled"), "{orders:?}");
    assert!(orders.reason.contains("1 running"), "{orders:?}");
    // Only the stalled subscription is blamed.
    assert_eq!(state(&h, "subscription:audit"), HealthState::Healthy);
    let not_ready = bus.readiness().await.unwrap_err();
    assert!(not_ready.contains("subscription:orders"), "{not_ready}");

    gate.add_permits(1);
    let h = health_until(&bus, Duration::from_secs(5), |h| h.is_healthy()).await;
    assert!(
        h.is_healthy(),
        "the stall clears once the record finishes: {h:?}"
    );
    bus.readiness().await.unwrap();
    bus.shutdown().await.unwrap();
}

fn probe_config(interval_ms: u64, max_missed: u32) -> HealthConfig {
    HealthConfig {
        probe: ProbeConfig {
            enabled: true,
            topic: "health-beats".into(),
            interval: Duration::from_millis(interval_ms),
            timeout: Duration::from_millis(500),
            max_missed,
        },
        ..HealthConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_reports_round_trips_and_missing_heartbeats() {
    let broker = MemoryBroker::new(MemoryConfig::default());
    let bus = EventBus::builder()
        .config(config(probe_config(50, 2)))
        .memory_broker(broker.clone())
        .build()
        .await
        .unwrap();
    let h = health_until(&bus, Duration::from_secs(5), |h| {
        h.component("probe")
            .is_some_and(|p| p.reason.contains("round trip"))
    })
    .await;
    let probe = h.component("probe").expect("probe component");
    assert_eq!(probe.state, HealthState::Healthy, "{probe:?}");
    assert!(probe.reason.contains("round trip"), "{probe:?}");
    assert!(bus
        .subscriptions()
        .await
        .contains(&"health-beats".to_string()));

    // Heartbeats can no longer be written: each one is missing.
    broker.set_unavailable("health-beats", true);
    let h = health_until(&bus, Duration::from_secs(5), |h| {
        state(h, "probe") == HealthState::Unhealthy
    })
    .await;
    let probe = h.component("probe").unwrap();
    assert_eq!(probe.state, HealthState::Unhealthy, "{probe:?}");
    assert!(
        probe.reason.contains("heartbeat publish failed"),
        "{probe:?}"
    );
    assert_eq!(h.overall, HealthState::Unhealthy);

    broker.set_unavailable("health-beats", false);
    let h = health_until(&bus, Duration::from_secs(5), |h| h.is_healthy()).await;
    assert!(h.is_healthy(), "{h:?}");
    bus.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_heartbeats_of_a_partition_another_member_owns_are_not_missing() {
    // One partition: one member of the group consumes every heartbeat.
    let broker = MemoryBroker::new(MemoryConfig {
        partitions: 1,
        ..MemoryConfig::default()
    });
    let mut buses = Vec::new();
    for _ in 0..2 {
        let bus = EventBus::builder()
            .config(config(probe_config(50, 1)))
            .memory_broker(broker.clone())
            .build()
            .await
            .unwrap();
        buses.push(bus);
    }
    let mut reasons = Vec::new();
    for bus in &buses {
        let h = health_until(bus, Duration::from_secs(5), |h| {
            h.component("probe").is_some_and(|p| {
                p.reason.contains("round trip") || p.reason.contains("another member")
            })
        })
        .await;
        let probe = h.component("probe").unwrap().clone();
        assert_eq!(probe.state, HealthState::Healthy, "{probe:?}");
        reasons.push(probe.reason);
    }
    // A few more heartbeats: the non-owner still reports no missing ones.
    tokio::time::sleep(Duration::from_millis(800)).await;
    for bus in &buses {
        let h = bus.health().await;
        assert_eq!(state(&h, "probe"), HealthState::Healthy, "{h:?}");
    }
    assert_eq!(
        reasons
            .iter()
            .filter(|r| r.contains("another member"))
            .count(),
        1,
        "{reasons:?}"
    );
    for bus in buses {
        bus.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_health_settings_name_their_field() {
    let mut c = config(probe_config(50, 0));
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("health.probe.max_missed"), "{e}");
    c.health.probe.max_missed = 1;
    c.health.probe.topic = "bad topic".into();
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("health.probe.topic"), "{e}");
    c.health.check_interval = Duration::ZERO;
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("health.check_interval"), "{e}");
}
