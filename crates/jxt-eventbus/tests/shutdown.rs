//! A graceful shutdown of a service whose handlers publish through the same
//! bus: nothing is dead-lettered, every output is published, and what the
//! stopped bus did not finish is handled by the next member of its group.
//!
//! The scenario, on memory and on real Kafka: bus A consumes `orders` and
//! publishes one `payments` record per order from its handler. Its handlers
//! are held at a gate while more records sit buffered; `shutdown()` starts,
//! the gate opens. Then bus B of the same group takes over. Checked: no
//! publish from a handler failed, no dead letter, in `finish_running` mode A
//! started nothing after shutdown began (in `drain_buffered` mode it ran its
//! whole buffer), every order was handled, a record handled by both buses
//! lies at or after the position A committed, and every payment exists.

mod kafka_support;
mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use jxt_eventbus::config::{MemoryConfig, ShutdownMode};
use jxt_eventbus::{BusConfig, Delivery, EventBus, HandlerError, MemoryBroker, Message};
use jxt_eventbus::{HandlerResult, SubscribeOptions};
use support::{eventually, unique_name};
use tokio::sync::Semaphore;

/// A change to a test bus's configuration.
type Tweak = Box<dyn FnOnce(&mut BusConfig) + Send>;

const ORDERS: u64 = 2_000;
const KEYS: u64 = 50;
const CONCURRENCY: usize = 4;

/// Where one order was handled.
#[derive(Clone, Debug)]
struct Handled {
    id: u64,
    key: String,
    partition: i32,
    offset: i64,
}

/// What one bus's handlers did.
#[derive(Default)]
struct Side {
    entered: AtomicUsize,
    handled: Mutex<Vec<Handled>>,
    publish_errors: Mutex<Vec<String>>,
}

impl Side {
    fn handled(&self) -> Vec<Handled> {
        self.handled.lock().unwrap().clone()
    }
}

/// Subscribes `bus` to `orders` with a handler that waits at `gate` (if
/// any), publishes the order's payment through the same bus, and logs it.
async fn consume_then_publish(
    bus: &EventBus,
    orders: &str,
    payments: &str,
    side: Arc<Side>,
    gate: Option<Arc<Semaphore>>,
) {
    let publisher = bus.clone();
    let payments: Arc<str> = Arc::from(payments);
    let handler = move |d: Delivery| {
        let (bus, payments, side, gate) = (
            publisher.clone(),
            payments.clone(),
            side.clone(),
            gate.clone(),
        );
        async move {
            side.entered.fetch_add(1, Ordering::SeqCst);
            if let Some(gate) = gate {
                gate.acquire().await.unwrap().forget();
            }
            let text = std::str::from_utf8(d.payload()).unwrap().to_string();
            let payment = Message::new(text.clone()).with_key(d.key_str().unwrap_or_default());
            if let Err(e) = bus.publish(&payments, payment).await {
                side.publish_errors.lock().unwrap().push(e.to_string());
                return Err(HandlerError::retryable(format!("publishing payment: {e}")));
            }
            side.handled.lock().unwrap().push(Handled {
                id: text.parse().unwrap(),
                key: d.key_str().unwrap_or_default().to_string(),
                partition: d.partition(),
                offset: d.offset(),
            });
            HandlerResult::Ok(())
        }
    };
    bus.subscribe(orders, handler, SubscribeOptions::new())
        .await
        .unwrap();
}

fn dead_lettered(bus: &EventBus) -> f64 {
    let mut text = String::new();
    let registry = bus.metrics_registry().expect("the bus owns its registry");
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    text.lines()
        .filter(|l| l.starts_with("eventbus_dead_lettered_total"))
        .filter_map(|l| l.rsplit_once(' ').map(|(_, v)| v.parse::<f64>().unwrap()))
        .sum()
}

