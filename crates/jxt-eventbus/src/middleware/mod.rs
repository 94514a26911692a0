//! Layers that wrap a [`Handler`](crate::Handler) and return a handler.
//!
//! Order around each attempt, outermost first: rate limit → (the worker's)
//! retry and dead-letter → handler. The rate limit applies to every attempt,
//! retries included, because every attempt reaches the handler's
//! dependencies.

mod rate_limit;

pub use rate_limit::{RateLimit, RateLimited};
