//! Consume-then-publish: what a handler returns to be published
//! ([`Outputs`]), and how the bus publishes it.
//!
//! The invariant: **a record is acknowledged only after every one of its
//! outputs was acknowledged by the broker.** The bus publishes a handler's
//! outputs after the handler returned and before it reports the record
//! done; a failed output publish fails the record like a handler error
//! (retried when the bus error is retryable, else dead-lettered), and a
//! failure after the shutdown began leaves the record for redelivery. So
//! every handled record has its outputs — at least once: a record handled
//! again (after a crash, a failed output, a retry) publishes them again, and
//! outputs of a retried record that were stored before the failure are
//! stored twice. Consumers of the outputs deduplicate by event id.

use crate::envelope::Envelope;
use crate::error::Result;
use crate::message::Message;
use crate::EventBus;

/// Records a handler asks the bus to publish before its input is
/// acknowledged, in the order added. Consecutive records to one topic are
/// published as one pipelined batch; records with the same key keep their
/// order.
#[derive(Debug, Default)]
#[must_use]
pub struct Outputs {
    records: Vec<(String, Output)>,
}

#[derive(Debug)]
enum Output {
    Message(Message),
    /// Encoded at publish time, with the bus's `envelope.tenant_id` setting.
    Envelope(Box<Envelope>),
}

impl Outputs {
    /// No outputs.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a message for `topic`.
    pub fn message(mut self, topic: impl Into<String>, message: Message) -> Self {
        self.push_message(topic, message);
        self
    }

    /// Adds a domain event for `topic` (its aggregate id is the key).
    pub fn envelope(mut self, topic: impl Into<String>, envelope: Envelope) -> Self {
        self.push_envelope(topic, envelope);
        self
    }

    /// Adds a message for `topic`, in place.
    pub fn push_message(&mut self, topic: impl Into<String>, message: Message) {
        self.records.push((topic.into(), Output::Message(message)));
    }

    /// Adds a domain event for `topic`, in place.
    pub fn push_envelope(&mut self, topic: impl Into<String>, envelope: Envelope) {
        self.records
            .push((topic.into(), Output::Envelope(Box::new(envelope))));
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether there is nothing to publish.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The topics, in order (for handler unit tests).
    pub fn topics(&self) -> impl Iterator<Item = &str> {
        self.records.iter().map(|(t, _)| t.as_str())
    }

    /// The records as messages, in order, envelopes encoded as the bus
    /// would with its default settings (for handler unit tests).
    ///
    /// # Errors
    /// [`Error::InvalidMessage`](crate::Error::InvalidMessage) for an
    /// envelope that does not validate.
    pub fn to_messages(&self) -> Result<Vec<(String, Message)>> {
        self.records
            .iter()
            .map(|(t, o)| Ok((t.clone(), o.to_message(Default::default())?)))
            .collect()
    }

    /// Publishes every record through `bus`, topic run by topic run, and
    /// resolves once all were stored.
    pub(crate) async fn publish(self, bus: &EventBus) -> Result<()> {
        let tenant = bus.config().envelope.tenant_id;
        let mut records = self.records.into_iter().peekable();
        while let Some((topic, first)) = records.next() {
            let mut run = vec![first.to_message(tenant)?];
            while let Some((_, next)) = records.next_if(|(t, _)| *t == topic) {
                run.push(next.to_message(tenant)?);
            }
            if run.len() == 1 {
                let message = run.pop().expect("one message");
                bus.publish(&topic, message).await?;
            } else {
                for result in bus.publish_batch(&topic, run).await? {
                    result?;
                }
            }
        }
        Ok(())
    }
}

impl Output {
    fn to_message(&self, tenant: crate::TenantIdEncoding) -> Result<Message> {
        match self {
            Output::Message(m) => Ok(m.clone()),
            Output::Envelope(e) => e.to_message_with(tenant),
        }
    }
}

/// What a typed handler may return on success: `()` (nothing to publish) or
/// [`Outputs`].
pub trait IntoOutputs: Send + 'static {
    /// The records to publish.
    fn into_outputs(self) -> Outputs;
}

impl IntoOutputs for () {
    fn into_outputs(self) -> Outputs {
        Outputs::new()
    }
}

impl IntoOutputs for Outputs {
    fn into_outputs(self) -> Outputs {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_keep_their_order_and_encode_envelopes() {
        let paid = Envelope::new("order-1", "PaymentRequested", 1, &1).unwrap();
        let out = Outputs::new()
            .message("audit", Message::new("a").with_key("order-1"))
            .envelope("payments", paid.clone());
        assert_eq!(out.topics().collect::<Vec<_>>(), ["audit", "payments"]);
        let messages = out.to_messages().unwrap();
        assert_eq!(messages[1].1.key.as_deref(), Some(&b"order-1"[..]));
        let back = Envelope::from_message(&messages[1].1).unwrap();
        assert_eq!(back.event_id, paid.event_id);
        let bad = Envelope::new("", "X", 1, &1).unwrap();
        assert!(Outputs::new().envelope("t", bad).to_messages().is_err());
    }
}
