//! The keyed dispatcher: one task per bus that owns every piece of consumer
//! state — subscriptions, key lanes, per-partition offset trackers and
//! back-pressure — so none of it needs a lock.
//!
//! It takes [`ConsumerEvent`]s from the backend, queues records in their key
//! lane, starts lane batches up to each subscription's concurrency — several
//! lanes to a worker task, see [`worker`] — and on each completion advances the partition's commit
//! position (lowest unfinished offset) and hands it to the backend. When a
//! partition or the bus holds too many records it pauses intake instead of
//! buffering more.
//!
//! The task's state is split by concern: `revoke` (partitions being taken
//! away, keyed by generation, and the cancellation of their handlers),
//! `subscriptions` (subscription instances and their lanes), `stats`
//! (what it reports); `tests` drives the whole state machine with a fake
//! consumer.

use std::collections::{HashSet, VecDeque};
use std::hash::BuildHasher;
use std::sync::Arc;

// Internal maps are keyed by our own values (topic partitions, lane ids), so a
// fast non-DoS-resistant hash is the right trade.
use rustc_hash::{FxBuildHasher, FxHashMap as HashMap};

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::backend::{Consumer, ConsumerEvent, Record, RecordAck, TopicPartition};
use crate::config::{DispatchConfig, Ordering};
use crate::message::Message;
use crate::offsets::PartitionOffsets;

mod batch_worker;
mod batching;
pub mod dead_letter;
pub(crate) mod lanes;
pub(crate) mod lease;
mod revoke;
mod stats;
mod subscriptions;
pub mod worker;

pub(crate) use batching::BatchSpec;
use lanes::LaneId;
use lease::Lease;
use revoke::PendingRevoke;
pub use stats::{DispatchStats, PartitionStats};
use subscriptions::Subscription;
pub(crate) use subscriptions::SubscriptionHandler;
pub(crate) use worker::WorkerContext;

/// Capacity of the backend → dispatcher channel, in events. Each event may
/// carry a batch of records, so records already fetched when a partition is
/// paused — at most this many batches — still arrive and are buffered: the
/// caps are exceeded by at most that much, never unboundedly.
pub(crate) const EVENT_CHANNEL: usize = 4;

/// Lane batches given to one worker task at most.
const MAX_SHIFT: usize = 64;

/// A record waiting in, or running from, a lane.
#[derive(Debug)]
pub(crate) struct Job {
    /// The subscription instance whose lanes hold it.
    subscription: u64,
    partition: TopicPartition,
    generation: u64,
    offset: i64,
    message: Arc<Message>,
    ack: Option<Box<dyn RecordAck>>,
    lease: Arc<Lease>,
}

/// Completions as a worker sends them: one, or several of one batch.
#[derive(Debug)]
pub(crate) enum Completions {
    One(Completion),
    Many(Vec<Completion>),
    /// A batch of a batch subscription ended (after its completions).
    BatchEnd {
        subscription: u64,
    },
}

#[derive(Debug)]
pub(crate) enum Outcome {
    /// Handled: may be acknowledged.
    Done,
    /// Durably written to the dead-letter topic: may be acknowledged, and
    /// must never be delivered again.
    DeadLettered,
    /// Released before it finished: must not be acknowledged.
    Abandoned,
}

/// A finished record, as reported back by a worker. Carries no message: the
/// payload is dropped on the worker.
#[derive(Debug)]
pub(crate) struct Completion {
    /// Subscription instance and lane: a lane id means something only
    /// within the instance that handed the batch out.
    subscription: u64,
    lane: LaneId,
    partition: TopicPartition,
    generation: u64,
    offset: i64,
    ack: Option<Box<dyn RecordAck>>,
    outcome: Outcome,
    /// Last record of its batch: the lane is free again.
    last: bool,
}

/// Per-subscription settings resolved from the bus defaults.
#[derive(Clone, Debug)]
pub(crate) struct SubscriptionSettings {
    pub(crate) ordering: Ordering,
    pub(crate) max_concurrency: usize,
    pub(crate) recovery_concurrency: Option<usize>,
}

impl SubscriptionSettings {
    fn concurrency(&self, recovering: bool) -> usize {
        match (recovering, self.recovery_concurrency) {
            (true, Some(n)) => n,
            _ => self.max_concurrency,
        }
    }
}

