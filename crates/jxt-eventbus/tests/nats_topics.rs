//! Several topics on one bus over NATS JetStream, subscribed and
//! unsubscribed while records flow: none is lost, per-key order holds, the
//! topics already subscribed keep going.
#![cfg(feature = "nats")]

mod nats_support;
mod support;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jxt_eventbus::{Delivery, EventBus, Message, SubscribeOptions};
use nats_support::StreamCleanup;
use support::eventually;

const WAIT: Duration = Duration::from_secs(60);

type Seen = Arc<Mutex<Vec<(String, String, u64)>>>;

fn handler(
    seen: &Seen,
) -> impl Fn(Delivery) -> futures::future::Ready<jxt_eventbus::HandlerResult> + Send + Sync + 'static
{
    let seen = seen.clone();
    move |d: Delivery| {
        let text = std::str::from_utf8(d.payload()).unwrap().to_string();
        let (key, seq) = text.rsplit_once(':').unwrap();
        seen.lock()
            .unwrap()
            .push((d.topic().to_string(), key.to_string(), seq.parse().unwrap()));
        futures::future::ready(Ok(()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_subscribed_at_runtime_lose_nothing() {
    let Some(url) = support::nats_url() else {
        return;
    };
    let cleanup = StreamCleanup::new(&url);
    let topics: Vec<String> = (0..3)
        .map(|i| support::unique_name(&format!("multi{i}")))
        .collect();
    for t in &topics {
        cleanup.add(t);
    }
    let group = support::unique_name("g");
    let publisher = EventBus::from_config(nats_support::config(&url, &support::unique_name("pub")))
        .await
        .unwrap();
    let bus = EventBus::from_config(nats_support::config(&url, &group))
        .await
        .unwrap();
    let seen: Seen = Arc::default();

    bus.subscribe(&topics[0], handler(&seen), SubscribeOptions::new())
        .await
        .unwrap();

    // Publish to every topic continuously while the bus subscribes to the
    // others one by one (and drops and takes back the second).
    let sent: Arc<Mutex<HashSet<(String, String, u64)>>> = Arc::default();
    let producing = {
        let (publisher, topics, sent) = (publisher.clone(), topics.clone(), sent.clone());
        tokio::spawn(async move {
            for seq in 0..150u64 {
                for (i, t) in topics.iter().enumerate() {
                    let key = format!("k{}", (seq as usize + i) % 7);
                    let m = Message::new(format!("{key}:{seq}")).with_key(&key);
                    publisher.publish(t, m).await.expect("publish");
                    sent.lock().unwrap().insert((t.clone(), key, seq));
                }
                if seq.is_multiple_of(10) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        })
    };
    let handled_on = |topic: &str| seen.lock().unwrap().iter().filter(|s| s.0 == topic).count();
    eventually("first records of topic 0", WAIT.as_secs(), || {
        handled_on(&topics[0]) > 20
    })
    .await;
    bus.subscribe(&topics[1], handler(&seen), SubscribeOptions::new())
        .await
        .unwrap();
    let before = handled_on(&topics[0]);
    eventually(
        "topic 0 keeps flowing after topic 1 joined",
        WAIT.as_secs(),
        || handled_on(&topics[0]) > before,
    )
    .await;
    bus.subscribe(&topics[2], handler(&seen), SubscribeOptions::new())
        .await
        .unwrap();
    eventually("topic 1 flowing", WAIT.as_secs(), || {
        handled_on(&topics[1]) > 10
    })
    .await;
    bus.unsubscribe(&topics[1]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    bus.subscribe(&topics[1], handler(&seen), SubscribeOptions::new())
        .await
        .unwrap();
    producing.await.unwrap();

    let sent = sent.lock().unwrap().clone();
    eventually("every record of every topic", WAIT.as_secs(), || {
        let got: HashSet<_> = seen.lock().unwrap().iter().cloned().collect();
        got == sent
    })
    .await;

    // Per topic and key, never backwards (a resubscribe may repeat a record).
    let mut by_key: BTreeMap<(String, String), Vec<u64>> = BTreeMap::new();
    for (t, k, s) in seen.lock().unwrap().iter() {
        by_key.entry((t.clone(), k.clone())).or_default().push(*s);
    }
    for ((t, k), seqs) in by_key {
        assert!(
            seqs.windows(2).all(|w| w[0] <= w[1]),
            "{t}/{k} out of order: {seqs:?}"
        );
    }

    // Lag covers the three topics and drains to zero.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let lag = bus.lag().await.unwrap();
        if lag.len() == 3 && lag.iter().all(|l| l.lag() == 0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "lag not drained: {lag:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = bus.dispatch_stats().await.unwrap();
    assert_eq!(stats.assigned_partitions, 3, "one partition per topic");
    bus.shutdown().await.unwrap();
    publisher.shutdown().await.unwrap();
}
