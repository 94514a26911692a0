//! Overriding how handler errors are classified.

use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;

use crate::delivery::Delivery;
use crate::handler::{ErrorKind, Handler, HandlerError, HandlerResult};

/// Decides the kind of a handler error, e.g. to treat a driver's
/// "connection reset" as retryable whatever the handler said.
pub type Classifier = Arc<dyn Fn(&HandlerError) -> ErrorKind + Send + Sync>;

/// A handler whose errors are re-classified by a [`Classifier`]. Panics are
/// caught outside the handler and stay [`ErrorKind::Panic`].
pub struct Classified<H> {
    inner: Arc<H>,
    classify: Classifier,
}

impl<H> fmt::Debug for Classified<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Classified").finish_non_exhaustive()
    }
}

impl<H: Handler> Classified<H> {
    /// Wraps `inner`.
    pub fn new(inner: H, classify: Classifier) -> Self {
        Classified {
            inner: Arc::new(inner),
            classify,
        }
    }
}

impl<H: Handler> Handler for Classified<H> {
    fn handle(&self, delivery: Delivery) -> BoxFuture<'static, HandlerResult> {
        let attempt = self.inner.handle(delivery);
        let classify = self.classify.clone();
        Box::pin(async move {
            attempt.await.map_err(|e| {
                let kind = classify(&e);
                if kind == e.kind() {
                    e
                } else {
                    e.with_kind(kind)
                }
            })
        })
    }
}
