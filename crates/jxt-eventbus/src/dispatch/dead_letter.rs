//! What a dead letter carries when it cannot carry everything.
//!
//! Invariant: a dead-letter write never fails for want of a size bound the
//! bus controls. The error text (`x-dlq-error`) is cut to [`MAX_ERROR_BYTES`]
//! at a char boundary with a marker; when the broker refuses the full record
//! for good (too large, topic or stream missing, not authorized) the bus
//! writes a *pointer* instead: the `x-dlq-*` provenance of the record, its
//! payload's size and SHA-256, and why the full record was refused, with no
//! payload and none of the record's own headers. The payload stays findable
//! in the original topic at the given partition and offset (until that
//! topic's retention removes it), and the hash tells whether a copy found
//! there is the same.

use std::borrow::Cow;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::worker::dlq_headers;
use crate::message::Message;

/// Upper bound of `x-dlq-error`, in bytes, marker included.
pub const MAX_ERROR_BYTES: usize = 4096;

/// Upper bound of the error texts in a pointer record, which must fit where
/// the full record did not.
pub const MAX_POINTER_ERROR_BYTES: usize = 1024;

/// Appended to a text that was cut.
pub const TRUNCATED_MARKER: &str = "… [truncated]";

/// `text` if it fits in `max` bytes, else its longest prefix ending at a char
/// boundary that fits together with [`TRUNCATED_MARKER`].
pub fn bounded(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let mut end = max.saturating_sub(TRUNCATED_MARKER.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}{TRUNCATED_MARKER}", &text[..end]))
}

/// The id of the dead letter a `group` writes for the record with id
/// `original`: the same on every write attempt (a retried write is
/// de-duplicated, e.g. by JetStream's `Nats-Msg-Id`), different per group
/// (two groups' dead letters of one record are two records, not duplicates).
/// A UUID (version 8) made of the first 16 bytes of SHA-256(group, id).
pub fn dead_letter_id(group: &str, original: &str) -> String {
    let mut h = Sha256::new();
    h.update(group.as_bytes());
    h.update([0u8]);
    h.update(original.as_bytes());
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// Hex SHA-256 of `payload`.
pub(crate) fn sha256_hex(payload: &[u8]) -> String {
    format!("{:x}", Sha256::digest(payload))
}

/// The pointer record standing in for `full` (a dead letter the broker
/// refused for good, with `write_error`): same id, key and timestamp, only
/// the `x-dlq-*` headers (errors cut to [`MAX_POINTER_ERROR_BYTES`]), the
/// payload's size and hash, and no payload.
pub(crate) fn pointer(full: &Message, write_error: &str) -> Message {
    use dlq_headers::*;
    let mut headers = full.headers.clone();
    headers.retain(|name, _| name.starts_with("x-dlq-"));
    if let Some(text) = headers.get_str(ERROR) {
        let cut = bounded(text, MAX_POINTER_ERROR_BYTES).into_owned();
        headers.set(ERROR, cut);
    }
    headers.set(POINTER, "true");
    headers.set(PAYLOAD_SIZE, full.payload().len().to_string());
    headers.set(PAYLOAD_SHA256, sha256_hex(full.payload()));
    headers.set(
        WRITE_ERROR,
        bounded(write_error, MAX_POINTER_ERROR_BYTES).into_owned(),
    );
    let mut m = full.clone();
    m.headers = headers;
    m.payload = Some(Bytes::new());
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn short_texts_are_kept() {
        assert!(matches!(bounded("boom", 10), Cow::Borrowed("boom")));
        let exact = "x".repeat(MAX_ERROR_BYTES);
        assert_eq!(bounded(&exact, MAX_ERROR_BYTES), exact.as_str());
    }

    #[test]
    fn long_texts_are_cut_at_a_char_boundary_with_the_marker() {
        // Two-byte chars: a cut at an odd byte would split one.
        let long = "é".repeat(MAX_ERROR_BYTES);
        let cut = bounded(&long, MAX_ERROR_BYTES);
        assert!(cut.len() <= MAX_ERROR_BYTES, "{}", cut.len());
        assert!(cut.ends_with(TRUNCATED_MARKER));
        let kept = cut.strip_suffix(TRUNCATED_MARKER).unwrap();
        assert!(kept.chars().all(|c| c == 'é'));
        assert!(kept.len() + TRUNCATED_MARKER.len() > MAX_ERROR_BYTES - 2);
    }

    proptest! {
        #[test]
        fn bounded_is_a_marked_prefix_within_the_bound(text in ".{0,300}", max in 16usize..200) {
            let cut = bounded(&text, max);
            prop_assert!(cut.len() <= max || cut == text.as_str());
            if cut != text.as_str() {
                let kept = cut.strip_suffix(TRUNCATED_MARKER).unwrap();
                prop_assert!(text.starts_with(kept));
                prop_assert!(cut.len() <= max);
            }
        }
    }

    #[test]
    fn a_pointer_keeps_provenance_and_drops_payload_and_own_headers() {
        let mut full = Message::new(vec![7u8; 5000]).with_key("k");
        full.headers.set("X-Event-Type", "big");
        full.headers.set(dlq_headers::ORIGINAL_TOPIC, "orders");
        full.headers.set(dlq_headers::ERROR, "e".repeat(3000));
        let p = pointer(&full, "too large");
        assert!(p.payload().is_empty());
        assert_eq!(p.key, full.key);
        assert_eq!(p.id, full.id);
        let h = &p.headers;
        assert_eq!(h.get_str("X-Event-Type"), None);
        assert_eq!(h.get_str(dlq_headers::ORIGINAL_TOPIC), Some("orders"));
        assert_eq!(h.get_str(dlq_headers::POINTER), Some("true"));
        assert_eq!(h.get_str(dlq_headers::PAYLOAD_SIZE), Some("5000"));
        assert_eq!(
            h.get_str(dlq_headers::PAYLOAD_SHA256),
            Some(sha256_hex(&[7u8; 5000]).as_str())
        );
        assert_eq!(h.get_str(dlq_headers::WRITE_ERROR), Some("too large"));
        assert!(h.get_str(dlq_headers::ERROR).unwrap().len() <= MAX_POINTER_ERROR_BYTES);
    }

    #[test]
    fn dead_letter_ids_are_stable_per_group_and_differ_across_groups() {
        let a = dead_letter_id("g1", "id-1");
        assert_eq!(a, dead_letter_id("g1", "id-1"));
        assert_ne!(a, dead_letter_id("g2", "id-1"));
        assert_ne!(a, dead_letter_id("g1", "id-2"));
        // No ambiguity from concatenation.
        assert_ne!(dead_letter_id("g1", "x"), dead_letter_id("g", "1x"));
        assert!(uuid::Uuid::parse_str(&a).is_ok(), "{a}");
    }

    #[test]
    fn sha256_is_the_standard_digest() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