pub(crate) enum Command {
    Subscribe {
        topic: Arc<str>,
        handler: SubscriptionHandler,
        settings: SubscriptionSettings,
        reply: oneshot::Sender<()>,
    },
    Unsubscribe {
        topic: Arc<str>,
        reply: oneshot::Sender<()>,
    },
    Drain {
        deadline: Instant,
        /// Drop the records not started yet (`ShutdownMode::FinishRunning`).
        leave_buffered: bool,
        reply: oneshot::Sender<DrainReport>,
    },
    Stats {
        reply: oneshot::Sender<DispatchStats>,
    },
}

/// How a drain ended.
#[derive(Debug)]
pub(crate) struct DrainReport {
    /// Records given up at the deadline (left unacknowledged).
    pub(crate) abandoned: usize,
}

struct PartitionState {
    generation: u64,
    offsets: PartitionOffsets,
    /// Queued plus running records.
    buffered: usize,
    /// Records without a handler (see [`DispatchStats::held`]).
    held: usize,
    running: usize,
    paused: bool,
    lease: Arc<Lease>,
    /// When the commit position last advanced, or when unfinished work last
    /// arrived on an idle partition: the stall detector's clock.
    progress_at: Instant,
}

struct Draining {
    deadline: Instant,
    reply: oneshot::Sender<DrainReport>,
}

/// Handle to the dispatcher task.
#[derive(Clone, Debug)]
pub(crate) struct DispatcherHandle {
    commands: mpsc::Sender<Command>,
}

impl DispatcherHandle {
    /// A handle that does not keep the dispatcher alive.
    pub(crate) fn downgrade(&self) -> mpsc::WeakSender<Command> {
        self.commands.downgrade()
    }

    /// Sends a command; false if the dispatcher is gone.
    pub(crate) async fn send(&self, command: Command) -> bool {
        self.commands.send(command).await.is_ok()
    }
}

pub(crate) struct Dispatcher {
    consumer: Arc<dyn Consumer>,
    config: DispatchConfig,
    ctx: Arc<WorkerContext>,
    subs: HashMap<Arc<str>, Subscription>,
    partitions: HashMap<TopicPartition, PartitionState>,
    buffered: usize,
    /// Records held without a handler, over all partitions.
    held: usize,
    bus_full: bool,
    /// Revokes in progress, each holding its partitions' states.
    revokes: Vec<PendingRevoke>,
    /// Batches still running from unsubscribed instances of a topic, as
    /// (instance, lane): the topic's current instance keeps those lanes
    /// blocked until they finish, so a key never runs twice at once.
    retired: HashMap<Arc<str>, Vec<(u64, LaneId)>>,
    draining: Option<Draining>,
    next_generation: u64,
    next_subscription: u64,
    next_record_lane: u64,
    completions: mpsc::UnboundedSender<Completions>,
    warned_unrouted: HashSet<Arc<str>>,
    assigned_total: u64,
    revoked_total: u64,
    /// Commit positions advanced in this loop turn, handed to the backend
    /// once per turn rather than once per record.
    advanced: HashMap<TopicPartition, i64>,
    /// Partitions where a record above the commit position finished in this
    /// loop turn (only when the backend keeps those, see
    /// [`Consumer::finished_runs_wanted`]).
    finished_above: HashSet<TopicPartition>,
    /// [`Consumer::finished_runs_wanted`] of the backend.
    finished_runs: usize,
    /// Recovery mode as last applied to the subscriptions' concurrency.
    recovering: bool,
    /// Threads of the runtime the dispatcher runs on.
    workers: usize,
}

