//! Apache Kafka backend (cargo feature `kafka`), on rdkafka with a bundled
//! librdkafka.
//!
//! One bus is one producer, one admin client and — from the first
//! subscribe — exactly one consumer: one `group.id`, one subscription
//! holding every subscribed topic, the `cooperative-sticky` assignor so that
//! adding or removing a topic never revokes the partitions of the others.
//!
//! Positions are committed only when the dispatcher says every record below
//! them is finished, as they advance: a committer thread sends one commit
//! request at a time (at least `kafka.consumer.commit_interval` apart) and
//! merges what advanced meanwhile into the next; the offsets finished above
//! each position go into the commit metadata, so the partition's next owner
//! skips them. The consumer commits synchronously when partitions are
//! revoked (after their running records finished, bounded by
//! `dispatch.revoke_timeout`) and at shutdown. A lost assignment commits
//! nothing.
//!
//! | file | what it does |
//! |------|--------------|
//! | `client_config` | `BusConfig` → librdkafka properties, checked at build |
//! | `producer` | publish with delivery reports, pipelined batches |
//! | `reports` | a batch's delivery reports, gathered with one wake-up |
//! | `consumer` | the consumer handle the dispatcher talks to |
//! | `poll_loop` | the consumer's own thread: poll, subscribe, close |
//! | `rebalance` | rebalance callbacks: hand-over to the dispatcher, commits |
//! | `commits` | commits as positions advance, one request in flight |
//! | `commit_metadata` | offsets finished above a position, in the commit metadata |
//! | `positions` | where partitions start (`start_from`), offset resets logged and counted |
//! | `flow` | the dispatcher's pause and resume, applied by the poll thread |
//! | `admin` | the topic strategy |
//! | `access` | consumer requests the broker's ACLs refused, for subscribe and health |
//! | `lag` | log end minus committed, per assigned partition |
//! | `refusal` | credentials and certificates a broker refused, as one clear error |
//! | `mapping` | `Message` ⇄ Kafka record |
//! | `inspect` | records read by operator tools, as `Message`s |

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use rdkafka::admin::AdminClient;
use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::Producer as _;
use tokio::sync::mpsc;

use crate::backend::{Backend, Consumer, ConsumerEvent, Producer};
use crate::config::BusConfig;
use crate::error::{Error, Result};
use crate::metrics::PartitionLabels;

mod access;
mod admin;
mod client_config;
mod commit_metadata;
mod commits;
mod consumer;
mod context;
mod errors;
mod flow;
pub mod inspect;
mod lag;
mod mapping;
mod poll_loop;
mod positions;
mod producer;
mod rebalance;
mod refusal;
mod reports;

pub use mapping::MESSAGE_ID_HEADER;

pub(crate) use client_config::{check_properties, validate as validate_client_config};

use admin::TopicAdmin;
use consumer::{ConsumerSettings, KafkaConsumer};
use context::{BusClientContext, LastError};
use positions::Positions;
use producer::KafkaProducer;
use rebalance::RebalanceContext;

/// The librdkafka properties the bus's consumer in `group` is created with,
/// sorted by name (secrets included: do not log them). For comparisons
/// with a hand-written consumer that should fetch exactly as the bus does.
pub fn consumer_properties(config: &BusConfig, group: &str) -> Vec<(String, String)> {
    let mut props: Vec<(String, String)> = client_config::consumer(config, group)
        .config_map()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    props.sort();
    props
}

/// The Kafka backend of one bus.
#[derive(Debug)]
pub(crate) struct KafkaBackend {
    config: Arc<BusConfig>,
    producer: Arc<KafkaProducer>,
    topics: Arc<TopicAdmin>,
    producer_errors: LastError,
    /// `eventbus_offset_resets_total`, counted by the consumer.
    offset_resets: Family<PartitionLabels, Counter>,
}

impl KafkaBackend {
    /// Checks the Kafka settings with librdkafka, creates the producer and
    /// the admin client, checks that a broker answers (unless
    /// `kafka.verify_connection` is off) and ensures the topics listed in
    /// `kafka.topics`.
    ///
    /// # Errors
    /// [`Error::Config`] for settings librdkafka refuses or a listed topic
    /// the strategy rejects; [`Error::Backend`] naming the brokers when none
    /// answers within `kafka.connect_timeout`.
    pub(crate) async fn connect(
        config: &BusConfig,
        producer_restarts: Counter,
        offset_resets: Family<PartitionLabels, Counter>,
    ) -> Result<Self> {
        client_config::validate(config)?;
        let k = &config.kafka;
        let producer_errors = LastError::default();
        let admin: AdminClient<BusClientContext> = client_config::admin(config)
            .create_with_context(BusClientContext::default())
            .map_err(|e| client_config::config_error(k, "admin client", &e))?;
        let topics = Arc::new(TopicAdmin::new(Arc::new(admin), Arc::new(k.clone())));
        let config = Arc::new(config.clone());
        let producer = KafkaProducer::new(
            config.clone(),
            producer_errors.clone(),
            topics.clone(),
            producer_restarts,
        )?;
        let k = &config.kafka;
        let backend = KafkaBackend {
            config: config.clone(),
            producer: Arc::new(producer),
            topics,
            producer_errors,
            offset_resets,
        };
        if k.verify_connection {
            backend.check().await?;
        }
        for topic in k.topics.keys() {
            if let Err(e) = backend.topics.ensure(topic, k.admin_timeout).await {
                return Err(if e.timed_out {
                    errors::backend(
                        format!("cannot ensure topic `{topic}`: {}", e.reason),
                        true,
                        e.source,
                    )
                } else {
                    Error::config(format!("kafka.topics.{topic}"), e.reason)
                });
            }
        }
        tracing::info!(brokers = %k.brokers.join(","), "kafka backend connected");
        Ok(backend)
    }
}

