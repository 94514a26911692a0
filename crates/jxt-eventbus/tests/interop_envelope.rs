//! The envelope against jxt-core v1.7.5's golden fixtures (`envelope/` and
//! `kafka/records-envelope.json`): every captured envelope decodes to the
//! Go inputs and re-encodes to the captured bytes; validation and decoding
//! accept and reject what jxt-core does, with its error texts; the message
//! built for a publish has jxt-core's key and `X-*` headers.

mod interop_support;

use chrono::{DateTime, FixedOffset};
use jxt_eventbus::envelope::EventInfo;
use jxt_eventbus::{Envelope, Message};
use serde_json::Value;

fn go_time(input: &str) -> DateTime<FixedOffset> {
    // index.json prints Go's `time.Time` with its zone name: "<rfc3339> (UTC)".
    let text = input.split(" (").next().unwrap();
    DateTime::parse_from_rfc3339(text).unwrap_or_else(|e| panic!("{input}: {e}"))
}

fn from_go_input(input: &Value, payload: &str) -> Envelope {
    let s = |k: &str| input[k].as_str().unwrap().to_string();
    let mut env = Envelope::new(s("AggregateID"), s("EventType"), 1, &())
        .unwrap()
        .with_raw_payload(payload)
        .unwrap()
        .with_event_id(s("EventID"))
        .with_timestamp(go_time(&s("Timestamp")))
        .with_trace_id(s("TraceID"))
        .with_correlation_id(s("CorrelationID"))
        .with_tenant_id(input["TenantID"].as_i64().unwrap());
    env.event_version = input["EventVersion"].as_i64().unwrap();
    env
}

#[test]
fn every_captured_envelope_decodes_and_reencodes_byte_for_byte() {
    let Some(dir) = interop_support::fixtures() else {
        return;
    };
    let cases = interop_support::json(&dir, "envelope/index.json");
    let cases = cases.as_array().unwrap();
    assert!(cases.len() >= 16, "{} cases", cases.len());
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let file = format!("envelope/{}", case["file"].as_str().unwrap());
        let bytes = interop_support::read(&dir, &file);
        let input = &case["input"];
        let payload = input["Payload"].as_str().unwrap();
        match name {
            // jxt-core writes `"payload":null` for a payload that is not
            // JSON; this bus cannot build such an envelope, and neither
            // reader accepts the bytes.
            "payload_invalid_json" => {
                assert!(Envelope::new("a", "T", 1, &())
                    .unwrap()
                    .with_raw_payload(payload)
                    .is_err());
                let err = Envelope::from_slice(&bytes).unwrap_err().to_string();
                assert!(
                    err.ends_with("invalid envelope: payload is required"),
                    "{err}"
                );
                continue;
            }
            // A `null` payload is written by both, refused by both readers,
            // and refused by this bus's publish.
            "payload_null" => {
                let env = from_go_input(input, payload);
                assert_eq!(env.to_bytes().unwrap(), bytes, "{name}");
                assert!(env.to_message().is_err());
                let err = Envelope::from_slice(&bytes).unwrap_err().to_string();
                assert!(
                    err.ends_with("invalid envelope: payload is required"),
                    "{err}"
                );
                continue;
            }
            _ => {}
        }
        let decoded = Envelope::from_slice(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        // The large payload is only in the file.
        let payload = if payload.starts_with('<') {
            decoded.payload.get().to_string()
        } else {
            payload.to_string()
        };
        let expected = from_go_input(input, &payload);
        assert_eq!(decoded.event_id, expected.event_id, "{name}");
        assert_eq!(decoded.aggregate_id, expected.aggregate_id, "{name}");
        assert_eq!(decoded.event_type, expected.event_type, "{name}");
        assert_eq!(decoded.event_version, expected.event_version, "{name}");
        assert_eq!(decoded.timestamp, expected.timestamp, "{name}");
        assert_eq!(
            decoded.timestamp.offset(),
            expected.timestamp.offset(),
            "{name}: the offset is kept"
        );
        assert_eq!(decoded.trace_id, expected.trace_id, "{name}");
        assert_eq!(decoded.correlation_id, expected.correlation_id, "{name}");
        assert_eq!(decoded.tenant_id, expected.tenant_id, "{name}");
        assert_eq!(
            decoded.payload.get(),
            payload,
            "{name}: payload byte for byte"
        );
        let ours = expected.to_bytes().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&bytes),
            "{name}: our encoding of the Go inputs"
        );
        assert_eq!(decoded.to_bytes().unwrap(), bytes, "{name}: re-encoding");
    }
}

