//! Tail on Kafka: an assign-only consumer in a throwaway group, never
//! committing, polled on a thread of its own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{anyhow, bail, Result};
use rdkafka::consumer::Consumer as _;
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};

use super::{From, Reader, Tailed};
use crate::kafka_client;

pub(super) async fn read(reader: Reader<'_>) -> Result<()> {
    let (consumer, context) = kafka_client::consumer(reader.config, "tail")?;
    let consumer = Arc::new(consumer);
    let metadata = kafka_client::metadata(
        consumer.clone(),
        &context,
        reader.config,
        None,
        reader.timeout,
    )
    .await?;
    let mut tpl = TopicPartitionList::new();
    for topic in reader.topics {
        let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
            bail!(
                "topic `{topic}` does not exist on {}",
                reader.config.kafka.brokers.join(",")
            );
        };
        for p in t.partitions() {
            let offset = match reader.from {
                From::Earliest => Offset::Beginning,
                From::Latest => Offset::End,
                From::Offset(o) => Offset::Offset(o),
                From::Since(t) => Offset::Offset(
                    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as i64,
                ),
            };
            tpl.add_partition_offset(topic, p.id(), offset)?;
        }
    }
    let start = if let From::Since(_) = reader.from {
        // Timestamps become the first offset at or after them.
        let c = consumer.clone();
        let timeout = reader.timeout;
        let query = tpl.clone();
        tokio::task::spawn_blocking(move || c.offsets_for_times(query, timeout))
            .await?
            .map_err(|e| anyhow!("cannot find offsets by time: {e}"))?
    } else {
        tpl
    };
    consumer.assign(&start)?;
    let stop = Arc::new(AtomicBool::new(false));
    let records = reader.records;
    let polling = {
        let stop = stop.clone();
        let consumer = consumer.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            let mut names: HashMap<String, ()> = HashMap::new();
            while !stop.load(Ordering::Relaxed) {
                let Some(polled) = consumer.poll(Duration::from_millis(100)) else {
                    continue;
                };
                let m = polled.map_err(|e| anyhow!("reading from Kafka failed: {e}"))?;
                names.entry(m.topic().to_string()).or_default();
                let record = Tailed {
                    topic: m.topic().to_string(),
                    partition: m.partition(),
                    offset: m.offset(),
                    message: jxt_eventbus::backend::kafka::inspect::message(&m),
                };
                if records.blocking_send(record).is_err() {
                    break;
                }
            }
            Ok(())
        })
    };
    let _stop_on_drop = StopOnDrop(stop);
    polling.await?
}

/// Stops the poll thread when tail stops taking records.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}
