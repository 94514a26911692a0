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
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};

use crate::backend::{Consumer, PartitionLag};
use crate::config::BacklogConfig;
use crate::dispatch::{Command, DispatchStats};
use crate::metrics::BoundMetrics;

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
    /// When recovery mode was entered (`None` while it is off).
    pub recovering_since: Option<SystemTime>,
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
    /// Publisher-side load, as of reading the state.
    pub publisher: PublisherState,
}

/// A change of backlog state, passed to callbacks.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BacklogChange {
    /// A consumer backlog was found: recovery mode is on.
    RecoveryEntered(BacklogState),
    /// The consumer backlog is gone: recovery mode is off.
    RecoveryLeft(BacklogState),
    /// Publishes pile up: too many in flight and too slow.
    PublisherBacklog(PublisherState),
    /// Publishing is back under its thresholds.
    PublisherCleared(PublisherState),
}

/// Publisher-side load: publishes awaiting the broker and their latency.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublisherState {
    /// Publishes sent and not yet acknowledged by the broker.
    pub in_flight: usize,
    /// Moving average of publish latency (acknowledged publishes).
    pub latency: Duration,
    /// Whether `in_flight` is over `backlog.max_publish_in_flight` or
    /// `latency` over `backlog.max_publish_latency`.
    pub backlog: bool,
}

/// Publisher load, updated by every publish (a few atomics, no lock).
#[derive(Debug)]
pub(crate) struct PublisherGauge {
    in_flight: AtomicUsize,
    latency_us: AtomicU64,
    over: AtomicBool,
    max_in_flight: usize,
    max_latency: Duration,
}

impl PublisherGauge {
    pub(crate) fn new(config: &BacklogConfig) -> Self {
        PublisherGauge {
            in_flight: AtomicUsize::new(0),
            latency_us: AtomicU64::new(0),
            over: AtomicBool::new(false),
            max_in_flight: config.max_publish_in_flight,
            max_latency: config.max_publish_latency,
        }
    }

    /// `count` publishes start.
    pub(crate) fn started(&self, count: usize) -> Option<PublisherState> {
        self.in_flight.fetch_add(count, Ordering::Relaxed);
        self.evaluate()
    }

    /// `count` publishes were given up before they ended (their future was
    /// dropped): they no longer count as in flight, and say nothing about
    /// latency.
    pub(crate) fn cancelled(&self, count: usize) -> Option<PublisherState> {
        self.in_flight.fetch_sub(count, Ordering::Relaxed);
        self.evaluate()
    }

    /// `count` publishes ended after `elapsed` (`acknowledged`: at least
    /// one succeeded, so `elapsed` is a latency sample).
    pub(crate) fn finished(
        &self,
        count: usize,
        elapsed: Duration,
        acknowledged: bool,
    ) -> Option<PublisherState> {
        self.in_flight.fetch_sub(count, Ordering::Relaxed);
        if acknowledged {
            // Exponential moving average, 1/8 weight per sample; a lost
            // update under contention only delays the average slightly.
            let sample = elapsed.as_micros().min(u64::MAX as u128) as u64;
            let old = self.latency_us.load(Ordering::Relaxed);
            let new = if old == 0 {
                sample
            } else {
                old - old / 8 + sample / 8
            };
            self.latency_us.store(new, Ordering::Relaxed);
        }
        self.evaluate()
    }

    pub(crate) fn state(&self) -> PublisherState {
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        let latency = Duration::from_micros(self.latency_us.load(Ordering::Relaxed));
        PublisherState {
            in_flight,
            latency,
            backlog: in_flight > self.max_in_flight || latency > self.max_latency,
        }
    }

    /// The new state when the backlog flag flipped.
    fn evaluate(&self) -> Option<PublisherState> {
        let state = self.state();
        let was = self.over.load(Ordering::Relaxed);
        if state.backlog != was && self.over.swap(state.backlog, Ordering::AcqRel) == was {
            return Some(state);
        }
        None
    }
}

/// Callback invoked on each change of recovery mode.
pub type BacklogCallback = Arc<dyn Fn(&BacklogChange) + Send + Sync>;

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
    ) -> (BacklogState, Option<BacklogChange>) {
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
                s.recovering_since = Some(now);
                change = Some(BacklogChange::RecoveryEntered(s.clone()));
            }
        } else {
            s.clean_checks = s.clean_checks.saturating_add(1);
            if s.recovering && s.clean_checks >= self.config.clean_checks {
                s.recovering = false;
                s.recovering_since = None;
                change = Some(BacklogChange::RecoveryLeft(s.clone()));
            }
        }
        (s.clone(), change)
    }
}

