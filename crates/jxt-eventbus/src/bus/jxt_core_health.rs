//! Starting jxt-core's health-check heartbeats on a bus (the heartbeat
//! format and what it is for: [`crate::health::jxt_core`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{EventBus, SubscribeOptions};
use crate::delivery::Delivery;
use crate::error::{Error, Result};
use crate::health::jxt_core::{JxtCoreHealth, JxtCoreHealthOptions, JxtCoreHeartbeat};
use crate::message::Message;

impl EventBus {
    /// Publishes jxt-core heartbeats (one now, then every interval) and
    /// reads the topic's heartbeats from every instance, Go or Rust (see
    /// the module docs). A record on the topic that is not a heartbeat is
    /// skipped, never dead-lettered.
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
        let backend = self.inner.backend.name();
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let instance_id = format!("{backend}-eventbus-{started}");
        let peers: Arc<Mutex<BTreeMap<String, JxtCoreHeartbeat>>> = Arc::default();
        if options.subscribe {
            let seen = peers.clone();
            self.subscribe(
                &options.topic,
                move |d: Delivery| {
                    match JxtCoreHeartbeat::from_slice(d.payload()) {
                        Ok(hb) => JxtCoreHealth::record(&seen, hb),
                        Err(e) => tracing::debug!(topic = d.topic(), "skipped: {e}"),
                    }
                    std::future::ready(Ok(()))
                },
                SubscribeOptions::new(),
            )
            .await?;
        }
        let publisher = options.publish.then(|| {
            let (bus, topic, id) = (self.clone(), options.topic.clone(), instance_id.clone());
            let mut every = tokio::time::interval(options.interval);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tokio::spawn(async move {
                loop {
                    every.tick().await;
                    let hb = JxtCoreHeartbeat::new(backend, &id, SystemTime::now());
                    if let Err(e) = bus.publish(&topic, Message::new(hb.to_bytes())).await {
                        if matches!(e, Error::Closed) {
                            return;
                        }
                        tracing::warn!(topic, "jxt-core heartbeat not published: {e}");
                    }
                }
            })
        });
        Ok(JxtCoreHealth::new(instance_id, peers, publisher))
    }
}
