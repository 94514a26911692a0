//! What a publisher sends: [`Message`] and its [`Headers`].

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

/// Ordered record headers. Names are case-sensitive; a name may repeat
/// (as on Kafka), [`Headers::get`] returns the last value. A value may be
/// null (a Kafka header without a value), which differs from an empty one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, Option<Bytes>)>);

impl Headers {
    /// Empty headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a header.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<Bytes>) {
        self.0.push((name.into(), Some(value.into())));
    }

    /// Appends a header without a value (null). NATS headers cannot carry
    /// one: publishing it there is refused.
    pub fn insert_null(&mut self, name: impl Into<String>) {
        self.0.push((name.into(), None));
    }

    /// Replaces every header called `name` with one value.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<Bytes>) {
        let name = name.into();
        self.0.retain(|(n, _)| *n != name);
        self.0.push((name, Some(value.into())));
    }

    /// Removes every header called `name`.
    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(n, _)| n != name);
    }

    /// The last value of `name`; `None` when there is no such header or
    /// its last value is null ([`Headers::contains`] tells them apart).
    pub fn get(&self, name: &str) -> Option<&Bytes> {
        self.0
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_ref())
    }

    /// The last value of `name`, if it is UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Keeps only the headers `keep` accepts, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, Option<&Bytes>) -> bool) {
        self.0.retain(|(n, v)| keep(n, v.as_ref()));
    }

    /// Whether a header called `name` is present (with a value or null).
    pub fn contains(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _)| n == name)
    }

    /// All headers in order; `None` for a null value.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Option<&Bytes>)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_ref()))
    }

    /// Number of headers.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no headers.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<N: Into<String>, V: Into<Bytes>> FromIterator<(N, V)> for Headers {
    fn from_iter<T: IntoIterator<Item = (N, V)>>(iter: T) -> Self {
        Headers(
            iter.into_iter()
                .map(|(n, v)| (n.into(), Some(v.into())))
                .collect(),
        )
    }
}

/// A record to publish: id, optional key (the aggregate id), headers,
/// payload and timestamp.
///
/// Key and payload are opaque bytes, carried unchanged by every backend: a
/// null key differs from an empty one, and a null payload (a tombstone, which
/// a compacted Kafka topic uses to delete a key) from an empty one.
///
/// Cloning is cheap: key, payload and header values are reference-counted.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// Unique id; UUIDv7 (time-ordered) unless set. Carried as the `X-Message-ID`
    /// header on Kafka and as `Nats-Msg-Id` on JetStream (broker-side de-duplication).
    pub id: String,
    /// The key (aggregate id): records with the same key on the same topic
    /// are handled one at a time in publish order. Any bytes; an
    /// [envelope](crate::Envelope)'s aggregate id is checked by jxt-core's
    /// rule ([`crate::validate::aggregate_id`]).
    pub key: Option<Bytes>,
    /// Headers.
    pub headers: Headers,
    /// Payload bytes; `None` is a tombstone (Kafka's null value).
    pub payload: Option<Bytes>,
    /// Creation time.
    pub timestamp: SystemTime,
}

impl Message {
    /// A message with a fresh UUIDv7 id, no key and no headers.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Self::with_payload(Some(payload.into()))
    }

    /// A tombstone: a message with a null payload. Give it the key it
    /// deletes ([`Message::with_key`]).
    pub fn tombstone() -> Self {
        Self::with_payload(None)
    }

    fn with_payload(payload: Option<Bytes>) -> Self {
        let timestamp = SystemTime::now();
        Message {
            id: new_id(timestamp),
            key: None,
            headers: Headers::new(),
            payload,
            timestamp,
        }
    }

    /// Sets the key (aggregate id): text or any bytes.
    #[must_use]
    pub fn with_key(mut self, key: impl AsRef<[u8]>) -> Self {
        self.key = Some(Bytes::copy_from_slice(key.as_ref()));
        self
    }

    /// Sets the id.
    #[must_use]
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// Adds a header.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// The key as text; `None` when there is none or it is not UTF-8.
    pub fn key_str(&self) -> Option<&str> {
        self.key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok())
    }

    /// The payload; empty for a tombstone.
    pub fn payload(&self) -> &Bytes {
        self.payload.as_ref().unwrap_or(&EMPTY)
    }

    /// Whether the payload is null (a tombstone).
    pub fn is_tombstone(&self) -> bool {
        self.payload.is_none()
    }
}

/// What [`Message::payload`] returns for a tombstone.
static EMPTY: Bytes = Bytes::new();

thread_local! {
    /// UUIDv7 counters per thread: ids made on one thread are strictly
    /// increasing, and publishing threads share no lock.
    static IDS: uuid::ContextV7 = const { uuid::ContextV7::new() };
}

/// A UUIDv7 (hyphenated, lower case) for a message created at `at`: the id
/// carries the message's creation millisecond.
fn new_id(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let id = IDS.with(|ids| {
        uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
            ids,
            since.as_secs(),
            since.subsec_nanos(),
        ))
    });
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    id.hyphenated().encode_lower(&mut text).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_increasing_uuid_v7_of_the_creation_millisecond() {
        let messages: Vec<Message> = (0..10_000).map(|_| Message::new("x")).collect();
        for pair in messages.windows(2) {
            assert!(pair[0].id < pair[1].id, "{} !< {}", pair[0].id, pair[1].id);
        }
        for m in &messages {
            let id = uuid::Uuid::parse_str(&m.id).unwrap();
            assert_eq!(id.get_version_num(), 7);
            let (secs, nanos) = id.get_timestamp().unwrap().to_unix();
            let millis = m.timestamp.duration_since(UNIX_EPOCH).unwrap().as_millis();
            // The counter may push an id into the next millisecond when more
            // than its range of ids is made within one.
            let id_millis = u128::from(secs) * 1000 + u128::from(nanos) / 1_000_000;
            assert!(
                id_millis == millis || id_millis == millis + 1,
                "{id_millis} vs {millis}"
            );
        }
    }
}
