//! Runs a batch of one lane: each record through the handler, retried inside
//! the lane, dead-lettered when it cannot succeed.

use std::any::Any;
use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::SystemTime;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use futures::FutureExt;
use tokio::sync::mpsc;

use super::lease::{sleep_unless, ShutdownSignal};
use super::{Completion, Completions, Job, Outcome};
use crate::backend::Producer;
use crate::config::{DeadLetterConfig, RetryConfig};
use crate::delivery::Delivery;
use crate::envelope::headers as envelope_headers;
use crate::handler::{ErrorKind, Handler, HandlerError, HandlerResult};
use crate::message::Message;
use crate::metrics::{BoundMetrics, TopicMetrics};
use crate::trace::TraceParent;
use tracing::Instrument;

/// Dead-letter provenance headers.
pub mod dlq_headers {
    /// Topic the record was read from.
    pub const ORIGINAL_TOPIC: &str = "x-dlq-original-topic";
    /// Its partition.
    pub const ORIGINAL_PARTITION: &str = "x-dlq-original-partition";
    /// Its offset.
    pub const ORIGINAL_OFFSET: &str = "x-dlq-original-offset";
    /// The consumer group that failed it.
    pub const CONSUMER_GROUP: &str = "x-dlq-consumer-group";
    /// The last error message.
    pub const ERROR: &str = "x-dlq-error";
    /// The last error kind (`permanent`, `retryable`, `decode`, `panic`, `timeout`).
    pub const ERROR_KIND: &str = "x-dlq-error-kind";
    /// Attempts made.
    pub const ATTEMPTS: &str = "x-dlq-attempts";
    /// First failure time (RFC 3339).
    pub const FIRST_FAILURE: &str = "x-dlq-first-failure";
    /// Last failure time (RFC 3339).
    pub const LAST_FAILURE: &str = "x-dlq-last-failure";
    /// `true` on a pointer record: written without the payload and the
    /// record's own headers because the broker refused the full dead letter
    /// for good (see [`dead_letter`](crate::dispatch::dead_letter)).
    pub const POINTER: &str = "x-dlq-pointer";
    /// On a pointer record: the payload's size in bytes.
    pub const PAYLOAD_SIZE: &str = "x-dlq-payload-size";
    /// On a pointer record: the payload's SHA-256, lower-case hex.
    pub const PAYLOAD_SHA256: &str = "x-dlq-payload-sha256";
    /// On a pointer record: why the broker refused the full dead letter.
    pub const WRITE_ERROR: &str = "x-dlq-write-error";
    /// The message id of the record that failed. The dead letter's own id is
    /// derived from it and the group (see
    /// [`dead_letter_id`](crate::dispatch::dead_letter::dead_letter_id)).
    pub const ORIGINAL_ID: &str = "x-dlq-original-id";
}

/// What every worker of one bus shares.
#[derive(Debug)]
pub(crate) struct WorkerContext {
    pub(crate) producer: Arc<dyn Producer>,
    pub(crate) retry: RetryConfig,
    pub(crate) dead_letter: DeadLetterConfig,
    pub(crate) group: String,
    pub(crate) recovering: Arc<AtomicBool>,
    pub(crate) metrics: Arc<BoundMetrics>,
    pub(crate) shutdown: Arc<ShutdownSignal>,
}

impl WorkerContext {
    pub(super) fn backoff(&self) -> ExponentialBackoff {
        let b = ExponentialBuilder::default()
            .with_min_delay(self.retry.initial_backoff)
            .with_max_delay(self.retry.max_backoff)
            .with_factor(self.retry.multiplier)
            .without_max_times();
        if self.retry.jitter {
            b.with_jitter().build()
        } else {
            b.build()
        }
    }

    /// Whether a record that failed with `err` on its `attempt`-th try,
    /// first at `first`, gets no further try.
    pub(super) fn exhausted(
        &self,
        err: &HandlerError,
        attempt: u32,
        first: SystemTime,
        now: SystemTime,
    ) -> bool {
        let out_of_time = self
            .retry
            .max_elapsed
            .is_some_and(|max| now.duration_since(first).unwrap_or_default() >= max);
        !err.is_retryable() || attempt >= self.retry.max_attempts || out_of_time
    }

    /// The wait before the next try: the next step of `backoff` (built at
    /// the first failure), or the longest wait once the tries are exhausted
    /// (the record then holds its lane: dead letters are off).
    pub(super) fn retry_delay(
        &self,
        backoff: &mut Option<ExponentialBackoff>,
        exhausted: bool,
    ) -> std::time::Duration {
        if exhausted {
            return self.retry.max_backoff;
        }
        backoff
            .get_or_insert_with(|| self.backoff())
            .next()
            .unwrap_or(self.retry.max_backoff)
    }
}

