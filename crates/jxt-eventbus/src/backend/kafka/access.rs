//! Consumer requests the broker's ACLs refused.
//!
//! A principal without READ on its consumer group cannot join it; one
//! without READ on a topic is assigned the topic's partitions but every
//! fetch is refused. librdkafka reports both as consumer errors and retries
//! without end, so nothing is read — and so nothing is acknowledged — but
//! nothing says why either. The poll thread records each refusal here; a
//! subscription change waiting for the group fails with it, and health
//! reports the consumer unhealthy while the last refusal is younger than
//! [`DENIAL_MEMORY`] (librdkafka repeats the refused request every few
//! seconds, so a denial that stops recurring was lifted).

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::types::RDKafkaErrorCode;

/// How long a refusal keeps the consumer unhealthy after it was last seen.
pub(super) const DENIAL_MEMORY: Duration = Duration::from_secs(30);

/// What the broker refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Denied {
    /// Joining the consumer group (READ on the group).
    Group,
    /// Fetching a subscribed topic (READ on the topic).
    Topic,
}

impl Denied {
    /// The refusal an error code of a consumer error stands for.
    pub(super) fn from_code(code: Option<RDKafkaErrorCode>) -> Option<Denied> {
        match code? {
            RDKafkaErrorCode::GroupAuthorizationFailed => Some(Denied::Group),
            RDKafkaErrorCode::TopicAuthorizationFailed => Some(Denied::Topic),
            _ => None,
        }
    }

    /// One sentence: what was refused, and the ACL that is missing.
    pub(super) fn describe(self, group: &str, topics: &BTreeSet<String>) -> String {
        match self {
            Denied::Group => format!(
                "the broker refused to let this bus join consumer group `{group}` (Group \
                 authorization failed): its principal needs the READ ACL on group `{group}`"
            ),
            Denied::Topic => {
                let list: Vec<String> = topics.iter().map(|t| format!("`{t}`")).collect();
                format!(
                    "the broker refused to let this bus read {} (Topic authorization failed): \
                     its principal needs the READ ACL on each subscribed topic; nothing is read \
                     or acknowledged until then",
                    if list.is_empty() {
                        "its topics".to_string()
                    } else {
                        list.join(", ")
                    }
                )
            }
        }
    }
}

/// The last refusal of one consumer, described.
#[derive(Debug, Default)]
pub(super) struct AccessDenials {
    last: Mutex<Option<(Instant, String)>>,
}

impl AccessDenials {
    /// Records a refusal seen at `at`.
    pub(super) fn record(&self, at: Instant, description: String) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some((at, description));
    }

    /// Forgets refusals (the subscription they were about was withdrawn).
    pub(super) fn clear(&self) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The refusal, if one was seen within [`DENIAL_MEMORY`] before `now`.
    pub(super) fn current(&self, now: Instant) -> Option<String> {
        self.last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|(at, _)| now.saturating_duration_since(*at) < DENIAL_MEMORY)
            .map(|(_, d)| d.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_authorization_codes_are_denials() {
        assert_eq!(
            Denied::from_code(Some(RDKafkaErrorCode::GroupAuthorizationFailed)),
            Some(Denied::Group)
        );
        assert_eq!(
            Denied::from_code(Some(RDKafkaErrorCode::TopicAuthorizationFailed)),
            Some(Denied::Topic)
        );
        assert_eq!(
            Denied::from_code(Some(RDKafkaErrorCode::UnknownTopicOrPartition)),
            None
        );
        assert_eq!(Denied::from_code(None), None);
    }

    #[test]
    fn the_description_names_the_missing_acl() {
        let topics: BTreeSet<String> = ["orders".to_string()].into();
        let g = Denied::Group.describe("billing", &topics);
        assert!(g.contains("READ ACL on group `billing`"), "{g}");
        let t = Denied::Topic.describe("billing", &topics);
        assert!(t.contains("`orders`") && t.contains("READ ACL"), "{t}");
    }

    #[test]
    fn a_denial_is_current_until_it_stops_recurring() {
        let d = AccessDenials::default();
        let t0 = Instant::now();
        assert_eq!(d.current(t0), None);
        d.record(t0, "refused".into());
        assert_eq!(
            d.current(t0 + Duration::from_secs(1)).as_deref(),
            Some("refused")
        );
        assert_eq!(d.current(t0 + DENIAL_MEMORY), None);
        d.record(t0 + DENIAL_MEMORY, "again".into());
        assert_eq!(
            d.current(t0 + DENIAL_MEMORY + Duration::from_secs(1))
                .as_deref(),
            Some("again")
        );
        d.clear();
        assert_eq!(d.current(t0 + DENIAL_MEMORY), None);
    }
}
