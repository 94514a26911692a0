//! Retries, error classification, timeouts and dead letters on the memory
//! backend (the conformance suite covers the basics on every backend).

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jxt_eventbus::config::MemoryConfig;
use jxt_eventbus::{
    BusConfig, Delivery, ErrorKind, EventBus, HandlerError, MemoryBroker, Message, SubscribeOptions,
};
use support::eventually;

fn config(group: &str) -> BusConfig {
    let mut c = BusConfig {
        group: group.into(),
        ..BusConfig::default()
    };
    c.retry.initial_backoff = Duration::from_millis(2);
    c.retry.max_backoff = Duration::from_millis(20);
    c.retry.jitter = false;
    c
}

async fn bus(broker: &MemoryBroker, config: BusConfig) -> EventBus {
    EventBus::builder()
        .config(config)
        .memory_broker(broker.clone())
        .build()
        .await
        .unwrap()
}

/// (key, sequence, attempt, when).
type Attempt = (String, u64, u32, Instant);

fn seq(d: &Delivery) -> u64 {
    std::str::from_utf8(d.payload()).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_flood_every_bad_record_dead_lettered_once_every_good_one_handled() {
    const N: u64 = 100_000;
    let broker = MemoryBroker::new(MemoryConfig {
        partitions: 4,
        ..MemoryConfig::default()
    });
    let b = bus(&broker, config("flood")).await;
    let good = Arc::new(AtomicUsize::new(0));
    let g = good.clone();
    b.subscribe(
        "payments",
        move |d: Delivery| {
            let bad = seq(&d).is_multiple_of(10);
            if !bad {
                g.fetch_add(1, Ordering::Relaxed);
            }
            async move {
                if bad {
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
    for i in 0..N {
        b.publish(
            "payments",
            Message::new(i.to_string()).with_key(format!("acct-{}", i % 1000)),
        )
        .await
        .unwrap();
    }
    eventually("every good record", 120, || {
        good.load(Ordering::Relaxed) == (N - N / 10) as usize
    })
    .await;
    eventually("dead letters", 60, || {
        broker.end_offsets("payments.dlq").iter().sum::<i64>() == (N / 10) as i64
    })
    .await;
    let dead = broker.retained("payments.dlq");
    let mut seen = HashSet::new();
    for (_, _, m) in &dead {
        let s: u64 = std::str::from_utf8(m.payload()).unwrap().parse().unwrap();
        assert_eq!(s % 10, 0);
        assert!(seen.insert(s), "{s} dead-lettered twice");
        let h = &m.headers;
        assert_eq!(h.get_str("x-dlq-original-topic"), Some("payments"));
        assert_eq!(h.get_str("x-dlq-consumer-group"), Some("flood"));
        assert_eq!(h.get_str("x-dlq-error"), Some("poison"));
        assert_eq!(h.get_str("x-dlq-error-kind"), Some("permanent"));
        assert_eq!(h.get_str("x-dlq-attempts"), Some("1"));
        assert!(h
            .get_str("x-dlq-original-offset")
            .unwrap()
            .parse::<i64>()
            .is_ok());
        assert!(
            h.get_str("x-dlq-first-failure").is_some() && h.get_str("x-dlq-last-failure").is_some()
        );
        assert_eq!(
            m.key_str(),
            Some(format!("acct-{}", s % 1000).as_str()),
            "same key"
        );
    }
    assert_eq!(seen.len() as u64, N / 10);
    // The committed position reaches the end of every partition.
    eventually("committed to the end", 30, || {
        broker
            .committed("flood", "payments")
            .into_iter()
            .map(Option::unwrap_or_default)
            .collect::<Vec<_>>()
            == broker.end_offsets("payments")
    })
    .await;
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_keep_their_key_in_order_and_do_not_hold_other_keys() {
    let broker = MemoryBroker::new(MemoryConfig::default());
    let mut c = config("transient");
    c.retry.initial_backoff = Duration::from_millis(100);
    c.retry.max_backoff = Duration::from_millis(100);
    let b = bus(&broker, c).await;
    let log: Arc<Mutex<Vec<Attempt>>> = Arc::default();
    let l = log.clone();
    b.subscribe(
        "orders",
        move |d: Delivery| {
            let key = d.key_str().unwrap().to_string();
            let s = seq(&d);
            l.lock()
                .unwrap()
                .push((key.clone(), s, d.attempt(), Instant::now()));
            let fail = key == "slow" && d.attempt() <= 2;
            async move {
                if fail {
                    Err(HandlerError::retryable("try again"))
                } else {
                    Ok(())
                }
            }
        },
        SubscribeOptions::new(),
    )
    .await
    .unwrap();
    let start = Instant::now();
    for s in 0..5 {
        for key in ["slow", "fast-a", "fast-b"] {
            b.publish("orders", Message::new(s.to_string()).with_key(key))
                .await
                .unwrap();
        }
    }
    eventually("all handled", 30, || {
        log.lock().unwrap().len() == 5 * 3 + 2 * 5
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let log = log.lock().unwrap().clone();
    let mut by_key: BTreeMap<&str, Vec<(u64, u32)>> = BTreeMap::new();
    for (k, s, a, _) in &log {
        by_key.entry(k).or_default().push((*s, *a));
    }
    // The failing key: each record tried 3 times before the next starts.
    let slow = &by_key["slow"];
    let expected: Vec<(u64, u32)> = (0..5).flat_map(|s| (1..=3).map(move |a| (s, a))).collect();
    assert_eq!(slow, &expected);
    // Other keys finish long before the failing key's retries (2 x 100ms per record) end.
    for key in ["fast-a", "fast-b"] {
        assert_eq!(by_key[key], (0..5).map(|s| (s, 1)).collect::<Vec<_>>());
        let last_fast = log
            .iter()
            .filter(|e| e.0 == key)
            .map(|e| e.3)
            .max()
            .unwrap();
        assert!(
            last_fast - start < Duration::from_millis(500),
            "{key} was held back: {:?}",
            last_fast - start
        );
    }
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_dead_letter_write_keeps_the_record_until_the_topic_is_back() {
    let broker = MemoryBroker::new(MemoryConfig {
        partitions: 1,
        ..MemoryConfig::default()
    });
    broker.set_unavailable("jobs.dlq", true);
    let b = bus(&broker, config("dlq-down")).await;
    let handled = Arc::new(Mutex::new(Vec::new()));
    let h = handled.clone();
    b.subscribe(
        "jobs",
        move |d: Delivery| {
            let s = seq(&d);
            h.lock().unwrap().push(s);
            async move {
                if s == 1 {
                    Err(HandlerError::permanent("bad job"))
                } else {
                    Ok(())
                }
            }
        },
        SubscribeOptions::new(),
    )
    .await
    .unwrap();
    for s in 0..3 {
        b.publish("jobs", Message::new(s.to_string()).with_key("same-key"))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Record 1 holds its lane (record 2, same key, waits) and is not committed.
    assert_eq!(*handled.lock().unwrap(), vec![0, 1]);
    assert_eq!(
        broker.committed("dlq-down", "jobs"),
        vec![Some(1)],
        "position stays at the failed record"
    );
    broker.set_unavailable("jobs.dlq", false);
    eventually("the lane moves on", 10, || {
        handled.lock().unwrap().len() == 3
    })
    .await;
    eventually("committed past it", 10, || {
        broker.committed("dlq-down", "jobs") == vec![Some(3)]
    })
    .await;
    let dead = broker.retained("jobs.dlq");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].2.payload(), "1");
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_retry_and_classifiers_override() {
    let broker = MemoryBroker::new(MemoryConfig::default());
    let mut c = config("layers");
    c.retry.max_attempts = 3;
    let b = bus(&broker, c).await;
    let attempts: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    let a = attempts.clone();
    let stuck_once = Arc::new(AtomicBool::new(true));
    b.subscribe(
        "work",
        move |d: Delivery| {
            let s = seq(&d);
            *a.lock().unwrap().entry(s).or_default() += 1;
            let hang = s == 0 && stuck_once.swap(false, Ordering::SeqCst);
            async move {
                if hang {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                match s {
                    // "permanent" per the handler, retryable per the classifier
                    1 => Err(HandlerError::permanent("connection reset")),
                    _ => Ok(()),
                }
            }
        },
        SubscribeOptions::new()
            .attempt_timeout(Duration::from_millis(100))
            .classify_errors(|e| {
                if e.message().contains("connection reset") {
                    ErrorKind::Retryable
                } else {
                    e.kind()
                }
            }),
    )
    .await
    .unwrap();
    for s in 0..2u64 {
        b.publish(
            "work",
            Message::new(s.to_string()).with_key(format!("k{s}")),
        )
        .await
        .unwrap();
    }
    eventually("record 1 exhausted and dead-lettered", 10, || {
        broker.end_offsets("work.dlq").iter().sum::<i64>() == 1
    })
    .await;
    eventually("record 0 retried after its timeout", 10, || {
        attempts.lock().unwrap().get(&0) == Some(&2)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let attempts = attempts.lock().unwrap().clone();
    assert_eq!(attempts[&0], 2, "timed out once, then succeeded");
    assert_eq!(
        attempts[&1], 3,
        "reclassified as retryable: all attempts used"
    );
    let dead = broker.retained("work.dlq");
    assert_eq!(
        dead[0].2.headers.get_str("x-dlq-error-kind"),
        Some("retryable")
    );
    assert_eq!(dead[0].2.headers.get_str("x-dlq-attempts"), Some("3"));
    b.shutdown().await.unwrap();
}