impl Dispatcher {
    /// Starts the dispatcher task for `consumer`, reading its `events`.
    pub(crate) fn spawn(
        consumer: Arc<dyn Consumer>,
        events: mpsc::Receiver<ConsumerEvent>,
        config: DispatchConfig,
        ctx: Arc<WorkerContext>,
    ) -> DispatcherHandle {
        let (commands_tx, commands) = mpsc::channel(16);
        // Unbounded on purpose: its length is bounded by the records in
        // flight (capped by `max_buffered`), and a completion must never be
        // dropped or block a worker.
        let (completions_tx, completions) = mpsc::unbounded_channel();
        let finished_runs = consumer.finished_runs_wanted();
        let dispatcher = Dispatcher {
            finished_runs,
            consumer,
            config,
            ctx,
            subs: HashMap::default(),
            partitions: HashMap::default(),
            buffered: 0,
            held: 0,
            bus_full: false,
            revokes: Vec::new(),
            retired: HashMap::default(),
            draining: None,
            next_generation: 0,
            next_subscription: 0,
            next_record_lane: 0,
            completions: completions_tx,
            warned_unrouted: HashSet::new(),
            assigned_total: 0,
            revoked_total: 0,
            advanced: HashMap::default(),
            finished_above: HashSet::new(),
            recovering: false,
            workers: tokio::runtime::Handle::current()
                .metrics()
                .num_workers()
                .max(1),
        };
        tokio::spawn(dispatcher.run(events, commands, completions));
        DispatcherHandle {
            commands: commands_tx,
        }
    }

