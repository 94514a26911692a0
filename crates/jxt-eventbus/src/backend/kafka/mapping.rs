//! [`Message`] ⇄ Kafka record.
//!
//! The key is the message key (the aggregate id), the value its payload, the
//! record timestamp its creation time (milliseconds), and the record headers
//! its headers plus the message id as `X-Message-ID` (or, with
//! `kafka.producer.id_header: watermill`, as Watermill's
//! `_watermill_message_uuid`). Reading maps back: either header becomes the
//! id (and is not repeated in the headers); a record without one — written
//! by another producer — takes jxt-core's `X-Event-ID`, else gets the stable
//! id `kafka:<topic>/<partition>/<offset>`.
//!
//! An envelope's message already carries its id as `X-Event-ID`: then
//! `X-Message-ID` is left out, so the record has exactly the headers
//! jxt-core's `PublishEnvelope` writes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rdkafka::message::{BorrowedMessage, Header, Headers as _, Message as _, OwnedHeaders};

use crate::backend::{Record, TopicPartition};
use crate::config::IdHeader;
use crate::envelope::headers::EVENT_ID as EVENT_ID_HEADER;
use crate::message::{Headers, Message};

/// Header carrying [`Message::id`].
pub const MESSAGE_ID_HEADER: &str = "X-Message-ID";

/// Where Watermill's Kafka marshaler keeps a message's UUID.
const WATERMILL_UUID_HEADER: &str = "_watermill_message_uuid";

fn is_id_header(name: &str) -> bool {
    name == MESSAGE_ID_HEADER || name == WATERMILL_UUID_HEADER
}

/// Record headers for `message`: its own, then the id as `id_header`
/// (unless that is `X-Message-ID` and `X-Event-ID` already carries the id).
pub(super) fn headers(message: &Message, id_header: IdHeader) -> OwnedHeaders {
    let mut out = OwnedHeaders::new_with_capacity(message.headers.len() + 1);
    for (name, value) in message.headers.iter() {
        if is_id_header(name) {
            continue;
        }
        out = out.insert(Header {
            key: name,
            value: value.map(|v| &v[..]),
        });
    }
    if id_header == IdHeader::XMessageId
        && message.headers.get_str(EVENT_ID_HEADER) == Some(message.id.as_str())
    {
        return out;
    }
    out.insert(Header {
        key: id_header.name(),
        value: Some(message.id.as_bytes()),
    })
}

/// The id of a consumed record: `X-Message-ID`, else jxt-core's
/// `X-Event-ID`, else its position.
fn record_id(message_id: Option<String>, headers: &Headers, at: impl FnOnce() -> String) -> String {
    message_id
        .or_else(|| {
            headers
                .get_str(EVENT_ID_HEADER)
                .filter(|id| !id.is_empty())
                .map(str::to_string)
        })
        .unwrap_or_else(at)
}

/// Milliseconds since the epoch for the record timestamp.
pub(super) fn timestamp_millis(t: SystemTime) -> Option<i64> {
    t.duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())
}

/// Topic names shared by the records of a topic, so that each record costs
/// one reference count instead of one string.
#[derive(Debug, Default)]
pub(super) struct TopicNames {
    names: HashMap<String, Arc<str>>,
    /// The last name returned: records come in runs of one topic.
    last: Option<Arc<str>>,
}

impl TopicNames {
    pub(super) fn get(&mut self, topic: &str) -> Arc<str> {
        if let Some(last) = self.last.as_ref().filter(|l| &***l == topic) {
            return last.clone();
        }
        let t = match self.names.get(topic) {
            Some(t) => t.clone(),
            None => {
                let t: Arc<str> = Arc::from(topic);
                self.names.insert(topic.to_string(), t.clone());
                t
            }
        };
        self.last = Some(t.clone());
        t
    }
}

/// A consumed record, copied out of librdkafka's buffer.
pub(super) fn record(m: &BorrowedMessage<'_>, names: &mut TopicNames) -> Record {
    let topic = names.get(m.topic());
    let mut id = None;
    let mut headers = Headers::new();
    if let Some(hs) = m.headers() {
        for h in hs.iter() {
            if is_id_header(h.key) && id.is_none() {
                // Straight from librdkafka's buffer: one allocation.
                id = h
                    .value
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .map(str::to_string);
                continue;
            }
            match h.value {
                Some(v) => headers.insert(h.key, Bytes::copy_from_slice(v)),
                None => headers.insert_null(h.key),
            }
        }
    }
    let id = record_id(id, &headers, || {
        format!("kafka:{}/{}/{}", topic, m.partition(), m.offset())
    });
    let key = m.key().map(Bytes::copy_from_slice);
    let timestamp = m
        .timestamp()
        .to_millis()
        .and_then(|ms| u64::try_from(ms).ok())
        .map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
        .unwrap_or_else(SystemTime::now);
    Record {
        partition: TopicPartition {
            topic,
            partition: m.partition(),
        },
        offset: m.offset(),
        message: Arc::new(Message {
            id,
            key,
            headers,
            payload: m.payload().map(Bytes::copy_from_slice),
            timestamp,
        }),
        ack: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_carry_the_id_once() {
        let m = Message::new("x")
            .with_id("id-1")
            .with_header("a", "1")
            .with_header(MESSAGE_ID_HEADER, "stale");
        let h = headers(&m, IdHeader::XMessageId);
        let all: Vec<(String, Vec<u8>)> = h
            .iter()
            .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
            .collect();
        assert_eq!(
            all,
            vec![
                ("a".to_string(), b"1".to_vec()),
                (MESSAGE_ID_HEADER.to_string(), b"id-1".to_vec())
            ]
        );
    }

    #[test]
    fn an_envelope_id_travels_once_as_x_event_id() {
        let env = crate::Envelope::new("order-1", "T", 1, &1).unwrap();
        let m = env.to_message().unwrap();
        let h = headers(&m, IdHeader::XMessageId);
        let names: Vec<&str> = h.iter().map(|h| h.key).collect();
        assert_eq!(
            names,
            [
                "X-Event-ID",
                "X-Aggregate-ID",
                "X-Event-Version",
                "X-Event-Type"
            ]
        );
        let at = || "kafka:t/0/1".to_string();
        assert_eq!(record_id(None, &m.headers, at), env.event_id);
        assert_eq!(record_id(Some("m".into()), &m.headers, at), "m");
        assert_eq!(record_id(None, &Headers::new(), at), "kafka:t/0/1");
        // For Watermill the id header is written even for an envelope.
        let h = headers(&m, IdHeader::Watermill);
        let last = h.iter().last().unwrap();
        assert_eq!(last.key, "_watermill_message_uuid");
        assert_eq!(last.value, Some(env.event_id.as_bytes()));
    }

    #[test]
    fn timestamps_are_millis() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(timestamp_millis(t), Some(1_700_000_000_123));
        assert_eq!(timestamp_millis(UNIX_EPOCH - Duration::from_secs(1)), None);
    }
}
