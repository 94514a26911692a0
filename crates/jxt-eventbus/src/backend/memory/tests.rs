//! The memory broker has no broker-wide lock on the record path: with one
//! partition's lock held, publishes to other partitions and topics, and a
//! consumer's fetch, store, pause and resume elsewhere, all go on.

use std::time::Duration;

use tokio::sync::mpsc;

use super::MemoryBroker;
use crate::backend::{Backend, ConsumerEvent, TopicPartition};
use crate::config::{MemoryConfig, StartFrom};
use crate::message::Message;

/// A key of `topic` that lands on `partition`.
fn key_on(broker: &MemoryBroker, topic: &str, partition: i32) -> String {
    let log = broker.inner.existing_topic(topic).unwrap();
    (0..)
        .map(|i| format!("k{i}"))
        .find(|k| log.partition_for(Some(k.as_bytes())) == partition as usize)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_partition_stops_nothing_else() {
    let broker = MemoryBroker::new(MemoryConfig::default());
    broker.create_topic("held", 2);
    broker.create_topic("other", 2);
    let backend = broker.backend(StartFrom::Earliest);
    let (events, mut inbox) = mpsc::channel(16);
    let consumer = backend.consumer("g", events).await.unwrap();
    consumer.subscribe(&["other".to_string()]).await.unwrap();
    let assigned = inbox.recv().await.unwrap();
    assert!(matches!(assigned, ConsumerEvent::Assigned(ref tps) if tps.len() == 2));
    let producer = backend.producer();
    let key = key_on(&broker, "held", 1);

    // Another thread holds partition 0 of `held` (as a publish, fetch or
    // store of it does, briefly) until told to let go.
    let log = broker.inner.existing_topic("held").unwrap();
    let (locked_tx, locked) = std::sync::mpsc::channel();
    let (let_go, let_go_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let _guard = log.partitions[0].lock();
        locked_tx.send(()).unwrap();
        let _ = let_go_rx.recv();
    });
    locked.recv().unwrap();

    let work = tokio::spawn(async move {
        let to_other_partition = producer
            .send("held", Message::new("a").with_key(key))
            .await
            .unwrap();
        assert_eq!(to_other_partition.partition, 1);
        let receipt = producer.send("other", Message::new("b")).await.unwrap();
        let records = match inbox.recv().await {
            Some(ConsumerEvent::Records(r)) => r,
            other => panic!("expected records, got {other:?}"),
        };
        assert_eq!(records.len(), 1);
        let tp = TopicPartition::new("other", receipt.partition);
        consumer.store(&tp, receipt.offset + 1);
        consumer.pause(std::slice::from_ref(&tp));
        consumer.resume(std::slice::from_ref(&tp));
        consumer.lag().await.unwrap()
    });
    let done = tokio::time::timeout(Duration::from_secs(10), work).await;
    let_go.send(()).unwrap();
    holder.join().unwrap();
    let lag = done
        .expect("publish, fetch, store, pause and lag waited for another partition's lock")
        .unwrap();
    assert!(lag.iter().all(|l| l.lag() == 0), "{lag:?}");
}
