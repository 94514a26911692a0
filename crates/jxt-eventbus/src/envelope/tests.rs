use super::*;
use crate::message::Headers;

fn sample() -> Envelope {
    Envelope::new(
        "order-1",
        "OrderCreated",
        1,
        &serde_json::json!({"total": 3}),
    )
    .unwrap()
    .with_event_id("evt-1")
    .with_timestamp(go_json::parse_time("2025-03-14T23:09:26.5+08:00").unwrap())
}

#[test]
fn writes_jxt_core_field_order_and_omits_empty_optionals() {
    let env = sample().with_trace_id("").with_tenant_id(0);
    assert_eq!(
        String::from_utf8(env.to_bytes().unwrap()).unwrap(),
        r#"{"event_id":"evt-1","aggregate_id":"order-1","event_type":"OrderCreated","event_version":1,"timestamp":"2025-03-14T23:09:26.5+08:00","payload":{"total":3}}"#
    );
    let env = sample()
        .with_trace_id("t")
        .with_correlation_id("c")
        .with_tenant_id(-7);
    let text = String::from_utf8(env.to_bytes().unwrap()).unwrap();
    assert!(
        text.contains(r#""trace_id":"t","correlation_id":"c","tenant_id":-7,"payload""#),
        "{text}"
    );
    // serde's view has the same fields in the same order.
    assert_eq!(
        serde_json::to_string(&env).unwrap(),
        text,
        "no character here needs Go-specific escaping"
    );
}

#[test]
fn tenant_reads_as_number_or_digit_string() {
    let base = r#"{"event_id":"e","aggregate_id":"a","event_type":"T","event_version":1,"payload":{},"tenant_id":"#;
    let read = |t: &str| Envelope::from_slice(format!("{base}{t}}}").as_bytes());
    assert_eq!(read("42").unwrap().tenant_id, Some(42));
    assert_eq!(read(r#""42""#).unwrap().tenant_id, Some(42));
    assert_eq!(read(r#""-7""#).unwrap().tenant_id, Some(-7));
    assert_eq!(read("0").unwrap().tenant_id, None);
    assert_eq!(read("null").unwrap().tenant_id, None);
    for bad in [
        r#""t-1""#,
        r#""""#,
        "4.2",
        r#""4 2""#,
        "true",
        "99999999999999999999",
    ] {
        let err = read(bad).unwrap_err().to_string();
        assert!(
            err.contains("tenant_id") || err.contains("invalid type"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn tenant_is_written_as_configured_and_reads_back() {
    let env = sample().with_tenant_id(-7);
    let number = String::from_utf8(env.to_bytes().unwrap()).unwrap();
    assert!(number.contains(r#","tenant_id":-7,"#), "{number}");
    let string = env.to_bytes_with(TenantIdEncoding::String).unwrap();
    let text = String::from_utf8(string.clone()).unwrap();
    assert!(text.contains(r#","tenant_id":"-7","#), "{text}");
    assert_eq!(Envelope::from_slice(&string).unwrap().tenant_id, Some(-7));
    // Only the tenant differs; none is written for 0 in either form.
    assert_eq!(text.replace(r#""-7""#, "-7"), number);
    let none = sample().to_bytes_with(TenantIdEncoding::String).unwrap();
    assert!(!String::from_utf8(none).unwrap().contains("tenant_id"));
    let m = env.to_message_with(TenantIdEncoding::String).unwrap();
    assert_eq!(m.payload()[..], string[..]);
    assert_eq!(m.headers.get_str(headers::TENANT_ID), Some("-7"));
}

#[test]
fn event_version_is_an_integer_only() {
    let read = |v: &str| {
        Envelope::from_slice(
            format!(r#"{{"event_id":"e","aggregate_id":"a","event_type":"T","event_version":{v},"payload":{{}}}}"#)
                .as_bytes(),
        )
    };
    assert_eq!(read("9223372036854775807").unwrap().event_version, i64::MAX);
    for bad in ["1.0", r#""1""#, "1e2", "9223372036854775808"] {
        let err = read(bad).unwrap_err().to_string();
        assert!(
            err.starts_with("invalid message: failed to unmarshal envelope"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn rejects_what_jxt_core_rejects_in_its_order() {
    let mut env = sample();
    env.event_version = 0;
    env.aggregate_id = "a b".into();
    assert_eq!(
        env.validate().unwrap_err().to_string(),
        "invalid message: invalid envelope: event_version must be positive"
    );
    env.event_version = 1;
    assert!(env
        .to_message()
        .unwrap_err()
        .to_string()
        .ends_with("invalid aggregate_id: aggregate_id contains invalid character:  "));
}

#[test]
fn null_payload_is_encoded_but_not_published() {
    let env = sample().with_raw_payload("null").unwrap();
    assert!(env.to_bytes().is_ok());
    assert!(env.to_message().is_err());
    assert!(sample().with_raw_payload("not json {").is_err());
}

#[test]
fn message_carries_jxt_core_headers_in_order_and_the_key() {
    let env = sample()
        .with_correlation_id("c")
        .with_tenant_id(42)
        .with_trace_id("4bf92f3577b34da6a3ce929d0e0e4736");
    let msg = env.to_message().unwrap();
    assert_eq!(msg.key_str(), Some("order-1"));
    assert_eq!(msg.id, "evt-1");
    let names: Vec<&str> = msg.headers.iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "X-Event-ID",
            "X-Aggregate-ID",
            "X-Event-Version",
            "X-Event-Type",
            "X-Trace-ID",
            "X-Correlation-ID",
            "X-Tenant-ID"
        ]
    );
    assert_eq!(msg.headers.get_str(headers::TENANT_ID), Some("42"));
    let back = Envelope::from_message(&msg).unwrap();
    assert_eq!(back.event_type, "OrderCreated");
    assert_eq!(back.timestamp, env.timestamp);
    assert_eq!(EventInfo::of(&msg), EventInfo::from(&env));
}

#[test]
fn event_info_falls_back_on_headers_then_key() {
    let headers: Headers = [
        ("X-Event-ID", "e-9"),
        ("X-Event-Type", "Paid"),
        ("X-Event-Version", "4"),
        ("aggregate-id", "order-9"),
        ("X-Tenant-ID", "-3"),
        ("X-Trace-ID", "t"),
        ("X-Correlation-ID", ""),
    ]
    .into_iter()
    .collect();
    let mut msg = Message::new("not an envelope").with_key("key-1");
    msg.headers = headers;
    let info = EventInfo::of(&msg);
    assert_eq!(info.event_id.as_deref(), Some("e-9"));
    assert_eq!(info.event_type.as_deref(), Some("Paid"));
    assert_eq!(info.event_version, Some(4));
    assert_eq!(info.aggregate_id.as_deref(), Some("order-9"));
    assert_eq!(info.tenant_id, Some(-3));
    assert_eq!(info.trace_id.as_deref(), Some("t"));
    assert_eq!(info.correlation_id, None);
    let bare = Message::new("x").with_key("key-1");
    assert_eq!(EventInfo::of(&bare).aggregate_id.as_deref(), Some("key-1"));
    assert_eq!(EventInfo::of(&Message::new("x")), EventInfo::default());
}

mod round_trip {
    use super::*;
    use chrono::{FixedOffset, TimeZone};
    use proptest::prelude::*;

    fn envelope() -> impl Strategy<Value = Envelope> {
        (
            "\\PC{1,20}",
            "[A-Za-z0-9:_./-]{1,40}",
            "\\PC{1,20}",
            1..i64::MAX,
            (
                0i64..253_402_300_799,
                0u32..1_000_000_000,
                -14 * 60..=14 * 60i32,
            ),
            proptest::option::of("\\PC*"),
            proptest::option::of("[<>&\u{2028}\u{2029}\"\\\\a-z]*"),
            any::<i64>(),
        )
            .prop_filter("non-blank ids", |(id, _, ty, ..)| {
                !id.trim().is_empty() && !ty.trim().is_empty()
            })
            .prop_map(
                |(id, agg, ty, version, (secs, nanos, offset_min), trace, corr, tenant)| {
                    let zone = FixedOffset::east_opt(offset_min * 60).unwrap();
                    let at = zone.timestamp_opt(secs - 62_135_596_800, nanos).unwrap();
                    let mut env =
                        Envelope::new(agg, ty, version, &serde_json::json!({"k": [1, "x"]}))
                            .unwrap()
                            .with_event_id(id)
                            .with_timestamp(at)
                            .with_tenant_id(tenant);
                    if let Some(t) = trace {
                        env = env.with_trace_id(t);
                    }
                    if let Some(c) = corr {
                        env = env.with_correlation_id(c);
                    }
                    env
                },
            )
    }

    proptest! {
        /// Whatever this bus writes reads back to the same values, and the
        /// bytes are stable under a second round.
        #[test]
        fn written_envelopes_read_back_unchanged(env in envelope()) {
            let bytes = env.to_bytes().unwrap();
            let back = Envelope::from_slice(&bytes).unwrap();
            prop_assert_eq!(&back.event_id, &env.event_id);
            prop_assert_eq!(&back.aggregate_id, &env.aggregate_id);
            prop_assert_eq!(&back.event_type, &env.event_type);
            prop_assert_eq!(back.event_version, env.event_version);
            prop_assert_eq!(back.timestamp, env.timestamp);
            prop_assert_eq!(back.timestamp.offset(), env.timestamp.offset());
            prop_assert_eq!(&back.trace_id, &env.trace_id);
            prop_assert_eq!(&back.correlation_id, &env.correlation_id);
            prop_assert_eq!(back.tenant_id, env.tenant_id);
            prop_assert_eq!(back.payload.get(), env.payload.get());
            prop_assert_eq!(back.to_bytes().unwrap(), bytes);
        }
    }
}

#[test]
fn a_follow_up_carries_the_chain_trace_and_tenant_and_nothing_else() {
    let cause = sample()
        .with_trace_id("trace-9")
        .with_correlation_id("chain-1")
        .with_tenant_id(7);
    let next = cause.follow_up("PaymentRequested", 2, &"paid").unwrap();
    assert_eq!(next.aggregate_id, "order-1");
    assert_eq!(next.event_type, "PaymentRequested");
    assert_eq!(next.event_version, 2);
    assert_eq!(next.payload.get(), r#""paid""#);
    // The chain's correlation id, not the cause's own event id.
    assert_eq!(next.correlation_id.as_deref(), Some("chain-1"));
    assert_eq!(next.trace_id.as_deref(), Some("trace-9"));
    assert_eq!(next.tenant_id, Some(7));
    assert_ne!(next.event_id, cause.event_id);
    assert_ne!(next.timestamp, cause.timestamp);

    let plain = sample().follow_up("PaymentRequested", 1, &1).unwrap();
    assert_eq!(plain.correlation_id.as_deref(), Some("evt-1"));
    assert_eq!((plain.trace_id, plain.tenant_id), (None, None));
    assert!(sample().follow_up("", 1, &1).is_err());
    assert!(sample().follow_up("PaymentRequested", 0, &1).is_err());
}
