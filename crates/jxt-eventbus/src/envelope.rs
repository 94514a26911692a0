//! The typed domain-event form on top of [`Message`], wire-compatible with
//! jxt-core's JSON envelope.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::{Error, Result};
use crate::message::Message;
use crate::validate;

/// Header names mirroring the envelope fields.
pub mod headers {
    /// Event id.
    pub const EVENT_ID: &str = "X-Event-ID";
    /// Aggregate id.
    pub const AGGREGATE_ID: &str = "X-Aggregate-ID";
    /// Event type.
    pub const EVENT_TYPE: &str = "X-Event-Type";
    /// Event version.
    pub const EVENT_VERSION: &str = "X-Event-Version";
    /// Trace id.
    pub const TRACE_ID: &str = "X-Trace-ID";
    /// Correlation id.
    pub const CORRELATION_ID: &str = "X-Correlation-ID";
    /// Tenant id.
    pub const TENANT_ID: &str = "X-Tenant-ID";
}

/// A domain event. Serializes to the same JSON as jxt-core's `Envelope`:
/// `event_id, aggregate_id, event_type, event_version, timestamp,
/// trace_id?, correlation_id?, tenant_id?, payload`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique event id (UUIDv7 by default). Also the message id.
    pub event_id: String,
    /// Aggregate id; becomes the message key, so events of one aggregate
    /// are handled in order.
    pub aggregate_id: String,
    /// Event type, e.g. `OrderCreated`.
    pub event_type: String,
    /// Version of the aggregate after this event; must be > 0.
    pub event_version: i64,
    /// When the event happened (RFC 3339).
    pub timestamp: DateTime<Utc>,
    /// Trace id, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// Correlation id, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// Tenant id, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// The event body, kept as raw JSON.
    pub payload: Box<RawValue>,
}

impl Envelope {
    /// A new envelope with a fresh UUIDv7 id and the current time.
    ///
    /// # Errors
    /// [`Error::InvalidMessage`] when the payload does not serialize to JSON.
    pub fn new(
        aggregate_id: impl Into<String>,
        event_type: impl Into<String>,
        event_version: i64,
        payload: &impl Serialize,
    ) -> Result<Self> {
        let payload = serde_json::value::to_raw_value(payload)
            .map_err(|e| Error::InvalidMessage(format!("envelope payload is not JSON: {e}")))?;
        Ok(Envelope {
            event_id: uuid::Uuid::now_v7().to_string(),
            aggregate_id: aggregate_id.into(),
            event_type: event_type.into(),
            event_version,
            timestamp: Utc::now(),
            trace_id: None,
            correlation_id: None,
            tenant_id: None,
            payload,
        })
    }

    /// Sets the trace id.
    #[must_use]
    pub fn with_trace_id(mut self, id: impl Into<String>) -> Self {
        self.trace_id = Some(id.into());
        self
    }

    /// Sets the correlation id.
    #[must_use]
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Sets the tenant id.
    #[must_use]
    pub fn with_tenant_id(mut self, id: impl Into<String>) -> Self {
        self.tenant_id = Some(id.into());
        self
    }

    /// Checks the envelope: valid aggregate id, non-empty event type and id,
    /// `event_version > 0`.
    ///
    /// # Errors
    /// [`Error::InvalidMessage`] naming the field.
    pub fn validate(&self) -> Result<()> {
        validate::aggregate_id(&self.aggregate_id)?;
        if self.event_id.is_empty() {
            return Err(Error::InvalidMessage("envelope event_id is empty".into()));
        }
        if self.event_type.is_empty() {
            return Err(Error::InvalidMessage("envelope event_type is empty".into()));
        }
        if self.event_version <= 0 {
            return Err(Error::InvalidMessage(format!(
                "envelope event_version is {}; it must be greater than 0",
                self.event_version
            )));
        }
        Ok(())
    }

    /// The payload decoded as `T`.
    ///
    /// # Errors
    /// The JSON error when the payload is not a `T`.
    pub fn decode_payload<'a, T: Deserialize<'a>>(&'a self) -> serde_json::Result<T> {
        serde_json::from_str(self.payload.get())
    }

