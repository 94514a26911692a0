//! [`EnvelopeBuilder`]: an envelope with every field named at the call, so
//! the aggregate id and the event type cannot be swapped unnoticed.

use chrono::{DateTime, FixedOffset};
use serde::Serialize;

use super::Envelope;
use crate::error::{Error, Result};

/// Builds an [`Envelope`] with named setters; [`build`](Self::build)
/// validates it as jxt-core does. Unset: a fresh UUIDv7 event id and the
/// current time; `aggregate_id`, `event_type`, a positive `event_version`
/// and the payload are required.
///
/// ```
/// use jxt_eventbus::Envelope;
/// let e = Envelope::builder()
///     .aggregate_id("order-42")
///     .event_type("OrderCreated")
///     .event_version(1)
///     .payload(&serde_json::json!({"total": 12}))
///     .build()?;
/// assert_eq!((e.aggregate_id.as_str(), e.event_type.as_str()), ("order-42", "OrderCreated"));
///
/// let paid = Envelope::builder().caused_by(&e).event_type("PaymentRequested").event_version(1).payload(&12).build()?;
/// assert_eq!(paid.aggregate_id, "order-42");
/// assert_eq!(paid.correlation_id, Some(e.event_id.clone()));
///
/// let missing = Envelope::builder().event_type("OrderCreated").event_version(1).payload(&1).build();
/// assert_eq!(missing.unwrap_err().to_string(), "invalid message: invalid envelope: aggregate_id is required");
/// # Ok::<(), jxt_eventbus::Error>(())
/// ```
#[derive(Debug, Default)]
#[must_use]
pub struct EnvelopeBuilder {
    aggregate_id: String,
    event_type: String,
    event_version: i64,
    payload: Option<Result<Box<serde_json::value::RawValue>>>,
    event_id: Option<String>,
    timestamp: Option<DateTime<FixedOffset>>,
    trace_id: Option<String>,
    correlation_id: Option<String>,
    tenant_id: Option<i64>,
}

impl EnvelopeBuilder {
    /// The aggregate id (the record key).
    pub fn aggregate_id(mut self, id: impl Into<String>) -> Self {
        self.aggregate_id = id.into();
        self
    }

    /// The event type, e.g. `OrderCreated`.
    pub fn event_type(mut self, event_type: impl Into<String>) -> Self {
        self.event_type = event_type.into();
        self
    }

    /// The version of the aggregate after this event (> 0).
    pub fn event_version(mut self, version: i64) -> Self {
        self.event_version = version;
        self
    }

    /// The payload, serialized to JSON.
    pub fn payload(mut self, payload: &impl Serialize) -> Self {
        self.payload = Some(
            serde_json::value::to_raw_value(payload)
                .map_err(|e| Error::InvalidMessage(format!("envelope payload is not JSON: {e}"))),
        );
        self
    }

    /// An event caused by `cause` (consume, then publish): the same
    /// aggregate id, and as correlation id the cause's correlation id, or
    /// its event id when it has none, so a chain of events shares one.
    pub fn caused_by(self, cause: &Envelope) -> Self {
        let correlation = cause
            .correlation_id
            .clone()
            .unwrap_or_else(|| cause.event_id.clone());
        self.aggregate_id(cause.aggregate_id.clone())
            .correlation_id(correlation)
    }

    /// The event id (default: a fresh UUIDv7).
    pub fn event_id(mut self, id: impl Into<String>) -> Self {
        self.event_id = Some(id.into());
        self
    }

    /// The time of the event (default: now, UTC).
    pub fn timestamp(mut self, at: DateTime<FixedOffset>) -> Self {
        self.timestamp = Some(at);
        self
    }

    /// The trace id.
    pub fn trace_id(mut self, id: impl Into<String>) -> Self {
        self.trace_id = Some(id.into());
        self
    }

    /// The correlation id (say, the event id of the event that caused it).
    pub fn correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// The tenant id.
    pub fn tenant_id(mut self, id: i64) -> Self {
        self.tenant_id = Some(id);
        self
    }

    /// The envelope, validated by [`Envelope::validate`].
    ///
    /// # Errors
    /// [`Error::InvalidMessage`] when the payload is missing or not JSON, or
    /// a field does not validate.
    pub fn build(self) -> Result<Envelope> {
        let payload = self.payload.ok_or_else(|| {
            Error::InvalidMessage("invalid envelope: payload is required".into())
        })??;
        let mut e = Envelope::new(self.aggregate_id, self.event_type, self.event_version, &0)?;
        e.payload = payload;
        if let Some(id) = self.event_id {
            e = e.with_event_id(id);
        }
        if let Some(at) = self.timestamp {
            e = e.with_timestamp(at);
        }
        if let Some(id) = self.trace_id {
            e = e.with_trace_id(id);
        }
        if let Some(id) = self.correlation_id {
            e = e.with_correlation_id(id);
        }
        if let Some(id) = self.tenant_id {
            e = e.with_tenant_id(id);
        }
        e.validate()?;
        Ok(e)
    }
}

impl Envelope {
    /// An [`EnvelopeBuilder`]: every field named, nothing to swap.
    pub fn builder() -> EnvelopeBuilder {
        EnvelopeBuilder::default()
    }

    /// The event this one causes, in one call (consume, then publish): as
    /// [`EnvelopeBuilder::caused_by`] — same aggregate id, the chain's
    /// correlation id — and the cause's trace id and tenant id, so the
    /// follow-up lands in the same trace and tenant. A fresh event id and the
    /// current time. For anything else, use the builder.
    ///
    /// ```
    /// use jxt_eventbus::Envelope;
    /// let order = Envelope::builder()
    ///     .aggregate_id("order-42")
    ///     .event_type("OrderPlaced")
    ///     .event_version(1)
    ///     .tenant_id(7)
    ///     .payload(&12)
    ///     .build()?;
    /// let paid = order.follow_up("PaymentRequested", 2, &12)?;
    /// assert_eq!((paid.aggregate_id.as_str(), paid.event_type.as_str()), ("order-42", "PaymentRequested"));
    /// assert_eq!((paid.event_version, paid.tenant_id), (2, Some(7)));
    /// assert_eq!(paid.correlation_id.as_deref(), Some(order.event_id.as_str()));
    /// assert_ne!(paid.event_id, order.event_id);
    /// # Ok::<(), jxt_eventbus::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidMessage`] when the payload is not JSON, the event
    /// type is empty or the version is not positive.
    pub fn follow_up(
        &self,
        event_type: impl Into<String>,
        event_version: i64,
        payload: &impl Serialize,
    ) -> Result<Envelope> {
        let mut builder = Envelope::builder()
            .caused_by(self)
            .event_type(event_type)
            .event_version(event_version)
            .payload(payload);
        builder.trace_id = self.trace_id.clone();
        builder.tenant_id = self.tenant_id;
        builder.build()
    }
}
