//! The durable pull consumer of a group on a topic's stream: found, brought
//! to the configured settings, or created.
//!
//! Its name comes from the group and the topic, so every bus of the group
//! binds to the same consumer; each group has its own consumer and so gets
//! every record. It is never deleted by the bus: it holds the group's
//! position while no bus runs.
//!
//! With `sharing: pinned` the consumer has one priority group
//! ([`PRIORITY_GROUP`]) with the pinned-client policy: the server delivers
//! only to the bus holding the pin. With `sharing: shared` it has none and
//! the server spreads records among every bus that pulls. The mode is the
//! group's, not the bus's: a bus switches an existing consumer to its own
//! mode only while no other bus pulls from it (a consumer made by an older
//! version, or by the group configured the other way), and refuses
//! otherwise, since the other buses' pull requests would be rejected.

use std::time::Duration;

use async_nats::jetstream::consumer::pull;
use async_nats::jetstream::consumer::{
    AckPolicy, DeliverPolicy, PriorityPolicy, PullConsumer, ReplayPolicy,
};
use async_nats::jetstream::stream::ConsumerErrorKind;
use async_nats::jetstream::Context;
use async_nats::jetstream::ErrorCode;

use super::{backend_error, backend_refusal};
use crate::error::Result;

/// The one priority group of a pinned consumer; pull requests name it.
pub(crate) const PRIORITY_GROUP: &str = "bus";

/// What the group's consumer on one topic must look like.
#[derive(Clone, Debug)]
pub(crate) struct DurableSpec {
    /// Stream holding the topic.
    pub(crate) stream: String,
    /// Consumer name (from the group and the topic).
    pub(crate) name: String,
    /// The topic (its subject).
    pub(crate) topic: String,
    /// The bus group.
    pub(crate) group: String,
    pub(crate) ack_wait: Duration,
    pub(crate) max_ack_pending: i64,
    /// Where a new consumer starts (`start_from`).
    pub(crate) start: DeliverPolicy,
    /// Pin lifetime with `sharing: pinned`; `None` shares record by record.
    pub(crate) pinned_ttl: Option<Duration>,
}

impl DurableSpec {
    fn config(&self, deliver_policy: DeliverPolicy) -> pull::Config {
        pull::Config {
            durable_name: Some(self.name.clone()),
            name: Some(self.name.clone()),
            description: Some(format!(
                "jxt-eventbus group {} on topic {}",
                self.group, self.topic
            )),
            deliver_policy,
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            max_deliver: -1,
            filter_subject: self.topic.clone(),
            replay_policy: ReplayPolicy::Instant,
            max_ack_pending: self.max_ack_pending,
            priority_policy: match self.pinned_ttl {
                Some(_) => PriorityPolicy::PinnedClient,
                None => PriorityPolicy::None,
            },
            priority_groups: match self.pinned_ttl {
                Some(_) => vec![PRIORITY_GROUP.to_string()],
                None => Vec::new(),
            },
            priority_timeout: self.pinned_ttl.unwrap_or_default(),
            ..Default::default()
        }
    }
}

/// How a consumer shares its records, for messages.
fn sharing(policy: &PriorityPolicy, groups: &[String]) -> &'static str {
    match policy {
        PriorityPolicy::PinnedClient => "pinned",
        PriorityPolicy::None if groups.is_empty() => "shared",
        _ => "by another priority policy",
    }
}

