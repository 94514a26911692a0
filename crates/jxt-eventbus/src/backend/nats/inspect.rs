//! Reading a JetStream setup from outside a bus, for operator tools (the
//! `eventbus` command's `check`, `tail` and `lag`): a connection made as the
//! bus makes it, the stream that holds a topic (found, never created), the
//! durable consumer a group uses for a topic, and a delivered JetStream
//! message as the bus's [`Message`].
//!
//! Nothing here creates, changes or acknowledges anything.

use std::time::SystemTime;

use async_nats::jetstream::context::{GetStreamByNameErrorKind, GetStreamErrorKind};
use async_nats::jetstream::{self, ErrorCode};
use async_nats::Client;

use super::{backend_error, connect, context, naming};
use crate::config::BusConfig;
use crate::error::Result;
use crate::message::Message;

/// Connects as the bus would (servers, credentials, TLS, timeouts) and
/// returns the client with a JetStream context on the configured domain
/// whose requests time out after `nats.request_timeout`.
///
/// # Errors
/// As building a NATS bus: [`crate::Error::Config`] for unreadable
/// credentials, [`crate::Error::Backend`] when no server accepts the
/// connection within `nats.connect_timeout`.
///
/// # Cancel safety
/// Cancel safe: a dropped call leaves nothing behind.
pub async fn connect(config: &BusConfig) -> Result<(Client, jetstream::Context)> {
    let conn = connect::connect(config).await?;
    let js = context(
        &conn.client,
        config.nats.domain.as_deref(),
        config.nats.request_timeout,
    );
    Ok((conn.client, js))
}

/// The stream that holds `topic`, found as the bus finds it (the one named
/// in `nats.topics.<topic>.stream`, else the one capturing the subject),
/// or `None` when there is none yet. Never creates one.
///
/// # Errors
/// [`crate::Error::Backend`] when JetStream cannot be asked.
///
/// # Cancel safety
/// Cancel safe.
pub async fn find_stream(
    js: &jetstream::Context,
    config: &BusConfig,
    topic: &str,
) -> Result<Option<jetstream::stream::Stream>> {
    let (named, _) = config
        .nats
        .topic_settings(topic, &config.dead_letter.suffix);
    let name = match named {
        Some(name) => name,
        None => match js.stream_by_subject(topic).await {
            Ok(name) => name,
            Err(e) if e.kind() == GetStreamByNameErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(backend_error(
                    format!("cannot look up the stream of subject `{topic}`: {e}"),
                    true,
                    e,
                ))
            }
        },
    };
    match js.get_stream(&name).await {
        Ok(stream) => Ok(Some(stream)),
        Err(e) => match e.kind() {
            GetStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND => {
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

/// The name of the stream the bus would create for `topic` when none holds
/// it (and `nats.topics.<topic>.stream` names none).
pub fn default_stream_name(topic: &str) -> String {
    naming::stream_name(topic)
}

/// The durable consumer the buses of `group` share for `topic`.
pub fn durable_name(group: &str, topic: &str) -> String {
    naming::durable_name(group, topic)
}

/// A delivered JetStream message as the bus's handlers would see it: the
/// bus's id, key and timestamp headers taken out of the headers.
pub fn message(m: &jetstream::Message) -> Message {
    let (stream, seq, published) = match m.info() {
        Ok(i) => (
            i.stream.to_string(),
            i.stream_sequence,
            SystemTime::from(i.published),
        ),
        Err(_) => (String::new(), 0, SystemTime::now()),
    };
    super::convert::message(
        m.payload.clone(),
        m.headers.as_ref(),
        || format!("{stream}:{seq}"),
        published,
    )
}
