//! Views of the bus for operator endpoints that must answer at once.

use super::EventBus;

impl EventBus {
    /// The subscribed topics, or `None` while a subscription change (or a
    /// shutdown) holds the subscription lock — which on Kafka lasts as long
    /// as the group takes to apply it. Never waits.
    pub(crate) fn subscriptions_if_settled(&self) -> Option<Vec<String>> {
        let topics = self.inner.topics.try_lock().ok()?;
        Some(topics.iter().cloned().collect())
    }
}
