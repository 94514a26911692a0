//! Batch handlers (`subscribe_batch`): batches are formed from key lanes,
//! per-key order holds, failures are settled per record (a retried record
//! takes the later records of its key with it, a permanent failure is
//! dead-lettered alone), and commits reach the end only when every record
//! finished. On memory, and on real Kafka.

#[cfg(feature = "kafka")]
mod kafka_support;
mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jxt_eventbus::config::{MemoryConfig, RetryConfig};
use jxt_eventbus::dispatch::worker::dlq_headers;
use jxt_eventbus::middleware::RateLimit;
use jxt_eventbus::{
    BatchError, BatchOptions, BatchResult, Delivery, Error, EventBus, HandlerError, MemoryBroker,
    Message, SubscribeOptions,
};

/// What the handler saw: each call's records as (key, seq, attempt).
type Calls = Arc<Mutex<Vec<Vec<(String, u32, u32)>>>>;

fn seen(batch: &[Delivery]) -> Vec<(String, u32, u32)> {
    batch
        .iter()
        .map(|d| {
            let seq = std::str::from_utf8(d.payload()).unwrap().parse().unwrap();
            (d.key_str().unwrap().to_string(), seq, d.attempt())
        })
        .collect()
}

async fn memory_bus(partitions: u32) -> (MemoryBroker, EventBus) {
    let broker = MemoryBroker::new(MemoryConfig {
        partitions,
        ..MemoryConfig::default()
    });
    let bus = EventBus::builder()
        .memory_broker(broker.clone())
        .retry(RetryConfig {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            jitter: false,
            ..RetryConfig::default()
        })
        .build()
        .await
        .unwrap();
    (broker, bus)
}

/// Publishes `per_key` records to each of `keys` keys, payload = sequence.
async fn publish(bus: &EventBus, topic: &str, keys: usize, per_key: u32) {
    let mut messages = Vec::new();
    for seq in 0..per_key {
        for k in 0..keys {
            messages.push(Message::new(seq.to_string()).with_key(format!("k{k}")));
        }
    }
    bus.publish_batch(topic, messages).await.unwrap();
}

/// Per key, the sequences in the order the handler first succeeded with
/// them is checked by the caller; this gives every call flattened.
fn flat(calls: &Calls) -> Vec<(String, u32, u32)> {
    calls.lock().unwrap().iter().flatten().cloned().collect()
}

/// Subscribes `topic` with a batch handler that records each call's records
/// and answers what `answer` says of them.
async fn subscribe_recording(
    bus: &EventBus,
    topic: &str,
    options: BatchOptions,
    answer: impl Fn(&[(String, u32, u32)]) -> BatchResult + Send + Sync + 'static,
) -> Calls {
    let calls: Calls = Arc::default();
    let c = calls.clone();
    bus.subscribe_batch(
        topic,
        move |batch: Vec<Delivery>| {
            let records = seen(&batch);
            let result = answer(&records);
            c.lock().unwrap().push(records);
            async move { result }
        },
        options,
        SubscribeOptions::new(),
    )
    .await
    .unwrap();
    calls
}

fn assert_each_key_in_order(records: &[(String, u32, u32)], keys: usize, per_key: u32) {
    let mut by_key: HashMap<&str, Vec<u32>> = HashMap::new();
    for (k, seq, _) in records {
        by_key.entry(k).or_default().push(*seq);
    }
    assert_eq!(by_key.len(), keys);
    for (k, seqs) in by_key {
        assert_eq!(seqs, (0..per_key).collect::<Vec<_>>(), "key {k}");
    }
}

