//! A deadline per handler attempt.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::delivery::Delivery;
use crate::handler::{ErrorKind, Handler, HandlerError, HandlerResult};

/// A handler whose attempts fail with [`ErrorKind::Timeout`] (retryable) when
/// they run longer than the deadline. The attempt's future is dropped at the
/// deadline, so the handler must tolerate cancellation at an `.await`.
pub struct Timeout<H> {
    inner: Arc<H>,
    after: Duration,
}

impl<H> fmt::Debug for Timeout<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timeout")
            .field("after", &self.after)
            .finish_non_exhaustive()
    }
}

impl<H: Handler> Timeout<H> {
    /// Wraps `inner` with a deadline of `after` per attempt.
    pub fn new(inner: H, after: Duration) -> Self {
        Timeout {
            inner: Arc::new(inner),
            after,
        }
    }
}

impl<H: Handler> Handler for Timeout<H> {
    fn handle(&self, delivery: Delivery) -> BoxFuture<'static, HandlerResult> {
        let attempt = self.inner.handle(delivery);
        let after = self.after;
        Box::pin(async move {
            match tokio::time::timeout(after, attempt).await {
                Ok(result) => result,
                Err(_) => Err(HandlerError::new(
                    ErrorKind::Timeout,
                    format!("handler attempt did not finish within {after:?}"),
                )),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;

    fn delivery() -> Delivery {
        Delivery {
            topic: "t".into(),
            partition: 0,
            offset: 0,
            attempt: 1,
            in_recovery: false,
            message: std::sync::Arc::new(Message::new("x")),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn slow_attempts_time_out_as_retryable() {
        let slow = Timeout::new(
            |_d: Delivery| async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                Ok(())
            },
            Duration::from_secs(1),
        );
        let err = slow.handle(delivery()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout);
        assert!(err.is_retryable());
        let fast = Timeout::new(|_d: Delivery| async { Ok(()) }, Duration::from_secs(1));
        assert!(fast.handle(delivery()).await.is_ok());
    }
}
