//! The pull loop of one topic: asks its durable consumer for records while
//! the dispatcher has room, hands them over, and recovers on its own.
//!
//! Flow control is by credit: a pull request asks for `batch` records and
//! the next one is sent only when fewer than half a batch are still owed,
//! the topic is not paused, and the records the bus holds of the topic plus
//! those owed stay within `limit` (`dispatch.max_buffered_per_partition`
//! plus a batch) — a bound that holds however late a pause takes effect. A
//! long pause costs nothing: no request is outstanding, so the server
//! delivers nothing. All requests of a session share one inbox, so records
//! arrive in the order the server sent them.
//!
//! A session ends (and a new one starts, with a fresh inbox and a checked or
//! recreated consumer) when the connection was re-established (the server
//! forgets pull requests of a lost connection), when two idle heartbeats are
//! missed, and when the server reports the consumer deleted or unreachable.
//! Nothing here holds a lock: the pull loop owns its state.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use async_nats::jetstream::consumer::pull::BatchConfig;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::Context;
use async_nats::{Client, StatusCode};
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::acker::{Acker, Held};
use super::convert;
use super::durable::{self, DurableSpec};
use super::streams::StreamRegistry;
use crate::backend::{ConsumerEvent, Record, TopicPartition};

/// Shared by the pull loops of one consumer.
#[derive(Debug)]
pub(crate) struct PullContext {
    pub(crate) js: Context,
    pub(crate) client: Client,
    pub(crate) streams: Arc<StreamRegistry>,
    pub(crate) events: mpsc::Sender<ConsumerEvent>,
    pub(crate) acker: Acker,
    /// Increases on every (re)connect.
    pub(crate) connects: watch::Receiver<u64>,
    pub(crate) batch: usize,
    /// Records of a topic held by the bus plus records asked for: no pull
    /// request is sent that could take the topic past it.
    pub(crate) limit: usize,
    pub(crate) expires: Duration,
    pub(crate) heartbeat: Duration,
}

/// The pull loop of one topic.
pub(crate) struct Puller {
    pub(crate) partition: TopicPartition,
    pub(crate) spec: DurableSpec,
    /// Highest stream sequence the group acknowledged everything up to, as
    /// last seen in the consumer's info.
    pub(crate) ack_floor: Arc<AtomicU64>,
    pub(crate) paused: watch::Receiver<bool>,
    pub(crate) stop: watch::Receiver<bool>,
    /// Records of the topic the bus holds.
    pub(crate) held: Arc<Held>,
}

enum End {
    Stop,
    Restart(String),
}

const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a stopping pull loop waits for its open pull requests to end.
const STOP_GRACE: Duration = Duration::from_secs(1);
/// A stopping pull loop that receives nothing for this long stops waiting.
const STOP_QUIET: Duration = Duration::from_millis(100);

type Inbound = futures::stream::ReadyChunks<async_nats::Subscriber>;

