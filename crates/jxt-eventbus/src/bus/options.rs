//! Per-subscription options.

use crate::config::{DispatchConfig, Ordering};
use crate::dispatch::{BatchSpec, SubscriptionSettings};
use std::time::Duration;

use crate::middleware::{Classifier, RateLimit};

/// Options of one subscription; unset fields take the bus's
/// [`DispatchConfig`] values.
#[derive(Clone, Default)]
#[must_use]
pub struct SubscribeOptions {
    ordering: Option<Ordering>,
    max_concurrency: Option<usize>,
    recovery_concurrency: Option<usize>,
    rate_limit: Option<RateLimit>,
    recovery_rate_limit: Option<RateLimit>,
    attempt_timeout: Option<Duration>,
    classifier: Option<Classifier>,
}

impl std::fmt::Debug for SubscribeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscribeOptions")
            .field("ordering", &self.ordering)
            .field("max_concurrency", &self.max_concurrency)
            .field("recovery_concurrency", &self.recovery_concurrency)
            .field("rate_limit", &self.rate_limit)
            .field("recovery_rate_limit", &self.recovery_rate_limit)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("classifier", &self.classifier.is_some())
            .finish()
    }
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

    /// Fails an attempt that runs longer than `after` with
    /// [`ErrorKind::Timeout`](crate::ErrorKind::Timeout), which is retried.
    pub fn attempt_timeout(mut self, after: Duration) -> Self {
        self.attempt_timeout = Some(after);
        self
    }

    /// Overrides the kind of handler errors (retryable or not).
    pub fn classify_errors(
        mut self,
        classify: impl Fn(&crate::HandlerError) -> crate::ErrorKind + Send + Sync + 'static,
    ) -> Self {
        self.classifier = Some(std::sync::Arc::new(classify));
        self
    }

    /// Wraps `handler` in the layers these options ask for, in the order
    /// documented in [`crate::middleware`].
    pub(crate) fn layer(
        &self,
        handler: std::sync::Arc<dyn crate::Handler>,
    ) -> crate::Result<std::sync::Arc<dyn crate::Handler>> {
        use crate::middleware::{Classified, RateLimited, Timeout};
        use std::sync::Arc;
        let mut h = handler;
        if let Some(c) = &self.classifier {
            h = Arc::new(Classified::new(h, c.clone()));
        }
        if let Some(after) = self.attempt_timeout {
            h = Arc::new(Timeout::new(h, after));
        }
        if self.rate_limit.is_some() || self.recovery_rate_limit.is_some() {
            for (limit, field) in [
                (self.rate_limit, "rate_limit"),
                (self.recovery_rate_limit, "recovery_rate_limit"),
            ] {
                if let Some(l) = limit {
                    l.validate(field)?;
                }
            }
            h = Arc::new(RateLimited::new(
                h,
                self.rate_limit,
                self.recovery_rate_limit,
            ));
        }
        Ok(h)
    }

    /// The handler and settings of a batch subscription. Options that count
    /// records one at a time (rate limits, lane concurrency) are refused:
    /// a batch subscription's concurrency is its batches'.
    pub(crate) fn batch(
        &self,
        handler: std::sync::Arc<dyn crate::batch::BatchHandler>,
        options: crate::batch::BatchOptions,
        defaults: &DispatchConfig,
    ) -> std::result::Result<(BatchSpec, SubscriptionSettings), String> {
        let refused = [
            (self.rate_limit.is_some(), "rate_limit"),
            (self.recovery_rate_limit.is_some(), "recovery_rate_limit"),
            (self.max_concurrency.is_some(), "max_concurrency"),
            (self.recovery_concurrency.is_some(), "recovery_concurrency"),
        ];
        if let Some((_, name)) = refused.iter().find(|(set, _)| *set) {
            return Err(format!(
                "`{name}` does not apply to a batch subscription; use BatchOptions::max_in_flight for its concurrency"
            ));
        }
        let spec = BatchSpec {
            handler,
            options,
            attempt_timeout: self.attempt_timeout,
            classifier: self.classifier.clone(),
        };
        let settings = SubscriptionSettings {
            ordering: self.ordering.unwrap_or(defaults.ordering),
            // A batch takes up to `max_records` lanes.
            max_concurrency: options.max_records().saturating_mul(options.max_in_flight),
            recovery_concurrency: None,
        };
        Ok((spec, settings))
    }

    pub(crate) fn resolve(&self, defaults: &DispatchConfig) -> SubscriptionSettings {
        SubscriptionSettings {
            ordering: self.ordering.unwrap_or(defaults.ordering),
            max_concurrency: self.max_concurrency.unwrap_or(defaults.max_concurrency),
            recovery_concurrency: self.recovery_concurrency,
        }
    }
}
