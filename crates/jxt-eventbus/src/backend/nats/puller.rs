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
//!
//! With `sharing: pinned` every request names the consumer's priority group
//! and, once records arrived with a pin id, carries it. While pinned, a
//! request goes out at least every `pinned_ttl / 4` — a pin-keeping request
//! that takes no record when the topic is paused, full or idle — so a live
//! bus never loses its topic to a standby. A `423` says the pin moved to
//! another bus. In pinned mode a `423`, a lost connection and a failed
//! session are losses of the topic, carried out as `ownership` says.
//!
//! A bus without the pin stands by without a pull request waiting on the
//! server: it reads the consumer's pin every [`STANDBY_POLL`] and, once no
//! bus holds it (and balancing does not leave it to a bus with fewer
//! topics, see `balance`), sends one short request that takes the pin with
//! the next record. Waiting requests would reorder redeliveries: while requests wait
//! and none may be served (they lack the pin), the server moves each
//! redelivery it tries to the back of its queue, so the records a bus hands
//! over would reach the next one out of order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::Context;
use async_nats::{Client, StatusCode};
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::acker::{Acker, Held, Tracking};
use super::balance::Balance;
use super::connect::Link;
use super::convert;
use super::durable::{self, DurableSpec};
use super::ownership::{self, Ownership};
use super::pin::Pin;
use super::pull_request::PullRequest;
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
    /// The connection's state: lost, re-established.
    pub(crate) link: watch::Receiver<Link>,
    /// The consumers' `ack_wait`.
    pub(crate) ack_wait: Duration,
    pub(crate) batch: usize,
    /// Records of a topic held by the bus plus records asked for: no pull
    /// request is sent that could take the topic past it.
    pub(crate) limit: usize,
    pub(crate) expires: Duration,
    pub(crate) heartbeat: Duration,
    /// JetStream API prefix (`$JS.API`, or with the domain).
    pub(crate) api_prefix: String,
    /// `sharing: pinned`: the pin lifetime. `None` shares record by record.
    pub(crate) pinned_ttl: Option<Duration>,
    /// Spreading the group's topics over its buses (`sharing: pinned`).
    pub(crate) balance: Arc<Balance>,
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
    /// The pin this bus holds on the topic (`sharing: pinned`).
    pub(crate) pin: Arc<Pin>,
    /// Before this, a free pin is left to the other buses of the group: this
    /// bus just handed the topic over (see `balance`).
    pub(crate) hold_off: Option<Instant>,
    /// Whether records may be handed over (`sharing: pinned`).
    pub(crate) ownership: Ownership,
}

enum End {
    Stop,
    Restart(String),
    /// A request for the pin went unanswered: stand by again.
    Standby,
    /// The server answered with a pin-id mismatch: another bus holds the
    /// topic now.
    PinLost,
}

const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often a standby bus reads whether the topic's pin is free.
const STANDBY_POLL: Duration = Duration::from_secs(1);
/// Lifetime of a standby's request for the pin.
const PROBE_EXPIRES: Duration = Duration::from_secs(1);
/// How long a stopping pull loop waits for its open pull requests to end.
const STOP_GRACE: Duration = Duration::from_secs(1);
/// A stopping pull loop that receives nothing for this long stops waiting.
const STOP_QUIET: Duration = Duration::from_millis(100);
/// How often a bus that lost a topic asks whether its deliveries are all
/// acknowledged, while it waits for them to be due again.
const SETTLE_POLL: Duration = Duration::from_millis(500);
/// How long a bus that lost a topic waits for what it sent to reach the
/// server before it counts `ack_wait` anyway.
const ANCHOR_WAIT: Duration = Duration::from_secs(5);

type Inbound = futures::stream::ReadyChunks<async_nats::Subscriber>;

