//! The bus's one JetStream consumer: a pull loop per subscribed topic over
//! the group's durable consumers, one connection, one acknowledging task.
//!
//! A topic is one "partition" (`<topic>[0]`) whose offsets are stream
//! sequences. It is assigned to this bus when its pull loop starts and
//! revoked when the topic is unsubscribed. Every bus of a group holds it at
//! once; which of them receive records is the server's choice (the pinned
//! one, or all with `sharing: shared`, see `pin`). Records are acknowledged
//! one by one, so [`Consumer::store`] has nothing to do and
//! [`Consumer::commit`] only makes sure sent acknowledgements reached the
//! server.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::consumer::{pull, DeliverPolicy, PullConsumer};
use async_nats::jetstream::Context;
use async_trait::async_trait;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::acker::Acker;
use super::balance::{self, Balance, Member};
use super::durable::{self, DurableSpec};
use super::ownership::Ownership;
use super::pin::{self, Pin};
use super::puller::{PullContext, Puller};
use super::{backend_error, naming};
use crate::backend::{Consumer, ConsumerEvent, PartitionLag, TopicPartition};
use crate::error::{Error, Result};

/// How long closing waits for a pull loop to stop before aborting it.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// Settings of the durable consumers this bus creates.
#[derive(Clone, Debug)]
pub(crate) struct DurableDefaults {
    pub(crate) ack_wait: Duration,
    pub(crate) max_ack_pending: i64,
    pub(crate) start: DeliverPolicy,
    pub(crate) request_timeout: Duration,
    /// `sharing: pinned`: the pin lifetime; `None` shares record by record.
    pub(crate) pinned_ttl: Option<Duration>,
}

#[derive(Debug)]
pub(crate) struct NatsConsumer {
    ctx: Arc<PullContext>,
    group: String,
    defaults: DurableDefaults,
    /// Serializes subscribe and close; never taken by the pull loops or the
    /// dispatcher.
    serial: tokio::sync::Mutex<()>,
    topics: Mutex<HashMap<Arc<str>, TopicHandle>>,
    closed: AtomicBool,
    /// Tells this bus apart in its group's census (see `balance`).
    bus_id: String,
    /// Stops the census and balancing tasks (also when dropped).
    stop_balancing: watch::Sender<bool>,
}

#[derive(Debug)]
struct TopicHandle {
    /// What the pull loop started from, to start it again after a hand-over.
    spec: DurableSpec,
    consumer: PullConsumer,
    partition: TopicPartition,
    stream: String,
    durable: String,
    ack_floor: Arc<AtomicU64>,
    pin: Arc<Pin>,
    paused: watch::Sender<bool>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// A topic whose pull loop stopped: what is needed to make the server
/// forget its requests and to release its pin.
#[derive(Debug)]
struct Stopped {
    durable: String,
    stream: String,
    pin: Arc<Pin>,
}

impl NatsConsumer {
    /// The consumer, with its census and balancing tasks when the group is
    /// pinned and balanced (see `balance`). Call it inside the runtime.
    pub(crate) fn start_new(ctx: PullContext, group: &str, defaults: DurableDefaults) -> Arc<Self> {
        let (stop_balancing, stop) = watch::channel(false);
        let consumer = Arc::new(NatsConsumer {
            ctx: Arc::new(ctx),
            group: group.to_string(),
            defaults,
            serial: tokio::sync::Mutex::new(()),
            topics: Mutex::default(),
            closed: AtomicBool::new(false),
            bus_id: uuid::Uuid::new_v4().simple().to_string(),
            stop_balancing,
        });
        if let Some(interval) = consumer.ctx.balance.interval() {
            let (client, subject) = (consumer.ctx.client.clone(), naming::census_subject(group));
            let weak = Arc::downgrade(&consumer);
            tokio::spawn(balance::answer(
                weak.clone(),
                client.clone(),
                subject.clone(),
                stop.clone(),
            ));
            tokio::spawn(balance::run(weak, client, subject, interval, stop));
        }
        consumer
    }

    pub(crate) fn balance(&self) -> &Balance {
        &self.ctx.balance
    }

    /// What this bus tells its group; `None` once closed.
    pub(crate) fn member(&self) -> Option<Member> {
        if self.closed.load(Ordering::Acquire) {
            return None;
        }
        let mut topics: Vec<String> = self.topics().keys().map(|t| t.to_string()).collect();
        topics.sort();
        Some(Member {
            bus: self.bus_id.clone(),
            pinned: self.ctx.balance.held.load(Ordering::Relaxed),
            topics,
        })
    }

