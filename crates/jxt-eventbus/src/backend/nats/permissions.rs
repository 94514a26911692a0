//! Publishes the server's permissions refused.
//!
//! A NATS server that refuses a publish for the user's permissions does not
//! answer the publish: it sends `-ERR 'Permissions Violation for Publish to
//! "<subject>"'` on the connection, which the client reports as an event.
//! Without this a JetStream publish to a forbidden subject waits for a
//! PubAck that never comes and fails with a timeout that does not say why.
//! The connection's event callback forwards each refusal here
//! ([`PublishDenials::observe`]); a publish watches for a refusal of its
//! subject ([`DenialWatch`]) while it waits for its PubAck, and fails at
//! once with the server's words.

use tokio::sync::broadcast;

/// Refusals a subscriber may fall behind by before it misses some (it then
/// keeps waiting for its PubAck, as before).
const CAPACITY: usize = 256;

/// Publish refusals of one connection, as they arrive.
#[derive(Debug)]
pub(crate) struct PublishDenials {
    tx: broadcast::Sender<Denial>,
}

/// One refusal: the subject and the server's text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Denial {
    pub(crate) subject: String,
    pub(crate) text: String,
}

impl Default for PublishDenials {
    fn default() -> Self {
        PublishDenials {
            tx: broadcast::channel(CAPACITY).0,
        }
    }
}

impl PublishDenials {
    /// Takes a server error of the connection; a publish refusal is passed
    /// on to the publishes waiting.
    pub(crate) fn observe(&self, server_error: &str) {
        if let Some(denial) = parse(server_error) {
            // No receiver: no publish is waiting.
            let _ = self.tx.send(denial);
        }
    }

    /// Watches for refusals of `subject` from now on.
    pub(crate) fn watch(&self, subject: &str) -> DenialWatch {
        DenialWatch {
            rx: self.tx.subscribe(),
            subject: subject.to_string(),
            seen: None,
        }
    }
}

/// Refusals of one subject, for the publishes to it that are waiting.
#[derive(Debug)]
pub(crate) struct DenialWatch {
    rx: broadcast::Receiver<Denial>,
    subject: String,
    seen: Option<String>,
}

impl DenialWatch {
    /// The server's text, once a publish to the subject was refused (the
    /// same for every later publish of a batch).
    pub(crate) fn seen(&self) -> Option<&str> {
        self.seen.as_deref()
    }

    /// Resolves with the server's text when a publish to the subject is
    /// refused; never while none is.
    ///
    /// # Cancel safety
    /// Cancel safe: a refusal received is kept in [`DenialWatch::seen`].
    pub(crate) async fn refused(&mut self) -> String {
        if let Some(text) = &self.seen {
            return text.clone();
        }
        loop {
            match self.rx.recv().await {
                Ok(d) if d.subject == self.subject => {
                    self.seen = Some(d.text.clone());
                    return d.text;
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
            }
        }
    }
}

/// `Permissions Violation for Publish to "orders"` → the subject and text.
fn parse(server_error: &str) -> Option<Denial> {
    const MARK: &str = "permissions violation for publish to ";
    let phrase = server_error.to_ascii_lowercase().find(MARK)?;
    let rest = server_error[phrase + MARK.len()..].trim_start();
    let subject = match rest.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next()?,
        None => rest.split_whitespace().next()?,
    };
    let subject = subject.trim_matches(['\'', '"']);
    (!subject.is_empty()).then(|| Denial {
        subject: subject.to_string(),
        text: server_error[phrase..]
            .trim()
            .trim_end_matches('\'')
            .to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publish_refusal_names_its_subject() {
        let d = parse("Permissions Violation for Publish to \"denied.orders\"").unwrap();
        assert_eq!(d.subject, "denied.orders");
        assert_eq!(
            d.text,
            "Permissions Violation for Publish to \"denied.orders\""
        );
        let d = parse("nats: 'Permissions Violation for Publish to denied.x'").unwrap();
        assert_eq!(d.subject, "denied.x");
        assert_eq!(d.text, "Permissions Violation for Publish to denied.x");
    }

    #[test]
    fn other_server_errors_are_not_publish_refusals() {
        assert_eq!(
            parse("Permissions Violation for Subscription to \"a\""),
            None
        );
        assert_eq!(parse("Maximum Payload Violation"), None);
        assert_eq!(parse("Permissions Violation for Publish to \"\""), None);
    }

    #[tokio::test]
    async fn a_watch_sees_only_its_subject_and_keeps_what_it_saw() {
        let denials = PublishDenials::default();
        let mut watch = denials.watch("b");
        denials.observe("Permissions Violation for Publish to \"a\"");
        denials.observe("Permissions Violation for Publish to \"b\"");
        let text = watch.refused().await;
        assert!(text.contains("\"b\""), "{text}");
        assert_eq!(watch.seen(), Some(text.as_str()));
        assert_eq!(watch.refused().await, text);
    }

    #[tokio::test(start_paused = true)]
    async fn a_watch_started_after_a_refusal_does_not_see_it() {
        let denials = PublishDenials::default();
        denials.observe("Permissions Violation for Publish to \"a\"");
        let mut watch = denials.watch("a");
        let waited = tokio::time::timeout(std::time::Duration::from_secs(5), watch.refused()).await;
        assert!(
            waited.is_err(),
            "only refusals after the watch started count"
        );
    }
}