/// Completions of a shift on their way to the dispatcher: sent together
/// while handlers finish without waiting, and always before the task waits
/// (a handler not ready at once, a retry backoff, a dead-letter write), so a
/// finished record is never held back behind a slow one, and the dispatcher
/// is woken once per run of quick records rather than once per record.
pub(super) struct Reporter {
    pub(super) tx: mpsc::UnboundedSender<Completions>,
    /// The first completion not yet sent: a run of one record costs no
    /// allocation.
    first: Option<Completion>,
    rest: Vec<Completion>,
}

impl Reporter {
    pub(super) fn new(tx: mpsc::UnboundedSender<Completions>) -> Self {
        Reporter {
            tx,
            first: None,
            rest: Vec::new(),
        }
    }

    pub(super) fn push(&mut self, c: Completion) {
        if self.first.is_none() {
            self.first = Some(c);
        } else {
            self.rest.push(c);
        }
    }

    /// Sends what is pending; false when the dispatcher is gone.
    pub(super) fn flush(&mut self) -> bool {
        let Some(first) = self.first.take() else {
            return true;
        };
        let message = if self.rest.is_empty() {
            Completions::One(first)
        } else {
            let mut all = std::mem::take(&mut self.rest);
            all.insert(0, first);
            Completions::Many(all)
        };
        self.tx.send(message).is_ok()
    }
}

/// The queued records of one lane, handed out to run in order.
pub(crate) type LaneBatch = (super::lanes::LaneId, super::lanes::Batch<Job>);

/// Lane batches of one subscription given to one task ("a shift"), run one
/// after another. Quick handlers get through a whole shift on one task with
/// one report; before the task waits on anything (a handler not ready at
/// once, a retry backoff, a dead-letter write) it hands the lanes it has
/// not started to a new task, so a slow record never holds back another
/// lane. Records of one lane always stay on one task, in order.
struct Shift {
    ctx: Arc<WorkerContext>,
    handler: Arc<dyn Handler>,
    metrics: Arc<TopicMetrics>,
    report: Reporter,
    /// Lane batches not started yet.
    queued: VecDeque<LaneBatch>,
}

impl Shift {
    /// Called before the task waits: reports what finished and moves the
    /// lanes not started to a task of their own.
    fn before_wait(&mut self) {
        self.report.flush();
        if self.queued.is_empty() {
            return;
        }
        tokio::spawn(run_shift(
            self.ctx.clone(),
            self.handler.clone(),
            self.metrics.clone(),
            std::mem::take(&mut self.queued),
            self.report.tx.clone(),
        ));
    }
}

/// Runs lane `batches` of one subscription, each record through `handler`
/// in lane order, and reports each completion; a lane's last record frees it.
pub(crate) async fn run_shift(
    ctx: Arc<WorkerContext>,
    handler: Arc<dyn Handler>,
    metrics: Arc<TopicMetrics>,
    batches: VecDeque<LaneBatch>,
    completions: mpsc::UnboundedSender<Completions>,
) {
    let records: usize = batches.iter().map(|(_, jobs)| jobs.len()).sum();
    let mut shift = Shift {
        ctx,
        handler,
        metrics,
        report: Reporter {
            tx: completions,
            first: None,
            rest: Vec::with_capacity(records.saturating_sub(1)),
        },
        queued: batches,
    };
    // One clock read per record: a record's end is the next one's start.
    let mut clock = std::time::Instant::now();
    while let Some((lane, jobs)) = shift.queued.pop_front() {
        let n = jobs.len();
        // Once a record of the lane is given up, the lane's later records
        // must not run before it: they are given up too.
        let mut abandoned = false;
        for (i, job) in jobs.into_iter().enumerate() {
            if shift.report.tx.is_closed() {
                // The dispatcher is gone (bus dropped): nothing left to report to.
                return;
            }
            let outcome = if abandoned {
                Outcome::Abandoned
            } else {
                process(&mut shift, &job, &mut clock).await
            };
            abandoned = matches!(outcome, Outcome::Abandoned);
            if !matches!(outcome, Outcome::Done) {
                // Dead-letter writes and retries took time the next record must
                // not be charged for.
                clock = std::time::Instant::now();
            }
            shift.report.push(Completion {
                subscription: job.subscription,
                lane,
                partition: job.partition,
                generation: job.generation,
                offset: job.offset,
                ack: job.ack,
                outcome,
                last: i + 1 == n,
            });
        }
    }
    shift.report.flush();
}

