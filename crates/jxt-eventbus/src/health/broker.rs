//! Broker reachability, checked by a background task so that a health or
//! readiness request never waits on a dead broker.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::backend::Backend;
use crate::metrics::BoundMetrics;

/// The latest reachability check.
#[derive(Clone, Debug)]
pub(crate) struct Reachability {
    /// `None` before the first check finished.
    pub(crate) reachable: Option<bool>,
    /// Since when the broker has been in this state (the first check of a
    /// run of equal results).
    pub(crate) since: Instant,
    /// Why the last check failed.
    pub(crate) error: Option<String>,
    /// When the last check finished.
    pub(crate) checked_at: Option<SystemTime>,
}

/// Shared between the checking task and the bus.
#[derive(Debug)]
pub(crate) struct BrokerWatch {
    state: Mutex<Reachability>,
    metrics: Arc<BoundMetrics>,
    /// A check that does not answer within this counts as failed. Backends
    /// bound their checks themselves (with a better reason); this is the
    /// safety net.
    limit: Duration,
    /// Set by shutdown: a closed bus has no broker to watch.
    stopped: AtomicBool,
}

impl BrokerWatch {
    /// A watch that knows nothing yet.
    pub(crate) fn new(metrics: Arc<BoundMetrics>, interval: Duration) -> Self {
        BrokerWatch {
            state: Mutex::new(Reachability {
                reachable: None,
                since: Instant::now(),
                error: None,
                checked_at: None,
            }),
            metrics,
            limit: interval.max(Duration::from_secs(10)),
            stopped: AtomicBool::new(false),
        }
    }

    /// Ends the background checks.
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> Reachability {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Asks the broker once and records the answer.
    pub(crate) async fn check(&self, backend: &dyn Backend) {
        let result = match tokio::time::timeout(self.limit, backend.check()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "the {} broker did not answer a check within {:?}",
                backend.name(),
                self.limit
            )),
        };
        self.record(result);
    }

    fn record(&self, result: Result<(), String>) {
        let reachable = result.is_ok();
        self.metrics.broker_reachable.set(reachable as i64);
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let before = s.reachable;
        if before != Some(reachable) {
            s.since = Instant::now();
            s.reachable = Some(reachable);
            // Logged once per change, not per check.
            match (&result, before) {
                (Err(error), _) => tracing::warn!(%error, "broker unreachable"),
                (Ok(()), Some(false)) => tracing::info!("broker reachable again"),
                (Ok(()), _) => {}
            }
        }
        s.error = result.err();
        s.checked_at = Some(SystemTime::now());
    }
}

/// Checks the broker every `interval`, the first time at once, until the
/// bus is shut down or dropped.
pub(crate) fn spawn(backend: Weak<dyn Backend>, watch: Arc<BrokerWatch>, interval: Duration) {
    tokio::spawn(async move {
        while !watch.stopped.load(Ordering::Relaxed) {
            let Some(b) = backend.upgrade() else { return };
            watch.check(b.as_ref()).await;
            drop(b);
            tokio::time::sleep(interval).await;
        }
    });
}
