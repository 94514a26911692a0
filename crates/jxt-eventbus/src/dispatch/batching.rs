//! Batch subscriptions on the dispatcher's side: when a batch is formed, and
//! from which lanes.
//!
//! A batch takes whole lane batches (the queued records of a key, in order)
//! until it holds `max_records`; its lanes count as running until the batch
//! ends, so a key is never in two batches at once. A batch is handed over
//! when it is full, when `linger` passed since records became ready, or at
//! once during a drain; at most `max_in_flight` run at a time.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::subscriptions::Subscription;
use super::{count_running, Completions, PartitionState, WorkerContext};
use crate::backend::TopicPartition;
use crate::batch::{BatchHandler, BatchOptions};
use crate::middleware::Classifier;
use rustc_hash::FxHashMap as HashMap;

/// A batch subscription's handler and settings.
pub(crate) struct BatchSpec {
    pub(crate) handler: Arc<dyn BatchHandler>,
    pub(crate) options: BatchOptions,
    /// Fails an attempt of the whole batch that runs longer.
    pub(crate) attempt_timeout: Option<Duration>,
    pub(crate) classifier: Option<Classifier>,
}

impl std::fmt::Debug for BatchSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchSpec")
            .field("options", &self.options)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("classifier", &self.classifier.is_some())
            .finish()
    }
}

/// A batch subscription's state in the dispatcher.
#[derive(Debug)]
pub(super) struct BatchState {
    pub(super) spec: Arc<BatchSpec>,
    /// Batches handed out and not ended.
    pub(super) running: usize,
    /// Since when records have been ready without a batch being formed.
    waiting_since: Option<Instant>,
}

impl BatchState {
    pub(super) fn new(spec: Arc<BatchSpec>) -> Self {
        BatchState {
            spec,
            running: 0,
            waiting_since: None,
        }
    }

    /// When a lingering batch is due.
    pub(super) fn deadline(&self) -> Option<Instant> {
        if self.running >= self.spec.options.max_in_flight {
            return None;
        }
        self.waiting_since.map(|t| t + self.spec.options.linger)
    }
}

/// Starts the batches `sub` may start now (it must be a batch
/// subscription).
pub(super) fn schedule(
    sub: &mut Subscription,
    partitions: &mut HashMap<TopicPartition, PartitionState>,
    ctx: &Arc<WorkerContext>,
    completions: &mpsc::UnboundedSender<Completions>,
    draining: bool,
) {
    let Some(state) = sub.batch.as_mut() else {
        return;
    };
    let options = state.spec.options;
    let now = Instant::now();
    while state.running < options.max_in_flight {
        let ready = sub.lanes.ready_records();
        if ready == 0 {
            state.waiting_since = None;
            return;
        }
        let since = *state.waiting_since.get_or_insert(now);
        if ready < options.max_records && now < since + options.linger && !draining {
            return;
        }
        let mut lanes = VecDeque::new();
        let mut records = 0;
        while records < options.max_records {
            let Some((lane, batch)) = sub.lanes.next_batch_up_to(options.max_records - records)
            else {
                break;
            };
            count_running(partitions, &batch);
            records += batch.len();
            lanes.push_back((lane, batch));
        }
        if lanes.is_empty() {
            // Ready records whose lanes hit the lane limit: wait for a batch
            // to end.
            return;
        }
        state.running += 1;
        // What is left ready waits a linger of its own.
        state.waiting_since = (sub.lanes.ready_records() > 0).then_some(now);
        tokio::spawn(super::batch_worker::run_batch(
            ctx.clone(),
            state.spec.clone(),
            sub.metrics.clone(),
            sub.id,
            lanes,
            completions.clone(),
        ));
    }
}
