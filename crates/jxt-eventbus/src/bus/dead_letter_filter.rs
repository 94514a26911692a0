//! Which dead letters a listing or a replay takes ([`DeadLetterFilter`]), how
//! a replay treats them ([`ReplayOptions`]), and the decision for one record.
//!
//! A dead-letter topic is shared by every consumer group of its topic, so a
//! replay is scoped to one group by default: re-publishing another group's
//! dead letters would make groups that had succeeded handle them again.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::dispatch::worker::dlq_headers;
use crate::envelope::headers as envelope_headers;
use crate::message::{Headers, Message};

use super::dead_letters::{REPLAYED_FROM_ID_HEADER, REPLAYED_HEADER};

/// Whose dead letters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
enum Groups {
    /// `x-dlq-consumer-group` is this bus's group.
    #[default]
    ThisBus,
    /// `x-dlq-consumer-group` is this one.
    Named(String),
    /// Every group's, and records without the header.
    All,
}

/// Which dead letters [`EventBus::list_dead_letters`](super::EventBus::list_dead_letters)
/// and [`EventBus::replay_dead_letters`](super::EventBus::replay_dead_letters)
/// take. By default: every dead letter of this bus's group (header
/// `x-dlq-consumer-group`); each setter narrows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct DeadLetterFilter {
    groups: Groups,
    key: Option<Bytes>,
    event_id: Option<String>,
    from: Option<SystemTime>,
    until: Option<SystemTime>,
}

impl DeadLetterFilter {
    /// This bus's group's dead letters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Dead letters of consumer group `group` instead of this bus's.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.groups = Groups::Named(group.into());
        self
    }

    /// Dead letters of every group (and records without a group header).
    /// A replay with it re-publishes records that other groups may have
    /// handled already: they see them again.
    pub fn all_groups(mut self) -> Self {
        self.groups = Groups::All;
        self
    }

    /// Only records with this key (aggregate id): text or any bytes.
    pub fn key(mut self, key: impl AsRef<[u8]>) -> Self {
        self.key = Some(Bytes::copy_from_slice(key.as_ref()));
        self
    }

    /// Only the record with this message id, or envelope event id
    /// (`X-Event-ID`).
    pub fn event_id(mut self, id: impl Into<String>) -> Self {
        self.event_id = Some(id.into());
        self
    }

    /// Only records dead-lettered (`x-dlq-last-failure`) at or after `from`
    /// and before `until`; either bound may be open. A record without a
    /// readable failure time does not match a time range.
    pub fn failed_between(mut self, from: Option<SystemTime>, until: Option<SystemTime>) -> Self {
        self.from = from;
        self.until = until;
        self
    }

    /// Whether `m`'s consumer group is in scope (`this_group`: the bus's).
    pub(crate) fn in_group(&self, this_group: &str, m: &Message) -> bool {
        let group = m.headers.get_str(dlq_headers::CONSUMER_GROUP);
        match &self.groups {
            Groups::ThisBus => group == Some(this_group),
            Groups::Named(g) => group == Some(g.as_str()),
            Groups::All => true,
        }
    }

    /// Whether `m` matches the key, event id and time range.
    pub(crate) fn matches(&self, m: &Message) -> bool {
        if self.key.is_some() && m.key != self.key {
            return false;
        }
        if let Some(id) = &self.event_id {
            let event = m.headers.get_str(envelope_headers::EVENT_ID);
            if m.id != *id && event != Some(id.as_str()) {
                return false;
            }
        }
        if self.from.is_some() || self.until.is_some() {
            let Some(at) = failed_at(&m.headers) else {
                return false;
            };
            if self.from.is_some_and(|from| at < from) || self.until.is_some_and(|u| at >= u) {
                return false;
            }
        }
        true
    }
}

fn failed_at(h: &Headers) -> Option<SystemTime> {
    let text = h.get_str(dlq_headers::LAST_FAILURE)?;
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(SystemTime::from)
}