/// Runs the scenario; `make(group, tweak)` builds a bus of the backend under
/// test.
async fn scenario<F, Fut>(make: F, orders: &str, payments: &str, mode: ShutdownMode)
where
    F: Fn(String, Tweak) -> Fut,
    Fut: std::future::Future<Output = EventBus>,
{
    let group = unique_name("svc");
    let publisher = make(unique_name("pub"), Box::new(|_| {})).await;
    let batch: Vec<Message> = (0..ORDERS)
        .map(|i| Message::new(i.to_string()).with_key(format!("k{}", i % KEYS)))
        .collect();
    for r in publisher.publish_batch(orders, batch).await.unwrap() {
        r.unwrap();
    }

    // Bus A: handlers held at the gate, more records buffered behind them.
    let a = make(
        group.clone(),
        Box::new(move |c| {
            c.dispatch.max_concurrency = CONCURRENCY;
            c.dispatch.shutdown_mode = mode;
        }),
    )
    .await;
    let side_a = Arc::new(Side::default());
    let gate = Arc::new(Semaphore::new(0));
    consume_then_publish(&a, orders, payments, side_a.clone(), Some(gate.clone())).await;
    eventually("A's handlers to be running", 60, || {
        side_a.entered.load(Ordering::SeqCst) == CONCURRENCY
    })
    .await;
    let mut buffered = 0;
    for _ in 0..6000 {
        buffered = a.dispatch_stats().await.map_or(0, |s| s.buffered);
        if buffered > 100 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(buffered > 100, "A buffered only {buffered} records");

    let stopping = tokio::spawn({
        let a = a.clone();
        async move { a.shutdown().await }
    });
    eventually("A's shutdown to begin", 10, || a.is_closed()).await;
    gate.add_permits(1_000_000);
    stopping.await.unwrap().expect("shutdown drains in time");

    let handled_a = side_a.handled();
    let errors = side_a.publish_errors.lock().unwrap().clone();
    assert!(
        errors.is_empty(),
        "{} publishes from A's handlers failed during shutdown, the first: {:?}",
        errors.len(),
        errors.first()
    );
    assert_eq!(dead_lettered(&a), 0.0, "A dead-lettered records");
    match mode {
        ShutdownMode::FinishRunning => {
            assert_eq!(
                side_a.entered.load(Ordering::SeqCst),
                CONCURRENCY,
                "A started buffered records after shutdown began"
            );
            assert_eq!(handled_a.len(), CONCURRENCY);
        }
        ShutdownMode::DrainBuffered => assert!(
            handled_a.len() >= buffered,
            "A handled {} of the {buffered} records it buffered",
            handled_a.len()
        ),
        _ => unreachable!(),
    }

    // Bus B of the same group takes over.
    let b = make(group.clone(), Box::new(|_| {})).await;
    let side_b = Arc::new(Side::default());
    consume_then_publish(&b, orders, payments, side_b.clone(), None).await;
    let ids = |h: &[Handled]| h.iter().map(|h| h.id).collect::<HashSet<u64>>();
    eventually("every order handled by A or B", 120, || {
        let mut all = ids(&handled_a);
        all.extend(ids(&side_b.handled()));
        all.len() as u64 == ORDERS
    })
    .await;
    let handled_b = side_b.handled();
    assert!(side_b.publish_errors.lock().unwrap().is_empty());

    // A record handled twice lies at or after the position A committed: B's
    // first offset on that partition.
    let mut b_start: HashMap<i32, i64> = HashMap::new();
    for h in &handled_b {
        let e = b_start.entry(h.partition).or_insert(h.offset);
        *e = (*e).min(h.offset);
    }
    let a_ids = ids(&handled_a);
    for h in handled_b.iter().filter(|h| a_ids.contains(&h.id)) {
        let start = b_start[&h.partition];
        assert!(
            h.offset >= start,
            "order {} committed by A was handled again by B",
            h.id
        );
    }
    for (name, handled) in [("A", &handled_a), ("B", &handled_b)] {
        assert_eq!(
            ids(handled).len(),
            handled.len(),
            "{name} handled a record twice"
        );
        // Per-key order inside each bus.
        let mut last: BTreeMap<&str, u64> = BTreeMap::new();
        for h in handled.iter() {
            if let Some(prev) = last.insert(&h.key, h.id) {
                assert!(prev < h.id, "{name}: {} ran {} after {prev}", h.key, h.id);
            }
        }
    }

    // Every payment was published.
    let checker = make(unique_name("check"), Box::new(|_| {})).await;
    let paid = Arc::new(Mutex::new(HashSet::new()));
    let p = paid.clone();
    checker
        .subscribe(
            payments,
            move |d: Delivery| {
                let p = p.clone();
                async move {
                    let id: u64 = std::str::from_utf8(d.payload()).unwrap().parse().unwrap();
                    p.lock().unwrap().insert(id);
                    Ok(())
                }
            },
            SubscribeOptions::new(),
        )
        .await
        .unwrap();
    eventually("every payment published", 120, || {
        paid.lock().unwrap().len() as u64 == ORDERS
    })
    .await;
    assert_eq!(dead_lettered(&b), 0.0);
    for bus in [&b, &checker, &publisher] {
        bus.shutdown().await.unwrap();
    }
}

fn memory_maker(broker: MemoryBroker) -> impl Fn(String, Tweak) -> BoxFuture<'static, EventBus> {
    move |group, tweak| {
        let broker = broker.clone();
        Box::pin(async move {
            let mut config = BusConfig {
                group,
                ..BusConfig::default()
            };
            tweak(&mut config);
            EventBus::builder()
                .config(config)
                .memory_broker(broker)
                .build()
                .await
                .unwrap()
        })
    }
}