async fn process(shift: &mut Shift, job: &Job, clock: &mut std::time::Instant) -> Outcome {
    // Built at the first failure: most records never need it.
    let mut backoff = None;
    let mut first_failure = None;
    let mut attempt = 1u32;
    loop {
        if job.lease.is_cancelled() {
            return Outcome::Abandoned;
        }
        if attempt == 1 && shift.ctx.shutdown.leaves_buffered() {
            // Not started when the shutdown began: left for the next owner.
            return Outcome::Abandoned;
        }
        let ctx = &*shift.ctx;
        let metrics = &*shift.metrics;
        let delivery = Delivery {
            topic: job.partition.topic.clone(),
            partition: job.partition.partition,
            offset: job.offset,
            attempt,
            in_recovery: ctx.recovering.load(Ordering::Relaxed),
            message: job.message.clone(),
        };
        if attempt > 1 {
            metrics.retries.inc();
            // After a backoff sleep: start the clock again.
            *clock = std::time::Instant::now();
        }
        let started = *clock;
        let span = tracing::debug_span!(
            "eventbus.handle",
            topic = %job.partition.topic,
            partition = job.partition.partition,
            offset = job.offset,
            key = job.message.key_str(),
            attempt,
            trace_id = tracing::field::Empty,
            correlation_id = tracing::field::Empty,
        );
        if !span.is_disabled() {
            let headers = &job.message.headers;
            if let Some(tp) = TraceParent::from_headers(headers) {
                span.record("trace_id", tp.trace_id());
            }
            if let Some(c) = headers.get_str(envelope_headers::CORRELATION_ID) {
                span.record("correlation_id", c);
            }
        }
        // The handler's synchronous part runs in the span too.
        let handling = span.in_scope(|| call(shift.handler.as_ref(), delivery));
        let handling = handling.instrument(span);
        tokio::pin!(handling);
        let result = match futures::poll!(handling.as_mut()) {
            Poll::Ready(result) => result,
            Poll::Pending => {
                shift.before_wait();
                // A released partition's handler must not run on while its
                // next owner starts the same key: the lease cancels it, and
                // returning drops the handler future.
                tokio::select! {
                    biased;
                    result = handling.as_mut() => result,
                    () = job.lease.cancelled() => {
                        shift.metrics.handlers_cancelled.inc();
                        crate::log_limit::warn_limited!(
                            topic = %job.partition.topic, partition = job.partition.partition,
                            offset = job.offset, attempt,
                            "partition released while its handler ran; handler cancelled, record left unacknowledged"
                        );
                        return Outcome::Abandoned;
                    }
                }
            }
        };
        let ctx = &*shift.ctx;
        let metrics = &*shift.metrics;
        *clock = std::time::Instant::now();
        metrics
            .handler_duration
            .observe(clock.duration_since(started).as_secs_f64());
        let err = match result {
            Ok(()) => {
                metrics.consumed_ok.inc();
                return Outcome::Done;
            }
            Err(e) => e,
        };
        metrics.failed(job.partition.partition, job.offset, attempt, &err);
        if ctx.shutdown.has_begun() || job.lease.is_cancelled() {
            // A failure after the shutdown began (often the handler's own
            // publish racing the close) is neither retried, which would hold
            // the shutdown, nor dead-lettered: the record stays
            // unacknowledged and the group's next owner handles it.
            tracing::debug!(
                topic = %job.partition.topic, partition = job.partition.partition,
                offset = job.offset, error = %err.detail(),
                "handler failed during shutdown; record left for redelivery"
            );
            return Outcome::Abandoned;
        }
        let now = SystemTime::now();
        let first = *first_failure.get_or_insert(now);
        let exhausted = ctx.exhausted(&err, attempt, first, now);
        tracing::debug!(
            topic = %job.partition.topic, partition = job.partition.partition,
            offset = job.offset, attempt, kind = err.kind().as_str(), error = %err.detail(),
            "handler failed"
        );
        let dead_letter_now = exhausted && ctx.dead_letter.enabled;
        let delay = ctx.retry_delay(&mut backoff, exhausted);
        // Waiting ahead (a dead-letter write or a backoff).
        shift.before_wait();
        let ctx = &*shift.ctx;
        let metrics = &*shift.metrics;
        if dead_letter_now {
            // Boxed, as the backoff sleep below: rare paths, kept out of the
            // shift task's state.
            let outcome = Box::pin(dead_letter(ctx, job, &err, attempt, first, now)).await;
            if let Outcome::DeadLettered = outcome {
                crate::log_limit::warn_limited!(
                    topic = %job.partition.topic, partition = job.partition.partition,
                    offset = job.offset, attempts = attempt, kind = err.kind().as_str(),
                    error = %err.detail(), "record dead-lettered"
                );
                metrics.dead_lettered.inc();
                metrics.consumed_dead_lettered.inc();
            }
            return outcome;
        }
        if exhausted {
            crate::log_limit::warn_limited!(
                topic = %job.partition.topic, partition = job.partition.partition,
                offset = job.offset, attempt, error = %err.detail(),
                "retries exhausted and dead letters are disabled; the record holds its key and is tried again"
            );
        }
        if !Box::pin(sleep_unless(&job.lease, &ctx.shutdown, delay)).await {
            return Outcome::Abandoned;
        }
        attempt = attempt.saturating_add(1);
    }
}