/// What the checking task shares with the bus.
pub(crate) struct BacklogShared {
    pub(crate) recovering: Arc<AtomicBool>,
    pub(crate) publisher: PublisherGauge,
    pub(crate) state: watch::Sender<BacklogState>,
    pub(crate) callbacks: Mutex<Vec<BacklogCallback>>,
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
    pub(crate) fn new(recovering: Arc<AtomicBool>, config: &BacklogConfig) -> Self {
        BacklogShared {
            recovering,
            publisher: PublisherGauge::new(config),
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

    /// Reports a publisher backlog flip to the callbacks.
    pub(crate) fn publisher_changed(&self, state: PublisherState) {
        let change = if state.backlog {
            tracing::warn!(in_flight = state.in_flight, latency = ?state.latency, "publisher backlog");
            BacklogChange::PublisherBacklog(state)
        } else {
            tracing::info!(in_flight = state.in_flight, latency = ?state.latency, "publisher backlog cleared");
            BacklogChange::PublisherCleared(state)
        };
        self.notify(&change);
    }

    fn notify(&self, change: &BacklogChange) {
        let callbacks = self
            .callbacks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for cb in callbacks {
            cb(change);
        }
    }

    fn apply(&self, state: BacklogState, change: Option<BacklogChange>) {
        // Callbacks run before the watch is updated, so whoever awaits the
        // watch (`caught_up`) sees the callbacks' effects.
        self.recovering.store(state.recovering, Ordering::Relaxed);
        if let Some(change) = change {
            match &change {
                BacklogChange::RecoveryEntered(s) => {
                    tracing::info!(lag = s.lag, "backlog detected: entering recovery mode")
                }
                BacklogChange::RecoveryLeft(s) => {
                    tracing::info!(lag = s.lag, "caught up: leaving recovery mode")
                }
                _ => {}
            }
            self.notify(&change);
        }
        self.state.send_replace(state);
    }
}

/// Starts the periodic check. It holds only weak references to the consumer
/// and the dispatcher, so it never keeps a dropped bus alive.
pub(crate) fn spawn(
    config: BacklogConfig,
    shared: Arc<BacklogShared>,
    metrics: Arc<BoundMetrics>,
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
            metrics.observe_backlog(&lags, state.backlog, state.recovering);
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
        assert!(matches!(c, Some(BacklogChange::RecoveryEntered(_))));
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
        assert!(matches!(c, Some(BacklogChange::RecoveryLeft(_))));
    }

    #[test]
    fn publisher_gauge_flips_once_each_way() {
        let g = PublisherGauge::new(&BacklogConfig {
            max_publish_in_flight: 2,
            max_publish_latency: Duration::from_millis(100),
            ..BacklogConfig::default()
        });
        assert!(g.started(1).is_none());
        assert!(g.started(1).is_none());
        let over = g.started(1).expect("3 in flight is over 2");
        assert!(over.backlog && over.in_flight == 3);
        assert!(g.started(1).is_none(), "no second report while over");
        assert!(g.finished(1, Duration::from_millis(1), true).is_none());
        let cleared = g
            .finished(1, Duration::from_millis(1), true)
            .expect("back to 2");
        assert!(!cleared.backlog);
        g.finished(1, Duration::from_millis(1), true);
        g.finished(1, Duration::from_millis(1), true);
        assert_eq!(g.state().in_flight, 0);
        // Slow acknowledgements alone are a backlog once the average is over.
        let mut flipped = None;
        for _ in 0..40 {
            flipped = flipped.or(g.started(1));
            flipped = flipped.or(g.finished(1, Duration::from_secs(1), true));
        }
        assert!(flipped.is_some_and(|s| s.backlog && s.latency > Duration::from_millis(100)));
    }

    #[test]
    fn cancelled_publishes_clear_the_gauge_without_a_latency_sample() {
        let g = PublisherGauge::new(&BacklogConfig {
            max_publish_in_flight: 2,
            ..BacklogConfig::default()
        });
        assert!(g.started(5).is_some_and(|s| s.backlog && s.in_flight == 5));
        let cleared = g.cancelled(5).expect("back to 0");
        assert!(!cleared.backlog);
        assert_eq!(g.state().in_flight, 0);
        assert_eq!(g.state().latency, Duration::ZERO);
    }

    #[test]
    fn an_old_unfinished_record_is_a_backlog() {
        let mut d = BacklogDetector::new(config());
        let now = SystemTime::now();
        let (s, c) = d.observe(&[], Some(now - Duration::from_secs(11)), now);
        assert!(s.backlog);
        assert_eq!(s.oldest_unfinished_age, Some(Duration::from_secs(11)));
        assert!(matches!(c, Some(BacklogChange::RecoveryEntered(_))));
        let (s, _) = d.observe(&[], Some(now - Duration::from_secs(1)), now);
        assert!(!s.backlog);
    }
}
