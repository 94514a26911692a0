//! One async event-bus API over memory, Apache Kafka and NATS JetStream, with
//! per-aggregate ordered parallel processing and commits that are never wrong.
//!
//! Services publish domain events and handle them with plain async
//! functions. The bus runs one consumer (one group, every subscribed topic)
//! per instance, hands records to handlers in per-key lanes — one record per
//! key at a time, many keys at once — and acknowledges a record only after its
//! handler succeeded or it was written to a dead-letter topic.
//!
//! | feature | backend | default |
//! |---------|---------|---------|
//! | —       | memory (in-process broker with partitions, groups, lag) | always |
//! | `kafka` | Apache Kafka through rdkafka (bundled librdkafka) | off |
//! | `nats`  | NATS JetStream through async-nats | off |
//! | `http`  | operator endpoints `/metrics`, `/healthz`, `/readyz`, `/status` (axum) | off |
//!
//! ```
//! use jxt_eventbus::{EventBus, Message, SubscribeOptions, Delivery, HandlerResult};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> jxt_eventbus::Result<()> {
//! let bus = EventBus::builder().group("billing").build().await?;
//! let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
//! bus.subscribe(
//!     "orders",
//!     move |d: Delivery| {
//!         let tx = tx.clone();
//!         async move {
//!             tx.send(d.key_str().unwrap_or_default().to_string()).unwrap();
//!             HandlerResult::Ok(())
//!         }
//!     },
//!     SubscribeOptions::new(),
//! )
//! .await?;
//! bus.publish("orders", Message::new("created").with_key("order-1")).await?;
//! assert_eq!(rx.recv().await.as_deref(), Some("order-1"));
//! bus.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Delivery semantics
//!
//! **At least once.** A record is acknowledged (Kafka offset stored, JetStream
//! ack, memory position committed) only after its handler returned `Ok`, or
//! after it was durably written to its dead-letter topic. Per partition, the
//! committed position is the lowest record not yet finished: when record 7 of
//! a slow key is still running and 8..100 of other keys are done, the position
//! stays at 7. A crash therefore redelivers 7 and never skips it. On Kafka
//! the position is committed as it advances, with 8..100 listed as finished
//! in the commit metadata, so the next owner hands out 7 again but not
//! 8..100; what a crash repeats is bounded by the records running at that
//! moment (and those finished during one commit round trip), not by a
//! commit timer. Handlers must still be idempotent (the event id makes that
//! easy).
//!
//! **Per-key order.** Records with the same key on the same topic are handled
//! one at a time in publish order, retries included: a retry holds the key's
//! lane, so a later record of that key never overtakes it, while other keys go
//! on. Keyless records keep their partition's order in `key` mode.
//!
//! **Bounded memory.** Buffered and running records are capped per partition
//! and per bus; at the cap the consumer pauses those partitions (it keeps
//! polling, so the group does not evict it) instead of buffering more.
//!
//! **Shutdown keeps handlers working.** [`EventBus::shutdown`] stops intake,
//! lets the records running in handlers finish and commits; records fetched
//! but not started stay unacknowledged for the group's next owner
//! ([`ShutdownMode::FinishRunning`], the default) or are handled first
//! ([`ShutdownMode::DrainBuffered`]). Publishing closes only after that, so a
//! handler that publishes through the same bus never sees
//! [`Error::Closed`] while its record counts; a record that fails after the
//! shutdown began is redelivered, never dead-lettered.
//!
//! **Nothing is dropped.** Full queues pause intake; they never discard
//! records or acknowledgements. A handler panic is caught and treated as a
//! permanent failure, so it cannot stall its partition.
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]
#![forbid(unsafe_code)]

pub mod backend;
pub mod backlog;
pub mod batch;
mod bus;
pub mod config;
mod delivery;
pub mod dispatch;
pub mod envelope;
mod error;
mod extract;
mod handler;
pub mod health;
#[cfg(feature = "http")]
pub mod http;
mod log_limit;
mod message;
pub mod metrics;
pub mod middleware;
pub mod offsets;
mod outputs;
pub mod testing;
pub mod trace;
pub mod validate;

pub use backend::memory::MemoryBroker;
pub use backend::{PartitionLag, PublishReceipt, TopicPartition};
pub use batch::{BatchError, BatchHandler, BatchOptions, BatchResult};
pub use bus::publisher_dead_letters::{self, PublisherDeadLetter};
pub use bus::{
    DeadLetter, DeadLetterFilter, EventBus, EventBusBuilder, ListOptions, RefusedDeadLetter,
    ReplayOptions, ReplayReport, SubscribeOptions, DEFAULT_MAX_REPLAYS, REPLAYED_FROM_ID_HEADER,
    REPLAYED_HEADER,
};
pub use config::{BackendKind, BusConfig, Ordering, ShutdownMode};
pub use delivery::Delivery;
pub use envelope::{Envelope, EnvelopeBuilder, EventInfo, TenantIdEncoding};
pub use error::{BoxError, Error, Result};
pub use extract::{Event, FromDelivery, Json};
pub use handler::{ErrorKind, Handler, HandlerError, HandlerResult, ResultExt};
pub use health::{HealthState, HealthStatus};
pub use message::{Headers, Message};
pub use outputs::{IntoOutputs, Outputs};

/// The README's example is compiled as a doctest so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