impl Puller {
    /// Pulls until stopped (or until the bus is gone).
    pub(crate) async fn run(mut self, ctx: Arc<PullContext>, mut consumer: PullConsumer) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let started = Instant::now();
            let why = match self.session(&ctx, &consumer).await {
                End::Stop => return,
                End::Restart(why) => why,
            };
            if started.elapsed() > Duration::from_secs(10) {
                backoff = Duration::from_millis(100);
            }
            tracing::warn!(topic = %self.partition.topic, reason = %why, "pulling again");
            loop {
                if self.pause_for(backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                match self.recover(&ctx).await {
                    Ok(c) => {
                        consumer = c;
                        break;
                    }
                    Err(e) => tracing::warn!(
                        topic = %self.partition.topic, error = %e,
                        "cannot reach the durable consumer yet; retrying"
                    ),
                }
            }
        }
    }

    /// Sleeps, or returns true when stopped meanwhile.
    async fn pause_for(&mut self, delay: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(delay) => *self.stop.borrow(),
            _ = self.stop.changed() => true,
        }
    }

    /// Finds the stream and the durable consumer again, creating what the
    /// topic strategy allows.
    async fn recover(&mut self, ctx: &PullContext) -> crate::Result<PullConsumer> {
        let topic = &self.partition.topic;
        self.spec.stream = ctx.streams.ensure(topic).await?;
        let floor = self.ack_floor.load(Ordering::Relaxed);
        match durable::ensure(&ctx.js, &self.spec, floor).await {
            Ok(c) => {
                self.ack_floor
                    .fetch_max(c.cached_info().ack_floor.stream_sequence, Ordering::Relaxed);
                Ok(c)
            }
            Err(e) => {
                // The stream itself may be gone: look it up again next time.
                ctx.streams.forget(topic);
                Err(e)
            }
        }
    }

    async fn session(&mut self, ctx: &PullContext, consumer: &PullConsumer) -> End {
        let inbox = ctx.client.new_inbox();
        let subscriber = match ctx.client.subscribe(inbox.clone()).await {
            Ok(s) => s,
            Err(e) => return End::Restart(format!("cannot subscribe to a pull inbox: {e}")),
        };
        let mut inbound = subscriber.ready_chunks(ctx.batch.max(16));
        let mut connects = ctx.connects.clone();
        connects.borrow_and_update();
        let silence = ctx.heartbeat * 2 + Duration::from_millis(500);
        let mut owed: usize = 0;
        let mut deadline = Instant::now() + silence;
        loop {
            let room = ctx.limit.saturating_sub(self.held.count() + owed);
            if !*self.paused.borrow() && owed <= ctx.batch / 2 && room >= ctx.batch {
                let request = BatchConfig {
                    batch: ctx.batch,
                    expires: Some(ctx.expires),
                    idle_heartbeat: ctx.heartbeat,
                    ..Default::default()
                };
                if let Err(e) = consumer.request_batch(request, inbox.clone().into()).await {
                    return End::Restart(format!("pull request not sent: {e}"));
                }
                if owed == 0 {
                    deadline = Instant::now() + silence;
                }
                owed += ctx.batch;
            }
            tokio::select! {
                biased;
                _ = self.stop.changed() => return self.drain(ctx, &mut inbound, owed).await,
                r = connects.changed() => {
                    if r.is_err() {
                        return End::Stop;
                    }
                    return End::Restart("reconnected to NATS".into());
                }
                r = self.paused.changed() => {
                    if r.is_err() {
                        return self.drain(ctx, &mut inbound, owed).await;
                    }
                }
                _ = self.held.freed.notified(), if room < ctx.batch => {}
                chunk = inbound.next() => {
                    let Some(chunk) = chunk else {
                        return End::Restart("pull inbox closed".into());
                    };
                    deadline = Instant::now() + silence;
                    let mut records = Vec::with_capacity(chunk.len());
                    let end = self.take(ctx, chunk, &mut owed, &mut records);
                    if !records.is_empty() {
                        tokio::select! {
                            biased;
                            // Records not handed over are let go (NAKed
                            // with the topic's others once it is revoked).
                            _ = self.stop.changed() => return self.drain(ctx, &mut inbound, owed).await,
                            sent = ctx.events.send(ConsumerEvent::Records(records)) => {
                                if sent.is_err() {
                                    return self.drain(ctx, &mut inbound, owed).await;
                                }
                            }
                        }
                    }
                    if let Some(why) = end {
                        return End::Restart(why);
                    }
                }
                _ = tokio::time::sleep_until(deadline), if owed > 0 => {
                    return End::Restart("missed idle heartbeats".into());
                }
            }
        }
    }

    /// Takes the messages of one read from the pull inbox: records into
    /// `records`, status messages into the count of records still `owed`.
    /// Returns why the session must restart, if it must.
    fn take(
        &self,
        ctx: &PullContext,
        chunk: Vec<async_nats::Message>,
        owed: &mut usize,
        records: &mut Vec<Record>,
    ) -> Option<String> {
        let mut end = None;
        for m in chunk {
            match m.status {
                None | Some(StatusCode::OK) => {
                    *owed = owed.saturating_sub(1);
                    if let Some(r) = self.record(ctx, m) {
                        records.push(r);
                    }
                }
                Some(StatusCode::IDLE_HEARTBEAT) => {}
                Some(status) => {
                    if let Some(why) = request_ended(status, &m, owed, ctx.batch) {
                        end = Some(why);
                    }
                }
            }
        }
        end
    }

    /// Stopping: no new pull requests; what the open requests still deliver
    /// is taken and let go (to be `NAK`ed with the topic's other unfinished
    /// records) until every request ended, nothing came for [`STOP_QUIET`]
    /// (an idle topic: its requests would only expire), or [`STOP_GRACE`]
    /// passed. An inbox dropped while the server still sends to it loses
    /// those records until `ack_wait` redelivers them, possibly behind later
    /// records of their keys.
    async fn drain(&self, ctx: &PullContext, inbound: &mut Inbound, mut owed: usize) -> End {
        let give_up = Instant::now() + STOP_GRACE;
        while owed > 0 {
            let quiet = (Instant::now() + STOP_QUIET).min(give_up);
            tokio::select! {
                chunk = inbound.next() => {
                    let Some(chunk) = chunk else {
                        break;
                    };
                    let mut let_go = Vec::new();
                    if self.take(ctx, chunk, &mut owed, &mut let_go).is_some() {
                        break;
                    }
                }
                _ = tokio::time::sleep_until(quiet) => break,
            }
        }
        End::Stop
    }

    /// A delivered JetStream message as a record, tracked for acknowledgement.
    fn record(&self, ctx: &PullContext, m: async_nats::Message) -> Option<Record> {
        let Some(reply) = m.reply else {
            tracing::warn!(topic = %self.partition.topic, "message without an ack subject on a pull inbox; ignored");
            return None;
        };
        let Some(info) = convert::ack_info(reply.as_str()) else {
            tracing::warn!(topic = %self.partition.topic, reply = %reply, "unexpected ack subject; message ignored");
            return None;
        };
        let seq = info.stream_sequence;
        if info.delivered > 1 {
            tracing::debug!(topic = %self.partition.topic, seq, delivered = info.delivered, "redelivered record");
        }
        let published = UNIX_EPOCH + Duration::from_nanos(info.published_nanos);
        let message = convert::message(
            m.payload,
            m.headers.as_ref(),
            || format!("{}:{seq}", info.stream),
            published,
        );
        let ack = ctx.acker.track(reply, seq, self.held.clone());
        Some(Record {
            partition: self.partition.clone(),
            offset: i64::try_from(seq).unwrap_or(i64::MAX),
            message,
            ack: Some(ack),
        })
    }
}

