//! Crash evidence on Kafka: a consumer in a child process is killed with
//! SIGKILL at random moments while keyed, sequenced records are published;
//! a checker reads what every process handled and counts lost records,
//! per-key order violations and overlapping handling of a key.
//!
//! The short form runs in `scripts/test`; `scripts/chaos` runs the full
//! form (`EVENTBUS_DEV_CHAOS_FULL=1`: 200,000 records, 20 kills) whose
//! figures are in `docs/reliability.md`. A run prints its seed; set
//! `EVENTBUS_DEV_CHAOS_SEED` to repeat its kill schedule.
#![cfg(feature = "kafka")]

mod chaos_support;
mod kafka_support;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chaos_support::{checker, has_handled, read_logs, spawn_child, terminate, ChildSpec, Rng};
use jxt_eventbus::{EventBus, Message};

/// The ignored test the children run as.
const CHILD_TEST: &str = "chaos_child";

/// Not a test: the body of a chaos child process, started by the tests
/// below with `--ignored --exact chaos_child`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the chaos tests start it in a child process"]
async fn chaos_child() {
    chaos_support::run_child().await;
}

struct Form {
    records: u64,
    keys: u64,
    /// SIGKILLs of the kill loop.
    kills: u32,
    /// Leaves and joins of the churn test.
    churn: u32,
}

