//! Checks applied to every record before it reaches a backend.

use crate::error::{Error, Result};

/// Longest accepted aggregate id, in characters.
pub const MAX_AGGREGATE_ID_LEN: usize = 256;

/// Longest accepted topic name (Kafka's limit).
pub const MAX_TOPIC_LEN: usize = 249;

/// Checks an aggregate id (a message key): 1..=256 characters of
/// `[A-Za-z0-9:_\-./]`.
///
/// # Errors
/// [`Error::InvalidMessage`] naming the first offending character or the length.
pub fn aggregate_id(id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::InvalidMessage("aggregate id is empty".into()));
    }
    let len = id.chars().count();
    if len > MAX_AGGREGATE_ID_LEN {
        return Err(Error::InvalidMessage(format!(
            "aggregate id is {len} characters long; at most {MAX_AGGREGATE_ID_LEN} are allowed"
        )));
    }
    if let Some((pos, c)) = id.char_indices().find(|(_, c)| !is_id_char(*c)) {
        return Err(Error::InvalidMessage(format!(
            "aggregate id {id:?} has {c:?} at byte {pos}; allowed are A-Z a-z 0-9 and : _ - . /"
        )));
    }
    Ok(())
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
        let err = aggregate_id("order 42").unwrap_err().to_string();
        assert!(err.contains("' '"), "{err}");
        assert!(aggregate_id("ordér").is_err());
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
