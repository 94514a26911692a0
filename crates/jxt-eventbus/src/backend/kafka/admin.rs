//! Topics per `kafka.topic_strategy`: create, update, validate or leave
//! alone, once per topic per bus.
//!
//! A topic is ensured before the bus first publishes to it (dead-letter
//! topics included) or subscribes to it, and the topics listed in
//! `kafka.topics` at `build()`. Ensured topics are remembered, so the
//! publish path costs one read-locked set lookup afterwards.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, ConfigSource, NewPartitions, NewTopic,
    ResourceSpecifier, TopicReplication,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tokio::time::Instant;

use super::context::BusClientContext;
use crate::config::{KafkaConfig, TopicSettings, TopicStrategy};

/// Why a topic could not be ensured.
#[derive(Debug)]
pub(super) struct TopicError {
    pub(super) reason: String,
    /// The broker did not answer in time: the caller may report a timeout.
    pub(super) timed_out: bool,
    pub(super) source: Option<KafkaError>,
}

impl TopicError {
    fn new(reason: impl Into<String>) -> Self {
        TopicError {
            reason: reason.into(),
            timed_out: false,
            source: None,
        }
    }

    fn kafka(what: &str, e: KafkaError) -> Self {
        let timed_out = matches!(
            e.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::OperationTimedOut
                    | RDKafkaErrorCode::RequestTimedOut
                    | RDKafkaErrorCode::AllBrokersDown
                    | RDKafkaErrorCode::BrokerTransportFailure
            )
        );
        TopicError {
            reason: format!("{what}: {e}"),
            timed_out,
            source: Some(e),
        }
    }
}

/// What the broker says about a topic.
struct TopicState {
    partitions: usize,
    replication: usize,
    leaders_known: bool,
}

/// Applies the topic strategy.
pub(super) struct TopicAdmin {
    admin: Arc<AdminClient<BusClientContext>>,
    config: Arc<KafkaConfig>,
    ensured: RwLock<HashSet<String>>,
    /// One ensure at a time, so a burst of first publishes to a new topic
    /// asks the broker once.
    ensuring: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for TopicAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicAdmin")
            .field("strategy", &self.config.topic_strategy)
            .finish_non_exhaustive()
    }
}

impl TopicAdmin {
    pub(super) fn new(admin: Arc<AdminClient<BusClientContext>>, config: Arc<KafkaConfig>) -> Self {
        TopicAdmin {
            admin,
            config,
            ensured: RwLock::default(),
            ensuring: tokio::sync::Mutex::new(()),
        }
    }

    fn is_ensured(&self, topic: &str) -> bool {
        self.ensured
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(topic)
    }

    /// Ensures `topic` per the strategy, within `timeout`.
    pub(super) async fn ensure(&self, topic: &str, timeout: Duration) -> Result<(), TopicError> {
        if self.config.topic_strategy == TopicStrategy::Skip || self.is_ensured(topic) {
            return Ok(());
        }
        let deadline = Instant::now() + timeout;
        let _one = tokio::time::timeout_at(deadline, self.ensuring.lock())
            .await
            .map_err(|_| TopicError {
                reason: format!("waited {timeout:?} for another check of the topic"),
                timed_out: true,
                source: None,
            })?;
        if self.is_ensured(topic) {
            return Ok(());
        }
        self.apply(topic, deadline).await?;
        self.ensured
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(topic.to_string());
        Ok(())
    }

