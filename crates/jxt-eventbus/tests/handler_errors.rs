//! Errors inside a handler as a service writes them: `?` on a JSON error, on
//! a bus error and on any error said retryable or permanent; the cause chain
//! reaches the dead letter's `x-dlq-error` header.

mod support;

use std::sync::{Arc, Mutex};

use jxt_eventbus::config::MemoryConfig;
use jxt_eventbus::dispatch::worker::dlq_headers;
use jxt_eventbus::{
    BusConfig, Delivery, EventBus, HandlerError, HandlerResult, MemoryBroker, Message, ResultExt,
    SubscribeOptions,
};
use support::eventually;

async fn bus(broker: &MemoryBroker, group: &str) -> EventBus {
    let mut config = BusConfig {
        group: group.into(),
        ..BusConfig::default()
    };
    config.retry.max_attempts = 1;
    EventBus::builder()
        .config(config)
        .memory_broker(broker.clone())
        .build()
        .await
        .unwrap()
}

fn charge(amount: u64) -> std::io::Result<()> {
    if amount > 100 {
        return Err(std::io::Error::other("card declined"));
    }
    Ok(())
}

async fn handle(d: Delivery) -> HandlerResult {
    let amount: u64 = serde_json::from_slice(d.payload())?;
    if amount == 0 {
        // Any error said retryable or permanent converts with `?`.
        let _: u32 = "none".parse().permanent()?;
    }
    charge(amount).map_err(|e| HandlerError::permanent("charging card").with_source(e))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_errors_convert_and_their_causes_reach_the_dead_letter() {
    let broker = MemoryBroker::new(MemoryConfig::default());
    let billing = bus(&broker, "billing").await;
    billing
        .subscribe("orders", handle, SubscribeOptions::new())
        .await
        .unwrap();
    let reader = bus(&broker, "dlq-reader").await;
    let dead = Arc::new(Mutex::new(Vec::new()));
    let d2 = dead.clone();
    reader
        .subscribe(
            "orders.dlq",
            move |d: Delivery| {
                let d2 = d2.clone();
                async move {
                    let h = d.headers();
                    let text = |n| h.get_str(n).unwrap_or_default().to_string();
                    d2.lock().unwrap().push((
                        d.key_str().unwrap_or_default().to_string(),
                        text(dlq_headers::ERROR_KIND),
                        text(dlq_headers::ERROR),
                    ));
                    Ok(())
                }
            },
            SubscribeOptions::new(),
        )
        .await
        .unwrap();
    for (key, payload) in [
        ("ok", "5"),
        ("declined", "500"),
        ("garbled", "{"),
        ("zero", "0"),
    ] {
        billing
            .publish("orders", Message::new(payload).with_key(key))
            .await
            .unwrap();
    }
    eventually("the three failures dead-lettered", 30, || {
        dead.lock().unwrap().len() == 3
    })
    .await;
    let mut got = dead.lock().unwrap().clone();
    got.sort();
    assert_eq!(got[0].0, "declined");
    assert_eq!(got[0].1, "permanent");
    assert_eq!(got[0].2, "charging card: card declined");
    assert_eq!(got[1].0, "garbled");
    assert_eq!(got[1].1, "decode", "a JSON error is a decode failure");
    assert!(got[1].2.contains("expected u64"), "{}", got[1].2);
    assert_eq!(got[2].0, "zero");
    assert_eq!(got[2].1, "permanent");
    assert_eq!(got[2].2, "invalid digit found in string");
    billing.shutdown().await.unwrap();
    reader.shutdown().await.unwrap();
}
