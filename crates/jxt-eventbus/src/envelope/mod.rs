//! The typed domain-event form on top of [`Message`], wire-compatible with
//! jxt-core's (Go) JSON envelope, so Go and Rust services share topics.
//!
//! The reference is what jxt-core v1.7.5 writes and reads (the golden
//! fixtures in `shared/interop/jxt-core/`):
//!
//! * **Write** ([`Envelope::to_bytes`]): fields in the order `event_id,
//!   aggregate_id, event_type, event_version, timestamp, trace_id?,
//!   correlation_id?, tenant_id?, payload`, compact; strings escaped as Go
//!   does (`<` `>` `&` U+2028 U+2029 as `\uXXXX`); the timestamp as Go's
//!   `time.Time` (RFC 3339, nanoseconds with trailing zeros trimmed, offset
//!   kept); `trace_id`/`correlation_id` left out when empty; `tenant_id` a
//!   JSON number, left out when 0; the payload embedded byte for byte.
//! * **Read** ([`Envelope::from_slice`]): keys matched ASCII
//!   case-insensitively (`EVENT_ID` works, `eventId` does not), unknown keys
//!   ignored, the last of duplicate keys wins, bytes after the object
//!   rejected, `event_version` an integer only, a missing timestamp is Go's
//!   zero time. `tenant_id` is read as a number **or** a string of digits
//!   (what older producers wrote; current jxt-core itself rejects the
//!   string form).
//! * **Validate** ([`Envelope::validate`]): jxt-core's rules, in its order,
//!   with its error texts (see [`validate::aggregate_id_problem`]).
//!
//! Where this bus is stricter than jxt-core, it is so that what it writes is
//! always readable by jxt-core: a payload that is not JSON cannot be built
//! (jxt-core silently writes `"payload":null`), and a `null` payload is
//! refused at publish (jxt-core's reader refuses it).

mod builder;
mod decode;
pub(crate) mod go_json;
pub mod headers;

use chrono::{DateTime, FixedOffset, Utc};
use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::{Error, Result};
use crate::message::Message;
use crate::validate;

pub use builder::EnvelopeBuilder;
pub use headers::EventInfo;

/// How `tenant_id` is written. Reading always accepts both forms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TenantIdEncoding {
    /// A JSON number (`"tenant_id":42`), as jxt-core v1.7 writes and reads
    /// it (a Go `int`); its reader refuses a string. The default.
    #[default]
    Number,
    /// A JSON string of digits (`"tenant_id":"42"`), for consumers built on
    /// older jxt-core envelopes whose `TenantID` is a Go `string` and which
    /// refuse a number.
    String,
}

/// A domain event, as jxt-core's `Envelope`.
#[derive(Clone, Debug)]
pub struct Envelope {
    /// Unique event id (UUIDv7 by default; any non-blank text is accepted).
    /// Also the message id.
    pub event_id: String,
    /// Aggregate id; becomes the message key, so events of one aggregate
    /// are handled in order. Validated trimmed, sent as is.
    pub aggregate_id: String,
    /// Event type, e.g. `OrderCreated`.
    pub event_type: String,
    /// Version of the aggregate after this event; must be > 0.
    pub event_version: i64,
    /// When the event happened. The offset is kept on the wire, as Go keeps
    /// the zone of a `time.Time`; a missing timestamp reads as
    /// `0001-01-01T00:00:00Z` (Go's zero time).
    pub timestamp: DateTime<FixedOffset>,
    /// Trace id, if any (`None` and `""` are both left out).
    pub trace_id: Option<String>,
    /// Correlation id, if any (`None` and `""` are both left out).
    pub correlation_id: Option<String>,
    /// Tenant id, if any. jxt-core's is a Go `int` that is left out when 0,
    /// so `Some(0)` is written like `None` and reads back as `None`.
    pub tenant_id: Option<i64>,
    /// The event body, kept as raw JSON, byte for byte.
    pub payload: Box<RawValue>,
}

