//! A kit for testing services built on the bus: [`DeliveryBuilder`] for
//! calling a handler directly, and — on the memory backend —
//! [`EventBus::idle`](crate::EventBus::idle) and
//! [`MemoryBroker::drained`](crate::MemoryBroker::drained) to wait until
//! everything published was handled, instead of polling or sleeping.
//! The patterns are in `docs/testing.md`.
//!
//! Always compiled: it has no dependencies of its own and nothing in it
//! touches a broker, so a service's tests need no extra feature.
//!
//! ```
//! use jxt_eventbus::testing::DeliveryBuilder;
//! use jxt_eventbus::{Delivery, HandlerResult, HandlerError, Message};
//!
//! async fn handle(d: Delivery) -> HandlerResult {
//!     if d.attempt() < 2 {
//!         return Err(HandlerError::retryable("ledger busy"));
//!     }
//!     Ok(())
//! }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let first = DeliveryBuilder::new(Message::new("{}").with_key("order-1")).topic("orders").build();
//! assert!(handle(first).await.unwrap_err().is_retryable());
//! let retry = DeliveryBuilder::new(Message::new("{}")).attempt(2).build();
//! assert!(handle(retry).await.is_ok());
//! # }
//! ```

use std::sync::Arc;

use crate::delivery::Delivery;
use crate::envelope::Envelope;
use crate::message::Message;

/// Builds a [`Delivery`] for a handler unit test. Defaults: topic
/// `"test"`, partition 0, offset 0, first attempt, not in recovery mode.
#[derive(Clone, Debug)]
#[must_use]
pub struct DeliveryBuilder {
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    attempt: u32,
    in_recovery: bool,
    message: Message,
}

impl DeliveryBuilder {
    /// A delivery of `message`.
    pub fn new(message: Message) -> Self {
        DeliveryBuilder {
            topic: Arc::from("test"),
            partition: 0,
            offset: 0,
            attempt: 1,
            in_recovery: false,
            message,
        }
    }

    /// A delivery of `envelope` as the bus publishes it (JSON payload, the
    /// aggregate id as key, `X-*` headers).
    ///
    /// # Panics
    /// When the envelope does not validate: a test's own input is wrong.
    pub fn envelope(envelope: &Envelope) -> Self {
        match envelope.to_message() {
            Ok(message) => Self::new(message),
            Err(e) => panic!("DeliveryBuilder::envelope: {e}"),
        }
    }

    /// The topic it was read from.
    pub fn topic(mut self, topic: &str) -> Self {
        self.topic = Arc::from(topic);
        self
    }

    /// Its partition.
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = partition;
        self
    }

    /// Its offset.
    pub fn offset(mut self, offset: i64) -> Self {
        self.offset = offset;
        self
    }

    /// The attempt (1 first, 2 the first retry, ...; 0 is taken as 1).
    pub fn attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt.max(1);
        self
    }

    /// Whether the bus is in recovery mode.
    pub fn in_recovery(mut self, in_recovery: bool) -> Self {
        self.in_recovery = in_recovery;
        self
    }

    /// The delivery.
    pub fn build(self) -> Delivery {
        Delivery::from_parts(
            self.topic,
            self.partition,
            self.offset,
            self.attempt,
            self.in_recovery,
            Arc::new(self.message),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_what_it_was_told() {
        let d = DeliveryBuilder::new(Message::new("x").with_key("k"))
            .topic("orders")
            .partition(2)
            .offset(7)
            .attempt(3)
            .in_recovery(true)
            .build();
        assert_eq!(
            (
                d.topic(),
                d.partition(),
                d.offset(),
                d.attempt(),
                d.in_recovery()
            ),
            ("orders", 2, 7, 3, true)
        );
        assert_eq!(d.payload().as_ref(), b"x");
        let e = Envelope::new("order-9", "OrderPlaced", 1, &1).unwrap();
        let d = DeliveryBuilder::envelope(&e).build();
        assert_eq!(
            d.event_info().event_id.as_deref(),
            Some(e.event_id.as_str())
        );
        assert_eq!(
            DeliveryBuilder::new(Message::new(""))
                .attempt(0)
                .build()
                .attempt(),
            1
        );
    }
}
