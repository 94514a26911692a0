//! Whether this bus may hand a topic's records to the dispatcher under
//! `sharing: pinned`, and what losing the topic takes.
//!
//! # Contract
//!
//! Losing a topic is a *lost* revoke, as on Kafka. A topic is lost when the
//! server answers a pull request with a pin-id mismatch (another bus is
//! pinned), when the connection is lost (it may come back with the pin
//! gone, and the server forgets its pull requests) and when a pull session
//! fails otherwise (missed heartbeats, a deleted consumer). Before the pull
//! loop hands the dispatcher another record of the topic:
//!
//! 1. the acknowledging task forgot the records the bus held
//!    ([`Acker::forget`]): no `+WPI` keeps them from being redelivered to
//!    the topic's next owner, and no late `+ACK` or `-NAK` goes out for them;
//! 2. the dispatcher was sent `Revoked { lost: true }` and answered: it
//!    dropped the records it held, unacknowledged, and the handlers of the
//!    topic stopped; then `Assigned` starts a new generation;
//! 3. the deliveries that may still be out with this bus (read or not) are
//!    acknowledged or due again: the consumer has nothing pending, or
//!    `ack_wait` has passed since what this bus sent for them reached the
//!    server. The server redelivers before it delivers anything new, so a
//!    record never overtakes an earlier one of its key still out with the
//!    old connection. Until then the bus only keeps its pin, if it still has
//!    it.
//!
//! The records of a read that also carries a pin-id mismatch are never
//! handed over: the mismatch is acted on first.
//!
//! A stalled connection is noticed by the client's pings
//! (`connect::ping_interval`), well inside the pin lifetime, so a bus whose
//! connection stalled has stopped its handlers before a standby can be
//! pinned. Nothing here takes a lock: the topic's pull loop owns its
//! [`Ownership`].

use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::acker::{Acker, Held};
use crate::backend::{ConsumerEvent, TopicPartition};

/// The ownership state of one topic, driven by its pull loop.
#[derive(Debug, Default)]
pub(crate) struct Ownership {
    /// Records were handed to the dispatcher in the current generation.
    holds: bool,
    /// Records were asked for since the last loss: deliveries may be out.
    asked: bool,
    settle: Settle,
}

/// After a loss, when new records may be asked for again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Settle {
    /// Nothing of this bus is outstanding.
    #[default]
    Settled,
    /// Lost with deliveries outstanding; `ack_wait` counts from the moment
    /// what was sent for them reached the server, not known yet.
    Unanchored,
    /// Outstanding deliveries are due again at this instant.
    Until(Instant),
}

/// What the pull loop must do about a loss ([`Ownership::lost`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Loss {
    /// Records were handed to the dispatcher: forget them and revoke the
    /// topic (lost), then assign it again.
    pub(crate) revoke: bool,
}

impl Ownership {
    /// A request for records was sent.
    pub(crate) fn asked(&mut self) {
        self.asked = true;
    }

    /// Records were handed to the dispatcher.
    pub(crate) fn handed_over(&mut self) {
        self.holds = true;
    }

    /// True when records may be asked for at `now`.
    pub(crate) fn may_ask(&self, now: Instant) -> bool {
        match self.settle {
            Settle::Settled => true,
            Settle::Unanchored => false,
            Settle::Until(at) => now >= at,
        }
    }

    /// Until when records may not be asked for, once anchored.
    pub(crate) fn settling_until(&self) -> Option<Instant> {
        match self.settle {
            Settle::Until(at) => Some(at),
            _ => None,
        }
    }

    /// True while waiting for outstanding deliveries to be due again.
    pub(crate) fn settling(&self, now: Instant) -> bool {
        !self.may_ask(now)
    }

    /// True when a loss left deliveries outstanding and the moment from
    /// which `ack_wait` counts is still to be set ([`Ownership::anchor`]).
    pub(crate) fn needs_anchor(&self) -> bool {
        self.settle == Settle::Unanchored
    }

    /// Everything this bus sent for its outstanding deliveries reached the
    /// server by `at`: they are due again `ack_wait` later.
    pub(crate) fn anchor(&mut self, at: Instant, ack_wait: Duration) {
        if self.settle == Settle::Unanchored {
            self.settle = Settle::Until(at + ack_wait);
        }
    }

    /// The consumer has no delivery pending: nothing is outstanding.
    pub(crate) fn nothing_pending(&mut self) {
        if self.settle != Settle::Unanchored {
            self.settle = Settle::Settled;
        }
    }

    /// The topic was lost. Records may not be asked for again until
    /// outstanding deliveries are due (see the contract).
    pub(crate) fn lost(&mut self) -> Loss {
        let loss = Loss { revoke: self.holds };
        if self.holds || self.asked {
            self.settle = Settle::Unanchored;
        }
        self.holds = false;
        self.asked = false;
        loss
    }
}

