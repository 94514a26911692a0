//! Inspecting and replaying dead letters.
//!
//! Both read `<topic><dead_letter.suffix>` with the consumer group
//! `<group>.dlq-replay`, so the dead letters "still tracked" are the ones that
//! group has not acknowledged: a listing acknowledges nothing; a replay
//! acknowledges what it put back and other groups' dead letters it passed
//! over, and leaves what it did not take (outside its filter, refused) for a
//! later replay. On Kafka the group's position cannot skip a record, so the
//! records replayed after the first one left behind are read (and, if
//! taken, replayed) again by the next replay: at-least-once, like every
//! delivery. On NATS each record is acknowledged on its own.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::dead_letter_filter::{replay_message, replays, Decision};
use super::{EventBus, ListOptions, ReplayOptions};
use crate::backend::{Consumer, ConsumerEvent, Record, TopicPartition};
use crate::dispatch::worker::dlq_headers;
use crate::dispatch::EVENT_CHANNEL;
use crate::error::{Error, Result};
use crate::message::Message;

/// Header set on a record put back by a replay: how many times it was replayed.
pub const REPLAYED_HEADER: &str = "x-dlq-replayed";

/// Header on a replayed record: the message id it had when it failed. The
/// replay gets a fresh id, since brokers that de-duplicate by id (JetStream's
/// `Nats-Msg-Id`) would otherwise drop it as a duplicate of the original.
pub const REPLAYED_FROM_ID_HEADER: &str = "x-dlq-replayed-from-id";

/// A dead-lettered record with its provenance.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DeadLetter {
    /// Partition of the dead-letter topic.
    pub partition: i32,
    /// Offset in the dead-letter topic.
    pub offset: i64,
    /// Topic the record failed on.
    pub original_topic: Option<String>,
    /// The last error message.
    pub error: Option<String>,
    /// The last error kind.
    pub error_kind: Option<String>,
    /// Attempts made.
    pub attempts: Option<u32>,
    /// The consumer group that dead-lettered it.
    pub group: Option<String>,
    /// Times it was replayed before it failed again (`x-dlq-replayed`).
    pub replays: u32,
    /// A pointer record: written without payload because the broker
    /// refused the full dead letter (see [`crate::dispatch::dead_letter`]).
    pub pointer: bool,
    /// The record as dead-lettered (original key, payload and headers plus
    /// the `x-dlq-*` headers).
    pub message: Message,
}

impl DeadLetter {
    fn new(partition: i32, offset: i64, message: Message) -> Self {
        let h = &message.headers;
        let text = |name| h.get_str(name).map(str::to_string);
        DeadLetter {
            partition,
            offset,
            original_topic: text(dlq_headers::ORIGINAL_TOPIC),
            error: text(dlq_headers::ERROR),
            error_kind: text(dlq_headers::ERROR_KIND),
            attempts: h
                .get_str(dlq_headers::ATTEMPTS)
                .and_then(|a| a.parse().ok()),
            group: text(dlq_headers::CONSUMER_GROUP),
            replays: replays(h),
            pointer: h.get_str(dlq_headers::POINTER) == Some("true"),
            message,
        }
    }
}

/// A dead letter a replay did not put back, and why. It stays tracked.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RefusedDeadLetter {
    /// The dead letter.
    pub dead_letter: DeadLetter,
    /// Why it was not replayed.
    pub reason: String,
}

/// What a replay did (or, on a dry run, would do).
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ReplayReport {
    /// Records published back to their original topic (0 on a dry run).
    pub replayed: usize,
    /// Whether this was a dry run: nothing published or acknowledged.
    pub dry_run: bool,
    /// On a dry run, the records that would be replayed.
    pub would_replay: Vec<DeadLetter>,
    /// Records in scope that were not replayed (target not allowed or
    /// invalid, replayed too often, pointer records, a publish the broker
    /// refused); they stay tracked.
    pub refused: Vec<RefusedDeadLetter>,
    /// Records of the group outside the key / event id / time filter; they
    /// stay tracked.
    pub not_matching: usize,
    /// Records of other groups, passed over (acknowledged, except on a dry
    /// run): each group replays its own.
    pub other_groups: usize,
}

/// Reads a dead-letter topic in the replay group until no record arrived for
/// `idle` after the topic was assigned, or until the deadline.
struct DeadLetterReader {
    consumer: Arc<dyn Consumer>,
    events: mpsc::Receiver<ConsumerEvent>,
    assigned: bool,
    idle: Duration,
    deadline: Instant,
    /// Partitions where a record was left: nothing after it may be stored.
    blocked: HashMap<TopicPartition, ()>,
}