impl Envelope {
    /// A new envelope with a fresh UUIDv7 id and the current time (UTC).
    /// The two strings are easy to swap: [`Envelope::builder`] names them.
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
            timestamp: Utc::now().fixed_offset(),
            trace_id: None,
            correlation_id: None,
            tenant_id: None,
            payload,
        })
    }

    /// Replaces the payload with JSON text kept exactly as given (whitespace
    /// included), as jxt-core embeds its `json.RawMessage`.
    ///
    /// # Errors
    /// [`Error::InvalidMessage`] when `json` is not one JSON value.
    pub fn with_raw_payload(mut self, json: impl Into<String>) -> Result<Self> {
        self.payload = RawValue::from_string(json.into())
            .map_err(|e| Error::InvalidMessage(format!("envelope payload is not JSON: {e}")))?;
        Ok(self)
    }

    /// Sets the event id.
    #[must_use]
    pub fn with_event_id(mut self, id: impl Into<String>) -> Self {
        self.event_id = id.into();
        self
    }

    /// Sets the timestamp.
    #[must_use]
    pub fn with_timestamp(mut self, at: DateTime<FixedOffset>) -> Self {
        self.timestamp = at;
        self
    }

    /// Sets the trace id (`""` means none, as in jxt-core).
    #[must_use]
    pub fn with_trace_id(mut self, id: impl Into<String>) -> Self {
        self.trace_id = Some(id.into()).filter(|s| !s.is_empty());
        self
    }

    /// Sets the correlation id (`""` means none, as in jxt-core).
    #[must_use]
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into()).filter(|s| !s.is_empty());
        self
    }

    /// Sets the tenant id (0 means none, as in jxt-core).
    #[must_use]
    pub fn with_tenant_id(mut self, id: i64) -> Self {
        self.tenant_id = (id != 0).then_some(id);
        self
    }

    /// Checks the envelope by jxt-core's `Validate()` rules, in its order
    /// (the first failure wins): `event_id`, `aggregate_id`, `event_type`
    /// non-blank after trimming; `event_version > 0`; then the aggregate id
    /// format (trimmed, at most 256 bytes of `[A-Za-z0-9:_./-]`). The
    /// timestamp and the tenant are not checked.
    ///
    /// # Errors
    /// [`Error::InvalidMessage`] with `invalid envelope: ` and jxt-core's
    /// text, e.g. `invalid envelope: event_version must be positive`.
    pub fn validate(&self) -> Result<()> {
        check(
            &self.event_id,
            &self.aggregate_id,
            &self.event_type,
            self.event_version,
            true,
        )
        .map_err(|e| Error::InvalidMessage(format!("invalid envelope: {e}")))
    }

    /// The JSON bytes jxt-core's `ToBytes()` writes for the same values
    /// (see the module docs), after [`Envelope::validate`].
    ///
    /// # Errors
    /// As [`Envelope::validate`].
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        self.to_bytes_with(TenantIdEncoding::Number)
    }

    /// As [`Envelope::to_bytes`], with `tenant_id` written as `tenant`
    /// says.
    ///
    /// # Errors
    /// As [`Envelope::validate`].
    pub fn to_bytes_with(&self, tenant: TenantIdEncoding) -> Result<Vec<u8>> {
        self.validate()?;
        Ok(self.encode(tenant))
    }

    fn encode(&self, tenant: TenantIdEncoding) -> Vec<u8> {
        let mut out = Vec::with_capacity(160 + self.payload.get().len());
        let field = |out: &mut Vec<u8>, name: &str| {
            out.push(if out.is_empty() { b'{' } else { b',' });
            out.push(b'"');
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
        };
        field(&mut out, "event_id");
        go_json::write_string(&mut out, &self.event_id);
        field(&mut out, "aggregate_id");
        go_json::write_string(&mut out, &self.aggregate_id);
        field(&mut out, "event_type");
        go_json::write_string(&mut out, &self.event_type);
        field(&mut out, "event_version");
        out.extend_from_slice(self.event_version.to_string().as_bytes());
        field(&mut out, "timestamp");
        go_json::write_string(&mut out, &go_json::format_time(&self.timestamp));
        if let Some(id) = non_empty(&self.trace_id) {
            field(&mut out, "trace_id");
            go_json::write_string(&mut out, id);
        }
        if let Some(id) = non_empty(&self.correlation_id) {
            field(&mut out, "correlation_id");
            go_json::write_string(&mut out, id);
        }
        if let Some(t) = self.tenant_id.filter(|t| *t != 0) {
            field(&mut out, "tenant_id");
            match tenant {
                TenantIdEncoding::Number => out.extend_from_slice(t.to_string().as_bytes()),
                TenantIdEncoding::String => go_json::write_string(&mut out, &t.to_string()),
            }
        }
        field(&mut out, "payload");
        out.extend_from_slice(self.payload.get().as_bytes());
        out.push(b'}');
        out
    }

    /// Reads an envelope as jxt-core's `FromBytes()` does (see the module
    /// docs), then validates it.
    ///
    /// # Errors
    /// [`Error::InvalidMessage`]: `failed to unmarshal envelope: …` when the
    /// bytes are not an envelope object, `invalid envelope: …` (jxt-core's
    /// text) when it does not validate; a missing or `null` payload is
    /// `invalid envelope: payload is required`.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        let parts: decode::Parts = serde_json::from_slice(bytes)
            .map_err(|e| Error::InvalidMessage(format!("failed to unmarshal envelope: {e}")))?;
        parts
            .into_envelope()
            .map_err(|e| Error::InvalidMessage(format!("invalid envelope: {e}")))
    }

    /// The payload decoded as `T`.
    ///
    /// # Errors
    /// The JSON error when the payload is not a `T`.
    pub fn decode_payload<'a, T: Deserialize<'a>>(&'a self) -> serde_json::Result<T> {
        serde_json::from_str(self.payload.get())
    }

    /// Validates and turns the envelope into the message jxt-core's
    /// `PublishEnvelope` sends: value = [`Envelope::to_bytes`], key = the
    /// aggregate id (untrimmed), id = the event id, and the `X-*` headers in
    /// jxt-core's order and encoding (see [`headers`]). The message
    /// timestamp is the time of publishing, as jxt-core's record timestamp.
    ///
    /// # Errors
    /// [`Error::InvalidMessage`] when [`Envelope::validate`] fails, or when
    /// the payload is `null` (which jxt-core's reader refuses).
    pub fn to_message(&self) -> Result<Message> {
        self.to_message_with(TenantIdEncoding::Number)
    }

    /// As [`Envelope::to_message`], with `tenant_id` in the body written as
    /// `tenant` says (the `X-Tenant-ID` header is decimal text either way).
    ///
    /// # Errors
    /// As [`Envelope::to_message`].
    pub fn to_message_with(&self, tenant: TenantIdEncoding) -> Result<Message> {
        let body = self.to_bytes_with(tenant)?;
        if self.payload.get() == "null" {
            return Err(Error::InvalidMessage(
                "invalid envelope: payload is null, which jxt-core's reader refuses (payload is required)".into(),
            ));
        }
        let mut msg = Message::new(body)
            .with_id(self.event_id.clone())
            .with_key(self.aggregate_id.clone());
        headers::write(self, &mut msg.headers);
        Ok(msg)
    }

    /// Decodes and validates an envelope from a message payload
    /// ([`Envelope::from_slice`]).
    ///
    /// # Errors
    /// As [`Envelope::from_slice`].
    pub fn from_message(msg: &Message) -> Result<Self> {
        Self::from_slice(msg.payload())
    }
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

