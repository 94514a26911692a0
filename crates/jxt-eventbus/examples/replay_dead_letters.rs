//! Lists a topic's dead letters with a filter, shows what a replay would
//! do, then replays them once the cause is fixed — what an operator does
//! after a bad deploy (the `eventbus dlq` command does the same from a
//! shell).
//!
//! On its own it runs on the memory backend and makes its dead letters
//! first: a handler refuses the orders of one customer until "fixed".
//! With a configuration file it works on that bus's topic and group, for
//! the dead letters of one key (default `customer-7`):
//!
//! ```sh
//! cargo run -p jxt-eventbus --example replay_dead_letters
//! cargo run -p jxt-eventbus --features kafka --example replay_dead_letters -- service.yaml orders order-3
//! ```
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use jxt_eventbus::{
    BusConfig, DeadLetterFilter, Delivery, EventBus, HandlerError, ListOptions, Message,
    ReplayOptions, SubscribeOptions,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let config = args.next().map(PathBuf::from);
    let topic = args.next().unwrap_or_else(|| "orders".into());
    let key = args.next().unwrap_or_else(|| "customer-7".into());
    let bus = EventBus::builder()
        .config(BusConfig::load(config.as_deref())?)
        .build()
        .await?;
    if config.is_none() {
        make_dead_letters(&bus, &topic).await?;
    }
    let report = replay(&bus, &topic, &key).await?;
    println!("replayed {report}");
    bus.shutdown().await?;
    Ok(())
}

/// Lists the dead letters of `key`, dry-runs the replay, replays; returns
/// how many were replayed.
async fn replay(bus: &EventBus, topic: &str, key: &str) -> jxt_eventbus::Result<usize> {
    let only = DeadLetterFilter::new().key(key);
    let listed = bus
        .list_dead_letters(topic, &ListOptions::new().filter(only.clone()))
        .await?;
    for d in &listed {
        println!(
            "{}/{}@{}: {} after {} attempt(s): {}",
            d.original_topic.as_deref().unwrap_or("?"),
            d.message
                .headers
                .get_str("x-dlq-original-partition")
                .unwrap_or("?"),
            d.message
                .headers
                .get_str("x-dlq-original-offset")
                .unwrap_or("?"),
            d.error_kind.as_deref().unwrap_or("?"),
            d.attempts.unwrap_or(0),
            d.error.as_deref().unwrap_or(""),
        );
    }
    let options = ReplayOptions::new()
        .filter(only)
        .idle(Duration::from_secs(1));
    let dry = bus
        .replay_dead_letters(topic, &options.clone().dry_run(true))
        .await?;
    println!(
        "a replay would publish {} record(s) back to {topic}",
        dry.would_replay.len()
    );
    Ok(bus.replay_dead_letters(topic, &options).await?.replayed)
}

/// The demo's failure: orders of customer-7 are refused until `fixed`.
async fn make_dead_letters(bus: &EventBus, topic: &str) -> jxt_eventbus::Result<()> {
    let fixed = Arc::new(AtomicBool::new(false));
    let f = fixed.clone();
    bus.subscribe(
        topic,
        move |d: Delivery| {
            let refused = d.key_str() == Some("customer-7") && !f.load(Ordering::SeqCst);
            async move {
                if refused {
                    return Err(HandlerError::permanent("customer-7 has no billing account"));
                }
                Ok(())
            }
        },
        SubscribeOptions::new(),
    )
    .await?;
    for i in 0..30 {
        let customer = format!("customer-{}", i % 10);
        bus.publish(topic, Message::new(format!("order {i}")).with_key(customer))
            .await?;
    }
    bus.idle().await?;
    // The account was created: replayed orders now go through.
    fixed.store(true, Ordering::SeqCst);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_refused_customer_s_orders_are_replayed_and_handled() {
        let bus = EventBus::builder().build().await.unwrap();
        make_dead_letters(&bus, "orders").await.unwrap();
        assert_eq!(replay(&bus, "orders", "customer-7").await.unwrap(), 3);
        bus.idle().await.unwrap();
        let left = bus
            .list_dead_letters(
                "orders",
                &ListOptions::new().idle(Duration::from_millis(500)),
            )
            .await
            .unwrap();
        assert!(left.is_empty(), "{left:?}");
        bus.shutdown().await.unwrap();
    }
}
