//! The consumer's dedicated thread: polls librdkafka (records, rebalance
//! callbacks, errors), applies subscription changes, runs the committer
//! thread beside it ([`super::commits`]), and finally closes and destroys
//! the consumer.
//!
//! It keeps polling while partitions are paused, so the group never evicts
//! the bus for being busy (a pause first stops polling for at most
//! [`super::flow::HOLD_WAIT`], see [`super::flow`]). Records go to the dispatcher in batches through a
//! bounded channel; the dispatcher pauses partitions at its caps, so the
//! channel drains and the thread does not stay blocked on it.

use std::collections::BTreeSet;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::KafkaError;
use tokio::sync::oneshot;

use super::access::Denied;
use super::mapping::{self, TopicNames};
use super::rebalance::RebalanceContext;
use crate::error::{Error, Result};

/// Longest a poll blocks when nothing arrives; bounds how late a command
/// (subscribe, close) is picked up.
const POLL_WAIT: Duration = Duration::from_millis(50);
/// Records sent to the dispatcher in one event at most.
pub(super) const MAX_BATCH: usize = 512;

/// Requests from the consumer handle to its thread.
#[derive(Debug)]
pub(super) enum Command {
    /// Replace the subscription with these topics; answered once the group
    /// has applied the change (bounded by `wait`).
    Subscribe {
        topics: Vec<String>,
        wait: Duration,
        reply: oneshot::Sender<Result<()>>,
    },
    /// Close the consumer (final commit, leave the group) and end the thread.
    Close { reply: Option<oneshot::Sender<()>> },
}

/// A subscription change waiting for the group to apply it.
struct PendingSubscribe {
    topics: BTreeSet<String>,
    /// The subscription before the change, restored if the broker refuses
    /// the group.
    previous: BTreeSet<String>,
    /// Wait for an assignment round after this one.
    assign_round: Option<u64>,
    deadline: Instant,
    reply: oneshot::Sender<Result<()>>,
}

/// Runs the consumer until it is asked to close (or its handle is gone),
/// then closes and destroys it on this thread.
pub(super) fn run(
    consumer: Arc<BaseConsumer<RebalanceContext>>,
    commands: Receiver<Command>,
    group: String,
) {
    let ctx = consumer.context().clone();
    let committer = {
        let commits = ctx.commits.clone();
        let weak = Arc::downgrade(&consumer);
        std::thread::Builder::new()
            .name("kafka-commits".into())
            .spawn(move || commits.run(weak))
    };
    if let Err(e) = &committer {
        // Revokes and shutdown still commit; only the eager commits are off.
        tracing::error!(error = %e, "cannot start the commit thread; positions are committed only on revoke and at shutdown");
    }
    let reply = serve(&consumer, commands, &group);
    ctx.flush();
    ctx.commits.stop();
    if let Ok(committer) = committer {
        let _ = committer.join();
    }
    // What the drained dispatcher stored last, before the final revoke.
    let _ = ctx.commits.commit_now(&consumer);
    // The handle only upgrades its weak reference for a moment (a lag or
    // commit request): wait for those to end so that the
    // last reference stays on this thread.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Arc::strong_count(&consumer) > 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    // Dropping the last reference closes the consumer: librdkafka revokes
    // the assignment through this thread's rebalance callback (the
    // dispatcher is told without being waited for, stored positions are
    // committed synchronously), leaves the group and destroys the client.
    // Records polled meanwhile are dropped unstored: the group reads them
    // again.
    drop(consumer);
    tracing::debug!("kafka consumer closed");
    if let Some(reply) = reply {
        let _ = reply.send(());
    }
}

