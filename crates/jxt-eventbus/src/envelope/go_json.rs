//! The pieces of Go's JSON that jxt-core's envelope bytes depend on: string
//! escaping as json-iterator's `ConfigCompatibleWithStandardLibrary` writes
//! it, and `time.Time` as RFC 3339 with nanoseconds.
//!
//! serde_json escapes differently (it leaves `<`, `>`, `&` and U+2028/U+2029
//! raw) and chrono's RFC 3339 output pads the fraction to 3, 6 or 9 digits and
//! writes `+00:00`, so the envelope writes these by hand to stay
//! byte-identical with what a Go publisher sends.

use chrono::{DateTime, FixedOffset, NaiveDate, Offset, Timelike};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `s` as a JSON string the way Go escapes it: `"` and `\` escaped,
/// `\n` `\r` `\t` short, other control characters and `<` `>` `&` as
/// `\u00XX`, U+2028/U+2029 as `\u2028`/`\u2029`, everything else raw UTF-8
/// (DEL included).
pub(crate) fn write_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let escape: Option<&[u8]> = match c {
            '"' => Some(b"\\\""),
            '\\' => Some(b"\\\\"),
            '\n' => Some(b"\\n"),
            '\r' => Some(b"\\r"),
            '\t' => Some(b"\\t"),
            '\u{2028}' => Some(b"\\u2028"),
            '\u{2029}' => Some(b"\\u2029"),
            c if (c as u32) < 0x20 || matches!(c, '<' | '>' | '&') => {
                out.extend_from_slice(&bytes[start..i]);
                let b = c as u8;
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
                start = i + 1;
                continue;
            }
            _ => None,
        };
        if let Some(e) = escape {
            out.extend_from_slice(&bytes[start..i]);
            out.extend_from_slice(e);
            start = i + c.len_utf8();
        }
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Go's zero `time.Time` (`0001-01-01T00:00:00Z`): what a missing or `null`
/// timestamp decodes to.
pub(crate) fn zero_time() -> DateTime<FixedOffset> {
    NaiveDate::from_ymd_opt(1, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().fixed_offset())
        .unwrap_or_default()
}

/// Formats `t` as Go's `time.Time` JSON (`time.RFC3339Nano`): nanoseconds
/// with trailing zeros trimmed (no fraction for whole seconds), the offset
/// kept, `Z` for a zero offset.
pub(crate) fn format_time(t: &DateTime<FixedOffset>) -> String {
    let mut s = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let nanos = t.nanosecond() % 1_000_000_000;
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    let offset = t.offset().fix().local_minus_utc();
    if offset == 0 {
        s.push('Z');
    } else {
        let sign = if offset < 0 { '-' } else { '+' };
        let m = offset.unsigned_abs() / 60;
        s.push_str(&format!("{sign}{:02}:{:02}", m / 60, m % 60));
    }
    s
}

/// Parses a timestamp as Go's `time.Time.UnmarshalJSON` does: RFC 3339 with
/// `T` between date and time and an optional fraction; the offset is kept.
///
/// # Errors
/// A message naming the text when it is not RFC 3339 (chrono alone would
/// also accept a space for the `T`, which Go rejects).
pub(crate) fn parse_time(s: &str) -> Result<DateTime<FixedOffset>, String> {
    let bad = || format!("timestamp {s:?} is not RFC 3339 (2006-01-02T15:04:05Z07:00)");
    if s.as_bytes().get(10) != Some(&b'T') || s.ends_with('z') {
        return Err(bad());
    }
    DateTime::parse_from_rfc3339(s).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn esc(s: &str) -> String {
        let mut v = Vec::new();
        write_string(&mut v, s);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn escapes_like_go() {
        assert_eq!(
            esc("<tag>&\u{2028}\u{7f}\"q\"\\"),
            r#""\u003ctag\u003e\u0026\u2028"#.to_string() + "\u{7f}" + r#"\"q\"\\""#
        );
        assert_eq!(esc("a\tb\nc\rd\u{1}\u{8}"), r#""a\tb\nc\rd\u0001\u0008""#);
        assert_eq!(esc("ünï😀\u{2029}"), "\"ünï😀\\u2029\"");
    }

    #[test]
    fn times_like_go() {
        for s in [
            "2025-03-14T15:09:26.535897932Z",
            "2025-03-14T15:09:26.535Z",
            "2025-03-14T15:09:26Z",
            "2025-03-14T23:09:26.535897932+08:00",
            "2025-03-14T10:09:26.5-05:30",
            "0001-01-01T00:00:00Z",
        ] {
            assert_eq!(format_time(&parse_time(s).unwrap()), s);
        }
        assert_eq!(format_time(&zero_time()), "0001-01-01T00:00:00Z");
        assert_eq!(
            format_time(&parse_time("2025-03-14T15:09:26.500+00:00").unwrap()),
            "2025-03-14T15:09:26.5Z"
        );
        for bad in ["2025-03-14 15:09:26", "2025-03-14", "1741964966", ""] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        /// Whatever we escape reads back as the same string with any JSON
        /// parser, and never contains the characters Go escapes.
        #[test]
        fn escaped_strings_round_trip(s in "\\PC*|[<>&\u{2028}\u{2029}\u{0}-\u{1f}\"\\\\]*") {
            let out = esc(&s);
            prop_assert_eq!(serde_json::from_str::<String>(&out).unwrap(), s);
            let inner = &out[1..out.len() - 1];
            let go_escaped = ['<', '>', '&', '\u{2028}', '\u{2029}'];
            prop_assert!(!inner.contains(go_escaped), "{}", out);
        }
    }
}
