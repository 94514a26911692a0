//! Keys, payloads and header values are bytes, carried unchanged from the
//! publisher to the handler, into the dead-letter topic and back by a
//! replay: binary keys (a schema-registry framed key starts with 0x00), the
//! empty key apart from no key, a null payload (tombstone) apart from an
//! empty one, null header values where the backend has them. A replayed
//! keyed record lands on the partition it first came from.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use jxt_eventbus::{
    DeadLetterFilter, Delivery, HandlerError, ListOptions, Message, ReplayOptions,
    SubscribeOptions, REPLAYED_HEADER,
};

use super::{no_tweak, Harness, WAIT};
use crate::support::wait_for;

/// A header whose value is not UTF-8 (text on NATS, whose headers are text).
const BINARY_HEADER: &str = "x-binary";
/// A header without a value (not on NATS).
const NULL_HEADER: &str = "x-null";

/// What a handler saw of one record.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    partition: i32,
    binary_header: Option<Vec<u8>>,
    null_header: bool,
    replayed: bool,
}

impl Seen {
    fn of(d: &Delivery) -> Self {
        let m = d.message();
        Seen {
            key: m.key.as_ref().map(|k| k.to_vec()),
            payload: m.payload.as_ref().map(|p| p.to_vec()),
            partition: d.partition(),
            binary_header: m.headers.get(BINARY_HEADER).map(|v| v.to_vec()),
            null_header: m.headers.contains(NULL_HEADER) && m.headers.get(NULL_HEADER).is_none(),
            replayed: m.headers.get_str(REPLAYED_HEADER).is_some(),
        }
    }
}

/// The keys under test: random bytes, a framed key, the edge cases of text
/// headers, the empty key and no key.
fn keys() -> Vec<Option<Vec<u8>>> {
    let mut keys: Vec<Option<Vec<u8>>> = vec![
        Some(vec![0x00, 0x00, 0x00, 0x00, 0x07, 0x02, 0x48, 0xff]),
        Some(vec![0xff, 0xfe, 0x00]),
        Some(b"  padded  ".to_vec()),
        Some(b"line\r\nbreak".to_vec()),
        Some("z\u{fc}rich".as_bytes().to_vec()),
        Some(Vec::new()),
        None,
    ];
    keys.extend((0..16).map(|_| Some(uuid::Uuid::new_v4().as_bytes().to_vec())));
    keys
}

pub async fn keys_payloads_and_headers_are_bytes_end_to_end(h: &dyn Harness) {
    let topic = h.unique("bytes");
    h.create_topic(&topic, 3).await;
    let bus = h.bus(&h.unique("g"), &no_tweak).await;
    let broken = Arc::new(AtomicBool::new(true));
    let seen: Arc<Mutex<BTreeMap<String, Vec<Seen>>>> = Arc::default();
    let (s, b) = (seen.clone(), broken.clone());
    bus.subscribe(
        &topic,
        move |d: Delivery| {
            s.lock()
                .unwrap()
                .entry(d.message().id.clone())
                .or_default()
                .push(Seen::of(&d));
            // Every record fails once, while broken: all of them go
            // through the dead-letter topic and a replay.
            let fail = b.load(Ordering::SeqCst);
            async move {
                if fail {
                    Err(HandlerError::permanent("poison"))
                } else {
                    Ok(())
                }
            }
        },
        SubscribeOptions::new(),
    )
    .await
    .unwrap();

    let binary_value = if h.header_values_are_bytes() {
        Bytes::from_static(&[0xf0, 0x28, 0x8c, 0x00])
    } else {
        Bytes::from_static("caf\u{e9}".as_bytes())
    };
    let mut sent = BTreeMap::new();
    for (i, key) in keys().into_iter().enumerate() {
        let mut m = if i % 4 == 1 {
            Message::tombstone()
        } else if i % 4 == 2 {
            Message::new(Bytes::new())
        } else {
            Message::new(format!("payload-{i}"))
        };
        m.key = key.map(Bytes::from);
        m.headers.insert(BINARY_HEADER, binary_value.clone());
        if h.header_values_are_bytes() {
            m.headers.insert_null(NULL_HEADER);
        }
        let receipt = bus.publish(&topic, m.clone()).await.expect("publish");
        sent.insert(m.id.clone(), (m, receipt.partition));
    }

    wait_for("every record handled once", WAIT, || {
        seen.lock().unwrap().len() == sent.len()
    })
    .await;
    for (id, (m, partition)) in &sent {
        let first = &seen.lock().unwrap()[id][0];
        let want = Seen {
            key: m.key.as_ref().map(|k| k.to_vec()),
            payload: m.payload.as_ref().map(|p| p.to_vec()),
            partition: *partition,
            binary_header: Some(binary_value.to_vec()),
            null_header: h.header_values_are_bytes(),
            replayed: false,
        };
        assert_eq!(first, &want, "record {id} as handled");
    }

    let mut listed = Vec::new();
    for _ in 0..10 {
        listed = bus
            .list_dead_letters(
                &topic,
                &ListOptions::new()
                    .idle(Duration::from_secs(2))
                    .timeout(WAIT),
            )
            .await
            .expect("list");
        if listed.len() == sent.len() {
            break;
        }
    }
    assert_eq!(listed.len(), sent.len(), "every record was dead-lettered");
    for dead in &listed {
        let m = &dead.message;
        let original = sent
            .values()
            .map(|(o, _)| o)
            .find(|o| o.key == m.key && o.payload == m.payload)
            .unwrap_or_else(|| panic!("dead letter {m:?} matches no record sent"));
        assert_eq!(m.headers.get(BINARY_HEADER), Some(&binary_value));
        assert_eq!(
            m.headers.contains(NULL_HEADER) && m.headers.get(NULL_HEADER).is_none(),
            h.header_values_are_bytes(),
            "null header of {:?}",
            original.key
        );
    }
    // A dead letter can be found by a binary key.
    let framed = keys()[0].clone().unwrap();
    let by_key = bus
        .list_dead_letters(
            &topic,
            &ListOptions::new()
                .filter(DeadLetterFilter::new().key(framed.clone()))
                .idle(Duration::from_secs(2))
                .timeout(WAIT),
        )
        .await
        .expect("list by key");
    assert_eq!(by_key.len(), 1);
    assert_eq!(by_key[0].message.key.as_deref(), Some(&framed[..]));

    broken.store(false, Ordering::SeqCst);
    let report = bus
        .replay_dead_letters(&topic, &ReplayOptions::new().idle(Duration::from_secs(2)))
        .await
        .expect("replay");
    assert_eq!(report.replayed, sent.len(), "{report:?}");
    wait_for("every record handled again from its replay", WAIT, || {
        let seen = seen.lock().unwrap();
        seen.values().flatten().filter(|s| s.replayed).count() == sent.len()
    })
    .await;
    let replayed: Vec<Seen> = seen
        .lock()
        .unwrap()
        .values()
        .flatten()
        .filter(|s| s.replayed)
        .cloned()
        .collect();
    for (m, partition) in sent.values() {
        let again = replayed
            .iter()
            .find(|s| {
                s.key.as_deref() == m.key.as_deref() && s.payload.as_deref() == m.payload.as_deref()
            })
            .unwrap_or_else(|| panic!("no replay of {:?}", m.key));
        assert_eq!(again.binary_header.as_deref(), Some(&binary_value[..]));
        assert_eq!(again.null_header, h.header_values_are_bytes());
        if m.key.is_some() {
            assert_eq!(
                again.partition, *partition,
                "replayed key {:?} on its partition",
                m.key
            );
        }
    }
    bus.shutdown().await.unwrap();
}