fn form() -> Form {
    if std::env::var("EVENTBUS_DEV_CHAOS_FULL").is_ok_and(|v| v == "1") {
        Form {
            records: 200_000,
            keys: 1_000,
            kills: 20,
            churn: 30,
        }
    } else {
        Form {
            records: 20_000,
            keys: 200,
            kills: 5,
            churn: 6,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loop_loses_nothing_and_keeps_key_order() {
    let Some(brokers) = support::kafka_brokers() else {
        return;
    };
    let form = form();
    let (mut rng, seed) = Rng::seeded();
    let topic = support::unique_name("chaos-kill");
    let group = support::unique_name("g-chaos-kill");
    kafka_support::create_topic(&brokers, &topic, 6).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = kafka_support::config(&brokers, &group);
    // The broker's minimum: a killed member is expired quickly, so the next
    // one is not held back long.
    config.kafka.consumer.session_timeout = Duration::from_secs(6);
    let exe = std::env::current_exe().unwrap();
    let spec = |n: u32| ChildSpec {
        config: config.clone(),
        topic: topic.clone(),
        log: dir.path().join(format!("child-{n}.log")),
        handler_delay_us: 50,
    };
    eprintln!(
        "chaos seed {seed}: {} records, {} keys, {} kills",
        form.records, form.keys, form.kills
    );

    let publisher = kafka_support::bus(&brokers, &support::unique_name("g-pub")).await;
    // Publishing spans the kill schedule (a child joins in about 7 s and
    // is killed within 3 s of handling its first record).
    let span = Duration::from_secs(9) * form.kills;
    let publishing = tokio::spawn(publish(
        publisher.clone(),
        topic.clone(),
        form.records,
        form.keys,
        span,
    ));
    let started = Instant::now();
    for n in 0..form.kills {
        let spec = spec(n);
        let mut child = spawn_child(&exe, CHILD_TEST, &spec);
        // A new member gets partitions only once the group expired the
        // killed one: the kill lands a random time after it began handling.
        let joined = Instant::now();
        support::wait_for(
            "the child handling records",
            Duration::from_secs(120),
            || std::fs::metadata(&spec.log).is_ok_and(|m| m.len() > 0),
        )
        .await;
        let life = rng.between(Duration::from_millis(100), Duration::from_millis(3_000));
        tokio::time::sleep(life).await;
        child.kill().expect("SIGKILL the child");
        child.wait().unwrap();
        eprintln!(
            "kill {n}: {life:?} after it began handling ({:.1?} after start)",
            joined.elapsed()
        );
    }
    let sent = publishing.await.unwrap();
    // A last consumer finishes the topic.
    let mut last = spawn_child(&exe, CHILD_TEST, &spec(form.kills));
    wait_all_handled(dir.path(), &sent, &mut [&mut last]).await;
    last.kill().unwrap();
    last.wait().unwrap();
    let report = checker::check(&sent, &read_logs(dir.path()));
    eprintln!(
        "chaos kill loop (seed {seed}, {:.0?}): {report}",
        started.elapsed()
    );
    assert!(report.ok(), "{report}");
    assert_eq!(
        report.processes as u32,
        form.kills + 1,
        "every child handled records"
    );
    publisher.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_killed_for_10_s_bounds_publishes_and_loses_nothing() {
    use support::private_kafka::PrivateKafka;

    // The shared broker answering shows the rig (java, jars) is in place.
    if support::kafka_brokers().is_none() {
        return;
    }
    let kafka = PrivateKafka::start();
    let topic = support::unique_name("chaos-broker");
    kafka_support::create_topic(&kafka.brokers, &topic, 6).await;
    let dir = tempfile::tempdir().unwrap();
    let message_timeout = Duration::from_secs(5);
    let check_interval = Duration::from_secs(1);
    let mut config = kafka_support::config(&kafka.brokers, &support::unique_name("g-broker"));
    config.kafka.producer.message_timeout = message_timeout;
    config.health.check_interval = check_interval;
    let consumer = ChildSpec {
        config: config.clone(),
        topic: topic.clone(),
        log: dir.path().join("consumer.log"),
        handler_delay_us: 50,
    };
    let mut child = spawn_child(&std::env::current_exe().unwrap(), CHILD_TEST, &consumer);
    let publisher = EventBus::from_config(config).await.unwrap();

    let mut sent: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    let mut seq = 0u64;
    let mut slowest_in_outage = Duration::ZERO;
    let mut failed_in_outage = 0usize;
    let mut publish_round = async |sent: &mut BTreeMap<String, BTreeSet<u64>>| {
        let batch: Vec<Message> = (0..20)
            .map(|k| Message::new(format!("k{k} {seq}")).with_key(format!("k{k}")))
            .collect();
        let t = Instant::now();
        let results = publisher.publish_batch(&topic, batch).await.unwrap();
        let took = t.elapsed();
        let mut failed = 0;
        for (k, r) in results.into_iter().enumerate() {
            match r {
                Ok(_) => {
                    sent.entry(format!("k{k}")).or_default().insert(seq);
                }
                Err(_) => failed += 1,
            }
        }
        seq += 1;
        (took, failed)
    };
    // Before: records flow and are handled.
    while !has_handled(&consumer.log) {
        publish_round(&mut sent).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    kafka.kill();
    let killed = Instant::now();
    // Readiness is watched on its own, not between publishes that may wait.
    let unready = tokio::spawn({
        let publisher = publisher.clone();
        async move {
            while publisher.readiness().await.is_ok() {
                if killed.elapsed() > Duration::from_secs(60) {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Some(killed.elapsed())
        }
    });
    while killed.elapsed() < Duration::from_secs(10) {
        let (took, failed) = publish_round(&mut sent).await;
        slowest_in_outage = slowest_in_outage.max(took);
        failed_in_outage += failed;
    }
    let unready_after = unready.await.unwrap();
    kafka.restart();
    let restarted = Instant::now();
    // After: publishing works again without a new bus.
    loop {
        let (_, failed) = publish_round(&mut sent).await;
        if failed == 0 {
            break;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(60),
            "publishing did not recover"
        );
    }
    for _ in 0..10 {
        publish_round(&mut sent).await;
    }
    wait_all_handled(dir.path(), &sent, &mut [&mut child]).await;
    terminate(&mut child, Duration::from_secs(60)).await;
    let report = checker::check(&sent, &read_logs(dir.path()));
    let unready_after = unready_after.expect("the publisher turned unready during the outage");
    eprintln!(
        "chaos broker kill: {report}; during the outage the slowest publish_batch took \
         {slowest_in_outage:.1?} (message_timeout {message_timeout:?}), {failed_in_outage} \
         publishes failed, readiness failed {unready_after:.1?} after the kill \
         (check_interval {check_interval:?})"
    );
    assert!(report.ok(), "{report}");
    assert_eq!(
        report.processes, 1,
        "the consumer resumed without a restart"
    );
    assert!(failed_in_outage > 0, "publishes during the outage failed");
    assert!(
        slowest_in_outage <= message_timeout + Duration::from_secs(1),
        "a publish_batch took {slowest_in_outage:?} with message_timeout {message_timeout:?}"
    );
    assert!(
        unready_after <= check_interval * 2 + Duration::from_secs(1),
        "readiness failed only {unready_after:?} after the kill"
    );
    publisher.shutdown().await.unwrap();
}

/// Waits until every acknowledged record was handled at least once, while
/// the `running` children stay alive.
async fn wait_all_handled(
    dir: &std::path::Path,
    sent: &BTreeMap<String, BTreeSet<u64>>,
    running: &mut [&mut std::process::Child],
) {
    let total: usize = sent.values().map(BTreeSet::len).sum();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let lines = read_logs(dir);
        let distinct: BTreeSet<(&str, u64)> =
            lines.iter().map(|l| (l.key.as_str(), l.seq)).collect();
        if distinct.len() >= total {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not every acknowledged record was handled: {}",
            checker::check(sent, &lines)
        );
        for child in running.iter_mut() {
            assert!(
                child.try_wait().unwrap().is_none(),
                "a consumer exited early: see the .out files in {dir:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalance_churn_keeps_key_order_across_members() {
    let Some(brokers) = support::kafka_brokers() else {
        return;
    };
    let form = form();
    let (mut rng, seed) = Rng::seeded();
    let topic = support::unique_name("chaos-churn");
    let group = support::unique_name("g-chaos-churn");
    kafka_support::create_topic(&brokers, &topic, 6).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = kafka_support::config(&brokers, &group);
    config.kafka.consumer.session_timeout = Duration::from_secs(6);
    let exe = std::env::current_exe().unwrap();
    let spec = |n: u32| ChildSpec {
        config: config.clone(),
        topic: topic.clone(),
        log: dir.path().join(format!("member-{n}.log")),
        handler_delay_us: 50,
    };
    eprintln!(
        "chaos seed {seed}: {} records, {} keys, 3 members, {} leaves and joins",
        form.records, form.keys, form.churn
    );
    let publisher = kafka_support::bus(&brokers, &support::unique_name("g-pub")).await;
    let span = Duration::from_secs(8) * form.churn;
    let publishing = tokio::spawn(publish(
        publisher.clone(),
        topic.clone(),
        form.records,
        form.keys,
        span,
    ));
    let started = Instant::now();
    let mut members: Vec<(u32, std::process::Child)> = (0..3)
        .map(|n| (n, spawn_child(&exe, CHILD_TEST, &spec(n))))
        .collect();
    support::wait_for(
        "every first member handling records",
        Duration::from_secs(120),
        || (0..3).all(|n| has_handled(&spec(n).log)),
    )
    .await;
    for op in 0..form.churn {
        let victim = (rng.next() % members.len() as u64) as usize;
        let (n, mut child) = members.swap_remove(victim);
        // Alternate a graceful leave (revoke, commit, leave) and a crash.
        let how = if op % 2 == 0 {
            terminate(&mut child, Duration::from_secs(60)).await;
            "left"
        } else {
            child.kill().expect("SIGKILL");
            child.wait().unwrap();
            "killed"
        };
        let next = 3 + op;
        let joined = Instant::now();
        members.push((next, spawn_child(&exe, CHILD_TEST, &spec(next))));
        support::wait_for(
            "the new member handling records",
            Duration::from_secs(120),
            || has_handled(&spec(next).log),
        )
        .await;
        eprintln!(
            "churn {op}: member {n} {how}, member {next} handling after {:.1?}",
            joined.elapsed()
        );
        tokio::time::sleep(rng.between(Duration::from_millis(100), Duration::from_millis(2_000)))
            .await;
    }
    let sent = publishing.await.unwrap();
    {
        let mut running: Vec<&mut std::process::Child> =
            members.iter_mut().map(|(_, c)| c).collect();
        wait_all_handled(dir.path(), &sent, &mut running).await;
    }
    for (_, child) in &mut members {
        terminate(child, Duration::from_secs(60)).await;
    }
    let report = checker::check(&sent, &read_logs(dir.path()));
    eprintln!(
        "chaos churn (seed {seed}, {:.0?}): {report}",
        started.elapsed()
    );
    assert!(report.ok(), "{report}");
    publisher.shutdown().await.unwrap();
}

/// Publishes `records` records round-robin over `keys` keys, each payload
/// `key seq`, in batches spread over `span`; returns the acknowledged ones.
async fn publish(
    bus: EventBus,
    topic: String,
    records: u64,
    keys: u64,
    span: Duration,
) -> BTreeMap<String, BTreeSet<u64>> {
    let mut acked: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    let per_key = records / keys;
    let pause = span / per_key as u32;
    for seq in 0..per_key {
        let batch: Vec<Message> = (0..keys)
            .map(|k| {
                let key = format!("k{k}");
                Message::new(format!("{key} {seq}")).with_key(key)
            })
            .collect();
        let results = bus
            .publish_batch(&topic, batch)
            .await
            .expect("publish batch");
        for (k, r) in results.into_iter().enumerate() {
            // A failed publish is not acknowledged: it is not expected.
            if r.is_ok() {
                acked.entry(format!("k{k}")).or_default().insert(seq);
            }
        }
        tokio::time::sleep(pause).await;
    }
    acked
}
