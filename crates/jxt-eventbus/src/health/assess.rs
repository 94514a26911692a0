//! The health rules: from what the bus knows now to per-component states.
//! Pure, so every rule is tested without a broker.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use tokio::time::Instant;

use super::broker::Reachability;
use super::dead_letters::DeadLetterHealth;
use super::probe::ProbeReport;
use super::{ComponentHealth, HealthState};
use crate::backlog::{BacklogState, PublisherState};
use crate::config::HealthConfig;
use crate::dispatch::{DispatchStats, PartitionStats};

/// Everything the rules look at, gathered without waiting on the broker.
pub(crate) struct Inputs<'a> {
    pub(crate) backend: &'static str,
    pub(crate) broker: Reachability,
    /// `None` before the first subscribe.
    pub(crate) dispatch: Option<DispatchStats>,
    /// Why the broker refuses the consumer access (ACLs), if it does.
    pub(crate) access_denied: Option<String>,
    pub(crate) publisher: PublisherState,
    pub(crate) recovering: bool,
    pub(crate) backlog: BacklogState,
    pub(crate) probe: Option<ProbeReport>,
    pub(crate) dead_letters: &'a DeadLetterHealth,
    pub(crate) config: &'a HealthConfig,
    pub(crate) now: Instant,
}

/// Component names the readiness rule looks at.
pub(crate) const BROKER: &str = "broker";
pub(crate) const CONSUMER: &str = "consumer";

pub(crate) fn assess(inputs: &Inputs<'_>) -> Vec<ComponentHealth> {
    let mut out = vec![broker(inputs)];
    out.push(consumer(
        inputs.dispatch.as_ref(),
        inputs.access_denied.as_deref(),
    ));
    out.push(producer(&inputs.publisher));
    out.push(backlog(inputs.recovering, &inputs.backlog));
    out.push(inputs.dead_letters.component(inputs.now));
    if let Some(stats) = &inputs.dispatch {
        out.extend(subscriptions(
            stats,
            &inputs.backlog,
            inputs.config.stall_after,
        ));
    }
    if let Some(p) = &inputs.probe {
        out.push(p.component());
    }
    out
}

/// Partitions stalled past the threshold.
pub(crate) fn stalled(stats: &DispatchStats, stall_after: Duration) -> usize {
    stats
        .partitions
        .iter()
        .filter(|p| is_stalled(p, stall_after))
        .count()
}

fn is_stalled(p: &PartitionStats, stall_after: Duration) -> bool {
    p.stuck_for.is_some_and(|d| d >= stall_after)
}

fn component(name: impl Into<String>, state: HealthState, reason: String) -> ComponentHealth {
    ComponentHealth {
        name: name.into(),
        state,
        reason,
    }
}

fn broker(i: &Inputs<'_>) -> ComponentHealth {
    let b = &i.broker;
    let for_how_long = i.now.saturating_duration_since(b.since);
    match b.reachable {
        None => component(
            BROKER,
            HealthState::Degraded,
            format!("{} broker not checked yet", i.backend),
        ),
        Some(true) => component(
            BROKER,
            HealthState::Healthy,
            format!("{} broker reachable{}", i.backend, checked_ago(b)),
        ),
        Some(false) => {
            let limit = i.config.broker_unreachable_after;
            let state = if for_how_long >= limit {
                HealthState::Unhealthy
            } else {
                HealthState::Degraded
            };
            let why = b.error.as_deref().unwrap_or("no answer");
            component(
                BROKER,
                state,
                format!(
                    "{} broker unreachable for {} (unhealthy after {}){}: {why}",
                    i.backend,
                    secs(for_how_long),
                    secs(limit),
                    checked_ago(b)
                ),
            )
        }
    }
}

