//! [`Message`] to and from a JetStream message.
//!
//! NATS has no record key or timestamp, so they travel as headers, next to
//! the id in `Nats-Msg-Id` (which the stream uses to drop duplicates). NATS
//! headers are text, and the client trims their values: a key that is UTF-8
//! without line breaks or white space at its ends travels as it is in
//! `X-Message-Key`, any other key (binary, say) base64-encoded in
//! `X-Message-Key-Base64`, so that every key arrives unchanged. NATS has no
//! null payload either: a tombstone is an empty payload marked by
//! `X-Message-Tombstone`. The
//! timestamp header is left out when the id is a UUIDv7 of the same
//! millisecond (what [`Message::new`] makes): the id carries it, and every
//! header costs an allocation or more per record on both ends. These three
//! headers, and `Nats-Pin-Id` (the server's, on records of a pinned
//! consumer), are reserved: a user header of the same name is replaced or
//! dropped on publish, and they are removed from the headers a handler sees.
//! A user header value that is not UTF-8, holds a line break or is null is
//! refused at publish. Header order is kept per name, not across names.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::header::{HeaderName, HeaderValue};
use async_nats::HeaderMap;
use base64::prelude::{Engine as _, BASE64_STANDARD};
use bytes::Bytes;

use crate::error::{Error, Result};
use crate::message::{Headers, Message};

/// Carries [`Message::id`]; JetStream drops a second publish with the same id
/// within the stream's duplicate window.
pub(crate) const MSG_ID: &str = "Nats-Msg-Id";
/// Carries [`Message::key`] when it is text a header keeps unchanged.
pub(crate) const KEY: &str = "X-Message-Key";
/// Carries any other [`Message::key`], base64-encoded (standard alphabet).
pub(crate) const KEY_BASE64: &str = "X-Message-Key-Base64";
/// Marks a null payload (a tombstone); its value is `true`.
pub(crate) const TOMBSTONE: &str = "X-Message-Tombstone";
/// Carries [`Message::timestamp`] as milliseconds since the Unix epoch.
pub(crate) const TIMESTAMP: &str = "X-Message-Timestamp";

/// Set by the server on records of a pinned consumer: the pin id of the bus
/// they are delivered to (see `pin`). Not a user header.
pub(crate) const PIN_ID: &str = "Nats-Pin-Id";

const RESERVED: [&str; 6] = [MSG_ID, KEY, KEY_BASE64, TOMBSTONE, TIMESTAMP, PIN_ID];

/// The headers to publish `message` with.
///
/// # Errors
/// [`Error::Publish`] (not retryable) for a header NATS cannot carry.
pub(crate) fn headers(topic: &str, message: &Message) -> Result<HeaderMap> {
    let refuse = |reason: String| Error::Publish {
        topic: topic.to_string(),
        reason,
        retryable: false,
        source: None,
    };
    let mut map = HeaderMap::new();
    for (name, value) in message.headers.iter() {
        if RESERVED.contains(&name) {
            continue;
        }
        let n = HeaderName::try_from(name).map_err(|_| {
            refuse(format!(
                "header name {name:?} is not valid on NATS: use printable ASCII without ':' or spaces"
            ))
        })?;
        let v = value
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|s| s.parse::<HeaderValue>().ok())
            .ok_or_else(|| {
                refuse(format!(
                    "header {name:?} has a value NATS cannot carry: header values are UTF-8 text without line breaks, never null"
                ))
            })?;
        map.append(n, v);
    }
    let text = |s: &str, what: &str| {
        s.parse::<HeaderValue>()
            .map_err(|_| refuse(format!("{what} {s:?} contains a line break")))
    };
    map.insert(
        HeaderName::from_static(MSG_ID),
        text(&message.id, "message id")?,
    );
    if let Some(key) = &message.key {
        match key_as_text(key) {
            Some(text) => map.insert(HeaderName::from_static(KEY), HeaderValue::from(text)),
            None => map.insert(
                HeaderName::from_static(KEY_BASE64),
                HeaderValue::from(BASE64_STANDARD.encode(key).as_str()),
            ),
        }
    }
    if message.payload.is_none() {
        map.insert(
            HeaderName::from_static(TOMBSTONE),
            HeaderValue::from("true"),
        );
    }
    let millis = message
        .timestamp
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    if uuid_v7_millis(&message.id) != Some(millis) {
        map.insert(
            HeaderName::from_static(TIMESTAMP),
            HeaderValue::from(millis.to_string()),
        );
    }
    Ok(map)
}

/// `key` as a header value that arrives unchanged: UTF-8 without line
/// breaks or white space at either end (the client trims values on read).
fn key_as_text(key: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(key).ok()?;
    let kept = text.trim() == text && !text.contains(['\r', '\n']);
    kept.then_some(text)
}

