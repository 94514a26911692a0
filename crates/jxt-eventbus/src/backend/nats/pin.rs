//! The pin of one topic under `sharing: pinned`.
//!
//! The server pins the first bus whose pull request finds records while no
//! bus is pinned, and from then on delivers only to pull requests that
//! carry the pin id (sent back as `Nats-Pin-Id` on every record). The others
//! wait with requests that carry no id and are served once the pin is gone:
//! released on purpose ([`release`]) or expired after `pinned_ttl` without a
//! pull request from the pinned bus.
//!
//! Hand-over order matters: a bus that lets a topic go first `NAK`s what it
//! held, in stream order, and only then releases the pin, so the next bus
//! receives those records (the server redelivers before anything new)
//! before any later record of their keys. Delivery is paused meanwhile
//! ([`pause`]): a server that tries to redeliver while no waiting request
//! may be served moves the record to the back of its redelivery queue,
//! which would reorder the hand-over.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::pull;
use async_nats::jetstream::Context;

use super::durable::PRIORITY_GROUP;

/// The pin id this bus holds for one topic, if any.
#[derive(Debug, Default)]
pub(crate) struct Pin {
    id: Mutex<Option<String>>,
    /// Pins this bus holds, over all its topics (see `balance`).
    held: Arc<AtomicUsize>,
}

impl Pin {
    /// A topic's pin, counted in `held` while this bus holds it.
    pub(crate) fn counted_in(held: Arc<AtomicUsize>) -> Self {
        Pin {
            id: Mutex::default(),
            held,
        }
    }

    /// The pin id to send with pull requests.
    pub(crate) fn id(&self) -> Option<String> {
        self.lock().clone()
    }

    /// Records arrived with `id`: this bus is pinned. True when it was not
    /// pinned with that id before.
    pub(crate) fn pinned(&self, id: &str) -> bool {
        let mut held = self.lock();
        if held.as_deref() == Some(id) {
            return false;
        }
        if held.replace(id.to_string()).is_none() {
            self.held.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// The server moved the pin to another bus (or forgot it).
    pub(crate) fn lost(&self) {
        if self.lock().take().is_some() {
            self.held.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.id.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Pin {
    /// A topic let go without releasing its pin (the release failed) is no
    /// longer this bus's to count.
    fn drop(&mut self) {
        self.lost();
    }
}

/// The longest a hand-over keeps the consumer paused should the bus die
/// before resuming it.
const HAND_OVER_PAUSE: Duration = Duration::from_secs(10);

/// Pauses delivery on `durable` for the hand-over (at most
/// [`HAND_OVER_PAUSE`], by this host's clock). True when paused; on failure
/// the hand-over goes on unpaused.
pub(crate) async fn pause(js: &Context, stream: &str, durable: &str, timeout: Duration) -> bool {
    let pause = async {
        let until =
            async_nats::datetime::add_std_duration(async_nats::datetime::now(), HAND_OVER_PAUSE)
                .map_err(|e| e.to_string())?;
        js.get_stream_no_info(stream)
            .await
            .map_err(|e| e.to_string())?
            .pause_consumer(durable, until)
            .await
            .map(|r| r.paused)
            .map_err(|e| e.to_string())
    };
    match tokio::time::timeout(timeout, pause).await {
        Ok(Ok(paused)) => paused,
        Ok(Err(e)) => {
            tracing::debug!(consumer = %durable, stream = %stream, error = %e, "cannot pause the consumer for the hand-over");
            false
        }
        Err(_) => false,
    }
}

/// Resumes delivery after [`pause`].
pub(crate) async fn resume(js: &Context, stream: &str, durable: &str, timeout: Duration) {
    let resume = async {
        js.get_stream_no_info(stream)
            .await
            .map_err(|e| e.to_string())?
            .resume_consumer(durable)
            .await
            .map_err(|e| e.to_string())
    };
    match tokio::time::timeout(timeout, resume).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(
            consumer = %durable, stream = %stream, error = %e,
            "cannot resume the consumer after the hand-over; it resumes by itself within {HAND_OVER_PAUSE:?}"
        ),
        Err(_) => tracing::warn!(
            consumer = %durable, stream = %stream,
            "resuming the consumer timed out; it resumes by itself within {HAND_OVER_PAUSE:?}"
        ),
    }
}

/// Releases the pin this bus held on `durable`, so a standby bus takes the
/// topic over now rather than after `pinned_ttl`. Call it after the
/// topic's pull loop stopped and its unfinished records were `NAK`ed.
///
/// Asks first whether the pin is still this bus's: releasing another bus's
/// pin would move the topic away from a bus that is handling it. That round
/// trip also gives the server time to queue the `NAK`s (acknowledgements and
/// API requests are processed apart) before the pin moves.
pub(crate) async fn release(
    js: &Context,
    stream: &str,
    durable: &str,
    pin: &Pin,
    timeout: Duration,
) {
    let Some(ours) = pin.id() else {
        return;
    };
    let release = async {
        let consumer = js
            .get_consumer_from_stream::<pull::Config, _, _>(durable, stream)
            .await
            .map_err(|e| e.to_string())?;
        let still_ours = consumer
            .cached_info()
            .priority_groups
            .iter()
            .any(|g| g.pinned_client_id.as_deref() == Some(ours.as_str()));
        if !still_ours {
            return Ok(false);
        }
        js.get_stream_no_info(stream)
            .await
            .map_err(|e| e.to_string())?
            .unpin_consumer(durable, PRIORITY_GROUP)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(true)
    };
    match tokio::time::timeout(timeout, release).await {
        Ok(Ok(true)) => {
            pin.lost();
            tracing::debug!(consumer = %durable, stream = %stream, "pin released");
        }
        Ok(Ok(false)) => pin.lost(),
        Ok(Err(e)) => tracing::warn!(
            consumer = %durable, stream = %stream, error = %e,
            "cannot release the pin; a standby bus takes over after nats.consumer.pinned_ttl"
        ),
        Err(_) => tracing::warn!(
            consumer = %durable, stream = %stream,
            "releasing the pin timed out; a standby bus takes over after nats.consumer.pinned_ttl"
        ),
    }
}
