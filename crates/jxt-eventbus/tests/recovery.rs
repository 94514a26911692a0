//! Backlog detection and recovery mode, on the memory backend.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use jxt_eventbus::backlog::RecoveryChange;
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
    bus.on_recovery_change(move |c| {
        let counter = match c {
            RecoveryChange::Entered(_) => &e,
            RecoveryChange::Left(_) => &l,
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
