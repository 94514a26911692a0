//! Rate-limited warnings and errors: a flood of failures (a poison topic, a
//! dead broker) logs at most [`PER_MINUTE`] lines per minute per call site,
//! each carrying `suppressed`, the number of lines left out since the
//! previous one. Per-record detail stays at debug level.
//!
//! ```ignore
//! warn_limited!(topic = %t, "record dead-lettered");
//! ```

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use governor::{DefaultDirectRateLimiter, Quota};

/// Lines per minute per call site (the burst, refilled evenly).
pub(crate) const PER_MINUTE: u32 = 10;

/// The budget of one call site.
#[derive(Debug)]
pub(crate) struct LogLimiter {
    limiter: OnceLock<DefaultDirectRateLimiter>,
    suppressed: AtomicU64,
}

impl LogLimiter {
    pub(crate) const fn new() -> Self {
        LogLimiter {
            limiter: OnceLock::new(),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(lines suppressed since the last one)` when this line may be
    /// logged; `None` (and counted) when over budget.
    pub(crate) fn allow(&self) -> Option<u64> {
        let limiter = self.limiter.get_or_init(|| {
            let n = NonZeroU32::new(PER_MINUTE).unwrap_or(NonZeroU32::MIN);
            DefaultDirectRateLimiter::direct(Quota::per_minute(n))
        });
        if limiter.check().is_ok() {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// `tracing::warn!`, rate-limited per call site.
macro_rules! warn_limited {
    (target: $target:expr, $($arg:tt)+) => {{
        static LIMIT: $crate::log_limit::LogLimiter = $crate::log_limit::LogLimiter::new();
        if let Some(suppressed) = LIMIT.allow() {
            tracing::warn!(target: $target, suppressed, $($arg)+);
        }
    }};
    ($($arg:tt)+) => {{
        static LIMIT: $crate::log_limit::LogLimiter = $crate::log_limit::LogLimiter::new();
        if let Some(suppressed) = LIMIT.allow() {
            tracing::warn!(suppressed, $($arg)+);
        }
    }};
}

/// `tracing::error!`, rate-limited per call site.
#[cfg_attr(not(feature = "kafka"), allow(unused_macros))]
macro_rules! error_limited {
    (target: $target:expr, $($arg:tt)+) => {{
        static LIMIT: $crate::log_limit::LogLimiter = $crate::log_limit::LogLimiter::new();
        if let Some(suppressed) = LIMIT.allow() {
            tracing::error!(target: $target, suppressed, $($arg)+);
        }
    }};
    ($($arg:tt)+) => {{
        static LIMIT: $crate::log_limit::LogLimiter = $crate::log_limit::LogLimiter::new();
        if let Some(suppressed) = LIMIT.allow() {
            tracing::error!(suppressed, $($arg)+);
        }
    }};
}

#[cfg(feature = "kafka")]
pub(crate) use error_limited;
pub(crate) use warn_limited;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_lines_are_counted() {
        let l = LogLimiter::new();
        for _ in 0..PER_MINUTE {
            assert_eq!(l.allow(), Some(0));
        }
        for _ in 0..5 {
            assert_eq!(l.allow(), None);
        }
        assert_eq!(l.suppressed.load(Ordering::Relaxed), 5);
    }
}
