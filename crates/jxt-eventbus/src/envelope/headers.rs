//! The `X-*` record headers jxt-core's `PublishEnvelope` writes, and reading
//! an event's identity back from them when a record is not an envelope.
//!
//! | header | value | when |
//! |---|---|---|
//! | `X-Event-ID` | `event_id` | always |
//! | `X-Aggregate-ID` | `aggregate_id` (untrimmed) | always |
//! | `X-Event-Version` | `event_version`, decimal | always |
//! | `X-Event-Type` | `event_type` | always |
//! | `X-Trace-ID` | `trace_id` | when not empty |
//! | `X-Correlation-ID` | `correlation_id` | when not empty |
//! | `X-Tenant-ID` | `tenant_id`, decimal (`-7`) | when not 0 |
//!
//! In that order, values raw UTF-8. jxt-core's consumers and its outbox
//! acknowledgements read them case-sensitively.

use crate::message::{Headers, Message};

use super::Envelope;

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

/// The aggregate-id headers jxt-core's consumer looks at, in its order.
const AGGREGATE_ID_ALIASES: [&str; 4] = [
    AGGREGATE_ID,
    "x-aggregate-id",
    "Aggregate-ID",
    "aggregate-id",
];

/// Appends the headers of `env` as jxt-core's `PublishEnvelope` does (see the
/// module docs).
pub(super) fn write(env: &Envelope, out: &mut Headers) {
    out.insert(EVENT_ID, env.event_id.clone());
    out.insert(AGGREGATE_ID, env.aggregate_id.clone());
    out.insert(EVENT_VERSION, env.event_version.to_string());
    out.insert(EVENT_TYPE, env.event_type.clone());
    if let Some(t) = super::non_empty(&env.trace_id) {
        out.insert(TRACE_ID, t.to_string());
    }
    if let Some(c) = super::non_empty(&env.correlation_id) {
        out.insert(CORRELATION_ID, c.to_string());
    }
    if let Some(t) = env.tenant_id.filter(|t| *t != 0) {
        out.insert(TENANT_ID, t.to_string());
    }
}

/// Who an event is, as far as a record says: from its envelope when the
/// payload is one, otherwise from jxt-core's `X-*` headers (see
/// [`EventInfo::from_headers`]). Fields a record does not carry are `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventInfo {
    /// `event_id` / `X-Event-ID`.
    pub event_id: Option<String>,
    /// `event_type` / `X-Event-Type`.
    pub event_type: Option<String>,
    /// `event_version` / `X-Event-Version` (when decimal).
    pub event_version: Option<i64>,
    /// `aggregate_id` / `X-Aggregate-ID` (or its aliases) / the record key.
    pub aggregate_id: Option<String>,
    /// `tenant_id` / `X-Tenant-ID` (when decimal and not 0).
    pub tenant_id: Option<i64>,
    /// `trace_id` / `X-Trace-ID`.
    pub trace_id: Option<String>,
    /// `correlation_id` / `X-Correlation-ID`.
    pub correlation_id: Option<String>,
}

impl EventInfo {
    /// From the envelope in `message`'s payload if it is one; otherwise
    /// from its headers, with the key as the last resort for the aggregate
    /// id (jxt-core's consumer does the same).
    pub fn of(message: &Message) -> Self {
        if let Ok(env) = Envelope::from_message(message) {
            return Self::from(&env);
        }
        let mut info = Self::from_headers(&message.headers);
        if info.aggregate_id.is_none() {
            info.aggregate_id = message.key_str().map(str::to_string);
        }
        info
    }

    /// From jxt-core's `X-*` headers alone: names matched exactly as
    /// jxt-core writes them; for the aggregate id also `x-aggregate-id`,
    /// `Aggregate-ID` and `aggregate-id`. Empty values count as absent;
    /// version and tenant must be decimal integers.
    pub fn from_headers(headers: &Headers) -> Self {
        let text = |name: &str| {
            headers
                .get_str(name)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        let int = |name: &str| headers.get_str(name).and_then(|v| v.parse::<i64>().ok());
        EventInfo {
            event_id: text(EVENT_ID),
            event_type: text(EVENT_TYPE),
            event_version: int(EVENT_VERSION),
            aggregate_id: AGGREGATE_ID_ALIASES.iter().find_map(|n| text(n)),
            tenant_id: int(TENANT_ID).filter(|t| *t != 0),
            trace_id: text(TRACE_ID),
            correlation_id: text(CORRELATION_ID),
        }
    }
}

impl From<&Envelope> for EventInfo {
    fn from(env: &Envelope) -> Self {
        EventInfo {
            event_id: Some(env.event_id.clone()),
            event_type: Some(env.event_type.clone()),
            event_version: Some(env.event_version),
            aggregate_id: Some(env.aggregate_id.clone()),
            tenant_id: env.tenant_id.filter(|t| *t != 0),
            trace_id: super::non_empty(&env.trace_id).map(str::to_string),
            correlation_id: super::non_empty(&env.correlation_id).map(str::to_string),
        }
    }
}
