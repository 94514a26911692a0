//! Reading Kafka records from outside a bus, for operator tools (the
//! `eventbus` command's `tail`): a consumed record as the bus's
//! [`Message`]. The client settings come from
//! [`consumer_properties`](super::consumer_properties).

use rdkafka::message::BorrowedMessage;

use super::mapping::{record, TopicNames};
use crate::message::Message;

/// A consumed record as the bus's handlers would see it: the bus's id
/// header taken out of the headers, the key and timestamp of the record.
pub fn message(m: &BorrowedMessage<'_>) -> Message {
    let r = record(m, &mut TopicNames::default());
    std::sync::Arc::unwrap_or_clone(r.message)
}