    /// The topics this bus is pinned to, by name.
    pub(crate) fn pinned_topics(&self) -> Vec<String> {
        let mut pinned: Vec<String> = self
            .topics()
            .iter()
            .filter(|(_, h)| h.pin.id().is_some())
            .map(|(t, _)| t.to_string())
            .collect();
        pinned.sort();
        pinned
    }

    /// Lets `topic` go to the group as unsubscribing would (in key order),
    /// and stands by for it again, leaving it to the others for
    /// [`balance::HOLD_OFF`].
    pub(crate) async fn hand_over_topic(&self, topic: &str) {
        let _serial = self.serial.lock().await;
        if self.closed.load(Ordering::Acquire) || !self.topics().contains_key(topic) {
            return;
        }
        if let Some((spec, consumer)) = self.revoke(Arc::from(topic)).await {
            let hold_off = Instant::now() + balance::HOLD_OFF;
            // Fails only when the bus is going away.
            let _ = self.assign(spec, consumer, Some(hold_off)).await;
        }
    }

    fn topics(&self) -> MutexGuard<'_, HashMap<Arc<str>, TopicHandle>> {
        self.topics.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_paused(&self, partitions: &[TopicPartition], paused: bool) {
        let topics = self.topics();
        for tp in partitions {
            if let Some(h) = topics.get(&tp.topic) {
                h.paused.send_replace(paused);
            }
        }
    }

    /// Checks (or creates) the stream and the durable consumer of `topic`.
    async fn prepare(&self, topic: &str) -> Result<(DurableSpec, PullConsumer)> {
        let refused = |e: Error| {
            if e.is_retryable() {
                e
            } else {
                Error::Subscribe {
                    topic: topic.to_string(),
                    reason: e.to_string(),
                }
            }
        };
        let stream = self.ctx.streams.ensure(topic).await.map_err(refused)?;
        let spec = DurableSpec {
            stream,
            name: naming::durable_name(&self.group, topic),
            topic: topic.to_string(),
            group: self.group.clone(),
            ack_wait: self.defaults.ack_wait,
            max_ack_pending: self.defaults.max_ack_pending,
            start: self.defaults.start,
            pinned_ttl: self.defaults.pinned_ttl,
        };
        let consumer = durable::ensure(&self.ctx.js, &spec, 0)
            .await
            .map_err(refused)?;
        Ok((spec, consumer))
    }

    fn start(
        &self,
        spec: DurableSpec,
        consumer: PullConsumer,
        hold_off: Option<Instant>,
    ) -> TopicHandle {
        let partition = TopicPartition::new(spec.topic.as_str(), 0);
        let ack_floor = Arc::new(AtomicU64::new(
            consumer.cached_info().ack_floor.stream_sequence,
        ));
        let (paused, paused_rx) = watch::channel(false);
        let (stop, stop_rx) = watch::channel(false);
        let (stream, durable) = (spec.stream.clone(), spec.name.clone());
        let pin = Arc::new(Pin::counted_in(self.ctx.balance.held.clone()));
        let puller = Puller {
            partition: partition.clone(),
            spec: spec.clone(),
            ack_floor: ack_floor.clone(),
            paused: paused_rx,
            stop: stop_rx,
            held: Arc::default(),
            pin: pin.clone(),
            hold_off,
            ownership: Ownership::default(),
        };
        let task = tokio::spawn(puller.run(self.ctx.clone(), consumer.clone()));
        TopicHandle {
            spec,
            consumer,
            partition,
            stream,
            durable,
            ack_floor,
            pin,
            paused,
            stop,
            task,
        }
    }

    /// Stops pulling `topic`, revokes it from the dispatcher (which lets its
    /// queued records go) and hands it over to the group. Returns what its
    /// pull loop started from. Call it holding `serial`.
    async fn revoke(&self, topic: Arc<str>) -> Option<(DurableSpec, PullConsumer)> {
        let h = self.topics().remove(&topic)?;
        let partition = h.partition.clone();
        let start = (h.spec.clone(), h.consumer.clone());
        // No record of the topic is sent after its revoke.
        let stopped = [stop(h).await];
        forget_pull_requests(&self.ctx.js, &stopped, self.defaults.request_timeout).await;
        let (done, answered) = oneshot::channel();
        let revoke = ConsumerEvent::Revoked {
            partitions: vec![partition],
            lost: false,
            done,
        };
        if self.ctx.events.send(revoke).await.is_ok() {
            let _ = answered.await;
        }
        // Its queued records were let go; the pull loop is gone, so the
        // group (or this bus, on a later subscribe) gets them again.
        hand_over(
            &self.ctx,
            &stopped,
            self.defaults.request_timeout,
            Acker::nak_released,
        )
        .await;
        tracing::debug!(topic = %topic, "topic revoked");
        Some(start)
    }

