//! Lag of a Kafka group, read with a client that carries the group's id to
//! ask for its committed offsets but never subscribes (so never joins) and
//! never commits.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::{anyhow, Result};
use jxt_eventbus::config::StartFrom;
use rdkafka::consumer::Consumer as _;
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};

use super::{age, Query, Row};
use crate::kafka_client;

pub(super) async fn lag(q: &Query<'_>) -> Result<Vec<Row>> {
    let (consumer, context) = kafka_client::consumer_in(q.config, q.group)?;
    let consumer = Arc::new(consumer);
    let metadata =
        kafka_client::metadata(consumer.clone(), &context, q.config, None, q.timeout).await?;
    let explicit = !q.topics.is_empty();
    let mut tpl = TopicPartitionList::new();
    for t in metadata.topics() {
        let wanted = if explicit {
            q.topics.iter().any(|x| x == t.name())
        } else {
            !t.name().starts_with("__")
        };
        if wanted {
            for p in t.partitions() {
                tpl.add_partition(t.name(), p.id());
            }
        }
    }
    for t in q.topics {
        if !metadata.topics().iter().any(|m| m.name() == t) {
            return Err(anyhow!("topic `{t}` does not exist"));
        }
    }
    if tpl.count() == 0 {
        return Ok(Vec::new());
    }
    let timeout = q.timeout;
    let start_from = q.config.start_from;
    let c = consumer.clone();
    let rows = tokio::task::spawn_blocking(move || -> Result<Vec<Row>> {
        let committed = c
            .committed_offsets(tpl, timeout)
            .map_err(|e| anyhow!("cannot read the group's committed offsets: {e}"))?;
        // Without explicit topics, only those the group has positions on.
        let with_positions: HashSet<String> = committed
            .elements()
            .iter()
            .filter(|e| matches!(e.offset(), Offset::Offset(_)))
            .map(|e| e.topic().to_string())
            .collect();
        let mut rows = Vec::new();
        for e in committed.elements() {
            if !explicit && !with_positions.contains(e.topic()) {
                continue;
            }
            let (low, high) = c
                .fetch_watermarks(e.topic(), e.partition(), timeout)
                .map_err(|err| {
                    anyhow!(
                        "cannot read the log end of {}[{}]: {err}",
                        e.topic(),
                        e.partition()
                    )
                })?;
            let committed = match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            // Never committed: the group would start at `start_from`.
            let from = committed.unwrap_or(match start_from {
                StartFrom::Earliest => low,
                StartFrom::Latest => high,
            });
            rows.push(Row {
                topic: e.topic().to_string(),
                partition: e.partition(),
                consumer: None,
                committed,
                end: high,
                lag: (high - from.max(low)).max(0) as u64,
                pending: None,
                ack_pending: None,
                oldest_age_secs: None,
            });
        }
        rows.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        Ok(rows)
    })
    .await??;
    let mut rows = rows;
    oldest(q, &mut rows).await?;
    Ok(rows)
}

/// Reads the record at each lagging partition's committed offset (with a
/// throwaway consumer) for the age of the oldest uncommitted record.
async fn oldest(q: &Query<'_>, rows: &mut [Row]) -> Result<()> {
    let mut tpl = TopicPartitionList::new();
    for r in rows.iter().filter(|r| r.lag > 0) {
        let at = r.committed.map_or(Offset::Beginning, Offset::Offset);
        tpl.add_partition_offset(&r.topic, r.partition, at)?;
    }
    if tpl.count() == 0 {
        return Ok(());
    }
    let wanted = tpl.count();
    let (reader, _) = kafka_client::consumer(q.config, "lag")?;
    reader.assign(&tpl)?;
    let timeout = q.timeout;
    let times = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + timeout;
        let mut times = BTreeMap::new();
        while times.len() < wanted && Instant::now() < deadline {
            if let Some(Ok(m)) = reader.poll(Duration::from_millis(100)) {
                let key = (m.topic().to_string(), m.partition());
                if let Some(ms) = m.timestamp().to_millis() {
                    times
                        .entry(key)
                        .or_insert(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64));
                }
            }
        }
        times
    })
    .await?;
    for r in rows {
        if let Some(t) = times.get(&(r.topic.clone(), r.partition)) {
            r.oldest_age_secs = Some(age(*t));
        }
    }
    Ok(())
}
