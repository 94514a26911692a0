//! A fatal producer error (an idempotent producer fenced or out of sequence)
//! makes librdkafka's producer unusable for good. The bus notices it, rebuilds
//! the producer (a new idempotent session), says so in a log line and a
//! metric, and publishing works again — instead of every publish and every
//! dead-letter write failing while the bus reports ready.
//!
//! The fatal state is provoked with librdkafka's own test hook,
//! `rd_kafka_test_fatal_error`, on the bus's real producer.
#![cfg(feature = "kafka")]
// The hook is a C function: this file alone needs `unsafe`.
#![allow(unsafe_code)]

mod kafka_support;
mod support;

use std::ffi::CString;

use jxt_eventbus::{EventBus, Message};
use rdkafka::types::RDKafkaRespErr;
use support::unique_name;

fn scrape(bus: &EventBus, series: &str) -> f64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &bus.metrics_registry().unwrap()).unwrap();
    support::metric_value(&text, series).unwrap_or(0.0)
}

/// Puts the bus's producer in librdkafka's fatal state.
fn inject_fatal_error(bus: &EventBus) {
    let rk = bus
        .kafka_native_producer()
        .expect("a Kafka bus has a producer");
    let reason = CString::new("injected by the test: out of sequence").unwrap();
    // SAFETY: `rk` is the live producer handle of `bus`, which outlives this
    // call; the hook only records the error on it.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_test_fatal_error(
            rk,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
            reason.as_ptr(),
        )
    };
    assert_eq!(
        err,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR,
        "hook refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_producer_error_rebuilds_the_producer() {
    let Some(brokers) = support::kafka_brokers() else {
        return;
    };
    let topic = unique_name("fatal");
    kafka_support::create_topic(&brokers, &topic, 1).await;
    let bus = kafka_support::bus(&brokers, &unique_name("g")).await;
    bus.publish(&topic, Message::new("before")).await.unwrap();

    inject_fatal_error(&bus);
    // The next publishes succeed on a new producer session.
    for i in 0..3i64 {
        let receipt = bus
            .publish(&topic, Message::new(format!("after-{i}")))
            .await
            .expect("publish after a fatal error");
        assert_eq!(receipt.offset, 1 + i);
    }
    let series = r#"eventbus_producer_restarts_total{backend="kafka"}"#;
    assert_eq!(scrape(&bus, series), 1.0);
    assert!(bus.readiness().await.is_ok());
    bus.shutdown().await.unwrap();
}
