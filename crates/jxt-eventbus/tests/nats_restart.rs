//! The NATS server is killed and restarted mid-stream (file storage): the
//! bus reconnects by itself and every record acknowledged to a publisher is
//! handled.
//!
//! Runs its own nats-server (see `nats_support::server`), never the shared
//! one.
#![cfg(feature = "nats")]

mod nats_support;
mod support;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jxt_eventbus::{Delivery, EventBus, Message, SubscribeOptions};
use nats_support::server::NatsServer;

const WAIT: Duration = Duration::from_secs(90);
const RECORDS: u64 = 600;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_loses_nothing_acknowledged() {
    let Some(mut server) = NatsServer::start("") else {
        return;
    };
    let url = server.url();
    let topic = "restart";
    let mut config = nats_support::config(&url, "restart-group");
    config.nats.ack_wait = Duration::from_secs(5);
    config.nats.publish_timeout = Duration::from_secs(2);
    config.nats.idle_heartbeat = Duration::from_secs(1);
    let bus = EventBus::from_config(config.clone()).await.unwrap();
    let handled: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let h = handled.clone();
    bus.subscribe(
        topic,
        move |d: Delivery| {
            let h = h.clone();
            async move {
                let n: u64 = std::str::from_utf8(d.payload()).unwrap().parse().unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
                h.lock().unwrap().insert(n);
                Ok(())
            }
        },
        SubscribeOptions::new(),
    )
    .await
    .unwrap();

    // The publisher retries a failed publish with the same message id until
    // the stream acknowledges it; the duplicate window drops repeats.
    config.group = "restart-publisher".into();
    let publisher = EventBus::from_config(config).await.unwrap();
    let acknowledged: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let failures = Arc::new(Mutex::new(0usize));
    let producing = {
        let (publisher, acknowledged, failures) =
            (publisher.clone(), acknowledged.clone(), failures.clone());
        tokio::spawn(async move {
            for n in 0..RECORDS {
                let message = Message::new(n.to_string())
                    .with_key(format!("k{}", n % 13))
                    .with_id(format!("restart-{n}"));
                let deadline = tokio::time::Instant::now() + WAIT;
                loop {
                    match publisher.publish(topic, message.clone()).await {
                        Ok(_) => break,
                        Err(e) => {
                            assert!(e.is_retryable(), "publish failed for good: {e}");
                            assert!(
                                tokio::time::Instant::now() < deadline,
                                "publish never recovered: {e}"
                            );
                            *failures.lock().unwrap() += 1;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
                acknowledged.lock().unwrap().insert(n);
                if n.is_multiple_of(20) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        })
    };

    let deadline = tokio::time::Instant::now() + WAIT;
    while acknowledged.lock().unwrap().len() < RECORDS as usize / 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "publishing did not start"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill();
    // Down until the publisher felt it: a publish timed out meanwhile.
    let deadline = tokio::time::Instant::now() + WAIT;
    while *failures.lock().unwrap() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no publish failed while the server was down"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.restart();

    producing.await.unwrap();
    assert!(
        *failures.lock().unwrap() > 0,
        "the outage was felt by the publisher"
    );
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert_eq!(acknowledged.len(), RECORDS as usize);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let missing: Vec<u64> = {
            let handled = handled.lock().unwrap();
            acknowledged
                .iter()
                .filter(|n| !handled.contains(n))
                .copied()
                .collect()
        };
        if missing.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} acknowledged records never handled, e.g. {:?}\nserver log:\n{}",
            missing.len(),
            &missing[..missing.len().min(10)],
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bus.shutdown().await.unwrap();
    publisher.shutdown().await.unwrap();
}

/// A batch whose PubAcks are lost (the connection stalls right after it
/// went out: a loopback proxy stops forwarding) resolves within
/// `publish_timeout` plus a margin: every record's PubAck wait counts from
/// its own publish, so the records of a batch do not time out one after
/// another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_acks_are_lost_resolves_within_the_publish_timeout() {
    use nats_support::proxy::TcpProxy;
    use std::time::Instant;

    let Some(server) = NatsServer::start("") else {
        return;
    };
    let proxy = TcpProxy::start(&server.url()).await;
    let publish_timeout = Duration::from_secs(1);
    let mut config = nats_support::config(&proxy.url(), "lost-acks");
    config.nats.publish_timeout = publish_timeout;
    let publisher = EventBus::from_config(config).await.unwrap();
    // The stream exists and publishing works.
    publisher
        .publish("lost-acks", Message::new("first"))
        .await
        .unwrap();
    proxy.freeze();
    let batch: Vec<Message> = (0..20).map(|i| Message::new(i.to_string())).collect();
    let t = Instant::now();
    let results = tokio::time::timeout(WAIT, publisher.publish_batch("lost-acks", batch))
        .await
        .expect("the batch resolves")
        .unwrap();
    let took = t.elapsed();
    proxy.thaw();
    let failed = results.iter().filter(|r| r.is_err()).count();
    eprintln!(
        "a batch of 20 with its PubAcks held took {took:.1?} (publish_timeout \
         {publish_timeout:?}); {failed} failed"
    );
    assert_eq!(failed, 20, "no PubAck came back: every record timed out");
    assert!(
        took <= publish_timeout + Duration::from_secs(1),
        "the batch took {took:?} with publish_timeout {publish_timeout:?}"
    );
    publisher.shutdown().await.unwrap();
}