    /// Assigns a prepared topic to the dispatcher and starts pulling it,
    /// standing by until `hold_off` at least. Call it holding `serial`.
    async fn assign(
        &self,
        spec: DurableSpec,
        consumer: PullConsumer,
        hold_off: Option<Instant>,
    ) -> Result<()> {
        let partition = TopicPartition::new(spec.topic.as_str(), 0);
        if self
            .ctx
            .events
            .send(ConsumerEvent::Assigned(vec![partition.clone()]))
            .await
            .is_err()
        {
            return Err(Error::Closed);
        }
        let h = self.start(spec, consumer, hold_off);
        self.topics().insert(partition.topic.clone(), h);
        Ok(())
    }
}

/// Stops a pull loop and waits (bounded) until it sent its last records and
/// dropped its inbox.
async fn stop(h: TopicHandle) -> Stopped {
    h.stop.send_replace(true);
    let abort = h.task.abort_handle();
    if tokio::time::timeout(STOP_WAIT, h.task).await.is_err() {
        tracing::warn!(topic = %h.partition.topic, "pull loop did not stop in time; aborted");
        abort.abort();
    }
    Stopped {
        durable: h.durable,
        stream: h.stream,
        pin: h.pin,
    }
}

/// Lets the unfinished records of stopped topics go (`let_go` tells the
/// acknowledging task to `NAK` them) and hands the topics this bus was
/// pinned to over to the group's standby buses: delivery paused, `NAK`s
/// sent and confirmed, pins released, delivery resumed (see `pin`).
/// Without a connection there is nobody to tell: the pins expire after
/// `pinned_ttl` and the records after `ack_wait`.
async fn hand_over(ctx: &PullContext, stopped: &[Stopped], timeout: Duration, let_go: fn(&Acker)) {
    let (js, acker) = (&ctx.js, &ctx.acker);
    let pinned: Vec<&Stopped> = stopped.iter().filter(|s| s.pin.id().is_some()).collect();
    if pinned.is_empty() || ctx.client.connection_state() != State::Connected {
        let_go(acker);
        return;
    }
    let paused = futures::future::join_all(
        pinned
            .iter()
            .map(|s| pin::pause(js, &s.stream, &s.durable, timeout)),
    )
    .await;
    let_go(acker);
    let _ = tokio::time::timeout(timeout, acker.flush()).await;
    futures::future::join_all(
        pinned
            .iter()
            .map(|s| pin::release(js, &s.stream, &s.durable, &s.pin, timeout)),
    )
    .await;
    let resumes = pinned
        .iter()
        .zip(paused)
        .filter(|(_, paused)| *paused)
        .map(|(s, _)| pin::resume(js, &s.stream, &s.durable, timeout));
    futures::future::join_all(resumes).await;
}

/// Makes the server forget the pull requests of stopped pull loops before
/// their records are `NAK`ed.
///
/// The server drops a pull request whose inbox is gone only lazily. Until
/// then, a `NAK`ed record it tries to deliver while no live request waits
/// goes to the back of the redelivery queue, behind later records of its
/// key. Asking for the consumer's info makes the server drop dead requests.
async fn forget_pull_requests(js: &Context, consumers: &[Stopped], timeout: Duration) {
    let asks = consumers.iter().map(|Stopped { durable, stream, .. }| async move {
        let ask = js.get_consumer_from_stream::<pull::Config, _, _>(durable, stream);
        if let Ok(Err(e)) = tokio::time::timeout(timeout, ask).await {
            tracing::debug!(consumer = %durable, stream = %stream, error = %e, "consumer info failed");
        }
    });
    futures::future::join_all(asks).await;
}

#[async_trait]
impl Consumer for NatsConsumer {
    async fn subscribe(&self, topics: &[String]) -> Result<()> {
        let _serial = self.serial.lock().await;
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let wanted: BTreeSet<&str> = topics.iter().map(String::as_str).collect();
        let (added, removed): (Vec<String>, Vec<Arc<str>>) = {
            let current = self.topics();
            (
                wanted
                    .iter()
                    .filter(|t| !current.contains_key(**t))
                    .map(|t| t.to_string())
                    .collect(),
                current
                    .keys()
                    .filter(|t| !wanted.contains(&***t))
                    .cloned()
                    .collect(),
            )
        };
        // Set up every new topic first, so that a refusal changes nothing.
        let mut prepared = Vec::with_capacity(added.len());
        for topic in &added {
            prepared.push(self.prepare(topic).await?);
        }
        for topic in removed {
            self.revoke(topic).await;
        }
        for (spec, consumer) in prepared {
            self.assign(spec, consumer, None).await?;
        }
        Ok(())
    }