fn consumer(stats: Option<&DispatchStats>, access_denied: Option<&str>) -> ComponentHealth {
    let Some(s) = stats else {
        return component(CONSUMER, HealthState::Healthy, "no subscriptions".into());
    };
    if let Some(why) = access_denied.filter(|_| s.subscriptions > 0) {
        return component(CONSUMER, HealthState::Unhealthy, why.to_string());
    }
    if s.subscriptions > 0 && s.assigned_partitions == 0 {
        return component(
            CONSUMER,
            HealthState::Degraded,
            format!(
                "{} topics subscribed, no partition assigned (joining the group, or the group has more members than partitions)",
                s.subscriptions
            ),
        );
    }
    component(
        CONSUMER,
        HealthState::Healthy,
        format!(
            "{} topics, {} partitions assigned ({} paused by back-pressure), {} records buffered",
            s.subscriptions, s.assigned_partitions, s.paused_partitions, s.buffered
        ),
    )
}

fn producer(p: &PublisherState) -> ComponentHealth {
    let load = format!(
        "{} publishes in flight, average latency {:?}",
        p.in_flight, p.latency
    );
    if p.backlog {
        component(
            "producer",
            HealthState::Degraded,
            format!("publisher backlog: {load}"),
        )
    } else {
        component("producer", HealthState::Healthy, load)
    }
}

fn backlog(recovering: bool, b: &BacklogState) -> ComponentHealth {
    if recovering {
        component(
            "backlog",
            HealthState::Degraded,
            format!("catching up (recovery mode): lag {}", b.lag),
        )
    } else {
        component(
            "backlog",
            HealthState::Healthy,
            format!("no backlog: lag {}", b.lag),
        )
    }
}

/// One component per subscribed topic: unhealthy when one of its partitions
/// stalled.
fn subscriptions(
    stats: &DispatchStats,
    backlog: &BacklogState,
    stall_after: Duration,
) -> Vec<ComponentHealth> {
    let mut by_topic: BTreeMap<&str, Vec<&PartitionStats>> = stats
        .topics
        .iter()
        .map(|t| (t.as_str(), Vec::new()))
        .collect();
    for p in &stats.partitions {
        if let Some(v) = by_topic.get_mut(&*p.partition.topic) {
            v.push(p);
        }
    }
    by_topic
        .into_iter()
        .map(|(topic, parts)| {
            let name = format!("subscription:{topic}");
            let stalled: Vec<&&PartitionStats> =
                parts.iter().filter(|p| is_stalled(p, stall_after)).collect();
            if !stalled.is_empty() {
                let mut reason = String::new();
                for p in &stalled {
                    let _ = write!(
                        reason,
                        "{}partition {} stalled: commit position {} has not moved for {} with {} records unfinished ({} running)",
                        if reason.is_empty() { "" } else { "; " },
                        p.partition.partition,
                        p.position.map_or("-".into(), |o| o.to_string()),
                        secs(p.stuck_for.unwrap_or_default()),
                        p.buffered,
                        p.running,
                    );
                }
                return component(name, HealthState::Unhealthy, reason);
            }
            let unfinished: usize = parts.iter().map(|p| p.buffered).sum();
            let lag = backlog
                .topics
                .iter()
                .find(|t| t.topic == topic)
                .map_or(String::new(), |t| format!(", lag {}", t.lag));
            component(
                name,
                HealthState::Healthy,
                format!(
                    "{} partitions, {unfinished} records unfinished{lag}",
                    parts.len()
                ),
            )
        })
        .collect()
}

