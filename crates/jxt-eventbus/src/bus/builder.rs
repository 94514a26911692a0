//! Building an [`EventBus`].

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::{EventBus, Inner};
use crate::backend::memory::MemoryBroker;
use crate::backend::Backend;
use crate::config::{
    BackendKind, BusConfig, DeadLetterConfig, DispatchConfig, Ordering, RetryConfig,
};
use crate::error::{Error, Result};
use crate::health::broker::BrokerWatch;
use crate::health::probe::Probe;
use crate::metrics::BusMetrics;

/// A setter's change, applied over the base configuration at build time.
type Override = Box<dyn FnOnce(&mut BusConfig) + Send>;

/// Builds an [`EventBus`]: start from defaults or a loaded [`BusConfig`],
/// adjust with the setters, then [`build`](EventBusBuilder::build), which
/// validates everything.
///
/// [`config`](EventBusBuilder::config) sets the **base** configuration and
/// every other setter is an **override** applied over it, in call order,
/// whatever the order of the calls to `config` and the setters: a setter
/// called before `config` is not lost. (Refusing that order instead would
/// fail at run time for a call order that reads naturally; a later
/// `config` replacing earlier setters silently was the trap.)
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> jxt_eventbus::Result<()> {
/// use jxt_eventbus::{BusConfig, EventBus};
/// let from_file = BusConfig::default(); // BusConfig::load(Some(path)) in a service
/// let bus = EventBus::builder().group("billing").config(from_file).build().await?;
/// assert_eq!(bus.config().group, "billing");
/// # bus.shutdown().await
/// # }
/// ```
#[derive(Default)]
#[must_use]
pub struct EventBusBuilder {
    base: BusConfig,
    overrides: Vec<Override>,
    memory_broker: Option<MemoryBroker>,
    metrics: Option<BusMetrics>,
    publish_only: bool,
}

impl std::fmt::Debug for EventBusBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBusBuilder")
            .field("base", &self.base)
            .field("overrides", &self.overrides.len())
            .field("memory_broker", &self.memory_broker)
            .field("publish_only", &self.publish_only)
            .finish_non_exhaustive()
    }
}

impl EventBusBuilder {
    /// Sets the base configuration (a loaded file, say); the other setters
    /// apply over it whether called before or after. A second call replaces
    /// the first base.
    pub fn config(mut self, config: BusConfig) -> Self {
        self.base = config;
        self
    }

    fn set(mut self, change: impl FnOnce(&mut BusConfig) + Send + 'static) -> Self {
        self.overrides.push(Box::new(change));
        self
    }

    /// Backend to use.
    pub fn backend(self, backend: BackendKind) -> Self {
        self.set(move |c| c.backend = backend)
    }

    /// Consumer group of this bus.
    pub fn group(self, group: impl Into<String>) -> Self {
        let group = group.into();
        self.set(move |c| c.group = group)
    }

    /// Default ordering of subscriptions.
    pub fn ordering(self, ordering: Ordering) -> Self {
        self.set(move |c| c.dispatch.ordering = ordering)
    }

    /// Default lanes handled concurrently per subscription.
    pub fn max_concurrency(self, n: usize) -> Self {
        self.set(move |c| c.dispatch.max_concurrency = n)
    }

    /// Dispatch settings (the whole section: a `max_concurrency` or
    /// `ordering` set before it is replaced, one set after it applies).
    pub fn dispatch(self, dispatch: DispatchConfig) -> Self {
        self.set(move |c| c.dispatch = dispatch)
    }

    /// Retry settings.
    pub fn retry(self, retry: RetryConfig) -> Self {
        self.set(move |c| c.retry = retry)
    }

    /// Dead-letter settings.
    pub fn dead_letter(self, dead_letter: DeadLetterConfig) -> Self {
        self.set(move |c| c.dead_letter = dead_letter)
    }

    /// A bus that only publishes. It needs the backend and its connection
    /// settings (`kafka.brokers` and `kafka.producer`, or `nats.servers`
    /// and `nats.publish_timeout`, with their TLS and authentication); the
    /// consumer side — `group`, `start_from`,
    /// `dispatch`, `retry`, `dead_letter`, `backlog` — is never used and
    /// may be left out (their defaults are valid; values that are set are
    /// still validated, so a wrong file is still an error). Subscribing
    /// fails with [`Error::Subscribe`], and no consumer is ever created.
    pub fn publish_only(mut self) -> Self {
        self.publish_only = true;
        self
    }

