//! Reading envelope JSON with jxt-core's decoder rules (json-iterator,
//! `ConfigCompatibleWithStandardLibrary`): keys matched ASCII
//! case-insensitively, unknown keys skipped, the last duplicate wins, `null`
//! leaves a field at its zero value, `event_version` an integer only.
//! `tenant_id` also accepts a string of digits, which older producers wrote.

use std::fmt;

use chrono::{DateTime, FixedOffset};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{check, go_json, Envelope};

/// An envelope as read, before validation.
#[derive(Debug, Default)]
pub(super) struct Parts {
    event_id: String,
    aggregate_id: String,
    event_type: String,
    event_version: i64,
    timestamp: Option<DateTime<FixedOffset>>,
    trace_id: String,
    correlation_id: String,
    tenant_id: i64,
    /// `None` when missing or `null`.
    payload: Option<Box<RawValue>>,
}

impl Parts {
    /// Validates (jxt-core's rules and order) and builds the envelope.
    pub(super) fn into_envelope(self) -> Result<Envelope, String> {
        check(
            &self.event_id,
            &self.aggregate_id,
            &self.event_type,
            self.event_version,
            self.payload.is_some(),
        )?;
        let payload = self.payload.ok_or("payload is required")?;
        let opt = |s: String| (!s.is_empty()).then_some(s);
        Ok(Envelope {
            event_id: self.event_id,
            aggregate_id: self.aggregate_id,
            event_type: self.event_type,
            event_version: self.event_version,
            timestamp: self.timestamp.unwrap_or_else(go_json::zero_time),
            trace_id: opt(self.trace_id),
            correlation_id: opt(self.correlation_id),
            tenant_id: (self.tenant_id != 0).then_some(self.tenant_id),
            payload,
        })
    }
}

enum Field {
    EventId,
    AggregateId,
    EventType,
    EventVersion,
    Timestamp,
    TraceId,
    CorrelationId,
    TenantId,
    Payload,
    Other,
}

fn field(key: &str) -> Field {
    const NAMES: [(&str, Field); 9] = [
        ("event_id", Field::EventId),
        ("aggregate_id", Field::AggregateId),
        ("event_type", Field::EventType),
        ("event_version", Field::EventVersion),
        ("timestamp", Field::Timestamp),
        ("trace_id", Field::TraceId),
        ("correlation_id", Field::CorrelationId),
        ("tenant_id", Field::TenantId),
        ("payload", Field::Payload),
    ];
    NAMES
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(key))
        .map_or(Field::Other, |(_, f)| f)
}

impl<'de> Deserialize<'de> for Parts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(PartsVisitor)
    }
}

struct PartsVisitor;

impl<'de> Visitor<'de> for PartsVisitor {
    type Value = Parts;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an envelope JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Parts, A::Error> {
        let mut p = Parts::default();
        while let Some(key) = map.next_key::<String>()? {
            let text = |map: &mut A| -> Result<String, A::Error> {
                Ok(map.next_value::<Option<String>>()?.unwrap_or_default())
            };
            match field(&key) {
                Field::EventId => p.event_id = text(&mut map)?,
                Field::AggregateId => p.aggregate_id = text(&mut map)?,
                Field::EventType => p.event_type = text(&mut map)?,
                Field::TraceId => p.trace_id = text(&mut map)?,
                Field::CorrelationId => p.correlation_id = text(&mut map)?,
                Field::EventVersion => {
                    p.event_version = map
                        .next_value::<Option<i64>>()
                        .map_err(|e| de::Error::custom(format!("event_version: {e}")))?
                        .unwrap_or_default();
                }
                Field::Timestamp => {
                    p.timestamp = match map.next_value::<Option<String>>() {
                        Ok(None) => None,
                        Ok(Some(s)) => Some(go_json::parse_time(&s).map_err(de::Error::custom)?),
                        Err(e) => {
                            return Err(de::Error::custom(format!(
                                "timestamp must be an RFC 3339 string: {e}"
                            )))
                        }
                    };
                }
                Field::TenantId => {
                    p.tenant_id = map.next_value::<Option<TenantId>>()?.map_or(0, |t| t.0);
                }
                Field::Payload => p.payload = map.next_value()?,
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(p)
    }
}

/// A tenant id: a JSON integer (jxt-core's `int`) or a string of digits
/// with an optional `-` (older producers).
struct TenantId(i64);

impl<'de> Deserialize<'de> for TenantId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TenantVisitor)
    }
}

struct TenantVisitor;

impl Visitor<'_> for TenantVisitor {
    type Value = TenantId;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tenant_id as an integer or a string of digits")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<TenantId, E> {
        Ok(TenantId(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<TenantId, E> {
        i64::try_from(v)
            .map(TenantId)
            .map_err(|_| E::custom(format!("tenant_id {v} is out of range")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<TenantId, E> {
        let digits = v.strip_prefix('-').unwrap_or(v);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(E::custom(format!(
                "tenant_id {v:?} is neither an integer nor a string of digits"
            )));
        }
        v.parse()
            .map(TenantId)
            .map_err(|_| E::custom(format!("tenant_id {v:?} is out of range")))
    }
}
