//! A bus that dies mid-stream loses nothing: a new bus in the same group
//! gets every record the dead one did not finish.
//!
//! Two deaths: dropping the bus without shutdown (its unfinished records are
//! handed back at once), and killing the process that runs it with SIGKILL
//! (JetStream redelivers them after `ack_wait`, and the new bus takes the
//! topic's pin once `pinned_ttl` passed, still in key order across both
//! processes). The second runs the bus in a child process: this test binary
//! started again on the ignored test `child_process_bus`.
#![cfg(feature = "nats")]

mod nats_support;
mod support;

use std::collections::{BTreeMap, HashSet};
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jxt_eventbus::{Delivery, EventBus, Message, SubscribeOptions};
use nats_support::StreamCleanup;
use support::eventually;

const WAIT: Duration = Duration::from_secs(90);
const CHILD_ENV: &str = "NATS_RECOVERY_CHILD";
/// `ack_wait` of the group in the kill test: how long JetStream waits before
/// redelivering what the killed process held.
const CHILD_ACK_WAIT: Duration = Duration::from_secs(3);

type Seen = Arc<Mutex<Vec<(String, u64)>>>;
type HandlerFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = jxt_eventbus::HandlerResult> + Send>>;

fn parse(d: &Delivery) -> (String, u64) {
    let text = std::str::from_utf8(d.payload()).unwrap();
    let (k, s) = text.rsplit_once(':').unwrap();
    (k.to_string(), s.parse().unwrap())
}

async fn publish_all(
    bus: &EventBus,
    topic: &str,
    keys: usize,
    per_key: u64,
) -> HashSet<(String, u64)> {
    let mut sent = HashSet::new();
    for seq in 0..per_key {
        for k in 0..keys {
            let key = format!("k{k}");
            bus.publish(topic, Message::new(format!("{key}:{seq}")).with_key(&key))
                .await
                .expect("publish");
            sent.insert((key, seq));
        }
    }
    sent
}

/// One handler run, by wall clock (comparable across processes on one
/// machine); `end` is `None` for a run the kill interrupted.
#[derive(Clone, Debug)]
struct Run {
    child: bool,
    key: String,
    seq: u64,
    start: u128,
    end: Option<u128>,
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// The child's runs from its log of `start key seq nanos` and `end key seq
/// nanos` lines (whole lines only: it may have been writing one).
fn child_runs(text: &str) -> Vec<Run> {
    let whole = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
    let mut runs: Vec<Run> = Vec::new();
    for line in whole.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        let [what, key, seq, at] = parts[..] else {
            panic!("bad child log line {line:?}");
        };
        let (seq, at): (u64, u128) = (seq.parse().unwrap(), at.parse().unwrap());
        if what == "start" {
            let (key, start, end) = (key.to_string(), at, None);
            runs.push(Run {
                child: true,
                key,
                seq,
                start,
                end,
            });
        } else if let Some(r) = runs
            .iter_mut()
            .rev()
            .find(|r| r.key == key && r.seq == seq && r.end.is_none())
        {
            r.end = Some(at);
        }
    }
    runs
}

/// Per-key order across the killed process and the bus that took over.
/// Returns the violations: runs of one key in both processes at once (a run
/// the kill interrupted lasts until `killed`), and runs that started after
/// a later record of their key had started, unless the killed process had
/// finished that record (its acknowledgement may have died with it, so it
/// is handled again, in order).
fn order_violations(runs: &[Run], killed: u128) -> Vec<String> {
    let mut by_key: BTreeMap<&str, Vec<&Run>> = BTreeMap::new();
    for r in runs {
        by_key.entry(&r.key).or_default().push(r);
    }
    let mut out = Vec::new();
    for (key, mut runs) in by_key {
        runs.sort_by_key(|r| r.start);
        let finished_by_child: HashSet<u64> = runs
            .iter()
            .filter(|r| r.child && r.end.is_some())
            .map(|r| r.seq)
            .collect();
        for (i, a) in runs.iter().enumerate() {
            for b in &runs[i + 1..] {
                if a.child != b.child && b.start < a.end.unwrap_or(killed) {
                    out.push(format!("{key}: seq {} and seq {} at once", a.seq, b.seq));
                }
            }
            let later_started = runs[..i].iter().any(|b| b.seq > a.seq);
            let replay = !a.child && finished_by_child.contains(&a.seq);
            if later_started && !replay {
                out.push(format!(
                    "{key}: seq {} ({}) started after a later record",
                    a.seq,
                    if a.child { "killed process" } else { "new bus" }
                ));
            }
        }
    }
    out
}

