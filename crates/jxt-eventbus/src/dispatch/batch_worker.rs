//! Runs one batch of a batch subscription (see [`crate::batch`] for the
//! rules): the handler takes every pending record at once; the records of a
//! lane that failed retryably go round again with the later records of their
//! lane, the rest are acknowledged or dead-lettered one by one.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use futures::FutureExt;
use rustc_hash::FxHashSet as HashSet;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::batching::BatchSpec;
use super::lanes::LaneId;
use super::lease::Lease;
use super::worker::{dead_letter, panic_error, LaneBatch, Reporter, WorkerContext};
use super::{Completion, Completions, Job, Outcome};
use crate::batch::{BatchError, BatchResult};
use crate::delivery::Delivery;
use crate::handler::{ErrorKind, HandlerError};
use crate::metrics::TopicMetrics;

/// A record of the batch not finished yet.
struct Entry {
    lane: LaneId,
    job: Job,
    /// Times the handler is given it, this one included.
    attempt: u32,
    first_failure: Option<SystemTime>,
    /// Last record of its lane in this batch: finishing it frees the lane.
    last: bool,
}

/// How one call of the handler ended.
enum Called {
    Finished(BatchResult),
    /// A partition of the batch was released meanwhile: the call was
    /// dropped.
    Cancelled,
}

/// Runs the records of `lanes` through the subscription's batch handler
/// until each is done, dead-lettered or abandoned, then reports the batch's
/// end.
pub(super) async fn run_batch(
    ctx: Arc<WorkerContext>,
    spec: Arc<BatchSpec>,
    metrics: Arc<TopicMetrics>,
    subscription: u64,
    lanes: VecDeque<LaneBatch>,
    completions: mpsc::UnboundedSender<Completions>,
) {
    let mut report = Reporter::new(completions);
    let mut pending: Vec<Entry> = Vec::new();
    for (lane, jobs) in lanes {
        let n = jobs.len();
        pending.extend(jobs.into_iter().enumerate().map(|(i, job)| Entry {
            lane,
            job,
            attempt: 1,
            first_failure: None,
            last: i + 1 == n,
        }));
    }
    let mut backoff = None;
    while !pending.is_empty() {
        if report.tx.is_closed() {
            // The dispatcher is gone (bus dropped): nothing left to report to.
            return;
        }
        pending = leave_released(pending, &ctx, &mut report);
        if pending.is_empty() {
            break;
        }
        // Nothing finished is held back while the handler runs.
        report.flush();
        let started = Instant::now();
        let called = call(&ctx, &spec, &metrics, &pending).await;
        metrics
            .handler_duration
            .observe(started.elapsed().as_secs_f64());
        let Called::Finished(result) = called else {
            // The released records are left at the next turn; the others
            // are handed over again.
            continue;
        };
        let Some(held) = settle(
            &ctx,
            &spec,
            &metrics,
            std::mem::take(&mut pending),
            result,
            &mut report,
        )
        .await
        else {
            continue;
        };
        pending = held.entries;
        if pending.is_empty() {
            break;
        }
        let delay = ctx.retry_delay(&mut backoff, held.exhausted);
        report.flush();
        let leases = distinct_leases(&pending);
        let slept = tokio::select! {
            () = tokio::time::sleep(delay) => true,
            () = any_cancelled(&leases) => true,
            () = ctx.shutdown.begun() => false,
        };
        if !slept {
            // A failure's retry after the shutdown began: left for the
            // group's next owner, as a record handler's would be.
            for e in pending.drain(..) {
                complete(&mut report, e, Outcome::Abandoned);
            }
        }
    }
    report.flush();
    let _ = report.tx.send(Completions::BatchEnd { subscription });
}

/// Abandons the entries whose partition was released (and, with a shutdown
/// that leaves buffered records, those never handed to the handler); a
/// lane's later records go with its first abandoned one.
fn leave_released(pending: Vec<Entry>, ctx: &WorkerContext, report: &mut Reporter) -> Vec<Entry> {
    let leave_new = ctx.shutdown.leaves_buffered();
    let mut abandoned: HashSet<LaneId> = HashSet::default();
    let mut kept = Vec::with_capacity(pending.len());
    for e in pending {
        if abandoned.contains(&e.lane)
            || e.job.lease.is_cancelled()
            || (leave_new && e.attempt == 1)
        {
            abandoned.insert(e.lane);
            complete(report, e, Outcome::Abandoned);
        } else {
            kept.push(e);
        }
    }
    kept
}