/// Calls the handler; a panic, whether while creating or while polling the
/// future, becomes an [`ErrorKind::Panic`] failure. The future it returns
/// does not borrow the handler.
pub(super) fn call(
    handler: &dyn Handler,
    delivery: Delivery,
) -> impl Future<Output = HandlerResult> {
    let fut = std::panic::catch_unwind(AssertUnwindSafe(|| handler.handle(delivery)));
    async move {
        match fut {
            Ok(fut) => match AssertUnwindSafe(fut).catch_unwind().await {
                Ok(result) => result,
                Err(panic) => Err(panic_error(panic)),
            },
            Err(panic) => Err(panic_error(panic)),
        }
    }
}

pub(super) fn panic_error(panic: Box<dyn Any + Send>) -> HandlerError {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into());
    HandlerError::new(ErrorKind::Panic, format!("handler panicked: {what}"))
}

/// Writes the record to its dead-letter topic, retrying the write (holding the
/// lane) until the broker acknowledges it or the partition is released.
pub(super) async fn dead_letter(
    ctx: &WorkerContext,
    job: &Job,
    err: &HandlerError,
    attempts: u32,
    first: SystemTime,
    last: SystemTime,
) -> Outcome {
    let topic = format!("{}{}", job.partition.topic, ctx.dead_letter.suffix);
    let message = dead_letter_message(ctx, job, err, attempts, first, last);
    let health = &ctx.metrics.dead_letters;
    // Registered as waiting from the first failed write until this returns.
    let mut waiting = None;
    let mut backoff = ctx.backoff();
    loop {
        // The full record first on every round: a topic an operator created
        // meanwhile gets it whole.
        match ctx.producer.send(&topic, message.clone()).await {
            Ok(_) => return Outcome::DeadLettered,
            Err(e) if e.is_retryable() => {
                crate::log_limit::warn_limited!(dlq = %topic, error = %e, "dead-letter write failed; record stays unacknowledged and the write is retried");
                waiting
                    .get_or_insert_with(|| health.waiting(&topic))
                    .failed(&e.to_string(), false);
            }
            Err(e) => {
                // Refused for good: a pointer record instead, so the lane
                // moves on and the payload stays findable in the original.
                let reason = e.to_string();
                let pointer = super::dead_letter::pointer(&message, &reason);
                match ctx.producer.send(&topic, pointer).await {
                    Ok(_) => {
                        tracing::error!(
                            dlq = %topic, topic = %job.partition.topic,
                            partition = job.partition.partition, offset = job.offset,
                            error = %reason,
                            "dead letter refused by the broker; written without its payload (pointer record)"
                        );
                        health.pointer_written(&topic, &reason);
                        ctx.metrics.dead_letter_pointer(&job.partition.topic);
                        return Outcome::DeadLettered;
                    }
                    Err(pe) => {
                        crate::log_limit::warn_limited!(dlq = %topic, error = %reason, pointer_error = %pe, "dead letter refused and its pointer record failed too; record stays unacknowledged and the write is retried");
                        waiting
                            .get_or_insert_with(|| health.waiting(&topic))
                            .failed(&format!("{reason}; pointer record: {pe}"), true);
                    }
                }
            }
        }
        let delay = backoff.next().unwrap_or(ctx.retry.max_backoff);
        if !sleep_unless(&job.lease, &ctx.shutdown, delay).await {
            return Outcome::Abandoned;
        }
    }
}

fn dead_letter_message(
    ctx: &WorkerContext,
    job: &Job,
    err: &HandlerError,
    attempts: u32,
    first: SystemTime,
    last: SystemTime,
) -> Message {
    use dlq_headers::*;
    let rfc3339 = |t: SystemTime| chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339();
    let mut m = Message::clone(&job.message);
    m.id = super::dead_letter::dead_letter_id(&ctx.group, &job.message.id);
    let h = &mut m.headers;
    h.set(ORIGINAL_ID, job.message.id.clone());
    h.set(ORIGINAL_TOPIC, job.partition.topic.to_string());
    h.set(ORIGINAL_PARTITION, job.partition.partition.to_string());
    h.set(ORIGINAL_OFFSET, job.offset.to_string());
    h.set(CONSUMER_GROUP, ctx.group.clone());
    h.set(
        ERROR,
        super::dead_letter::bounded(&err.detail(), super::dead_letter::MAX_ERROR_BYTES)
            .into_owned(),
    );
    h.set(ERROR_KIND, err.kind().as_str());
    h.set(ATTEMPTS, attempts.to_string());
    h.set(FIRST_FAILURE, rfc3339(first));
    h.set(LAST_FAILURE, rfc3339(last));
    m
}
