//! Subscribing a batch handler.

use std::sync::Arc;

use super::{EventBus, SubscribeOptions};
use crate::batch::{BatchHandler, BatchOptions};
use crate::dispatch::SubscriptionHandler;
use crate::error::{Error, Result};

impl EventBus {
    /// Subscribes a batch handler to `topic`: it is handed up to
    /// `batch.max_records()` records at once, formed as [`crate::batch`]
    /// describes (per-key order holds; a retried record takes the later
    /// records of its key with it). `options` gives the ordering, the attempt
    /// timeout (of a whole batch) and the error classifier; rate limits and
    /// lane concurrency do not apply.
    ///
    /// ```no_run
    /// # async fn f(bus: jxt_eventbus::EventBus) -> jxt_eventbus::Result<()> {
    /// use jxt_eventbus::{BatchError, BatchOptions, Delivery, HandlerError, SubscribeOptions};
    /// use std::time::Duration;
    ///
    /// bus.subscribe_batch(
    ///     "orders",
    ///     |batch: Vec<Delivery>| async move {
    ///         // One bulk write for the whole batch; a refusal of the whole
    ///         // write is retried as a whole.
    ///         let rows: Vec<&[u8]> = batch.iter().map(|d| d.payload().as_ref()).collect();
    ///         if rows.is_empty() {
    ///             return Err(BatchError::all(HandlerError::retryable("database unavailable")));
    ///         }
    ///         Ok(())
    ///     },
    ///     BatchOptions::new(500).linger(Duration::from_millis(20)),
    ///     SubscribeOptions::new(),
    /// )
    /// .await
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`EventBus::subscribe`], and [`Error::Subscribe`] when `options`
    /// set a rate limit or a lane concurrency.
    ///
    /// # Cancel safety
    /// As [`EventBus::subscribe`].
    pub async fn subscribe_batch<H: BatchHandler>(
        &self,
        topic: &str,
        handler: H,
        batch: BatchOptions,
        options: SubscribeOptions,
    ) -> Result<()> {
        let (spec, settings) = options
            .batch(Arc::new(handler), batch, &self.inner.config.dispatch)
            .map_err(|reason| Error::Subscribe {
                topic: topic.to_string(),
                reason,
            })?;
        self.subscribe_to(
            topic,
            SubscriptionHandler::Batches(Arc::new(spec)),
            settings,
        )
        .await
    }
}
