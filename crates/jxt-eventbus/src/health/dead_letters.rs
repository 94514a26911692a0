//! The `dead_letters` health component: what the workers report about
//! dead-letter writes that failed.
//!
//! Two things make it unhealthy. A lane that waits because not even a
//! payload-less pointer record could be written holds its key (and, past
//! `health.stall_after`, its partition) until the write succeeds: unhealthy
//! for as long as it waits. A pointer record written in place of a full dead
//! letter means the payload now lives only in the original topic (until its
//! retention removes it): unhealthy for [`POINTER_ALARM`] after the last one,
//! so an operator sees it without the bus refusing traffic forever. A lane
//! that waits on a transient write error is degraded: a broker blip is not
//! an outage.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::{ComponentHealth, HealthState};

/// Component name.
pub(crate) const DEAD_LETTERS: &str = "dead_letters";

/// How long the component stays unhealthy after a pointer record was written
/// in place of a full dead letter.
pub(crate) const POINTER_ALARM: Duration = Duration::from_secs(600);

/// A lane waiting on a dead-letter write.
#[derive(Clone, Debug)]
struct Waiting {
    dlq: String,
    /// Even the pointer record failed (a permanent error on the full record).
    pointer_failed: bool,
    reason: String,
    since: Instant,
}

#[derive(Debug, Default)]
struct State {
    pointers: u64,
    last_pointer: Option<(Instant, String)>,
    waiting: BTreeMap<u64, Waiting>,
}

/// Shared by the workers of one bus (they report) and its health check
/// (it reads). The lock is taken only on the dead-letter failure path.
#[derive(Debug, Default)]
pub(crate) struct DeadLetterHealth {
    next_id: AtomicU64,
    state: Mutex<State>,
}

impl DeadLetterHealth {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A pointer record was written to `dlq` because `reason`.
    pub(crate) fn pointer_written(&self, dlq: &str, reason: &str) {
        let mut s = self.state();
        s.pointers += 1;
        s.last_pointer = Some((Instant::now(), format!("{dlq}: {reason}")));
    }

    /// Registers a lane that waits on a dead-letter write; it counts until
    /// the returned guard is dropped (the write succeeded, or the partition
    /// was released and the wait abandoned).
    pub(crate) fn waiting(self: &Arc<Self>, dlq: &str) -> WaitGuard {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        WaitGuard {
            health: self.clone(),
            id,
            dlq: dlq.to_string(),
        }
    }

    /// The component as of `now`.
    pub(crate) fn component(&self, now: Instant) -> ComponentHealth {
        let s = self.state();
        let (state, reason) = assess(&s, now);
        ComponentHealth {
            name: DEAD_LETTERS.to_string(),
            state,
            reason,
        }
    }
}

fn assess(s: &State, now: Instant) -> (HealthState, String) {
    let ago = |t: Instant| format!("{}s ago", now.saturating_duration_since(t).as_secs());
    let stuck: Vec<&Waiting> = s.waiting.values().filter(|w| w.pointer_failed).collect();
    if let Some(w) = stuck.iter().min_by_key(|w| w.since) {
        return (
            HealthState::Unhealthy,
            format!(
                "{} lane(s) wait: not even a pointer record could be written to {} (since {}): {}",
                stuck.len(),
                w.dlq,
                ago(w.since),
                w.reason
            ),
        );
    }
    let pointers = match &s.last_pointer {
        Some((at, what)) => format!(
            "{} dead letter(s) written without payload, the last {}: {what}",
            s.pointers,
            ago(*at)
        ),
        None => String::new(),
    };
    if let Some((at, _)) = &s.last_pointer {
        if now.saturating_duration_since(*at) < POINTER_ALARM {
            return (HealthState::Unhealthy, pointers);
        }
    }
    if let Some(w) = s.waiting.values().min_by_key(|w| w.since) {
        return (
            HealthState::Degraded,
            format!(
                "{} lane(s) wait on a failing dead-letter write to {} (since {}): {}",
                s.waiting.len(),
                w.dlq,
                ago(w.since),
                w.reason
            ),
        );
    }
    if pointers.is_empty() {
        (HealthState::Healthy, "dead-letter writes succeed".into())
    } else {
        (HealthState::Healthy, pointers)
    }
}

/// A lane's registration as waiting on a dead-letter write.
#[derive(Debug)]
pub(crate) struct WaitGuard {
    health: Arc<DeadLetterHealth>,
    id: u64,
    dlq: String,
}

impl WaitGuard {
    /// The last write failed with `reason`; `pointer_failed` when the
    /// pointer record (written after a permanent error) failed too.
    pub(crate) fn failed(&self, reason: &str, pointer_failed: bool) {
        let mut s = self.health.state();
        let since = s
            .waiting
            .get(&self.id)
            .map_or_else(Instant::now, |w| w.since);
        s.waiting.insert(
            self.id,
            Waiting {
                dlq: self.dlq.clone(),
                pointer_failed,
                reason: reason.to_string(),
                since,
            },
        );
    }
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        self.health.state().waiting.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_pointer_is_unhealthy_for_a_while_then_only_reported() {
        let h = DeadLetterHealth::default();
        assert_eq!(h.component(Instant::now()).state, HealthState::Healthy);
        h.pointer_written("orders.dlq", "too large");
        let c = h.component(Instant::now());
        assert_eq!(c.state, HealthState::Unhealthy);
        assert!(c.reason.contains("without payload"), "{c:?}");
        assert!(c.reason.contains("too large"), "{c:?}");
        tokio::time::advance(POINTER_ALARM).await;
        let c = h.component(Instant::now());
        assert_eq!(c.state, HealthState::Healthy, "{c:?}");
        assert!(c.reason.contains("1 dead letter(s)"), "{c:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_lane_counts_until_its_guard_is_dropped() {
        let h = Arc::new(DeadLetterHealth::default());
        let guard = h.waiting("orders.dlq");
        assert_eq!(h.component(Instant::now()).state, HealthState::Healthy);
        guard.failed("broker down", false);
        assert_eq!(h.component(Instant::now()).state, HealthState::Degraded);
        tokio::time::advance(Duration::from_secs(5)).await;
        guard.failed("not authorized", true);
        let c = h.component(Instant::now());
        assert_eq!(c.state, HealthState::Unhealthy);
        assert!(c.reason.contains("since 5s ago"), "{c:?}");
        assert!(c.reason.contains("not authorized"), "{c:?}");
        drop(guard);
        assert_eq!(h.component(Instant::now()).state, HealthState::Healthy);
    }
}