/// The Unix time in milliseconds a UUIDv7 in its hyphenated form
/// (`tttttttt-tttt-7xxx-yxxx-xxxxxxxxxxxx`) was made at; `None` for any other
/// id.
fn uuid_v7_millis(id: &str) -> Option<u64> {
    let b = id.as_bytes();
    let hyphens = [8, 13, 18, 23].iter().all(|&i| b.get(i) == Some(&b'-'));
    if b.len() != 36 || !hyphens || b[14] != b'7' || !matches!(b[19], b'8' | b'9' | b'a' | b'b') {
        return None;
    }
    let mut millis = 0u64;
    for &c in b[..8].iter().chain(&b[9..13]) {
        millis = millis << 4 | u64::from(char::from(c).to_digit(16)?);
    }
    Some(millis)
}

/// What the ack subject of a delivered JetStream message says about it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct AckInfo<'a> {
    pub(crate) stream: &'a str,
    pub(crate) delivered: u64,
    pub(crate) stream_sequence: u64,
    /// When the stream stored it, in nanoseconds since the Unix epoch.
    pub(crate) published_nanos: u64,
}

/// Reads `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer
/// seq>.<time>.<pending>`, or the longer form that starts with a domain and
/// an account hash (ADR-15). `None` for anything else.
pub(crate) fn ack_info(reply: &str) -> Option<AckInfo<'_>> {
    let rest = reply.strip_prefix("$JS.ACK.")?;
    let mut tokens = [""; 9];
    let mut n = 0;
    for t in rest.split('.') {
        if n == tokens.len() {
            break;
        }
        tokens[n] = t;
        n += 1;
    }
    let t = match n {
        9 => &tokens[2..],
        7 => &tokens[..7],
        _ => return None,
    };
    Some(AckInfo {
        stream: t[0],
        delivered: t[2].parse().ok()?,
        stream_sequence: t[3].parse().ok()?,
        published_nanos: t[5].parse().ok()?,
    })
}

/// The message a handler sees for a delivered JetStream message.
/// `fallback_id` and `published` stand in for headers a publisher outside
/// the bus did not set.
pub(crate) fn message(
    payload: Bytes,
    map: Option<&HeaderMap>,
    fallback_id: impl FnOnce() -> String,
    published: SystemTime,
) -> Message {
    let mut headers = Headers::new();
    let (mut id, mut key, mut timestamp, mut tombstone) = (None, None, None, false);
    if let Some(map) = map {
        let mut user = Vec::new();
        for (name, values) in map.iter() {
            let last = values.last().map(|v| v.as_str());
            match header_str(name) {
                MSG_ID => id = last.map(str::to_string),
                KEY => key = last.map(|k| Bytes::copy_from_slice(k.as_bytes())),
                KEY_BASE64 => {
                    // A value that does not decode was not written by the
                    // bus: keep it as the text it is rather than drop it.
                    key = last.map(|k| {
                        BASE64_STANDARD
                            .decode(k)
                            .map_or_else(|_| Bytes::copy_from_slice(k.as_bytes()), Bytes::from)
                    })
                }
                TOMBSTONE => tombstone = true,
                TIMESTAMP => timestamp = last.and_then(|v| v.parse::<u64>().ok()),
                PIN_ID => {}
                _ => user.push((name, values)),
            }
        }
        // The map's order is random: sort, so every delivery looks the same.
        user.sort_unstable_by(|a, b| header_str(a.0).cmp(header_str(b.0)));
        for (name, values) in user {
            for v in values {
                headers.insert(
                    header_str(name),
                    Bytes::copy_from_slice(v.as_str().as_bytes()),
                );
            }
        }
    }
    let id = id.unwrap_or_else(fallback_id);
    // No timestamp header: the id's, if it has one, else the stream's.
    let timestamp = timestamp
        .or_else(|| uuid_v7_millis(&id))
        .map_or(published, |ms| UNIX_EPOCH + Duration::from_millis(ms));
    Message {
        id,
        key,
        headers,
        payload: (!(tombstone && payload.is_empty())).then_some(payload),
        timestamp,
    }
}

