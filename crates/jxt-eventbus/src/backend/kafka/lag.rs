//! Lag per assigned partition: the log end (asked from the brokers now)
//! minus the group's committed position (asked from the coordinator now).
//!
//! librdkafka's statistics carry a consumer lag too, but it is computed from
//! the last fetch response and freezes while a partition is paused — exactly
//! when a backlog builds up — so it is not used.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::KafkaResult;
use rdkafka::{Offset, TopicPartitionList};

use super::rebalance::RebalanceContext;
use crate::backend::{PartitionLag, TopicPartition};
use crate::config::StartFrom;

/// Lag of every assigned partition. Blocking: call it off the async runtime.
pub(super) fn assigned_lag(
    consumer: &BaseConsumer<RebalanceContext>,
    start_from: StartFrom,
    timeout: Duration,
) -> KafkaResult<Vec<PartitionLag>> {
    let assignment = consumer.assignment()?;
    if assignment.count() == 0 {
        return Ok(Vec::new());
    }
    let committed = consumer.committed_offsets(assignment.clone(), timeout)?;
    // ListOffsets with the "latest" marker for every partition at once (one
    // request per leader), instead of one watermark query per partition.
    let ends = list_offsets(consumer, &assignment, Offset::End, timeout)?;
    let mut uncommitted = TopicPartitionList::new();
    for e in committed.elements() {
        if !matches!(e.offset(), Offset::Offset(_)) {
            uncommitted.add_partition(e.topic(), e.partition());
        }
    }
    // A partition the group never committed starts where `start_from` says.
    let starts = if uncommitted.count() == 0 {
        HashMap::new()
    } else {
        match start_from {
            StartFrom::Earliest => {
                list_offsets(consumer, &uncommitted, Offset::Beginning, timeout)?
            }
            StartFrom::Latest => ends.clone(),
        }
    };
    let mut out: Vec<PartitionLag> = committed
        .elements()
        .iter()
        .map(|e| {
            let key = (e.topic().to_string(), e.partition());
            let log_end = ends.get(&key).copied().unwrap_or(0);
            let committed = match e.offset() {
                Offset::Offset(o) => o,
                _ => starts.get(&key).copied().unwrap_or(log_end),
            };
            PartitionLag {
                partition: TopicPartition::new(e.topic(), e.partition()),
                log_end,
                committed,
            }
        })
        .collect();
    out.sort_by(|a, b| a.partition.cmp(&b.partition));
    Ok(out)
}

/// Offsets for a logical position (`End` = log end, `Beginning` = log start)
/// of each partition in `tpl`.
fn list_offsets(
    consumer: &BaseConsumer<RebalanceContext>,
    tpl: &TopicPartitionList,
    at: Offset,
    timeout: Duration,
) -> KafkaResult<HashMap<(String, i32), i64>> {
    let mut query = tpl.clone();
    query.set_all_offsets(at)?;
    let answer = consumer.offsets_for_times(query, timeout)?;
    Ok(answer
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some(((e.topic().to_string(), e.partition()), o)),
            _ => None,
        })
        .collect())
}