#[async_trait]
impl Backend for KafkaBackend {
    fn name(&self) -> &'static str {
        "kafka"
    }

    fn producer(&self) -> Arc<dyn Producer> {
        self.producer.clone()
    }

    async fn check(&self) -> Result<()> {
        let k = &self.config.kafka;
        // While librdkafka says every broker is down, a check only looks
        // whether one is back, briefly; a broker that goes down during a
        // check ends the check at once. Either way `/readyz` follows a dead
        // broker within about two check intervals, not `connect_timeout`.
        let down = self.producer_errors.all_down_since();
        let timeout = match down {
            Some(_) => k.connect_timeout.min(
                self.config
                    .health
                    .check_interval
                    .max(Duration::from_secs(1)),
            ),
            None => k.connect_timeout,
        };
        let started = std::time::Instant::now();
        // A producer in librdkafka's fatal state is rebuilt here too, so a bus
        // that publishes rarely recovers; if it cannot be, health says why.
        self.producer.recover().await?;
        let client = self.producer.client();
        let fetch = tokio::task::spawn_blocking(move || {
            // One small metadata request; the topic need not exist.
            client
                .client()
                .fetch_metadata(Some("__consumer_offsets"), timeout)
                .map(|m| m.brokers().len())
        });
        let answer = if down.is_none() {
            tokio::select! {
                a = fetch => a,
                () = self.producer_errors.went_all_down() => {
                    if let Some(refused) = self.producer_errors.refusal_since(started) {
                        return Err(errors::backend(refused.describe(k), false, None));
                    }
                    let why = self
                        .producer_errors
                        .since(started)
                        .map(|w| format!(": {w}"))
                        .unwrap_or_default();
                    return Err(errors::backend(
                        format!(
                            "every Kafka broker at {} went down (kafka.brokers){why}",
                            k.brokers.join(",")
                        ),
                        true,
                        None,
                    ));
                }
            }
        } else {
            fetch.await
        }
        .map_err(|e| errors::backend(format!("metadata task failed: {e}"), true, None))?;
        match answer {
            Ok(brokers) if brokers > 0 => {
                self.producer_errors.clear_all_down();
                Ok(())
            }
            Ok(_) => Err(errors::backend(
                format!(
                    "Kafka at {} answered without any broker",
                    k.brokers.join(",")
                ),
                true,
                None,
            )),
            Err(e) => {
                // A refusal in the last minute is the reason, even when a
                // reconnect has logged something vaguer since.
                let recent = started
                    .checked_sub(Duration::from_secs(60))
                    .unwrap_or(started);
                if let Some(refused) = self.producer_errors.refusal_since(recent) {
                    return Err(errors::backend(refused.describe(k), false, Some(e)));
                }
                let why = self
                    .producer_errors
                    .since(
                        started
                            .checked_sub(Duration::from_secs(60))
                            .unwrap_or(started),
                    )
                    .unwrap_or_else(|| e.to_string());
                Err(errors::backend(
                    format!(
                        "no Kafka broker answered at {} within {:?} (kafka.brokers, \
                         kafka.connect_timeout): {why}",
                        k.brokers.join(","),
                        timeout
                    ),
                    true,
                    Some(e),
                ))
            }
        }
    }

    fn kafka_native_producer(&self) -> Option<*mut rdkafka::bindings::rd_kafka_t> {
        use rdkafka::producer::Producer as _;
        Some(self.producer.client().client().native_ptr())
    }

    async fn consumer(
        &self,
        group: &str,
        events: mpsc::Sender<ConsumerEvent>,
    ) -> Result<Arc<dyn Consumer>> {
        let config = &self.config;
        let revoke_wait = config.dispatch.revoke_timeout + client_config::REVOKE_GRACE;
        let ctx = RebalanceContext::new(events, revoke_wait)
            .with_positions(Positions::new(config, self.offset_resets.clone()))
            .with_commit_interval(config.kafka.consumer.commit_interval);
        let consumer: BaseConsumer<RebalanceContext> = client_config::consumer(config, group)
            .create_with_context(ctx)
            .map_err(|e| client_config::config_error(&config.kafka, "consumer", &e))?;
        let settings = ConsumerSettings {
            group: group.to_string(),
            start_from: config.start_from,
            revoke_wait,
            admin_timeout: config.kafka.admin_timeout,
        };
        Ok(Arc::new(KafkaConsumer::start(
            consumer,
            self.topics.clone(),
            settings,
        )?))
    }
}
