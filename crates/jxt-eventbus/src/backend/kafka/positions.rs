//! Where a partition's consumption starts, and positions that are gone.
//!
//! A partition the group never committed starts where `start_from` says; a
//! partition whose committed position is no longer in the log (retention
//! removed it, the topic was recreated) goes where
//! `kafka.consumer.offset_reset` says. librdkafka has one property for both
//! (`auto.offset.reset`), which is set to the reset policy; when
//! `start_from` differs from it, the committed positions are looked up at
//! assignment and the partitions without one get an explicit start.
//!
//! librdkafka reports a reset caused by an error (offset out of range) only
//! as a warning log line of facility `OFFSET`:
//! `[thrd:main]: <topic> [<partition>]: offset reset (at offset 1000 ..., broker 1) to offset BEGINNING ...: <reason>: <error>`.
//! That line is logged again naming the partition, and counted in
//! `eventbus_offset_resets_total{topic, partition}`. Starting a partition
//! the group never committed is not a reset.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::{Offset, TopicPartitionList};

use super::rebalance::RebalanceContext;
use crate::config::{BusConfig, OffsetReset, StartFrom};
use crate::metrics::PartitionLabels;

/// Longest wait for the committed positions at assignment; past it the
/// partitions are assigned as they are (those never committed then start at
/// the reset policy, which is `earliest` unless configured otherwise).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// The consumer's start and reset rules.
pub(super) struct Positions {
    /// Explicit start of partitions the group never committed, when
    /// `start_from` differs from the reset policy.
    uncommitted_start: Option<Offset>,
    resets: Family<PartitionLabels, Counter>,
}

impl std::fmt::Debug for Positions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Positions")
            .field("uncommitted_start", &self.uncommitted_start)
            .finish_non_exhaustive()
    }
}

impl Default for Positions {
    /// librdkafka's rule for both cases, and a counter of its own.
    fn default() -> Self {
        Positions {
            uncommitted_start: None,
            resets: Family::default(),
        }
    }
}

impl Positions {
    pub(super) fn new(config: &BusConfig, resets: Family<PartitionLabels, Counter>) -> Self {
        let uncommitted_start = match (config.start_from, config.kafka.consumer.offset_reset) {
            (StartFrom::Earliest, OffsetReset::Earliest)
            | (StartFrom::Latest, OffsetReset::Latest) => None,
            (StartFrom::Earliest, OffsetReset::Latest) => Some(Offset::Beginning),
            (StartFrom::Latest, OffsetReset::Earliest) => Some(Offset::End),
        };
        Positions {
            uncommitted_start,
            resets,
        }
    }

    /// The group's committed positions and metadata for `tpl`, read at
    /// assignment; `None` (logged) when the coordinator does not answer
    /// within [`LOOKUP_TIMEOUT`]. Runs on the poll thread.
    pub(super) fn committed(
        &self,
        consumer: &BaseConsumer<RebalanceContext>,
        tpl: &TopicPartitionList,
    ) -> Option<TopicPartitionList> {
        if tpl.count() == 0 {
            return None;
        }
        match consumer.committed_offsets(tpl.clone(), LOOKUP_TIMEOUT) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "cannot read the group's committed positions; partitions never committed \
                     start at kafka.consumer.offset_reset instead of start_from, and records \
                     finished by the previous owner are handled again"
                );
                None
            }
        }
    }

    /// Gives the partitions of `tpl` that the group never committed (per
    /// `committed`, from [`Positions::committed`]) their `start_from`
    /// position, before `tpl` is assigned.
    pub(super) fn prepare_assignment(
        &self,
        committed: Option<&TopicPartitionList>,
        tpl: &mut TopicPartitionList,
    ) {
        let (Some(start), Some(committed)) = (self.uncommitted_start, committed) else {
            return;
        };
        for e in committed.elements() {
            if matches!(e.offset(), Offset::Invalid) {
                if let Err(err) = tpl.set_partition_offset(e.topic(), e.partition(), start) {
                    tracing::warn!(topic = e.topic(), partition = e.partition(), error = %err,
                        "cannot set the start of a partition never committed");
                }
            }
        }
    }

    /// When `message` (of facility `fac`) is librdkafka's offset-reset line,
    /// logs and counts it and returns true.
    pub(super) fn observe_log(&self, fac: &str, message: &str) -> bool {
        if fac != "OFFSET" {
            return false;
        }
        let Some((topic, partition)) = parse_reset(message) else {
            return false;
        };
        self.resets
            .get_or_create(&PartitionLabels {
                topic: topic.into(),
                backend: "kafka",
                partition,
            })
            .inc();
        tracing::warn!(
            topic,
            partition,
            detail = message,
            "the group's committed position is not in the log; the partition was reset \
             (kafka.consumer.offset_reset)"
        );
        true
    }
}

/// The topic and partition of an offset-reset log line.
fn parse_reset(message: &str) -> Option<(&str, i32)> {
    let (head, _) = message.split_once("]: offset reset ")?;
    let (before, partition) = head.rsplit_once(" [")?;
    // A thread prefix (`[thrd:main]: `) may come first; topic names have no
    // spaces.
    let topic = before.rsplit(' ').next()?;
    Some((topic, partition.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_lines_name_their_partition() {
        // As librdkafka 2.x writes it (rdkafka_offset.c).
        let line = "orders.v1 [3]: offset reset (at offset 1000 (leader epoch 0), broker 1) \
                    to offset BEGINNING (leader epoch -1): fetch failed due to requested offset \
                    not available on the broker: Broker: Offset out of range";
        assert_eq!(parse_reset(line), Some(("orders.v1", 3)));
        let threaded = format!("[thrd:main]: {line}");
        assert_eq!(parse_reset(&threaded), Some(("orders.v1", 3)));
        assert_eq!(parse_reset("orders [0]: fetch backoff"), None);
        let p = Positions::new(&BusConfig::default(), Family::default());
        assert!(p.observe_log("OFFSET", line));
        assert!(!p.observe_log("FETCH", line));
        let n = p
            .resets
            .get_or_create(&PartitionLabels {
                topic: "orders.v1".into(),
                backend: "kafka",
                partition: 3,
            })
            .get();
        assert_eq!(n, 1);
    }

    #[test]
    fn an_explicit_start_only_where_start_from_differs_from_the_reset_policy() {
        let mut c = BusConfig::default();
        assert!(Positions::new(&c, Family::default())
            .uncommitted_start
            .is_none());
        c.start_from = StartFrom::Latest;
        assert_eq!(
            Positions::new(&c, Family::default()).uncommitted_start,
            Some(Offset::End)
        );
        c.kafka.consumer.offset_reset = OffsetReset::Latest;
        assert!(Positions::new(&c, Family::default())
            .uncommitted_start
            .is_none());
        c.start_from = StartFrom::Earliest;
        assert_eq!(
            Positions::new(&c, Family::default()).uncommitted_start,
            Some(Offset::Beginning)
        );
    }
}