/// A handler that takes `slow` per record and logs it when done.
fn slow_handler(
    seen: &Seen,
    slow: Duration,
) -> impl Fn(Delivery) -> HandlerFuture + Send + Sync + 'static {
    let seen = seen.clone();
    move |d: Delivery| {
        let seen = seen.clone();
        Box::pin(async move {
            tokio::time::sleep(slow).await;
            seen.lock().unwrap().push(parse(&d));
            Ok(())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_bus_hands_its_unfinished_records_to_the_group() {
    let Some(url) = support::nats_url() else {
        return;
    };
    let cleanup = StreamCleanup::new(&url);
    let topic = support::unique_name("dropped");
    cleanup.add(&topic);
    let group = support::unique_name("g");
    let a = EventBus::from_config(nats_support::config(&url, &group))
        .await
        .unwrap();
    let by_a: Seen = Arc::default();
    a.subscribe(
        &topic,
        slow_handler(&by_a, Duration::from_millis(5)),
        SubscribeOptions::new(),
    )
    .await
    .unwrap();
    let sent = publish_all(&a, &topic, 16, 60).await;
    eventually("a handled some", WAIT.as_secs(), || {
        by_a.lock().unwrap().len() >= 100
    })
    .await;
    drop(a);
    let done_by_a: HashSet<_> = by_a.lock().unwrap().iter().cloned().collect();
    assert!(
        done_by_a.len() < sent.len(),
        "a was still busy when dropped"
    );

    let b = EventBus::from_config(nats_support::config(&url, &group))
        .await
        .unwrap();
    let by_b: Seen = Arc::default();
    b.subscribe(
        &topic,
        slow_handler(&by_b, Duration::ZERO),
        SubscribeOptions::new(),
    )
    .await
    .unwrap();
    eventually("every record handled by a or b", WAIT.as_secs(), || {
        let mut all: HashSet<_> = by_a.lock().unwrap().iter().cloned().collect();
        all.extend(by_b.lock().unwrap().iter().cloned());
        all == sent
    })
    .await;
    // Handlers a had running when dropped may still finish (and be
    // acknowledged while its dispatcher winds down): only what a never
    // finished must have gone to b.
    let finished_by_a: HashSet<_> = by_a.lock().unwrap().iter().cloned().collect();
    let by_b: HashSet<_> = by_b.lock().unwrap().iter().cloned().collect();
    for r in sent.difference(&finished_by_a) {
        assert!(
            by_b.contains(r),
            "{r:?} unfinished by a and never given to b"
        );
    }
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_process_hands_its_unfinished_records_to_the_group() {
    let Some(url) = support::nats_url() else {
        return;
    };
    let cleanup = StreamCleanup::new(&url);
    let topic = support::unique_name("killed");
    cleanup.add(&topic);
    let group = support::unique_name("g");
    let dir = tempfile::tempdir().unwrap();
    let child_log = dir.path().join("handled");

    let publisher = EventBus::from_config(nats_support::config(&url, &support::unique_name("pub")))
        .await
        .unwrap();
    let sent = publish_all(&publisher, &topic, 16, 60).await;

    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_process_bus", "--ignored", "--nocapture"])
        .env(
            CHILD_ENV,
            format!("{url}|{topic}|{group}|{}", child_log.display()),
        )
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start child process");
    let read_child = || -> HashSet<(String, u64)> {
        let text = std::fs::read_to_string(&child_log).unwrap_or_default();
        child_runs(&text)
            .into_iter()
            .filter(|r| r.end.is_some())
            .map(|r| (r.key, r.seq))
            .collect()
    };
    eventually("the child handled some", WAIT.as_secs(), || {
        read_child().len() >= 100
    })
    .await;
    child.kill().expect("SIGKILL the child");
    child.wait().unwrap();
    let killed = now_nanos();
    let done_by_child = read_child();
    assert!(
        done_by_child.len() < sent.len(),
        "the child was still busy when killed"
    );

    let mut config = nats_support::config(&url, &group);
    config.nats.ack_wait = CHILD_ACK_WAIT;
    let b = EventBus::from_config(config).await.unwrap();
    let by_b: Seen = Arc::default();
    let runs_b: Arc<Mutex<Vec<Run>>> = Arc::default();
    let started = std::time::Instant::now();
    let (seen, runs) = (by_b.clone(), runs_b.clone());
    b.subscribe(
        &topic,
        move |d: Delivery| {
            let (seen, runs) = (seen.clone(), runs.clone());
            async move {
                let (key, seq) = parse(&d);
                let start = now_nanos();
                tokio::task::yield_now().await;
                let (child, end) = (false, Some(now_nanos()));
                let run = Run {
                    child,
                    key: key.clone(),
                    seq,
                    start,
                    end,
                };
                runs.lock().unwrap().push(run);
                seen.lock().unwrap().push((key, seq));
                Ok(())
            }
        },
        SubscribeOptions::new(),
    )
    .await
    .unwrap();
    eventually(
        "every record handled by the child or b",
        WAIT.as_secs(),
        || {
            let mut all = done_by_child.clone();
            all.extend(by_b.lock().unwrap().iter().cloned());
            all == sent
        },
    )
    .await;
    assert!(
        started.elapsed() < CHILD_ACK_WAIT * 4,
        "redelivered about ack_wait after the kill, not later: {:?}",
        started.elapsed()
    );
    // The killed bus kept the topic's pin for pinned_ttl (twice ack_wait):
    // what it held was due for redelivery by then, so b got those records
    // before anything later of their keys.
    let mut by_key: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    for (k, seq) in by_b.lock().unwrap().iter() {
        by_key.entry(k.clone()).or_default().push(*seq);
    }
    for (k, seqs) in by_key {
        assert!(
            seqs.windows(2).all(|w| w[0] <= w[1]),
            "key {k} out of order on the bus that took over: {seqs:?}"
        );
    }
    b.shutdown().await.unwrap();
    publisher.shutdown().await.unwrap();
    // And across both processes.
    let mut runs = child_runs(&std::fs::read_to_string(&child_log).unwrap());
    runs.extend(runs_b.lock().unwrap().iter().cloned());
    let violations = order_violations(&runs, killed);
    assert!(
        violations.is_empty(),
        "{} per-key violations across the killed process and the new bus, first: {:?}",
        violations.len(),
        &violations[..violations.len().min(5)]
    );
}

/// The bus of the killed process; runs only when started by the test above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "started as a child process by a_killed_process_hands_its_unfinished_records_to_the_group"]
async fn child_process_bus() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let parts: Vec<&str> = spec.split('|').collect();
    let [url, topic, group, log] = parts[..] else {
        panic!("bad {CHILD_ENV}: {spec}");
    };
    let mut config = nats_support::config(url, group);
    // Redelivery of what this process held waits for ack_wait after the kill.
    config.nats.ack_wait = CHILD_ACK_WAIT;
    let bus = EventBus::from_config(config).await.unwrap();
    let log = Arc::new(Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap(),
    ));
    bus.subscribe(
        topic,
        move |d: Delivery| {
            let log = log.clone();
            async move {
                let (k, s) = parse(&d);
                writeln!(log.lock().unwrap(), "start {k} {s} {}", now_nanos()).unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
                writeln!(log.lock().unwrap(), "end {k} {s} {}", now_nanos()).unwrap();
                Ok(())
            }
        },
        SubscribeOptions::new(),
    )
    .await
    .unwrap();
    // Until killed.
    tokio::time::sleep(Duration::from_secs(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_consumer_is_recreated_where_the_group_was() {
    let Some(url) = support::nats_url() else {
        return;
    };
    let cleanup = StreamCleanup::new(&url);
    let topic = support::unique_name("deleted");
    cleanup.add(&topic);
    let mut config = nats_support::config(&url, &support::unique_name("g"));
    config.nats.idle_heartbeat = Duration::from_secs(1);
    let bus = EventBus::from_config(config).await.unwrap();
    let seen: Seen = Arc::default();
    bus.subscribe(
        &topic,
        slow_handler(&seen, Duration::ZERO),
        SubscribeOptions::new(),
    )
    .await
    .unwrap();
    let first = publish_all(&bus, &topic, 5, 10).await;
    eventually("the first records", WAIT.as_secs(), || {
        seen.lock().unwrap().len() == first.len()
    })
    .await;
    // The bus learns the group's ack floor when it reads its lag.
    let deadline = tokio::time::Instant::now() + WAIT;
    while bus.lag().await.unwrap()[0].lag() > 0 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
    let stream = js
        .get_stream(js.stream_by_subject(topic.as_str()).await.unwrap())
        .await
        .unwrap();
    let name = futures::StreamExt::next(&mut stream.consumer_names())
        .await
        .unwrap()
        .unwrap();
    stream.delete_consumer(&name).await.unwrap();

    let mut later = HashSet::new();
    for seq in 100..110 {
        let key = format!("k{}", seq % 5);
        bus.publish(&topic, Message::new(format!("{key}:{seq}")).with_key(&key))
            .await
            .unwrap();
        later.insert((key, seq));
    }
    eventually(
        "the records published after the deletion",
        WAIT.as_secs(),
        || {
            let got: HashSet<_> = seen.lock().unwrap().iter().cloned().collect();
            later.is_subset(&got)
        },
    )
    .await;
    // Everything delivered is acknowledged: a consumer recreated from the
    // start would have delivered (and the bus handled) the first records
    // again by now.
    let deadline = tokio::time::Instant::now() + WAIT;
    while bus.lag().await.unwrap()[0].lag() > 0 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        seen.lock().unwrap().len(),
        first.len() + later.len(),
        "recreated after the acknowledged records, not from the start"
    );
    assert!(stream.consumer_info(&name).await.is_ok(), "recreated");
    bus.shutdown().await.unwrap();
}

/// The cross-process check finds what it is meant to find.
#[test]
fn order_violations_across_processes_are_found() {
    let run = |child: bool, seq: u64, start: u128, end: Option<u128>| Run {
        child,
        key: "k".into(),
        seq,
        start,
        end,
    };
    // Killed at 100 while running seq 2; seq 1 finished but maybe not
    // acknowledged: the new bus handles 1 again, then 2, 3.
    let clean = [
        run(true, 1, 10, Some(20)),
        run(true, 2, 30, None),
        run(false, 1, 110, Some(111)),
        run(false, 2, 112, Some(113)),
        run(false, 3, 114, Some(115)),
    ];
    assert!(order_violations(&clean, 100).is_empty());
    // The new bus starts before the killed process stopped.
    let mut early = clean.clone();
    early[2].start = 90;
    assert!(!order_violations(&early, 100).is_empty());
    // The new bus skips seq 2, which the killed process never finished.
    let skipped = [
        run(true, 1, 10, Some(20)),
        run(true, 2, 30, None),
        run(false, 3, 110, Some(111)),
        run(false, 2, 112, Some(113)),
    ];
    assert!(!order_violations(&skipped, 100).is_empty());
}
