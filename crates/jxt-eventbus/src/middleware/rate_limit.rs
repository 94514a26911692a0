//! Token-bucket rate limiting of handler attempts (governor).

use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;

use futures::future::BoxFuture;
use governor::{DefaultDirectRateLimiter, Quota};
use serde::{Deserialize, Serialize};

use crate::delivery::Delivery;
use crate::error::{Error, Result};
use crate::handler::{Handler, HandlerResult};

/// A token bucket: `per_second` tokens a second, at most `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained rate, in attempts (or publishes) per second; at least 1.
    pub per_second: u32,
    /// Attempts allowed at once after a quiet period; at least 1.
    pub burst: u32,
}

impl RateLimit {
    /// `per_second` with a burst of the same size.
    pub fn per_second(per_second: u32) -> Self {
        RateLimit {
            per_second,
            burst: per_second,
        }
    }

    /// Sets the burst.
    #[must_use]
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = burst;
        self
    }

    /// Checks the values; `field` names the setting in errors.
    ///
    /// # Errors
    /// [`Error::Config`] when a value is zero.
    pub fn validate(&self, field: &str) -> Result<()> {
        if self.per_second == 0 || self.burst == 0 {
            return Err(Error::config(
                field,
                format!(
                    "per_second {} / burst {}: both must be at least 1",
                    self.per_second, self.burst
                ),
            ));
        }
        Ok(())
    }

    pub(crate) fn limiter(&self) -> DefaultDirectRateLimiter {
        let rate = NonZeroU32::new(self.per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(self.burst).unwrap_or(NonZeroU32::MIN);
        DefaultDirectRateLimiter::direct(Quota::per_second(rate).allow_burst(burst))
    }
}

/// A handler whose attempts wait for a token. While the bus is in recovery
/// mode the recovery limit applies instead, when one is set.
pub struct RateLimited<H> {
    inner: Arc<H>,
    normal: Option<Arc<DefaultDirectRateLimiter>>,
    recovery: Option<Arc<DefaultDirectRateLimiter>>,
}

impl<H> fmt::Debug for RateLimited<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimited")
            .field("normal", &self.normal.is_some())
            .field("recovery", &self.recovery.is_some())
            .finish_non_exhaustive()
    }
}

impl<H: Handler> RateLimited<H> {
    /// Wraps `inner`; `None` means unlimited in that mode.
    pub fn new(inner: H, normal: Option<RateLimit>, recovery: Option<RateLimit>) -> Self {
        RateLimited {
            inner: Arc::new(inner),
            normal: normal.map(|l| Arc::new(l.limiter())),
            recovery: recovery.map(|l| Arc::new(l.limiter())),
        }
    }
}

impl<H: Handler> Handler for RateLimited<H> {
    fn handle(&self, delivery: Delivery) -> BoxFuture<'static, HandlerResult> {
        let limiter = if delivery.in_recovery() && self.recovery.is_some() {
            self.recovery.clone()
        } else {
            self.normal.clone()
        };
        let inner = self.inner.clone();
        Box::pin(async move {
            if let Some(l) = limiter {
                l.until_ready().await;
            }
            inner.handle(delivery).await
        })
    }
}

impl Handler for Arc<dyn Handler> {
    fn handle(&self, delivery: Delivery) -> BoxFuture<'static, HandlerResult> {
        (**self).handle(delivery)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_refused_with_the_field() {
        let e = RateLimit::per_second(0)
            .validate("publish_rate_limit")
            .unwrap_err();
        assert!(e.to_string().contains("publish_rate_limit"));
        assert!(RateLimit::per_second(5).burst(0).validate("x").is_err());
        RateLimit::per_second(5).burst(1).validate("x").unwrap();
    }

    #[test]
    fn the_bucket_allows_the_burst_then_refuses() {
        // governor's check() does not wait: count what one instant allows.
        let l = RateLimit::per_second(10).burst(3).limiter();
        let allowed = (0..10).filter(|_| l.check().is_ok()).count();
        assert_eq!(allowed, 3);
    }
}
