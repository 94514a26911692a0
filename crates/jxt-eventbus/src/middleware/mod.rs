//! Layers that wrap a [`Handler`](crate::Handler) and return a handler.
//!
//! The bus assembles them from [`SubscribeOptions`](crate::SubscribeOptions)
//! around each attempt, outermost first:
//!
//! 1. rate limit — the attempt waits for a token ([`RateLimited`]);
//! 2. timeout — the attempt fails as retryable past its deadline ([`Timeout`]);
//! 3. classification — the error's kind may be overridden ([`Classified`]);
//! 4. the handler.
//!
//! Around all of them the worker catches panics, retries retryable failures
//! with backoff inside the key's lane, and dead-letters the rest. Every
//! layer applies per attempt, retries included, because every attempt reaches
//! the handler's dependencies.

mod classify;
mod rate_limit;
mod timeout;

pub use classify::{Classified, Classifier};
pub use rate_limit::{RateLimit, RateLimited};
pub use timeout::Timeout;
