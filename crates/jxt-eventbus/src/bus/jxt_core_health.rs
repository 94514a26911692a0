//! Running jxt-core's health-check heartbeats on a bus (the heartbeat
//! format and what it is for: [`crate::health::jxt_core`]): configured
//! (`health.jxt_core`, started with the bus) or started by hand
//! ([`EventBus::start_jxt_core_health`]).
//!
//! The publishing task holds the bus weakly, as the health probe does: it
//! ends when the bus is shut down or dropped.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{EventBus, SubscribeOptions, WeakBus};
use crate::delivery::Delivery;
use crate::error::{Error, Result};
use crate::health::jxt_core::{JxtCoreHealth, JxtCoreHealthOptions, JxtCoreHeartbeat, Peers};
use crate::message::Message;

impl EventBus {
    /// Publishes jxt-core heartbeats (one now, then every interval) and
    /// reads the topic's heartbeats from every instance, Go or Rust (see
    /// [`crate::health::jxt_core`]). A record on the topic that is not a
    /// heartbeat is skipped, never dead-lettered. For a bus that does this
    /// from the start, set `health.jxt_core` instead and read
    /// [`EventBus::jxt_core_peers`].
    ///
    /// # Errors
    /// As [`EventBus::subscribe`] for the topic; [`Error::InvalidMessage`]
    /// for a zero interval.
    ///
    /// # Cancel safety
    /// As [`EventBus::subscribe`].
    pub async fn start_jxt_core_health(
        &self,
        options: JxtCoreHealthOptions,
    ) -> Result<JxtCoreHealth> {
        if options.interval.is_zero() {
            return Err(Error::InvalidMessage(
                "jxt-core health interval must be greater than 0".into(),
            ));
        }
        let instance_id = self.jxt_core_instance_id();
        let peers = Peers::default();
        if options.subscribe {
            self.subscribe_heartbeats(&options.topic, peers.clone())
                .await?;
        }
        let publisher = options.publish.then(|| {
            spawn_heartbeats(
                self.downgrade(),
                options.topic.clone(),
                options.interval,
                instance_id.clone(),
                None,
            )
        });
        Ok(JxtCoreHealth::new(instance_id, peers, publisher))
    }

    /// The last jxt-core heartbeat of every instance (Go or Rust, this bus
    /// included) read from `health.jxt_core.topic`; empty unless
    /// `health.jxt_core.enabled`.
    pub fn jxt_core_peers(&self) -> Vec<JxtCoreHeartbeat> {
        self.inner
            .jxt_core_peers
            .as_ref()
            .map(JxtCoreHealth::snapshot)
            .unwrap_or_default()
    }

    /// Starts `health.jxt_core` when it is enabled (called by the builder).
    pub(crate) fn start_configured_jxt_core_health(&self) {
        let c = &self.inner.config.health.jxt_core;
        if let (true, Some(peers)) = (c.enabled, &self.inner.jxt_core_peers) {
            // The task owns itself: it ends with the bus.
            drop(spawn_heartbeats(
                self.downgrade(),
                c.topic.clone(),
                c.interval,
                self.jxt_core_instance_id(),
                Some(peers.clone()),
            ));
        }
    }

    /// jxt-core's `instanceId`: `<backend>-eventbus-<unix seconds>`.
    fn jxt_core_instance_id(&self) -> String {
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        format!("{}-eventbus-{started}", self.inner.backend.name())
    }

    async fn subscribe_heartbeats(&self, topic: &str, peers: Peers) -> Result<()> {
        self.subscribe(
            topic,
            move |d: Delivery| {
                match JxtCoreHeartbeat::from_slice(d.payload()) {
                    Ok(hb) => JxtCoreHealth::record(&peers, hb),
                    Err(e) => tracing::debug!(topic = d.topic(), "skipped: {e}"),
                }
                std::future::ready(Ok(()))
            },
            SubscribeOptions::new(),
        )
        .await
    }
}

/// Publishes a heartbeat now and then every `interval` until the bus is
/// gone or closed. With `subscribe_to`, it first subscribes the bus to the
/// topic for those peers, retrying at each tick until that succeeds.
fn spawn_heartbeats(
    bus: WeakBus,
    topic: String,
    interval: Duration,
    instance_id: String,
    mut subscribe_to: Option<Peers>,
) -> tokio::task::JoinHandle<()> {
    let mut every = tokio::time::interval(interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::spawn(async move {
        loop {
            every.tick().await;
            let Some(bus) = bus.upgrade() else { return };
            if bus.is_closed() {
                return;
            }
            if let Some(peers) = subscribe_to.take() {
                if let Err(e) = bus.subscribe_heartbeats(&topic, peers.clone()).await {
                    tracing::warn!(topic, "jxt-core heartbeats not subscribed: {e}");
                    subscribe_to = Some(peers);
                }
            }
            let backend = bus.inner.backend.name();
            let hb = JxtCoreHeartbeat::new(backend, &instance_id, SystemTime::now());
            match bus.publish(&topic, Message::new(hb.to_bytes())).await {
                Ok(_) => {}
                Err(Error::Closed) => return,
                Err(e) => tracing::warn!(topic, "jxt-core heartbeat not published: {e}"),
            }
        }
    })
}
