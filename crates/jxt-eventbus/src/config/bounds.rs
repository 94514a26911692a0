//! Upper and lower bounds of the bus's counts and timers.
//!
//! serde accepts any `usize` or duration, but the bus adds timers to
//! `Instant`s (which panics on overflow), sums and scales its counts (which
//! wrap), and sleeps for backoffs (a zero backoff is a busy loop). Every such
//! value is checked here against a range that keeps that arithmetic exact,
//! so a configuration that validates also runs.

use std::time::Duration;

use super::problems::Problems;
use super::BusConfig;
use crate::error::{Error, Result};

/// Largest count of records, lanes or batches: `u32::MAX`. Sums and small
/// multiples of such counts fit in a `usize` on 64-bit targets, and it is
/// the range of `nats.max_ack_pending`, which `dispatch.max_buffered` stands
/// in for when unset.
pub(crate) const MAX_COUNT: usize = u32::MAX as usize;

/// Longest timer (timeout, interval, backoff): 365 days. Deadlines are
/// computed as `now + timer`, and some timers are doubled or tripled.
pub(crate) const MAX_TIMER: Duration = Duration::from_secs(365 * 86_400);

/// Shortest retry backoff: below it a record that keeps failing (or a dead
/// letter that cannot be written) is retried in a busy loop.
pub(crate) const MIN_BACKOFF: Duration = Duration::from_millis(1);

/// Fails naming `field` unless `min <= value <= MAX_COUNT`.
pub(crate) fn count(field: &str, value: usize, min: usize) -> Result<()> {
    if value < min || value > MAX_COUNT {
        return Err(Error::config(
            field,
            format!("{value} is not allowed: use {min} to {MAX_COUNT}"),
        ));
    }
    Ok(())
}

/// Fails naming `field` unless `min <= value <= MAX_TIMER`.
pub(crate) fn timer(field: &str, value: Duration, min: Duration) -> Result<()> {
    if value < min {
        return Err(Error::config(
            field,
            format!("{value:?} is too short: use at least {min:?}"),
        ));
    }
    at_most_timer(field, value)
}

/// Fails naming `field` when `value` is longer than [`MAX_TIMER`].
pub(crate) fn at_most_timer(field: &str, value: Duration) -> Result<()> {
    if value > MAX_TIMER {
        return Err(Error::config(
            field,
            format!(
                "{value:?} is too long: use at most 365 days ({}s)",
                MAX_TIMER.as_secs()
            ),
        ));
    }
    Ok(())
}

/// The bus-wide checks (dispatch, retry, backlog, memory); each backend
/// section checks its own timers.
pub(super) fn check(c: &BusConfig) -> Result<()> {
    // Independent range checks: all run.
    let mut p = Problems::default();
    let d = &c.dispatch;
    p.check(count("dispatch.max_concurrency", d.max_concurrency, 1));
    p.check(count("dispatch.max_processors", d.max_processors, 1));
    p.check(count(
        "dispatch.max_buffered_per_partition",
        d.max_buffered_per_partition,
        1,
    ));
    p.check(count("dispatch.max_buffered", d.max_buffered, 1));
    p.check(count("dispatch.max_batch", d.max_batch, 1));
    p.check(at_most_timer("dispatch.revoke_timeout", d.revoke_timeout));
    p.check(at_most_timer(
        "dispatch.shutdown_timeout",
        d.shutdown_timeout,
    ));
    let r = &c.retry;
    p.check(timer("retry.max_backoff", r.max_backoff, MIN_BACKOFF));
    p.check(timer(
        "retry.initial_backoff",
        r.initial_backoff,
        MIN_BACKOFF,
    ));
    if let Some(max) = r.max_elapsed {
        p.check(at_most_timer("retry.max_elapsed", max));
    }
    let b = &c.backlog;
    p.check(at_most_timer("backlog.check_interval", b.check_interval));
    p.check(at_most_timer("backlog.max_age", b.max_age));
    p.check(at_most_timer(
        "backlog.max_publish_latency",
        b.max_publish_latency,
    ));
    p.check(count(
        "backlog.max_publish_in_flight",
        b.max_publish_in_flight,
        0,
    ));
    let m = &c.memory;
    p.check(count(
        "memory.max_retained_per_partition",
        m.max_retained_per_partition,
        1,
    ));
    p.check(at_most_timer("memory.publish_timeout", m.publish_timeout));
    p.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_allowed_values_keep_the_arithmetic_exact() {
        // The sums and multiples the bus makes of its bounds.
        assert!(MAX_COUNT.checked_mul(10).is_some());
        assert!(MAX_COUNT.checked_add(MAX_COUNT).is_some());
        assert!(i64::try_from(MAX_COUNT).is_ok());
        let far = std::time::Instant::now().checked_add(MAX_TIMER * 3);
        assert!(far.is_some());
        assert!(tokio::time::Instant::now()
            .checked_add(MAX_TIMER * 3)
            .is_some());
    }
}
