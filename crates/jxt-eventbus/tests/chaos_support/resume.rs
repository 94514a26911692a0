//! When a consumer handled records again after a fault, read from the
//! logs: the time to resume of the chaos figures.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use super::checker::Line;

/// From `since_ns` (a wall-clock instant, as in the logs) to the first
/// handling that started after it, if any.
pub fn first_after(lines: &[Line], since_ns: u128) -> Option<Duration> {
    lines
        .iter()
        .map(|l| l.start_ns)
        .filter(|&s| s > since_ns)
        .min()
        .map(|s| Duration::from_nanos((s - since_ns) as u64))
}

/// From `since_ns` until every partition in `partitions` had a handling
/// start after it: the slowest partition's resume (a partition whose
/// leader died resumes only after a new leader was elected).
pub fn every_partition_after(
    lines: &[Line],
    since_ns: u128,
    partitions: &BTreeSet<i32>,
) -> Option<Duration> {
    let mut slowest = Duration::ZERO;
    for &p in partitions {
        let first = lines
            .iter()
            .filter(|l| l.partition == p && l.start_ns > since_ns)
            .map(|l| l.start_ns)
            .min()?;
        slowest = slowest.max(Duration::from_nanos((first - since_ns) as u64));
    }
    Some(slowest)
}

/// The size of a log (0 when it does not exist yet): it grows by one line
/// per handled record.
pub fn log_size(log: &Path) -> u64 {
    std::fs::metadata(log).map_or(0, |m| m.len())
}

/// Whether a child's output (`<log>.out`) says it subscribed.
pub fn subscribed(log: &Path) -> bool {
    std::fs::read_to_string(log.with_extension("out"))
        .is_ok_and(|out| out.contains("chaos child") && out.contains("consuming"))
}
