//! The stream behind each topic, set up once per topic by the topic strategy.
//!
//! A topic is the subject of the same name. Its stream is, in order: the one
//! named in `nats.topics.<topic>.stream`; the stream that already captures
//! the subject (operators may provision streams such as `ORDERS` with
//! `orders.>`); or, when the strategy creates streams, a new stream named
//! after the topic (see [`naming`]) whose only subject is the
//! topic.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::context::{
    CreateStreamErrorKind, GetStreamByNameErrorKind, GetStreamErrorKind,
};
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use async_nats::jetstream::Context;
use async_nats::jetstream::ErrorCode;
use tokio::sync::OnceCell;

use super::{backend_error, backend_refusal, naming};
use crate::config::{NatsConfig, NatsRetention, NatsStorage, NatsStreamSettings, TopicStrategy};
use crate::error::Result;

/// Streams already set up, by topic.
#[derive(Debug)]
pub(crate) struct StreamRegistry {
    js: Context,
    config: Arc<NatsConfig>,
    dead_letter_suffix: String,
    known: Mutex<HashMap<String, Arc<OnceCell<String>>>>,
}

impl StreamRegistry {
    pub(crate) fn new(js: Context, config: Arc<NatsConfig>, dead_letter_suffix: String) -> Self {
        StreamRegistry {
            js,
            config,
            dead_letter_suffix,
            known: Mutex::default(),
        }
    }

    pub(crate) fn strategy(&self) -> TopicStrategy {
        self.config.topic_strategy
    }

    /// The name of the stream holding `topic`, after applying the topic
    /// strategy the first time. Concurrent first calls for one topic share
    /// one setup; a failed setup is tried again by the next call.
    ///
    /// # Errors
    /// [`Error::Backend`](crate::Error::Backend) naming the topic, the stream and what is wrong.
    pub(crate) async fn ensure(&self, topic: &str) -> Result<String> {
        let cell = {
            let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
            known.entry(topic.to_string()).or_default().clone()
        };
        cell.get_or_try_init(|| self.set_up(topic)).await.cloned()
    }

