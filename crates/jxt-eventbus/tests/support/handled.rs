//! What handlers saw: records published as `key:seq` payloads and a log of
//! every handler invocation, shared by the conformance suite and the broker
//! tests.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use jxt_eventbus::{Delivery, Message};

/// A record of `key` with sequence `seq` (payload `key:seq`).
pub fn record(key: &str, seq: u64) -> Message {
    Message::new(format!("{key}:{seq}")).with_key(key)
}

/// The key and sequence of a [`record`].
pub fn parse(d: &Delivery) -> (String, u64) {
    let s = std::str::from_utf8(d.payload()).expect("utf8 payload");
    let (k, n) = s.rsplit_once(':').expect("key:seq payload");
    (k.to_string(), n.parse().expect("seq"))
}

/// One handler invocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub topic: String,
    pub key: String,
    pub seq: u64,
    pub attempt: u32,
    pub partition: i32,
    pub offset: i64,
    /// Which bus handled it.
    pub bus: &'static str,
}

/// Handler invocations in the order they started, over every bus.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<Seen>>>);

impl Log {
    pub fn push(&self, d: &Delivery, bus: &'static str) {
        let (key, seq) = parse(d);
        self.0.lock().unwrap().push(Seen {
            topic: d.topic().to_string(),
            key,
            seq,
            attempt: d.attempt(),
            partition: d.partition(),
            offset: d.offset(),
            bus,
        });
    }
    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    pub fn all(&self) -> Vec<Seen> {
        self.0.lock().unwrap().clone()
    }
    /// Distinct (key, seq) pairs seen.
    pub fn distinct(&self) -> HashSet<(String, u64)> {
        self.all().into_iter().map(|s| (s.key, s.seq)).collect()
    }
    /// Distinct (topic, key, seq) triples seen.
    pub fn distinct_in_topics(&self) -> HashSet<(String, String, u64)> {
        self.all()
            .into_iter()
            .map(|s| (s.topic, s.key, s.seq))
            .collect()
    }
}
