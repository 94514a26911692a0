//! Consume-then-publish: a handler returns its outputs and the bus publishes
//! them before the input is acknowledged.
//!
//! On memory: an output that cannot be stored keeps its input unacknowledged
//! and retried until it can (then exactly one output is stored), and an
//! output refused for good dead-letters its input (on real Kafka too: an
//! output over the broker's size limit). On memory and real Kafka: a service stopped mid-stream (handlers held while it shuts down)
//! and taken over by a second member of its group leaves every order with
//! its payment, and dead-letters nothing.

#[cfg(feature = "kafka")]
mod kafka_support;
mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jxt_eventbus::config::{MemoryConfig, RetryConfig};
use jxt_eventbus::dispatch::worker::dlq_headers;
use jxt_eventbus::{
    BusConfig, Delivery, EventBus, HandlerError, MemoryBroker, Message, Outputs, SubscribeOptions,
};
use support::{eventually, unique_name};
use tokio::sync::{watch, Semaphore};

/// The payment of an order: same key, same body.
fn payment(d: &Delivery) -> Message {
    Message::new(d.payload().clone()).with_key(d.key().unwrap_or_default())
}

#[tokio::test(start_paused = true)]
async fn an_output_that_cannot_be_stored_keeps_its_input_unacknowledged() {
    let broker = MemoryBroker::new(MemoryConfig {
        partitions: 1,
        ..MemoryConfig::default()
    });
    let bus = EventBus::builder()
        .memory_broker(broker.clone())
        .retry(RetryConfig {
            max_attempts: 1000,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            jitter: false,
            ..RetryConfig::default()
        })
        .build()
        .await
        .unwrap();
    let (attempts_tx, mut attempts) = watch::channel(0u32);
    let attempts_tx = Arc::new(attempts_tx);
    let bill = |tx: Arc<watch::Sender<u32>>, d: Delivery| async move {
        tx.send_replace(d.attempt());
        Ok::<_, HandlerError>(Outputs::new().message("payments", payment(&d)))
    };
    bus.subscribe_with_state("orders", attempts_tx, bill, SubscribeOptions::new())
        .await
        .unwrap();
    broker.set_unavailable("payments", true);
    bus.publish("orders", Message::new("order-1").with_key("c-1"))
        .await
        .unwrap();
    // Paused time: the guard costs nothing when the retries happen.
    tokio::time::timeout(Duration::from_secs(3600), attempts.wait_for(|&n| n >= 3))
        .await
        .expect("the input is retried while its output cannot be stored")
        .unwrap();
    assert_eq!(
        broker.committed("jxt-eventbus", "orders"),
        [Some(0)],
        "the input was acknowledged while its output was not stored"
    );
    assert!(broker.retained("payments").is_empty());
    assert!(
        broker.retained("orders.dlq").is_empty(),
        "retryable: not dead-lettered"
    );

    broker.set_unavailable("payments", false);
    bus.idle().await.unwrap();
    assert_eq!(broker.committed("jxt-eventbus", "orders"), [Some(1)]);
    let paid = broker.retained("payments");
    assert_eq!(paid.len(), 1, "one output once it could be stored");
    assert_eq!(&paid[0].2.payload()[..], b"order-1");
    bus.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_output_refused_for_good_dead_letters_its_input() {
    let broker = MemoryBroker::new(MemoryConfig::default());
    let bus = EventBus::builder()
        .memory_broker(broker.clone())
        .build()
        .await
        .unwrap();
    let attempts = Arc::new(AtomicUsize::new(0));
    let bill = |n: Arc<AtomicUsize>, d: Delivery| async move {
        n.fetch_add(1, Ordering::SeqCst);
        // Not a valid topic name: refused before it reaches the broker.
        Ok::<_, HandlerError>(Outputs::new().message("pay ments", payment(&d)))
    };
    bus.subscribe_with_state("orders", attempts.clone(), bill, SubscribeOptions::new())
        .await
        .unwrap();
    bus.publish("orders", Message::new("order-1").with_key("c-1"))
        .await
        .unwrap();
    bus.idle().await.unwrap();
    assert_eq!(attempts.load(Ordering::SeqCst), 1, "permanent: not retried");
    let dead = broker.retained("orders.dlq");
    assert_eq!(dead.len(), 1);
    let m = &dead[0].2;
    assert_eq!(
        m.headers.get_str(dlq_headers::ERROR_KIND),
        Some("permanent")
    );
    let error = m.headers.get_str(dlq_headers::ERROR).unwrap();
    assert!(error.contains("pay ments"), "{error}");
    bus.shutdown().await.unwrap();
}

const ORDERS: u64 = 600;
const CONCURRENCY: usize = 4;

/// What one member's handlers did.
#[derive(Default)]
struct Side {
    entered: AtomicUsize,
    handled: Mutex<Vec<u64>>,
}

struct Member {
    side: Arc<Side>,
    gate: Option<Arc<Semaphore>>,
    payments: String,
}

/// Waits at the gate (if any), then returns the order's payment as output.
async fn bill(m: Arc<Member>, d: Delivery) -> Result<Outputs, HandlerError> {
    m.side.entered.fetch_add(1, Ordering::SeqCst);
    if let Some(gate) = &m.gate {
        gate.acquire().await.unwrap().forget();
    }
    let id: u64 = std::str::from_utf8(d.payload()).unwrap().parse().unwrap();
    m.side.handled.lock().unwrap().push(id);
    Ok(Outputs::new().message(&m.payments, payment(&d)))
}

/// `make(group)` builds a bus of the backend under test.
async fn takeover<F, Fut>(make: F, orders: &str, payments: &str)
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = EventBus>,
{
    let group = unique_name("billing");
    let publisher = make(unique_name("pub")).await;
    let batch: Vec<Message> = (0..ORDERS)
        .map(|i| Message::new(i.to_string()).with_key(format!("c-{}", i % 40)))
        .collect();
    for r in publisher.publish_batch(orders, batch).await.unwrap() {
        r.unwrap();
    }

    let subscribe = |bus: EventBus, member: Member| async move {
        bus.subscribe_with_state(orders, member, bill, SubscribeOptions::new())
            .await
            .unwrap();
    };

    // A: handlers held at the gate while the shutdown begins.
    let a = make(group.clone()).await;
    let gate = Arc::new(Semaphore::new(0));
    let side_a = Arc::new(Side::default());
    let member_a = Member {
        side: side_a.clone(),
        gate: Some(gate.clone()),
        payments: payments.to_string(),
    };
    subscribe(a.clone(), member_a).await;
    eventually("A's handlers to be running", 60, || {
        side_a.entered.load(Ordering::SeqCst) >= CONCURRENCY
    })
    .await;
    let stopping = tokio::spawn({
        let a = a.clone();
        async move { a.shutdown().await }
    });
    eventually("A's shutdown to begin", 10, || a.is_closed()).await;
    gate.add_permits(1_000_000);
    stopping.await.unwrap().expect("shutdown drains in time");
    let handled_a: HashSet<u64> = side_a.handled.lock().unwrap().iter().copied().collect();
    assert!(!handled_a.is_empty());

    // B takes over the rest.
    let b = make(group).await;
    let side_b = Arc::new(Side::default());
    subscribe(
        b.clone(),
        Member {
            side: side_b.clone(),
            gate: None,
            payments: payments.to_string(),
        },
    )
    .await;
    eventually("every order handled by A or B", 120, || {
        let mut all = handled_a.clone();
        all.extend(side_b.handled.lock().unwrap().iter().copied());
        all.len() as u64 == ORDERS
    })
    .await;

    // Every order has its payment.
    let checker = make(unique_name("check")).await;
    let paid = Arc::new(Mutex::new(Vec::new()));
    let record = |paid: Arc<Mutex<Vec<u64>>>, d: Delivery| async move {
        let id: u64 = std::str::from_utf8(d.payload()).unwrap().parse().unwrap();
        paid.lock().unwrap().push(id);
        Ok::<_, HandlerError>(())
    };
    checker
        .subscribe_with_state(payments, paid.clone(), record, SubscribeOptions::new())
        .await
        .unwrap();
    eventually("a payment for every order", 120, || {
        paid.lock().unwrap().iter().collect::<HashSet<_>>().len() as u64 == ORDERS
    })
    .await;
    let paid = paid.lock().unwrap().clone();
    let handled_b = side_b.handled.lock().unwrap().len();
    // At least once: a payment per handling, no more (A's were all acked
    // before it stopped, so B handled none of them again).
    assert_eq!(
        paid.len(),
        handled_a.len() + handled_b,
        "payments are one per successful handling"
    );
    for bus in [&b, &checker] {
        let mut text = String::new();
        let registry = bus.metrics_registry().unwrap();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("eventbus_dead_lettered_total") && !l.ends_with(" 0")),
            "dead letters: {text}"
        );
    }
    for bus in [b, checker, publisher] {
        bus.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_takeover_leaves_every_order_with_its_payment() {
    let broker = MemoryBroker::new(MemoryConfig {
        partitions: 3,
        ..MemoryConfig::default()
    });
    let make = |group: String| {
        let broker = broker.clone();
        async move {
            let mut config = BusConfig::default();
            config.dispatch.max_concurrency = CONCURRENCY;
            EventBus::builder()
                .config(config)
                .group(group)
                .memory_broker(broker)
                .build()
                .await
                .unwrap()
        }
    };
    takeover(make, "orders", "payments").await;
}

#[cfg(feature = "kafka")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_takeover_leaves_every_order_with_its_payment() {
    let Some(brokers) = support::kafka_brokers() else {
        return;
    };
    let orders = unique_name("orders");
    let payments = unique_name("payments");
    for t in [&orders, &payments] {
        kafka_support::create_topic(&brokers, t, 3).await;
    }
    kafka_support::create_topic(&brokers, &format!("{orders}.dlq"), 3).await;
    let make = |group: String| {
        let mut config = kafka_support::config(&brokers, &group);
        config.dispatch.max_concurrency = CONCURRENCY;
        async move { EventBus::from_config(config).await.unwrap() }
    };
    takeover(make, &orders, &payments).await;
}

