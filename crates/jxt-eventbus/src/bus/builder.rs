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

/// Builds an [`EventBus`]: start from defaults or a loaded [`BusConfig`],
/// adjust with the setters, then [`build`](EventBusBuilder::build), which
/// validates everything.
#[derive(Debug, Default)]
#[must_use]
pub struct EventBusBuilder {
    config: BusConfig,
    memory_broker: Option<MemoryBroker>,
    metrics: Option<BusMetrics>,
}

impl EventBusBuilder {
    /// Replaces the whole configuration.
    pub fn config(mut self, config: BusConfig) -> Self {
        self.config = config;
        self
    }

    /// Backend to use.
    pub fn backend(mut self, backend: BackendKind) -> Self {
        self.config.backend = backend;
        self
    }

    /// Consumer group of this bus.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.config.group = group.into();
        self
    }

    /// Default ordering of subscriptions.
    pub fn ordering(mut self, ordering: Ordering) -> Self {
        self.config.dispatch.ordering = ordering;
        self
    }

    /// Default lanes handled concurrently per subscription.
    pub fn max_concurrency(mut self, n: usize) -> Self {
        self.config.dispatch.max_concurrency = n;
        self
    }

    /// Dispatch settings.
    pub fn dispatch(mut self, dispatch: DispatchConfig) -> Self {
        self.config.dispatch = dispatch;
        self
    }

    /// Retry settings.
    pub fn retry(mut self, retry: RetryConfig) -> Self {
        self.config.retry = retry;
        self
    }

    /// Dead-letter settings.
    pub fn dead_letter(mut self, dead_letter: DeadLetterConfig) -> Self {
        self.config.dead_letter = dead_letter;
        self
    }

    /// Uses a shared in-memory broker (selects the memory backend). Buses on
    /// the same broker see each other's records.
    pub fn memory_broker(mut self, broker: MemoryBroker) -> Self {
        self.config.backend = BackendKind::Memory;
        self.memory_broker = Some(broker);
        self
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
        let config = self.config;
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
        let backend: Arc<dyn Backend> = match config.backend {
            BackendKind::Memory => {
                let broker = self
                    .memory_broker
                    .unwrap_or_else(|| MemoryBroker::new(config.memory.clone()));
                Arc::new(broker.backend(config.start_from))
            }
            #[cfg(feature = "kafka")]
            BackendKind::Kafka => {
                let restarts = metrics.producer_restarts.clone();
                let resets = metrics.offset_resets();
                Arc::new(
                    crate::backend::kafka::KafkaBackend::connect(&config, restarts, resets).await?,
                )
            }
            #[cfg(not(feature = "kafka"))]
            BackendKind::Kafka => return Err(not_compiled("kafka")),
            #[cfg(feature = "nats")]
            BackendKind::Nats => {
                Arc::new(crate::backend::nats::NatsBackend::connect(&config).await?)
            }
            #[cfg(not(feature = "nats"))]
            BackendKind::Nats => return Err(not_compiled("nats")),
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
                backlog,
                recovering,
                publish_limiter,
                metrics,
                metrics_registry,
                broker,
                probe: probe.clone(),
                jxt_core_peers,
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
