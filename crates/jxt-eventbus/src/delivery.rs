//! What a handler receives.

use std::sync::Arc;

use bytes::Bytes;

use crate::message::{Headers, Message};

/// One record handed to a handler: the message plus where it came from and
/// how often it has been tried.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub(crate) topic: Arc<str>,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) attempt: u32,
    pub(crate) in_recovery: bool,
    pub(crate) message: Arc<Message>,
}

impl Delivery {
    /// The W3C trace context the publisher sent (every record published
    /// through the bus has one; `None` for records written by other
    /// producers without a valid `traceparent`).
    pub fn trace_parent(&self) -> Option<crate::trace::TraceParent> {
        crate::trace::TraceParent::from_headers(&self.message.headers)
    }

    /// Topic the record was read from.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Partition (0 on backends without partitions).
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// Offset in its partition (Kafka offset, memory offset, JetStream stream
    /// sequence).
    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// 1 on the first try, then 2, 3, ... on retries.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Whether the bus is catching up on a backlog (recovery mode).
    pub fn in_recovery(&self) -> bool {
        self.in_recovery
    }

    /// The message.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// The key (aggregate id) as it was published, if any.
    pub fn key(&self) -> Option<&[u8]> {
        self.message.key.as_deref()
    }

    /// The key as text; `None` when there is none or it is not UTF-8.
    pub fn key_str(&self) -> Option<&str> {
        self.message.key_str()
    }

    /// The payload; empty for a tombstone ([`Delivery::is_tombstone`]).
    pub fn payload(&self) -> &Bytes {
        self.message.payload()
    }

    /// Whether the payload is null: a tombstone, which deletes its key on a
    /// compacted Kafka topic.
    pub fn is_tombstone(&self) -> bool {
        self.message.is_tombstone()
    }

    /// The headers.
    pub fn headers(&self) -> &Headers {
        &self.message.headers
    }

    /// Event id, type, aggregate, tenant, trace and correlation ids: from
    /// the payload when it is a jxt-core envelope, otherwise from jxt-core's
    /// `X-*` headers (see [`crate::envelope::headers`]).
    pub fn event_info(&self) -> crate::envelope::EventInfo {
        crate::envelope::EventInfo::of(&self.message)
    }

    /// Takes the message out. This copies it: the bus keeps the record
    /// until the handler finished (for retries and dead letters).
    pub fn into_message(self) -> Message {
        Arc::unwrap_or_clone(self.message)
    }
}

impl Delivery {
    /// A delivery of `message` as read from `topic` (used by the worker's
    /// callers and by [`crate::testing::DeliveryBuilder`]).
    pub(crate) fn from_parts(
        topic: Arc<str>,
        partition: i32,
        offset: i64,
        attempt: u32,
        in_recovery: bool,
        message: Arc<Message>,
    ) -> Self {
        Delivery {
            topic,
            partition,
            offset,
            attempt,
            in_recovery,
            message,
        }
    }
}
