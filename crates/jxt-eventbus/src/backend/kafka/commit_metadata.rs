//! Offsets finished above the committed position, carried in the commit
//! metadata of their partition.
//!
//! Invariant: a decoded [`FinishedAbove`] claims an offset only if the
//! writer encoded it as finished, and only above the committed position it
//! was written with. Anything else — metadata of other writers (jxt-core's
//! sarama clients, Kafka tools), another version, a different committed
//! position, malformed or truncated text — decodes to nothing, never to a
//! wrong claim, and never panics.
//!
//! Format (version 1), at most [`METADATA_MAX`] bytes:
//! `jxt1:<base>:<c|p>:<runs>` where `base` is the committed position, `c`
//! says every finished offset above it is listed and `p` that only a prefix
//! fit, and `runs` is unpadded URL-safe base64 of LEB128 varints: run
//! lengths starting at `base + 1`, alternately not finished and finished
//! (the first may be 0, every later one is at least 1). The run-length form
//! is Confluent Parallel Consumer's idea: a window of finished records with
//! a few holes costs a few bytes.

use std::ops::Range;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

/// Kafka's default `offset.metadata.max.bytes`: a longer metadata string
/// fails the whole commit.
pub(super) const METADATA_MAX: usize = 4096;

const PREFIX: &str = "jxt1:";

/// Finished offsets above a committed position: disjoint, ascending ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct FinishedAbove {
    /// The committed position the set was written with.
    pub(super) base: i64,
    /// Finished offsets, all above `base`.
    pub(super) runs: Vec<Range<i64>>,
}

impl FinishedAbove {
    /// Whether `offset` is claimed finished.
    #[cfg(test)]
    pub(super) fn contains(&self, offset: i64) -> bool {
        let i = self.runs.partition_point(|r| r.end <= offset);
        self.runs.get(i).is_some_and(|r| r.contains(&offset))
    }

    /// Encodes the runs above `base` (ranges at or below it are dropped),
    /// within `max` bytes; returns the text and whether everything fit.
    /// Empty when nothing is finished above `base`.
    pub(super) fn encode(base: i64, runs: &[Range<i64>], max: usize) -> (String, bool) {
        let mut header = format!("{PREFIX}{base}:c:");
        // Four base64 characters carry three bytes.
        let budget = max.saturating_sub(header.len()) / 4 * 3;
        let mut bytes = Vec::new();
        let mut at = base + 1;
        let mut complete = true;
        for r in runs {
            let start = r.start.max(at);
            if r.end <= start {
                continue;
            }
            let mut pair = Vec::with_capacity(20);
            put_varint(&mut pair, (start - at) as u64);
            put_varint(&mut pair, (r.end - start) as u64);
            if bytes.len() + pair.len() > budget {
                complete = false;
                break;
            }
            bytes.extend_from_slice(&pair);
            at = r.end;
        }
        if bytes.is_empty() {
            return (String::new(), complete);
        }
        if !complete {
            header = format!("{PREFIX}{base}:p:");
        }
        header.push_str(&URL_SAFE_NO_PAD.encode(&bytes));
        (header, complete)
    }

