//! Health rules: when the bus calls itself unhealthy, and the optional
//! end-to-end heartbeat probe.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::at_least;
use super::bounds::timer;
use crate::error::{Error, Result};

/// Health monitoring settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// Time between broker reachability checks, run in the background so a
    /// health request never waits on a dead broker. Default 5s.
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
    /// How long the broker may be unreachable before the bus is unhealthy
    /// (degraded and not ready before that). Default 30s.
    #[serde(with = "humantime_serde")]
    pub broker_unreachable_after: Duration,
    /// How long a partition's commit position may stand still while it has
    /// unfinished records before the bus is unhealthy (a stalled handler).
    /// Retries of one record count as standing still, so keep it above the
    /// longest retry sequence. Default 5m.
    #[serde(with = "humantime_serde")]
    pub stall_after: Duration,
    /// End-to-end heartbeat probe. Default off.
    pub probe: ProbeConfig,
    /// jxt-core's health-check heartbeats, published and read so Go and
    /// Rust services see each other. Default off.
    pub jxt_core: JxtCoreHealthConfig,
    /// What the operator endpoint `/status` shows and what it may cost.
    pub status: StatusConfig,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            check_interval: Duration::from_secs(5),
            broker_unreachable_after: Duration::from_secs(30),
            stall_after: Duration::from_secs(300),
            probe: ProbeConfig::default(),
            jxt_core: JxtCoreHealthConfig::default(),
            status: StatusConfig::default(),
        }
    }
}

/// jxt-core's health-check heartbeats (see [`crate::health::jxt_core`]):
/// when enabled, the bus publishes one heartbeat of jxt-core's shape at
/// start and then every `interval` to `topic`, and reads every instance's
/// heartbeats from it ([`crate::EventBus::jxt_core_peers`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JxtCoreHealthConfig {
    /// Publish and read the heartbeats. Default false.
    pub enabled: bool,
    /// Topic. jxt-core's default is `"jxt-core-health-check"`; with its
    /// `Enterprise.HealthCheck` enabled and no topic it uses
    /// `"jxt-core-kafka-health-check"` / `"jxt-core-nats-health-check"`.
    /// Default `"jxt-core-health-check"`.
    pub topic: String,
    /// Time between heartbeats. Default 2m (jxt-core's).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for JxtCoreHealthConfig {
    fn default() -> Self {
        JxtCoreHealthConfig {
            enabled: false,
            topic: crate::health::jxt_core::DEFAULT_TOPIC.into(),
            interval: Duration::from_secs(120),
        }
    }
}

/// The `/status` endpoint (cargo feature `http`). It answers every request
/// at once from state the bus already holds; nothing in it waits on the
/// broker or on a subscription change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatusConfig {
    /// Show the text of recent handler errors. Those texts come from
    /// application code and often quote the record (a customer's name, an
    /// address, an account number), and `/status` usually has no
    /// authentication: with `false` only their kind, topic, partition,
    /// offset, attempt and time are shown. Default false.
    pub show_error_messages: bool,
    /// How old the per-partition lag shown may be. A request that finds it
    /// older starts one background read from the broker and is answered
    /// with the reading it has, so however many requests arrive, the
    /// broker is asked at most once per this interval. Default 5s.
    #[serde(with = "humantime_serde")]
    pub lag_max_age: Duration,
    /// Let `POST /dead-letters/replay` replay this group's dead letters.
    /// The operator endpoints have no authentication of their own: turn
    /// it on only where they are reachable by operators alone. Default
    /// false (the status page says so where its replay button would be).
    pub allow_replay: bool,
}

impl Default for StatusConfig {
    fn default() -> Self {
        StatusConfig {
            show_error_messages: false,
            lag_max_age: Duration::from_secs(5),
            allow_replay: false,
        }
    }
}

/// The heartbeat probe: the bus publishes a heartbeat every `interval` to
/// `topic` and consumes it through its own subscription, reporting the
/// round trip and missing heartbeats in health.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProbeConfig {
    /// Run the probe. Default false.
    pub enabled: bool,
    /// Topic of the heartbeats; the bus subscribes to it. Each bus keys its
    /// heartbeats by its own instance id and checks only those it owns the
    /// partition of (on NATS give each instance its own topic). Default
    /// `"eventbus.health"`.
    pub topic: String,
    /// Time between heartbeats. Default 10s.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// A heartbeat not back within this is missing. Default 5s.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive missing heartbeats that make the bus unhealthy (fewer
    /// make it degraded). Default 3.
    pub max_missed: u32,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            enabled: false,
            topic: "eventbus.health".into(),
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            max_missed: 3,
        }
    }
}

impl HealthConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        timer(
            "health.check_interval",
            self.check_interval,
            Duration::from_millis(10),
        )?;
        timer(
            "health.broker_unreachable_after",
            self.broker_unreachable_after,
            Duration::ZERO,
        )?;
        timer(
            "health.stall_after",
            self.stall_after,
            Duration::from_millis(100),
        )?;
        let j = &self.jxt_core;
        if j.enabled {
            if crate::validate::topic(&j.topic).is_err() {
                return Err(Error::config(
                    "health.jxt_core.topic",
                    format!("{:?} is not a valid topic name", j.topic),
                ));
            }
            at_least(
                "health.jxt_core.interval",
                j.interval,
                Duration::from_millis(10),
            )?;
        }
        timer(
            "health.status.lag_max_age",
            self.status.lag_max_age,
            Duration::from_millis(100),
        )?;
        let p = &self.probe;
        if !p.enabled {
            return Ok(());
        }
        if crate::validate::topic(&p.topic).is_err() {
            return Err(Error::config(
                "health.probe.topic",
                format!("{:?} is not a valid topic name", p.topic),
            ));
        }
        timer(
            "health.probe.interval",
            p.interval,
            Duration::from_millis(10),
        )?;
        timer("health.probe.timeout", p.timeout, Duration::from_millis(10))?;
        at_least("health.probe.max_missed", p.max_missed, 1)?;
        Ok(())
    }
}