/// Calls the handler with every pending record, bounded by the attempt
/// timeout and dropped when one of the batch's partitions is released.
async fn call(
    ctx: &WorkerContext,
    spec: &BatchSpec,
    metrics: &TopicMetrics,
    pending: &[Entry],
) -> Called {
    let in_recovery = ctx.recovering.load(Ordering::Relaxed);
    let batch: Vec<Delivery> = pending
        .iter()
        .map(|e| Delivery {
            topic: e.job.partition.topic.clone(),
            partition: e.job.partition.partition,
            offset: e.job.offset,
            attempt: e.attempt,
            in_recovery,
            message: e.job.message.clone(),
        })
        .collect();
    let records = batch.len();
    let span = tracing::debug_span!(
        "eventbus.handle_batch",
        topic = %pending[0].job.partition.topic,
        records,
    );
    let handling = {
        let created = std::panic::catch_unwind(AssertUnwindSafe(|| {
            span.in_scope(|| spec.handler.handle(batch))
        }));
        async move {
            match created {
                Ok(fut) => match AssertUnwindSafe(fut).catch_unwind().await {
                    Ok(result) => result,
                    Err(panic) => Err(BatchError::all(panic_error(panic))),
                },
                Err(panic) => Err(BatchError::all(panic_error(panic))),
            }
        }
        .instrument(span)
    };
    let timed = async {
        match spec.attempt_timeout {
            None => handling.await,
            Some(after) => match tokio::time::timeout(after, handling).await {
                Ok(result) => result,
                Err(_) => Err(BatchError::all(HandlerError::new(
                    ErrorKind::Timeout,
                    format!("batch handler did not finish within {after:?}"),
                ))),
            },
        }
    };
    let leases = distinct_leases(pending);
    tokio::select! {
        biased;
        result = timed => Called::Finished(result),
        () = any_cancelled(&leases) => {
            metrics.handlers_cancelled.inc();
            crate::log_limit::warn_limited!(
                topic = %pending[0].job.partition.topic, records,
                "partition released while its batch handler ran; handler cancelled, records of released partitions left unacknowledged"
            );
            Called::Cancelled
        }
    }
}

/// The entries to hand over again after a call, and whether a lane holds
/// because its retries ran out with dead letters disabled.
struct Held {
    entries: Vec<Entry>,
    exhausted: bool,
}

/// Applies a call's result entry by entry, in order: done, dead-lettered,
/// or held for another attempt with the later records of its lane. `None`
/// when the dispatcher is gone.
async fn settle(
    ctx: &WorkerContext,
    spec: &BatchSpec,
    metrics: &TopicMetrics,
    pending: Vec<Entry>,
    result: BatchResult,
    report: &mut Reporter,
) -> Option<Held> {
    let mut failures = result.err();
    let mut held = Held {
        entries: Vec::new(),
        exhausted: false,
    };
    let mut holding: HashSet<LaneId> = HashSet::default();
    let mut abandoned: HashSet<LaneId> = HashSet::default();
    for (i, mut e) in pending.into_iter().enumerate() {
        if report.tx.is_closed() {
            return None;
        }
        if abandoned.contains(&e.lane) {
            complete(report, e, Outcome::Abandoned);
            continue;
        }
        if holding.contains(&e.lane) {
            e.attempt = e.attempt.saturating_add(1);
            held.entries.push(e);
            continue;
        }
        let Some(mut err) = failures.as_mut().and_then(|f| f.take(i)) else {
            metrics.consumed_ok.inc();
            complete(report, e, Outcome::Done);
            continue;
        };
        if let Some(classify) = &spec.classifier {
            if err.kind() != ErrorKind::Panic {
                let kind = classify(&err);
                err = err.with_kind(kind);
            }
        }
        let job = &e.job;
        metrics.failed(job.partition.partition, job.offset, e.attempt, &err);
        if ctx.shutdown.has_begun() || job.lease.is_cancelled() {
            abandoned.insert(e.lane);
            complete(report, e, Outcome::Abandoned);
            continue;
        }
        let now = SystemTime::now();
        let first = *e.first_failure.get_or_insert(now);
        let exhausted = ctx.exhausted(&err, e.attempt, first, now);
        if exhausted && ctx.dead_letter.enabled {
            report.flush();
            let outcome = Box::pin(dead_letter(ctx, job, &err, e.attempt, first, now)).await;
            match outcome {
                Outcome::DeadLettered => {
                    crate::log_limit::warn_limited!(
                        topic = %job.partition.topic, partition = job.partition.partition,
                        offset = job.offset, attempts = e.attempt, kind = err.kind().as_str(),
                        error = %err.detail(), "record of a batch dead-lettered"
                    );
                    metrics.dead_lettered.inc();
                    metrics.consumed_dead_lettered.inc();
                }
                Outcome::Abandoned => {
                    abandoned.insert(e.lane);
                }
                Outcome::Done => {}
            }
            complete(report, e, outcome);
            continue;
        }
        if exhausted {
            crate::log_limit::warn_limited!(
                topic = %job.partition.topic, partition = job.partition.partition,
                offset = job.offset, attempt = e.attempt, error = %err.detail(),
                "retries exhausted and dead letters are disabled; the record holds its key and is tried again"
            );
            held.exhausted = true;
        }
        metrics.retries.inc();
        holding.insert(e.lane);
        e.attempt = e.attempt.saturating_add(1);
        held.entries.push(e);
    }
    Some(held)
}

fn complete(report: &mut Reporter, e: Entry, outcome: Outcome) {
    report.push(Completion {
        subscription: e.job.subscription,
        lane: e.lane,
        partition: e.job.partition,
        generation: e.job.generation,
        offset: e.job.offset,
        ack: e.job.ack,
        outcome,
        last: e.last,
    });
}

/// The leases of the entries' partitions, each once.
fn distinct_leases(pending: &[Entry]) -> Vec<Arc<Lease>> {
    let mut leases: Vec<Arc<Lease>> = Vec::new();
    for e in pending {
        if !leases.iter().any(|l| Arc::ptr_eq(l, &e.job.lease)) {
            leases.push(e.job.lease.clone());
        }
    }
    leases
}

/// Resolves when any of `leases` is cancelled.
async fn any_cancelled(leases: &[Arc<Lease>]) {
    let waits = leases.iter().map(|l| Box::pin(l.cancelled()));
    futures::future::select_all(waits).await;
}
