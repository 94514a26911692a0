//! What a publisher sends: [`Message`] and its [`Headers`].

use std::time::SystemTime;

use bytes::Bytes;

/// Ordered record headers. Names are case-sensitive; a name may repeat
/// (as on Kafka), [`Headers::get`] returns the last value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, Bytes)>);

impl Headers {
    /// Empty headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a header.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<Bytes>) {
        self.0.push((name.into(), value.into()));
    }

    /// Replaces every header called `name` with one value.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<Bytes>) {
        let name = name.into();
        self.0.retain(|(n, _)| *n != name);
        self.0.push((name, value.into()));
    }

    /// The last value of `name`.
    pub fn get(&self, name: &str) -> Option<&Bytes> {
        self.0.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The last value of `name`, if it is UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// All headers in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Bytes)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v))
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
                .map(|(n, v)| (n.into(), v.into()))
                .collect(),
        )
    }
}

/// A record to publish: id, optional key (the aggregate id), headers,
/// payload and timestamp.
///
/// Cloning is cheap: the payload and header values are reference-counted.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// Unique id; UUIDv7 (time-ordered) unless set. Carried as the `X-Message-ID`
    /// header on Kafka and as `Nats-Msg-Id` on JetStream (broker-side de-duplication).
    pub id: String,
    /// Aggregate id. Records with the same key on the same topic are handled
    /// one at a time in publish order. Validated at publish: at most 256
    /// characters of `[A-Za-z0-9:_\-./]`.
    pub key: Option<String>,
    /// Headers.
    pub headers: Headers,
    /// Payload bytes.
    pub payload: Bytes,
    /// Creation time.
    pub timestamp: SystemTime,
}

impl Message {
    /// A message with a fresh UUIDv7 id, no key and no headers.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Message {
            id: uuid::Uuid::now_v7().to_string(),
            key: None,
            headers: Headers::new(),
            payload: payload.into(),
            timestamp: SystemTime::now(),
        }
    }

    /// Sets the key (aggregate id).
    #[must_use]
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
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

    /// The key, or `""`.
    pub fn key_str(&self) -> &str {
        self.key.as_deref().unwrap_or("")
    }
}
