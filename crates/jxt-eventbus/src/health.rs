//! The health model of a bus.

use std::time::SystemTime;

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
}