    /// Forgets what is known about `topic` (its stream was not found where
    /// expected), so the next [`StreamRegistry::ensure`] looks again.
    pub(crate) fn forget(&self, topic: &str) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        known.remove(topic);
    }

    async fn set_up(&self, topic: &str) -> Result<String> {
        let (named, settings) = self.config.topic_settings(topic, &self.dead_letter_suffix);
        let existing = match &named {
            Some(name) => self.info(name).await?,
            None => match self.stream_by_subject(topic).await? {
                Some(name) => self.info(&name).await?,
                None => None,
            },
        };
        let name = named
            .or_else(|| existing.as_ref().map(|c| c.name.clone()))
            .unwrap_or_else(|| naming::stream_name(topic));
        let desired = desired_config(&name, topic, &settings);
        let strategy = self.config.topic_strategy;
        let Some(actual) = existing else {
            if !matches!(
                strategy,
                TopicStrategy::CreateOnly | TopicStrategy::CreateOrUpdate
            ) {
                return Err(backend_refusal(format!(
                    "no JetStream stream holds topic `{topic}` (subject `{topic}`{}) and \
                         nats.topic_strategy is `{}`: create the stream, or use `create_only`",
                    if name == naming::stream_name(topic) {
                        String::new()
                    } else {
                        format!(", stream `{name}`")
                    },
                    strategy_name(strategy)
                )));
            }
            return self.create(topic, desired).await;
        };
        if !captures(&actual.subjects, topic) {
            return Err(backend_refusal(format!(
                "stream `{}` (nats.topics.{topic}.stream) does not capture subject `{topic}`; \
                     its subjects are {:?}",
                actual.name, actual.subjects
            )));
        }
        let diffs = differences(&desired, &actual);
        match strategy {
            TopicStrategy::Skip => {}
            _ if diffs.is_empty() => {}
            TopicStrategy::CreateOnly => tracing::info!(
                topic, stream = %actual.name, differences = %diffs.join("; "),
                "stream settings differ from the configuration; left as they are (create_only)"
            ),
            TopicStrategy::ValidateOnly => {
                return Err(backend_refusal(format!(
                    "stream `{}` of topic `{topic}` does not match the configuration \
                         (nats.topic_strategy validate_only): {}",
                    actual.name,
                    diffs.join("; ")
                )))
            }
            TopicStrategy::CreateOrUpdate => self.update(topic, &desired, actual, &diffs).await?,
        }
        Ok(name)
    }

    async fn create(&self, topic: &str, desired: stream::Config) -> Result<String> {
        let name = desired.name.clone();
        match self.js.create_stream(desired).await {
            Ok(_) => {
                tracing::info!(topic, stream = %name, "created JetStream stream");
                Ok(name)
            }
            Err(e) if matches!(e.kind(), CreateStreamErrorKind::JetStream(ref j) if j.error_code() == ErrorCode::STREAM_NAME_EXIST) =>
            {
                // Created concurrently by another bus, or an unrelated stream
                // with that name: only the former captures the subject.
                match self.info(&name).await? {
                    Some(c) if captures(&c.subjects, topic) => Ok(name),
                    _ => Err(backend_error(
                        format!(
                            "a stream named `{name}` exists but does not capture subject \
                             `{topic}`: name the stream for topic `{topic}` in \
                             nats.topics.{topic}.stream"
                        ),
                        false,
                        e,
                    )),
                }
            }
            Err(e) => Err(backend_error(
                format!("cannot create stream `{name}` for topic `{topic}`: {e}"),
                is_transient(&e.kind()),
                e,
            )),
        }
    }

    async fn update(
        &self,
        topic: &str,
        desired: &stream::Config,
        actual: stream::Config,
        diffs: &[String],
    ) -> Result<()> {
        if desired.storage != actual.storage {
            return Err(backend_refusal(format!(
                "stream `{}` of topic `{topic}` uses {:?} storage and the configuration asks \
                     for {:?}: JetStream cannot change a stream's storage; move the data to a new \
                     stream or change the configuration",
                actual.name, actual.storage, desired.storage
            )));
        }
        let mut updated = actual.clone();
        updated.retention = desired.retention;
        updated.num_replicas = desired.num_replicas;
        updated.max_age = desired.max_age;
        updated.max_bytes = desired.max_bytes;
        updated.max_messages = desired.max_messages;
        if !desired.duplicate_window.is_zero() {
            updated.duplicate_window = desired.duplicate_window;
        }
        self.js.update_stream(updated).await.map_err(|e| {
            backend_error(
                format!(
                    "cannot update stream `{}` of topic `{topic}` ({}): {e}",
                    actual.name,
                    diffs.join("; ")
                ),
                is_transient(&e.kind()),
                e,
            )
        })?;
        tracing::info!(topic, stream = %actual.name, changes = %diffs.join("; "), "updated JetStream stream");
        Ok(())
    }

    async fn info(&self, name: &str) -> Result<Option<stream::Config>> {
        match self.js.get_stream(name).await {
            Ok(s) => Ok(Some(s.cached_info().config.clone())),
            Err(e) => match e.kind() {
                GetStreamErrorKind::JetStream(j)
                    if j.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                {
                    Ok(None)
                }
                _ => Err(backend_error(
                    format!("cannot read stream `{name}`: {e}"),
                    true,
                    e,
                )),
            },
        }
    }

    async fn stream_by_subject(&self, topic: &str) -> Result<Option<String>> {
        match self.js.stream_by_subject(topic).await {
            Ok(name) => Ok(Some(name)),
            Err(e) if e.kind() == GetStreamByNameErrorKind::NotFound => Ok(None),
            Err(e) => Err(backend_error(
                format!("cannot look up the stream of subject `{topic}`: {e}"),
                true,
                e,
            )),
        }
    }
}

fn strategy_name(s: TopicStrategy) -> &'static str {
    match s {
        TopicStrategy::CreateOnly => "create_only",
        TopicStrategy::CreateOrUpdate => "create_or_update",
        TopicStrategy::ValidateOnly => "validate_only",
        TopicStrategy::Skip => "skip",
    }
}

fn is_transient(kind: &CreateStreamErrorKind) -> bool {
    matches!(
        kind,
        CreateStreamErrorKind::TimedOut
            | CreateStreamErrorKind::JetStreamUnavailable
            | CreateStreamErrorKind::Response
    )
}

