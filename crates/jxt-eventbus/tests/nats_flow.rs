//! Flow control on NATS JetStream: a backlog costs a bounded buffer (pausing
//! a topic stops its pull requests), and records held longer than `ack_wait`
//! — running a slow handler or waiting behind their key — are kept in
//! progress, not redelivered.
#![cfg(feature = "nats")]

mod nats_support;
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jxt_eventbus::{Delivery, EventBus, Message, SubscribeOptions};
use nats_support::StreamCleanup;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_is_read_with_a_bounded_buffer() {
    let Some(url) = support::nats_url() else {
        return;
    };
    let cleanup = StreamCleanup::new(&url);
    let topic = support::unique_name("backlog");
    cleanup.add(&topic);
    let publisher = EventBus::from_config(nats_support::config(&url, "publisher"))
        .await
        .unwrap();
    let messages: Vec<Message> = (0..3000)
        .map(|i| Message::new(format!("{i}")).with_key(format!("k{}", i % 50)))
        .collect();
    for r in publisher.publish_batch(&topic, messages).await.unwrap() {
        r.unwrap();
    }

    let mut config = nats_support::config(&url, &support::unique_name("g"));
    config.dispatch.max_buffered_per_partition = 100;
    config.dispatch.max_concurrency = 4;
    let bus = EventBus::from_config(config).await.unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let d = done.clone();
    bus.subscribe(
        &topic,
        move |_d: Delivery| {
            let d = d.clone();
            async move {
                tokio::time::sleep(Duration::from_micros(300)).await;
                d.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        },
        SubscribeOptions::new(),
    )
    .await
    .unwrap();
    // Pull batches are capped at half the partition's buffer (50); the bus
    // never asks for more than the buffer plus one batch.
    let bound = 100 + 50;
    let mut peak = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while done.load(Ordering::Relaxed) < 3000 {
        assert!(tokio::time::Instant::now() < deadline, "backlog not read");
        if let Some(s) = bus.dispatch_stats().await {
            peak = peak.max(s.buffered);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(peak > 0);
    assert!(peak <= bound, "buffered {peak} records, bound {bound}");
    bus.shutdown().await.unwrap();
    publisher.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_held_past_ack_wait_are_not_redelivered() {
    let Some(url) = support::nats_url() else {
        return;
    };
    let cleanup = StreamCleanup::new(&url);
    let topic = support::unique_name("slow");
    cleanup.add(&topic);
    let group = support::unique_name("g");
    let mut config = nats_support::config(&url, &group);
    config.nats.ack_wait = Duration::from_secs(1);
    let bus = EventBus::from_config(config).await.unwrap();
    let seen: Arc<Mutex<Vec<(String, u32)>>> = Arc::default();
    let s = seen.clone();
    bus.subscribe(
        &topic,
        move |d: Delivery| {
            let s = s.clone();
            async move {
                let body = std::str::from_utf8(d.payload()).unwrap().to_string();
                s.lock().unwrap().push((body, d.attempt()));
                // Three ack_waits per record; the second record of the key
                // waits behind the first for as long.
                tokio::time::sleep(Duration::from_secs(3)).await;
                Ok(())
            }
        },
        SubscribeOptions::new(),
    )
    .await
    .unwrap();
    for body in ["first", "second"] {
        bus.publish(&topic, Message::new(body).with_key("one"))
            .await
            .unwrap();
    }
    // Both acknowledged: nothing can be redelivered any more. The server
    // counts every delivery, redeliveries included.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let info = loop {
        let info = nats_support::group_consumer_info(&url, &topic, &group).await;
        if info.ack_floor.stream_sequence >= 2 {
            break info;
        }
        assert!(tokio::time::Instant::now() < deadline, "{info:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        info.delivered.consumer_sequence, 2,
        "each record delivered once: {info:?}"
    );
    assert_eq!(
        *seen.lock().unwrap(),
        vec![("first".to_string(), 1), ("second".to_string(), 1)],
        "each record handled once, in order"
    );
    let lag = bus.lag().await.unwrap();
    assert_eq!(lag[0].lag(), 0, "{lag:?}");
    bus.shutdown().await.unwrap();
}
