//! Crash evidence on Kafka: a consumer in a child process is killed with
//! SIGKILL at random moments while keyed, sequenced records are published;
//! a checker reads what every process handled and counts lost records,
//! per-key order violations and overlapping handling of a key. The same
//! checker judges group churn, a broker SIGKILLed and restarted, handlers
//! slower than the revoke timeout, and one node of a private 3-node cluster
//! SIGKILLed under acks=all publishing.
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

use chaos_support::{
    checker, form, has_handled, kill_loop, publish, read_logs, spawn_child, terminate,
    wait_all_handled, ChildSpec, Rng, CHILD_TEST,
};
use jxt_eventbus::{EventBus, Message};

/// Not a test: the body of a chaos child process, started by the tests
/// below with `--ignored --exact chaos_child`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the chaos tests start it in a child process"]
async fn chaos_child() {
    chaos_support::run_child().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loop_loses_nothing_and_keeps_key_order() {
    let Some(brokers) = support::kafka_brokers() else {
        return;
    };
    let topic = support::unique_name("chaos-kill");
    kafka_support::create_topic(&brokers, &topic, 6).await;
    let mut config = kafka_support::config(&brokers, &support::unique_name("g-chaos-kill"));
    // The broker's minimum: a killed member is expired quickly, so the next
    // one is not held back long.
    config.kafka.consumer.session_timeout = Duration::from_secs(6);
    let publisher = kafka_support::bus(&brokers, &support::unique_name("g-pub")).await;
    // A child gets partitions in about 7 s and is killed within 3 s of
    // handling its first record.
    kill_loop("kafka", config, &topic, &publisher, Duration::from_secs(9)).await;
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
    let consumer = ChildSpec::new(
        config.clone(),
        topic.clone(),
        dir.path().join("consumer.log"),
    );
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
    let spec = |n: u32| {
        ChildSpec::new(
            config.clone(),
            topic.clone(),
            dir.path().join(format!("member-{n}.log")),
        )
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_slower_than_the_revoke_timeout_never_overlap_the_next_owner() {
    let Some(brokers) = support::kafka_brokers() else {
        return;
    };
    let topic = support::unique_name("chaos-slow");
    kafka_support::create_topic(&brokers, &topic, 6).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = kafka_support::config(&brokers, &support::unique_name("g-chaos-slow"));
    config.kafka.consumer.session_timeout = Duration::from_secs(6);
    // Handlers of every tenth key sleep 8 s now and then: past the revoke
    // deadline, where the bus cancels them and gives the partition up.
    config.dispatch.revoke_timeout = Duration::from_secs(2);
    let exe = std::env::current_exe().unwrap();
    let spec = |n: u32| ChildSpec {
        slow_every: 25,
        slow_ms: 8_000,
        ..ChildSpec::new(
            config.clone(),
            topic.clone(),
            dir.path().join(format!("member-{n}.log")),
        )
    };
    let publisher = kafka_support::bus(&brokers, &support::unique_name("g-pub")).await;
    let publishing = tokio::spawn(publish(
        publisher.clone(),
        topic.clone(),
        4_000,
        40,
        Duration::from_secs(20),
    ));
    let mut members = vec![spawn_child(&exe, CHILD_TEST, &spec(0))];
    support::wait_for(
        "the first member handling",
        Duration::from_secs(120),
        || has_handled(&spec(0).log),
    )
    .await;
    // Joins move partitions away from a member whose slow handlers run.
    for n in 1..3 {
        tokio::time::sleep(Duration::from_secs(3)).await;
        members.push(spawn_child(&exe, CHILD_TEST, &spec(n)));
        support::wait_for("the new member handling", Duration::from_secs(120), || {
            has_handled(&spec(n).log)
        })
        .await;
    }
    // And a graceful leave hands its partitions over mid-record.
    terminate(&mut members[0], Duration::from_secs(60)).await;
    let sent = publishing.await.unwrap();
    {
        let mut running: Vec<&mut std::process::Child> = members[1..].iter_mut().collect();
        wait_all_handled(dir.path(), &sent, &mut running).await;
    }
    for child in &mut members[1..] {
        terminate(child, Duration::from_secs(60)).await;
    }
    let lines = read_logs(dir.path());
    let report = checker::check(&sent, &lines);
    let slow_handled = lines
        .iter()
        .filter(|l| l.end_ns - l.start_ns >= 8_000_000_000)
        .count();
    eprintln!("chaos slow handlers: {report}; {slow_handled} slow handlings finished");
    assert!(report.ok(), "{report}");
    assert!(slow_handled > 0, "slow handlers ran");
    publisher.shutdown().await.unwrap();
}

/// A 3-node cluster (replication factor 3, `min.insync.replicas` 2) loses
/// one node (SIGKILL) while records are published with acks=all and
/// consumed; the consumer keeps going on the other two, the node comes
/// back, and nothing acknowledged is lost. The short form kills one node;
/// the full form kills each node in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_node_killed_loses_nothing_and_keeps_key_order() {
    use chaos_support::kafka_cluster::KafkaCluster;
    use chaos_support::{now_ns, resume};
    use jxt_eventbus::config::Acks;

    // The shared broker answering shows the rig (java, jars) is in place.
    if support::kafka_brokers().is_none() {
        return;
    }
    let full = chaos_support::full();
    let (records, keys, node_kills) = if full {
        (200_000, 1_000, 3)
    } else {
        (6_000, 100, 1)
    };
    let (mut rng, seed) = Rng::seeded();
    let started = Instant::now();
    let cluster = tokio::task::spawn_blocking(|| KafkaCluster::start(3))
        .await
        .unwrap();
    let cluster = std::sync::Arc::new(cluster);
    eprintln!(
        "chaos kafka cluster seed {seed}: {records} records, {keys} keys, {node_kills} node \
         kills; 3 nodes at {} up after {:.0?}",
        cluster.brokers,
        started.elapsed()
    );
    let topic = support::unique_name("chaos-node");
    let partitions = 6;
    cluster.create_topic(&topic, partitions).await;
    let dir = tempfile::tempdir().unwrap();
    let config = kafka_support::config(&cluster.brokers, &support::unique_name("g-chaos-node"));
    // The bus's own producer defaults: an acknowledged record is on two
    // replicas at least.
    assert_eq!(config.kafka.producer.required_acks, Acks::All);
    assert!(config.kafka.producer.idempotent);
    let consumer = ChildSpec::new(
        config.clone(),
        topic.clone(),
        dir.path().join("consumer.log"),
    );
    let mut child = spawn_child(&std::env::current_exe().unwrap(), CHILD_TEST, &consumer);
    let mut publisher_config = config.clone();
    publisher_config.group = support::unique_name("g-pub");
    let publisher = EventBus::from_config(publisher_config).await.unwrap();
    // Records keep coming through every kill, the resume and the restart.
    let per_kill = Duration::from_secs(if full { 50 } else { 30 });
    let publishing = tokio::spawn(publish(
        publisher.clone(),
        topic.clone(),
        records,
        keys,
        per_kill * node_kills,
    ));
    support::wait_for(
        "the consumer handling records",
        Duration::from_secs(120),
        || has_handled(&consumer.log),
    )
    .await;
    let every_partition: BTreeSet<i32> = (0..partitions).collect();
    let first_node = 1 + (rng.next() % 3) as u32;
    let mut resumes = Vec::new();
    for n in 0..node_kills {
        tokio::time::sleep(rng.between(Duration::from_secs(1), Duration::from_secs(3))).await;
        let node = 1 + (first_node - 1 + n) % 3;
        let kill_ns = now_ns();
        let killed = Instant::now();
        let c = cluster.clone();
        tokio::task::spawn_blocking(move || c.kill(node))
            .await
            .unwrap();
        // Keep going on two nodes: every partition is handled again (the
        // dead node's partitions once new leaders were elected).
        let mut resumed = None;
        support::wait_for(
            "every partition handled again with a node down",
            Duration::from_secs(90),
            || {
                resumed = resume::every_partition_after(
                    &read_logs(dir.path()),
                    kill_ns,
                    &every_partition,
                );
                resumed.is_some()
            },
        )
        .await;
        let resumed = resumed.unwrap();
        resumes.push(resumed);
        let c = cluster.clone();
        tokio::task::spawn_blocking(move || c.start_node(node))
            .await
            .unwrap();
        eprintln!(
            "node kill {n}: node {node} SIGKILLed; every partition handled again after \
             {resumed:.1?}; node back after {:.1?}",
            killed.elapsed()
        );
    }
    let sent = publishing.await.unwrap();
    let acknowledged: usize = sent.values().map(BTreeSet::len).sum();
    wait_all_handled(dir.path(), &sent, &mut [&mut child]).await;
    terminate(&mut child, Duration::from_secs(60)).await;
    let report = checker::check(&sent, &read_logs(dir.path()));
    let slowest = resumes.iter().max().copied().unwrap_or_default();
    eprintln!(
        "chaos kafka cluster node loss (seed {seed}, {:.0?}): {report}; {} publishes not \
         acknowledged; slowest resume on every partition {slowest:.1?}",
        started.elapsed(),
        records as usize - acknowledged
    );
    assert!(report.ok(), "{report}");
    assert_eq!(
        report.processes, 1,
        "the consumer resumed without a restart"
    );
    publisher.shutdown().await.unwrap();
}
