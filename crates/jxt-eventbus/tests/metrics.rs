//! Prometheus metrics after a known workload on the memory backend, and two
//! buses in one process without collisions.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use jxt_eventbus::config::MemoryConfig;
use jxt_eventbus::metrics::BusMetrics;
use jxt_eventbus::{
    BusConfig, Delivery, ErrorKind, EventBus, MemoryBroker, Message, SubscribeOptions,
};
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use support::eventually;
use support::metric_value;

fn config(group: &str) -> BusConfig {
    let mut c = BusConfig {
        group: group.into(),
        ..BusConfig::default()
    };
    c.retry.initial_backoff = Duration::from_millis(1);
    c.retry.max_backoff = Duration::from_millis(5);
    c.retry.max_attempts = 3;
    c.retry.jitter = false;
    c
}

fn text(registry: &Registry) -> String {
    let mut out = String::new();
    encode(&mut out, registry).unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_match_a_known_workload_exactly() {
    let broker = MemoryBroker::new(MemoryConfig::default());
    let bus = EventBus::builder()
        .config(config("metrics"))
        .memory_broker(broker.clone())
        .build()
        .await
        .unwrap();
    support::workload::subscribe_bad_and_flaky(&bus, "orders").await;
    // 10 single publishes (2 bad, 1 flaky) and a batch of 5 (1 bad).
    for i in 0..10 {
        let payload = match i {
            3 | 7 => "bad",
            5 => "flaky",
            _ => "good",
        };
        bus.publish(
            "orders",
            Message::new(payload).with_key(format!("order-{i}")),
        )
        .await
        .unwrap();
    }
    let batch = (0..5)
        .map(|i| Message::new(if i == 2 { "bad" } else { "good" }).with_key(format!("b-{i}")))
        .collect();
    let results = bus.publish_batch("orders", batch).await.unwrap();
    assert!(results.iter().all(|r| r.is_ok()));

    let registry = bus.metrics_registry().expect("the bus owns its registry");
    let l = r#"{topic="orders",backend="memory"}"#;
    let consumed_ok =
        r#"eventbus_messages_consumed_total{topic="orders",backend="memory",result="ok"}"#;
    let consumed_dlq = r#"eventbus_messages_consumed_total{topic="orders",backend="memory",result="dead_lettered"}"#;
    eventually("every record finished", 10, || {
        let t = text(&registry);
        metric_value(&t, consumed_ok) == Some(12.0) && metric_value(&t, consumed_dlq) == Some(3.0)
    })
    .await;
    eventually("in-flight back to zero", 10, || {
        metric_value(
            &text(&registry),
            r#"eventbus_in_flight_records{backend="memory"}"#,
        ) == Some(0.0)
    })
    .await;
    let t = text(&registry);
    let get = |series: &str| metric_value(&t, series).unwrap_or_else(|| panic!("{series} in\n{t}"));
    assert_eq!(
        get(r#"eventbus_messages_published_total{topic="orders",backend="memory",result="ok"}"#),
        15.0
    );
    assert_eq!(
        get(r#"eventbus_messages_published_total{topic="orders",backend="memory",result="error"}"#),
        0.0
    );
    assert_eq!(
        get(&format!("eventbus_publish_duration_seconds_count{l}")),
        15.0
    );
    assert_eq!(get(consumed_ok), 12.0);
    assert_eq!(get(consumed_dlq), 3.0);
    assert_eq!(get(&format!("eventbus_dead_lettered_total{l}")), 3.0);
    assert_eq!(get(&format!("eventbus_retries_total{l}")), 1.0);
    assert_eq!(
        get(
            r#"eventbus_processing_errors_total{topic="orders",backend="memory",kind="permanent"}"#
        ),
        3.0
    );
    assert_eq!(
        get(
            r#"eventbus_processing_errors_total{topic="orders",backend="memory",kind="retryable"}"#
        ),
        1.0
    );
    // 15 records, one of them tried twice.
    assert_eq!(
        get(&format!("eventbus_handler_duration_seconds_count{l}")),
        16.0
    );
    assert_eq!(
        get(r#"eventbus_publisher_in_flight{backend="memory"}"#),
        0.0
    );
    assert!(get(r#"eventbus_assigned_partitions{backend="memory"}"#) >= 1.0);
    assert!(get(r#"eventbus_rebalances_total{backend="memory",kind="assigned"}"#) >= 1.0);
    assert!(
        t.contains(r#"eventbus_consumer_lag{topic="orders",backend="memory",partition="0"}"#),
        "the subscribe-time backlog check sets the lag gauges:\n{t}"
    );
    assert_eq!(get(r#"eventbus_recovery_mode{backend="memory"}"#), 0.0);
    assert_eq!(get(&format!("eventbus_live_lanes{l}")), 0.0);
    assert_eq!(get(&format!("eventbus_active_lanes{l}")), 0.0);
    let recent = bus.recent_errors();
    assert_eq!(recent.len(), 4, "every failed attempt is kept: {recent:?}");
    assert_eq!(
        recent
            .iter()
            .filter(|e| e.kind == ErrorKind::Retryable)
            .count(),
        1
    );
    bus.shutdown().await.unwrap();
}

async fn publish_n(bus: &EventBus, n: usize) {
    for i in 0..n {
        bus.publish("orders", Message::new("x").with_key(format!("k{i}")))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn two_buses_keep_their_own_metrics() {
    let broker = MemoryBroker::new(MemoryConfig::default());
    let build = |group: &'static str| {
        EventBus::builder()
            .config(config(group))
            .memory_broker(broker.clone())
            .build()
    };
    let (a, b) = (build("a").await.unwrap(), build("b").await.unwrap());
    publish_n(&a, 2).await;
    publish_n(&b, 3).await;
    let ok = r#"eventbus_messages_published_total{topic="orders",backend="memory",result="ok"}"#;
    assert_eq!(
        metric_value(&text(&a.metrics_registry().unwrap()), ok),
        Some(2.0)
    );
    assert_eq!(
        metric_value(&text(&b.metrics_registry().unwrap()), ok),
        Some(3.0)
    );
}

#[tokio::test]
async fn two_buses_on_an_application_registry() {
    let broker = MemoryBroker::new(MemoryConfig::default());
    let mut registry = Registry::default();
    let mut buses = Vec::new();
    for group in ["billing", "shipping"] {
        let metrics = BusMetrics::new();
        metrics.register(registry.sub_registry_with_label(("bus".into(), group.into())));
        let bus = EventBus::builder()
            .config(config(group))
            .memory_broker(broker.clone())
            .metrics(metrics)
            .build()
            .await
            .unwrap();
        assert!(bus.metrics_registry().is_none());
        buses.push(bus);
    }
    publish_n(&buses[0], 4).await;
    publish_n(&buses[1], 1).await;
    let t = text(&registry);
    let series = |bus: &str| {
        format!(
            r#"eventbus_messages_published_total{{bus="{bus}",topic="orders",backend="memory",result="ok"}}"#
        )
    };
    assert_eq!(metric_value(&t, &series("billing")), Some(4.0), "{t}");
    assert_eq!(metric_value(&t, &series("shipping")), Some(1.0), "{t}");
}

/// Cancelled publishes (futures dropped before they resolve, as inside a
/// `tokio::time::timeout`) must not leave the in-flight gauge and the
/// publisher backlog counter raised.
#[tokio::test]
async fn cancelled_publishes_leave_no_publisher_load_behind() {
    use futures::FutureExt;

    // One partition retaining one record, held by a group whose handler
    // never finishes: every publish after the first waits for room.
    let broker = MemoryBroker::new(MemoryConfig {
        partitions: 1,
        max_retained_per_partition: 1,
        publish_timeout: Duration::from_secs(600),
    });
    let mut c = config("cancel");
    c.backlog.max_publish_in_flight = 100;
    let bus = EventBus::builder()
        .config(c)
        .memory_broker(broker.clone())
        .build()
        .await
        .unwrap();
    let started = Arc::new(AtomicUsize::new(0));
    let s = started.clone();
    bus.subscribe(
        "stuck",
        move |_d: Delivery| {
            s.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<jxt_eventbus::HandlerResult>()
        },
        SubscribeOptions::new(),
    )
    .await
    .unwrap();
    bus.publish("stuck", Message::new("first")).await.unwrap();
    eventually("the first record is being handled", 10, || {
        started.load(Ordering::SeqCst) == 1
    })
    .await;
    let registry = bus.metrics_registry().unwrap();
    let gauge = r#"eventbus_publisher_in_flight{backend="memory"}"#;

    // 200 publishes waiting at once raise the publisher backlog alarm ...
    let mut waiting = Vec::new();
    for i in 0..200 {
        let mut f = if i % 2 == 0 {
            bus.publish("stuck", Message::new("x")).map(|_| ()).boxed()
        } else {
            let batch = vec![Message::new("y")];
            bus.publish_batch("stuck", batch).map(|_| ()).boxed()
        };
        assert!(futures::poll!(&mut f).is_pending(), "publish {i} waits");
        waiting.push(f);
    }
    assert_eq!(metric_value(&text(&registry), gauge), Some(200.0));
    let raised = bus.backlog_state().publisher;
    // ... and cancelling them clears it.
    drop(waiting);
    assert_eq!(metric_value(&text(&registry), gauge), Some(0.0));
    assert_eq!(raised.in_flight, 200, "batches count too: {raised:?}");
    assert!(raised.backlog, "{raised:?}");
    let state = bus.backlog_state().publisher;
    assert_eq!(state.in_flight, 0);
    assert!(!state.backlog, "{state:?}");

    // 10,000 publishes cancelled one by one, as by a short timeout.
    for i in 0..10_000 {
        let pending = if i % 2 == 0 {
            bus.publish("stuck", Message::new("x"))
                .map(|_| ())
                .now_or_never()
        } else {
            let batch = vec![Message::new("y"), Message::new("z")];
            bus.publish_batch("stuck", batch).map(|_| ()).now_or_never()
        };
        assert!(pending.is_none(), "publish {i} waits");
    }
    assert_eq!(metric_value(&text(&registry), gauge), Some(0.0));
    let state = bus.backlog_state().publisher;
    assert_eq!(state.in_flight, 0, "{state:?}");
    assert!(!state.backlog, "{state:?}");
    // Only the first record was stored.
    assert_eq!(broker.end_offsets("stuck"), vec![1]);
}