/// The stream the configuration asks for.
pub(crate) fn desired_config(name: &str, topic: &str, s: &NatsStreamSettings) -> stream::Config {
    let limit = |v: Option<u64>| v.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX));
    stream::Config {
        name: name.to_string(),
        subjects: vec![topic.to_string()],
        description: Some(format!("jxt-eventbus topic {topic}")),
        storage: match s.storage {
            NatsStorage::File => StorageType::File,
            NatsStorage::Memory => StorageType::Memory,
        },
        retention: match s.retention {
            NatsRetention::Limits => RetentionPolicy::Limits,
            NatsRetention::Interest => RetentionPolicy::Interest,
            NatsRetention::WorkQueue => RetentionPolicy::WorkQueue,
        },
        num_replicas: s.replicas,
        max_age: s.max_age.unwrap_or(Duration::ZERO),
        max_bytes: limit(s.max_bytes),
        max_messages: limit(s.max_messages),
        max_messages_per_subject: -1,
        max_consumers: -1,
        duplicate_window: s.duplicate_window.unwrap_or(Duration::ZERO),
        ..Default::default()
    }
}

/// What differs between the configured and the actual stream, in words.
/// Limits left unset in the configuration (`-1`, zero) are not compared, nor
/// is the server-chosen duplicate window.
pub(crate) fn differences(desired: &stream::Config, actual: &stream::Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |what: &str, want: String, have: String| {
        if want != have {
            out.push(format!("{what} is {have}, configured {want}"));
        }
    };
    check(
        "storage",
        format!("{:?}", desired.storage),
        format!("{:?}", actual.storage),
    );
    check(
        "retention",
        format!("{:?}", desired.retention),
        format!("{:?}", actual.retention),
    );
    check(
        "replicas",
        desired.num_replicas.max(1).to_string(),
        actual.num_replicas.max(1).to_string(),
    );
    if !desired.max_age.is_zero() {
        check(
            "max_age",
            format!("{:?}", desired.max_age),
            format!("{:?}", actual.max_age),
        );
    }
    if desired.max_bytes > 0 {
        check(
            "max_bytes",
            desired.max_bytes.to_string(),
            actual.max_bytes.to_string(),
        );
    }
    if desired.max_messages > 0 {
        check(
            "max_messages",
            desired.max_messages.to_string(),
            actual.max_messages.to_string(),
        );
    }
    if !desired.duplicate_window.is_zero() {
        check(
            "duplicate_window",
            format!("{:?}", desired.duplicate_window),
            format!("{:?}", actual.duplicate_window),
        );
    }
    out
}

/// Whether a stream with `subjects` stores messages published to `topic`.
fn captures(subjects: &[String], topic: &str) -> bool {
    subjects
        .iter()
        .any(|pattern| subject_matches(pattern, topic))
}

/// NATS subject matching: `*` matches one token, a final `>` one or more.
fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_match_like_nats() {
        assert!(subject_matches("orders", "orders"));
        assert!(subject_matches("orders.>", "orders.created"));
        assert!(subject_matches("orders.>", "orders.created.dlq"));
        assert!(!subject_matches("orders.>", "orders"));
        assert!(subject_matches("orders.*", "orders.created"));
        assert!(!subject_matches("orders.*", "orders.created.dlq"));
        assert!(subject_matches(">", "x"));
        assert!(!subject_matches("orders", "orders.dlq"));
    }

    #[test]
    fn unset_limits_are_not_compared() {
        let settings = NatsStreamSettings::default();
        let desired = desired_config("s", "t", &settings);
        assert_eq!(desired.max_bytes, -1);
        let mut actual = desired.clone();
        actual.max_age = Duration::from_secs(3600);
        actual.max_bytes = 1 << 30;
        actual.duplicate_window = Duration::from_secs(120);
        assert!(differences(&desired, &actual).is_empty());
        actual.storage = StorageType::Memory;
        actual.num_replicas = 3;
        let d = differences(&desired, &actual);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d[0].contains("storage"), "{d:?}");
    }

    #[test]
    fn configured_limits_are_compared() {
        let settings = NatsStreamSettings {
            max_age: Some(Duration::from_secs(60)),
            max_bytes: Some(1000),
            ..NatsStreamSettings::default()
        };
        let desired = desired_config("s", "t", &settings);
        let mut actual = desired.clone();
        assert!(differences(&desired, &actual).is_empty());
        actual.max_age = Duration::ZERO;
        actual.max_bytes = -1;
        assert_eq!(differences(&desired, &actual).len(), 2);
    }
}
