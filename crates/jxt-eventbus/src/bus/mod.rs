//! The [`EventBus`]: publish, subscribe, unsubscribe, shut down.

use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Weak};

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::backend::{Backend, Consumer, PartitionLag, Producer, PublishReceipt};
use crate::backlog::{self, BacklogChange, BacklogShared, BacklogState};
use crate::config::BusConfig;
use crate::config::ShutdownMode;
use crate::delivery::Delivery;
use crate::dispatch::lease::ShutdownSignal;
use crate::dispatch::{
    Command, DispatchStats, Dispatcher, DispatcherHandle, SubscriptionHandler,
    SubscriptionSettings, WorkerContext, EVENT_CHANNEL,
};
use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::handler::{ErrorKind, Handler, HandlerError, HandlerResult};
use crate::health::assess::{self, Inputs};
use crate::health::broker::BrokerWatch;
use crate::health::probe::Probe;
use crate::health::{ComponentHealth, HealthState, HealthStatus};
use crate::message::Message;
use crate::metrics::BoundMetrics;
use crate::trace;
use crate::validate;
use prometheus_client::registry::Registry;
use tracing::Instrument;

mod activity;
mod batch;
mod builder;
mod dead_letter_filter;
mod dead_letters;
mod idle;
mod in_flight;
mod jxt_core_health;
mod options;
pub mod publisher_dead_letters;
#[cfg(feature = "http")]
mod status;
mod typed;

pub use builder::EventBusBuilder;
pub use dead_letter_filter::{DeadLetterFilter, ListOptions, ReplayOptions, DEFAULT_MAX_REPLAYS};
pub use dead_letters::{
    DeadLetter, RefusedDeadLetter, ReplayReport, REPLAYED_FROM_ID_HEADER, REPLAYED_HEADER,
};
pub use options::SubscribeOptions;

use in_flight::PublishesInFlight;

/// One event bus: one producer and one consumer (one group, every subscribed
/// topic) over the configured backend.
///
/// Cloning is cheap and shares the bus. Dropping the last clone without
/// [`shutdown`](EventBus::shutdown) stops it like a crash: nothing more is
/// committed, and unfinished records are redelivered to the group.
#[derive(Clone)]
pub struct EventBus {
    inner: Arc<Inner>,
}

/// A handle that does not keep the bus alive, for its background tasks.
#[derive(Clone)]
pub(crate) struct WeakBus(Weak<Inner>);

impl WeakBus {
    pub(crate) fn upgrade(&self) -> Option<EventBus> {
        self.0.upgrade().map(|inner| EventBus { inner })
    }
}

struct Inner {
    config: BusConfig,
    backend: Arc<dyn Backend>,
    producer: Arc<dyn Producer>,
    /// Subscribed topics; the async lock serializes subscription changes.
    /// The dispatcher never takes it, so holding it across a rebalance cannot
    /// deadlock.
    topics: tokio::sync::Mutex<BTreeSet<String>>,
    /// The running consumer, readable without waiting for a subscription
    /// change in progress (health and lag never block behind a rebalance).
    running: std::sync::Mutex<Option<Running>>,
    /// `shutdown` was called: no new subscriptions.
    shutting_down: AtomicBool,
    /// Publishing refused: set by `shutdown` only after the consumer side
    /// drained, so handlers that publish keep working until then.
    closed: AtomicBool,
    /// Tells workers the shutdown began (and in which mode).
    shutdown: Arc<ShutdownSignal>,
    /// `true` once a shutdown finished (for [`EventBus::stopped`]).
    stopped: tokio::sync::watch::Sender<bool>,
    recovering: Arc<AtomicBool>,
    backlog: Arc<BacklogShared>,
    publish_limiter: Option<governor::DefaultDirectRateLimiter>,
    metrics: Arc<BoundMetrics>,
    /// The registry the bus owns; `None` when the application passed its
    /// own metrics.
    metrics_registry: Option<Arc<Registry>>,
    /// Broker reachability, checked in the background.
    broker: Arc<BrokerWatch>,
    /// The heartbeat probe, when enabled.
    probe: Option<Arc<Probe>>,
    /// jxt-core heartbeats read, when `health.jxt_core` is enabled.
    jxt_core_peers: Option<crate::health::jxt_core::Peers>,
    /// The broker, on the memory backend (for [`EventBus::idle`]).
    memory_broker: Option<crate::backend::memory::MemoryBroker>,
    /// Built with [`EventBusBuilder::publish_only`]: subscribing fails.
    publish_only: bool,
}

