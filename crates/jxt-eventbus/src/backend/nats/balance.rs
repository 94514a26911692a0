//! Spreading a group's topics over its buses under `sharing: pinned`.
//!
//! The server pins a topic to whichever bus asks first while it is free, and
//! a standby takes it only when its bus lets go. Left at that, the bus that
//! started first holds every topic and the others idle. So every
//! `nats.consumer.balance_interval` each bus asks its group, over core NATS
//! ([`naming::census_subject`]), which buses are alive, which topics each is
//! subscribed to and how many it is pinned to ([`Member`]). A bus pinned to
//! at least two topics more than another bus subscribed to one of them hands
//! that one topic over, the same way it lets go when unsubscribing (in key
//! order), and stays its standby. Each move narrows the spread by two, so
//! the group settles and topics do not bounce between buses.
//!
//! The bus that is to take the topic must win the race for the free pin:
//! the bus that handed it over waits [`HOLD_OFF`] before it may take it
//! back, and a standby that knows a bus of the group with fewer pins
//! subscribed to the topic waits a little longer the more pins it holds
//! ([`Balance::defer`]). Both waits are bounded, so a free topic is always
//! taken, even when the census was wrong.
//!
//! [`naming::census_subject`]: super::naming::census_subject

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_nats::Client;
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use super::consumer::NatsConsumer;

/// How long a census waits for the group's answers.
const CENSUS_WAIT: Duration = Duration::from_millis(250);
/// How long a bus that handed a topic over leaves it to the others.
pub(crate) const HOLD_OFF: Duration = Duration::from_secs(5);
/// A standby's extra wait for a free pin per pin it holds above the least
/// loaded bus of the group subscribed to the topic.
const DEFER_PER_PIN: Duration = Duration::from_millis(500);
/// The most a standby defers.
const MAX_DEFER: Duration = Duration::from_secs(3);

/// What a bus tells its group about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Member {
    /// Tells the buses of a group apart (random per bus).
    pub(crate) bus: String,
    /// Topics this bus is pinned to.
    pub(crate) pinned: usize,
    /// Topics this bus is subscribed to, pinned or standing by.
    pub(crate) topics: Vec<String>,
}

/// The balancing state one bus's pull loops share.
#[derive(Debug)]
pub(crate) struct Balance {
    /// Topics this bus is pinned to now.
    pub(crate) held: Arc<AtomicUsize>,
    /// The other buses of the group, as the last census found them, and
    /// when; empty while balancing is off.
    others: Mutex<(Option<Instant>, Vec<Member>)>,
    /// `nats.consumer.balance_interval`, when balancing is on (`sharing:
    /// pinned` and `nats.consumer.balance`).
    interval: Option<Duration>,
    /// When this bus last handed a topic over.
    moved_at: Mutex<Option<Instant>>,
}

impl Balance {
    pub(crate) fn new(interval: Option<Duration>) -> Self {
        Balance {
            held: Arc::default(),
            others: Mutex::new((None, Vec::new())),
            interval,
            moved_at: Mutex::new(None),
        }
    }

    pub(crate) fn interval(&self) -> Option<Duration> {
        self.interval
    }

    fn others(&self) -> std::sync::MutexGuard<'_, (Option<Instant>, Vec<Member>)> {
        self.others.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, others: Vec<Member>) {
        *self.others() = (Some(Instant::now()), others);
    }

    /// How long a standby of `topic` that saw its pin free waits before
    /// taking it: nothing, unless a recent census found a bus of the group
    /// subscribed to it that holds fewer pins than this one.
    pub(crate) fn defer(&self, topic: &str) -> Duration {
        let Some(interval) = self.interval else {
            return Duration::ZERO;
        };
        let held = self.held.load(Ordering::Relaxed);
        let others = self.others();
        let fresh = others.0.is_some_and(|at| at.elapsed() < interval * 3);
        if !fresh {
            return Duration::ZERO;
        }
        let fewest = others
            .1
            .iter()
            .filter(|m| m.topics.iter().any(|t| t == topic))
            .map(|m| m.pinned)
            .min();
        match fewest {
            Some(fewest) if fewest < held => {
                let above = u32::try_from(held - fewest).unwrap_or(u32::MAX);
                DEFER_PER_PIN.saturating_mul(above).min(MAX_DEFER)
            }
            _ => Duration::ZERO,
        }
    }
}