impl Puller {
    /// Pulls until stopped (or until the bus is gone).
    pub(crate) async fn run(mut self, ctx: Arc<PullContext>, mut consumer: PullConsumer) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let started = Instant::now();
            self.anchor(&ctx).await;
            let end = match self.stand_by(&ctx, &consumer).await {
                Some(end) => end,
                None => self.session(&ctx, &consumer).await,
            };
            let why = match end {
                End::Stop => return,
                End::Standby => continue,
                End::PinLost => {
                    tracing::info!(
                        topic = %self.partition.topic,
                        "another bus of the group holds the topic now; standing by"
                    );
                    self.lose(&ctx, "the pin moved to another bus").await;
                    self.pin.lost();
                    continue;
                }
                End::Restart(why) => {
                    self.lose(&ctx, &why).await;
                    why
                }
            };
            if started.elapsed() > Duration::from_secs(10) {
                backoff = Duration::from_millis(100);
            }
            // Every topic repeats this while the server is away: rate-limited.
            crate::log_limit::warn_limited!(topic = %self.partition.topic, reason = %why, "pulling again");
            loop {
                if self.pause_for(backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                // A request sent on a connection that is lost meanwhile
                // would only time out: ask again on the new one.
                let mut link = ctx.link.clone();
                if !self.connected(&mut link).await {
                    return;
                }
                let recovered = tokio::select! {
                    r = self.recover(&ctx) => r,
                    _ = link.changed() => continue,
                };
                match recovered {
                    Ok(c) => {
                        consumer = c;
                        break;
                    }
                    Err(e) => crate::log_limit::warn_limited!(
                        topic = %self.partition.topic, error = %e,
                        "cannot reach the durable consumer yet; retrying"
                    ),
                }
            }
        }
    }

    /// With `sharing: pinned`, the topic may have been lost: records held
    /// are revoked from the dispatcher (lost), and no new ones are taken
    /// until what was out with this bus is due again (see `ownership`).
    async fn lose(&mut self, ctx: &PullContext, why: &str) {
        if ctx.pinned_ttl.is_none() {
            return;
        }
        let loss = self.ownership.lost();
        if loss.revoke {
            tracing::warn!(
                topic = %self.partition.topic, reason = %why,
                "the topic may be another bus's now: records held are dropped unacknowledged \
                 and handed out again once due"
            );
        }
        ownership::revoke_lost(loss, &ctx.events, &ctx.acker, &self.held, &self.partition).await;
    }

    /// After a loss: once what this bus sent reached the server, the
    /// deliveries it had out are due again `ack_wait` later.
    async fn anchor(&mut self, ctx: &PullContext) {
        if !self.ownership.needs_anchor() {
            return;
        }
        if tokio::time::timeout(ANCHOR_WAIT, ctx.acker.flush())
            .await
            .is_err()
        {
            tracing::debug!(topic = %self.partition.topic, "acknowledgements not flushed in time");
        }
        self.ownership.anchor(Instant::now(), ctx.ack_wait);
    }

    /// Waits until the connection is up (marking what `link` has seen);
    /// false when stopped meanwhile or the connection is gone for good.
    async fn connected(&mut self, link: &mut watch::Receiver<Link>) -> bool {
        loop {
            if link.borrow_and_update().up {
                return true;
            }
            tokio::select! {
                r = link.changed() => {
                    if r.is_err() {
                        return false;
                    }
                }
                _ = self.stop.changed() => return false,
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

    /// With `sharing: pinned` and no pin: waits until no bus of the group
    /// holds the topic's pin, and then as long as balancing asks (see
    /// `balance`). `None` when the session may start.
    async fn stand_by(&mut self, ctx: &PullContext, consumer: &PullConsumer) -> Option<End> {
        if ctx.pinned_ttl.is_none() || self.pin.id().is_some() {
            return None;
        }
        let mut free_since = None;
        loop {
            let mut wait = STANDBY_POLL;
            match consumer.get_info().await {
                Ok(info) => {
                    if info.num_ack_pending == 0 {
                        self.ownership.nothing_pending();
                    }
                    let free = info
                        .priority_groups
                        .iter()
                        .all(|g| g.pinned_client_id.is_none());
                    if !free {
                        free_since = None;
                    } else {
                        let now = Instant::now();
                        let since = *free_since.get_or_insert(now);
                        let deferred = (since + ctx.balance.defer(&self.partition.topic))
                            .max(self.hold_off.unwrap_or(now))
                            .max(self.ownership.settling_until().unwrap_or(now));
                        if deferred <= now {
                            self.hold_off = None;
                            return None;
                        }
                        wait = wait.min(deferred - now);
                    }
                }
                Err(e) => return Some(End::Restart(format!("cannot read the consumer: {e}"))),
            }
            if self.pause_for(wait).await {
                return Some(End::Stop);
            }
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
        let mut link = ctx.link.clone();
        let at_start = *link.borrow_and_update();
        if !at_start.up {
            return End::Restart("not connected to NATS".into());
        }
        let silence = ctx.heartbeat * 2 + Duration::from_millis(500);
        let subject = PullRequest::subject(
            &ctx.api_prefix,
            &consumer.cached_info().stream_name,
            &consumer.cached_info().name,
        );
        // Pin renewals live two renewal periods, so at most two or three
        // wait, with heartbeats at most half as long (the server's rule):
        // without them a paused topic with nothing pending would be taken
        // for a dead session, and a failed session is a lost topic.
        let keep_every = ctx.pinned_ttl.map(|ttl| ttl / 4);
        let keep_expires = keep_every.map(|every| (every * 2).min(ctx.expires));
        let keep_heartbeat = keep_expires.map_or(ctx.heartbeat, |e| (e / 2).min(ctx.heartbeat));
        let mut owed: usize = 0;
        let mut deadline = Instant::now() + silence;
        // No request yet: a pin kept while the topic is paused or settling
        // is renewed at once.
        let mut last_request: Option<Instant> = None;
        let mut probed = false;
        let mut settle_check = Instant::now();
        loop {
            let room = ctx.limit.saturating_sub(self.held.count() + owed);
            // Shared consumers have no pin: no lock per read.
            let pin = ctx.pinned_ttl.and_then(|_| self.pin.id());
            let settling = self.ownership.settling(Instant::now());
            let may_ask =
                !*self.paused.borrow() && owed <= ctx.batch / 2 && room >= ctx.batch && !settling;
            let standby = ctx.pinned_ttl.is_some() && pin.is_none();
            if standby && probed && owed == 0 {
                // The request for the pin ended without a record.
                return End::Standby;
            }
            let request = if standby {
                // One request for the pin; it must not wait long if
                // another bus takes the pin meanwhile (see the module docs).
                (may_ask && !probed).then(|| {
                    probed = true;
                    let r =
                        PullRequest::records(ctx.batch, PROBE_EXPIRES, Duration::ZERO, true, None);
                    (r, ctx.batch)
                })
            } else if may_ask {
                Some((
                    PullRequest::records(
                        ctx.batch,
                        ctx.expires,
                        ctx.heartbeat,
                        ctx.pinned_ttl.is_some(),
                        pin.as_deref(),
                    ),
                    ctx.batch,
                ))
            } else {
                let due = |every| last_request.is_none_or(|at| at.elapsed() >= every);
                match (pin.as_deref(), keep_every, keep_expires) {
                    (Some(pin), Some(every), Some(expires)) if due(every) => {
                        Some((PullRequest::keep_pin(expires, keep_heartbeat, pin), 1))
                    }
                    _ => None,
                }
            };
            if let Some((request, asked)) = request {
                if let Err(e) = send(ctx, &subject, &inbox, &request).await {
                    return End::Restart(format!("pull request not sent: {e}"));
                }
                if owed == 0 {
                    deadline = Instant::now() + silence;
                }
                if request.max_bytes.is_none() {
                    self.ownership.asked();
                }
                owed += asked;
                last_request = Some(Instant::now());
            }
            // While pinned, wake up to renew the pin in time.
            let renew_at = match (&pin, keep_every) {
                (Some(_), Some(every)) => {
                    Some(last_request.map_or_else(Instant::now, |at| at + every))
                }
                _ => None,
            };
            // While settling, wake up to see whether it is over.
            let settle_at = settling.then(|| {
                let until = self.ownership.settling_until();
                until.map_or(settle_check, |u| u.min(settle_check))
            });
            tokio::select! {
                biased;
                _ = self.stop.changed() => return self.drain(ctx, &mut inbound, owed).await,
                r = link.changed() => {
                    if r.is_err() {
                        return End::Stop;
                    }
                    let now = *link.borrow_and_update();
                    if !now.up {
                        return End::Restart("connection to NATS lost".into());
                    }
                    if now.connects != at_start.connects {
                        return End::Restart("reconnected to NATS".into());
                    }
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
                        self.ownership.handed_over();
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
                    if let Some(end) = end {
                        return end;
                    }
                }
                _ = tokio::time::sleep_until(deadline), if owed > 0 => {
                    return End::Restart("missed idle heartbeats".into());
                }
                _ = sleep_until_some(renew_at), if renew_at.is_some() => {}
                _ = sleep_until_some(settle_at), if settle_at.is_some() => {
                    if Instant::now() >= settle_check {
                        settle_check = Instant::now() + SETTLE_POLL;
                        self.check_settled(consumer).await;
                    }
                }
            }
        }
    }

    /// Takes the messages of one read from the pull inbox: records into
    /// `records`, status messages into the count of records still `owed`.
    /// Returns how the session must end, if it must.
    fn take(
        &self,
        ctx: &PullContext,
        chunk: Vec<async_nats::Message>,
        owed: &mut usize,
        records: &mut Vec<Record>,
    ) -> Option<End> {
        let mut end = None;
        let mut tracking = ctx.acker.tracking();
        // A read that says the pin moved hands nothing over: its records may
        // already be another bus's (see `ownership`).
        let pin_lost = ctx.pinned_ttl.is_some() && says_pin_moved(&chunk);
        // Records carry the pin id: the read's last record has the newest.
        let last_record = chunk
            .iter()
            .rposition(|m| matches!(m.status, None | Some(StatusCode::OK)));
        for (i, m) in chunk.into_iter().enumerate() {
            match m.status {
                None | Some(StatusCode::OK) => {
                    *owed = owed.saturating_sub(1);
                    if pin_lost {
                        continue;
                    }
                    if ctx.pinned_ttl.is_some() && Some(i) == last_record {
                        self.note_pin(&m);
                    }
                    if let Some(r) = self.record(m, &mut tracking) {
                        records.push(r);
                    }
                }
                Some(StatusCode::IDLE_HEARTBEAT) => {}
                Some(StatusCode::PIN_ID_MISMATCH) => {
                    // Requests that carry the old id are all refused; a new
                    // session (new inbox, no credit owed) stands by once the
                    // topic's records are revoked.
                    end = Some(End::PinLost);
                }
                Some(status) => {
                    if let Some(why) = request_ended(status, &m, owed, ctx.batch) {
                        end = Some(End::Restart(why));
                    }
                }
            }
        }
        end
    }

    /// Ends settling when the consumer has no delivery pending.
    async fn check_settled(&mut self, consumer: &PullConsumer) {
        if let Ok(Ok(info)) = tokio::time::timeout(SETTLE_POLL, consumer.get_info()).await {
            if info.num_ack_pending == 0 {
                self.ownership.nothing_pending();
            }
        }
    }

    /// Records carry the pin id of the bus they are delivered to.
    fn note_pin(&self, m: &async_nats::Message) {
        let Some(id) = m.headers.as_ref().and_then(|h| h.get_last(convert::PIN_ID)) else {
            return;
        };
        if self.pin.pinned(id.as_str()) {
            tracing::info!(topic = %self.partition.topic, "pinned: this bus receives the topic for its group");
        }
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
    fn record(&self, m: async_nats::Message, tracking: &mut Tracking<'_>) -> Option<Record> {
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
        let ack = tracking.track(reply, seq, self.held.clone());
        Some(Record {
            partition: self.partition.clone(),
            offset: i64::try_from(seq).unwrap_or(i64::MAX),
            message: Arc::new(message),
            ack: Some(ack),
        })
    }
}

/// Sends one pull request on the session's inbox.
async fn send(
    ctx: &PullContext,
    subject: &str,
    inbox: &str,
    request: &PullRequest<'_>,
) -> Result<(), String> {
    let body = serde_json::to_vec(request).map_err(|e| e.to_string())?;
    ctx.client
        .publish_with_reply(subject.to_string(), inbox.to_string(), body.into())
        .await
        .map_err(|e| e.to_string())
}

/// True when a read from the pull inbox says the pin moved to another bus:
/// none of its records may be handed over.
fn says_pin_moved(chunk: &[async_nats::Message]) -> bool {
    chunk
        .iter()
        .any(|m| m.status == Some(StatusCode::PIN_ID_MISMATCH))
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
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
        (status, _) if status.as_u16() == 400 => {
            // The consumer no longer matches the requests (another bus of
            // the group changed how it is shared): check it again rather
            // than ask again at once.
            Some(format!("pull request refused: {description}"))
        }
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
    fn a_read_with_a_pin_id_mismatch_anywhere_says_the_pin_moved() {
        let record = || async_nats::Message {
            status: None,
            description: None,
            ..status(200, "", None)
        };
        let mismatch = || status(423, "Nats-Pin-Id mismatch", None);
        assert!(!says_pin_moved(&[record(), record()]));
        assert!(says_pin_moved(&[record(), record(), mismatch()]));
        assert!(says_pin_moved(&[mismatch(), record()]));
        assert!(!says_pin_moved(&[status(408, "Request Timeout", Some(1))]));
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
        assert!(
            ended(400, "Bad Request - Priority Group missing", None, 100)
                .0
                .unwrap()
                .contains("Priority Group missing")
        );
        let (why, owed) = ended(409, "Exceeded MaxWaiting", None, 384);
        assert!(why.unwrap().contains("MaxWaiting"));
        assert_eq!(owed, 128);
    }
}