/// jxt-core's `Validate()`: the first failing rule, in its words.
fn check(
    event_id: &str,
    aggregate_id: &str,
    event_type: &str,
    event_version: i64,
    has_payload: bool,
) -> std::result::Result<(), String> {
    if event_id.trim().is_empty() {
        return Err("event_id is required".into());
    }
    if aggregate_id.trim().is_empty() {
        return Err("aggregate_id is required".into());
    }
    if event_type.trim().is_empty() {
        return Err("event_type is required".into());
    }
    if event_version <= 0 {
        return Err("event_version must be positive".into());
    }
    if !has_payload {
        return Err("payload is required".into());
    }
    match validate::aggregate_id_problem(aggregate_id) {
        Some(p) => Err(format!("invalid aggregate_id: {p}")),
        None => Ok(()),
    }
}

/// The same fields and order as [`Envelope::to_bytes`]; serde_json's string
/// escaping differs from Go's, so use `to_bytes` for the wire.
impl Serialize for Envelope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let trace = non_empty(&self.trace_id);
        let correlation = non_empty(&self.correlation_id);
        let tenant = self.tenant_id.filter(|t| *t != 0);
        let n = 6 + [trace.is_some(), correlation.is_some(), tenant.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        let mut st = s.serialize_struct("Envelope", n)?;
        st.serialize_field("event_id", &self.event_id)?;
        st.serialize_field("aggregate_id", &self.aggregate_id)?;
        st.serialize_field("event_type", &self.event_type)?;
        st.serialize_field("event_version", &self.event_version)?;
        st.serialize_field("timestamp", &go_json::format_time(&self.timestamp))?;
        if let Some(t) = trace {
            st.serialize_field("trace_id", t)?;
        }
        if let Some(c) = correlation {
            st.serialize_field("correlation_id", c)?;
        }
        if let Some(t) = tenant {
            st.serialize_field("tenant_id", &t)?;
        }
        st.serialize_field("payload", &self.payload)?;
        st.end()
    }
}

/// Reads and validates as [`Envelope::from_slice`] (JSON only: the payload
/// is a [`RawValue`]).
impl<'de> Deserialize<'de> for Envelope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        decode::Parts::deserialize(d)?
            .into_envelope()
            .map_err(|e| serde::de::Error::custom(format!("invalid envelope: {e}")))
    }
}

#[cfg(test)]
mod tests;
