//! The consumer's librdkafka context: rebalance callbacks, the record batch
//! on its way to the dispatcher, and offsets waiting to be stored.
//!
//! Callbacks run on the poll thread inside `poll`, never on the async
//! runtime. On revoke the thread hands the partitions to the dispatcher and
//! blocks (bounded) until it has released them and stored their final
//! positions, then commits them synchronously ([`super::commits`]) and
//! unassigns. On assign it reads the group's committed positions and
//! metadata, assigns, makes sure the partitions are not paused, and tells
//! the dispatcher before any of their records can be polled.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::TopicPartitionList;
use tokio::sync::{mpsc, oneshot, Notify};

use super::access::AccessDenials;
use super::commits::CommitLedger;
use super::context::{forward_error, forward_log, LastError};
use super::flow::Flow;
use super::positions::Positions;
use crate::backend::{ConsumerEvent, Record, TopicPartition};

/// The consumer's context.
pub(super) struct RebalanceContext {
    events: mpsc::Sender<ConsumerEvent>,
    /// Records polled but not yet sent: sent as one batch, and always before
    /// a rebalance event, so per partition the dispatcher sees
    /// `Assigned`, `Records`, `Revoked` in order.
    pending: Mutex<Vec<Record>>,
    /// Positions handed over by the dispatcher, committed as they advance.
    pub(super) commits: Arc<CommitLedger>,
    /// How long a revoke waits for the dispatcher's answer.
    revoke_wait: Duration,
    /// Assign callbacks so far (a subscription change is complete after the
    /// next one).
    assign_rounds: AtomicU64,
    /// The consumer is being closed: nothing waits for the dispatcher any
    /// more (it was drained, or is gone, or nobody reads its events).
    closing: AtomicBool,
    /// Wakes a send blocked on a full channel when closing starts.
    closing_wake: Notify,
    /// Where partitions start, and offset resets.
    positions: Positions,
    /// The dispatcher's pause and resume.
    pub(super) flow: Flow,
    pub(super) last_error: LastError,
    /// Requests the broker's ACLs refused (recorded by the poll thread).
    pub(super) access: AccessDenials,
}