    async fn apply(&self, topic: &str, deadline: Instant) -> Result<(), TopicError> {
        let settings = self.config.topic_settings(topic);
        let strategy = self.config.topic_strategy;
        match (self.describe(topic, deadline).await?, strategy) {
            (_, TopicStrategy::Skip) => Ok(()),
            (None, TopicStrategy::ValidateOnly) => Err(TopicError::new(format!(
                "topic `{topic}` does not exist and kafka.topic_strategy is validate_only; \
                 create it, or use create_only"
            ))),
            (None, _) => self.create(topic, &settings, deadline).await,
            (Some(_), TopicStrategy::CreateOnly) => Ok(()),
            (Some(state), TopicStrategy::ValidateOnly) => {
                let diffs = self.differences(topic, &state, &settings, deadline).await?;
                if diffs.is_empty() {
                    Ok(())
                } else {
                    Err(TopicError::new(format!(
                        "topic `{topic}` differs from its settings (kafka.topic_strategy is \
                         validate_only): {}",
                        diffs.join("; ")
                    )))
                }
            }
            (Some(state), TopicStrategy::CreateOrUpdate) => {
                self.update(topic, &state, &settings, deadline).await
            }
        }
    }

    /// The topic's partitions and replication, `None` when it does not exist.
    async fn describe(
        &self,
        topic: &str,
        deadline: Instant,
    ) -> Result<Option<TopicState>, TopicError> {
        let admin = self.admin.clone();
        let name = topic.to_string();
        let timeout = remaining(deadline);
        let metadata = tokio::task::spawn_blocking(move || {
            admin.inner().fetch_metadata(Some(&name), timeout).map(|m| {
                m.topics().iter().find(|t| t.name() == name).map(|t| {
                    let missing = t.error().is_some() || t.partitions().is_empty();
                    (
                        missing,
                        TopicState {
                            partitions: t.partitions().len(),
                            replication: t.partitions().first().map_or(0, |p| p.replicas().len()),
                            leaders_known: t.partitions().iter().all(|p| p.leader() >= 0),
                        },
                    )
                })
            })
        })
        .await
        .map_err(|e| TopicError::new(format!("metadata task failed: {e}")))?
        .map_err(|e| TopicError::kafka(&format!("cannot read metadata of `{topic}`"), e))?;
        Ok(match metadata {
            Some((false, state)) => Some(state),
            _ => None,
        })
    }

    async fn create(
        &self,
        topic: &str,
        s: &TopicSettings,
        deadline: Instant,
    ) -> Result<(), TopicError> {
        let entries = s.config_entries();
        let replication = s.replication_factor.map_or(-1, i32::from);
        let partitions = s.partitions.map_or(-1, |p| p as i32);
        let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
        for (k, v) in &entries {
            new = new.set(k, v);
        }
        let opts = AdminOptions::new().operation_timeout(Some(remaining(deadline)));
        let results = self
            .admin
            .create_topics([&new], &opts)
            .await
            .map_err(|e| TopicError::kafka(&format!("cannot create topic `{topic}`"), e))?;
        for r in results {
            match r {
                Ok(_) => tracing::info!(
                    topic,
                    partitions = ?s.partitions,
                    replication_factor = ?s.replication_factor,
                    "created topic"
                ),
                // Another bus created it first.
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => {
                    return Err(TopicError::new(format!(
                        "cannot create topic `{topic}`: {code}"
                    )))
                }
            }
        }
        self.await_leaders(topic, deadline).await
    }