impl DeadLetterReader {
    async fn open(bus: &EventBus, dlq: &str, idle: Duration, timeout: Duration) -> Result<Self> {
        let (tx, events) = mpsc::channel(EVENT_CHANNEL);
        let consumer = bus.inner.backend.consumer(&bus.replay_group(), tx).await?;
        consumer.subscribe(&[dlq.to_string()]).await?;
        Ok(DeadLetterReader {
            consumer,
            events,
            assigned: false,
            idle,
            deadline: Instant::now() + timeout,
            blocked: HashMap::new(),
        })
    }

    fn timed_out(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// The next records, in offset order per partition; `None` when done.
    async fn next(&mut self) -> Option<Vec<Record>> {
        loop {
            let left = self.deadline.saturating_duration_since(Instant::now());
            let wait = if self.assigned {
                self.idle.min(left)
            } else {
                left
            };
            match tokio::time::timeout(wait, self.events.recv()).await {
                Ok(Some(ConsumerEvent::Assigned(_))) => self.assigned = true,
                Ok(Some(ConsumerEvent::Records(records))) => return Some(records),
                // Positions are stored as records are done with.
                Ok(Some(ConsumerEvent::Revoked {
                    partitions, done, ..
                })) => {
                    for p in &partitions {
                        self.blocked.remove(p);
                    }
                    let _ = done.send(());
                }
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// `r` is done with: acknowledged and, while nothing before it in its
    /// partition was left, its position stored.
    fn acknowledge(&mut self, r: &mut Record) {
        if let Some(ack) = r.ack.take() {
            ack.ack();
        }
        if !self.blocked.contains_key(&r.partition) {
            self.consumer.store(&r.partition, r.offset + 1);
        }
    }

    /// `r` stays tracked for a later replay.
    fn leave(&mut self, r: &Record) {
        self.blocked.insert(r.partition.clone(), ());
    }

    /// Commits what was stored and leaves the group; false when the topic
    /// was never assigned.
    async fn close(self, commit: bool) -> Result<bool> {
        if commit {
            self.consumer.commit().await?;
        }
        self.consumer.close().await?;
        Ok(self.assigned)
    }
}

impl EventBus {
    fn dead_letter_topic(&self, topic: &str) -> String {
        format!("{topic}{}", self.inner.config.dead_letter.suffix)
    }

    fn replay_group(&self) -> String {
        format!("{}.dlq-replay", self.inner.config.group)
    }

    /// Lists dead letters of `topic` that `options` take (up to
    /// [`ListOptions::max`]) and no replay of this bus's group acknowledged,
    /// without acknowledging anything. It stops when no record arrived for
    /// [`ListOptions::idle`] after the dead-letter topic was assigned, or
    /// after [`ListOptions::timeout`].
    ///
    /// # Errors
    /// [`Error::Closed`] after shutdown; a backend error when the dead-letter
    /// topic cannot be read; [`Error::Timeout`] when it was never assigned.
    ///
    /// # Cancel safety
    /// Not cancel safe: a dropped call may leave its reader in the group until
    /// the backend notices.
    pub async fn list_dead_letters(
        &self,
        topic: &str,
        options: &ListOptions,
    ) -> Result<Vec<DeadLetter>> {
        let ListOptions {
            filter,
            max,
            idle,
            timeout,
        } = options;
        let (max, idle, timeout) = (*max, *idle, *timeout);
        self.ensure_not_shutting_down()?;
        let group = &self.inner.config.group;
        let mut reader =
            DeadLetterReader::open(self, &self.dead_letter_topic(topic), idle, timeout).await?;
        let mut out = Vec::new();
        'read: while let Some(records) = reader.next().await {
            for r in records {
                if out.len() >= max {
                    break 'read;
                }
                if filter.in_group(group, &r.message) && filter.matches(&r.message) {
                    let message = Arc::unwrap_or_clone(r.message);
                    out.push(DeadLetter::new(r.partition.partition, r.offset, message));
                }
            }
        }
        // Nothing was stored, so nothing is committed.
        if !reader.close(false).await? {
            return Err(Error::Timeout {
                operation: "listing dead letters (topic never assigned)",
                after: timeout,
            });
        }
        Ok(out)
    }

    /// Publishes the dead letters of `topic` that `options` take back to
    /// their original topic (validated, and one `options` allows), each
    /// without its `x-dlq-*` provenance but with [`REPLAYED_HEADER`] counting
    /// replays and [`REPLAYED_FROM_ID_HEADER`], and acknowledges them in the
    /// replay group. Records are replayed one at a time in the dead-letter
    /// topic's order, so per-key order holds. With
    /// [`ReplayOptions::dry_run`] nothing is published or acknowledged and
    /// the report lists what would be. It ends when no record arrived for
    /// [`ReplayOptions::idle`].
    ///
    /// # Errors
    /// [`Error::Closed`] after shutdown; a backend error when the topic cannot
    /// be read; [`Error::Timeout`] when it was never assigned, or when a
    /// record could not be republished before [`ReplayOptions::timeout`]
    /// (what was replayed stays replayed and acknowledged).
    ///
    /// # Cancel safety
    /// Not cancel safe: a dropped call stops mid-way; a record put back but
    /// not yet acknowledged is replayed again by the next call.
    pub async fn replay_dead_letters(
        &self,
        topic: &str,
        options: &ReplayOptions,
    ) -> Result<ReplayReport> {
        self.ensure_not_shutting_down()?;
        let group = self.inner.config.group.clone();
        let mut reader = DeadLetterReader::open(
            self,
            &self.dead_letter_topic(topic),
            options.idle,
            options.timeout,
        )
        .await?;
        let mut report = ReplayReport {
            dry_run: options.dry_run,
            ..ReplayReport::default()
        };
        let mut stuck = None;
        'read: while let Some(records) = reader.next().await {
            for mut r in records {
                let decision = options.decide(&group, topic, &r.message);
                let target = match decision {
                    Decision::OtherGroup => {
                        report.other_groups += 1;
                        if !options.dry_run {
                            reader.acknowledge(&mut r);
                        }
                        continue;
                    }
                    Decision::NotMatching => {
                        report.not_matching += 1;
                        reader.leave(&r);
                        continue;
                    }
                    Decision::Refused(reason) => {
                        reader.leave(&r);
                        report.refused.push(refused(&r, reason));
                        continue;
                    }
                    Decision::Replay(target) => target,
                };
                if options.dry_run {
                    let message = Message::clone(&r.message);
                    report.would_replay.push(DeadLetter::new(
                        r.partition.partition,
                        r.offset,
                        message,
                    ));
                    continue;
                }
                match self.republish(&target, &r.message, &reader).await {
                    Ok(()) => {
                        report.replayed += 1;
                        reader.acknowledge(&mut r);
                    }
                    Err(e) if e.is_retryable() => {
                        // Out of time: stop here, the record stays tracked.
                        reader.leave(&r);
                        stuck = Some(e);
                        break 'read;
                    }
                    Err(e) => {
                        reader.leave(&r);
                        report
                            .refused
                            .push(refused(&r, format!("publishing to `{target}` failed: {e}")));
                    }
                }
            }
        }
        if !reader.close(!options.dry_run).await? {
            return Err(Error::Timeout {
                operation: "replaying dead letters (topic never assigned)",
                after: options.timeout,
            });
        }
        tracing::info!(
            topic,
            replayed = report.replayed,
            refused = report.refused.len(),
            not_matching = report.not_matching,
            other_groups = report.other_groups,
            dry_run = report.dry_run,
            "dead letters replayed"
        );
        match stuck {
            Some(e) => Err(Error::Timeout {
                operation: match e {
                    Error::Timeout { operation, .. } => operation,
                    _ => "replaying dead letters (republishing kept failing)",
                },
                after: options.timeout,
            }),
            None => Ok(report),
        }
    }

    /// Publishes the replay of `m` to `target`, retrying retryable errors
    /// until the reader's deadline.
    async fn republish(&self, target: &str, m: &Message, reader: &DeadLetterReader) -> Result<()> {
        let message = replay_message(m.clone());
        let mut delay = self.inner.config.retry.initial_backoff;
        loop {
            match self.inner.producer.send(target, message.clone()).await {
                Ok(_) => return Ok(()),
                Err(e) if e.is_retryable() && !reader.timed_out() => {
                    crate::log_limit::warn_limited!(topic = target, error = %e, "replaying a dead letter failed; retrying");
                }
                Err(e) => return Err(e),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(self.inner.config.retry.max_backoff);
        }
    }
}

fn refused(r: &Record, reason: String) -> RefusedDeadLetter {
    RefusedDeadLetter {
        dead_letter: DeadLetter::new(r.partition.partition, r.offset, Message::clone(&r.message)),
        reason,
    }
}
