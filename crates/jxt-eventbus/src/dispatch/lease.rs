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

    /// Resolves once cancelled.
    pub(crate) async fn cancelled(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
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

/// The bus's shutdown as its workers see it. Set once, at the start of
/// [`shutdown`](crate::EventBus::shutdown), before the dispatcher hears of it,
/// so no worker starts a buffered record after the caller's shutdown began.
#[derive(Debug, Default)]
pub(crate) struct ShutdownSignal {
    begun: Lease,
    leave_buffered: AtomicBool,
}

impl ShutdownSignal {
    /// Marks the shutdown begun; with `leave_buffered` no record that has
    /// not started yet is started.
    pub(crate) fn begin(&self, leave_buffered: bool) {
        self.leave_buffered.store(leave_buffered, Ordering::SeqCst);
        self.begun.cancel();
    }

    /// Resolves once the shutdown began.
    pub(crate) async fn begun(&self) {
        self.begun.cancelled().await;
    }

    pub(crate) fn has_begun(&self) -> bool {
        self.begun.is_cancelled()
    }

    /// Whether records not started yet are to be left for redelivery.
    pub(crate) fn leaves_buffered(&self) -> bool {
        self.has_begun() && self.leave_buffered.load(Ordering::SeqCst)
    }
}

/// Sleeps for `delay`; false when `lease` is cancelled or the shutdown begins
/// before or during the sleep (a retry backoff must not hold a shutdown).
pub(crate) async fn sleep_unless(
    lease: &Lease,
    shutdown: &ShutdownSignal,
    delay: Duration,
) -> bool {
    tokio::select! {
        slept = lease.sleep(delay) => slept && !shutdown.has_begun(),
        _ = shutdown.begun.cancelled() => false,
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
    async fn a_shutdown_wakes_a_backoff() {
        let lease = Lease::default();
        let shutdown = Arc::new(ShutdownSignal::default());
        let s = shutdown.clone();
        let stopper = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            s.begin(true);
        });
        let started = tokio::time::Instant::now();
        assert!(!sleep_unless(&lease, &shutdown, Duration::from_secs(3600)).await);
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        stopper.await.unwrap();
        assert!(shutdown.leaves_buffered());
        assert!(!sleep_unless(&lease, &shutdown, Duration::from_millis(1)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn sleeps_when_not_cancelled() {
        assert!(Lease::default().sleep(Duration::from_secs(5)).await);
    }
}