/// The topic this bus should hand over, if any: one it is pinned to while
/// another bus subscribed to it holds at least two pins fewer — the one
/// whose least loaded candidate holds the fewest (then by name).
pub(crate) fn topic_to_hand_over(
    me: &Member,
    pinned: &[String],
    others: &[Member],
) -> Option<String> {
    pinned
        .iter()
        .filter_map(|topic| {
            let fewest = others
                .iter()
                .filter(|m| m.topics.contains(topic))
                .map(|m| m.pinned)
                .min()?;
            (me.pinned >= fewest + 2).then_some((fewest, topic))
        })
        .min()
        .map(|(_, topic)| topic.clone())
}

/// Answers the group's censuses until `stop` (the consumer closed or was
/// dropped). A task of its own, so that answers never wait behind a
/// hand-over.
pub(crate) async fn answer(
    consumer: Weak<NatsConsumer>,
    client: Client,
    subject: String,
    mut stop: watch::Receiver<bool>,
) {
    let mut requests = match client.subscribe(subject.clone()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(subject = %subject, error = %e, "cannot answer the group's census; topics are not balanced");
            return;
        }
    };
    loop {
        let request = tokio::select! {
            r = requests.next() => r,
            _ = stop.wait_for(|stopped| *stopped) => None,
        };
        let Some(request) = request else {
            return;
        };
        let Some(me) = consumer.upgrade().and_then(|c| c.member()) else {
            return;
        };
        if let (Some(reply), Ok(body)) = (request.reply, serde_json::to_vec(&me)) {
            let _ = client.publish(reply, body.into()).await;
        }
    }
}

/// Balances this bus's topics every `interval`, until `stop`.
pub(crate) async fn run(
    consumer: Weak<NatsConsumer>,
    client: Client,
    subject: String,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval_at(Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        let Some(c) = consumer.upgrade() else {
            return;
        };
        if !balance_once(&c, &client, &subject).await {
            return;
        }
    }
}

/// One census and at most one hand-over. False once the consumer is closed.
async fn balance_once(consumer: &NatsConsumer, client: &Client, subject: &str) -> bool {
    let Some(me) = consumer.member() else {
        return false;
    };
    if client.connection_state() != async_nats::connection::State::Connected {
        return true;
    }
    let others: Vec<Member> = census(client, subject)
        .await
        .into_iter()
        .filter(|m| m.bus != me.bus)
        .collect();
    let balance = consumer.balance();
    balance.record(others.clone());
    let topic = {
        // One move at a time: the census must see where the last one went
        // before the next is decided.
        let mut moved_at = balance.moved_at.lock().unwrap_or_else(|e| e.into_inner());
        if moved_at.is_some_and(|at| at.elapsed() < HOLD_OFF) {
            return true;
        }
        let topic = topic_to_hand_over(&me, &consumer.pinned_topics(), &others);
        if topic.is_some() {
            *moved_at = Some(Instant::now());
        }
        topic
    };
    if let Some(topic) = topic {
        tracing::info!(
            topic = %topic, pinned = me.pinned,
            "handing the topic over to a bus of the group with fewer topics"
        );
        consumer.hand_over_topic(&topic).await;
    }
    true
}

