//! librdkafka callbacks shared by every client: log lines and client errors
//! go to `tracing`, and the last client error is kept so that `build()` and
//! `health()` can say why a broker is unreachable, and the last connection
//! a broker refused for good (see `refusal`).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;

use super::refusal::Refusal;

/// The last error librdkafka reported for a client, with when, and whether
/// it said that no broker connection is up.
#[derive(Debug, Default, Clone)]
pub(super) struct LastError(Arc<ErrorState>);

#[derive(Debug, Default)]
pub(super) struct ErrorState {
    last: Mutex<Option<(Instant, String)>>,
    /// The last refused connection (credentials, certificates).
    refusal: Mutex<Option<(Instant, Refusal)>>,
    /// Since when librdkafka reports every broker down (`ALL_BROKERS_DOWN`),
    /// until a broker answered again.
    all_down: Mutex<Option<Instant>>,
    went_down: tokio::sync::Notify,
}

impl LastError {
    pub(super) fn set(&self, message: String) {
        *self.0.last.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), message));
    }

    /// The last error if it happened after `since`.
    pub(super) fn since(&self, since: Instant) -> Option<String> {
        self.0
            .last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|(at, _)| *at >= since)
            .map(|(_, m)| m.clone())
    }

    fn set_refusal(&self, refusal: Refusal) {
        *self.0.refusal.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), refusal));
    }

    /// The last refused connection if it happened after `since`.
    pub(super) fn refusal_since(&self, since: Instant) -> Option<Refusal> {
        self.0
            .refusal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|(at, _)| *at >= since)
            .map(|(_, r)| r.clone())
    }

    fn set_all_down(&self) {
        let mut down = self.0.all_down.lock().unwrap_or_else(|e| e.into_inner());
        if down.is_none() {
            *down = Some(Instant::now());
        }
        self.0.went_down.notify_waiters();
    }

    /// Since when every broker is down, as librdkafka last said.
    pub(super) fn all_down_since(&self) -> Option<Instant> {
        *self.0.all_down.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A broker answered.
    pub(super) fn clear_all_down(&self) {
        *self.0.all_down.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Resolves when librdkafka next says every broker is down.
    pub(super) async fn went_all_down(&self) {
        self.0.went_down.notified().await;
    }
}

/// The context of the producer and admin clients.
#[derive(Debug, Default, Clone)]
pub(super) struct BusClientContext {
    pub(super) last_error: LastError,
}

impl ClientContext for BusClientContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        forward_log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        forward_error(&self.last_error, &error, reason);
    }
}

pub(super) fn forward_log(level: RDKafkaLogLevel, fac: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => {
            crate::log_limit::error_limited!(target: "librdkafka", fac, "{message}")
        }
        RDKafkaLogLevel::Warning => {
            crate::log_limit::warn_limited!(target: "librdkafka", fac, "{message}")
        }
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", fac, "{message}")
        }
        RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", fac, "{message}"),
    }
}

pub(super) fn forward_error(last: &LastError, error: &KafkaError, reason: &str) {
    // Client errors are mostly transient (a broker connection dropped and is
    // re-established); librdkafka retries them itself. A dead broker repeats
    // them every reconnect: rate-limited.
    crate::log_limit::warn_limited!(target: "librdkafka", error = %error, "{reason}");
    last.set(reason.to_string());
    if let Some(refusal) = Refusal::classify(error.rdkafka_error_code(), reason) {
        last.set_refusal(refusal);
    }
    if error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::AllBrokersDown) {
        last.set_all_down();
    }
}
