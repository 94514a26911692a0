//! Typed handlers with shared state on the memory backend: envelopes with a
//! typed payload, JSON payloads, state without clones in the handler, and a
//! payload that does not decode dead-lettered as a decode error, once.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use jxt_eventbus::config::MemoryConfig;
use jxt_eventbus::dispatch::worker::dlq_headers;
use jxt_eventbus::{
    Delivery, Envelope, Event, EventBus, HandlerError, MemoryBroker, Message, SubscribeOptions,
};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Order {
    total: u64,
}

/// Totals per customer, shared by every call of the handler.
#[derive(Default)]
struct Billing {
    totals: Mutex<BTreeMap<String, u64>>,
}

async fn add_order(billing: Arc<Billing>, order: Event<Order>) -> Result<(), HandlerError> {
    *billing
        .totals
        .lock()
        .unwrap()
        .entry(order.envelope.aggregate_id)
        .or_default() += order.data.total;
    Ok(())
}

async fn bus(broker: &MemoryBroker) -> EventBus {
    EventBus::builder()
        .memory_broker(broker.clone())
        .build()
        .await
        .unwrap()
}

fn header(m: &Message, name: &str) -> Option<String> {
    m.headers.get_str(name).map(str::to_string)
}

#[tokio::test]
async fn stateful_envelope_handler_totals_and_dead_letters_a_bad_payload() {
    let broker = MemoryBroker::new(MemoryConfig::default());
    let bus = bus(&broker).await;
    let billing = Arc::new(Billing::default());
    bus.subscribe_with_state(
        "orders",
        billing.clone(),
        add_order,
        SubscribeOptions::new(),
    )
    .await
    .unwrap();
    for (customer, total) in [("c-1", 5), ("c-2", 7), ("c-1", 10)] {
        let e = Envelope::builder()
            .aggregate_id(customer)
            .event_type("OrderPlaced")
            .event_version(1)
            .payload(&serde_json::json!({ "total": total }))
            .build()
            .unwrap();
        bus.publish_envelope("orders", &e).await.unwrap();
    }
    // An envelope whose payload is not an `Order`.
    let poison = Envelope::new("c-3", "OrderPlaced", 1, &"twelve").unwrap();
    bus.publish_envelope("orders", &poison).await.unwrap();
    bus.idle().await.unwrap();

    let totals = billing.totals.lock().unwrap().clone();
    assert_eq!(
        totals,
        BTreeMap::from([("c-1".into(), 15), ("c-2".into(), 7)])
    );
    let dead = broker.retained("orders.dlq");
    assert_eq!(dead.len(), 1);
    let m = &dead[0].2;
    assert_eq!(
        header(m, dlq_headers::ERROR_KIND).as_deref(),
        Some("decode")
    );
    assert_eq!(
        header(m, dlq_headers::ATTEMPTS).as_deref(),
        Some("1"),
        "not retried"
    );
    let error = header(m, dlq_headers::ERROR).unwrap();
    assert!(error.contains("Order"), "{error}");
    assert_eq!(Envelope::from_message(m).unwrap().event_id, poison.event_id);
    bus.shutdown().await.unwrap();
}

#[tokio::test]
async fn json_handler_decodes_its_payload_and_dead_letters_what_does_not() {
    let broker = MemoryBroker::new(MemoryConfig::default());
    let bus = bus(&broker).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    bus.subscribe_json(
        "orders",
        move |order: Order, d: Delivery| {
            s.lock().unwrap().push((order.total, d.attempt()));
            async { Ok::<_, HandlerError>(()) }
        },
        SubscribeOptions::new(),
    )
    .await
    .unwrap();
    bus.publish("orders", Message::new(r#"{"total":3}"#))
        .await
        .unwrap();
    bus.publish("orders", Message::new("{not json"))
        .await
        .unwrap();
    bus.publish("orders", Message::new(r#"{"total":"x"}"#))
        .await
        .unwrap();
    bus.idle().await.unwrap();
    assert_eq!(*seen.lock().unwrap(), [(3, 1)]);
    let dead = broker.retained("orders.dlq");
    assert_eq!(dead.len(), 2);
    for (_, _, m) in &dead {
        assert_eq!(
            header(m, dlq_headers::ERROR_KIND).as_deref(),
            Some("decode")
        );
    }
    bus.shutdown().await.unwrap();
}

/// A handler that is not an envelope at all still gets a decode error from
/// `Event<T>`, and a plain stateful `Delivery` handler still works.
#[tokio::test]
async fn a_record_that_is_no_envelope_is_a_decode_error() {
    let broker = MemoryBroker::new(MemoryConfig::default());
    let bus = bus(&broker).await;
    let billing = Arc::new(Billing::default());
    bus.subscribe_with_state(
        "orders",
        billing.clone(),
        add_order,
        SubscribeOptions::new(),
    )
    .await
    .unwrap();
    bus.publish("orders", Message::new("plain text").with_key("c-9"))
        .await
        .unwrap();
    bus.idle().await.unwrap();
    assert!(billing.totals.lock().unwrap().is_empty());
    let dead = broker.retained("orders.dlq");
    assert_eq!(dead.len(), 1);
    assert_eq!(
        header(&dead[0].2, dlq_headers::ERROR_KIND).as_deref(),
        Some("decode")
    );
    bus.shutdown().await.unwrap();
}