/// Polls and serves commands; returns the close request's reply channel.
fn serve(
    consumer: &Arc<BaseConsumer<RebalanceContext>>,
    commands: Receiver<Command>,
    group: &str,
) -> Option<oneshot::Sender<()>> {
    let consumer = &**consumer;
    let ctx = consumer.context().clone();
    let mut names = TopicNames::default();
    let mut subscribed: BTreeSet<String> = BTreeSet::new();
    let mut pending: Option<PendingSubscribe> = None;
    let mut last_poll_error: Option<(Instant, String)> = None;
    loop {
        loop {
            match commands.try_recv() {
                Ok(Command::Subscribe {
                    topics,
                    wait,
                    reply,
                }) => {
                    if let Some(p) = pending.take() {
                        let _ = p.reply.send(Ok(()));
                    }
                    pending = subscribe(consumer, &mut subscribed, topics, wait, reply);
                }
                Ok(Command::Close { reply }) => {
                    if let Some(p) = pending.take() {
                        let _ = p.reply.send(Err(Error::Closed));
                    }
                    return reply;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return None,
            }
        }
        ctx.flow.release(consumer, |r| {
            ctx.push(r);
        });
        if let Some(denied) = poll_batch(consumer, &ctx, &mut names, &mut last_poll_error) {
            let why = denied.describe(group, &subscribed);
            ctx.access.record(Instant::now(), why.clone());
            // A refused group can apply no change; a refused topic on a
            // first subscription is one of the topics being added.
            let fails_pending = pending
                .as_ref()
                .is_some_and(|p| denied == Denied::Group || p.previous.is_empty());
            if fails_pending {
                if let Some(p) = pending.take() {
                    withdraw(consumer, &ctx, &mut subscribed, p, why);
                }
            }
        }
        ctx.flush();
        ctx.flow.wait(consumer);
        if let Some(p) = pending.take() {
            pending = settle(consumer, &ctx, p);
        }
    }
}

/// Polls once (waiting up to [`POLL_WAIT`]), then takes what else is ready
/// without waiting, up to [`MAX_BATCH`] records. Returns the refusal when
/// the broker's ACLs refused the consumer.
fn poll_batch(
    consumer: &BaseConsumer<RebalanceContext>,
    ctx: &RebalanceContext,
    names: &mut TopicNames,
    last_error: &mut Option<(Instant, String)>,
) -> Option<Denied> {
    let mut wait = POLL_WAIT;
    loop {
        match consumer.poll(wait) {
            None => return None,
            Some(Ok(m)) => {
                let record = mapping::record(&m, names);
                // Finished by the partition's previous owner (its commit
                // metadata says so): not handed out again.
                if !ctx.commits.skip(&record.partition, record.offset) {
                    match ctx.flow.admit(record) {
                        Some(record) => {
                            if ctx.push(record) >= MAX_BATCH {
                                return None;
                            }
                        }
                        // Its partition is paused: stop and wait for the resume.
                        None => return None,
                    }
                }
            }
            Some(Err(e)) => {
                log_poll_error(&e, last_error);
                return Denied::from_code(e.rdkafka_error_code());
            }
        }
        wait = Duration::ZERO;
    }
}

/// Gives up a subscription change the broker refused: restores the
/// previous subscription and fails the change with `why`. Nothing of the
/// added topics was read, so nothing was acknowledged.
fn withdraw(
    consumer: &BaseConsumer<RebalanceContext>,
    ctx: &RebalanceContext,
    subscribed: &mut BTreeSet<String>,
    p: PendingSubscribe,
    why: String,
) {
    let restored = if p.previous.is_empty() {
        consumer.unsubscribe();
        Ok(())
    } else {
        let list: Vec<&str> = p.previous.iter().map(String::as_str).collect();
        consumer.subscribe(&list)
    };
    if let Err(e) = restored {
        tracing::warn!(error = %e, "cannot restore the previous subscription");
    }
    *subscribed = p.previous.clone();
    // The refusal was about the withdrawn change; one that still holds for
    // the rest is recorded again at its next occurrence.
    ctx.access.clear();
    let added: Vec<&str> = p
        .topics
        .difference(&p.previous)
        .map(String::as_str)
        .collect();
    let _ = p.reply.send(Err(Error::Subscribe {
        topic: added.join(","),
        reason: why,
    }));
}

/// Logs consumer errors (unknown topic, broker down), each distinct one at
/// most every 30 seconds.
fn log_poll_error(e: &KafkaError, last: &mut Option<(Instant, String)>) {
    let text = e.to_string();
    let repeat = last
        .as_ref()
        .is_some_and(|(at, t)| *t == text && at.elapsed() < Duration::from_secs(30));
    if !repeat {
        tracing::warn!(error = %text, "kafka consumer error");
        *last = Some((Instant::now(), text));
    }
}

fn subscribe(
    consumer: &BaseConsumer<RebalanceContext>,
    subscribed: &mut BTreeSet<String>,
    topics: Vec<String>,
    wait: Duration,
    reply: oneshot::Sender<Result<()>>,
) -> Option<PendingSubscribe> {
    let wanted: BTreeSet<String> = topics.into_iter().collect();
    if wanted == *subscribed {
        let _ = reply.send(Ok(()));
        return None;
    }
    let added = wanted.difference(subscribed).next().is_some();
    let result = if wanted.is_empty() {
        consumer.unsubscribe();
        Ok(())
    } else {
        let list: Vec<&str> = wanted.iter().map(String::as_str).collect();
        consumer.subscribe(&list)
    };
    if let Err(e) = result {
        let topic = wanted.iter().cloned().collect::<Vec<_>>().join(",");
        let _ = reply.send(Err(Error::Subscribe {
            topic,
            reason: format!("the Kafka consumer refused the subscription: {e}"),
        }));
        return None;
    }
    tracing::debug!(topics = ?wanted, "kafka subscription changed");
    let previous = std::mem::replace(subscribed, wanted.clone());
    let ctx = consumer.context();
    Some(PendingSubscribe {
        topics: wanted,
        previous,
        assign_round: added.then(|| ctx.assign_rounds()),
        deadline: Instant::now() + wait,
        reply,
    })
}

/// Answers a subscription change once the group applied it: a later
/// assignment round when topics were added, and no partition left of a
/// removed topic. Past the deadline it answers anyway (the subscription is
/// in place; the group assigns when it can).
fn settle(
    consumer: &BaseConsumer<RebalanceContext>,
    ctx: &RebalanceContext,
    p: PendingSubscribe,
) -> Option<PendingSubscribe> {
    let assigned = p.assign_round.is_none_or(|r| ctx.assign_rounds() > r);
    let released = consumer
        .assignment()
        .map(|a| a.elements().iter().all(|e| p.topics.contains(e.topic())))
        .unwrap_or(true);
    if assigned && released {
        let _ = p.reply.send(Ok(()));
        return None;
    }
    if Instant::now() >= p.deadline {
        tracing::warn!(
            topics = ?p.topics,
            "the group has not applied the subscription change yet; continuing, partitions follow when assigned"
        );
        let _ = p.reply.send(Ok(()));
        return None;
    }
    Some(p)
}