/// The consumer of `spec`, created when missing. `resume_after` is the last
/// stream sequence the group is known to have acknowledged everything up to:
/// a consumer that vanished (deleted by an operator, memory storage lost) is
/// recreated from the record after it rather than from `start`, so that its
/// group neither skips records nor replays the whole stream.
///
/// # Errors
/// [`Error::Backend`](crate::Error::Backend): the broker cannot be asked (retryable), or the
/// existing consumer cannot serve the bus (a push consumer, another ack
/// policy).
pub(crate) async fn ensure(
    js: &Context,
    spec: &DurableSpec,
    resume_after: u64,
) -> Result<PullConsumer> {
    match js
        .get_consumer_from_stream::<pull::Config, _, _>(&spec.name, &spec.stream)
        .await
    {
        Ok(existing) => {
            let info = existing.cached_info();
            let have = &info.config;
            let want = spec.config(have.deliver_policy);
            if have.priority_policy != want.priority_policy
                || have.priority_groups != want.priority_groups
            {
                let pinned = info
                    .priority_groups
                    .iter()
                    .any(|g| g.pinned_client_id.is_some());
                if info.num_waiting > 0 || pinned {
                    return Err(backend_refusal(format!(
                        "consumer `{}` on stream `{}` shares topic `{}` {} among the buses of \
                         group `{}`, and some of them are pulling; this bus is configured with \
                         nats.consumer.sharing: {}. Every bus of a group must use the same \
                         sharing: set it on this bus to match, or stop the group's other buses \
                         first and this bus switches the group over",
                        spec.name,
                        spec.stream,
                        spec.topic,
                        sharing(&have.priority_policy, &have.priority_groups),
                        spec.group,
                        sharing(&want.priority_policy, &want.priority_groups),
                    )));
                }
                tracing::info!(
                    stream = %spec.stream, consumer = %spec.name,
                    from = sharing(&have.priority_policy, &have.priority_groups), to = sharing(&want.priority_policy, &want.priority_groups),
                    "no bus of the group is pulling: switching how the group shares the topic"
                );
                return create(js, spec, want).await;
            }
            let stale = have.ack_policy != want.ack_policy
                || have.ack_wait != want.ack_wait
                || have.max_ack_pending != want.max_ack_pending
                || have.max_deliver > 0
                || have.filter_subject != want.filter_subject
                || !have.filter_subjects.is_empty()
                || have.max_batch != 0
                || have.max_expires != Duration::ZERO
                || have.max_bytes != 0
                || (want.priority_timeout > Duration::ZERO
                    && have.priority_timeout != want.priority_timeout);
            if !stale {
                return Ok(existing);
            }
            tracing::info!(
                stream = %spec.stream, consumer = %spec.name,
                "updating the durable consumer to the configured ack_wait, max_ack_pending, pinned_ttl and limits"
            );
            create(js, spec, want).await
        }
        Err(e) => match e.kind() {
            ConsumerErrorKind::JetStream(j) if j.error_code() == ErrorCode::CONSUMER_NOT_FOUND => {
                let policy = if resume_after > 0 {
                    DeliverPolicy::ByStartSequence {
                        start_sequence: resume_after + 1,
                    }
                } else {
                    spec.start
                };
                create(js, spec, spec.config(policy)).await
            }
            ConsumerErrorKind::InvalidConsumerType => Err(backend_error(
                format!(
                    "consumer `{}` on stream `{}` is a push consumer; the bus needs a pull \
                     consumer of that name for group `{}`: delete it or use another group",
                    spec.name, spec.stream, spec.group
                ),
                false,
                e,
            )),
            _ => Err(backend_error(
                format!(
                    "cannot read consumer `{}` on stream `{}`: {e}",
                    spec.name, spec.stream
                ),
                true,
                e,
            )),
        },
    }
}

async fn create(js: &Context, spec: &DurableSpec, config: pull::Config) -> Result<PullConsumer> {
    let pinned = config.priority_policy == PriorityPolicy::PinnedClient;
    let consumer = js
        .create_consumer_on_stream(config, &spec.stream)
        .await
        .map_err(|e| {
            let retryable = !matches!(e.kind(), ConsumerErrorKind::JetStream(_));
            backend_error(
                format!(
                    "cannot create or update consumer `{}` of group `{}` on stream `{}`: {e}",
                    spec.name, spec.group, spec.stream
                ),
                retryable,
                e,
            )
        })?;
    // A server older than 2.11 ignores priority groups: the group would
    // share records one by one while configured not to.
    if pinned && consumer.cached_info().config.priority_policy != PriorityPolicy::PinnedClient {
        return Err(backend_refusal(format!(
            "the server did not keep the priority group of consumer `{}` on stream `{}`: \
             nats.consumer.sharing: pinned needs nats-server 2.11 or later; upgrade the server \
             or set nats.consumer.sharing: shared",
            spec.name, spec.stream
        )));
    }
    Ok(consumer)
}
