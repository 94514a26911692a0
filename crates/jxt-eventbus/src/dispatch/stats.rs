//! What the dispatcher reports of itself, for health, `/status` and tests.

use tokio::time::Instant;

use super::Dispatcher;
use crate::backend::TopicPartition;

/// Counters of the dispatcher, for health and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DispatchStats {
    /// Subscribed topics.
    pub subscriptions: usize,
    /// Partitions owned.
    pub assigned_partitions: usize,
    /// Partitions paused by back-pressure.
    pub paused_partitions: usize,
    /// Records queued in lanes or running.
    pub buffered: usize,
    /// Records of topics without a subscription, held unfinished (they hold
    /// their partition's commit position) until the partition is revoked.
    /// They count towards the caps with `buffered`.
    pub held: usize,
    /// Records running in handlers.
    pub running: usize,
    /// Live key lanes over all subscriptions.
    pub live_lanes: usize,
    /// Partitions assigned since the bus started (cumulative).
    pub assigned_total: u64,
    /// Partitions revoked since the bus started (cumulative).
    pub revoked_total: u64,
    /// Publish time of the oldest record handed out and not finished.
    pub oldest_unfinished: Option<std::time::SystemTime>,
    /// Subscribed topics, sorted.
    pub topics: Vec<String>,
    /// Every owned partition.
    pub partitions: Vec<PartitionStats>,
}

/// What the dispatcher knows of one owned partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionStats {
    /// The partition.
    pub partition: TopicPartition,
    /// Records queued in lanes or running.
    pub buffered: usize,
    /// Records running in handlers.
    pub running: usize,
    /// Paused by back-pressure.
    pub paused: bool,
    /// Next offset to commit; `None` before the first record.
    pub position: Option<i64>,
    /// Publish time of the oldest unfinished record.
    pub oldest_unfinished: Option<std::time::SystemTime>,
    /// How long the commit position has not moved while records were
    /// unfinished; `None` when nothing is unfinished.
    pub stuck_for: Option<std::time::Duration>,
}

impl Dispatcher {
    pub(super) fn stats(&self) -> DispatchStats {
        DispatchStats {
            subscriptions: self.subs.len(),
            assigned_partitions: self.partitions.len(),
            paused_partitions: self.partitions.values().filter(|p| p.paused).count(),
            buffered: self.buffered,
            held: self.held,
            running: self.partitions.values().map(|p| p.running).sum::<usize>()
                + self.revoking_running(),
            live_lanes: self.subs.values().map(|s| s.lanes.live()).sum(),
            assigned_total: self.assigned_total,
            revoked_total: self.revoked_total,
            oldest_unfinished: self
                .partitions
                .values()
                .filter_map(|p| p.offsets.oldest_unfinished())
                .min(),
            topics: {
                let mut t: Vec<String> = self.subs.keys().map(|t| t.to_string()).collect();
                t.sort();
                t
            },
            partitions: self.partition_stats(),
        }
    }

    fn partition_stats(&self) -> Vec<PartitionStats> {
        let now = Instant::now();
        let mut out: Vec<PartitionStats> = self
            .partitions
            .iter()
            .map(|(tp, ps)| {
                let oldest_unfinished = ps.offsets.oldest_unfinished();
                PartitionStats {
                    partition: tp.clone(),
                    buffered: ps.buffered,
                    running: ps.running,
                    paused: ps.paused,
                    position: ps.offsets.position(),
                    oldest_unfinished,
                    stuck_for: oldest_unfinished.map(|_| now.duration_since(ps.progress_at)),
                }
            })
            .collect();
        out.sort_by(|a, b| a.partition.cmp(&b.partition));
        out
    }
}