    /// Decodes metadata written with committed position `committed`; `None`
    /// for anything that is not version 1 written at that position.
    pub(super) fn decode(metadata: &str, committed: i64) -> Option<FinishedAbove> {
        let rest = metadata.strip_prefix(PREFIX)?;
        let mut parts = rest.splitn(3, ':');
        let base: i64 = parts.next()?.parse().ok()?;
        let flag = parts.next()?;
        let payload = parts.next()?;
        if base != committed || base < 0 || !matches!(flag, "c" | "p") || payload.is_empty() {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
        let mut input = bytes.as_slice();
        let mut at = base.checked_add(1)?;
        let mut runs = Vec::new();
        while !input.is_empty() {
            let gap = i64::try_from(take_varint(&mut input)?).ok()?;
            let len = i64::try_from(take_varint(&mut input)?).ok()?;
            if len == 0 || (gap == 0 && !runs.is_empty()) {
                return None;
            }
            let start = at.checked_add(gap)?;
            let end = start.checked_add(len)?;
            runs.push(start..end);
            at = end;
        }
        Some(FinishedAbove { base, runs })
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn take_varint(input: &mut &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    for (i, &b) in input.iter().enumerate().take(10) {
        let bits = u64::from(b & 0x7f);
        if i == 9 && b > 1 {
            return None;
        }
        v |= bits << (7 * i);
        if b & 0x80 == 0 {
            *input = &input[i + 1..];
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn runs_of(base: i64, finished: &std::collections::BTreeSet<i64>) -> Vec<Range<i64>> {
        let mut runs: Vec<Range<i64>> = Vec::new();
        for &o in finished.iter().filter(|&&o| o > base) {
            match runs.last_mut() {
                Some(r) if r.end == o => r.end += 1,
                _ => runs.push(o..o + 1),
            }
        }
        runs
    }

    #[test]
    fn a_window_with_holes_is_a_few_bytes() {
        let runs = vec![11..15, 16..100, 101..102];
        let (text, complete) = FinishedAbove::encode(10, &runs, METADATA_MAX);
        assert!(complete);
        assert_eq!(text, "jxt1:10:c:AAQBVAEB");
        let back = FinishedAbove::decode(&text, 10).unwrap();
        assert_eq!(back.runs, runs);
        assert!(back.contains(11) && back.contains(99) && back.contains(101));
        assert!(!back.contains(10) && !back.contains(15) && !back.contains(100));
    }

    #[test]
    fn other_writers_and_other_positions_claim_nothing() {
        let (text, _) = FinishedAbove::encode(10, std::slice::from_ref(&(11..15)), METADATA_MAX);
        assert_eq!(FinishedAbove::decode(&text, 11), None, "another position");
        for other in [
            "",
            "some sarama metadata",
            "jxt2:10:c:AAQ",
            "jxt1:10:x:AAQ",
            "jxt1:10:c:",
            "jxt1:-5:c:AAQ",
            "jxt1:10:c:!!",
            "jxt1:10:c:AAAA",
        ] {
            assert_eq!(FinishedAbove::decode(other, 10), None, "{other:?}");
        }
    }

    #[test]
    fn what_does_not_fit_is_left_out_and_said() {
        // Single finished offsets with holes: two bytes each.
        let runs: Vec<Range<i64>> = (0..5_000).map(|i| 2 * i + 2..2 * i + 3).collect();
        let (text, complete) = FinishedAbove::encode(0, &runs, METADATA_MAX);
        assert!(!complete);
        assert!(text.len() <= METADATA_MAX, "{}", text.len());
        assert!(text.starts_with("jxt1:0:p:"));
        let back = FinishedAbove::decode(&text, 0).unwrap();
        assert!(!back.runs.is_empty());
        assert_eq!(back.runs[..], runs[..back.runs.len()]);
    }

    proptest! {
        /// Encode then decode gives the finished offsets back (a prefix of
        /// them when they did not fit), within the size limit.
        #[test]
        fn round_trip(
            base in 0i64..1_000_000_000_000,
            finished in proptest::collection::btree_set(0i64..5_000, 0..2_000),
            max in 16usize..=METADATA_MAX,
        ) {
            let finished: std::collections::BTreeSet<i64> =
                finished.into_iter().map(|o| base + o).collect();
            let runs = runs_of(base, &finished);
            let (text, complete) = FinishedAbove::encode(base, &runs, max);
            prop_assert!(text.len() <= max);
            if runs.is_empty() {
                prop_assert!(text.is_empty());
                return Ok(());
            }
            if text.is_empty() {
                prop_assert!(!complete);
                return Ok(());
            }
            let back = FinishedAbove::decode(&text, base).unwrap();
            if complete {
                prop_assert_eq!(&back.runs, &runs);
            } else {
                prop_assert!(back.runs.len() < runs.len());
                prop_assert_eq!(&back.runs[..], &runs[..back.runs.len()]);
            }
        }

        /// Arbitrary text never panics the decoder.
        #[test]
        fn arbitrary_text_never_panics(text in ".*", committed in any::<i64>()) {
            let _ = FinishedAbove::decode(&text, committed);
            let with_prefix = format!("{PREFIX}{committed}:c:{text}");
            let _ = FinishedAbove::decode(&with_prefix, committed);
        }

        /// Arbitrary bytes under a valid header never claim the committed
        /// position or anything below it, and their runs are ascending and
        /// disjoint.
        #[test]
        fn arbitrary_runs_claim_only_above_the_position(
            bytes in proptest::collection::vec(any::<u8>(), 0..64),
            committed in 0i64..i64::MAX,
        ) {
            let text = format!("{PREFIX}{committed}:c:{}", URL_SAFE_NO_PAD.encode(&bytes));
            if let Some(f) = FinishedAbove::decode(&text, committed) {
                let mut last = committed + 1;
                for r in &f.runs {
                    prop_assert!(r.start >= last && r.start < r.end);
                    last = r.end;
                }
                prop_assert!(!f.contains(committed));
            }
        }

        /// Whatever is decoded was finished: never an offset that was not.
        #[test]
        fn never_claims_an_unfinished_offset(
            finished in proptest::collection::btree_set(1i64..3_000, 0..500),
            max in 16usize..=METADATA_MAX,
            probe in proptest::collection::vec(0i64..3_100, 50),
        ) {
            let runs = runs_of(0, &finished);
            let (text, _) = FinishedAbove::encode(0, &runs, max);
            if let Some(back) = FinishedAbove::decode(&text, 0) {
                for o in probe {
                    if back.contains(o) {
                        prop_assert!(finished.contains(&o), "claims {}", o);
                    }
                }
            }
        }
    }
}
