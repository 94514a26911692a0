//! Checks applied to every record before it reaches a backend.

use crate::error::{Error, Result};

/// Longest accepted aggregate id, in bytes after trimming (jxt-core's
/// limit; with the allowed characters, bytes and characters are the same).
pub const MAX_AGGREGATE_ID_LEN: usize = 256;

/// Longest accepted topic name (Kafka's limit).
pub const MAX_TOPIC_LEN: usize = 249;

/// Checks an aggregate id (a message key) by jxt-core's rule, so that both
/// accept and refuse the same ids: after trimming white space, 1..=256 bytes
/// of `[A-Za-z0-9:_\-./]`. The id itself is used untrimmed (as key and in
/// the envelope), as jxt-core does.
///
/// # Errors
/// [`Error::InvalidMessage`] with jxt-core's reason (see
/// [`aggregate_id_problem`]).
pub fn aggregate_id(id: &str) -> Result<()> {
    match aggregate_id_problem(id) {
        None => Ok(()),
        Some(problem) => Err(Error::InvalidMessage(format!(
            "invalid aggregate_id {id:?}: {problem}; allowed are 1 to {MAX_AGGREGATE_ID_LEN} of A-Z a-z 0-9 : _ - . /"
        ))),
    }
}

/// What is wrong with an aggregate id, in jxt-core's words
/// (`aggregate_id is required`, `aggregate_id too long (max 256
/// characters)`, `aggregate_id contains invalid character: <c>`); `None`
/// when it is valid.
pub fn aggregate_id_problem(id: &str) -> Option<String> {
    let id = id.trim();
    if id.is_empty() {
        return Some("aggregate_id is required".into());
    }
    if id.len() > MAX_AGGREGATE_ID_LEN {
        return Some(format!(
            "aggregate_id too long (max {MAX_AGGREGATE_ID_LEN} characters)"
        ));
    }
    id.chars()
        .find(|c| !is_id_char(*c))
        .map(|c| format!("aggregate_id contains invalid character: {c}"))
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '-' | '.' | '/')
}

/// Checks a topic name: 1..=249 characters of `[A-Za-z0-9._-]`, which is
/// valid both as a Kafka topic and as a NATS subject token.
///
/// # Errors
/// [`Error::InvalidMessage`] explaining what is allowed.
pub fn topic(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_TOPIC_LEN
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !name.starts_with('.')
        && !name.ends_with('.')
        && !name.contains("..");
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidMessage(format!(
            "topic {name:?} is not valid: use 1 to {MAX_TOPIC_LEN} characters of A-Z a-z 0-9 . _ -, \
             not starting or ending with '.' and without '..'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregate_ids() {
        assert!(aggregate_id("order-42").is_ok());
        assert!(aggregate_id("tenant:a/order.1_x").is_ok());
        assert!(aggregate_id(&"a".repeat(256)).is_ok());
        assert!(aggregate_id(&"a".repeat(257)).is_err());
        assert!(aggregate_id("").is_err());
        assert!(aggregate_id("  ").is_err());
        let err = aggregate_id("order 42").unwrap_err().to_string();
        assert!(err.contains("invalid character:  "), "{err}");
        assert!(aggregate_id("ordér").is_err());
        // jxt-core trims before checking, and counts bytes.
        assert!(aggregate_id(&format!(" {} ", "a".repeat(256))).is_ok());
        assert_eq!(
            aggregate_id_problem(&"é".repeat(200)).unwrap(),
            "aggregate_id too long (max 256 characters)"
        );
    }

    #[test]
    fn topics() {
        assert!(topic("orders.created").is_ok());
        assert!(topic("orders_v2-x").is_ok());
        for bad in ["", ".", "a..b", ".a", "a.", "a b", "a*", "a>"] {
            assert!(topic(bad).is_err(), "{bad}");
        }
        assert!(topic(&"t".repeat(250)).is_err());
    }
}
