//! Crash evidence on NATS JetStream: the SIGKILL loop of `chaos_kafka.rs`
//! with the consumers sharing the topic's durable consumer as a pinned
//! priority group. A killed bus's pin expires (`pinned_ttl`, by default
//! twice `ack_wait`) after the records it held were redelivered, so the
//! next bus continues each key in order.
//!
//! Also under the same checker: a private server (file storage) SIGKILLed
//! and restarted under a consumer that must resume by itself, and a pinned
//! member whose connection freezes (a loopback proxy stops forwarding)
//! longer than the pin lifetime while a standby member takes over.
#![cfg(feature = "nats")]

mod chaos_support;
mod nats_support;
mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chaos_support::{
    checker, full, has_handled, kill_loop, now_ns, publish, read_logs, resume, spawn_child,
    terminate, wait_all_handled, ChildSpec, Rng, CHILD_TEST,
};
use jxt_eventbus::config::NatsStorage;
use jxt_eventbus::EventBus;
use nats_support::proxy::TcpProxy;
use nats_support::server::NatsServer;

/// Not a test: the body of a chaos child process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the chaos tests start it in a child process"]
async fn chaos_child() {
    chaos_support::run_child().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loop_loses_nothing_and_keeps_key_order() {
    let Some(url) = support::nats_url() else {
        return;
    };
    let topic = support::unique_name("chaos-kill");
    let mut config = nats_support::config(&url, &support::unique_name("g-chaos-kill"));
    // Redelivered after 3 s, pinned to the next bus after 6 s.
    config.nats.ack_wait = Duration::from_secs(3);
    let publisher =
        EventBus::from_config(nats_support::config(&url, &support::unique_name("g-pub")))
            .await
            .unwrap();
    kill_loop("nats", config, &topic, &publisher, Duration::from_secs(8)).await;
    publisher.shutdown().await.unwrap();
}

/// A private nats-server with file storage (every write synced) is
/// SIGKILLed and restarted on its store while records are published and
/// consumed: the consumer process resumes by itself, every acknowledged
/// record is handled, each key in order. Short form: 2 restarts; full: 5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_with_file_storage_loses_nothing_and_keeps_key_order() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
    let Some(mut server) = NatsServer::start("") else {
        return;
    };
    let full = full();
    let (records, keys, restarts) = if full {
        (200_000, 1_000, 5)
    } else {
        (6_000, 100, 2)
    };
    let (mut rng, seed) = Rng::seeded();
    let started = Instant::now();
    let url = server.url();
    let topic = support::unique_name("chaos-restart");
    let mut config = nats_support::config(&url, &support::unique_name("g-chaos-restart"));
    config.nats.ack_wait = Duration::from_secs(3);
    config.nats.publish_timeout = Duration::from_secs(2);
    config.nats.idle_heartbeat = Duration::from_secs(1);
    assert_eq!(config.nats.stream.storage, NatsStorage::File);
    let dir = tempfile::tempdir().unwrap();
    let consumer = ChildSpec::new(
        config.clone(),
        topic.clone(),
        dir.path().join("consumer.log"),
    );
    eprintln!(
        "chaos nats restart seed {seed}: {records} records, {keys} keys, {restarts} restarts"
    );
    let mut child = spawn_child(&std::env::current_exe().unwrap(), CHILD_TEST, &consumer);
    config.group = support::unique_name("g-pub");
    let publisher = EventBus::from_config(config).await.unwrap();
    let per_restart = Duration::from_secs(if full { 30 } else { 12 });
    let publishing = tokio::spawn(publish(
        publisher.clone(),
        topic.clone(),
        records,
        keys,
        per_restart * restarts,
    ));
    support::wait_for(
        "the consumer handling records",
        Duration::from_secs(120),
        || has_handled(&consumer.log),
    )
    .await;
    let mut resumes = Vec::new();
    for n in 0..restarts {
        tokio::time::sleep(rng.between(Duration::from_secs(1), Duration::from_secs(4))).await;
        let outage = rng.between(Duration::from_secs(2), Duration::from_secs(5));
        tokio::task::block_in_place(|| server.kill());
        tokio::time::sleep(outage).await;
        // `restart` returns once the server listens again.
        tokio::task::block_in_place(|| server.restart());
        let restart_ns = now_ns();
        let deadline = Instant::now() + Duration::from_secs(90);
        let resumed = loop {
            if let Some(resumed) = resume::first_after(&read_logs(dir.path()), restart_ns) {
                break resumed;
            }
            if Instant::now() > deadline {
                let out =
                    std::fs::read_to_string(consumer.log.with_extension("out")).unwrap_or_default();
                let out: Vec<&str> = out.lines().collect();
                let out = out[out.len().saturating_sub(80)..].join("\n");
                panic!(
                    "restart {n}: the consumer handled nothing within 90 s of the restart \
                     (publisher still publishing: {}, consumer alive: {}); consumer \
                     output:\n{}\nserver log:\n{}",
                    !publishing.is_finished(),
                    child.try_wait().unwrap().is_none(),
                    out,
                    server.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        resumes.push(resumed);
        eprintln!(
            "restart {n}: server down {outage:.1?}; the consumer handled records again \
             {resumed:.1?} after the restart"
        );
    }
    let sent = publishing.await.unwrap();
    let acknowledged: usize = sent.values().map(BTreeSet::len).sum();
    wait_all_handled(dir.path(), &sent, &mut [&mut child]).await;
    terminate(&mut child, Duration::from_secs(60)).await;
    let report = checker::check(&sent, &read_logs(dir.path()));
    let slowest = resumes.iter().max().copied().unwrap_or_default();
    eprintln!(
        "chaos nats server restart (seed {seed}, {:.0?}): {report}; {} publishes not \
         acknowledged; slowest resume after a restart {slowest:.1?}",
        started.elapsed(),
        records as usize - acknowledged
    );
    assert!(report.ok(), "{report}\nserver log:\n{}", server.log());
    assert_eq!(
        report.processes, 1,
        "the consumer resumed without a restart"
    );
    publisher.shutdown().await.unwrap();
}

/// `ack_wait` of the freeze test; the pin lifetime is twice as long.
const FREEZE_ACK_WAIT: Duration = Duration::from_secs(2);
/// How long a member's connection stays frozen: past the pin lifetime
/// (4 s) and the standby's next pull.
const FREEZE: Duration = Duration::from_secs(7);

/// Two members of a pinned group, each connected through its own loopback
/// proxy. The pinned one's proxy stops forwarding (sockets stay open) for
/// longer than the pin lifetime; the standby takes over; then the frozen
/// connection resumes (thaw) or is reset (cut), alternately. Records keep
/// coming throughout.
///
/// The whole checker holds here, overlap included: the client pings every
/// `pinned_ttl / 8` and gives the connection up after three unanswered
/// pings, so the frozen member revokes the topic as lost (drops what it
/// held, stops its handlers) at about 3/8 of the pin lifetime, while the
/// server pins the standby only after a whole pin lifetime without a pull
/// from the frozen member. So no key is handled by both members at once and
/// none goes back. (A frozen *process*, as in a long GC pause, would not
/// notice in time; that is outside what the design guarantees.) Handlings
/// cancelled by the lost revoke write no line: the overlap rule covers every
/// handling that completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_frozen_past_its_pin_hands_over_without_overlap() {
    let Some(url) = support::nats_url() else {
        return;
    };
    let full = full();
    let (records, keys, freezes) = if full {
        (200_000, 1_000, 10)
    } else {
        (6_000, 100, 2)
    };
    let (mut rng, seed) = Rng::seeded();
    let started = Instant::now();
    let cleanup = nats_support::StreamCleanup::new(&url);
    let topic = support::unique_name("chaos-freeze");
    cleanup.add(&topic);
    let group = support::unique_name("g-chaos-freeze");
    let dir = tempfile::tempdir().unwrap();
    let proxies = [TcpProxy::start(&url).await, TcpProxy::start(&url).await];
    let spec = |n: usize| {
        let mut config = nats_support::config(&proxies[n].url(), &group);
        config.nats.ack_wait = FREEZE_ACK_WAIT;
        ChildSpec::new(
            config,
            topic.clone(),
            dir.path().join(format!("member-{n}.log")),
        )
    };
    eprintln!("chaos nats freeze seed {seed}: {records} records, {keys} keys, {freezes} freezes");
    let publisher =
        EventBus::from_config(nats_support::config(&url, &support::unique_name("g-pub")))
            .await
            .unwrap();
    let exe = std::env::current_exe().unwrap();
    // Member 0 subscribes first and is pinned; member 1 stands by.
    let mut members = vec![spawn_child(&exe, CHILD_TEST, &spec(0))];
    support::wait_for("member 0 subscribed", Duration::from_secs(60), || {
        resume::subscribed(&spec(0).log)
    })
    .await;
    let publishing = tokio::spawn(publish(
        publisher.clone(),
        topic.clone(),
        records,
        keys,
        Duration::from_secs(15) * freezes,
    ));
    support::wait_for("member 0 handling records", Duration::from_secs(60), || {
        has_handled(&spec(0).log)
    })
    .await;
    members.push(spawn_child(&exe, CHILD_TEST, &spec(1)));
    support::wait_for("member 1 subscribed", Duration::from_secs(60), || {
        resume::subscribed(&spec(1).log)
    })
    .await;
    let mut active = 0;
    let mut takeovers = Vec::new();
    let mut after_freeze = 0;
    for n in 0..freezes {
        tokio::time::sleep(rng.between(Duration::from_secs(1), Duration::from_secs(3))).await;
        let standby = 1 - active;
        let before = resume::log_size(&spec(standby).log);
        proxies[active].freeze();
        let (frozen, freeze_ns) = (Instant::now(), now_ns());
        support::wait_for("the standby taking over", Duration::from_secs(60), || {
            resume::log_size(&spec(standby).log) > before
        })
        .await;
        let took_over = frozen.elapsed();
        tokio::time::sleep(FREEZE.saturating_sub(frozen.elapsed())).await;
        // Nothing of the frozen member ran once the standby had started:
        // the ownership contract, for the whole topic.
        let since = |n: usize| {
            let text = std::fs::read_to_string(&spec(n).log).unwrap_or_default();
            let lines = checker::parse_log(&text).unwrap();
            lines.into_iter().filter(move |l| l.start_ns >= freeze_ns)
        };
        let frozen_runs: Vec<_> = since(active).collect();
        let frozen_last_end = frozen_runs.iter().map(|l| l.end_ns).max();
        let standby_first = since(standby).map(|l| l.start_ns).min().unwrap();
        after_freeze += frozen_runs.len();
        takeovers.push(Duration::from_nanos((standby_first - freeze_ns) as u64));
        let ms = |ns: u128| ns.saturating_sub(freeze_ns) / 1_000_000;
        assert!(
            frozen_last_end.is_none_or(|end| end < standby_first),
            "freeze {n}: member {active} handled until +{} ms, member {standby} started at +{} ms",
            ms(frozen_last_end.unwrap()),
            ms(standby_first)
        );
        // Alternately the connection comes back with what it held, or is
        // reset and what it held is lost.
        let how = if n % 2 == 0 {
            "thawed"
        } else {
            proxies[active].cut();
            "cut"
        };
        proxies[active].thaw();
        eprintln!(
            "freeze {n}: member {active} frozen, handled {} records after, the last ending at \
             +{} ms; member {standby} handling from +{} ms (seen after {took_over:.1?}); {how} \
             after {:.1?}",
            frozen_runs.len(),
            frozen_last_end.map_or(0, ms),
            ms(standby_first),
            frozen.elapsed()
        );
        active = standby;
    }
    let sent = publishing.await.unwrap();
    {
        let mut running: Vec<&mut std::process::Child> = members.iter_mut().collect();
        wait_all_handled(dir.path(), &sent, &mut running).await;
    }
    for child in &mut members {
        terminate(child, Duration::from_secs(60)).await;
    }
    let report = checker::check(&sent, &read_logs(dir.path()));
    let slowest = takeovers.iter().max().copied().unwrap_or_default();
    eprintln!(
        "chaos nats freeze (seed {seed}, {:.0?}): {report}; slowest takeover {slowest:.1?} \
         (pin lifetime {:?}); {after_freeze} handlings by frozen members after their freeze \
         began, every one ended before the standby started",
        started.elapsed(),
        FREEZE_ACK_WAIT * 2
    );
    assert!(report.ok(), "{report}");
    assert_eq!(report.processes, 2, "both members handled records");
    publisher.shutdown().await.unwrap();
}