/// A listing or a replay ends when no record arrived for this long.
const DEFAULT_IDLE: Duration = Duration::from_secs(2);
/// Upper bound of a whole listing or replay.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The builder methods a listing and a replay share: which dead letters
/// (`filter`) and when reading the dead-letter topic ends (`idle`,
/// `timeout`).
macro_rules! reading_options {
    ($verb:literal, $noun:literal) => {
        #[doc = concat!("Which dead letters to ", $verb, ".")]
        pub fn filter(mut self, filter: DeadLetterFilter) -> Self {
            self.filter = filter;
            self
        }

        #[doc = concat!(
                            "The ", $noun, " ends when no record arrived for this long once the ",
                            "dead-letter topic was assigned (default 2 s)."
                        )]
        pub fn idle(mut self, idle: Duration) -> Self {
            self.idle = idle;
            self
        }

        #[doc = concat!("Upper bound of the whole ", $noun, " (default 60 s).")]
        pub fn timeout(mut self, timeout: Duration) -> Self {
            self.timeout = timeout;
            self
        }
    };
}

/// How [`EventBus::list_dead_letters`](super::EventBus::list_dead_letters)
/// lists: which dead letters ([`DeadLetterFilter`]), how many, and when to
/// stop — the same `filter`, `idle` and `timeout` as [`ReplayOptions`].
#[derive(Clone, Debug)]
#[must_use]
pub struct ListOptions {
    pub(crate) filter: DeadLetterFilter,
    pub(crate) max: usize,
    pub(crate) idle: Duration,
    pub(crate) timeout: Duration,
}