/// The envelope a row of validation.json describes (its `input` is prose),
/// or `None` for the row about an empty payload, which an [`Envelope`]
/// cannot hold.
fn validation_case(field: &str, input: &str) -> Option<Envelope> {
    let mut env = Envelope::new("order-1", "OrderCreated", 1, &serde_json::json!({}))
        .unwrap()
        .with_event_id("evt-1");
    let text =
        || -> String { serde_json::from_str(input).unwrap_or_else(|e| panic!("{input}: {e}")) };
    match (field, input) {
        ("-", _) => {}
        ("event_id", _) => env.event_id = text(),
        ("event_type", _) => env.event_type = text(),
        ("event_version", v) => env.event_version = v.parse().unwrap(),
        ("payload", "nil / empty") => return None,
        ("payload", "not json {") => return None,
        ("aggregate_id", "\"a\"*256") => env.aggregate_id = "a".repeat(256),
        ("aggregate_id", "\"a\"*257") => env.aggregate_id = "a".repeat(257),
        ("aggregate_id", "\" \" + \"a\"*256 + \" \"") => {
            env.aggregate_id = format!(" {} ", "a".repeat(256));
        }
        ("aggregate_id", i) if i.starts_with("\"é\"*200") => env.aggregate_id = "é".repeat(200),
        ("aggregate_id", _) => env.aggregate_id = text(),
        ("all", "event_version=0 and aggregate_id=\"a b\"") => {
            env.event_version = 0;
            env.aggregate_id = "a b".into();
        }
        ("timestamp", "zero time") => {
            env.timestamp = DateTime::parse_from_rfc3339("0001-01-01T00:00:00Z").unwrap();
        }
        ("tenant_id", "-1") => env = env.with_tenant_id(-1),
        other => panic!("validation.json has a row this test does not know: {other:?}"),
    }
    Some(env)
}

#[test]
fn validation_matches_jxt_core_rule_by_rule() {
    let Some(dir) = interop_support::fixtures() else {
        return;
    };
    let rows = interop_support::json(&dir, "envelope/validation.json");
    for row in rows.as_array().unwrap() {
        let field = row["field"].as_str().unwrap();
        let input = row["input"].as_str().unwrap();
        let accepted = row["accepted"].as_bool().unwrap();
        let Some(env) = validation_case(field, input) else {
            if input == "nil / empty" {
                // The decoder is where an absent payload can occur.
                let err = Envelope::from_slice(
                    br#"{"event_id":"evt-1","aggregate_id":"order-1","event_type":"OrderCreated","event_version":1}"#,
                )
                .unwrap_err()
                .to_string();
                assert!(err.ends_with(row["error"].as_str().unwrap()), "{err}");
            } else {
                // jxt-core accepts any payload bytes and writes `null` for
                // non-JSON; this bus refuses to build such an envelope.
                assert!(accepted);
                assert!(Envelope::new("a", "T", 1, &())
                    .unwrap()
                    .with_raw_payload(input)
                    .is_err());
            }
            continue;
        };
        match env.validate() {
            Ok(()) => assert!(accepted, "{field} {input}: accepted, jxt-core rejects"),
            Err(e) => {
                assert!(
                    !accepted,
                    "{field} {input}: rejected ({e}), jxt-core accepts"
                );
                assert_eq!(
                    e.to_string(),
                    format!(
                        "invalid message: invalid envelope: {}",
                        row["error"].as_str().unwrap()
                    ),
                    "{field} {input}"
                );
            }
        }
    }
}

