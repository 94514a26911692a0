//! Per-subscription options.

use crate::config::{DispatchConfig, Ordering};
use crate::dispatch::SubscriptionSettings;
use crate::middleware::RateLimit;

/// Options of one subscription; unset fields take the bus's
/// [`DispatchConfig`] values.
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct SubscribeOptions {
    ordering: Option<Ordering>,
    max_concurrency: Option<usize>,
    recovery_concurrency: Option<usize>,
    rate_limit: Option<RateLimit>,
    recovery_rate_limit: Option<RateLimit>,
}

impl SubscribeOptions {
    /// Defaults from the bus configuration.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ordering of this subscription.
    pub fn ordering(mut self, ordering: Ordering) -> Self {
        self.ordering = Some(ordering);
        self
    }

    /// Lanes handled concurrently (at least 1).
    pub fn max_concurrency(mut self, n: usize) -> Self {
        self.max_concurrency = Some(n.max(1));
        self
    }

    /// Lanes handled concurrently while the bus is in recovery mode (for
    /// example higher, to catch up faster, or lower, to spare a dependency).
    /// Default: the same as outside it.
    pub fn recovery_concurrency(mut self, n: usize) -> Self {
        self.recovery_concurrency = Some(n.max(1));
        self
    }

    /// Limits handler attempts (retries included) of this subscription with
    /// a token bucket; attempts wait for a token inside their lane.
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    /// The limit while the bus is in recovery mode (default: `rate_limit`).
    pub fn recovery_rate_limit(mut self, limit: RateLimit) -> Self {
        self.recovery_rate_limit = Some(limit);
        self
    }

    /// The rate limits, normal and in recovery mode.
    pub(crate) fn rate_limits(&self) -> (Option<RateLimit>, Option<RateLimit>) {
        (self.rate_limit, self.recovery_rate_limit)
    }

    pub(crate) fn resolve(&self, defaults: &DispatchConfig) -> SubscriptionSettings {
        SubscriptionSettings {
            ordering: self.ordering.unwrap_or(defaults.ordering),
            max_concurrency: self.max_concurrency.unwrap_or(defaults.max_concurrency),
            recovery_concurrency: self.recovery_concurrency,
        }
    }
}
