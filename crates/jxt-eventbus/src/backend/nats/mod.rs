//! NATS JetStream backend (cargo feature `nats`).
//!
//! # How topics map onto JetStream
//!
//! | bus | JetStream |
//! |-----|-----------|
//! | topic `orders.created` | subject `orders.created` |
//! | the topic's log | a stream capturing the subject: the one named in `nats.topics.<topic>.stream`, else the one that already captures it, else (strategy permitting) a new stream named after the topic (`.` becomes `_`, plus a hash when escaped) with that one subject |
//! | partition | one per topic: `<topic>[0]` |
//! | offset | the stream sequence |
//! | consumer group | a durable pull consumer per topic, named after the group and the topic, with explicit acks; every bus of the group binds to it |
//! | group member owning a topic | with `sharing: pinned` (default), the bus the consumer's priority group is pinned to; with `sharing: shared`, every bus, record by record |
//! | commit | a `+ACK` per record, sent after its handler succeeded or it was written to the dead-letter topic |
//! | lag | the consumer's `num_pending + num_ack_pending` |
//!
//! One NATS connection per bus carries publishes, pulls and acks. The bus
//! never falls back to core NATS: building the bus fails when the account
//! has no JetStream.
//!
//! # Delivery
//!
//! * **Publish** waits for the PubAck (`nats.publish_timeout`). The message
//!   id is sent as `Nats-Msg-Id`, so a publish retried within the stream's
//!   duplicate window is stored once.
//! * **Flow control.** A topic's pull loop asks for `nats.pull_batch`
//!   records at a time while the dispatcher has room; a paused topic sends no
//!   new pull requests, and a topic never holds more than
//!   `dispatch.max_buffered_per_partition` plus one batch. `max_ack_pending` is sized from
//!   `dispatch.max_buffered` (JetStream's default of 1000 would stall a bus
//!   with a larger buffer).
//! * **Acks.** Records waiting in a key lane or running are marked in
//!   progress every `ack_wait / 3`, so they are not redelivered while the bus
//!   holds them. Retries happen inside the key's lane: the bus never `NAK`s
//!   a failing record (that would let later records of the key overtake it);
//!   after the last attempt it goes to the dead-letter topic and is then
//!   acknowledged.
//! * **Unfinished records** — of an unsubscribed topic, left at the shutdown
//!   deadline, or held by a bus that was dropped — are `NAK`ed in stream
//!   order, so the group gets them again at once. Those of a bus that
//!   crashed are redelivered by JetStream after `ack_wait`.
//! * **Recovery.** A pull loop that loses its connection, misses two idle
//!   heartbeats, or finds its consumer deleted checks (or recreates) the
//!   stream and the consumer and pulls again, with backoff. A recreated
//!   consumer starts after the last sequence the group was seen to have
//!   acknowledged.
//!
//! # Ordering within a group
//!
//! JetStream has no partitions to hand out by key. By default
//! (`nats.consumer.sharing: pinned`) each topic's consumer has a priority
//! group with the pinned-client policy: the server delivers a topic's
//! records to one bus of the group at a time, and the others stand by. Per-key
//! order then holds across the group, as on Kafka, at the price of one
//! active bus per topic (the group's topics are spread over its buses).
//!
//! * The pinned bus keeps its pin with its pull requests, and with
//!   record-less ones while it is paused, full or idle.
//! * Standby buses keep no pull request waiting (it would make the server
//!   reorder redeliveries); they read the consumer's pin every second.
//! * A bus that unsubscribes, shuts down or is dropped pauses delivery,
//!   `NAK`s what it held, releases the pin and resumes: a standby takes over
//!   within a second and gets those records first (the server redelivers
//!   before anything new).
//! * Buses spread the topics among themselves (`nats.consumer.balance`,
//!   see `balance`): a bus pinned to two topics more than another bus of
//!   the group subscribed to one of them hands that one over, as when
//!   unsubscribing.
//! * A bus that crashes or loses its connection keeps the pin until
//!   `nats.consumer.pinned_ttl` (default twice `ack_wait`) passed without a
//!   pull request; by then its unfinished records are due for redelivery,
//!   so the standby again gets them before later records of their keys.
//! * A bus that loses a topic — the server answers with a pin-id mismatch,
//!   the connection is lost, or the pull session fails — takes it as a
//!   *lost* revoke, as on Kafka (see `ownership`): the records it holds are
//!   dropped unacknowledged and no longer marked in progress, and it takes
//!   no new record of the topic until what it had out is acknowledged or
//!   due again. The client pings a silent server every `pinned_ttl / 8`
//!   (at most 60 s) and declares the connection lost at the third
//!   unanswered ping, so a bus whose connection stalls stops well before a
//!   standby can be pinned.
//!
//! With `sharing: shared` every bus pulls and JetStream spreads records one
//! by one: more throughput for a group of several buses, but per-key order
//! only within one bus (two records of a key may be handled at once by two
//! buses), and redeliveries may come after later records of their key.

use std::sync::Arc;

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::context::ContextBuilder;
use async_nats::jetstream::Context;
use async_nats::Client;
use async_trait::async_trait;
use tokio::sync::{mpsc, watch};

use crate::backend::{Backend, Consumer, ConsumerEvent, Producer};
use crate::config::{BusConfig, NatsConfig, StartFrom};
use crate::error::{Error, Result};

mod acker;
mod balance;
mod connect;
mod consumer;
mod convert;
mod durable;
pub mod inspect;
mod naming;
mod ownership;
mod permissions;
mod pin;
mod producer;
mod pull_request;
mod puller;
mod streams;

use acker::Acker;
use balance::Balance;
use consumer::{DurableDefaults, NatsConsumer};
use producer::NatsProducer;
use puller::PullContext;
use streams::StreamRegistry;

