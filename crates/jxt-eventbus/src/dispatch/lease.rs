//! Cancellation of a partition's work when it is revoked or the bus stops.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// Held by every job of one partition assignment. Cancelled when the
/// partition is released before its records finished: retries and
/// dead-letter writes stop, and the records stay unacknowledged.
#[derive(Debug, Default)]
pub(crate) struct Lease {
    cancelled: AtomicBool,
    notify: Notify,
}

impl Lease {
    pub(crate) fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Sleeps for `delay`; false if cancelled before or during the sleep.
    pub(crate) async fn sleep(&self, delay: Duration) -> bool {
        let cancelled = self.notify.notified();
        tokio::pin!(cancelled);
        cancelled.as_mut().enable();
        if self.is_cancelled() {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => true,
            _ = cancelled => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn cancel_wakes_a_sleeper() {
        let lease = Arc::new(Lease::default());
        let l = lease.clone();
        let sleeper = tokio::spawn(async move { l.sleep(Duration::from_secs(3600)).await });
        tokio::task::yield_now().await;
        lease.cancel();
        assert!(!sleeper.await.unwrap());
        assert!(!lease.sleep(Duration::from_millis(1)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn sleeps_when_not_cancelled() {
        assert!(Lease::default().sleep(Duration::from_secs(5)).await);
    }
}
