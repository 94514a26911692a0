//! The health model of a bus: per-component states with reasons, the rules
//! that set them, the background broker check and the optional heartbeat
//! probe.
//!
//! | component | unhealthy when | degraded when |
//! |-----------|----------------|---------------|
//! | `broker` | unreachable longer than `health.broker_unreachable_after` | unreachable for less, or not checked yet |
//! | `consumer` | the broker's ACLs refused it (READ on a subscribed topic or on the group) in the last 30 seconds | subscribed, but no partition assigned |
//! | `producer` | | publisher backlog |
//! | `backlog` | | recovery mode |
//! | `subscription:<topic>` | a partition's commit position stood still with unfinished records longer than `health.stall_after` | |
//! | `dead_letters` | a lane waits because not even a payload-less pointer record could be written; or a pointer record was written in place of a full dead letter less than 10 minutes ago | a lane waits on a transient dead-letter write error |
//! | `probe` | `health.probe.max_missed` heartbeats in a row missing | some missing, or publishing them fails |
//!
//! Health never asks the broker itself: it reads the latest background check
//! and the dispatcher's counters, so it answers at once with a dead broker or
//! during a rebalance.

use std::time::SystemTime;

pub(crate) mod assess;
pub(crate) mod broker;
pub(crate) mod dead_letters;
pub mod jxt_core;
pub(crate) mod probe;

/// Overall or per-component state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum HealthState {
    /// Working normally.
    Healthy,
    /// Working, but not at full capacity (catching up, paused partitions).
    Degraded,
    /// Not working (closed, broker unreachable).
    Unhealthy,
}

impl HealthState {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Healthy => "healthy",
            HealthState::Degraded => "degraded",
            HealthState::Unhealthy => "unhealthy",
        }
    }
}

/// Health of one part of the bus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComponentHealth {
    /// Component name (`backend`, `consumer`, `subscription:<topic>`, ...).
    pub name: String,
    /// Its state.
    pub state: HealthState,
    /// Why, in a few words.
    pub reason: String,
}

/// Result of [`EventBus::health`](crate::EventBus::health).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthStatus {
    /// Worst state over all components.
    pub overall: HealthState,
    /// Every component checked.
    pub components: Vec<ComponentHealth>,
    /// When the check ran.
    pub checked_at: SystemTime,
}

impl HealthStatus {
    pub(crate) fn from_components(components: Vec<ComponentHealth>) -> Self {
        let overall = components
            .iter()
            .map(|c| c.state)
            .max()
            .unwrap_or(HealthState::Healthy);
        HealthStatus {
            overall,
            components,
            checked_at: SystemTime::now(),
        }
    }

    /// Whether the overall state is healthy.
    pub fn is_healthy(&self) -> bool {
        self.overall == HealthState::Healthy
    }

    /// The component named `name`.
    pub fn component(&self, name: &str) -> Option<&ComponentHealth> {
        self.components.iter().find(|c| c.name == name)
    }

    /// Readiness: `Ok` when no component is unhealthy, the broker answered
    /// the last check and, with subscriptions, partitions are assigned;
    /// otherwise the first reason it is not ready.
    ///
    /// # Errors
    /// The reason, as `component: why`.
    pub fn readiness(&self) -> Result<(), String> {
        let blocking = |c: &&ComponentHealth| {
            c.state == HealthState::Unhealthy
                || (c.state != HealthState::Healthy
                    && (c.name == assess::BROKER || c.name == assess::CONSUMER))
        };
        match self.components.iter().find(blocking) {
            Some(c) => Err(format!("{}: {}", c.name, c.reason)),
            None => Ok(()),
        }
    }
}
