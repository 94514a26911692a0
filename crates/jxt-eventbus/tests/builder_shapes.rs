//! Small shapes of the API: the builder keeps setters whatever the order of
//! `config`, a publish-only bus, and envelope batches.

use jxt_eventbus::config::MemoryConfig;
use jxt_eventbus::{
    BusConfig, Delivery, Envelope, Error, EventBus, MemoryBroker, Ordering, SubscribeOptions,
};

#[tokio::test]
async fn setters_before_config_are_kept() {
    let mut file = BusConfig {
        group: "from-file".into(),
        ..BusConfig::default()
    };
    file.dispatch.max_concurrency = 3;
    file.retry.max_attempts = 9;
    let bus = EventBus::builder()
        .group("billing")
        .ordering(Ordering::Partition)
        .config(file)
        .max_concurrency(7)
        .build()
        .await
        .unwrap();
    let c = bus.config();
    assert_eq!(c.group, "billing", "a setter before config() is kept");
    assert_eq!(c.dispatch.ordering, Ordering::Partition);
    assert_eq!(
        c.dispatch.max_concurrency, 7,
        "a setter after config() applies"
    );
    assert_eq!(
        c.retry.max_attempts, 9,
        "what no setter touched comes from the file"
    );
    bus.shutdown().await.unwrap();
}

#[tokio::test]
async fn memory_broker_before_config_is_kept() {
    let broker = MemoryBroker::new(MemoryConfig::default());
    let bus = EventBus::builder()
        .memory_broker(broker.clone())
        .config(BusConfig::default())
        .build()
        .await
        .unwrap();
    bus.publish("t", jxt_eventbus::Message::new("x"))
        .await
        .unwrap();
    assert_eq!(
        broker.retained("t").len(),
        1,
        "published on the given broker"
    );
    bus.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_publish_only_bus_publishes_and_refuses_to_subscribe() {
    let broker = MemoryBroker::new(MemoryConfig::default());
    let bus = EventBus::builder()
        .memory_broker(broker.clone())
        .publish_only()
        .build()
        .await
        .unwrap();
    let e = Envelope::new("order-1", "OrderPlaced", 1, &1).unwrap();
    bus.publish_envelope("orders", &e).await.unwrap();
    let err = bus
        .subscribe(
            "orders",
            |_d: Delivery| async { Ok(()) },
            SubscribeOptions::new(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Subscribe { .. }), "{err}");
    assert!(err.to_string().contains("publish-only"), "{err}");
    assert!(bus.readiness().await.is_ok(), "ready without partitions");
    assert_eq!(
        broker.group_members("jxt-eventbus"),
        0,
        "no consumer was created"
    );
    bus.shutdown().await.unwrap();
}

#[tokio::test]
async fn envelopes_publish_as_a_batch_or_not_at_all() {
    let broker = MemoryBroker::new(MemoryConfig::default());
    let bus = EventBus::builder()
        .memory_broker(broker.clone())
        .build()
        .await
        .unwrap();
    let events: Vec<Envelope> = (1..=5)
        .map(|v| Envelope::new("order-1", "OrderChanged", v, &v).unwrap())
        .collect();
    let receipts = bus.publish_envelope_batch("orders", &events).await.unwrap();
    assert!(receipts.iter().all(Result::is_ok));
    let stored: Vec<i64> = broker
        .retained("orders")
        .iter()
        .map(|(_, _, m)| Envelope::from_message(m).unwrap().event_version)
        .collect();
    assert_eq!(stored, [1, 2, 3, 4, 5], "one key: publish order kept");

    let mut bad = events.clone();
    bad[2].event_version = 0;
    let err = bus
        .publish_envelope_batch("orders", &bad)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("event_version must be positive"),
        "{err}"
    );
    assert_eq!(
        broker.retained("orders").len(),
        5,
        "nothing of a refused batch"
    );
    bus.shutdown().await.unwrap();
}