#[tokio::test]
async fn batches_hold_many_keys_in_order_and_commit_to_the_end() {
    let (broker, bus) = memory_bus(3).await;
    // Published before subscribing: the first batches are full.
    publish(&bus, "orders", 20, 50).await;
    let options = BatchOptions::new(64).linger(Duration::from_millis(5));
    let calls = subscribe_recording(&bus, "orders", options, |_| Ok(())).await;
    bus.idle().await.unwrap();

    let records = flat(&calls);
    assert_eq!(records.len(), 1000, "each record handled once");
    assert_each_key_in_order(&records, 20, 50);
    let sizes: Vec<usize> = calls.lock().unwrap().iter().map(Vec::len).collect();
    assert!(
        sizes.iter().all(|&n| n <= 64),
        "a batch over max_records: {sizes:?}"
    );
    assert!(
        sizes.contains(&64),
        "no full batch from a waiting backlog: {sizes:?}"
    );
    assert!(
        calls.lock().unwrap().iter().any(|b| {
            let keys: std::collections::HashSet<_> = b.iter().map(|r| &r.0).collect();
            keys.len() > 1
        }),
        "batches hold many keys"
    );
    assert_eq!(
        broker.committed("jxt-eventbus", "orders"),
        broker
            .end_offsets("orders")
            .into_iter()
            .map(Some)
            .collect::<Vec<_>>()
    );
    bus.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_retried_record_takes_the_later_records_of_its_key_and_no_other() {
    let (broker, bus) = memory_bus(1).await;
    publish(&bus, "orders", 4, 5).await;
    let options = BatchOptions::new(100).linger(Duration::from_millis(5));
    let calls = subscribe_recording(&bus, "orders", options, |records| {
        // k1's record 2 fails once, as a deadlock would.
        let failed = records
            .iter()
            .position(|(k, seq, attempt)| k == "k1" && *seq == 2 && *attempt == 1);
        match failed {
            Some(i) => Err(BatchError::records([(
                i,
                HandlerError::retryable("deadlock detected"),
            )])),
            None => Ok(()),
        }
    })
    .await;
    bus.idle().await.unwrap();

    let calls = calls.lock().unwrap().clone();
    let retried: Vec<_> = calls
        .iter()
        .flatten()
        .filter(|(_, _, attempt)| *attempt > 1)
        .cloned()
        .collect();
    assert_eq!(
        retried,
        vec![
            ("k1".into(), 2, 2),
            ("k1".into(), 3, 2),
            ("k1".into(), 4, 2)
        ],
        "only k1 from its failed record on goes round again, in order"
    );
    // Succeeded once each: every record of the other keys, and k1's first two.
    let mut handled: Vec<(String, u32)> = calls
        .iter()
        .flatten()
        .filter(|(k, seq, attempt)| !(k == "k1" && *seq >= 2 && *attempt == 1))
        .map(|(k, seq, _)| (k.clone(), *seq))
        .collect();
    handled.sort();
    let mut expected: Vec<(String, u32)> = (0..4)
        .flat_map(|k| (0..5).map(move |s| (format!("k{k}"), s)))
        .collect();
    expected.sort();
    assert_eq!(handled, expected);
    assert!(broker.retained("orders.dlq").is_empty());
    assert_eq!(broker.committed("jxt-eventbus", "orders"), [Some(20)]);
    bus.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_record_failing_for_good_is_dead_lettered_alone_and_its_key_goes_on() {
    let (broker, bus) = memory_bus(1).await;
    publish(&bus, "orders", 3, 4).await;
    let options = BatchOptions::new(100).linger(Duration::from_millis(5));
    let calls = subscribe_recording(&bus, "orders", options, |records| {
        let mut err = None;
        for (i, (k, seq, _)) in records.iter().enumerate() {
            if k == "k2" && *seq == 1 {
                err.get_or_insert_with(|| BatchError::records([]))
                    .record(i, HandlerError::permanent("row violates a constraint"));
            }
        }
        err.map_or(Ok(()), Err)
    })
    .await;
    bus.idle().await.unwrap();

    let dlq = broker.retained("orders.dlq");
    assert_eq!(dlq.len(), 1, "exactly the failed record is dead-lettered");
    let letter = &dlq[0].2;
    assert_eq!(letter.payload().as_ref(), b"1");
    assert_eq!(letter.key.as_deref(), Some(&b"k2"[..]));
    assert_eq!(
        letter.headers.get_str(dlq_headers::ERROR).unwrap(),
        "row violates a constraint"
    );
    assert_eq!(
        letter.headers.get_str(dlq_headers::ERROR_KIND).unwrap(),
        "permanent"
    );
    let records = flat(&calls);
    assert_eq!(records.len(), 12, "nothing handled twice");
    assert_each_key_in_order(&records, 3, 4);
    assert_eq!(broker.committed("jxt-eventbus", "orders"), [Some(12)]);
    bus.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_batch_refused_as_a_whole_is_retried_then_dead_lettered_record_by_record() {
    let (broker, bus) = memory_bus(1).await;
    publish(&bus, "orders", 2, 2).await;
    let options = BatchOptions::new(100).linger(Duration::from_millis(5));
    let calls = subscribe_recording(&bus, "orders", options, |_| {
        Err(HandlerError::retryable("database unavailable").into())
    })
    .await;
    bus.idle().await.unwrap();

    let calls = calls.lock().unwrap().clone();
    let attempts: Vec<u32> = calls.iter().map(|b| b[0].2).collect();
    assert_eq!(
        attempts,
        [1, 2, 3],
        "max_attempts 3, the whole batch each time"
    );
    assert!(calls.iter().all(|b| b.len() == 4));
    let dlq = broker.retained("orders.dlq");
    assert_eq!(dlq.len(), 4);
    assert!(dlq.iter().all(|(_, _, m)| {
        m.headers.get_str(dlq_headers::ATTEMPTS) == Some("3")
            && m.headers.get_str(dlq_headers::ERROR_KIND) == Some("retryable")
    }));
    assert_eq!(broker.committed("jxt-eventbus", "orders"), [Some(4)]);
    bus.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_panicking_batch_handler_dead_letters_its_records_as_panics() {
    let (broker, bus) = memory_bus(1).await;
    publish(&bus, "orders", 2, 1).await;
    bus.subscribe_batch(
        "orders",
        |_batch: Vec<Delivery>| async { panic!("bug in the sink") },
        BatchOptions::new(10),
        SubscribeOptions::new(),
    )
    .await
    .unwrap();
    bus.idle().await.unwrap();
    let dlq = broker.retained("orders.dlq");
    assert_eq!(dlq.len(), 2);
    assert!(dlq
        .iter()
        .all(|(_, _, m)| m.headers.get_str(dlq_headers::ERROR_KIND) == Some("panic")));
    bus.shutdown().await.unwrap();
}

#[tokio::test]
async fn options_that_count_single_records_are_refused() {
    let (_broker, bus) = memory_bus(1).await;
    let handler = |_batch: Vec<Delivery>| async { Ok(()) };
    let err = bus
        .subscribe_batch(
            "orders",
            handler,
            BatchOptions::default(),
            SubscribeOptions::new().rate_limit(RateLimit::per_second(10)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Subscribe { reason, .. } if reason.contains("rate_limit")),
        "{err}"
    );
}

#[cfg(feature = "kafka")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_kafka_batches_keep_key_order_and_commit_every_partition_to_its_end() {
    let Some(brokers) = support::kafka_brokers() else {
        return;
    };
    let topic = support::unique_name("batch");
    let group = support::unique_name("batch-group");
    kafka_support::create_topic(&brokers, &topic, 3).await;
    let bus = kafka_support::bus(&brokers, &group).await;
    let (keys, per_key) = (50, 40);
    publish(&bus, &topic, keys, per_key).await;
    let options = BatchOptions::new(200).linger(Duration::from_millis(20));
    let calls = subscribe_recording(&bus, &topic, options, |_| Ok(())).await;
    let total = keys * per_key as usize;
    support::eventually("every record handled", 60, || flat(&calls).len() >= total).await;
    bus.shutdown().await.unwrap();

    let records = flat(&calls);
    assert_eq!(records.len(), total, "each record handled once");
    assert_each_key_in_order(&records, keys, per_key);
    assert!(calls.lock().unwrap().iter().any(|b| b.len() > 1));
    let committed: i64 = kafka_support::committed(&brokers, &group, &topic, 3)
        .into_iter()
        .map(|c| c.expect("every partition committed"))
        .sum();
    assert_eq!(
        committed, total as i64,
        "committed to the end after shutdown"
    );
}

#[tokio::test]
async fn shutdown_lets_a_running_batch_finish_and_commits_it() {
    let (broker, bus) = memory_bus(1).await;
    publish(&bus, "orders", 5, 2).await;
    let started = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let calls: Calls = Arc::default();
    let (s, r, c) = (started.clone(), release.clone(), calls.clone());
    bus.subscribe_batch(
        "orders",
        move |batch: Vec<Delivery>| {
            let (s, r, c) = (s.clone(), r.clone(), c.clone());
            async move {
                s.notify_one();
                // Held until the shutdown is under way.
                r.acquire().await.unwrap().forget();
                c.lock().unwrap().push(seen(&batch));
                Ok(())
            }
        },
        BatchOptions::new(4).max_in_flight(1),
        SubscribeOptions::new(),
    )
    .await
    .unwrap();
    started.notified().await;
    let stopping = tokio::spawn({
        let bus = bus.clone();
        async move { bus.shutdown().await }
    });
    support::eventually("the shutdown began", 10, || bus.is_closed()).await;
    release.add_permits(100);
    stopping.await.unwrap().unwrap();

    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1, "no batch starts once the shutdown began");
    assert_eq!(calls[0].len(), 4);
    // One partition, published seq by seq over the keys: (k, seq) is at
    // offset seq * 5 + k. The batch took whole lanes (both records of a key
    // when they were queued): the commit stops at the first record left.
    let handled: Vec<i64> = calls[0]
        .iter()
        .map(|(k, seq, _)| i64::from(*seq) * 5 + k[1..].parse::<i64>().unwrap())
        .collect();
    let first_left = (0..).find(|o| !handled.contains(o)).unwrap();
    assert!(first_left < 10);
    assert_eq!(
        broker.committed("jxt-eventbus", "orders"),
        [Some(first_left)],
        "the finished batch is committed, the buffered records are left"
    );
    assert!(
        broker.retained("orders.dlq").is_empty(),
        "nothing dead-lettered"
    );
}