    /// Validates and turns the envelope into a message: JSON payload, key =
    /// aggregate id, id = event id, and the `X-*` headers.
    ///
    /// # Errors
    /// [`Error::InvalidMessage`] when [`Envelope::validate`] fails.
    pub fn to_message(&self) -> Result<Message> {
        self.validate()?;
        let body = serde_json::to_vec(self)
            .map_err(|e| Error::InvalidMessage(format!("envelope does not serialize: {e}")))?;
        let mut msg = Message::new(body)
            .with_id(self.event_id.clone())
            .with_key(self.aggregate_id.clone())
            .with_header(headers::EVENT_ID, self.event_id.clone())
            .with_header(headers::AGGREGATE_ID, self.aggregate_id.clone())
            .with_header(headers::EVENT_TYPE, self.event_type.clone())
            .with_header(headers::EVENT_VERSION, self.event_version.to_string());
        let optional = [
            (headers::TRACE_ID, &self.trace_id),
            (headers::CORRELATION_ID, &self.correlation_id),
            (headers::TENANT_ID, &self.tenant_id),
        ];
        for (name, value) in optional {
            if let Some(v) = value {
                msg.headers.insert(name, v.clone());
            }
        }
        msg.timestamp = self.timestamp.into();
        Ok(msg)
    }

    /// Decodes and validates an envelope from a message payload.
    ///
    /// # Errors
    /// [`Error::InvalidMessage`] when the payload is not a valid envelope.
    pub fn from_message(msg: &Message) -> Result<Self> {
        let env: Envelope = serde_json::from_slice(&msg.payload)
            .map_err(|e| Error::InvalidMessage(format!("payload is not an envelope: {e}")))?;
        env.validate()?;
        Ok(env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_uses_jxt_core_field_names() {
        let env = Envelope::new(
            "order-1",
            "OrderCreated",
            1,
            &serde_json::json!({"total": 3}),
        )
        .unwrap()
        .with_trace_id("t-1");
        let v: serde_json::Value = serde_json::to_value(&env).unwrap();
        for field in [
            "event_id",
            "aggregate_id",
            "event_type",
            "event_version",
            "timestamp",
            "trace_id",
            "payload",
        ] {
            assert!(v.get(field).is_some(), "missing {field}: {v}");
        }
        assert!(v.get("tenant_id").is_none());
        assert_eq!(v["payload"]["total"], 3);
    }

    #[test]
    fn decodes_a_go_envelope() {
        let go = r#"{"event_id":"e1","aggregate_id":"order-9","event_type":"OrderPaid",
            "event_version":3,"timestamp":"2025-01-02T03:04:05.123456789Z",
            "tenant_id":"t","payload":{"amount":10}}"#;
        let env: Envelope = serde_json::from_str(go).unwrap();
        env.validate().unwrap();
        assert_eq!(env.event_version, 3);
        assert_eq!(env.tenant_id.as_deref(), Some("t"));
        assert_eq!(env.payload.get(), r#"{"amount":10}"#);
    }

    #[test]
    fn rejects_zero_version_and_bad_ids() {
        let mut env = Envelope::new("order-1", "X", 0, &1).unwrap();
        assert!(env
            .to_message()
            .unwrap_err()
            .to_string()
            .contains("event_version"));
        env.event_version = 1;
        env.aggregate_id = "bad id".into();
        assert!(env.to_message().is_err());
    }

    #[test]
    fn message_carries_headers_and_key() {
        let env = Envelope::new("order-1", "OrderCreated", 2, &"x")
            .unwrap()
            .with_correlation_id("c");
        let msg = env.to_message().unwrap();
        assert_eq!(msg.key.as_deref(), Some("order-1"));
        assert_eq!(msg.id, env.event_id);
        assert_eq!(msg.headers.get_str(headers::EVENT_VERSION), Some("2"));
        assert_eq!(msg.headers.get_str(headers::CORRELATION_ID), Some("c"));
        let back = Envelope::from_message(&msg).unwrap();
        assert_eq!(back.event_type, "OrderCreated");
    }
}
