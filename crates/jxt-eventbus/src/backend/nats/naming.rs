//! Names of the JetStream objects behind topics and groups.
//!
//! Stream and consumer names may not contain `.`, which topics and groups
//! may. A name that is already valid is used as is; otherwise each `.` becomes
//! `_` and a hash of the original is appended, so that `orders.created` and
//! `orders_created` never share a stream. The hash is FNV-1a, fixed here,
//! because these names must stay the same across processes and versions:
//! a durable consumer found under another name would restart its group.

/// Longest name kept before hashing (JetStream allows 255; stream names
/// become file names on the server).
const MAX_PLAIN: usize = 200;

/// The stream created for `topic` when no stream captures its subject.
pub(crate) fn stream_name(topic: &str) -> String {
    jetstream_name(topic)
}

/// The durable consumer of `group` for `topic`. Buses in the same group
/// share it (and so share the topic's records); different groups have
/// different consumers and each gets every record. The topic is part of the
/// name because one stream may hold several topics (`orders.>`). Always
/// hashed (group and topic together), so that no two pairs share a name.
pub(crate) fn durable_name(group: &str, topic: &str) -> String {
    let readable: String = format!("{group}_{topic}")
        .chars()
        .take(MAX_PLAIN)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let hash = fnv1a(format!("{group}\0{topic}").as_bytes()) as u32;
    format!("{readable}_{hash:08x}")
}

/// The core NATS subject on which the buses of `group` answer who they are
/// and which topics they hold (see `balance`).
pub(crate) fn census_subject(group: &str) -> String {
    format!("_EVENTBUS.census.{}", jetstream_name(group))
}

fn jetstream_name(name: &str) -> String {
    let plain = name.len() <= MAX_PLAIN
        && !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if plain {
        return name.to_string();
    }
    let mut out: String = name
        .chars()
        .take(MAX_PLAIN)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    out.push_str(&format!("_{:08x}", fnv1a(name.as_bytes()) as u32));
    out
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names_are_kept() {
        assert_eq!(stream_name("orders"), "orders");
        assert_eq!(stream_name("orders_v2-x"), "orders_v2-x");
        assert!(durable_name("billing", "orders").starts_with("billing_orders_"));
    }

    #[test]
    fn dotted_names_are_escaped_without_collisions() {
        let a = stream_name("orders.created");
        let b = stream_name("orders_created");
        assert_ne!(a, b);
        assert!(a.starts_with("orders_created_"), "{a}");
        assert!(!a.contains('.'));
        assert_ne!(stream_name("a.b"), stream_name("a-b"));
        assert_ne!(stream_name("orders.dlq"), stream_name("orders"));
    }

    #[test]
    fn durable_names_differ_per_group_and_topic() {
        assert_ne!(durable_name("a_b", "c"), durable_name("a", "b_c"));
        assert_ne!(durable_name("g", "orders"), durable_name("g", "payments"));
        let n = durable_name("billing.v2", "orders.created");
        assert!(!n.contains('.'), "{n}");
        assert!(n.len() <= MAX_PLAIN + 9);
        assert!(durable_name(&"g".repeat(249), &"t".repeat(249)).len() <= MAX_PLAIN + 9);
    }

    #[test]
    fn names_are_stable() {
        // Pinned: a changed hash would orphan every durable consumer.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(stream_name("orders.created"), stream_name("orders.created"));
    }

    #[test]
    fn long_names_are_shortened() {
        let long = "t".repeat(249);
        let n = stream_name(&long);
        assert!(n.len() <= MAX_PLAIN + 9, "{}", n.len());
        assert_ne!(n, stream_name(&"t".repeat(248)));
    }
}
