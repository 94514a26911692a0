//! Backlog detection and recovery mode.
//!
//! A backlog exists when the consumer lag (log end − committed position,
//! summed over owned partitions) is over `backlog.max_lag`, or the oldest
//! unfinished record is older than `backlog.max_age`. The bus enters recovery
//! mode on the first check that finds a backlog — at start-up after downtime
//! or later — and leaves it after `backlog.clean_checks` consecutive checks
//! without one. Recovery mode is visible to handlers
//! ([`Delivery::in_recovery`](crate::Delivery::in_recovery)), to
//! [`EventBus::is_recovering`](crate::EventBus::is_recovering), to health
//! (degraded), to callbacks and to a watch channel, and subscriptions may run
//! with different concurrency while in it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};

use crate::backend::{Consumer, PartitionLag};
use crate::config::BacklogConfig;
use crate::dispatch::{Command, DispatchStats};

/// Lag of one subscribed topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicBacklog {
    /// Topic.
    pub topic: String,
    /// Records not yet committed, summed over the partitions this bus owns.
    pub lag: i64,
    /// Whether this topic alone is over `max_lag`.
    pub over: bool,
}

/// The latest backlog check.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BacklogState {
    /// Recovery mode is on.
    pub recovering: bool,
    /// Whether the latest check found a backlog.
    pub backlog: bool,
    /// Total lag over every owned partition.
    pub lag: i64,
    /// Lag per subscribed topic.
    pub topics: Vec<TopicBacklog>,
    /// Age of the oldest record handed to a handler and not finished.
    pub oldest_unfinished_age: Option<Duration>,
    /// Consecutive checks without a backlog.
    pub clean_checks: u32,
    /// When the check ran (`None` before the first).
    pub checked_at: Option<SystemTime>,
}

/// A change of recovery mode, passed to callbacks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecoveryChange {
    /// A backlog was found: recovery mode is on.
    Entered(BacklogState),
    /// The backlog is gone: recovery mode is off.
    Left(BacklogState),
}

/// Callback invoked on each change of recovery mode.
pub type RecoveryCallback = Arc<dyn Fn(&RecoveryChange) + Send + Sync>;

/// The state machine, free of I/O and clocks so it can be tested directly.
#[derive(Debug)]
pub(crate) struct BacklogDetector {
    config: BacklogConfig,
    state: BacklogState,
}

impl BacklogDetector {
    pub(crate) fn new(config: BacklogConfig) -> Self {
        BacklogDetector {
            config,
            state: BacklogState::default(),
        }
    }

    /// Takes one sample; returns the new state and the change, if any.
    pub(crate) fn observe(
        &mut self,
        lags: &[PartitionLag],
        oldest_unfinished: Option<SystemTime>,
        now: SystemTime,
    ) -> (BacklogState, Option<RecoveryChange>) {
        let mut per_topic: BTreeMap<&str, i64> = BTreeMap::new();
        for l in lags {
            *per_topic.entry(&l.partition.topic).or_default() += l.lag();
        }
        let lag: i64 = per_topic.values().sum();
        let age = oldest_unfinished.and_then(|t| now.duration_since(t).ok());
        let backlog = lag > self.config.max_lag || age.is_some_and(|a| a > self.config.max_age);
        let s = &mut self.state;
        s.backlog = backlog;
        s.lag = lag;
        s.topics = per_topic
            .into_iter()
            .map(|(topic, lag)| TopicBacklog {
                topic: topic.to_string(),
                lag,
                over: lag > self.config.max_lag,
            })
            .collect();
        s.oldest_unfinished_age = age;
        s.checked_at = Some(now);
        let mut change = None;
        if backlog {
            s.clean_checks = 0;
            if !s.recovering {
                s.recovering = true;
                change = Some(RecoveryChange::Entered(s.clone()));
            }
        } else {
            s.clean_checks = s.clean_checks.saturating_add(1);
            if s.recovering && s.clean_checks >= self.config.clean_checks {
                s.recovering = false;
                change = Some(RecoveryChange::Left(s.clone()));
            }
        }
        (s.clone(), change)
    }
}

/// What the checking task shares with the bus.
pub(crate) struct BacklogShared {
    pub(crate) recovering: Arc<AtomicBool>,
    pub(crate) state: watch::Sender<BacklogState>,
    pub(crate) callbacks: Mutex<Vec<RecoveryCallback>>,
    /// Asks the task for an immediate check; answered when it is done.
    pub(crate) check_now: Mutex<Option<mpsc::UnboundedSender<oneshot::Sender<()>>>>,
}

impl std::fmt::Debug for BacklogShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BacklogShared")
            .field("recovering", &self.recovering)
            .finish_non_exhaustive()
    }
}

impl BacklogShared {
    pub(crate) fn new(recovering: Arc<AtomicBool>) -> Self {
        BacklogShared {
            recovering,
            state: watch::Sender::new(BacklogState::default()),
            callbacks: Mutex::default(),
            check_now: Mutex::default(),
        }
    }

