//! The operator HTTP endpoints on a real port, over the memory backend.
//!
#![cfg(feature = "http")]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jxt_eventbus::config::MemoryConfig;
use jxt_eventbus::http::{self, OPENMETRICS_CONTENT_TYPE};
use jxt_eventbus::metrics::BusMetrics;
use jxt_eventbus::{
    BusConfig, Delivery, ErrorKind, EventBus, HandlerError, MemoryBroker, Message, SubscribeOptions,
};
use prometheus_client::registry::Registry;
use support::http_get::get;
use support::metric_value;

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn bus(broker: &MemoryBroker, group: &str) -> EventBus {
    EventBus::builder()
        .config(BusConfig {
            group: group.into(),
            ..BusConfig::default()
        })
        .memory_broker(broker.clone())
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_report_a_known_workload() {
    let broker = MemoryBroker::new(MemoryConfig::default());
    let bus = bus(&broker, "http").await;
    let server = http::serve(bus.clone(), localhost()).await.unwrap();
    let addr = server.local_addr();
    assert!(addr.ip().is_loopback());

    // Open, nothing subscribed: alive and ready.
    assert_eq!(get(addr, "/healthz").await.status, 200);
    assert_eq!(get(addr, "/readyz").await.status, 200);

    bus.subscribe(
        "orders",
        |d: Delivery| async move {
            if &d.payload()[..] == b"bad" {
                Err(HandlerError::new(ErrorKind::Permanent, "bad order"))
            } else {
                Ok(())
            }
        },
        SubscribeOptions::new(),
    )
    .await
    .unwrap();
    bus.publish("orders", Message::new("bad").with_key("poison"))
        .await
        .unwrap();
    for i in 0..7 {
        bus.publish("orders", Message::new("x").with_key(format!("k{i}")))
            .await
            .unwrap();
    }
    let consumed =
        r#"eventbus_messages_consumed_total{topic="orders",backend="memory",result="ok"}"#;
    let deadline = Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let r = get(addr, "/metrics").await;
        assert_eq!(r.status, 200);
        let dead = r#"eventbus_dead_lettered_total{topic="orders",backend="memory"}"#;
        if metric_value(&r.body, consumed) == Some(7.0) && metric_value(&r.body, dead) == Some(1.0)
        {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "consumed never reached 7:\n{}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        metrics.header("content-type"),
        Some(OPENMETRICS_CONTENT_TYPE)
    );
    assert!(metrics.body.ends_with("# EOF\n"));
    assert_eq!(
        metric_value(
            &metrics.body,
            r#"eventbus_messages_published_total{topic="orders",backend="memory",result="ok"}"#
        ),
        Some(8.0)
    );

    let ready = get(addr, "/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.body);

    // Lag is read in the background once a request asks for it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (status, doc) = loop {
        let status = get(addr, "/status").await;
        assert_eq!(status.status, 200);
        let doc: serde_json::Value = serde_json::from_str(&status.body).unwrap();
        if doc["lag_checked_at"].is_string() {
            break (status, doc);
        }
        assert!(Instant::now() < deadline, "lag never read: {doc}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.header("content-type"), Some("application/json"));
    assert_eq!(doc["subscription_change_in_progress"], false);
    assert_eq!(doc["subscriptions"], serde_json::json!(["orders"]));
    assert_eq!(doc["backend"], "memory");
    assert_eq!(doc["closed"], false);
    let partitions = doc["partitions"].as_array().unwrap();
    assert!(!partitions.is_empty());
    assert!(partitions
        .iter()
        .all(|p| p["topic"] == "orders" && p["lag"].is_i64()));
    assert_eq!(doc["recovery"]["recovering"], false);
    assert!(doc["dispatch"]["assigned_partitions"].as_u64().unwrap() >= 1);
    assert!(doc["dispatch"]["live_lanes"].is_u64());
    assert!(doc["health"]["overall"].is_string());
    let errors = doc["recent_errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["kind"], "permanent");
    // Error texts may quote personal data: hidden unless configured.
    assert!(errors[0].get("message").is_none(), "{errors:?}");
    assert_eq!(errors[0]["topic"], "orders");
    assert!(doc["health"]["components"].as_array().unwrap().len() >= 2);

    bus.shutdown().await.unwrap();
    assert_eq!(get(addr, "/healthz").await.status, 503);
    let ready = get(addr, "/readyz").await;
    assert_eq!(ready.status, 503);
    assert!(ready.body.contains("shut down"), "{}", ready.body);
    server.stop();
}

#[tokio::test]
async fn a_mounted_router_serves_the_application_registry() {
    let broker = MemoryBroker::new(MemoryConfig::default());
    let mut registry = Registry::default();
    let metrics = BusMetrics::new();
    metrics.register(&mut registry);
    let bus = EventBus::builder()
        .config(BusConfig {
            group: "app".into(),
            ..BusConfig::default()
        })
        .memory_broker(broker)
        .metrics(metrics)
        .build()
        .await
        .unwrap();
    bus.publish("orders", Message::new("x")).await.unwrap();

    let app = axum::Router::new().nest(
        "/eventbus",
        http::router_with_registry(bus.clone(), Some(Arc::new(registry))),
    );
    let listener = tokio::net::TcpListener::bind(localhost()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let r = get(addr, "/eventbus/metrics").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        metric_value(
            &r.body,
            r#"eventbus_messages_published_total{topic="orders",backend="memory",result="ok"}"#
        ),
        Some(1.0)
    );
    // Without a registry, /metrics says where the metrics are.
    let own = http::serve(bus.clone(), localhost()).await.unwrap();
    assert_eq!(get(own.local_addr(), "/metrics").await.status, 404);
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_subscribed_without_partitions() {
    // One partition, two members of one group: one of them owns nothing.
    let broker = MemoryBroker::new(MemoryConfig {
        partitions: 1,
        ..MemoryConfig::default()
    });
    let (a, b) = (bus(&broker, "pair").await, bus(&broker, "pair").await);
    for bus in [&a, &b] {
        bus.subscribe(
            "orders",
            |_: Delivery| async { Ok(()) },
            SubscribeOptions::new(),
        )
        .await
        .unwrap();
    }
    let (sa, sb) = (
        http::serve(a.clone(), localhost()).await.unwrap(),
        http::serve(b.clone(), localhost()).await.unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (ra, rb) = (
            get(sa.local_addr(), "/readyz").await,
            get(sb.local_addr(), "/readyz").await,
        );
        let mut statuses = [ra.status, rb.status];
        statuses.sort();
        if statuses == [200, 503] {
            let idle = if ra.status == 503 { ra } else { rb };
            assert!(
                idle.body
                    .contains("consumer: 1 topics subscribed, no partition assigned"),
                "{}",
                idle.body
            );
            break;
        }
        assert!(Instant::now() < deadline, "readiness {statuses:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn status_shows_error_texts_only_when_configured() {
    let broker = MemoryBroker::new(MemoryConfig::default());
    let mut config = BusConfig {
        group: "texts".into(),
        ..BusConfig::default()
    };
    config.health.status.show_error_messages = true;
    let bus = EventBus::builder()
        .config(config)
        .memory_broker(broker)
        .build()
        .await
        .unwrap();
    bus.subscribe(
        "orders",
        |_: Delivery| async { Err(HandlerError::new(ErrorKind::Permanent, "bad order")) },
        SubscribeOptions::new(),
    )
    .await
    .unwrap();
    bus.publish("orders", Message::new("x")).await.unwrap();
    let server = http::serve(bus.clone(), localhost()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let errors = loop {
        let doc: serde_json::Value =
            serde_json::from_str(&get(server.local_addr(), "/status").await.body).unwrap();
        let errors = doc["recent_errors"].as_array().unwrap().clone();
        if !errors.is_empty() {
            break errors;
        }
        assert!(Instant::now() < deadline, "no error reported: {doc}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(errors[0]["message"], "bad order");
    bus.shutdown().await.unwrap();
}

/// `serve_with_shutdown`: serving until the signal, then stopped; the
/// re-exported axum mounts the router.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_stops_gracefully_on_its_signal() {
    let broker = MemoryBroker::new(MemoryConfig::default());
    let bus = bus(&broker, "http-stop").await;
    let (stop, stopping) = tokio::sync::oneshot::channel::<()>();
    let server = http::serve_with_shutdown(bus.clone(), localhost(), async {
        let _ = stopping.await;
    })
    .await
    .unwrap();
    let addr = server.local_addr();
    assert_eq!(get(addr, "/healthz").await.status, 200);
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server.stopped())
        .await
        .expect("the server stops once signalled");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "nothing listens after the stop"
    );
    // Mounting with the re-exported axum compiles against the same version.
    let _app: http::axum::Router =
        http::axum::Router::new().nest("/eventbus", http::router(bus.clone()));
    bus.shutdown().await.unwrap();
}

/// The endpoints live as long as the bus: `bus.stopped()` as the signal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_tied_to_the_bus_stops_after_its_shutdown() {
    let broker = MemoryBroker::new(MemoryConfig::default());
    let bus = bus(&broker, "http-bus-stop").await;
    let server = http::serve_with_shutdown(bus.clone(), localhost(), bus.stopped())
        .await
        .unwrap();
    let addr = server.local_addr();
    assert_eq!(get(addr, "/readyz").await.status, 200);
    let stopped = bus.stopped();
    tokio::pin!(stopped);
    assert!(
        futures::poll!(stopped.as_mut()).is_pending(),
        "not before shutdown"
    );
    bus.shutdown().await.unwrap();
    stopped.await;
    tokio::time::timeout(Duration::from_secs(10), server.stopped())
        .await
        .expect("the server stops once the bus stopped");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

/// A free loopback port (bound, read, released) for runners that take an
/// address and do not report the one they bound.
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// `run_until`: on the signal the bus drains while the endpoints still
/// answer (`/healthz` 503 "shut down"); both have stopped when it returns,
/// and the record that was running was handled and committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_until_stops_the_bus_and_the_endpoints_together() {
    let broker = MemoryBroker::new(MemoryConfig::default());
    let bus = bus(&broker, "http-run").await;
    let started = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let (s, r) = (started.clone(), release.clone());
    let hold = move |_: Delivery| {
        let (s, r) = (s.clone(), r.clone());
        async move {
            s.notify_one();
            r.acquire().await.unwrap().forget();
            Ok(())
        }
    };
    bus.subscribe("orders", hold, SubscribeOptions::new())
        .await
        .unwrap();
    bus.publish("orders", Message::new("1").with_key("k"))
        .await
        .unwrap();
    started.notified().await;

    let addr = free_port();
    let (stop, stopping) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn({
        let bus = bus.clone();
        async move {
            http::run_until(&bus, addr, async {
                let _ = stopping.await;
            })
            .await
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "the endpoints never listened");
        tokio::task::yield_now().await;
    }
    assert_eq!(get(addr, "/healthz").await.status, 200);

    stop.send(()).unwrap();
    while !bus.is_closed() {
        assert!(
            Instant::now() < deadline,
            "the bus never began its shutdown"
        );
        tokio::task::yield_now().await;
    }
    // Draining the held record: the endpoints still answer, and say why.
    let health = get(addr, "/healthz").await;
    assert_eq!((health.status, health.body.as_str()), (503, "shut down\n"));
    assert!(!running.is_finished());

    release.add_permits(1);
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("run_until returns once the bus and the endpoints stopped")
        .unwrap()
        .unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    let committed: i64 = broker
        .committed("http-run", "orders")
        .into_iter()
        .flatten()
        .sum();
    assert_eq!(committed, 1, "the held record was handled, then committed");
}

/// A bus shut down elsewhere ends `run_until` too; an address in use is a
/// clear error and leaves the bus running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_until_ends_with_the_bus_and_reports_a_taken_address() {
    let broker = MemoryBroker::new(MemoryConfig::default());
    let bus = bus(&broker, "http-run-taken").await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let err = http::run_until(&bus, addr, std::future::pending())
        .await
        .unwrap_err();
    assert!(matches!(err, jxt_eventbus::Error::Serve { .. }), "{err:?}");
    assert!(err
        .to_string()
        .starts_with(&format!("cannot serve the operator endpoints on {addr}: ")));
    assert!(!bus.is_closed());
    drop(taken);

    let running = tokio::spawn({
        let bus = bus.clone();
        async move { http::run_until(&bus, free_port(), std::future::pending()).await }
    });
    bus.shutdown().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("run_until returns once the bus stopped")
        .unwrap()
        .unwrap();
}
