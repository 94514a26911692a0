//! Waiting until a memory bus has nothing left to do (for tests).

use super::EventBus;
use crate::error::{Error, Result};

impl EventBus {
    /// Resolves once every record of this bus's subscribed topics is handled
    /// (or dead-lettered) and acknowledged by its group: retries finished,
    /// dead letters and handler outputs written. Records published after it
    /// resolved are not waited for. A test publishes, then
    /// `bus.idle().await?`, then asserts — no polling, no sleeping, and it
    /// works with paused tokio time (retry backoffs advance the clock).
    ///
    /// It waits as long as a record of the group stays unfinished: a record
    /// retried forever (dead letters disabled), or one left by a member of
    /// the group that shut down, until another member handles it. For
    /// records that other buses on the same broker handle, use
    /// [`MemoryBroker::drained`](crate::MemoryBroker::drained).
    ///
    /// ```
    /// # use std::sync::{Arc, atomic::{AtomicUsize, Ordering}};
    /// # use jxt_eventbus::{Delivery, EventBus, HandlerError, Message, SubscribeOptions};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> jxt_eventbus::Result<()> {
    /// let bus = EventBus::builder().build().await?;
    /// let handled = Arc::new(AtomicUsize::new(0));
    /// let count = |n: Arc<AtomicUsize>, _d: Delivery| async move {
    ///     n.fetch_add(1, Ordering::SeqCst);
    ///     Ok::<_, HandlerError>(())
    /// };
    /// bus.subscribe_with_state("orders", handled.clone(), count, SubscribeOptions::new()).await?;
    /// for i in 0..10 {
    ///     bus.publish("orders", Message::new(i.to_string())).await?;
    /// }
    /// bus.idle().await?;
    /// assert_eq!(handled.load(Ordering::SeqCst), 10);
    /// # bus.shutdown().await
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`] on a Kafka or NATS bus: only the memory broker can
    /// tell that nothing is on its way.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn idle(&self) -> Result<()> {
        let Some(broker) = &self.inner.memory_broker else {
            return Err(Error::config(
                "backend",
                format!(
                    "EventBus::idle needs the memory backend; this bus uses {}",
                    self.inner.backend.name()
                ),
            ));
        };
        let topics = self.subscriptions().await;
        broker
            .group_settled(&self.inner.config.group, &topics)
            .await;
        Ok(())
    }
}
