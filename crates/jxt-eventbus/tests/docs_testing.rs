//! The examples of `docs/testing.md`, run as they are written there.

use jxt_eventbus::testing::DeliveryBuilder;
use jxt_eventbus::{Envelope, ErrorKind, Event, FromDelivery, HandlerError, Outputs};
use std::sync::{Arc, Mutex};

#[derive(Debug, serde::Deserialize)]
struct Order {
    total: u64,
}

#[derive(Default)]
struct Billing {
    billed: Mutex<u64>,
}

async fn bill(billing: Arc<Billing>, order: Event<Order>) -> Result<Outputs, HandlerError> {
    *billing.billed.lock().unwrap() += order.data.total;
    let paid = Envelope::builder()
        .aggregate_id(&order.envelope.aggregate_id)
        .event_type("PaymentRequested")
        .event_version(1)
        .payload(&order.data.total)
        .build()?;
    Ok(Outputs::new().envelope("payments", paid))
}

#[tokio::test]
async fn bills_an_order() {
    let order = Envelope::new(
        "order-1",
        "OrderPlaced",
        1,
        &serde_json::json!({"total": 12}),
    )
    .unwrap();
    let delivery = DeliveryBuilder::envelope(&order)
        .topic("orders")
        .attempt(1)
        .build();
    let billing = Arc::new(Billing::default());

    let outputs = bill(billing.clone(), Event::from_delivery(&delivery).unwrap())
        .await
        .unwrap();

    assert_eq!(*billing.billed.lock().unwrap(), 12);
    assert_eq!(outputs.topics().collect::<Vec<_>>(), ["payments"]);
    let (_, payment) = &outputs.to_messages().unwrap()[0];
    assert_eq!(payment.key_str(), Some("order-1"));

    // What the bus does with a payload that does not decode:
    let poison = Envelope::new("order-2", "OrderPlaced", 1, &"twelve").unwrap();
    let err =
        Event::<Order>::from_delivery(&DeliveryBuilder::envelope(&poison).build()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decode); // dead-lettered, not retried
}

use jxt_eventbus::config::MemoryConfig;
use jxt_eventbus::{EventBus, MemoryBroker, SubscribeOptions};

#[tokio::test]
async fn orders_become_payments() {
    let broker = MemoryBroker::new(MemoryConfig::default());
    let bus = EventBus::builder()
        .memory_broker(broker.clone())
        .build()
        .await
        .unwrap();
    let billing = Arc::new(Billing::default());
    bus.subscribe_with_state("orders", billing.clone(), bill, SubscribeOptions::new())
        .await
        .unwrap();

    let order = Envelope::new(
        "order-1",
        "OrderPlaced",
        1,
        &serde_json::json!({"total": 12}),
    )
    .unwrap();
    bus.publish_envelope("orders", &order).await.unwrap();
    let poison = Envelope::new("order-2", "OrderPlaced", 1, &"twelve").unwrap();
    bus.publish_envelope("orders", &poison).await.unwrap();

    bus.idle().await.unwrap();

    assert_eq!(broker.retained("payments").len(), 1);
    let dead = broker.retained("orders.dlq");
    assert_eq!(
        dead[0].2.headers.get_str("x-dlq-error-kind"),
        Some("decode")
    );
    bus.shutdown().await.unwrap();
}

use jxt_eventbus::config::RetryConfig;
use jxt_eventbus::{Delivery, Message};
use std::time::Duration;

#[tokio::test(start_paused = true)]
async fn a_busy_ledger_is_retried_after_its_backoff() {
    let bus = EventBus::builder()
        .retry(RetryConfig {
            initial_backoff: Duration::from_secs(10),
            jitter: false,
            ..RetryConfig::default()
        })
        .build()
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let flaky = |d: Delivery| async move {
        if d.attempt() == 1 {
            return Err(HandlerError::retryable("ledger busy"));
        }
        Ok(())
    };
    bus.subscribe("orders", flaky, SubscribeOptions::new())
        .await
        .unwrap();
    bus.publish("orders", Message::new("1")).await.unwrap();

    bus.idle().await.unwrap(); // the clock ran through the backoff

    assert!(started.elapsed() >= Duration::from_secs(10));
    bus.shutdown().await.unwrap();
}

/// The page and this file do not drift apart: every example of the page is
/// in this file, verbatim.
#[test]
fn this_file_holds_every_example_of_the_page() {
    let page = include_str!("../../../docs/testing.md");
    let this = include_str!("docs_testing.rs");
    let mut blocks = 0;
    for block in page.split("```rust\n").skip(1) {
        let code = block.split("```").next().unwrap();
        assert!(
            this.contains(code),
            "docs/testing.md has an example not tested here:\n{code}"
        );
        blocks += 1;
    }
    assert_eq!(blocks, 3);
}
