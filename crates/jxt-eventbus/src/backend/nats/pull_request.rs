//! Pull requests as the bus sends them.
//!
//! The client library's `request_batch` cannot carry a priority group's pin
//! id, and its pull streams manage credit and pins by themselves; the bus
//! does both itself (see `puller`), so it writes the request.

use std::time::Duration;

use serde::Serialize;

use super::durable::PRIORITY_GROUP;

/// The body of a `CONSUMER.MSG.NEXT` request.
#[derive(Debug, Serialize)]
pub(crate) struct PullRequest<'a> {
    pub(crate) batch: usize,
    /// Nanoseconds.
    pub(crate) expires: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) max_bytes: Option<usize>,
    /// Nanoseconds; 0 for none.
    #[serde(skip_serializing_if = "is_zero")]
    pub(crate) idle_heartbeat: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) group: Option<&'static str>,
    /// The pin id this bus holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) id: Option<&'a str>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl<'a> PullRequest<'a> {
    /// Asks for `batch` records. `pinned` tells whether the consumer has a
    /// priority group, `pin` the id this bus holds.
    pub(crate) fn records(
        batch: usize,
        expires: Duration,
        heartbeat: Duration,
        pinned: bool,
        pin: Option<&'a str>,
    ) -> Self {
        PullRequest {
            batch,
            expires: nanos(expires),
            max_bytes: None,
            idle_heartbeat: nanos(heartbeat),
            group: pinned.then_some(PRIORITY_GROUP),
            id: pin,
        }
    }

    /// Renews the pin `pin` without taking a record: the server resets the
    /// pin's lifetime on every request that carries it, and a one-byte limit
    /// is smaller than any record, so a record the request would get ends it
    /// instead (`409 Message Size Exceeds MaxBytes`) and goes to the next
    /// request. A paused or full bus so keeps its topic. While it waits (no
    /// record pending) the server sends `heartbeat`s, so a paused topic with
    /// nothing pending does not take a healthy connection for a dead one.
    pub(crate) fn keep_pin(expires: Duration, heartbeat: Duration, pin: &'a str) -> Self {
        PullRequest {
            max_bytes: Some(1),
            ..Self::records(1, expires, heartbeat, true, Some(pin))
        }
    }

    /// The request's subject under the JetStream API prefix.
    pub(crate) fn subject(api_prefix: &str, stream: &str, durable: &str) -> String {
        format!("{api_prefix}.CONSUMER.MSG.NEXT.{stream}.{durable}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_requests_carry_no_group() {
        let r = PullRequest::records(10, Duration::from_secs(1), Duration::ZERO, false, None);
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"batch":10,"expires":1000000000}"#
        );
    }

    #[test]
    fn pinned_requests_name_the_group_and_the_pin() {
        let r = PullRequest::records(
            5,
            Duration::from_secs(2),
            Duration::from_secs(1),
            true,
            Some("P1"),
        );
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"batch":5,"expires":2000000000,"idle_heartbeat":1000000000,"group":"bus","id":"P1"}"#
        );
        let standby = PullRequest::records(5, Duration::from_secs(2), Duration::ZERO, true, None);
        assert!(!serde_json::to_string(&standby).unwrap().contains("\"id\""));
        let keep = PullRequest::keep_pin(Duration::from_secs(2), Duration::from_secs(1), "P1");
        assert_eq!(
            serde_json::to_string(&keep).unwrap(),
            r#"{"batch":1,"expires":2000000000,"max_bytes":1,"idle_heartbeat":1000000000,"group":"bus","id":"P1"}"#
        );
    }
}