    fn pause(&self, partitions: &[TopicPartition]) {
        self.set_paused(partitions, true);
    }

    fn resume(&self, partitions: &[TopicPartition]) {
        self.set_paused(partitions, false);
    }

    fn store(&self, _partition: &TopicPartition, _next_offset: i64) {
        // Records are acknowledged one by one (`Record::ack`); a position
        // means nothing to JetStream.
    }

    async fn commit(&self) -> Result<()> {
        let timeout = self.defaults.request_timeout;
        tokio::time::timeout(timeout, self.ctx.acker.flush())
            .await
            .map_err(|_| Error::Commit {
                reason: format!("acknowledgements not confirmed by the server within {timeout:?}"),
                source: None,
            })
    }

    async fn lag(&self) -> Result<Vec<PartitionLag>> {
        let owned: Vec<(TopicPartition, String, String, Arc<AtomicU64>)> = self
            .topics()
            .values()
            .map(|h| {
                (
                    h.partition.clone(),
                    h.stream.clone(),
                    h.durable.clone(),
                    h.ack_floor.clone(),
                )
            })
            .collect();
        let js = &self.ctx.js;
        let lags = owned
            .into_iter()
            .map(|(partition, stream, durable, floor)| async move {
                let consumer = js
                    .get_consumer_from_stream::<pull::Config, _, _>(&durable, &stream)
                    .await
                    .map_err(|e| {
                        backend_error(
                            format!("cannot read consumer `{durable}` on stream `{stream}`: {e}"),
                            true,
                            e,
                        )
                    })?;
                let info = consumer.cached_info();
                floor.fetch_max(info.ack_floor.stream_sequence, Ordering::Relaxed);
                let committed = i64::try_from(info.ack_floor.stream_sequence)
                    .unwrap_or(i64::MAX)
                    .saturating_add(1);
                let behind = info.num_pending.saturating_add(info.num_ack_pending as u64);
                Ok::<_, Error>(PartitionLag {
                    partition,
                    log_end: committed.saturating_add(i64::try_from(behind).unwrap_or(i64::MAX)),
                    committed,
                })
            });
        let mut out = futures::future::try_join_all(lags).await?;
        out.sort_by(|a, b| a.partition.cmp(&b.partition));
        Ok(out)
    }

    async fn close(&self) -> Result<()> {
        let _serial = self.serial.lock().await;
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.stop_balancing.send_replace(true);
        let handles: Vec<TopicHandle> = self.topics().drain().map(|(_, h)| h).collect();
        let stopped = futures::future::join_all(handles.into_iter().map(stop)).await;
        forget_pull_requests(&self.ctx.js, &stopped, self.defaults.request_timeout).await;
        // Whatever is still held goes back to the group now rather than
        // after ack_wait, and then the topics to a standby bus.
        hand_over(
            &self.ctx,
            &stopped,
            self.defaults.request_timeout,
            Acker::release_all,
        )
        .await;
        self.commit().await
    }
}

impl Drop for NatsConsumer {
    fn drop(&mut self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        // Dropped without close (the bus was dropped): stop pulling (the pull
        // loops drain their open requests, so nothing is left in flight) and
        // hand every held record back to the group.
        let handles: Vec<TopicHandle> = self.topics().drain().map(|(_, h)| h).collect();
        let ctx = self.ctx.clone();
        let timeout = self.defaults.request_timeout;
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    let stopped = futures::future::join_all(handles.into_iter().map(stop)).await;
                    forget_pull_requests(&ctx.js, &stopped, timeout).await;
                    hand_over(&ctx, &stopped, timeout, Acker::release_all).await;
                });
            }
            Err(_) => {
                for h in handles {
                    h.task.abort();
                }
                ctx.acker.release_all();
            }
        }
    }
}