impl Default for ListOptions {
    fn default() -> Self {
        ListOptions {
            filter: DeadLetterFilter::default(),
            max: 1000,
            idle: DEFAULT_IDLE,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl ListOptions {
    /// Up to 1000 of this bus's group's dead letters, ending after 2 s
    /// without a record (60 s at most).
    pub fn new() -> Self {
        Self::default()
    }

    reading_options!("list", "listing");

    /// At most this many (default 1000).
    pub fn max(mut self, max: usize) -> Self {
        self.max = max;
        self
    }
}

/// Replays allowed per record unless forced.
pub const DEFAULT_MAX_REPLAYS: u32 = 3;

/// How [`EventBus::replay_dead_letters`](super::EventBus::replay_dead_letters)
/// replays.
///
/// The target of each record is its `x-dlq-original-topic` header (the
/// replayed topic when absent). It must be a valid topic name and one the
/// caller allows: by default only the topic whose dead letters are replayed,
/// so a header can never make the bus publish to (or create) another topic.
#[derive(Clone, Debug)]
#[must_use]
pub struct ReplayOptions {
    pub(crate) filter: DeadLetterFilter,
    pub(crate) allowed: BTreeSet<String>,
    pub(crate) dry_run: bool,
    pub(crate) max_replays: u32,
    pub(crate) force: bool,
    pub(crate) idle: Duration,
    pub(crate) timeout: Duration,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            filter: DeadLetterFilter::default(),
            allowed: BTreeSet::new(),
            dry_run: false,
            max_replays: DEFAULT_MAX_REPLAYS,
            force: false,
            idle: DEFAULT_IDLE,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl ReplayOptions {
    /// Replays this bus's group's dead letters back to the replayed topic,
    /// each at most [`DEFAULT_MAX_REPLAYS`] times.
    pub fn new() -> Self {
        Self::default()
    }

    reading_options!("replay", "replay");

    /// Also allows `topic` as a replay target (the replayed topic always is).
    pub fn allow_topic(mut self, topic: impl Into<String>) -> Self {
        self.allowed.insert(topic.into());
        self
    }

    /// Reports what would be replayed (and what would be refused) without
    /// publishing or acknowledging anything.
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// A record whose `x-dlq-replayed` count reached `max` is refused
    /// (default [`DEFAULT_MAX_REPLAYS`]): a record that keeps failing is not
    /// put back forever.
    pub fn max_replays(mut self, max: u32) -> Self {
        self.max_replays = max;
        self
    }

    /// Replays records past [`max_replays`](Self::max_replays) too.
    pub fn force(mut self, force: bool) -> Self {
        self.force = force;
        self
    }
}

/// What a replay does with one dead letter.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Another group's: passed over and acknowledged (that group replays it
    /// with its own replay group).
    OtherGroup,
    /// Outside the key / event id / time filter: left for a later replay.
    NotMatching,
    /// Left for a later replay, with why.
    Refused(String),
    /// Published to this topic.
    Replay(String),
}

impl ReplayOptions {
    /// The decision for dead letter `m` of `topic`, in `this_group`.
    pub(crate) fn decide(&self, this_group: &str, topic: &str, m: &Message) -> Decision {
        if !self.filter.in_group(this_group, m) {
            return Decision::OtherGroup;
        }
        if !self.filter.matches(m) {
            return Decision::NotMatching;
        }
        let h = &m.headers;
        if h.get_str(dlq_headers::POINTER) == Some("true") {
            return Decision::Refused(
                "a pointer record without payload: the record is at x-dlq-original-topic / \
                 -partition / -offset"
                    .into(),
            );
        }
        let target = h.get_str(dlq_headers::ORIGINAL_TOPIC).unwrap_or(topic);
        if let Err(e) = crate::validate::topic(target) {
            return Decision::Refused(format!("x-dlq-original-topic is not a valid topic: {e}"));
        }
        if target != topic && !self.allowed.contains(target) {
            return Decision::Refused(format!(
                "target `{target}` (x-dlq-original-topic) is not an allowed replay target \
                 (ReplayOptions::allow_topic)"
            ));
        }
        let times = replays(h);
        if times >= self.max_replays && !self.force {
            return Decision::Refused(format!(
                "already replayed {times} times (limit {}; ReplayOptions::force)",
                self.max_replays
            ));
        }
        Decision::Replay(target.to_string())
    }
}

/// `x-dlq-replayed` of a dead letter (0 when absent).
pub(crate) fn replays(h: &Headers) -> u32 {
    h.get_str(REPLAYED_HEADER)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The record a replay publishes for dead letter `m`: its own headers
/// without any `x-dlq-*` provenance, the replay count raised by one, the id it
/// failed with (`x-dlq-original-id`) in [`REPLAYED_FROM_ID_HEADER`] and a
/// fresh id (brokers that de-duplicate by id would drop it otherwise).
pub(crate) fn replay_message(mut m: Message) -> Message {
    let times = replays(&m.headers);
    let from = match m.headers.get_str(dlq_headers::ORIGINAL_ID) {
        Some(id) => id.to_string(),
        None => std::mem::take(&mut m.id),
    };
    m.headers.retain(|name, _| !name.starts_with("x-dlq-"));
    m.headers.set(REPLAYED_HEADER, (times + 1).to_string());
    m.headers.set(REPLAYED_FROM_ID_HEADER, from);
    m.id = uuid::Uuid::now_v7().to_string();
    m.timestamp = SystemTime::now();
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dead(group: &str, key: &str) -> Message {
        let mut m = Message::new("p").with_key(key);
        m.headers
            .set(dlq_headers::CONSUMER_GROUP, group.to_string());
        m.headers.set(dlq_headers::ORIGINAL_TOPIC, "orders");
        m.headers
            .set(dlq_headers::LAST_FAILURE, "2026-01-02T03:04:05+00:00");
        m
    }

    fn at(text: &str) -> SystemTime {
        chrono::DateTime::parse_from_rfc3339(text).unwrap().into()
    }

    #[test]
    fn the_default_scope_is_this_bus_group() {
        let f = DeadLetterFilter::new();
        assert!(f.in_group("g", &dead("g", "k")));
        assert!(!f.in_group("g", &dead("other", "k")));
        assert!(!f.in_group("g", &Message::new("no header")));
        assert!(f.clone().group("other").in_group("g", &dead("other", "k")));
        assert!(f.all_groups().in_group("g", &Message::new("no header")));
    }

    #[test]
    fn key_event_id_and_time_range_narrow() {
        let m = dead("g", "k");
        assert!(DeadLetterFilter::new().key("k").matches(&m));
        assert!(!DeadLetterFilter::new().key("j").matches(&m));
        assert!(DeadLetterFilter::new().event_id(m.id.clone()).matches(&m));
        let mut e = m.clone();
        e.headers.set(envelope_headers::EVENT_ID, "evt-1");
        assert!(DeadLetterFilter::new().event_id("evt-1").matches(&e));
        assert!(!DeadLetterFilter::new().event_id("evt-2").matches(&e));
        let t = at("2026-01-02T03:04:05+00:00");
        let inside =
            DeadLetterFilter::new().failed_between(Some(t), Some(at("2026-01-03T00:00:00Z")));
        assert!(inside.matches(&m));
        assert!(!DeadLetterFilter::new()
            .failed_between(None, Some(t))
            .matches(&m));
        assert!(!DeadLetterFilter::new()
            .failed_between(Some(t), None)
            .matches(&Message::new("no time")));
    }

    #[test]
    fn targets_are_validated_and_must_be_allowed() {
        let o = ReplayOptions::new();
        assert_eq!(
            o.decide("g", "orders", &dead("g", "k")),
            Decision::Replay("orders".into())
        );
        let mut elsewhere = dead("g", "k");
        elsewhere
            .headers
            .set(dlq_headers::ORIGINAL_TOPIC, "payments");
        assert!(matches!(
            o.decide("g", "orders", &elsewhere),
            Decision::Refused(r) if r.contains("not an allowed replay target")
        ));
        assert_eq!(
            o.clone()
                .allow_topic("payments")
                .decide("g", "orders", &elsewhere),
            Decision::Replay("payments".into())
        );
        let mut bad = dead("g", "k");
        bad.headers.set(dlq_headers::ORIGINAL_TOPIC, "a b\n");
        assert!(matches!(
            o.clone().allow_topic("a b\n").decide("g", "orders", &bad),
            Decision::Refused(r) if r.contains("not a valid topic")
        ));
        assert_eq!(
            o.decide("g", "orders", &dead("h", "k")),
            Decision::OtherGroup
        );
    }

    #[test]
    fn pointers_and_records_replayed_too_often_are_refused() {
        let o = ReplayOptions::new();
        let mut pointer = dead("g", "k");
        pointer.headers.set(dlq_headers::POINTER, "true");
        assert!(matches!(
            o.decide("g", "orders", &pointer),
            Decision::Refused(_)
        ));
        let mut tired = dead("g", "k");
        tired.headers.set(REPLAYED_HEADER, "3");
        assert!(matches!(
            o.decide("g", "orders", &tired),
            Decision::Refused(r) if r.contains("already replayed 3 times")
        ));
        assert_eq!(
            o.clone().force(true).decide("g", "orders", &tired),
            Decision::Replay("orders".into())
        );
        assert!(matches!(
            o.max_replays(4).decide("g", "orders", &tired),
            Decision::Replay(_)
        ));
    }

    #[test]
    fn a_replayed_record_carries_no_stale_provenance() {
        let mut m = dead("g", "k");
        m.headers.set("X-Event-Type", "t");
        m.headers.set(dlq_headers::ERROR, "boom");
        m.headers.set(REPLAYED_HEADER, "1");
        m.headers.set(REPLAYED_FROM_ID_HEADER, "older");
        m.headers.set(dlq_headers::ORIGINAL_ID, "failed-id");
        let id = m.id.clone();
        let r = replay_message(m);
        let names: Vec<&str> = r.headers.iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            ["X-Event-Type", REPLAYED_HEADER, REPLAYED_FROM_ID_HEADER]
        );
        assert_eq!(r.headers.get_str(REPLAYED_HEADER), Some("2"));
        assert_eq!(
            r.headers.get_str(REPLAYED_FROM_ID_HEADER),
            Some("failed-id")
        );
        assert_ne!(r.id, id);
        assert_eq!(r.key_str(), Some("k"));
    }
}