/// Asks the buses of the group (this one included) who they are.
async fn census(client: &Client, subject: &str) -> Vec<Member> {
    let inbox = client.new_inbox();
    let mut answers = match client.subscribe(inbox.clone()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "census not sent");
            return Vec::new();
        }
    };
    if let Err(e) = client
        .publish_with_reply(subject.to_string(), inbox, Bytes::new())
        .await
    {
        tracing::debug!(error = %e, "census not sent");
        return Vec::new();
    }
    let mut members = Vec::new();
    let deadline = tokio::time::sleep(CENSUS_WAIT);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            answer = answers.next() => match answer {
                Some(m) => match serde_json::from_slice::<Member>(&m.payload) {
                    Ok(member) => members.push(member),
                    Err(e) => tracing::debug!(error = %e, "unreadable census answer ignored"),
                },
                None => break,
            },
            _ = &mut deadline => break,
        }
    }
    members
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(bus: &str, pinned: usize, topics: &[&str]) -> Member {
        Member {
            bus: bus.into(),
            pinned,
            topics: topics.iter().map(|t| t.to_string()).collect(),
        }
    }

    fn topics(t: &[&str]) -> Vec<String> {
        t.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn a_bus_hands_over_only_to_one_with_two_pins_fewer() {
        let all = ["a", "b", "c", "d"];
        let me = member("me", 4, &all);
        let pinned = topics(&all);
        let idle = member("x", 0, &all);
        assert_eq!(
            topic_to_hand_over(&me, &pinned, std::slice::from_ref(&idle)),
            Some("a".into())
        );
        // 3 against 1 still moves (to 2 and 2); 2 against 1 would only swap.
        let me3 = member("me", 3, &all);
        let one = member("x", 1, &all);
        assert!(topic_to_hand_over(&me3, &topics(&["b", "c", "d"]), &[one]).is_some());
        let me2 = member("me", 2, &all);
        let one = member("x", 1, &all);
        assert_eq!(topic_to_hand_over(&me2, &topics(&["c", "d"]), &[one]), None);
        // Alone, nothing moves.
        assert_eq!(topic_to_hand_over(&me, &pinned, &[]), None);
    }

    #[test]
    fn only_buses_subscribed_to_a_topic_take_it() {
        let me = member("me", 3, &["a", "b", "c"]);
        let pinned = topics(&["a", "b", "c"]);
        let elsewhere = member("x", 0, &["z"]);
        assert_eq!(topic_to_hand_over(&me, &pinned, &[elsewhere]), None);
        let on_c = member("y", 0, &["c"]);
        assert_eq!(topic_to_hand_over(&me, &pinned, &[on_c]), Some("c".into()));
    }

    #[test]
    fn the_least_loaded_candidate_gets_the_topic() {
        let me = member("me", 4, &["a", "b", "c", "d"]);
        let pinned = topics(&["a", "b", "c", "d"]);
        let busy = member("x", 2, &["a"]);
        let idle = member("y", 0, &["d"]);
        assert_eq!(
            topic_to_hand_over(&me, &pinned, &[busy, idle]),
            Some("d".into())
        );
    }

    #[test]
    fn standbys_with_more_pins_defer_to_the_least_loaded() {
        let b = Balance::new(Some(Duration::from_secs(10)));
        b.held.store(3, Ordering::Relaxed);
        // No census yet: no deferral.
        assert_eq!(b.defer("a"), Duration::ZERO);
        b.record(vec![member("x", 1, &["a"]), member("y", 0, &["b"])]);
        assert_eq!(b.defer("a"), DEFER_PER_PIN * 2);
        assert_eq!(b.defer("b"), MAX_DEFER.min(DEFER_PER_PIN * 3));
        assert_eq!(b.defer("c"), Duration::ZERO, "nobody else on c");
        b.held.store(0, Ordering::Relaxed);
        assert_eq!(b.defer("a"), Duration::ZERO);
        let off = Balance::new(None);
        off.held.store(5, Ordering::Relaxed);
        assert_eq!(off.defer("a"), Duration::ZERO);
    }
}