/// The NATS JetStream backend of one bus.
#[derive(Debug)]
pub(crate) struct NatsBackend {
    client: Client,
    js: Context,
    config: Arc<NatsConfig>,
    streams: Arc<StreamRegistry>,
    producer: Arc<NatsProducer>,
    link: watch::Receiver<connect::Link>,
    defaults: DurableDefaults,
    pull_batch: usize,
    held_limit: usize,
}

impl NatsBackend {
    /// Connects and checks that JetStream is available.
    ///
    /// # Errors
    /// [`Error::Backend`] when no server answers or JetStream is not enabled
    /// for the account; [`Error::Config`] for unreadable credentials.
    pub(crate) async fn connect(config: &BusConfig) -> Result<Self> {
        let nats = Arc::new(config.nats.clone());
        let conn = connect::connect(config).await?;
        // Admin requests and PubAcks have their own timeouts: one context
        // for each, on the same connection.
        let js = context(&conn.client, nats.domain.as_deref(), nats.request_timeout);
        let publish_js = context(&conn.client, nats.domain.as_deref(), nats.publish_timeout);
        js.query_account().await.map_err(|e| {
            backend_error(
                format!(
                    "JetStream is not available on {} for this account (the bus does not fall \
                     back to core NATS; start the server with JetStream enabled): {e}",
                    crate::config::masked_urls(&nats.servers)
                ),
                false,
                e,
            )
        })?;
        let streams = Arc::new(StreamRegistry::new(
            js.clone(),
            nats.clone(),
            config.dead_letter.suffix.clone(),
        ));
        let producer = Arc::new(NatsProducer::new(
            publish_js,
            streams.clone(),
            nats.publish_timeout,
            conn.denials.clone(),
        ));
        // Validation keeps `dispatch.max_buffered` within `u32` (the range of
        // `nats.max_ack_pending`); a cast could wrap to -1, "unlimited".
        let max_ack_pending = nats.max_ack_pending.map_or_else(
            || i64::try_from(config.dispatch.max_buffered).unwrap_or(i64::from(u32::MAX)),
            i64::from,
        );
        let pull_batch = nats
            .pull_batch
            .min((config.dispatch.max_buffered_per_partition / 2).max(1));
        Ok(NatsBackend {
            client: conn.client,
            js,
            streams,
            producer,
            link: conn.link,
            defaults: DurableDefaults {
                ack_wait: nats.ack_wait,
                max_ack_pending,
                start: match config.start_from {
                    StartFrom::Earliest => DeliverPolicy::All,
                    StartFrom::Latest => DeliverPolicy::New,
                },
                request_timeout: nats.request_timeout,
                pinned_ttl: nats.pinned_ttl(),
            },
            pull_batch,
            held_limit: config.dispatch.max_buffered_per_partition + pull_batch,
            config: nats,
        })
    }
}

#[async_trait]
impl Backend for NatsBackend {
    fn name(&self) -> &'static str {
        "nats"
    }

    fn producer(&self) -> Arc<dyn Producer> {
        self.producer.clone()
    }

    async fn check(&self) -> Result<()> {
        let state = self.client.connection_state();
        if state != async_nats::connection::State::Connected {
            return Err(Error::Backend {
                backend: "nats",
                reason: format!(
                    "not connected to NATS ({state:?}); the client keeps reconnecting to {}",
                    crate::config::masked_urls(&self.config.servers)
                ),
                retryable: true,
                source: None,
            });
        }
        self.js
            .query_account()
            .await
            .map(|_| ())
            .map_err(|e| backend_error(format!("JetStream does not answer: {e}"), true, e))
    }

    async fn consumer(
        &self,
        group: &str,
        events: mpsc::Sender<ConsumerEvent>,
    ) -> Result<Arc<dyn Consumer>> {
        let ctx = PullContext {
            js: self.js.clone(),
            client: self.client.clone(),
            streams: self.streams.clone(),
            events,
            acker: Acker::spawn(self.client.clone(), self.config.ack_wait),
            link: self.link.clone(),
            ack_wait: self.config.ack_wait,
            batch: self.pull_batch,
            limit: self.held_limit,
            expires: self.config.pull_expires,
            heartbeat: self.config.idle_heartbeat,
            api_prefix: api_prefix(self.config.domain.as_deref()),
            pinned_ttl: self.defaults.pinned_ttl,
            balance: Arc::new(Balance::new(
                (self.defaults.pinned_ttl.is_some() && self.config.consumer.balance)
                    .then_some(self.config.consumer.balance_interval),
            )),
        };
        Ok(NatsConsumer::start_new(ctx, group, self.defaults.clone()))
    }
}

/// A JetStream context whose requests (and PubAck waits) time out after
/// `timeout`.
fn context(client: &Client, domain: Option<&str>, timeout: std::time::Duration) -> Context {
    let builder = ContextBuilder::new().timeout(timeout);
    match domain {
        Some(domain) => builder.domain(domain).build(client.clone()),
        None => builder.build(client.clone()),
    }
}

/// The JetStream API subject prefix, as the client's context uses it.
fn api_prefix(domain: Option<&str>) -> String {
    match domain {
        Some(domain) => format!("$JS.{domain}.API"),
        None => "$JS.API".to_string(),
    }
}

/// A backend error with its source.
fn backend_error<E>(reason: String, retryable: bool, source: E) -> Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    Error::Backend {
        backend: "nats",
        reason,
        retryable,
        source: Some(Box::new(source)),
    }
}

/// A backend error without a source: the broker's state is not what the
/// configuration asks for, and retrying will not change that.
fn backend_refusal(reason: String) -> Error {
    Error::Backend {
        backend: "nats",
        reason,
        retryable: false,
        source: None,
    }
}
