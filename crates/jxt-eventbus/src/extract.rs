//! What a typed handler takes from a [`Delivery`]: the delivery itself, the
//! decoded [`Envelope`], a JSON payload ([`Json`]), an envelope with a typed
//! payload ([`Event`]), or a pair of them.
//!
//! Decoding happens before the handler runs. A record that does not decode
//! fails with [`ErrorKind::Decode`]: it is not retried (the bytes will not
//! change) and goes to the dead-letter topic with `x-dlq-error-kind: decode`.

use serde::de::DeserializeOwned;

use crate::delivery::Delivery;
use crate::envelope::Envelope;
use crate::handler::{ErrorKind, HandlerError};

/// A handler input built from a delivery (as axum's extractors are built
/// from a request).
pub trait FromDelivery: Sized + Send + 'static {
    /// Builds the input.
    ///
    /// # Errors
    /// A [`HandlerError`] (usually [`ErrorKind::Decode`]) when the record
    /// does not have the expected form.
    fn from_delivery(delivery: &Delivery) -> Result<Self, HandlerError>;
}

impl FromDelivery for Delivery {
    fn from_delivery(delivery: &Delivery) -> Result<Self, HandlerError> {
        // Shares the record: a reference count, not a copy.
        Ok(delivery.clone())
    }
}

impl FromDelivery for Envelope {
    fn from_delivery(delivery: &Delivery) -> Result<Self, HandlerError> {
        Envelope::from_message(delivery.message()).map_err(|e| decode_error(e.to_string(), e))
    }
}

/// The payload decoded from JSON into `T`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned + Send + 'static> FromDelivery for Json<T> {
    fn from_delivery(delivery: &Delivery) -> Result<Self, HandlerError> {
        serde_json::from_slice(delivery.payload())
            .map(Json)
            .map_err(|e| decode_error(not_a::<T>(&e), e))
    }
}

/// A domain event whose envelope payload is decoded into `T`; the envelope
/// keeps the raw payload too.
#[derive(Clone, Debug)]
pub struct Event<T> {
    /// The envelope: event id, aggregate id, type, version, ids.
    pub envelope: Envelope,
    /// Its payload as `T`.
    pub data: T,
}

impl<T: DeserializeOwned + Send + 'static> FromDelivery for Event<T> {
    fn from_delivery(delivery: &Delivery) -> Result<Self, HandlerError> {
        let envelope = Envelope::from_delivery(delivery)?;
        let data = serde_json::from_str(envelope.payload.get())
            .map_err(|e| decode_error(not_a::<T>(&e), e))?;
        Ok(Event { envelope, data })
    }
}

impl<A: FromDelivery, B: FromDelivery> FromDelivery for (A, B) {
    fn from_delivery(delivery: &Delivery) -> Result<Self, HandlerError> {
        Ok((A::from_delivery(delivery)?, B::from_delivery(delivery)?))
    }
}

fn not_a<T>(e: &serde_json::Error) -> String {
    format!("payload is not a {}: {e}", std::any::type_name::<T>())
}

fn decode_error(message: String, source: impl Into<crate::error::BoxError>) -> HandlerError {
    HandlerError::new(ErrorKind::Decode, message).with_source(source)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::DeliveryBuilder;
    use crate::Message;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Order {
        total: u64,
    }

    #[test]
    fn json_and_events_decode_or_fail_as_decode_errors() {
        let d = DeliveryBuilder::new(Message::new(r#"{"total":12}"#)).build();
        assert_eq!(
            Json::<Order>::from_delivery(&d).unwrap().0,
            Order { total: 12 }
        );
        let e = Envelope::new(
            "order-1",
            "OrderPlaced",
            1,
            &serde_json::json!({"total": 3}),
        )
        .unwrap();
        let d = DeliveryBuilder::envelope(&e).build();
        let event = Event::<Order>::from_delivery(&d).unwrap();
        assert_eq!((event.data.total, event.envelope.event_id), (3, e.event_id));

        let bad = DeliveryBuilder::new(Message::new("not json")).build();
        let err = Json::<Order>::from_delivery(&bad).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Decode);
        assert!(err.message().contains("Order"), "{}", err.message());
        let wrong = Envelope::new("order-1", "OrderPlaced", 1, &"text").unwrap();
        let err =
            Event::<Order>::from_delivery(&DeliveryBuilder::envelope(&wrong).build()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Decode);
        let pair = <(Envelope, Delivery)>::from_delivery(&d).unwrap();
        assert_eq!(pair.1.topic(), d.topic());
    }
}