/// Carries out a [`Loss`] of `partition`: forgets its held records, revokes
/// them from the dispatcher (lost) and waits for its answer, then assigns
/// the topic again (a new generation, handed records only once pinned).
pub(crate) async fn revoke_lost(
    loss: Loss,
    events: &tokio::sync::mpsc::Sender<ConsumerEvent>,
    acker: &Acker,
    held: &Held,
    partition: &TopicPartition,
) {
    if !loss.revoke {
        return;
    }
    acker.forget(held);
    let (done, answered) = oneshot::channel();
    let revoke = ConsumerEvent::Revoked {
        partitions: vec![partition.clone()],
        lost: true,
        done,
    };
    if events.send(revoke).await.is_err() {
        return;
    }
    let _ = answered.await;
    let _ = events
        .send(ConsumerEvent::Assigned(vec![partition.clone()]))
        .await;
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const ACK_WAIT: Duration = Duration::from_secs(2);

    #[derive(Clone, Debug)]
    enum Step {
        Ask,
        HandOver,
        Lose,
        Anchor,
        NothingPending,
        Wait(u64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            Just(Step::Ask),
            Just(Step::HandOver),
            Just(Step::Lose),
            Just(Step::Anchor),
            Just(Step::NothingPending),
            (0u64..3000).prop_map(Step::Wait),
        ]
    }

    proptest! {
        /// Whatever the order of events, after a loss with deliveries
        /// outstanding no records are asked for before the anchor plus
        /// `ack_wait`, unless the consumer reported nothing pending after
        /// the anchor; and a loss asks for a revoke exactly when records
        /// were handed over since the last one.
        #[test]
        fn nothing_is_asked_for_before_outstanding_deliveries_are_due(
            steps in proptest::collection::vec(step(), 1..60)
        ) {
            let start = Instant::now();
            let mut now = start;
            let mut o = Ownership::default();
            // The model: handed over since the last loss; asked since it;
            // outstanding deliveries due at (None: not yet known).
            let (mut handed, mut asked) = (false, false);
            let mut blocked: Option<Option<Instant>> = None;
            for s in steps {
                match s {
                    Step::Ask => {
                        if let Some(due) = blocked {
                            prop_assert!(!o.may_ask(now));
                            prop_assert!(due.is_some_and(|d| now < d) || due.is_none());
                            continue;
                        }
                        prop_assert!(o.may_ask(now));
                        o.asked();
                        asked = true;
                    }
                    Step::HandOver => {
                        if blocked.is_none() {
                            o.handed_over();
                            handed = true;
                        }
                    }
                    Step::Lose => {
                        let loss = o.lost();
                        prop_assert_eq!(loss.revoke, handed);
                        if handed || asked {
                            blocked = Some(None);
                        }
                        handed = false;
                        asked = false;
                    }
                    Step::Anchor => {
                        let needs = o.needs_anchor();
                        prop_assert_eq!(needs, blocked == Some(None));
                        o.anchor(now, ACK_WAIT);
                        if needs {
                            blocked = Some(Some(now + ACK_WAIT));
                        }
                    }
                    Step::NothingPending => {
                        o.nothing_pending();
                        if matches!(blocked, Some(Some(_))) {
                            blocked = None;
                        }
                    }
                    Step::Wait(ms) => {
                        now += Duration::from_millis(ms);
                        if blocked.is_some_and(|due| due.is_some_and(|d| now >= d)) {
                            blocked = None;
                        }
                    }
                }
                prop_assert_eq!(o.may_ask(now), blocked.is_none());
            }
        }
    }

    #[test]
    fn a_loss_without_records_out_changes_nothing() {
        let mut o = Ownership::default();
        assert_eq!(o.lost(), Loss { revoke: false });
        assert!(o.may_ask(Instant::now()));
        assert!(!o.needs_anchor());
    }

    #[test]
    fn a_loss_with_records_held_revokes_and_settles_for_ack_wait() {
        let t = Instant::now();
        let mut o = Ownership::default();
        o.asked();
        o.handed_over();
        assert_eq!(o.lost(), Loss { revoke: true });
        assert!(!o.may_ask(t + Duration::from_secs(3600)), "not anchored");
        o.anchor(t, ACK_WAIT);
        assert!(o.settling(t + ACK_WAIT - Duration::from_millis(1)));
        assert!(o.may_ask(t + ACK_WAIT));
        assert_eq!(o.settling_until(), Some(t + ACK_WAIT));
    }

    #[test]
    fn nothing_pending_ends_the_settling_only_once_anchored() {
        let t = Instant::now();
        let mut o = Ownership::default();
        o.asked();
        o.lost();
        o.nothing_pending();
        assert!(
            !o.may_ask(t),
            "what was sent may not have reached the server"
        );
        o.anchor(t, ACK_WAIT);
        o.nothing_pending();
        assert!(o.may_ask(t));
    }
}
