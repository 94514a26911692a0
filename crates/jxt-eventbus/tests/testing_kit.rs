//! The testing kit: `EventBus::idle` and `MemoryBroker::drained` end a test
//! when everything published was handled and acknowledged — retries, dead
//! letters and outputs included — with paused tokio time as well as real.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[cfg(feature = "kafka")]
mod kafka_support;
mod support;

use jxt_eventbus::config::{MemoryConfig, RetryConfig};
use jxt_eventbus::{
    Delivery, EventBus, HandlerError, MemoryBroker, Message, Outputs, SubscribeOptions,
};
use tokio::sync::Semaphore;

async fn bus_on(broker: &MemoryBroker, group: &str) -> EventBus {
    EventBus::builder()
        .group(group)
        .memory_broker(broker.clone())
        .build()
        .await
        .unwrap()
}

/// Retries wait 10 s of paused time; `idle` lets the clock run and resolves
/// once the retried records and the dead letter are settled.
#[tokio::test(start_paused = true)]
async fn idle_waits_for_retries_and_dead_letters_in_paused_time() {
    let broker = MemoryBroker::new(MemoryConfig::default());
    let bus = EventBus::builder()
        .memory_broker(broker.clone())
        .retry(RetryConfig {
            max_attempts: 3,
            initial_backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(10),
            jitter: false,
            ..RetryConfig::default()
        })
        .build()
        .await
        .unwrap();
    let attempts = Arc::new(AtomicUsize::new(0));
    let handle = |attempts: Arc<AtomicUsize>, d: Delivery| async move {
        attempts.fetch_add(1, Ordering::SeqCst);
        match &d.payload()[..] {
            b"flaky" if d.attempt() == 1 => Err(HandlerError::retryable("ledger busy")),
            b"poison" => Err(HandlerError::permanent("cannot bill")),
            _ => Ok(()),
        }
    };
    bus.subscribe_with_state("orders", attempts.clone(), handle, SubscribeOptions::new())
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    for (i, body) in ["ok", "flaky", "poison", "ok"].into_iter().enumerate() {
        let m = Message::new(body).with_key(format!("order-{i}"));
        bus.publish("orders", m).await.unwrap();
    }
    bus.idle().await.unwrap();
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        5,
        "ok, flaky twice, poison, ok"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(10),
        "the retry's backoff ran"
    );
    assert_eq!(broker.retained("orders.dlq").len(), 1);
    let ends = broker.end_offsets("orders");
    let committed: Vec<i64> = broker
        .committed("jxt-eventbus", "orders")
        .into_iter()
        .map(Option::unwrap)
        .collect();
    assert_eq!(committed, ends, "idle means acknowledged");
    bus.shutdown().await.unwrap();
}

/// While a handler runs, `idle` is pending; it resolves once it finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_is_pending_while_a_handler_runs() {
    let bus = EventBus::builder().build().await.unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let entered = Arc::new(AtomicUsize::new(0));
    let state = (gate.clone(), entered.clone());
    let held = |s: Arc<(Arc<Semaphore>, Arc<AtomicUsize>)>, _d: Delivery| async move {
        s.1.fetch_add(1, Ordering::SeqCst);
        s.0.acquire().await.unwrap().forget();
        Ok::<_, HandlerError>(())
    };
    bus.subscribe_with_state("jobs", state, held, SubscribeOptions::new())
        .await
        .unwrap();
    bus.publish("jobs", Message::new("1")).await.unwrap();
    let idle = bus.idle();
    tokio::pin!(idle);
    tokio::select! {
        biased;
        r = &mut idle => panic!("idle resolved before the handler ran: {r:?}"),
        () = async { while entered.load(Ordering::SeqCst) == 0 { tokio::task::yield_now().await } } => {}
    }
    assert!(futures::poll!(idle.as_mut()).is_pending());
    gate.add_permits(1);
    idle.await.unwrap();
    bus.shutdown().await.unwrap();
}

/// Bus A turns orders into payments (handler outputs), bus B reads the
/// payments: `drained` waits for both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drained_waits_for_every_group_and_for_outputs() {
    let broker = MemoryBroker::new(MemoryConfig::default());
    let a = bus_on(&broker, "billing").await;
    let b = bus_on(&broker, "ledger").await;
    a.subscribe_typed(
        "orders",
        |d: Delivery| async move {
            let m = Message::new(d.payload().clone()).with_key(d.key().unwrap_or_default());
            Ok(Outputs::new().message("payments", m))
        },
        SubscribeOptions::new(),
    )
    .await
    .unwrap();
    let paid = Arc::new(Mutex::new(Vec::new()));
    let record = |paid: Arc<Mutex<Vec<String>>>, d: Delivery| async move {
        paid.lock()
            .unwrap()
            .push(String::from_utf8_lossy(d.payload()).into_owned());
        Ok::<_, HandlerError>(())
    };
    b.subscribe_with_state("payments", paid.clone(), record, SubscribeOptions::new())
        .await
        .unwrap();
    for i in 0..200 {
        let m = Message::new(i.to_string()).with_key(format!("order-{}", i % 7));
        a.publish("orders", m).await.unwrap();
    }
    broker.drained().await;
    assert_eq!(paid.lock().unwrap().len(), 200);
    // A bus's own `idle` covers its own group only, and is settled too.
    a.idle().await.unwrap();
    b.idle().await.unwrap();
    for bus in [a, b] {
        bus.shutdown().await.unwrap();
    }
}

/// `idle` is for the memory backend; a Kafka bus says so.
#[cfg(feature = "kafka")]
#[tokio::test]
async fn idle_refuses_other_backends_clearly() {
    let Some(brokers) = support::kafka_brokers() else {
        return;
    };
    let config = kafka_support::config(&brokers, &support::unique_name("idle"));
    let bus = EventBus::from_config(config).await.unwrap();
    let err = bus.idle().await.unwrap_err().to_string();
    assert!(
        err.contains("EventBus::idle needs the memory backend; this bus uses kafka"),
        "{err}"
    );
    bus.shutdown().await.unwrap();
}
