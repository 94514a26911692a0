//! The end-to-end heartbeat probe: publish a heartbeat through the bus,
//! consume it through the bus's own subscription, and report the round trip
//! and missing heartbeats.
//!
//! Every bus keys its heartbeats with a random instance id, so several
//! instances can share one health topic: a bus measures only its own
//! heartbeats, and a heartbeat whose partition another member of the group
//! owns is not counted as missing (that member's consume path is not this
//! bus's to judge). The probe task subscribes without holding any lock of
//! the bus beyond what a normal subscribe takes, and never while a health
//! request waits on it: health reads a snapshot.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{ComponentHealth, HealthState};
use crate::config::ProbeConfig;

/// A heartbeat's payload.
#[derive(Debug, Serialize, Deserialize)]
struct Heartbeat {
    instance: String,
    seq: u64,
}

struct Sent {
    at: Instant,
    partition: i32,
}

#[derive(Default)]
struct State {
    next_seq: u64,
    outstanding: BTreeMap<u64, Sent>,
    subscribed: bool,
    last_round_trip: Option<Duration>,
    last_back_at: Option<SystemTime>,
    consecutive_missed: u32,
    missed_total: u64,
    /// The last subscribe or publish failure, cleared by the next success.
    failure: Option<String>,
    /// Heartbeats land on a partition another member owns.
    elsewhere: Option<i32>,
}

/// The probe of one bus.
pub(crate) struct Probe {
    instance: String,
    config: ProbeConfig,
    state: Mutex<State>,
}

/// What the probe reports to health.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProbeReport {
    state: HealthState,
    reason: String,
}

impl ProbeReport {
    pub(crate) fn component(&self) -> ComponentHealth {
        ComponentHealth {
            name: "probe".into(),
            state: self.state,
            reason: self.reason.clone(),
        }
    }
}

