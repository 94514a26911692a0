//! A handler with a known failure pattern, for tests that count what the
//! bus records: a `bad` payload fails permanently (dead-lettered), the
//! first `flaky` one fails retryably once (retried), anything else succeeds.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use jxt_eventbus::{Delivery, ErrorKind, EventBus, HandlerError, SubscribeOptions};

/// Subscribes the handler to `topic`.
pub async fn subscribe_bad_and_flaky(bus: &EventBus, topic: &str) {
    let f = Arc::new(AtomicUsize::new(0));
    bus.subscribe(
        topic,
        move |d: Delivery| {
            let f = f.clone();
            async move {
                match &d.payload()[..] {
                    b"bad" => Err(HandlerError::new(ErrorKind::Permanent, "bad order")),
                    b"flaky" if f.fetch_add(1, Ordering::SeqCst) == 0 => {
                        Err(HandlerError::new(ErrorKind::Retryable, "try again"))
                    }
                    _ => Ok(()),
                }
            }
        },
        SubscribeOptions::new(),
    )
    .await
    .unwrap();
}
