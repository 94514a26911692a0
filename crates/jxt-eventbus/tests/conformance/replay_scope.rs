//! Replays are scoped: one group's replay leaves other groups' dead letters
//! alone, a dry run changes nothing, a header cannot pick an unallowed target,
//! and a record replayed too often is refused unless forced.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use jxt_eventbus::{
    DeadLetterFilter, Delivery, EventBus, HandlerError, ListOptions, Message, ReplayOptions,
    SubscribeOptions, REPLAYED_HEADER,
};

use super::{no_tweak, publish_keyed, Harness, WAIT};
use crate::support::handled::parse;
use crate::support::wait_for;

const IDLE: Duration = Duration::from_secs(2);

/// Subscribes `bus` to `topic`: records with `seq % 5 == 0` fail permanently
/// while `broken`; returns the count of records handled carrying a replay
/// count, and the count of records handled.
async fn failing_subscriber(
    bus: &EventBus,
    topic: &str,
    broken: Arc<AtomicBool>,
) -> (Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let replays = Arc::new(AtomicUsize::new(0));
    let handled = Arc::new(AtomicUsize::new(0));
    let (r, h) = (replays.clone(), handled.clone());
    bus.subscribe(
        topic,
        move |d: Delivery| {
            h.fetch_add(1, Ordering::SeqCst);
            if d.headers().get_str(REPLAYED_HEADER).is_some() {
                r.fetch_add(1, Ordering::SeqCst);
            }
            let (_, seq) = parse(&d);
            let fail = seq % 5 == 0 && broken.load(Ordering::SeqCst);
            async move {
                if fail {
                    Err(HandlerError::permanent("not yet"))
                } else {
                    Ok(())
                }
            }
        },
        SubscribeOptions::new(),
    )
    .await
    .unwrap();
    (replays, handled)
}

/// Lists until `n` dead letters are visible (the dead-letter writes of the
/// other group may still be on their way).
async fn list_until(bus: &EventBus, topic: &str, filter: &DeadLetterFilter, n: usize) -> usize {
    let mut got = 0;
    for _ in 0..10 {
        got = bus
            .list_dead_letters(
                topic,
                &ListOptions::new()
                    .filter(filter.clone())
                    .max(10_000)
                    .idle(IDLE)
                    .timeout(WAIT),
            )
            .await
            .expect("list")
            .len();
        if got == n {
            break;
        }
    }
    got
}

pub async fn replay_is_scoped_to_the_group(h: &dyn Harness) {
    let topic = h.unique("scoped");
    h.create_topic(&topic, 2).await;
    let (g1, g2) = (h.unique("g1"), h.unique("g2"));
    let one = h.bus(&g1, &no_tweak).await;
    let two = h.bus(&g2, &no_tweak).await;
    let broken = Arc::new(AtomicBool::new(true));
    let (replays1, handled1) = failing_subscriber(&one, &topic, broken.clone()).await;
    let (replays2, handled2) = failing_subscriber(&two, &topic, broken.clone()).await;
    let sent = publish_keyed(&one, &topic, 4, 10).await;
    let bad: HashSet<_> = sent.iter().filter(|(_, s)| s % 5 == 0).collect();
    wait_for("both groups handled everything", WAIT, || {
        handled1.load(Ordering::SeqCst) == sent.len()
            && handled2.load(Ordering::SeqCst) == sent.len()
    })
    .await;

    let mine = DeadLetterFilter::new();
    assert_eq!(list_until(&one, &topic, &mine, bad.len()).await, bad.len());
    let all = DeadLetterFilter::new().all_groups();
    assert_eq!(
        list_until(&one, &topic, &all, 2 * bad.len()).await,
        2 * bad.len(),
        "every group's dead letters share the topic"
    );
    let theirs = DeadLetterFilter::new().group(g2.clone());
    assert_eq!(
        list_until(&one, &topic, &theirs, bad.len()).await,
        bad.len()
    );
    // The other group reads its dead letters too (the memory backend keeps a
    // record only until every group that reads the topic has passed it).
    assert_eq!(
        list_until(&two, &topic, &DeadLetterFilter::new(), bad.len()).await,
        bad.len()
    );
    let one_key = DeadLetterFilter::new().key("k1");
    assert_eq!(list_until(&one, &topic, &one_key, 2).await, 2);

    let dry = one
        .replay_dead_letters(&topic, &ReplayOptions::new().dry_run(true).idle(IDLE))
        .await
        .expect("dry run");
    assert!(dry.dry_run);
    assert_eq!(dry.replayed, 0);
    assert_eq!(dry.would_replay.len(), bad.len(), "{dry:?}");
    assert_eq!(dry.other_groups, bad.len());
    assert!(dry
        .would_replay
        .iter()
        .all(|d| d.group.as_deref() == Some(g1.as_str())));
    assert_eq!(
        list_until(&one, &topic, &mine, bad.len()).await,
        bad.len(),
        "a dry run acknowledges nothing"
    );

    broken.store(false, Ordering::SeqCst);
    let report = one
        .replay_dead_letters(&topic, &ReplayOptions::new().idle(IDLE).timeout(WAIT))
        .await
        .expect("replay");
    assert_eq!(report.replayed, bad.len(), "{report:?}");
    assert_eq!(report.other_groups, bad.len());
    assert!(report.refused.is_empty(), "{report:?}");
    // Both groups read the topic the records went back to.
    wait_for("replayed records handled", WAIT, || {
        replays1.load(Ordering::SeqCst) == bad.len() && replays2.load(Ordering::SeqCst) == bad.len()
    })
    .await;
    assert_eq!(list_until(&one, &topic, &mine, 0).await, 0);
    assert_eq!(
        list_until(&two, &topic, &DeadLetterFilter::new(), bad.len()).await,
        bad.len(),
        "the other group's dead letters were not replayed"
    );
    assert_eq!(
        replays1.load(Ordering::SeqCst),
        bad.len(),
        "once, not per group"
    );
    one.shutdown().await.unwrap();
    two.shutdown().await.unwrap();
}