fn header_str(name: &HeaderName) -> &str {
    name.as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message a consumer reads from `payload` published with `map`.
    fn read_back(payload: &Bytes, map: &HeaderMap) -> Message {
        message(payload.clone(), Some(map), || "unused".into(), UNIX_EPOCH)
    }

    #[test]
    fn every_key_comes_back_unchanged_as_text_or_base64() {
        let cases: [(&[u8], &str); 6] = [
            (b"order-1", KEY),
            (b"", KEY),
            (b"  order-1  ", KEY_BASE64),
            (b"a\r\nb", KEY_BASE64),
            (&[0x00, 0x00, 0x00, 0x00, 0x2a, 0xff], KEY_BASE64),
            ("z\u{fc}rich".as_bytes(), KEY),
        ];
        for (key, header) in cases {
            let m = Message::new("x").with_key(key);
            let map = headers("t", &m).unwrap();
            assert!(
                map.get(header).is_some(),
                "{key:?} should travel in {header}"
            );
            let back = read_back(m.payload(), &map);
            assert_eq!(back.key.as_deref(), Some(key));
            assert!(back.headers.is_empty());
        }
        let keyless = read_back(
            &Bytes::from("x"),
            &headers("t", &Message::new("x")).unwrap(),
        );
        assert_eq!(keyless.key, None);
    }

    #[test]
    fn a_tombstone_differs_from_an_empty_payload() {
        let t = Message::tombstone().with_key("k");
        let back = read_back(t.payload(), &headers("t", &t).unwrap());
        assert!(back.is_tombstone());
        let empty = Message::new("");
        let back = read_back(empty.payload(), &headers("t", &empty).unwrap());
        assert_eq!(back.payload.as_deref(), Some(&b""[..]));
    }

    #[test]
    fn a_null_header_value_is_refused() {
        let mut m = Message::new("x");
        m.headers.insert_null("x-n");
        let err = headers("t", &m).unwrap_err().to_string();
        assert!(err.contains("never null"), "{err}");
    }

    #[test]
    fn round_trip_keeps_id_key_timestamp_and_headers() {
        let mut m = Message::new("payload")
            .with_key("order-1")
            .with_id("id-1")
            .with_header("x-a", "1")
            .with_header("x-a", "2")
            .with_header("X-Message-Key", "spoofed");
        m.timestamp = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let map = headers("t", &m).unwrap();
        let back = read_back(m.payload(), &map);
        assert_eq!(back.id, "id-1");
        assert_eq!(back.key_str(), Some("order-1"));
        assert_eq!(back.timestamp, m.timestamp);
        let values: Vec<_> = back
            .headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.cloned()))
            .collect();
        assert_eq!(
            values,
            vec![
                ("x-a".to_string(), Some(Bytes::from("1"))),
                ("x-a".to_string(), Some(Bytes::from("2")))
            ]
        );
    }

    #[test]
    fn a_uuid_v7_id_carries_the_timestamp() {
        let m = Message::new("x");
        let map = headers("t", &m).unwrap();
        let back = read_back(m.payload(), &map);
        let millis = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_millis();
        assert_eq!(millis(back.timestamp), millis(m.timestamp));
        if uuid_v7_millis(&m.id) == Some(millis(m.timestamp) as u64) {
            assert!(map.get(TIMESTAMP).is_none(), "the id carries it");
        }
        // Any other timestamp is sent.
        let mut old = Message::new("x");
        old.timestamp = UNIX_EPOCH + Duration::from_millis(1_000);
        let map = headers("t", &old).unwrap();
        assert_eq!(map.get(TIMESTAMP).map(|v| v.as_str()), Some("1000"));
        let back = read_back(old.payload(), &map);
        assert_eq!(back.timestamp, old.timestamp);
    }

    #[test]
    fn uuid_v7_times_are_read_from_the_id_only() {
        assert_eq!(
            uuid_v7_millis("019abc12-3456-7def-8123-456789abcdef"),
            Some(0x019a_bc12_3456)
        );
        let v4 = uuid::Uuid::new_v4().to_string();
        assert_eq!(uuid_v7_millis(&v4), None);
        assert_eq!(uuid_v7_millis("order-1"), None);
        assert_eq!(uuid_v7_millis("019abc12-3456-7def-c123-456789abcdef"), None);
        assert_eq!(uuid_v7_millis("019abc1g-3456-7def-8123-456789abcdef"), None);
    }

    #[test]
    fn ack_subjects_are_read_in_both_forms() {
        let v1 = ack_info("$JS.ACK.orders.billing.2.100.7.1790230470084404000.42").unwrap();
        assert_eq!(
            v1,
            AckInfo {
                stream: "orders",
                delivered: 2,
                stream_sequence: 100,
                published_nanos: 1_790_230_470_084_404_000,
            }
        );
        let v2 =
            ack_info("$JS.ACK.hub.ACCHASH.orders.billing.1.5.3.1790230470084404000.0.tok").unwrap();
        assert_eq!(
            (v2.stream, v2.delivered, v2.stream_sequence),
            ("orders", 1, 5)
        );
        assert_eq!(ack_info("_INBOX.abc"), None);
        assert_eq!(ack_info("$JS.ACK.a.b.c"), None);
        assert_eq!(ack_info("$JS.ACK.s.c.x.5.3.1.0"), None);
    }

    #[test]
    fn foreign_messages_get_fallbacks() {
        let at = UNIX_EPOCH + Duration::from_secs(5);
        let m = message(Bytes::from("x"), None, || "stream:7".into(), at);
        assert_eq!(m.id, "stream:7");
        assert_eq!(m.key, None);
        assert_eq!(m.timestamp, at);
    }

    #[test]
    fn headers_nats_cannot_carry_are_refused() {
        let m = Message::new("x").with_header("x-bin", vec![0xff, 0xfe]);
        let e = headers("t", &m).unwrap_err();
        assert!(!e.is_retryable());
        assert!(e.to_string().contains("x-bin"), "{e}");
        let m = Message::new("x").with_header("x-nl", "a\r\nb");
        assert!(headers("t", &m).is_err());
        let m = Message::new("x").with_header("bad name", "v");
        assert!(headers("t", &m)
            .unwrap_err()
            .to_string()
            .contains("bad name"));
    }
}