impl std::fmt::Debug for RebalanceContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RebalanceContext")
            .field("assign_rounds", &self.assign_rounds)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl RebalanceContext {
    pub(super) fn new(events: mpsc::Sender<ConsumerEvent>, revoke_wait: Duration) -> Self {
        RebalanceContext {
            events,
            pending: Mutex::default(),
            commits: Arc::new(CommitLedger::new(Duration::ZERO)),
            revoke_wait,
            assign_rounds: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            closing_wake: Notify::new(),
            positions: Positions::default(),
            flow: Flow::default(),
            last_error: LastError::default(),
            access: AccessDenials::default(),
        }
    }

    /// Uses `positions` for where partitions start and to report resets.
    pub(super) fn with_positions(mut self, positions: Positions) -> Self {
        self.positions = positions;
        self
    }

    /// Leaves at least `interval` between the starts of two commits.
    pub(super) fn with_commit_interval(mut self, interval: Duration) -> Self {
        self.commits = Arc::new(CommitLedger::new(interval));
        self
    }

    pub(super) fn assign_rounds(&self) -> u64 {
        self.assign_rounds.load(Ordering::Acquire)
    }

    /// Starts closing: from now on nothing waits for the dispatcher, and a
    /// send blocked on a full channel gives up.
    pub(super) fn begin_close(&self) {
        self.closing.store(true, Ordering::Release);
        self.closing_wake.notify_one();
    }

    fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Sends an event to the dispatcher, waiting for room; false when the
    /// dispatcher is gone or the consumer is closing and the channel is full
    /// (the event is dropped: records unstored are read again by the group).
    /// Never blocks an async runtime thread.
    pub(super) fn send(&self, event: ConsumerEvent) -> bool {
        if self.is_closing() || tokio::runtime::Handle::try_current().is_ok() {
            return self.events.try_send(event).is_ok();
        }
        futures::executor::block_on(async {
            tokio::select! {
                biased;
                permit = self.events.reserve() => match permit {
                    Ok(permit) => {
                        permit.send(event);
                        true
                    }
                    Err(_) => false,
                },
                _ = self.closing_wake.notified() => false,
            }
        })
    }

    /// Queues a polled record.
    pub(super) fn push(&self, record: Record) -> usize {
        let mut pending = lock(&self.pending);
        pending.push(record);
        pending.len()
    }

    /// Sends the queued records.
    pub(super) fn flush(&self) {
        let batch = std::mem::take(&mut *lock(&self.pending));
        if !batch.is_empty() {
            // A gone dispatcher drops them: nothing was stored for them, so
            // the group reads them again.
            self.send(ConsumerEvent::Records(batch));
        }
    }

    /// Notes a position from the dispatcher, with the offsets finished
    /// above it; committed by the committer thread.
    pub(super) fn store(
        &self,
        partition: &TopicPartition,
        next_offset: i64,
        finished: Vec<std::ops::Range<i64>>,
    ) {
        self.commits.store(partition, next_offset, finished);
    }

    fn on_revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        self.flush();
        let lost = consumer.assignment_lost();
        let partitions = partitions(tpl);
        self.flow.forget(&partitions);
        if !partitions.is_empty() {
            tracing::info!(partitions = partitions.len(), lost, "partitions revoked");
            let (done, answered) = oneshot::channel();
            let event = ConsumerEvent::Revoked {
                partitions: partitions.clone(),
                lost,
                done,
            };
            if self.send(event) {
                self.await_release(answered);
            }
        }
        // Lost: someone else owns them now, and committing could move their
        // position backwards or past records they have not finished.
        let _ = self.commits.release(consumer, &partitions, lost);
    }

    /// Waits until the dispatcher answers (or is gone), at most `revoke_wait`.
    fn await_release(&self, mut answered: oneshot::Receiver<()>) {
        let deadline = Instant::now() + self.revoke_wait;
        let mut nap = Duration::from_micros(200);
        loop {
            match answered.try_recv() {
                Ok(()) | Err(oneshot::error::TryRecvError::Closed) => return,
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            if self.is_closing() {
                return;
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    waited = ?self.revoke_wait,
                    "the dispatcher did not release revoked partitions in time; releasing them"
                );
                return;
            }
            std::thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(5));
        }
    }

    fn on_assign(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let partitions = partitions(tpl);
        self.flow.forget(&partitions);
        if !partitions.is_empty() {
            // A partition paused in an earlier ownership starts fresh.
            if let Err(e) = consumer.resume(tpl) {
                tracing::debug!(error = %e, "resume of assigned partitions failed");
            }
            tracing::info!(partitions = partitions.len(), "partitions assigned");
            self.send(ConsumerEvent::Assigned(partitions));
        }
        self.assign_rounds.fetch_add(1, Ordering::AcqRel);
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| TopicPartition::new(e.topic(), e.partition()))
        .collect()
}

impl ClientContext for RebalanceContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        if !self.positions.observe_log(fac, log_message) {
            forward_log(level, fac, log_message);
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        forward_error(&self.last_error, &error, reason);
    }
}

impl ConsumerContext for RebalanceContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let committed = self.positions.committed(consumer, tpl);
                self.positions.prepare_assignment(committed.as_ref(), tpl);
                self.commits.assign(tpl, committed.as_ref());
                let r = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if r.is_ok() {
                    self.on_assign(consumer, tpl);
                }
                r
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.on_revoke(consumer, tpl);
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
            other => {
                // The group state is in doubt: release everything without
                // committing; the group re-assigns from committed positions.
                let code: RDKafkaErrorCode = other.into();
                tracing::warn!(error = %code, "rebalance error; releasing the assignment");
                self.last_error.set(format!("rebalance error: {code}"));
                match consumer.assignment() {
                    Ok(all) => {
                        self.flush();
                        let partitions = partitions(&all);
                        self.flow.forget(&partitions);
                        if !partitions.is_empty() {
                            let (done, answered) = oneshot::channel();
                            if self.send(ConsumerEvent::Revoked {
                                partitions: partitions.clone(),
                                lost: true,
                                done,
                            }) {
                                self.await_release(answered);
                            }
                            let _ = self.commits.release(consumer, &partitions, true);
                        }
                        if cooperative {
                            consumer.incremental_unassign(&all)
                        } else {
                            consumer.unassign()
                        }
                    }
                    Err(e) => Err(e),
                }
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "applying a rebalance failed");
        }
    }
}