#[derive(Clone)]
struct Running {
    consumer: Arc<dyn Consumer>,
    dispatcher: DispatcherHandle,
}

impl fmt::Debug for EventBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventBus")
            .field("backend", &self.inner.backend.name())
            .field("group", &self.inner.config.group)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl EventBus {
    /// A builder starting from the default configuration.
    pub fn builder() -> EventBusBuilder {
        EventBusBuilder::default()
    }

    /// Builds a bus from a configuration.
    ///
    /// # Errors
    /// As [`EventBusBuilder::build`].
    pub async fn from_config(config: BusConfig) -> Result<Self> {
        Self::builder().config(config).build().await
    }

    /// The configuration in force.
    pub fn config(&self) -> &BusConfig {
        &self.inner.config
    }

    pub(crate) fn downgrade(&self) -> WeakBus {
        WeakBus(Arc::downgrade(&self.inner))
    }

    fn running(&self) -> Option<Running> {
        self.inner
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Publishing is open until `shutdown` has drained the consumer side.
    fn ensure_open(&self) -> Result<()> {
        if self.inner.closed.load(AtomicOrdering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// Subscription changes stop as soon as `shutdown` is called.
    pub(crate) fn ensure_not_shutting_down(&self) -> Result<()> {
        if self.is_closed() {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// Publishes a message and resolves once the backend stored it.
    ///
    /// # Errors
    /// [`Error::InvalidMessage`] for a bad topic name (nothing is
    /// published); [`Error::Closed`] after shutdown; [`Error::Publish`] or
    /// [`Error::Timeout`] when the backend did not store it.
    ///
    /// # Cancel safety
    /// Dropping the future before it resolves leaves it unknown whether the
    /// record was stored; it stops counting as in flight (the
    /// `publisher_in_flight` gauge and the publisher backlog) at once.
    pub async fn publish(&self, topic: &str, mut message: Message) -> Result<PublishReceipt> {
        self.ensure_open()?;
        validate::topic(topic)?;
        if let Some(l) = &self.inner.publish_limiter {
            l.until_ready().await;
        }
        let in_flight = PublishesInFlight::start(&self.inner.backlog, &self.inner.metrics, 1);
        let span = tracing::debug_span!(
            "eventbus.publish",
            topic,
            key = message.key_str(),
            trace_id = tracing::field::Empty,
        );
        if let Some(trace_id) = trace::inject(&mut message, !span.is_disabled()) {
            span.record("trace_id", trace_id.as_str());
        }
        let result = self
            .inner
            .producer
            .send(topic, message)
            .instrument(span)
            .await;
        let ok = result.is_ok();
        in_flight.finish(topic, ok as u64, !ok as u64);
        result
    }

    /// Publishes messages to one topic, pipelined: every message is handed
    /// to the backend, in order, before the first acknowledgement is awaited
    /// (on Kafka a batch costs about one broker round trip). Resolves when
    /// every message was stored or failed, with one result per message in
    /// the order given. Messages with the same key keep their order.
    ///
    /// # Errors
    /// [`Error::InvalidMessage`] for a bad topic name and
    /// [`Error::Closed`] after shutdown: nothing of the batch is published.
    /// Failures of single messages ([`Error::Publish`], [`Error::Timeout`])
    /// are in the returned results.
    ///
    /// # Cancel safety
    /// As [`EventBus::publish`], for every message of the batch.
    pub async fn publish_batch(
        &self,
        topic: &str,
        mut messages: Vec<Message>,
    ) -> Result<Vec<Result<PublishReceipt>>> {
        self.ensure_open()?;
        validate::topic(topic)?;
        if let Some(l) = &self.inner.publish_limiter {
            for _ in 0..messages.len() {
                l.until_ready().await;
            }
        }
        let n = messages.len();
        let in_flight = PublishesInFlight::start(&self.inner.backlog, &self.inner.metrics, n);
        let start_new = tracing::enabled!(tracing::Level::DEBUG);
        for m in &mut messages {
            trace::inject(m, start_new);
        }
        let span = tracing::debug_span!("eventbus.publish_batch", topic, count = n);
        let results = self
            .inner
            .producer
            .send_batch(topic, messages)
            .instrument(span)
            .await;
        let ok = results.iter().filter(|r| r.is_ok()).count() as u64;
        in_flight.finish(topic, ok, results.len() as u64 - ok);
        Ok(results)
    }

    /// Validates and publishes a domain event; its aggregate id is the key.
    ///
    /// # Errors
    /// As [`EventBus::publish`], plus [`Error::InvalidMessage`] when
    /// [`Envelope::validate`] fails.
    ///
    /// # Cancel safety
    /// As [`EventBus::publish`].
    pub async fn publish_envelope(
        &self,
        topic: &str,
        envelope: &Envelope,
    ) -> Result<PublishReceipt> {
        let message = envelope.to_message_with(self.inner.config.envelope.tenant_id)?;
        self.publish(topic, message).await
    }

    /// Validates and publishes domain events to one topic, pipelined as
    /// [`EventBus::publish_batch`]; each aggregate id is its record's key.
    ///
    /// # Errors
    /// As [`EventBus::publish_batch`]; an envelope that does not validate
    /// refuses the whole batch with [`Error::InvalidMessage`] (nothing is
    /// published).
    ///
    /// # Cancel safety
    /// As [`EventBus::publish_batch`].
    pub async fn publish_envelope_batch(
        &self,
        topic: &str,
        envelopes: &[Envelope],
    ) -> Result<Vec<Result<PublishReceipt>>> {
        let tenant = self.inner.config.envelope.tenant_id;
        let messages = envelopes
            .iter()
            .map(|e| e.to_message_with(tenant))
            .collect::<Result<Vec<_>>>()?;
        self.publish_batch(topic, messages).await
    }

    /// Subscribes `handler` to `topic`. The bus's one consumer adds the topic
    /// to its subscription; partitions of topics already subscribed keep
    /// processing. Resolves once the backend accepted the subscription.
    ///
    /// # Errors
    /// [`Error::Subscribe`] when the topic is invalid or already subscribed;
    /// [`Error::Closed`] after shutdown; a backend error when the consumer
    /// cannot be created.
    ///
    /// # Cancel safety
    /// Not cancel safe: dropping the future may leave the subscription half
    /// set up; call [`EventBus::unsubscribe`] before retrying.
    pub async fn subscribe<H: Handler>(
        &self,
        topic: &str,
        handler: H,
        options: SubscribeOptions,
    ) -> Result<()> {
        self.subscribe_handler(topic, Arc::new(handler), options)
            .await
    }

    /// Subscribes a handler of domain events. A payload that is not a valid
    /// [`Envelope`] fails with [`ErrorKind::Decode`] (dead-lettered, not
    /// retried).
    ///
    /// # Errors
    /// As [`EventBus::subscribe`].
    ///
    /// # Cancel safety
    /// As [`EventBus::subscribe`].
    pub async fn subscribe_envelope<F, Fut>(
        &self,
        topic: &str,
        handler: F,
        options: SubscribeOptions,
    ) -> Result<()>
    where
        F: Fn(Envelope, Delivery) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let decode = move |delivery: Delivery| {
            let handler = handler.clone();
            async move {
                let envelope = Envelope::from_message(delivery.message())
                    .map_err(|e| HandlerError::new(ErrorKind::Decode, e.to_string()))?;
                handler(envelope, delivery).await
            }
        };
        self.subscribe(topic, decode, options).await
    }

    async fn subscribe_handler(
        &self,
        topic: &str,
        handler: Arc<dyn Handler>,
        options: SubscribeOptions,
    ) -> Result<()> {
        let handler = options.layer(handler)?;
        let settings = options.resolve(&self.inner.config.dispatch);
        self.subscribe_to(topic, SubscriptionHandler::Records(handler), settings)
            .await
    }

    /// Adds a subscription of `topic` to the dispatcher and the consumer.
    async fn subscribe_to(
        &self,
        topic: &str,
        handler: SubscriptionHandler,
        settings: SubscriptionSettings,
    ) -> Result<()> {
        self.ensure_not_shutting_down()?;
        if self.inner.publish_only {
            return Err(Error::Subscribe {
                topic: topic.to_string(),
                reason: "this bus was built publish-only (EventBusBuilder::publish_only)".into(),
            });
        }
        validate::topic(topic).map_err(|e| Error::Subscribe {
            topic: topic.to_string(),
            reason: e.to_string(),
        })?;
        let mut subscribed = self.inner.topics.lock().await;
        self.ensure_not_shutting_down()?;
        if subscribed.contains(topic) {
            return Err(Error::Subscribe {
                topic: topic.to_string(),
                reason: "already subscribed on this bus; unsubscribe first".into(),
            });
        }
        let running = match self.running() {
            Some(r) => r,
            None => {
                let r = self.start_consumer().await?;
                *self.inner.running.lock().unwrap_or_else(|e| e.into_inner()) = Some(r.clone());
                r
            }
        };
        let topic_arc: Arc<str> = Arc::from(topic);
        let (reply, added) = oneshot::channel();
        let sent = running
            .dispatcher
            .send(Command::Subscribe {
                topic: topic_arc.clone(),
                handler,
                settings,
                reply,
            })
            .await;
        if !sent || added.await.is_err() {
            return Err(Error::Closed);
        }
        let mut topics = subscribed.clone();
        topics.insert(topic.to_string());
        let list: Vec<String> = topics.iter().cloned().collect();
        if let Err(e) = running.consumer.subscribe(&list).await {
            let (reply, _) = oneshot::channel();
            running
                .dispatcher
                .send(Command::Unsubscribe {
                    topic: topic_arc,
                    reply,
                })
                .await;
            return Err(e);
        }
        *subscribed = topics;
        // A backlog waiting on the new topic puts the bus in recovery mode now,
        // not at the next periodic check.
        self.inner.backlog.check_now().await;
        tracing::info!(topic, group = %self.inner.config.group, "subscribed");
        Ok(())
    }

    async fn start_consumer(&self) -> Result<Running> {
        let (events_tx, events_rx) = mpsc::channel(EVENT_CHANNEL);
        let consumer = self
            .inner
            .backend
            .consumer(&self.inner.config.group, events_tx)
            .await?;
        let ctx = Arc::new(WorkerContext {
            producer: self.inner.producer.clone(),
            retry: self.inner.config.retry.clone(),
            dead_letter: self.inner.config.dead_letter.clone(),
            group: self.inner.config.group.clone(),
            recovering: self.inner.recovering.clone(),
            metrics: self.inner.metrics.clone(),
            shutdown: self.inner.shutdown.clone(),
        });
        let dispatcher = Dispatcher::spawn(
            consumer.clone(),
            events_rx,
            self.inner.config.dispatch.clone(),
            ctx,
        );
        if self.inner.config.backlog.enabled {
            backlog::spawn(
                self.inner.config.backlog.clone(),
                self.inner.backlog.clone(),
                self.inner.metrics.clone(),
                Arc::downgrade(&consumer),
                dispatcher.downgrade(),
            );
        }
        Ok(Running {
            consumer,
            dispatcher,
        })
    }

    /// Removes the subscription of `topic`: its partitions are revoked, their
    /// running records finish (bounded by `dispatch.revoke_timeout`) and
    /// their positions are committed. Other topics keep processing.
    ///
    /// # Errors
    /// [`Error::Subscribe`] when the topic is not subscribed.
    ///
    /// # Cancel safety
    /// Not cancel safe.
    pub async fn unsubscribe(&self, topic: &str) -> Result<()> {
        let mut subscribed = self.inner.topics.lock().await;
        let not_subscribed = || Error::Subscribe {
            topic: topic.to_string(),
            reason: "not subscribed on this bus".into(),
        };
        if !subscribed.contains(topic) {
            return Err(not_subscribed());
        }
        let Some(running) = self.running() else {
            return Err(not_subscribed());
        };
        let mut topics = subscribed.clone();
        topics.remove(topic);
        let list: Vec<String> = topics.iter().cloned().collect();
        running.consumer.subscribe(&list).await?;
        *subscribed = topics;
        let (reply, removed) = oneshot::channel();
        if running
            .dispatcher
            .send(Command::Unsubscribe {
                topic: Arc::from(topic),
                reply,
            })
            .await
        {
            let _ = removed.await;
        }
        tracing::info!(topic, "unsubscribed");
        Ok(())
    }

    /// Topics subscribed on this bus.
    pub async fn subscriptions(&self) -> Vec<String> {
        self.inner.topics.lock().await.iter().cloned().collect()
    }

    /// Stops the bus in the configured `dispatch.shutdown_mode`; see
    /// [`EventBus::shutdown_with`].
    ///
    /// # Errors
    /// As [`EventBus::shutdown_with`].
    ///
    /// # Cancel safety
    /// As [`EventBus::shutdown_with`].
    pub async fn shutdown(&self) -> Result<()> {
        self.shutdown_with(self.inner.config.dispatch.shutdown_mode)
            .await
    }

    /// Stops the bus. In order: subscribing fails with [`Error::Closed`] and
    /// intake stops; records running in handlers finish — with
    /// [`ShutdownMode::DrainBuffered`] every buffered record too, with
    /// [`ShutdownMode::FinishRunning`] the others stay unacknowledged for the
    /// group's next owner — up to `dispatch.shutdown_timeout`; positions are
    /// committed; the consumer leaves its group; only then does publishing
    /// close (handlers that publish through this bus keep working while they
    /// finish), and the producer is flushed. A record that fails after the
    /// shutdown began is neither retried nor dead-lettered: it stays
    /// unacknowledged and is redelivered. Calling it again does nothing.
    ///
    /// # Errors
    /// [`Error::Timeout`] when records were still unfinished at the deadline:
    /// the bus is closed anyway and those records are redelivered to the
    /// group. A backend error from the final commit or flush.
    ///
    /// # Cancel safety
    /// Not cancel safe: dropping it midway leaves the bus closed to new work
    /// with the consumer possibly still in its group until the bus drops.
    pub async fn shutdown_with(&self, mode: ShutdownMode) -> Result<()> {
        if self.inner.shutting_down.swap(true, AtomicOrdering::AcqRel) {
            return Ok(());
        }
        let result = self.stop(mode).await;
        self.inner.stopped.send_replace(true);
        result
    }

    /// Resolves once [`EventBus::shutdown`] finished (at once if it did),
    /// whether or not it succeeded: for what lives as long as the bus, such
    /// as its operator endpoints
    /// (`http::serve_with_shutdown(bus.clone(), addr, bus.stopped())`).
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.inner.stopped.subscribe();
        async move {
            let _ = rx.wait_for(|stopped| *stopped).await;
        }
    }

    async fn stop(&self, mode: ShutdownMode) -> Result<()> {
        // Before the dispatcher hears of it: no worker starts a record the
        // mode leaves for redelivery, even one already handed to it.
        let leave_buffered = !matches!(mode, ShutdownMode::DrainBuffered);
        self.inner.shutdown.begin(leave_buffered);
        self.inner.broker.stop();
        let timeout = self.inner.config.dispatch.shutdown_timeout;
        let deadline = Instant::now() + timeout;
        let mut abandoned = 0;
        // Wait for a subscription change in progress, then take the consumer.
        let _subscribed = self.inner.topics.lock().await;
        let running = self
            .inner
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(r) = running {
            let (reply, drained) = oneshot::channel();
            let drain = Command::Drain {
                deadline,
                leave_buffered,
                reply,
            };
            if r.dispatcher.send(drain).await {
                if let Ok(report) = drained.await {
                    abandoned = report.abandoned;
                }
            }
            if let Err(e) = r.consumer.commit().await {
                tracing::warn!(error = %e, "final commit failed");
            }
            r.consumer.close().await?;
        }
        // The consumer side is done: nothing that runs a handler of this bus
        // publishes any more.
        self.inner.closed.store(true, AtomicOrdering::Release);
        let left = deadline.saturating_duration_since(Instant::now());
        self.inner.producer.flush(left).await?;
        if abandoned > 0 {
            tracing::warn!(
                abandoned,
                "shutdown deadline reached; unfinished records will be redelivered"
            );
            return Err(Error::Timeout {
                operation: "shutdown drain",
                after: timeout,
            });
        }
        tracing::info!(group = %self.inner.config.group, ?mode, "event bus shut down");
        Ok(())
    }

    /// The metrics registry this bus owns, to encode with
    /// [`prometheus_client::encoding::text::encode`]; `None` when the
    /// application passed its own metrics to
    /// [`EventBusBuilder::metrics`].
    pub fn metrics_registry(&self) -> Option<Arc<Registry>> {
        self.inner.metrics_registry.clone()
    }

    /// The last handler failures (at most
    /// [`RECENT_ERRORS`](crate::metrics::RECENT_ERRORS)), newest first.
    pub fn recent_errors(&self) -> Vec<crate::metrics::RecentError> {
        self.inner.metrics.recent_errors.list()
    }

    /// Whether [`EventBus::shutdown`] was called (publishing may still be
    /// open while the consumer side drains).
    pub fn is_closed(&self) -> bool {
        self.inner.shutting_down.load(AtomicOrdering::Acquire)
    }

    /// The librdkafka handle of the producer, for fault-injection tests.
    /// Not part of the API.
    #[cfg(feature = "kafka")]
    #[doc(hidden)]
    pub fn kafka_native_producer(&self) -> Option<*mut rdkafka::bindings::rd_kafka_t> {
        self.inner.backend.kafka_native_producer()
    }

    /// Whether the bus is in recovery mode (catching up on a backlog).
    pub fn is_recovering(&self) -> bool {
        self.inner.recovering.load(AtomicOrdering::Relaxed)
    }

    /// Calls `callback` on every change of backlog state: recovery mode
    /// entered or left, publisher backlog found or cleared.
    /// Callbacks run on the checking task: keep them short and non-blocking.
    pub fn on_backlog_change(&self, callback: impl Fn(&BacklogChange) + Send + Sync + 'static) {
        self.inner
            .backlog
            .callbacks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::new(callback));
    }

    /// The latest backlog check, with the current publisher load.
    pub fn backlog_state(&self) -> BacklogState {
        let mut state = self.inner.backlog.state.borrow().clone();
        state.publisher = self.inner.backlog.publisher.state();
        state
    }

    /// A receiver that sees every backlog check.
    pub fn watch_backlog(&self) -> tokio::sync::watch::Receiver<BacklogState> {
        self.inner.backlog.state.subscribe()
    }

    /// Resolves once the bus is not in recovery mode.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn caught_up(&self) {
        let mut rx = self.watch_backlog();
        let _ = rx.wait_for(|s| !s.recovering).await;
    }

    /// Lag of every partition this bus's consumer owns.
    ///
    /// # Errors
    /// A backend error when the broker cannot be asked.
    pub async fn lag(&self) -> Result<Vec<PartitionLag>> {
        match self.running() {
            Some(r) => r.consumer.lag().await,
            None => Ok(Vec::new()),
        }
    }

    /// Dispatcher counters; `None` before the first subscribe or after shutdown.
    pub async fn dispatch_stats(&self) -> Option<DispatchStats> {
        let running = self.running()?;
        let (reply, stats) = oneshot::channel();
        if !running.dispatcher.send(Command::Stats { reply }).await {
            return None;
        }
        stats.await.ok()
    }

    /// Per-component health. Answers at once: it reads the latest
    /// background broker check (every `health.check_interval`) and the
    /// dispatcher's counters, and never waits on the broker or a rebalance.
    /// The rules are listed in [`crate::health`].
    pub async fn health(&self) -> HealthStatus {
        if self.is_closed() {
            return HealthStatus::from_components(vec![component(
                "bus",
                HealthState::Unhealthy,
                "shut down",
            )]);
        }
        if self.inner.broker.get().reachable.is_none() {
            // Right after build the background check may not have answered.
            self.inner.broker.check(self.inner.backend.as_ref()).await;
        }
        let config = &self.inner.config.health;
        let dispatch = self.dispatch_stats().await;
        if let Some(s) = &dispatch {
            let stalled = assess::stalled(s, config.stall_after);
            self.inner.metrics.stalled_partitions.set(stalled as i64);
        }
        let inputs = Inputs {
            backend: self.inner.backend.name(),
            broker: self.inner.broker.get(),
            dispatch,
            access_denied: self.running().and_then(|r| r.consumer.access_denied()),
            publisher: self.inner.backlog.publisher.state(),
            recovering: self.is_recovering(),
            backlog: self.backlog_state(),
            probe: self.inner.probe.as_ref().map(|p| p.report()),
            dead_letters: &self.inner.metrics.dead_letters,
            config,
            now: Instant::now(),
        };
        HealthStatus::from_components(assess::assess(&inputs))
    }

    /// Readiness, as served on `/readyz`: `Ok` when the bus is open, no
    /// component is unhealthy, the broker answered its last check and, with
    /// subscriptions, partitions are assigned.
    ///
    /// # Errors
    /// Why it is not ready.
    pub async fn readiness(&self) -> std::result::Result<(), String> {
        if self.is_closed() {
            return Err("shut down".into());
        }
        self.health().await.readiness()
    }
}

fn component(name: &str, state: HealthState, reason: &str) -> ComponentHealth {
    ComponentHealth {
        name: name.to_string(),
        state,
        reason: reason.to_string(),
    }
}