/// Accounts for a status message on the pull inbox: lowers the records still
/// owed when a request ended, and says why the session must restart.
fn request_ended(
    status: StatusCode,
    m: &async_nats::Message,
    owed: &mut usize,
    batch: usize,
) -> Option<String> {
    let description = m.description.as_deref().unwrap_or("");
    let unfilled = m
        .headers
        .as_ref()
        .and_then(|h| h.get("Nats-Pending-Messages"))
        .and_then(|v| v.as_str().parse::<usize>().ok());
    match (status, unfilled) {
        (StatusCode::NO_RESPONDERS, _) => {
            Some("no responders: the consumer or JetStream is unavailable".into())
        }
        (StatusCode::REQUEST_TERMINATED, _)
            if description.eq_ignore_ascii_case("Consumer Deleted") =>
        {
            Some("the consumer was deleted".into())
        }
        (StatusCode::REQUEST_TERMINATED, _)
            if description.starts_with("Consumer is push based") =>
        {
            Some("the consumer is a push consumer".into())
        }
        (StatusCode::REQUEST_TERMINATED, None) if description.starts_with("Exceeded") => {
            *owed = owed.saturating_sub(batch);
            Some(format!("pull request refused: {description}"))
        }
        (_, Some(n)) => {
            // Expired (408), or ended early (409 with what was left).
            *owed = owed.saturating_sub(n);
            None
        }
        (_, None) => {
            // Every pending request was dropped (leadership change, ...):
            // ask again from scratch.
            tracing::debug!(status = %status, description, "pull requests ended");
            *owed = 0;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use async_nats::HeaderMap;

    use super::*;

    fn status(code: u16, description: &str, pending: Option<usize>) -> async_nats::Message {
        let headers = pending.map(|n| {
            let mut h = HeaderMap::new();
            h.insert("Nats-Pending-Messages", n.to_string().as_str());
            h
        });
        async_nats::Message {
            subject: "_INBOX.x".into(),
            reply: None,
            payload: Default::default(),
            headers,
            status: Some(StatusCode::from_u16(code).unwrap()),
            description: Some(description.to_string()),
            length: 0,
        }
    }

    fn ended(
        code: u16,
        description: &str,
        pending: Option<usize>,
        owed: usize,
    ) -> (Option<String>, usize) {
        let mut owed = owed;
        let why = request_ended(
            StatusCode::from_u16(code).unwrap(),
            &status(code, description, pending),
            &mut owed,
            256,
        );
        (why, owed)
    }

    #[test]
    fn expired_requests_give_back_what_they_did_not_deliver() {
        assert_eq!(ended(408, "Request Timeout", Some(100), 384), (None, 284));
        assert_eq!(ended(409, "Batch Completed", Some(10), 5), (None, 0));
        assert_eq!(ended(408, "Interest Expired", Some(256), 256), (None, 0));
    }

    #[test]
    fn requests_dropped_without_a_count_reset_the_credit() {
        assert_eq!(ended(409, "Leadership Change", None, 300), (None, 0));
        assert_eq!(ended(404, "No Messages", None, 12), (None, 0));
    }

    #[test]
    fn a_lost_consumer_restarts_the_session() {
        assert!(ended(409, "Consumer Deleted", None, 100).0.is_some());
        assert!(ended(503, "", None, 100).0.is_some());
        assert!(ended(409, "Consumer is push based", None, 100).0.is_some());
        let (why, owed) = ended(409, "Exceeded MaxWaiting", None, 384);
        assert!(why.unwrap().contains("MaxWaiting"));
        assert_eq!(owed, 128);
    }
}
