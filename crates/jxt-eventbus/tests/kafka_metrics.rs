//! `/metrics` scraped after a known workload on a real Kafka broker: the
//! counters match exactly.
//!
//! Needs `scripts/services up` (or `EVENTBUS_KAFKA_BROKERS`).
#![cfg(all(feature = "kafka", feature = "http"))]

mod kafka_support;
mod support;

use std::time::{Duration, Instant};

use jxt_eventbus::{Delivery, ErrorKind, HandlerError, Message, SubscribeOptions};
use kafka_support::{bus, create_topic};
use support::http_get::get;
use support::metric_value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scraped_counters_match_a_known_workload() {
    let Some(brokers) = support::kafka_brokers() else {
        return;
    };
    let topic = support::unique_name("metrics");
    create_topic(&brokers, &topic, 3).await;
    let bus = bus(&brokers, &support::unique_name("metrics-group")).await;
    let server = jxt_eventbus::http::serve(bus.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    bus.subscribe(
        &topic,
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
    for i in 0..10 {
        let payload = if i % 5 == 0 { "bad" } else { "good" };
        bus.publish(&topic, Message::new(payload).with_key(format!("k{i}")))
            .await
            .unwrap();
    }
    let batch = (0..5)
        .map(|i| Message::new("good").with_key(format!("b{i}")))
        .collect();
    assert!(bus
        .publish_batch(&topic, batch)
        .await
        .unwrap()
        .iter()
        .all(|r| r.is_ok()));

    let series = |name: &str, extra: &str| {
        format!(r#"eventbus_{name}{{topic="{topic}",backend="kafka"{extra}}}"#)
    };
    let consumed_ok = series("messages_consumed_total", r#",result="ok""#);
    let consumed_dlq = series("messages_consumed_total", r#",result="dead_lettered""#);
    let deadline = Instant::now() + Duration::from_secs(60);
    let body = loop {
        let reply = get(server.local_addr(), "/metrics").await;
        let (status, body) = (reply.status, reply.body);
        assert_eq!(status, 200);
        if metric_value(&body, &consumed_ok) == Some(13.0)
            && metric_value(&body, &consumed_dlq) == Some(2.0)
        {
            break body;
        }
        assert!(Instant::now() < deadline, "workload not finished:\n{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let get_value = |s: &str| metric_value(&body, s).unwrap_or_else(|| panic!("{s} in\n{body}"));
    assert_eq!(
        get_value(&series("messages_published_total", r#",result="ok""#)),
        15.0
    );
    assert_eq!(
        get_value(&series("messages_published_total", r#",result="error""#)),
        0.0
    );
    assert_eq!(get_value(&series("dead_lettered_total", "")), 2.0);
    assert_eq!(
        get_value(&series("processing_errors_total", r#",kind="permanent""#)),
        2.0
    );
    assert_eq!(get_value(&series("retries_total", "")), 0.0);
    assert_eq!(
        get_value(&series("handler_duration_seconds_count", "")),
        15.0
    );
    assert_eq!(
        get_value(r#"eventbus_assigned_partitions{backend="kafka"}"#),
        3.0
    );
    let status = get(server.local_addr(), "/readyz").await.status;
    assert_eq!(status, 200);
    bus.shutdown().await.unwrap();
}
