//! Typed handlers: inputs decoded before the handler runs
//! ([`FromDelivery`]), shared state without clones in user code, and
//! outputs the bus publishes before the input is acknowledged
//! ([`Outputs`]).

use std::future::Future;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use super::{EventBus, SubscribeOptions, WeakBus};
use crate::delivery::Delivery;
use crate::error::{Error, Result};
use crate::extract::{FromDelivery, Json};
use crate::handler::HandlerError;
use crate::outputs::IntoOutputs;

impl EventBus {
    /// Subscribes a typed handler: `input` is built from each delivery
    /// ([`Delivery`], [`Envelope`](crate::Envelope),
    /// [`Json<T>`](crate::Json), [`Event<T>`](crate::Event) or a pair of
    /// them); a record that does not decode is dead-lettered as a decode
    /// error without running the handler. On `Ok` the handler's
    /// [`Outputs`](crate::Outputs) (or `()`) are published through this bus,
    /// and the record is acknowledged only once they are stored; a failed
    /// output publish fails the record as [`HandlerError::from`] an
    /// [`Error`] does (retried when retryable, else dead-lettered).
    ///
    /// ```
    /// use jxt_eventbus::{Delivery, Envelope, EventBus, HandlerError, Json, Outputs, SubscribeOptions};
    ///
    /// #[derive(serde::Deserialize)]
    /// struct Order { id: String, total: u64 }
    ///
    /// async fn bill(Json(order): Json<Order>) -> Result<Outputs, HandlerError> {
    ///     let paid = Envelope::builder()
    ///         .aggregate_id(&order.id)
    ///         .event_type("PaymentRequested")
    ///         .event_version(1)
    ///         .payload(&order.total)
    ///         .build()?;
    ///     Ok(Outputs::new().envelope("payments", paid))
    /// }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> jxt_eventbus::Result<()> {
    /// let bus = EventBus::builder().build().await?;
    /// bus.subscribe_typed("orders", bill, SubscribeOptions::new()).await?;
    /// # bus.shutdown().await
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`EventBus::subscribe`].
    ///
    /// # Cancel safety
    /// As [`EventBus::subscribe`].
    pub async fn subscribe_typed<I, O, F, Fut>(
        &self,
        topic: &str,
        handler: F,
        options: SubscribeOptions,
    ) -> Result<()>
    where
        I: FromDelivery,
        O: IntoOutputs,
        F: Fn(I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<O, HandlerError>> + Send + 'static,
    {
        let bus = self.downgrade();
        let typed = move |delivery: Delivery| {
            let handling = I::from_delivery(&delivery).map(&handler);
            finish(bus.clone(), handling)
        };
        self.subscribe(topic, typed, options).await
    }

    /// As [`EventBus::subscribe_typed`], with `state` shared by every call:
    /// the handler gets an [`Arc`] of it (the bus clones the `Arc`, never
    /// the state). Pass the state or an `Arc` you keep for elsewhere (an
    /// HTTP route reading the same totals, say).
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use jxt_eventbus::{Event, EventBus, HandlerError, SubscribeOptions};
    ///
    /// #[derive(Default)]
    /// struct Totals(Mutex<u64>);
    ///
    /// async fn add(totals: Arc<Totals>, order: Event<u64>) -> Result<(), HandlerError> {
    ///     *totals.0.lock().unwrap() += order.data;
    ///     Ok(())
    /// }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> jxt_eventbus::Result<()> {
    /// let bus = EventBus::builder().build().await?;
    /// let totals = Arc::new(Totals::default());
    /// bus.subscribe_with_state("orders", totals.clone(), add, SubscribeOptions::new()).await?;
    /// # bus.shutdown().await
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`EventBus::subscribe`].
    ///
    /// # Cancel safety
    /// As [`EventBus::subscribe`].
    pub async fn subscribe_with_state<S, I, O, F, Fut>(
        &self,
        topic: &str,
        state: impl Into<Arc<S>>,
        handler: F,
        options: SubscribeOptions,
    ) -> Result<()>
    where
        S: Send + Sync + 'static + ?Sized,
        I: FromDelivery,
        O: IntoOutputs,
        F: Fn(Arc<S>, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<O, HandlerError>> + Send + 'static,
    {
        let state: Arc<S> = state.into();
        let bus = self.downgrade();
        let stateful = move |delivery: Delivery| {
            let handling = I::from_delivery(&delivery).map(|input| handler(state.clone(), input));
            finish(bus.clone(), handling)
        };
        self.subscribe(topic, stateful, options).await
    }

    /// Subscribes a handler of JSON payloads decoded into `T`; a payload that
    /// is not a `T` is dead-lettered as a decode error
    /// (`x-dlq-error-kind: decode`), not retried. Outputs as
    /// [`EventBus::subscribe_typed`]. For jxt-core envelopes whose payload
    /// is a `T`, take an [`Event<T>`](crate::Event) with `subscribe_typed`.
    ///
    /// # Errors
    /// As [`EventBus::subscribe`].
    ///
    /// # Cancel safety
    /// As [`EventBus::subscribe`].
    pub async fn subscribe_json<T, O, F, Fut>(
        &self,
        topic: &str,
        handler: F,
        options: SubscribeOptions,
    ) -> Result<()>
    where
        T: DeserializeOwned + Send + 'static,
        O: IntoOutputs,
        F: Fn(T, Delivery) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<O, HandlerError>> + Send + 'static,
    {
        let typed = move |(Json(value), delivery): (Json<T>, Delivery)| handler(value, delivery);
        self.subscribe_typed(topic, typed, options).await
    }
}

/// Awaits the handler, then publishes its outputs before the record counts
/// as handled.
async fn finish<O, Fut>(
    bus: WeakBus,
    handling: std::result::Result<Fut, HandlerError>,
) -> std::result::Result<(), HandlerError>
where
    O: IntoOutputs,
    Fut: Future<Output = std::result::Result<O, HandlerError>>,
{
    let outputs = handling?.await?.into_outputs();
    if outputs.is_empty() {
        return Ok(());
    }
    // A weak handle: the subscription must not keep its own bus alive.
    let bus = bus.upgrade().ok_or(Error::Closed)?;
    outputs.publish(&bus).await?;
    Ok(())
}
