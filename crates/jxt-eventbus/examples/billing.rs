//! A billing service: consumes `orders` envelopes, keeps a total per
//! customer, publishes a `payments` envelope per order (before the order is
//! acknowledged), retries a busy ledger, dead-letters a poison order, serves
//! the operator endpoints on 127.0.0.1:9464, reads its configuration from
//! YAML (and `EVENTBUS_*` variables) and stops cleanly on Ctrl-C.
//!
//! ```sh
//! # memory backend, publishing 5000 demo orders itself:
//! BILLING_DEMO_ORDERS=5000 cargo run -p jxt-eventbus --features http --example billing \
//!     -- crates/jxt-eventbus/examples/billing.yaml
//! # real Kafka:
//! EVENTBUS_BACKEND=kafka EVENTBUS_KAFKA_BROKERS=127.0.0.1:9092 BILLING_DEMO_ORDERS=50000 \
//!     cargo run -p jxt-eventbus --features http,kafka --example billing -- crates/jxt-eventbus/examples/billing.yaml
//! ```
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jxt_eventbus::{http, BusConfig, Delivery, Envelope, Event, EventBus, HandlerError, Outputs};

#[derive(serde::Deserialize, serde::Serialize)]
struct Order {
    customer: String,
    total: u64,
}

#[derive(Default)]
struct Totals(Mutex<HashMap<String, u64>>);

async fn bill(
    totals: Arc<Totals>,
    (order, d): (Event<Order>, Delivery),
) -> Result<Outputs, HandlerError> {
    if order.data.total == 0 {
        return Err(HandlerError::permanent("an order without a total"));
    }
    if order.data.total % 7 == 0 && d.attempt() == 1 {
        return Err(HandlerError::retryable("ledger busy"));
    }
    let payment = Envelope::builder()
        .caused_by(&order.envelope)
        .event_type("PaymentRequested")
        .event_version(1)
        .payload(&order.data)
        .build()?;
    *totals
        .0
        .lock()
        .unwrap()
        .entry(order.data.customer)
        .or_default() += order.data.total;
    Ok(Outputs::new().envelope("payments", payment))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let path = std::env::args().nth(1).map(PathBuf::from);
    let bus = EventBus::builder()
        .config(BusConfig::load(path.as_deref())?)
        .build()
        .await?;
    let totals = Arc::new(Totals::default());
    bus.subscribe_with_state("orders", totals.clone(), bill, Default::default())
        .await?;
    let server = http::serve_with_shutdown(bus.clone(), http::DEFAULT_ADDR, bus.stopped()).await?;

    let orders: u64 = std::env::var("BILLING_DEMO_ORDERS").map_or(Ok(0), |n| n.parse())?;
    let generator = tokio::spawn(generate(bus.clone(), orders));
    tokio::signal::ctrl_c().await?;
    generator.abort();
    let stopped = bus.shutdown().await;
    server.stopped().await;
    println!("totals: {:?}", totals.0.lock().unwrap());
    Ok(stopped?)
}

/// Publishes `n` orders, one every millisecond: a poison one in 50.
async fn generate(bus: EventBus, n: u64) -> jxt_eventbus::Result<()> {
    for i in 0..n {
        let order = Order {
            customer: format!("customer-{}", i % 20),
            total: if i % 50 == 49 { 0 } else { i % 100 + 1 },
        };
        let event = Envelope::builder()
            .aggregate_id(format!("order-{i}"))
            .event_type("OrderPlaced")
            .event_version(1)
            .payload(&order)
            .build()?;
        bus.publish_envelope("orders", &event).await?;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}