/// When the last background check answered, as ` (checked 1.2s ago)`.
fn checked_ago(b: &Reachability) -> String {
    b.checked_at
        .and_then(|t| t.elapsed().ok())
        .map_or(String::new(), |d| format!(" (checked {} ago)", secs(d)))
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::TopicPartition;

    fn partition(topic: &str, p: i32, stuck: Option<u64>) -> PartitionStats {
        PartitionStats {
            partition: TopicPartition::new(topic, p),
            buffered: stuck.map_or(0, |_| 3),
            running: stuck.map_or(0, |_| 1),
            paused: false,
            position: Some(41),
            oldest_unfinished: None,
            stuck_for: stuck.map(Duration::from_secs),
        }
    }

    fn inputs(config: &HealthConfig, dispatch: Option<DispatchStats>) -> Inputs<'_> {
        Inputs {
            backend: "memory",
            broker: Reachability {
                reachable: Some(true),
                since: Instant::now(),
                error: None,
                checked_at: None,
            },
            dispatch,
            access_denied: None,
            publisher: PublisherState::default(),
            recovering: false,
            backlog: BacklogState::default(),
            probe: None,
            dead_letters: Box::leak(Box::default()),
            config,
            now: Instant::now(),
        }
    }

    #[test]
    fn a_consumer_the_broker_refuses_is_unhealthy_with_the_reason() {
        let config = HealthConfig::default();
        let stats = DispatchStats {
            subscriptions: 1,
            assigned_partitions: 1,
            ..DispatchStats::default()
        };
        let mut i = inputs(&config, Some(stats));
        assert_eq!(state_of(&assess(&i), CONSUMER), HealthState::Healthy);
        i.access_denied = Some("needs the READ ACL".into());
        let out = assess(&i);
        let c = out.iter().find(|c| c.name == CONSUMER).unwrap();
        assert_eq!(c.state, HealthState::Unhealthy);
        assert_eq!(c.reason, "needs the READ ACL");
        // Without subscriptions there is nothing to refuse.
        i.dispatch = None;
        assert_eq!(state_of(&assess(&i), CONSUMER), HealthState::Healthy);
    }

    fn state_of(c: &[ComponentHealth], name: &str) -> HealthState {
        c.iter().find(|c| c.name == name).expect(name).state
    }

    #[test]
    fn a_partition_stuck_past_the_threshold_makes_its_subscription_unhealthy() {
        let config = HealthConfig {
            stall_after: Duration::from_secs(60),
            ..HealthConfig::default()
        };
        let stats = DispatchStats {
            subscriptions: 2,
            assigned_partitions: 3,
            topics: vec!["a".into(), "b".into()],
            partitions: vec![
                partition("a", 0, Some(61)),
                partition("a", 1, None),
                partition("b", 0, Some(59)),
            ],
            ..DispatchStats::default()
        };
        let c = assess(&inputs(&config, Some(stats.clone())));
        assert_eq!(state_of(&c, "subscription:a"), HealthState::Unhealthy);
        assert_eq!(state_of(&c, "subscription:b"), HealthState::Healthy);
        let a = c.iter().find(|c| c.name == "subscription:a").unwrap();
        assert!(a.reason.contains("partition 0 stalled"), "{}", a.reason);
        assert!(a.reason.contains("commit position 41"), "{}", a.reason);
        assert_eq!(stalled(&stats, config.stall_after), 1);
    }

    #[test]
    fn an_unreachable_broker_degrades_then_fails_past_the_threshold() {
        let config = HealthConfig {
            broker_unreachable_after: Duration::from_secs(30),
            ..HealthConfig::default()
        };
        let mut i = inputs(&config, None);
        i.broker = Reachability {
            reachable: Some(false),
            since: i.now - Duration::from_secs(10),
            error: Some("connection refused".into()),
            checked_at: None,
        };
        let c = assess(&i);
        assert_eq!(state_of(&c, BROKER), HealthState::Degraded);
        i.broker.since = i.now - Duration::from_secs(31);
        let c = assess(&i);
        assert_eq!(state_of(&c, BROKER), HealthState::Unhealthy);
        let b = c.iter().find(|c| c.name == BROKER).unwrap();
        assert!(b.reason.contains("connection refused"), "{}", b.reason);
    }

    #[test]
    fn subscribed_without_partitions_is_degraded() {
        let config = HealthConfig::default();
        let stats = DispatchStats {
            subscriptions: 1,
            topics: vec!["a".into()],
            ..DispatchStats::default()
        };
        let c = assess(&inputs(&config, Some(stats)));
        assert_eq!(state_of(&c, CONSUMER), HealthState::Degraded);
        assert_eq!(state_of(&c, "subscription:a"), HealthState::Healthy);
    }
}
