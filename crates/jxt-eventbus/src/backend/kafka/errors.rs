//! rdkafka errors as this crate's typed errors. The rdkafka error is kept
//! only as the `source`.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::error::Error;

/// An error of the Kafka backend that is not tied to a publish.
pub(super) fn backend(
    reason: impl Into<String>,
    retryable: bool,
    source: Option<KafkaError>,
) -> Error {
    Error::Backend {
        backend: "kafka",
        reason: reason.into(),
        retryable,
        source: source.map(|e| Box::new(e) as _),
    }
}

/// A failed delivery of a record to `topic`. `message_timeout` is the
/// configured bound, reported when the record timed out.
pub(super) fn publish(topic: &str, e: KafkaError, message_timeout: Duration) -> Error {
    let code = e.rdkafka_error_code();
    if matches!(code, Some(RDKafkaErrorCode::MessageTimedOut)) {
        return Error::Timeout {
            operation:
                "kafka publish (no broker acknowledgement within kafka.producer.message_timeout)",
            after: message_timeout,
        };
    }
    let (reason, retryable) = match code {
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize) => (
            "the record is larger than the broker or topic accepts (message.max.bytes / \
             max.message.bytes)"
                .to_string(),
            false,
        ),
        Some(
            RDKafkaErrorCode::UnknownTopic
            | RDKafkaErrorCode::UnknownTopicOrPartition
            | RDKafkaErrorCode::UnknownTopicId,
        ) => (
            "the topic does not exist (kafka.topic_strategy did not create it)".to_string(),
            false,
        ),
        Some(RDKafkaErrorCode::UnknownPartition) => {
            ("the partition does not exist".to_string(), false)
        }
        Some(RDKafkaErrorCode::InvalidTopic) => ("the topic name is invalid".to_string(), false),
        Some(RDKafkaErrorCode::TopicAuthorizationFailed) => (
            "not authorized to write to this topic: the principal needs the WRITE ACL on it"
                .to_string(),
            false,
        ),
        Some(RDKafkaErrorCode::ClusterAuthorizationFailed) => (
            "not authorized by the cluster's ACLs (an idempotent producer on brokers before \
             Kafka 3.0 needs IDEMPOTENT_WRITE on the cluster)"
                .to_string(),
            false,
        ),
        Some(
            RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::UnsupportedCompressionType
            | RDKafkaErrorCode::PolicyViolation,
        ) => (format!("the broker rejected the record: {e}"), false),
        Some(RDKafkaErrorCode::Fatal) => (
            format!("the producer hit a fatal error and must be rebuilt: {e}"),
            false,
        ),
        Some(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight) => (
            "the producer was closed before the record was acknowledged".to_string(),
            true,
        ),
        Some(RDKafkaErrorCode::QueueFull) => (
            "the producer's local queue stayed full (kafka.producer.buffer_max_messages)"
                .to_string(),
            true,
        ),
        _ => (format!("{e}"), true),
    };
    Error::Publish {
        topic: topic.to_string(),
        reason,
        retryable,
        source: Some(Box::new(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_timeout_errors() {
        let e = publish(
            "t",
            KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut),
            Duration::from_secs(3),
        );
        assert!(matches!(e, Error::Timeout { after, .. } if after == Duration::from_secs(3)));
        assert!(e.is_retryable());
    }

    #[test]
    fn too_large_is_not_retryable() {
        let e = publish(
            "t",
            KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
            Duration::from_secs(3),
        );
        assert!(!e.is_retryable());
        assert!(e.to_string().contains("larger"), "{e}");
    }
}