/// A dead letter as the bus writes it, of `group`, failed on `original`.
fn dead_letter(group: &str, original: &str, key: &str, replayed: u32) -> Message {
    let mut m = Message::new(format!("{key}:0")).with_key(key);
    m.headers.set("x-dlq-original-topic", original.to_string());
    m.headers.set("x-dlq-consumer-group", group.to_string());
    m.headers.set("x-dlq-error", "boom");
    if replayed > 0 {
        m.headers.set(REPLAYED_HEADER, replayed.to_string());
    }
    m
}

pub async fn replay_refuses_unallowed_targets_and_tired_records(h: &dyn Harness) {
    let topic = h.unique("guarded");
    let elsewhere = h.unique("elsewhere");
    let dlq = format!("{topic}.dlq");
    h.create_topic(&topic, 1).await;
    let group = h.unique("g");
    let bus = h.bus(&group, &no_tweak).await;
    let handled = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = handled.clone();
    bus.subscribe(
        &topic,
        move |d: Delivery| {
            let (key, _) = parse(&d);
            let headers: Vec<String> = d.headers().iter().map(|(n, _)| n.to_string()).collect();
            seen.lock().unwrap().push((key, headers));
            std::future::ready(Ok(()))
        },
        SubscribeOptions::new(),
    )
    .await
    .unwrap();
    // The replayable record first: on backends that acknowledge by position
    // (Kafka, memory) a record left behind holds back the position of the
    // ones after it, which a later replay then reads again.
    bus.publish(&dlq, dead_letter(&group, &topic, "c", 1))
        .await
        .unwrap();
    bus.publish(&dlq, dead_letter(&group, &elsewhere, "a", 0))
        .await
        .unwrap();
    bus.publish(&dlq, dead_letter(&group, &topic, "b", 3))
        .await
        .unwrap();

    let options = ReplayOptions::new().idle(IDLE).timeout(WAIT);
    let report = bus
        .replay_dead_letters(&topic, &options)
        .await
        .expect("replay");
    assert_eq!(report.replayed, 1, "{report:?}");
    // Refusals come in the order the dead-letter topic's partitions were
    // read, not in publish order.
    assert_eq!(report.refused.len(), 2, "{report:?}");
    for why in ["not an allowed replay target", "already replayed 3"] {
        assert!(
            report.refused.iter().any(|r| r.reason.contains(why)),
            "no refusal says {why:?}: {report:?}"
        );
    }
    wait_for("c replayed", WAIT, || !handled.lock().unwrap().is_empty()).await;
    let (key, headers) = handled.lock().unwrap()[0].clone();
    assert_eq!(key, "c");
    let dlq_headers: Vec<&String> = headers.iter().filter(|h| h.starts_with("x-dlq-")).collect();
    assert_eq!(
        dlq_headers,
        [REPLAYED_HEADER, jxt_eventbus::REPLAYED_FROM_ID_HEADER],
        "no stale provenance"
    );

    // Forced, and with the other topic allowed, both go.
    let report = bus
        .replay_dead_letters(&topic, &options.force(true).allow_topic(elsewhere.clone()))
        .await
        .expect("forced replay");
    assert_eq!(report.replayed, 2, "{report:?}");
    wait_for("b replayed", WAIT, || handled.lock().unwrap().len() == 2).await;
    assert_eq!(handled.lock().unwrap()[1].0, "b");
    bus.shutdown().await.unwrap();
}
