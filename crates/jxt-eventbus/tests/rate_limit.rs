//! Rate limits of subscriptions and publishers (governor token buckets).
//!
//! governor keeps its own clock, so these measure a short real interval with
//! bounds that allow for scheduling noise but not for a missing limit.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jxt_eventbus::middleware::RateLimit;
use jxt_eventbus::{BusConfig, Delivery, EventBus, Message, SubscribeOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_rate_stays_within_rate_plus_burst() {
    let bus = EventBus::builder().group("limited").build().await.unwrap();
    let handled = Arc::new(AtomicUsize::new(0));
    let h = handled.clone();
    bus.subscribe(
        "limited",
        move |_d: Delivery| {
            h.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        },
        SubscribeOptions::new().rate_limit(RateLimit::per_second(50).burst(5)),
    )
    .await
    .unwrap();
    for i in 0..500 {
        bus.publish("limited", Message::new("x").with_key(format!("k{i}")))
            .await
            .unwrap();
    }
    let start = Instant::now();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let n = handled.load(Ordering::SeqCst);
    let secs = start.elapsed().as_secs_f64();
    let ceiling = 5.0 + 50.0 * (secs + 0.1);
    assert!(
        (n as f64) <= ceiling,
        "{n} handled in {secs:.2}s, more than rate x time + burst ({ceiling})"
    );
    assert!(
        n >= 15,
        "{n} handled: the limit throttles, it does not stop"
    );
    // Dropped, not drained: draining 500 records at 50/s would take 10s.
    drop(bus);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_rate_limit_paces_publishers() {
    let config = BusConfig {
        publish_rate_limit: Some(RateLimit::per_second(100).burst(10)),
        ..BusConfig::default()
    };
    let bus = EventBus::from_config(config).await.unwrap();
    let start = Instant::now();
    for _ in 0..40 {
        bus.publish("paced", Message::new("x")).await.unwrap();
    }
    // 10 at once, then 30 at 100/s: at least ~0.3s.
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "{:?}",
        start.elapsed()
    );
    bus.shutdown().await.unwrap();
}

#[tokio::test]
async fn zero_rates_are_configuration_errors() {
    let bus = EventBus::builder().build().await.unwrap();
    let err = bus
        .subscribe(
            "t",
            |_d: Delivery| async { Ok(()) },
            SubscribeOptions::new().rate_limit(RateLimit::per_second(0)),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("rate_limit"), "{err}");
    let e =
        BusConfig::from_yaml_str("publish_rate_limit:\n  per_second: 0\n  burst: 1\n").unwrap_err();
    assert!(e.to_string().contains("publish_rate_limit"), "{e}");
    let c =
        BusConfig::from_yaml_str("publish_rate_limit:\n  per_second: 10\n  burst: 2\n").unwrap();
    assert_eq!(
        c.publish_rate_limit,
        Some(RateLimit::per_second(10).burst(2))
    );
}

/// Layer order: the rate limit is outside the attempt timeout, so waiting for
/// a token never counts against the attempt's deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_a_token_is_not_an_attempt_timeout() {
    let bus = EventBus::builder().group("order").build().await.unwrap();
    let attempts = Arc::new(std::sync::Mutex::new(Vec::new()));
    let a = attempts.clone();
    bus.subscribe(
        "layered",
        move |d: Delivery| {
            a.lock().unwrap().push(d.attempt());
            async { Ok(()) }
        },
        SubscribeOptions::new()
            .rate_limit(RateLimit::per_second(4).burst(1))
            .attempt_timeout(Duration::from_millis(100)),
    )
    .await
    .unwrap();
    for _ in 0..3 {
        bus.publish("layered", Message::new("x").with_key("one-key"))
            .await
            .unwrap();
    }
    let start = Instant::now();
    while attempts.lock().unwrap().len() < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "records not handled"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Records 2 and 3 each waited ~250ms for a token, longer than the 100ms
    // timeout, yet every record succeeded on its first attempt.
    assert!(
        start.elapsed() >= Duration::from_millis(400),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(*attempts.lock().unwrap(), vec![1, 1, 1]);
    bus.shutdown().await.unwrap();
}