    /// Runs a check now (if the task runs) and waits for it.
    pub(crate) async fn check_now(&self) {
        let tx = self
            .check_now
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(tx) = tx {
            let (done, checked) = oneshot::channel();
            if tx.send(done).is_ok() {
                let _ = checked.await;
            }
        }
    }

    fn apply(&self, state: BacklogState, change: Option<RecoveryChange>) {
        // Callbacks run before the watch is updated, so whoever awaits the
        // watch (`caught_up`) sees the callbacks' effects.
        self.recovering.store(state.recovering, Ordering::Relaxed);
        if let Some(change) = change {
            match &change {
                RecoveryChange::Entered(s) => {
                    tracing::info!(lag = s.lag, "backlog detected: entering recovery mode")
                }
                RecoveryChange::Left(s) => {
                    tracing::info!(lag = s.lag, "caught up: leaving recovery mode")
                }
            }
            let callbacks = self
                .callbacks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            for cb in callbacks {
                cb(&change);
            }
        }
        self.state.send_replace(state);
    }
}

/// Starts the periodic check. It holds only weak references to the consumer
/// and the dispatcher, so it never keeps a dropped bus alive.
pub(crate) fn spawn(
    config: BacklogConfig,
    shared: Arc<BacklogShared>,
    consumer: Weak<dyn Consumer>,
    dispatcher: mpsc::WeakSender<Command>,
) {
    let (tx, mut requests) = mpsc::unbounded_channel::<oneshot::Sender<()>>();
    *shared.check_now.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
    tokio::spawn(async move {
        let mut detector = BacklogDetector::new(config.clone());
        let mut tick = tokio::time::interval(config.check_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let reply = tokio::select! {
                _ = tick.tick() => None,
                r = requests.recv() => match r {
                    Some(r) => Some(r),
                    None => return,
                },
            };
            let (Some(consumer), Some(dispatcher)) = (consumer.upgrade(), dispatcher.upgrade())
            else {
                return;
            };
            let lags = match consumer.lag().await {
                Ok(l) => l,
                Err(e) => {
                    tracing::debug!(error = %e, "backlog check: lag unavailable");
                    continue;
                }
            };
            let (stats_tx, stats_rx) = oneshot::channel::<DispatchStats>();
            if dispatcher
                .send(Command::Stats { reply: stats_tx })
                .await
                .is_err()
            {
                return;
            }
            drop((consumer, dispatcher));
            let Ok(stats) = stats_rx.await else { return };
            let (state, change) =
                detector.observe(&lags, stats.oldest_unfinished, SystemTime::now());
            shared.apply(state, change);
            if let Some(r) = reply {
                let _ = r.send(());
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::TopicPartition;

    fn lag(topic: &str, p: i32, end: i64, committed: i64) -> PartitionLag {
        PartitionLag {
            partition: TopicPartition::new(topic, p),
            log_end: end,
            committed,
        }
    }

    fn config() -> BacklogConfig {
        BacklogConfig {
            max_lag: 100,
            max_age: Duration::from_secs(10),
            clean_checks: 2,
            ..BacklogConfig::default()
        }
    }

    #[test]
    fn enters_on_lag_and_leaves_after_clean_checks() {
        let mut d = BacklogDetector::new(config());
        let now = SystemTime::now();
        let (s, c) = d.observe(
            &[lag("a", 0, 80, 0), lag("a", 1, 30, 0), lag("b", 0, 5, 5)],
            None,
            now,
        );
        assert!(s.recovering && s.backlog);
        assert_eq!(s.lag, 110);
        assert_eq!(
            s.topics[0],
            TopicBacklog {
                topic: "a".into(),
                lag: 110,
                over: true
            }
        );
        assert!(matches!(c, Some(RecoveryChange::Entered(_))));
        let (s, c) = d.observe(&[lag("a", 0, 80, 79)], None, now);
        assert!(
            s.recovering && !s.backlog && c.is_none(),
            "one clean check is not enough"
        );
        let (_, c) = d.observe(&[lag("a", 0, 200, 50)], None, now);
        assert!(
            c.is_none(),
            "a relapse resets the count without a second Entered"
        );
        let (_, c) = d.observe(&[], None, now);
        assert!(c.is_none());
        let (s, c) = d.observe(&[], None, now);
        assert!(!s.recovering);
        assert!(matches!(c, Some(RecoveryChange::Left(_))));
    }

    #[test]
    fn an_old_unfinished_record_is_a_backlog() {
        let mut d = BacklogDetector::new(config());
        let now = SystemTime::now();
        let (s, c) = d.observe(&[], Some(now - Duration::from_secs(11)), now);
        assert!(s.backlog);
        assert_eq!(s.oldest_unfinished_age, Some(Duration::from_secs(11)));
        assert!(matches!(c, Some(RecoveryChange::Entered(_))));
        let (s, _) = d.observe(&[], Some(now - Duration::from_secs(1)), now);
        assert!(!s.backlog);
    }
}