impl Probe {
    pub(crate) fn new(config: ProbeConfig) -> Self {
        Probe {
            instance: uuid::Uuid::new_v4().simple().to_string(),
            config,
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn topic(&self) -> &str {
        &self.config.topic
    }

    pub(crate) fn interval(&self) -> Duration {
        self.config.interval
    }

    /// This bus's heartbeats are keyed by it.
    pub(crate) fn key(&self) -> &str {
        &self.instance
    }

    pub(crate) fn is_subscribed(&self) -> bool {
        self.state().subscribed
    }

    pub(crate) fn subscribed(&self, result: Result<(), String>) {
        let mut s = self.state();
        s.subscribed = result.is_ok();
        s.failure = result
            .err()
            .map(|e| format!("subscribing to the heartbeat topic failed: {e}"));
    }

    /// The next heartbeat's payload.
    pub(crate) fn next_heartbeat(&self) -> (u64, Vec<u8>) {
        let mut s = self.state();
        s.next_seq += 1;
        let beat = Heartbeat {
            instance: self.instance.clone(),
            seq: s.next_seq,
        };
        let payload = serde_json::to_vec(&beat).unwrap_or_default();
        (s.next_seq, payload)
    }

    /// The broker stored heartbeat `seq` on `partition`, sent at `at`.
    pub(crate) fn published(&self, seq: u64, at: Instant, partition: i32) {
        let mut s = self.state();
        s.outstanding.insert(seq, Sent { at, partition });
        s.failure = None;
    }

    /// Publishing a heartbeat failed: it counts as missing.
    pub(crate) fn publish_failed(&self, error: String) {
        let mut s = self.state();
        s.consecutive_missed += 1;
        s.missed_total += 1;
        s.failure = Some(format!("heartbeat publish failed: {error}"));
    }

    /// A heartbeat came through the subscription.
    pub(crate) fn received(&self, payload: &[u8]) {
        let Ok(beat) = serde_json::from_slice::<Heartbeat>(payload) else {
            return;
        };
        if beat.instance != self.instance {
            // Another instance's heartbeat: its round trip is not ours to measure.
            return;
        }
        let mut s = self.state();
        if let Some(sent) = s.outstanding.remove(&beat.seq) {
            s.last_round_trip = Some(sent.at.elapsed());
            s.last_back_at = Some(SystemTime::now());
            s.consecutive_missed = 0;
            s.elsewhere = None;
        }
    }

    /// Counts heartbeats older than the timeout as missing — those on
    /// partitions this bus owns; the others were consumed by another member.
    pub(crate) fn expire(&self, owns: impl Fn(i32) -> bool) {
        let mut s = self.state();
        let timeout = self.config.timeout;
        let expired: Vec<u64> = s
            .outstanding
            .iter()
            .filter(|(_, sent)| sent.at.elapsed() >= timeout)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in expired {
            let Some(sent) = s.outstanding.remove(&seq) else {
                continue;
            };
            if owns(sent.partition) {
                s.consecutive_missed += 1;
                s.missed_total += 1;
            } else {
                s.elsewhere = Some(sent.partition);
            }
        }
    }

    pub(crate) fn report(&self) -> ProbeReport {
        let s = self.state();
        let topic = &self.config.topic;
        let missed = s.consecutive_missed;
        let (state, mut reason) = if missed >= self.config.max_missed {
            (
                HealthState::Unhealthy,
                format!(
                    "{missed} heartbeats in a row did not come back through {topic} within {:?}",
                    self.config.timeout
                ),
            )
        } else if missed > 0 {
            (
                HealthState::Degraded,
                format!("{missed} heartbeats in a row missing on {topic}"),
            )
        } else if let Some(p) = s.elsewhere {
            (
                HealthState::Healthy,
                format!(
                    "heartbeats land on {topic}/{p}, owned by another member of the group: publishing checked, consuming checked by that member"
                ),
            )
        } else if let Some(rtt) = s.last_round_trip {
            (
                HealthState::Healthy,
                format!("last heartbeat round trip {:.1}ms", rtt.as_secs_f64() * 1e3),
            )
        } else {
            (
                HealthState::Healthy,
                "waiting for the first heartbeat".into(),
            )
        };
        if let Some(f) = &s.failure {
            if state == HealthState::Healthy {
                return ProbeReport {
                    state: HealthState::Degraded,
                    reason: f.clone(),
                };
            }
            reason.push_str("; ");
            reason.push_str(f);
        }
        if s.missed_total > 0 {
            reason.push_str(&format!(" ({} missed since start)", s.missed_total));
        }
        ProbeReport { state, reason }
    }
}

/// Runs the probe of `bus` until the bus is dropped or shut down.
pub(crate) fn spawn(bus: crate::bus::WeakBus, probe: Arc<Probe>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(probe.interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(bus) = bus.upgrade() else { return };
            if bus.is_closed() {
                return;
            }
            if !probe.is_subscribed() {
                let p = probe.clone();
                let handler = move |d: crate::Delivery| {
                    p.received(d.payload());
                    async { Ok(()) }
                };
                let result = bus
                    .subscribe(probe.topic(), handler, crate::SubscribeOptions::new())
                    .await;
                if let Err(e) = &result {
                    tracing::debug!(error = %e, topic = probe.topic(), "heartbeat subscribe failed");
                }
                probe.subscribed(result.map_err(|e| e.to_string()));
                continue;
            }
            let owned: Vec<i32> = bus
                .dispatch_stats()
                .await
                .map(|s| {
                    s.partitions
                        .iter()
                        .filter(|p| &*p.partition.topic == probe.topic())
                        .map(|p| p.partition.partition)
                        .collect()
                })
                .unwrap_or_default();
            probe.expire(|p| owned.contains(&p));
            let (seq, payload) = probe.next_heartbeat();
            let message = crate::Message::new(payload).with_key(probe.key());
            let sent_at = Instant::now();
            match bus.publish(probe.topic(), message).await {
                Ok(receipt) => probe.published(seq, sent_at, receipt.partition),
                Err(e) => probe.publish_failed(e.to_string()),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(max_missed: u32) -> Probe {
        Probe::new(ProbeConfig {
            enabled: true,
            timeout: Duration::ZERO,
            max_missed,
            ..ProbeConfig::default()
        })
    }

    #[test]
    fn own_heartbeats_count_others_are_ignored() {
        let p = probe(2);
        let (seq, payload) = p.next_heartbeat();
        p.published(seq, Instant::now(), 0);
        let foreign = serde_json::to_vec(&Heartbeat {
            instance: "someone-else".into(),
            seq,
        })
        .unwrap();
        p.received(&foreign);
        p.received(&payload);
        let r = p.report();
        assert_eq!(r.state, HealthState::Healthy, "{r:?}");
        assert!(r.reason.contains("round trip"), "{r:?}");
    }

    #[test]
    fn missing_heartbeats_degrade_then_fail_unless_another_member_owns_them() {
        let p = probe(2);
        for expected in [HealthState::Degraded, HealthState::Unhealthy] {
            let (seq, _) = p.next_heartbeat();
            p.published(seq, Instant::now(), 3);
            p.expire(|_| true);
            assert_eq!(p.report().state, expected);
        }
        let q = probe(1);
        let (seq, _) = q.next_heartbeat();
        q.published(seq, Instant::now(), 3);
        q.expire(|_| false);
        let r = q.report();
        assert_eq!(r.state, HealthState::Healthy, "{r:?}");
        assert!(r.reason.contains("another member"), "{r:?}");
    }
}
