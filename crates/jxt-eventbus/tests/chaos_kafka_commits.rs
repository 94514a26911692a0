//! What a crash redelivers on Kafka: consumers in child processes are
//! SIGKILLed while keyed, sequenced records flow, and the duplicates must be
//! bounded by the records the bus had in flight at each kill — not by how
//! long positions waited to be committed. And a record finished above a
//! slow one is not handed out again after a crash: its offset is carried in
//! the commit metadata.
//!
//! Same harness as `chaos_kafka.rs` (children are this binary started on
//! its ignored `chaos_child` test); the full form (`EVENTBUS_DEV_CHAOS_FULL=1`,
//! `scripts/chaos`) kills 20 times during 200,000 records.
#![cfg(feature = "kafka")]

mod chaos_support;
mod kafka_support;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chaos_support::{checker, kill_loop, spawn_child, ChildSpec, CHILD_TEST};
use jxt_eventbus::Message;

/// Not a test: the body of a chaos child process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the chaos tests start it in a child process"]
async fn chaos_child() {
    chaos_support::run_child().await;
}

/// For records handled again after a kill: how long before the kill the
/// killed process had finished them, bucketed.
fn repeat_ages(lines: &[checker::Line], killed_at: &BTreeMap<u32, u128>) -> String {
    let mut by_start: Vec<&checker::Line> = lines.iter().collect();
    by_start.sort_by_key(|l| l.start_ns);
    let mut first: BTreeMap<(&str, u64), &checker::Line> = BTreeMap::new();
    let mut buckets = [0usize; 5];
    for l in by_start {
        match first.get(&(l.key.as_str(), l.seq)) {
            None => {
                first.insert((l.key.as_str(), l.seq), l);
            }
            Some(f) => {
                let Some(&kill) = killed_at.get(&f.pid) else {
                    continue;
                };
                let age_ms = kill.saturating_sub(f.end_ns) / 1_000_000;
                let i = match age_ms {
                    0..10 => 0,
                    10..50 => 1,
                    50..200 => 2,
                    200..1000 => 3,
                    _ => 4,
                };
                buckets[i] += 1;
            }
        }
    }
    format!(
        "<10 ms {}, 10-50 ms {}, 50-200 ms {}, 0.2-1 s {}, >1 s {}",
        buckets[0], buckets[1], buckets[2], buckets[3], buckets[4]
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_duplicates_are_bounded_by_the_records_in_flight() {
    let Some(brokers) = support::kafka_brokers() else {
        return;
    };
    let topic = support::unique_name("chaos-commits");
    kafka_support::create_topic(&brokers, &topic, 6).await;
    let mut config = kafka_support::config(&brokers, &support::unique_name("g-chaos-commits"));
    config.kafka.consumer.session_timeout = Duration::from_secs(6);
    // What a kill repeats: the records handed to the bus and not finished
    // (at most `max_buffered`), plus those finished while the last commit
    // was on its way (lanes / handler time x a commit round trip: 2 lanes
    // of >= 1 ms handlers finish about 2 records per millisecond, a few
    // tens per round trip on a loaded machine — kept well under the cap).
    // Committing on a timer instead repeats everything finished since the
    // last tick, whatever the cap.
    config.dispatch.max_buffered = 64;
    config.dispatch.max_buffered_per_partition = 32;
    config.dispatch.max_concurrency = 2;
    let in_flight_cap = config.dispatch.max_buffered;
    let publisher = kafka_support::bus(&brokers, &support::unique_name("g-pub")).await;
    eprintln!("chaos commits: in-flight cap {in_flight_cap}");
    let seen = kill_loop(
        "kafka commits",
        config,
        &topic,
        &publisher,
        Duration::from_secs(9),
    )
    .await;
    eprintln!(
        "duplicates by how long before the kill their first handling ended: {}",
        repeat_ages(&seen.lines, &seen.killed_at)
    );
    let report = &seen.report;
    let bound = in_flight_cap * seen.kills as usize;
    eprintln!(
        "chaos commits: {} duplicates, bound {bound} (in-flight cap {in_flight_cap} x {} kills)",
        report.duplicates, seen.kills
    );
    assert!(
        report.duplicates <= bound,
        "{} duplicates after {} kills: more than the in-flight cap ({in_flight_cap}) per kill",
        report.duplicates,
        seen.kills
    );
    publisher.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_finished_above_a_slow_one_are_not_redelivered_after_a_kill() {
    let Some(brokers) = support::kafka_brokers() else {
        return;
    };
    let topic = support::unique_name("chaos-above");
    let group = support::unique_name("g-chaos-above");
    kafka_support::create_topic(&brokers, &topic, 1).await;
    let mut config = kafka_support::config(&brokers, &group);
    config.kafka.consumer.session_timeout = Duration::from_secs(6);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    // The first child never finishes `k0 0` (keys that are multiples of 10,
    // sequence numbers that are multiples of `slow_every`): the partition's
    // position stays at it while the other keys' records finish.
    let first = ChildSpec {
        config: config.clone(),
        topic: topic.clone(),
        log: dir.path().join("first.log"),
        handler_delay_us: 0,
        slow_every: 1_000_000,
        slow_ms: 3_600_000,
    };
    let second = ChildSpec {
        log: dir.path().join("second.log"),
        slow_every: 0,
        slow_ms: 0,
        ..first.clone()
    };
    let publisher = kafka_support::bus(&brokers, &support::unique_name("g-pub")).await;
    let keys = 5u64;
    let per_key = 40u64;
    let mut batch = Vec::new();
    for seq in 0..per_key {
        for k in 0..keys {
            batch.push(Message::new(format!("k{k} {seq}")).with_key(format!("k{k}")));
        }
    }
    for r in publisher.publish_batch(&topic, batch).await.unwrap() {
        r.expect("published");
    }
    let mut child = spawn_child(&exe, CHILD_TEST, &first);
    // Every record of the other keys finished; `k0`'s wait behind `k0 0`.
    let others = ((keys - 1) * per_key) as usize;
    support::wait_for(
        "the other keys' records handled",
        Duration::from_secs(120),
        || {
            std::fs::read_to_string(&first.log)
                .map(|t| checker::parse_log(&t).unwrap_or_default().len() >= others)
                .unwrap_or(false)
        },
    )
    .await;
    // ...and committed: the position at `k0 0` (offset 0), the finished
    // offsets above it in the metadata.
    support::wait_for(
        "the finished offsets above the slow record in the commit metadata",
        Duration::from_secs(30),
        || {
            let (offset, metadata) =
                kafka_support::committed_with_metadata(&brokers, &group, &topic, 1).remove(0);
            offset == Some(0) && !metadata.is_empty()
        },
    )
    .await;
    child.kill().expect("SIGKILL");
    child.wait().unwrap();

    let mut child = spawn_child(&exe, CHILD_TEST, &second);
    // A sentinel after the restart: once it is handled, everything before it
    // on the partition was handed out or skipped.
    publisher
        .publish(&topic, Message::new("k1 1000").with_key("k1"))
        .await
        .unwrap();
    support::wait_for("the sentinel handled", Duration::from_secs(120), || {
        std::fs::read_to_string(&second.log)
            .map(|t| {
                checker::parse_log(&t)
                    .unwrap_or_default()
                    .iter()
                    .any(|l| l.key == "k1" && l.seq == 1000)
            })
            .unwrap_or(false)
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    let second_lines = checker::parse_log(&std::fs::read_to_string(&second.log).unwrap()).unwrap();
    let first_done: BTreeSet<(String, u64)> =
        checker::parse_log(&std::fs::read_to_string(&first.log).unwrap())
            .unwrap()
            .into_iter()
            .map(|l| (l.key, l.seq))
            .collect();
    let redelivered: Vec<String> = second_lines
        .iter()
        .filter(|l| first_done.contains(&(l.key.clone(), l.seq)))
        .map(|l| format!("{} {} (offset {})", l.key, l.seq, l.offset))
        .collect();
    let k0: BTreeSet<u64> = second_lines
        .iter()
        .filter(|l| l.key == "k0")
        .map(|l| l.seq)
        .collect();
    eprintln!(
        "first child finished {} records; the second handled {}, of which {} again",
        first_done.len(),
        second_lines.len(),
        redelivered.len()
    );
    assert_eq!(
        k0,
        (0..per_key).collect::<BTreeSet<_>>(),
        "the slow key's records were handled after the restart"
    );
    assert!(
        redelivered.is_empty(),
        "{} records finished before the kill were handed out again: {:?}",
        redelivered.len(),
        &redelivered[..redelivered.len().min(10)]
    );
    publisher.shutdown().await.unwrap();
}