fn memory_broker() -> MemoryBroker {
    MemoryBroker::new(MemoryConfig {
        partitions: 3,
        ..MemoryConfig::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_shutdown_finishes_running_records_and_leaves_the_buffer() {
    let make = memory_maker(memory_broker());
    scenario(make, "orders", "payments", ShutdownMode::FinishRunning).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_shutdown_can_drain_the_whole_buffer() {
    let make = memory_maker(memory_broker());
    scenario(make, "orders", "payments", ShutdownMode::DrainBuffered).await;
}

fn kafka_maker(brokers: String) -> impl Fn(String, Tweak) -> BoxFuture<'static, EventBus> {
    move |group, tweak| {
        let brokers = brokers.clone();
        Box::pin(async move {
            let mut config = kafka_support::config(&brokers, &group);
            tweak(&mut config);
            EventBus::from_config(config).await.unwrap()
        })
    }
}

async fn kafka_scenario(mode: ShutdownMode) {
    let Some(brokers) = support::kafka_brokers() else {
        return;
    };
    let orders = unique_name("orders");
    let payments = unique_name("payments");
    for t in [&orders, &payments] {
        kafka_support::create_topic(&brokers, t, 3).await;
    }
    kafka_support::create_topic(&brokers, &format!("{orders}.dlq"), 3).await;
    scenario(kafka_maker(brokers), &orders, &payments, mode).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_shutdown_finishes_running_records_and_leaves_the_buffer() {
    kafka_scenario(ShutdownMode::FinishRunning).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_shutdown_can_drain_the_whole_buffer() {
    kafka_scenario(ShutdownMode::DrainBuffered).await;
}

/// A record whose handler fails after the shutdown began (here a permanent
/// error, as a handler that maps the bus's `Closed` to one would return) is
/// neither retried nor dead-lettered: the next member of the group gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_during_shutdown_is_redelivered_not_dead_lettered() {
    let make = memory_maker(memory_broker());
    let group = unique_name("svc");
    let publisher = make(unique_name("pub"), Box::new(|_| {})).await;
    for i in 0..20u64 {
        publisher
            .publish(
                "jobs",
                Message::new(i.to_string()).with_key(format!("k{i}")),
            )
            .await
            .unwrap();
    }
    let a = make(
        group.clone(),
        Box::new(|c| c.dispatch.shutdown_mode = ShutdownMode::DrainBuffered),
    )
    .await;
    let gate = Arc::new(Semaphore::new(0));
    let entered = Arc::new(AtomicUsize::new(0));
    let (g, e, stopping_bus) = (gate.clone(), entered.clone(), a.clone());
    a.subscribe(
        "jobs",
        move |_d: Delivery| {
            let (g, e, bus) = (g.clone(), e.clone(), stopping_bus.clone());
            async move {
                e.fetch_add(1, Ordering::SeqCst);
                g.acquire().await.unwrap().forget();
                if bus.is_closed() {
                    return Err(HandlerError::permanent("the event bus is closed"));
                }
                Ok(())
            }
        },
        SubscribeOptions::new(),
    )
    .await
    .unwrap();
    eventually("A's handlers to be running", 30, || {
        entered.load(Ordering::SeqCst) > 0
    })
    .await;
    let stopping = tokio::spawn({
        let a = a.clone();
        async move { a.shutdown().await }
    });
    eventually("A's shutdown to begin", 10, || a.is_closed()).await;
    gate.add_permits(1_000);
    stopping.await.unwrap().unwrap();
    assert_eq!(
        dead_lettered(&a),
        0.0,
        "a failure during shutdown was dead-lettered"
    );

    let b = make(group, Box::new(|_| {})).await;
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let s = seen.clone();
    b.subscribe(
        "jobs",
        move |d: Delivery| {
            let s = s.clone();
            async move {
                s.lock().unwrap().insert(d.payload().clone());
                Ok(())
            }
        },
        SubscribeOptions::new(),
    )
    .await
    .unwrap();
    eventually("B to handle every record A failed", 30, || {
        seen.lock().unwrap().len() == 20
    })
    .await;
    b.shutdown().await.unwrap();
}
