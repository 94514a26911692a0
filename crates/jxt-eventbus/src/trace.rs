//! W3C trace context (`traceparent`) carried in message headers from
//! publisher to handler.
//!
//! A publish carries a `traceparent` header on the record: one the
//! application set is kept as is (for example injected from its
//! OpenTelemetry context); otherwise the bus makes one from the envelope's
//! trace id (`X-Trace-ID`) when that is a W3C trace id (32 hex digits). When
//! there is neither, a new trace is started only if debug-level tracing is
//! on (the `eventbus.publish` span is recorded): a random root id that no
//! one records would cost every publish an id, a string and a header for
//! nothing. The handler sees it through
//! [`Delivery::trace_parent`](crate::Delivery::trace_parent), and the
//! `eventbus.handle` span records its trace id with the topic, partition,
//! offset and key. The envelope's `X-Trace-ID` and `X-Correlation-ID`
//! headers travel unchanged.

use std::fmt;

use crate::envelope::headers as envelope_headers;
use crate::message::{Headers, Message};

/// Header name of the W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

/// A parsed W3C `traceparent`: version 00, trace id, parent (span) id and
/// flags.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TraceParent {
    trace_id: String,
    parent_id: String,
    flags: u8,
}

fn is_hex_id(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && s.bytes().any(|b| b != b'0')
}

fn random_hex(len: usize) -> String {
    let mut s = uuid::Uuid::new_v4().simple().to_string();
    s.truncate(len);
    s
}

impl TraceParent {
    /// Parses `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`;
    /// `None` when malformed or when an id is all zeros (both invalid in
    /// W3C trace context).
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.trim().split('-');
        let (version, trace_id, parent_id, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some()
            || version != "00"
            || !is_hex_id(trace_id, 32)
            || !is_hex_id(parent_id, 16)
            || flags.len() != 2
        {
            return None;
        }
        Some(TraceParent {
            trace_id: trace_id.to_string(),
            parent_id: parent_id.to_string(),
            flags: u8::from_str_radix(flags, 16).ok()?,
        })
    }

    /// A new sampled trace with a random trace id.
    pub fn new_root() -> Self {
        Self::with_trace_id(random_hex(32))
    }

    fn with_trace_id(trace_id: String) -> Self {
        TraceParent {
            trace_id,
            parent_id: random_hex(16),
            flags: 1,
        }
    }

    /// The same trace with a new parent id (the next hop).
    pub fn child(&self) -> Self {
        TraceParent {
            parent_id: random_hex(16),
            ..self.clone()
        }
    }

    /// The trace id: 32 lower-case hex digits.
    pub fn trace_id(&self) -> &str {
        &self.trace_id
    }

    /// The parent (span) id: 16 lower-case hex digits.
    pub fn parent_id(&self) -> &str {
        &self.parent_id
    }

    /// Whether the sampled flag is set.
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The context in `headers`, if present and valid.
    pub fn from_headers(headers: &Headers) -> Option<Self> {
        headers.get_str(TRACEPARENT).and_then(Self::parse)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            self.trace_id, self.parent_id, self.flags
        )
    }
}

/// Makes sure `message` carries a valid `traceparent` when there is a trace
/// to carry (see the module docs) and returns its trace id. `start_new`:
/// start a new trace when the message has none.
pub(crate) fn inject(message: &mut Message, start_new: bool) -> Option<String> {
    if let Some(tp) = TraceParent::from_headers(&message.headers) {
        return Some(tp.trace_id);
    }
    let tp = match message.headers.get_str(envelope_headers::TRACE_ID) {
        Some(id) if is_hex_id(&id.to_ascii_lowercase(), 32) => {
            TraceParent::with_trace_id(id.to_ascii_lowercase())
        }
        _ if start_new => TraceParent::new_root(),
        _ => return None,
    };
    message.headers.set(TRACEPARENT, tp.to_string());
    Some(tp.trace_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        let v = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let tp = TraceParent::parse(v).unwrap();
        assert_eq!(tp.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tp.parent_id(), "00f067aa0ba902b7");
        assert!(tp.sampled());
        assert_eq!(tp.to_string(), v);
        let child = tp.child();
        assert_eq!(child.trace_id(), tp.trace_id());
        assert_ne!(child.parent_id(), tp.parent_id());
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
        ] {
            assert!(TraceParent::parse(bad).is_none(), "{bad}");
        }
        let root = TraceParent::new_root();
        assert_eq!(TraceParent::parse(&root.to_string()), Some(root));
    }

    #[test]
    fn inject_keeps_reuses_or_creates() {
        let v = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut m = Message::new("x").with_header(TRACEPARENT, v);
        assert_eq!(
            inject(&mut m, false).unwrap(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(m.headers.get_str(TRACEPARENT), Some(v));

        let mut m = Message::new("x").with_header(
            envelope_headers::TRACE_ID,
            "AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBB",
        );
        assert_eq!(
            inject(&mut m, false).unwrap(),
            "aaaaaaaaaaaaaaaabbbbbbbbbbbbbbbb"
        );

        let mut m = Message::new("x").with_header(envelope_headers::TRACE_ID, "trace-1");
        assert_eq!(
            inject(&mut m, false),
            None,
            "no trace to carry, none started"
        );
        assert!(m.headers.get(TRACEPARENT).is_none());
        let id = inject(&mut m, true).unwrap();
        let tp = TraceParent::from_headers(&m.headers).unwrap();
        assert_eq!(tp.trace_id(), id);
    }
}