/// On Kafka, an output the broker refuses for good (larger than
/// `message.max.bytes`) fails its input, which is dead-lettered with the
/// broker's reason instead of being acknowledged; the other inputs' outputs
/// are published.
#[cfg(feature = "kafka")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_an_output_refused_by_the_broker_dead_letters_its_input() {
    let Some(brokers) = support::kafka_brokers() else {
        return;
    };
    let orders = unique_name("orders");
    let payments = unique_name("payments");
    for t in [&orders, &payments] {
        kafka_support::create_topic(&brokers, t, 1).await;
    }
    kafka_support::create_topic(&brokers, &format!("{orders}.dlq"), 1).await;
    let bus = kafka_support::bus(&brokers, &unique_name("billing")).await;
    let bill = |payments: Arc<String>, d: Delivery| async move {
        let body = if &d.payload()[..] == b"huge" {
            vec![b'x'; 2 << 20] // 2 MiB: over the broker's default limit
        } else {
            d.payload().to_vec()
        };
        let out = Message::new(body).with_key(d.key().unwrap_or_default());
        Ok::<_, HandlerError>(Outputs::new().message(payments.as_str(), out))
    };
    bus.subscribe_with_state(&orders, payments.clone(), bill, SubscribeOptions::new())
        .await
        .unwrap();
    for body in ["ok-1", "huge", "ok-2"] {
        bus.publish(&orders, Message::new(body).with_key(body))
            .await
            .unwrap();
    }

    let checker = kafka_support::bus(&brokers, &unique_name("check")).await;
    let paid = Arc::new(Mutex::new(Vec::new()));
    let record = |paid: Arc<Mutex<Vec<String>>>, d: Delivery| async move {
        paid.lock()
            .unwrap()
            .push(String::from_utf8_lossy(d.payload()).into_owned());
        Ok::<_, HandlerError>(())
    };
    checker
        .subscribe_with_state(&payments, paid.clone(), record, SubscribeOptions::new())
        .await
        .unwrap();
    let mut dead = Vec::new();
    for _ in 0..30 {
        dead = bus
            .list_dead_letters(
                &orders,
                &jxt_eventbus::ListOptions::new().idle(Duration::from_secs(1)),
            )
            .await
            .unwrap();
        if !dead.is_empty() {
            break;
        }
    }
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(&dead[0].message.payload()[..], b"huge");
    assert_eq!(dead[0].error_kind.as_deref(), Some("permanent"));
    let error = dead[0].error.clone().unwrap_or_default();
    assert!(error.contains("larger than the broker"), "{error}");
    eventually("both small payments", 60, || {
        paid.lock().unwrap().len() == 2
    })
    .await;
    let mut got = paid.lock().unwrap().clone();
    got.sort();
    assert_eq!(got, ["ok-1", "ok-2"]);
    for bus in [bus, checker] {
        bus.shutdown().await.unwrap();
    }
}