#[test]
fn decoding_matches_jxt_core_case_by_case() {
    let Some(dir) = interop_support::fixtures() else {
        return;
    };
    let cases = interop_support::json(&dir, "envelope/decode.json");
    for case in cases.as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let input = case["input"].as_str().unwrap();
        let result = Envelope::from_slice(input.as_bytes());
        if name == "tenant_id_string" {
            // Deliberately wider than jxt-core v1.7.5: older producers wrote
            // the tenant as a string. It reads as the number, and is written
            // back as one, which current jxt-core reads.
            let env = result.unwrap();
            assert_eq!(env.tenant_id, Some(42));
            assert!(String::from_utf8(env.to_bytes().unwrap())
                .unwrap()
                .contains(r#""tenant_id":42,"#));
            continue;
        }
        if case["accepted"].as_bool().unwrap() {
            let env = result.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                String::from_utf8(env.to_bytes().unwrap()).unwrap(),
                case["reencoded"].as_str().unwrap(),
                "{name}"
            );
        } else {
            let err = result
                .err()
                .unwrap_or_else(|| panic!("{name}: accepted"))
                .to_string();
            let go = case["error"].as_str().unwrap();
            if go.starts_with("invalid envelope: ") {
                assert_eq!(err, format!("invalid message: {go}"), "{name}");
            } else {
                // json-iterator's parse errors have their own wording; the
                // class of error is what must match.
                assert!(go.starts_with("failed to unmarshal envelope: "), "{go}");
                assert!(
                    err.starts_with("invalid message: failed to unmarshal envelope: "),
                    "{name}: {err}"
                );
            }
        }
    }
}

#[test]
fn published_message_has_jxt_core_key_headers_and_value() {
    let Some(dir) = interop_support::fixtures() else {
        return;
    };
    let dump = interop_support::json(&dir, "kafka/records-envelope.json");
    let records = dump["records"].as_array().unwrap();
    assert_eq!(records.len(), 7);
    for r in records {
        let value = r["value"]["text"].as_str().unwrap();
        let env = Envelope::from_slice(value.as_bytes()).unwrap();
        let msg: Message = env.to_message().unwrap();
        assert_eq!(msg.payload(), value.as_bytes(), "{}", r["note"]);
        let key = interop_support::dumped_bytes(&r["key"]);
        assert_eq!(msg.key.map(|k| k.to_vec()), key, "{}", r["note"]);
        let theirs: Vec<(String, Vec<u8>)> = r["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h["name"].as_str().unwrap().to_string(),
                    interop_support::dumped_bytes(&h["value"]).unwrap(),
                )
            })
            .collect();
        let ours: Vec<(String, Vec<u8>)> = msg
            .headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.unwrap().to_vec()))
            .collect();
        assert_eq!(ours, theirs, "{}", r["note"]);
        assert_eq!(msg.id, env.event_id);
        // A consumer that only had the headers sees the same event.
        let mut bare = Message::new("not an envelope").with_key(env.aggregate_id.clone());
        bare.headers = msg.headers.clone();
        let mut info = EventInfo::from(&env);
        info.event_version = Some(env.event_version);
        assert_eq!(EventInfo::of(&bare), info, "{}", r["note"]);
    }
    // jxt-core refuses an invalid aggregate id at publish with this text.
    let bad = Envelope::new("order 1", "T", 1, &()).unwrap();
    assert_eq!(
        bad.to_message().unwrap_err().to_string(),
        format!(
            "invalid message: {}",
            dump["invalid_envelope_error"].as_str().unwrap()
        )
    );
}

/// A bus configured for consumers on older jxt-core envelopes writes the
/// tenant as a string; the configuration file says so by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_writes_the_tenant_as_configured() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bus.yaml");
    std::fs::write(&path, "envelope:\n  tenant_id: string\n").unwrap();
    let config = jxt_eventbus::BusConfig::load(Some(&path)).unwrap();
    assert_eq!(
        config.envelope.tenant_id,
        jxt_eventbus::TenantIdEncoding::String
    );
    let bus = jxt_eventbus::EventBus::from_config(config).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    bus.subscribe(
        "tenants",
        move |d: jxt_eventbus::Delivery| {
            let tx = tx.clone();
            async move {
                tx.send(d.payload().clone()).unwrap();
                Ok(())
            }
        },
        jxt_eventbus::SubscribeOptions::new(),
    )
    .await
    .unwrap();
    let env = Envelope::new("order-1", "OrderCreated", 1, &serde_json::json!({}))
        .unwrap()
        .with_tenant_id(42);
    bus.publish_envelope("tenants", &env).await.unwrap();
    let body = rx.recv().await.unwrap();
    let text = std::str::from_utf8(&body).unwrap();
    assert!(text.contains(r#""tenant_id":"42""#), "{text}");
    assert_eq!(Envelope::from_slice(&body).unwrap().tenant_id, Some(42));
    bus.shutdown().await.unwrap();
}
