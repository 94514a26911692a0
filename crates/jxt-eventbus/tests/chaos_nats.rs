//! Crash evidence on NATS JetStream: the SIGKILL loop of `chaos_kafka.rs`
//! with the consumers sharing the topic's durable consumer as a pinned
//! priority group. A killed bus's pin expires (`pinned_ttl`, by default
//! twice `ack_wait`) after the records it held were redelivered, so the
//! next bus continues each key in order.
#![cfg(feature = "nats")]

mod chaos_support;
mod nats_support;
mod support;

use std::time::Duration;

use chaos_support::kill_loop;
use jxt_eventbus::EventBus;

/// Not a test: the body of a chaos child process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the chaos tests start it in a child process"]
async fn chaos_child() {
    chaos_support::run_child().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loop_loses_nothing_and_keeps_key_order() {
    let Some(url) = support::nats_url() else {
        return;
    };
    let topic = support::unique_name("chaos-kill");
    let mut config = nats_support::config(&url, &support::unique_name("g-chaos-kill"));
    // Redelivered after 3 s, pinned to the next bus after 6 s.
    config.nats.ack_wait = Duration::from_secs(3);
    let publisher =
        EventBus::from_config(nats_support::config(&url, &support::unique_name("g-pub")))
            .await
            .unwrap();
    kill_loop("nats", config, &topic, &publisher, Duration::from_secs(8)).await;
    publisher.shutdown().await.unwrap();
}
