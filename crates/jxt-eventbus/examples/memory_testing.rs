//! How a service tests its handlers without a broker: the orders service's
//! own handler (`orders_service/orders.rs`, included below) called
//! directly with `testing::DeliveryBuilder`, then run end to end on the
//! memory backend until `bus.idle()`, then with tokio's paused clock so a
//! 30-second retry backoff takes no real time. `docs/testing.md` explains
//! each pattern.
//!
//! ```sh
//! cargo run -p jxt-eventbus --example memory_testing    # runs the checks, says what each showed
//! cargo test -p jxt-eventbus --example memory_testing   # the same checks as tests
//! ```

#[path = "orders_service/orders.rs"]
mod orders;

use std::sync::Arc;
use std::time::Duration;

use jxt_eventbus::config::{MemoryConfig, RetryConfig};
use jxt_eventbus::testing::DeliveryBuilder;
use jxt_eventbus::{Envelope, ErrorKind, EventBus, FromDelivery, MemoryBroker, SubscribeOptions};

type Checked = Result<String, Box<dyn std::error::Error>>;

/// Order `i` as the service receives it: customer `customer-{i % 20}`,
/// total `i % 100 + 1`, except every 50th (49, 99, ...), which has none.
fn order(i: u64) -> jxt_eventbus::Result<Envelope> {
    let order = orders::Order {
        customer: format!("customer-{}", i % 20),
        total: if i % 50 == 49 { 0 } else { i % 100 + 1 },
    };
    Envelope::builder()
        .aggregate_id(format!("order-{i}"))
        .event_type("OrderPlaced")
        .event_version(1)
        .payload(&order)
        .build()
}

/// 1. The handler is an async function: build its input, call it, look at
///    its state and its outputs. No bus.
async fn bills_an_order_directly() -> Checked {
    let order = order(3)?; // customer-3, total 4
    let delivery = DeliveryBuilder::envelope(&order).topic("orders").build();
    let totals = Arc::new(orders::Totals::default());

    let outputs = orders::bill(totals.clone(), FromDelivery::from_delivery(&delivery)?).await?;

    assert_eq!(totals.lock().unwrap()["customer-3"], 4);
    let (topic, payment) = &outputs.to_messages()?[0];
    let payment = Envelope::from_message(payment)?;
    assert_eq!(topic, "payments");
    assert_eq!(payment.aggregate_id, "order-3");
    assert_eq!(payment.correlation_id.as_ref(), Some(&order.event_id));
    Ok(format!(
        "direct call: order-3 billed 4 to customer-3 and returned one {} on {topic} \
         (key order-3, correlation id = the order's event id)",
        payment.event_type
    ))
}

/// 2. What the bus will do with an outcome is the error's kind: retryable
///    (retried in the key's lane), permanent or decode (dead-lettered).
async fn retries_and_poison_directly() -> Checked {
    let totals = Arc::new(orders::Totals::default());
    let busy = order(6)?; // total 7: the ledger is busy on the first try
    let first = DeliveryBuilder::envelope(&busy).attempt(1).build();
    let err = orders::bill(totals.clone(), FromDelivery::from_delivery(&first)?)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Retryable);
    let second = DeliveryBuilder::envelope(&busy).attempt(2).build();
    let outputs = orders::bill(totals.clone(), FromDelivery::from_delivery(&second)?).await?;
    assert_eq!(outputs.len(), 1);

    let poison = DeliveryBuilder::envelope(&order(49)?).build();
    let err = orders::bill(totals, FromDelivery::from_delivery(&poison)?)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent);

    let not_an_order = Envelope::builder()
        .aggregate_id("order-x")
        .event_type("OrderPlaced")
        .event_version(1)
        .payload(&"twelve")
        .build()?;
    let bad = DeliveryBuilder::envelope(&not_an_order).build();
    let err = <(jxt_eventbus::Event<orders::Order>, jxt_eventbus::Delivery)>::from_delivery(&bad)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decode);
    Ok(
        "error kinds: busy ledger on attempt 1 is retryable and succeeds on attempt 2; \
        an order without a total is permanent; a payload that is not an Order is a decode \
        error before the handler runs"
            .into(),
    )
}