    async fn run(
        mut self,
        mut events: mpsc::Receiver<ConsumerEvent>,
        mut commands: mpsc::Receiver<Command>,
        mut completions: mpsc::UnboundedReceiver<Completions>,
    ) {
        let mut completion_buf = Vec::with_capacity(256);
        let mut events_open = true;
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                biased;
                _ = completions.recv_many(&mut completion_buf, 256) => {
                    for c in completion_buf.drain(..) {
                        match c {
                            Completions::One(c) => self.on_completion(c),
                            Completions::Many(all) => {
                                for c in all {
                                    self.on_completion(c);
                                }
                            }
                            Completions::BatchEnd { subscription } => {
                                self.on_batch_end(subscription);
                            }
                        }
                    }
                }
                command = commands.recv() => match command {
                    // Every bus handle is gone: stop without committing more,
                    // like a crash; uncommitted records are redelivered.
                    None => return,
                    Some(c) => self.on_command(c),
                },
                event = events.recv(), if events_open => match event {
                    None => events_open = false,
                    Some(e) => self.on_event(e),
                },
                _ = sleep_until(deadline), if deadline.is_some() => {}
            }
            self.store_advanced();
            self.check_revokes();
            if self.check_drain() {
                return;
            }
            self.schedule();
            self.apply_backpressure();
            self.update_gauges();
        }
    }

    /// Sets the dispatcher gauges (a few atomic stores per loop turn).
    fn update_gauges(&self) {
        let m = &self.ctx.metrics;
        m.in_flight.set(self.buffered as i64);
        m.assigned_partitions.set(self.partitions.len() as i64);
        let (mut running, mut paused) = (0, 0);
        for p in self.partitions.values() {
            running += p.running;
            paused += p.paused as usize;
        }
        running += self.revoking_running();
        m.running.set(running as i64);
        m.paused_partitions.set(paused as i64);
        for sub in self.subs.values() {
            sub.metrics.live_lanes.set(sub.lanes.live() as i64);
            sub.metrics.active_lanes.set(sub.lanes.running() as i64);
        }
    }

    /// Records still running in partitions being revoked.
    fn revoking_running(&self) -> usize {
        self.revokes
            .iter()
            .flat_map(PendingRevoke::states)
            .map(|ps| ps.running)
            .sum()
    }

    fn next_deadline(&self) -> Option<Instant> {
        let revokes = self.revokes.iter().map(PendingRevoke::deadline);
        let drain = self.draining.as_ref().map(|d| d.deadline);
        let batches = self
            .subs
            .values()
            .filter_map(|s| s.batch.as_ref().and_then(|b| b.deadline()));
        revokes.chain(drain).chain(batches).min()
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Subscribe {
                topic,
                handler,
                settings,
                reply,
            } => {
                self.subscribe(topic, handler, settings);
                let _ = reply.send(());
            }
            Command::Unsubscribe { topic, reply } => {
                self.unsubscribe(&topic);
                let _ = reply.send(());
            }
            Command::Drain {
                deadline,
                leave_buffered,
                reply,
            } => {
                let all: Vec<TopicPartition> = self.partitions.keys().cloned().collect();
                self.consumer.pause(&all);
                for ps in self.partitions.values_mut() {
                    ps.paused = true;
                }
                if leave_buffered {
                    // Not acknowledged and not completed: the commit position
                    // stays at the first of them, the next owner reads them.
                    self.drop_queued(|_| false);
                }
                self.draining = Some(Draining { deadline, reply });
            }
            Command::Stats { reply } => {
                let _ = reply.send(self.stats());
            }
        }
    }

    fn on_event(&mut self, event: ConsumerEvent) {
        match event {
            ConsumerEvent::Assigned(tps) => {
                self.ctx.metrics.assigned.inc_by(tps.len() as u64);
                for tp in tps {
                    self.next_generation += 1;
                    self.assigned_total += 1;
                    tracing::debug!(partition = %tp, generation = self.next_generation, "assigned");
                    self.partitions.insert(
                        tp,
                        PartitionState {
                            generation: self.next_generation,
                            offsets: PartitionOffsets::default(),
                            buffered: 0,
                            held: 0,
                            running: 0,
                            paused: false,
                            lease: Arc::new(Lease::default()),
                            progress_at: Instant::now(),
                        },
                    );
                }
            }
            ConsumerEvent::Records(records) => self.on_records(records),
            ConsumerEvent::Revoked {
                partitions,
                lost,
                done,
            } => self.on_revoke(partitions, lost, done),
        }
    }

    /// Queues records in their lanes. Records come in runs of one partition
    /// (a fetch per partition): the partition and its subscription are looked
    /// up once per run.
    fn on_records(&mut self, records: Vec<Record>) {
        let draining = self.draining.is_some();
        let mut records = records.into_iter().peekable();
        while let Some(first) = records.next() {
            let tp = first.partition.clone();
            let mut next = Some(first);
            let ps = match self.partitions.get_mut(&tp) {
                // Not handed out, so not tracked: the commit position cannot
                // pass them and they are redelivered.
                Some(_) if draining => None,
                Some(ps) => Some(ps),
                // Not ours (revoked or being revoked): the next owner reads
                // them.
                None => None,
            };
            let Some(ps) = ps else {
                while records.next_if(|r| r.partition == tp).is_some() {}
                continue;
            };
            let mut sub = self.subs.get_mut(&tp.topic);
            while let Some(record) = next.take() {
                next = records.next_if(|r| r.partition == tp);
                if ps.offsets.oldest_unfinished().is_none() {
                    ps.progress_at = Instant::now();
                }
                ps.offsets
                    .deliver_at(record.offset, record.message.timestamp);
                let Some(sub) = sub.as_deref_mut() else {
                    // A record of a topic with no handler stays unfinished,
                    // holding the partition's commit position: never
                    // skipped silently. Counted, so the caps pause the
                    // partition instead of its window growing unbounded.
                    ps.held += 1;
                    self.held += 1;
                    if self.warned_unrouted.insert(tp.topic.clone()) {
                        tracing::warn!(topic = %tp.topic, "record for a topic without a subscription; holding its partition");
                    }
                    continue;
                };
                let lane = match sub.settings.ordering {
                    Ordering::Key => match &record.message.key {
                        Some(k) => LaneId::Key(FxBuildHasher.hash_one(k)),
                        None => LaneId::Partition(record.partition.partition),
                    },
                    Ordering::Partition => LaneId::Partition(record.partition.partition),
                    Ordering::Unordered => {
                        self.next_record_lane += 1;
                        LaneId::Record(self.next_record_lane)
                    }
                };
                ps.buffered += 1;
                self.buffered += 1;
                sub.lanes.push(
                    lane,
                    Job {
                        subscription: sub.id,
                        partition: record.partition,
                        generation: ps.generation,
                        offset: record.offset,
                        message: record.message,
                        ack: record.ack,
                        lease: ps.lease.clone(),
                    },
                );
            }
        }
    }

    /// Drops queued (not running) records for which `keep` is false, without
    /// acknowledging them.
    fn drop_queued(&mut self, keep: impl Fn(&Job) -> bool) {
        let mut dropped = Vec::new();
        for sub in self.subs.values_mut() {
            dropped.extend(sub.lanes.retain(&keep));
        }
        self.uncount_dropped(dropped, false);
    }

    /// Takes dropped queued records out of the buffered counts of their
    /// (current) assignment. With `hold`, they stay unfinished and count as
    /// held: they keep holding their partition's commit position.
    fn uncount_dropped(&mut self, dropped: Vec<Job>, hold: bool) {
        for job in dropped {
            if let Some(ps) = revoke::state_mut(
                &mut self.partitions,
                &mut self.revokes,
                &job.partition,
                job.generation,
            ) {
                ps.buffered -= 1;
                self.buffered -= 1;
                if hold {
                    ps.held += 1;
                    self.held += 1;
                }
            }
        }
    }

    /// True when the drain finished and the task should end.
    fn check_drain(&mut self) -> bool {
        let Some(d) = &self.draining else {
            return false;
        };
        if self.buffered > 0 && Instant::now() < d.deadline {
            return false;
        }
        let abandoned = self.buffered;
        let revoking = self.revokes.iter().flat_map(PendingRevoke::states);
        for ps in self.partitions.values().chain(revoking) {
            ps.lease.cancel();
        }
        for sub in self.subs.values_mut() {
            sub.lanes.retain(|_| false);
        }
        if let Some(d) = self.draining.take() {
            let _ = d.reply.send(DrainReport { abandoned });
        }
        // Revokes waiting on us are answered: nothing more will finish.
        for r in self.revokes.drain(..) {
            r.answer();
        }
        true
    }

    fn on_completion(&mut self, c: Completion) {
        let Completion {
            subscription,
            lane,
            partition,
            generation,
            offset,
            ack,
            outcome,
            last,
        } = c;
        let abandoned = matches!(outcome, Outcome::Abandoned);
        // The lane belongs to the subscription instance that handed the
        // batch out; a later instance of the topic has lanes of its own,
        // only blocked while this batch ran.
        if last {
            self.retire_finished(&partition.topic, subscription, lane);
        }
        let sub = self
            .subs
            .get_mut(&partition.topic)
            .filter(|s| s.id == subscription);
        if let Some(sub) = sub {
            if abandoned && self.draining.is_some() {
                // A record given up during shutdown: the later records of its
                // lane must not run before it, so they are left too.
                let dropped = sub.lanes.clear(lane);
                if last {
                    sub.lanes.finish(lane);
                }
                self.uncount_dropped(dropped, false);
            } else if last {
                sub.lanes.finish(lane);
            }
        }
        // Owned, or being revoked: found by generation, so a completion of
        // an earlier assignment of the partition never touches a later one.
        let owned = self
            .partitions
            .get(&partition)
            .is_some_and(|ps| ps.generation == generation);
        let Some(ps) = revoke::state_mut(
            &mut self.partitions,
            &mut self.revokes,
            &partition,
            generation,
        ) else {
            return;
        };
        ps.buffered -= 1;
        ps.running -= 1;
        self.buffered -= 1;
        let finished = !matches!(outcome, Outcome::Abandoned);
        if let Some(ack) = ack {
            match outcome {
                Outcome::Done => ack.ack(),
                Outcome::DeadLettered => ack.dead_lettered(),
                // Dropping it lets the record go for redelivery.
                Outcome::Abandoned => drop(ack),
            }
        }
        if finished {
            // A revoking partition's final position is stored when it is
            // released.
            match ps.offsets.complete(offset) {
                Some(position) if owned => {
                    self.advanced.insert(partition, position);
                }
                None if owned && self.finished_runs > 0 => {
                    self.finished_above.insert(partition);
                }
                _ => {}
            }
        }
    }

    /// Hands the positions advanced in this turn to the backend.
    fn store_advanced(&mut self) {
        if self.advanced.is_empty() && self.finished_above.is_empty() {
            return;
        }
        let now = Instant::now();
        for (tp, position) in self.advanced.drain() {
            if let Some(ps) = self.partitions.get_mut(&tp) {
                ps.progress_at = now;
                self.finished_above.remove(&tp);
                store_position(
                    &*self.consumer,
                    self.finished_runs,
                    &tp,
                    position,
                    &ps.offsets,
                );
            }
        }
        for tp in self.finished_above.drain() {
            if let Some(ps) = self.partitions.get(&tp) {
                if let Some(position) = ps.offsets.position() {
                    store_position(
                        &*self.consumer,
                        self.finished_runs,
                        &tp,
                        position,
                        &ps.offsets,
                    );
                }
            }
        }
    }

    /// Starts lane batches while concurrency allows.
    fn schedule(&mut self) {
        let recovering = self
            .ctx
            .recovering
            .load(std::sync::atomic::Ordering::Relaxed);
        if recovering != self.recovering {
            self.recovering = recovering;
            for sub in self.subs.values_mut() {
                sub.lanes
                    .set_max_concurrency(sub.settings.concurrency(recovering));
            }
        }
        if self
            .draining
            .as_ref()
            .is_some_and(|d| Instant::now() >= d.deadline)
        {
            return;
        }
        let workers = self.workers;
        let draining = self.draining.is_some();
        for sub in self.subs.values_mut() {
            if sub.batch.is_some() {
                batching::schedule(
                    sub,
                    &mut self.partitions,
                    &self.ctx,
                    &self.completions,
                    draining,
                );
                continue;
            }
            let SubscriptionHandler::Records(handler) = &sub.handler else {
                continue;
            };
            let mut ready = VecDeque::new();
            while let Some((lane, batch)) = sub.lanes.next_batch() {
                count_running(&mut self.partitions, &batch);
                ready.push_back((lane, batch));
            }
            // Shifts of a few lanes each, about two per runtime worker:
            // quick handlers then cost a task and a report per shift instead
            // of per lane, and the shifts still spread over the threads.
            let per_shift = ready.len().div_ceil(2 * workers).clamp(1, MAX_SHIFT);
            while !ready.is_empty() {
                let rest = ready.split_off(per_shift.min(ready.len()));
                let shift = std::mem::replace(&mut ready, rest);
                tokio::spawn(worker::run_shift(
                    self.ctx.clone(),
                    handler.clone(),
                    sub.metrics.clone(),
                    shift,
                    self.completions.clone(),
                ));
            }
        }
    }

    /// Pauses partitions over their cap (or all, when the bus or a
    /// subscription's lanes are over theirs) and resumes them at half.
    fn apply_backpressure(&mut self) {
        if self.draining.is_some() {
            return;
        }
        let cfg = &self.config;
        let buffered = self.buffered + self.held;
        if buffered >= cfg.max_buffered {
            self.bus_full = true;
        } else if buffered <= cfg.max_buffered / 2 {
            self.bus_full = false;
        }
        for sub in self.subs.values_mut() {
            let live = sub.lanes.live();
            if live >= cfg.max_processors {
                sub.lanes_full = true;
            } else if live <= cfg.max_processors * 9 / 10 {
                sub.lanes_full = false;
            }
        }
        let per_partition = cfg.max_buffered_per_partition;
        let mut pause = Vec::new();
        let mut resume = Vec::new();
        for (tp, ps) in self.partitions.iter_mut() {
            let lanes_full = self.subs.get(&tp.topic).is_some_and(|s| s.lanes_full);
            let buffered = ps.buffered + ps.held;
            let over = buffered >= per_partition || (ps.paused && buffered > per_partition / 2);
            let want = over || self.bus_full || lanes_full;
            if want != ps.paused {
                ps.paused = want;
                if want {
                    pause.push(tp.clone());
                } else {
                    resume.push(tp.clone());
                }
            }
        }
        if !pause.is_empty() {
            tracing::debug!(partitions = pause.len(), "pausing intake");
            self.consumer.pause(&pause);
        }
        if !resume.is_empty() {
            self.consumer.resume(&resume);
        }
    }
}

/// Counts a lane batch's records as running in their partitions. A lane's
/// records nearly always share a partition: it is looked up once per run of
/// equal partitions, not per record.
fn count_running(
    partitions: &mut HashMap<TopicPartition, PartitionState>,
    batch: &lanes::Batch<Job>,
) {
    let mut i = 0;
    while i < batch.len() {
        let job = &batch[i];
        let same = batch[i..]
            .iter()
            .take_while(|j| j.partition == job.partition && j.generation == job.generation)
            .count();
        if let Some(ps) = partitions.get_mut(&job.partition) {
            if ps.generation == job.generation {
                ps.running += same;
            }
        }
        i += same;
    }
}

/// Hands a partition's commit position to the backend, with the offsets
/// finished above it when the backend keeps them.
fn store_position(
    consumer: &dyn Consumer,
    finished_runs: usize,
    tp: &TopicPartition,
    position: i64,
    offsets: &PartitionOffsets,
) {
    if finished_runs == 0 {
        consumer.store(tp, position);
    } else {
        consumer.store_finished(tp, position, offsets.finished_above(finished_runs));
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