    /// Uses a shared in-memory broker (selects the memory backend). Buses on
    /// the same broker see each other's records.
    pub fn memory_broker(mut self, broker: MemoryBroker) -> Self {
        self.memory_broker = Some(broker);
        self.set(|c| c.backend = BackendKind::Memory)
    }

    /// Records metrics in `metrics`, which the application registered on its
    /// own registry ([`BusMetrics::register`]). Without it the bus owns a
    /// registry, readable with
    /// [`EventBus::metrics_registry`](crate::EventBus::metrics_registry).
    pub fn metrics(mut self, metrics: BusMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Validates the configuration and connects the backend.
    ///
    /// # Errors
    /// [`Error::Config`] for invalid settings or a backend not compiled in;
    /// a backend error when the broker cannot be reached.
    pub async fn build(self) -> Result<EventBus> {
        let mut config = self.base;
        for change in self.overrides {
            change(&mut config);
        }
        config.validate()?;
        let (metrics, metrics_registry) = match self.metrics {
            Some(m) => (m, None),
            None => {
                let m = BusMetrics::new();
                let mut registry = prometheus_client::registry::Registry::default();
                m.register(&mut registry);
                (m, Some(Arc::new(registry)))
            }
        };
        let metrics = Arc::new(metrics.bind(config.backend.as_str()));
        let memory_broker = matches!(config.backend, BackendKind::Memory).then(|| {
            self.memory_broker
                .unwrap_or_else(|| MemoryBroker::new(config.memory.clone()))
        });
        let backend: Arc<dyn Backend> = match (&memory_broker, config.backend) {
            (Some(broker), _) => Arc::new(broker.backend(config.start_from)),
            (None, BackendKind::Memory) => unreachable!("a memory bus has its broker"),
            #[cfg(feature = "kafka")]
            (None, BackendKind::Kafka) => {
                let restarts = metrics.producer_restarts.clone();
                let resets = metrics.offset_resets();
                Arc::new(
                    crate::backend::kafka::KafkaBackend::connect(&config, restarts, resets).await?,
                )
            }
            #[cfg(not(feature = "kafka"))]
            (None, BackendKind::Kafka) => return Err(not_compiled("kafka")),
            #[cfg(feature = "nats")]
            (None, BackendKind::Nats) => {
                Arc::new(crate::backend::nats::NatsBackend::connect(&config).await?)
            }
            #[cfg(not(feature = "nats"))]
            (None, BackendKind::Nats) => return Err(not_compiled("nats")),
        };
        let producer = backend.producer();
        let recovering = Arc::new(AtomicBool::new(false));
        let publish_limiter = config.publish_rate_limit.map(|l| l.limiter());
        let backlog = Arc::new(crate::backlog::BacklogShared::new(
            recovering.clone(),
            &config.backlog,
        ));
        let broker = Arc::new(BrokerWatch::new(
            metrics.clone(),
            config.health.check_interval,
        ));
        crate::metrics::throughput::spawn_sampler(Arc::downgrade(&metrics.throughput));
        crate::health::broker::spawn(
            Arc::downgrade(&backend),
            broker.clone(),
            config.health.check_interval,
        );
        let probe = config
            .health
            .probe
            .enabled
            .then(|| Arc::new(Probe::new(config.health.probe.clone())));
        let jxt_core_peers = config
            .health
            .jxt_core
            .enabled
            .then(crate::health::jxt_core::Peers::default);
        let bus = EventBus {
            inner: Arc::new(Inner {
                config,
                backend,
                producer,
                topics: tokio::sync::Mutex::default(),
                running: std::sync::Mutex::default(),
                shutting_down: AtomicBool::new(false),
                closed: AtomicBool::new(false),
                shutdown: Arc::default(),
                stopped: tokio::sync::watch::Sender::new(false),
                backlog,
                recovering,
                publish_limiter,
                metrics,
                metrics_registry,
                broker,
                probe: probe.clone(),
                jxt_core_peers,
                memory_broker,
                publish_only: self.publish_only,
            }),
        };
        if let Some(p) = probe {
            crate::health::probe::spawn(bus.downgrade(), p);
        }
        bus.start_configured_jxt_core_health();
        Ok(bus)
    }
}

#[allow(dead_code)]
fn not_compiled(name: &str) -> Error {
    Error::config(
        "backend",
        format!(
            "the {name} backend is not available in this build; enable the `{name}` cargo feature \
             of jxt-eventbus, or use `memory`"
        ),
    )
}