    /// Waits until the new topic's partitions have leaders, so that the first
    /// publish and the next rebalance see it.
    async fn await_leaders(&self, topic: &str, deadline: Instant) -> Result<(), TopicError> {
        loop {
            if let Some(state) = self.describe(topic, deadline).await? {
                if state.leaders_known {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(TopicError {
                    reason: format!("topic `{topic}` was created but has no leaders yet"),
                    timed_out: true,
                    source: None,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn differences(
        &self,
        topic: &str,
        state: &TopicState,
        s: &TopicSettings,
        deadline: Instant,
    ) -> Result<Vec<String>, TopicError> {
        let mut diffs = Vec::new();
        if let Some(p) = s.partitions {
            if p as usize != state.partitions {
                diffs.push(format!("{} partitions, {p} configured", state.partitions));
            }
        }
        if let Some(r) = s.replication_factor {
            if r as usize != state.replication {
                diffs.push(format!(
                    "replication factor {}, {r} configured",
                    state.replication
                ));
            }
        }
        let wanted = s.config_entries();
        if !wanted.is_empty() {
            let current = self.topic_config(topic, deadline).await?;
            for (k, v) in &wanted {
                let have = current.get(k).map(|(v, _)| v.as_str());
                if have != Some(v.as_str()) {
                    diffs.push(format!("{k}={}, {v} configured", have.unwrap_or("<unset>")));
                }
            }
        }
        Ok(diffs)
    }

    async fn update(
        &self,
        topic: &str,
        state: &TopicState,
        s: &TopicSettings,
        deadline: Instant,
    ) -> Result<(), TopicError> {
        let opts = AdminOptions::new().operation_timeout(Some(remaining(deadline)));
        if let Some(p) = s.partitions {
            let p = p as usize;
            if p > state.partitions {
                let add = NewPartitions::new(topic, p);
                let results = self
                    .admin
                    .create_partitions([&add], &opts)
                    .await
                    .map_err(|e| {
                        TopicError::kafka(&format!("cannot add partitions to `{topic}`"), e)
                    })?;
                for r in results {
                    if let Err((_, code)) = r {
                        return Err(TopicError::new(format!(
                            "cannot add partitions to `{topic}`: {code}"
                        )));
                    }
                }
                tracing::info!(topic, from = state.partitions, to = p, "added partitions");
            } else if p < state.partitions {
                tracing::warn!(
                    topic,
                    partitions = state.partitions,
                    configured = p,
                    "topic has more partitions than configured; Kafka cannot remove partitions"
                );
            }
        }
        if let Some(r) = s.replication_factor {
            if r as usize != state.replication {
                tracing::warn!(
                    topic,
                    replication = state.replication,
                    configured = r,
                    "replication factor differs; change it with a partition reassignment"
                );
            }
        }
        let wanted = s.config_entries();
        if wanted.is_empty() {
            return Ok(());
        }
        let current = self.topic_config(topic, deadline).await?;
        if wanted
            .iter()
            .all(|(k, v)| current.get(k).is_some_and(|(have, _)| have == v))
        {
            return Ok(());
        }
        // AlterConfigs replaces the topic's whole dynamic configuration: keep
        // every entry set on the topic, then apply ours.
        let mut next: BTreeMap<String, String> = current
            .into_iter()
            .filter(|(_, (_, dynamic))| *dynamic)
            .map(|(k, (v, _))| (k, v))
            .collect();
        next.extend(wanted);
        let mut alter = AlterConfig::new(ResourceSpecifier::Topic(topic));
        for (k, v) in &next {
            alter = alter.set(k, v);
        }
        let results = self
            .admin
            .alter_configs([&alter], &opts)
            .await
            .map_err(|e| TopicError::kafka(&format!("cannot update `{topic}`"), e))?;
        for r in results {
            if let Err((_, code)) = r {
                return Err(TopicError::new(format!("cannot update `{topic}`: {code}")));
            }
        }
        tracing::info!(topic, "updated topic configuration");
        Ok(())
    }

    /// The topic's configuration: name → (value, set on the topic).
    async fn topic_config(
        &self,
        topic: &str,
        deadline: Instant,
    ) -> Result<BTreeMap<String, (String, bool)>, TopicError> {
        let opts = AdminOptions::new().request_timeout(Some(remaining(deadline)));
        let results = self
            .admin
            .describe_configs([&ResourceSpecifier::Topic(topic)], &opts)
            .await
            .map_err(|e| TopicError::kafka(&format!("cannot describe `{topic}`"), e))?;
        let mut out = BTreeMap::new();
        for r in results {
            let resource =
                r.map_err(|code| TopicError::new(format!("cannot describe `{topic}`: {code}")))?;
            for e in resource.entries {
                if let Some(v) = e.value {
                    out.insert(e.name, (v, e.source == ConfigSource::DynamicTopic));
                }
            }
        }
        Ok(out)
    }
}

fn remaining(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}
