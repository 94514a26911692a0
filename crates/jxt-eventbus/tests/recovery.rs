//! Backlog detection and recovery mode, on the memory backend.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use jxt_eventbus::backlog::BacklogChange;
use jxt_eventbus::config::MemoryConfig;
use jxt_eventbus::{
    BusConfig, Delivery, EventBus, HealthState, MemoryBroker, Message, SubscribeOptions,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_at_start_up_is_worked_off_in_recovery_mode() {
    let broker = MemoryBroker::new(MemoryConfig {
        partitions: 4,
        ..MemoryConfig::default()
    });
    let publisher = EventBus::builder()
        .memory_broker(broker.clone())
        .group("pub")
        .build()
        .await
        .unwrap();
    for i in 0..50_000 {
        publisher
            .publish(
                "orders",
                Message::new("x").with_key(format!("order-{}", i % 300)),
            )
            .await
            .unwrap();
    }

    let mut config = BusConfig {
        group: "billing".into(),
        ..BusConfig::default()
    };
    config.backlog.check_interval = Duration::from_millis(50);
    config.backlog.max_lag = 1_000;
    config.backlog.clean_checks = 2;
    let bus = EventBus::builder()
        .config(config)
        .memory_broker(broker)
        .build()
        .await
        .unwrap();
    let (entered, left) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (e, l) = (entered.clone(), left.clone());
    bus.on_backlog_change(move |c| {
        let counter = match c {
            BacklogChange::RecoveryEntered(_) => &e,
            BacklogChange::RecoveryLeft(_) => &l,
            _ => return,
        };
        counter.fetch_add(1, Ordering::SeqCst);
    });
    let (in_recovery, normal) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (r, n) = (in_recovery.clone(), normal.clone());
    bus.subscribe(
        "orders",
        move |d: Delivery| {
            if d.in_recovery() { &r } else { &n }.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        },
        SubscribeOptions::new(),
    )
    .await
    .unwrap();
    assert!(
        bus.is_recovering(),
        "starts in recovery mode: {:?}",
        bus.backlog_state()
    );
    let health = bus.health().await;
    assert_eq!(health.overall, HealthState::Degraded, "{health:?}");
    assert!(bus
        .backlog_state()
        .topics
        .iter()
        .any(|t| t.topic == "orders" && t.over));

    tokio::time::timeout(Duration::from_secs(60), bus.caught_up())
        .await
        .expect("caught up");
    assert!(!bus.is_recovering());
    assert_eq!(entered.load(Ordering::SeqCst), 1, "entered once");
    assert_eq!(left.load(Ordering::SeqCst), 1, "left once");
    assert!(
        in_recovery.load(Ordering::SeqCst) > 0,
        "handlers saw recovery mode"
    );
    assert_eq!(
        in_recovery.load(Ordering::SeqCst) + normal.load(Ordering::SeqCst),
        50_000
    );
    assert_eq!(bus.health().await.overall, HealthState::Healthy);

    // After catching up, new records are handled in normal mode.
    let before = normal.load(Ordering::SeqCst);
    for i in 0..10 {
        publisher
            .publish("orders", Message::new("y").with_key(format!("order-{i}")))
            .await
            .unwrap();
    }
    for _ in 0..500 {
        if normal.load(Ordering::SeqCst) == before + 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(normal.load(Ordering::SeqCst), before + 10);
    assert_eq!(entered.load(Ordering::SeqCst), 1);
    bus.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_backlog_no_recovery_mode() {
    let mut config = BusConfig::default();
    config.backlog.check_interval = Duration::from_millis(20);
    let bus = EventBus::from_config(config).await.unwrap();
    let handled = Arc::new(AtomicUsize::new(0));
    let h = handled.clone();
    bus.subscribe(
        "quiet",
        move |d: Delivery| {
            assert!(!d.in_recovery());
            h.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        },
        SubscribeOptions::new(),
    )
    .await
    .unwrap();
    for i in 0..100 {
        bus.publish("quiet", Message::new("x").with_key(format!("k{i}")))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(handled.load(Ordering::SeqCst), 100);
    assert!(!bus.is_recovering());
    assert!(bus.backlog_state().checked_at.is_some(), "checks ran");
    bus.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_piling_up_are_a_publisher_backlog() {
    // A partition that holds 5 records and a consumer that does not move:
    // publishes beyond that wait for room, so they pile up in flight.
    let broker = MemoryBroker::new(MemoryConfig {
        partitions: 1,
        max_retained_per_partition: 5,
        publish_timeout: Duration::from_secs(30),
    });
    let mut config = BusConfig::default();
    config.backlog.max_publish_in_flight = 3;
    let bus = EventBus::builder()
        .config(config)
        .memory_broker(broker)
        .build()
        .await
        .unwrap();
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let ev = events.clone();
    bus.on_backlog_change(move |c| {
        if let BacklogChange::PublisherBacklog(s) | BacklogChange::PublisherCleared(s) = c {
            ev.lock().unwrap().push(s.backlog);
        }
    });
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let g = gate.clone();
    bus.subscribe(
        "piles",
        move |_d: Delivery| {
            let g = g.clone();
            async move {
                g.acquire().await.unwrap().forget();
                Ok(())
            }
        },
        SubscribeOptions::new(),
    )
    .await
    .unwrap();
    let mut waiting = Vec::new();
    for i in 0..10 {
        let b = bus.clone();
        waiting.push(tokio::spawn(async move {
            b.publish("piles", Message::new(format!("{i}"))).await
        }));
    }
    for _ in 0..300 {
        if bus.backlog_state().publisher.backlog {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let state = bus.backlog_state().publisher;
    assert!(state.backlog && state.in_flight >= 4, "{state:?}");
    let health = bus.health().await;
    assert!(
        health
            .components
            .iter()
            .any(|c| c.name == "producer" && c.state == HealthState::Degraded),
        "{health:?}"
    );
    gate.add_permits(1_000);
    for w in waiting {
        w.await.unwrap().unwrap();
    }
    assert!(!bus.backlog_state().publisher.backlog);
    assert_eq!(
        *events.lock().unwrap(),
        vec![true, false],
        "reported once each way"
    );
    bus.shutdown().await.unwrap();
}
