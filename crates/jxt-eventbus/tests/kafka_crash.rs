//! Out-of-order completion and a crash on Kafka: slow and fast keys share
//! partitions, the bus is dropped without shutdown mid-stream, and a new bus
//! in the same group handles every record the first had not finished.
#![cfg(feature = "kafka")]

mod kafka_support;
mod support;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jxt_eventbus::{Delivery, SubscribeOptions};
use kafka_support::{bus, committed, create_topic};
use support::handled::{parse, record, Log};
use support::wait_for;

const WAIT: Duration = Duration::from_secs(90);
const PARTITIONS: i32 = 2;

/// (partition, offset) → (key, seq) of every record a handler started.
type Started = Arc<Mutex<BTreeMap<(i32, i64), (String, u64)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_redelivers_every_unfinished_record() {
    let Some(brokers) = support::kafka_brokers() else {
        return;
    };
    let topic = support::unique_name("crash");
    create_topic(&brokers, &topic, PARTITIONS).await;
    let group = support::unique_name("g-crash");

    let a = bus(&brokers, &group).await;
    // (partition, offset) of records whose handler on `a` returned.
    let finished: Arc<Mutex<HashSet<(i32, i64)>>> = Arc::default();
    let killed = Arc::new(AtomicBool::new(false));
    let all: Started = Arc::default();
    let (f, k, al) = (finished.clone(), killed.clone(), all.clone());
    a.subscribe(
        &topic,
        move |d: Delivery| {
            let (f, k, al) = (f.clone(), k.clone(), al.clone());
            async move {
                al.lock()
                    .unwrap()
                    .insert((d.partition(), d.offset()), parse(&d));
                // Key k0 is slow: later records of other keys finish first.
                let slow = d.key_str() == Some("k0");
                tokio::time::sleep(Duration::from_millis(if slow { 150 } else { 2 })).await;
                if k.load(Ordering::SeqCst) {
                    // The process is dead: this work never completes.
                    std::future::pending::<()>().await;
                }
                f.lock().unwrap().insert((d.partition(), d.offset()));
                Ok(())
            }
        },
        SubscribeOptions::new(),
    )
    .await
    .expect("subscribe");

    let mut sent = HashSet::new();
    for seq in 0..60u64 {
        for k in 0..8 {
            let key = format!("k{k}");
            a.publish(&topic, record(&key, seq)).await.expect("publish");
            sent.insert((key, seq));
        }
    }
    // Mid-stream: the fast keys are done, the slow one is far behind.
    wait_for("fast keys handled", WAIT, || {
        finished.lock().unwrap().len() >= 300
    })
    .await;
    killed.store(true, Ordering::SeqCst);
    drop(a);
    let finished: HashSet<(i32, i64)> = finished.lock().unwrap().clone();
    // The dropped bus's consumer thread releases its partitions and leaves.
    wait_for("the crashed member to leave", WAIT, || {
        kafka_support::group_members(&brokers, &group) == 0
    })
    .await;
    // What `a` committed never passes a record it had not finished, although
    // records after it had finished (out of order).
    let committed = committed(&brokers, &group, &topic, PARTITIONS);

    let b = bus(&brokers, &group).await;
    let log = Log::default();
    let l = log.clone();
    b.subscribe(
        &topic,
        move |d: Delivery| {
            l.push(&d, "b");
            async { Ok(()) }
        },
        SubscribeOptions::new(),
    )
    .await
    .expect("subscribe b");

    let mut out_of_order = 0;
    for p in 0..PARTITIONS {
        let seen: Vec<i64> = all
            .lock()
            .unwrap()
            .keys()
            .filter(|(pp, _)| *pp == p)
            .map(|(_, o)| *o)
            .collect();
        let lowest_unfinished = seen.iter().copied().find(|o| !finished.contains(&(p, *o)));
        if let (Some(c), Some(u)) = (committed[p as usize], lowest_unfinished) {
            assert!(
                c <= u,
                "partition {p}: committed {c} passes unfinished offset {u}"
            );
            out_of_order += seen
                .iter()
                .filter(|o| **o > u && finished.contains(&(p, **o)))
                .count();
        }
    }
    assert!(
        out_of_order > 0,
        "the slow key held records that later ones overtook (test setup)"
    );

    wait_for("every record handled at least once", WAIT, || {
        let by_b: HashSet<(String, u64)> = log.all().into_iter().map(|s| (s.key, s.seq)).collect();
        let by_a: HashSet<(String, u64)> = all
            .lock()
            .unwrap()
            .iter()
            .filter(|(po, _)| finished.contains(po))
            .map(|(_, ks)| ks.clone())
            .collect();
        by_a.union(&by_b).count() == sent.len()
    })
    .await;
    // Every record `a` had not finished was handled by `b`.
    let by_b: HashSet<(i32, i64)> = log.all().iter().map(|s| (s.partition, s.offset)).collect();
    for (po, ks) in all.lock().unwrap().iter() {
        if !finished.contains(po) {
            assert!(
                by_b.contains(po),
                "unfinished {ks:?} at {po:?} not redelivered"
            );
        }
    }
    kafka_support::assert_key_order(&log.all(), false);
    b.shutdown().await.expect("shutdown");
}