/// 3. End to end on the memory backend: the real subscription, outputs
///    and dead letters; `bus.idle()` waits until every record was handled
///    or dead-lettered and acknowledged, retries included. No sleep.
async fn orders_become_payments_on_a_memory_bus() -> Checked {
    let broker = MemoryBroker::new(MemoryConfig::default());
    let bus = EventBus::builder()
        .group("orders")
        .memory_broker(broker.clone())
        .build()
        .await?;
    let totals = Arc::new(orders::Totals::default());
    bus.subscribe_with_state(
        "orders",
        totals.clone(),
        orders::bill,
        SubscribeOptions::new(),
    )
    .await?;
    for i in 0..100 {
        bus.publish_envelope("orders", &order(i)?).await?;
    }

    bus.idle().await?;

    let payments = broker.retained("payments").len();
    let dead = broker.retained("orders.dlq");
    assert_eq!((payments, dead.len()), (98, 2));
    for (_, _, letter) in &dead {
        assert_eq!(
            letter.headers.get_str("x-dlq-error-kind"),
            Some("permanent")
        );
        assert_eq!(letter.headers.get_str("x-dlq-attempts"), Some("1"));
    }
    let billed: u64 = totals.lock().unwrap().values().sum();
    let expected: u64 = (0..100).filter(|i| i % 50 != 49).map(|i| i % 100 + 1).sum();
    assert_eq!(billed, expected);
    bus.shutdown().await?;
    Ok(format!(
        "memory bus: 100 orders -> {payments} payments, {} dead letters (kind permanent, \
         1 attempt), {billed} billed, all after bus.idle() without a sleep",
        dead.len()
    ))
}

/// 4. Time control: on tokio's paused clock (`start_paused`) the bus's
///    retry backoff passes as soon as every task waits.
async fn a_busy_ledger_waits_its_backoff() -> Checked {
    let bus = EventBus::builder()
        .retry(RetryConfig {
            initial_backoff: Duration::from_secs(30),
            max_backoff: Duration::from_secs(30),
            jitter: false,
            ..RetryConfig::default()
        })
        .build()
        .await?;
    let totals = Arc::new(orders::Totals::default());
    bus.subscribe_with_state(
        "orders",
        totals.clone(),
        orders::bill,
        SubscribeOptions::new(),
    )
    .await?;
    let (clock, real) = (tokio::time::Instant::now(), std::time::Instant::now());
    bus.publish_envelope("orders", &order(6)?).await?; // total 7: busy once

    bus.idle().await?;

    assert!(clock.elapsed() >= Duration::from_secs(30));
    assert_eq!(totals.lock().unwrap()["customer-6"], 7);
    bus.shutdown().await?;
    Ok(format!(
        "paused clock: the retry waited its 30 s backoff ({:.0?} on the test clock, \
         {:.0?} of real time)",
        clock.elapsed(),
        real.elapsed()
    ))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    println!("ok  {}", runtime.block_on(bills_an_order_directly())?);
    println!("ok  {}", runtime.block_on(retries_and_poison_directly())?);
    println!(
        "ok  {}",
        runtime.block_on(orders_become_payments_on_a_memory_bus())?
    );
    let paused = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()?;
    println!(
        "ok  {}",
        paused.block_on(a_busy_ledger_waits_its_backoff())?
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn bills_an_order_directly() {
        super::bills_an_order_directly().await.unwrap();
    }

    #[tokio::test]
    async fn retries_and_poison_directly() {
        super::retries_and_poison_directly().await.unwrap();
    }

    #[tokio::test]
    async fn orders_become_payments_on_a_memory_bus() {
        super::orders_become_payments_on_a_memory_bus()
            .await
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_ledger_waits_its_backoff() {
        super::a_busy_ledger_waits_its_backoff().await.unwrap();
    }
}
