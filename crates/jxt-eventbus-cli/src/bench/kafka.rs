//! Kafka benchmark. The headline (`ratio`) is the end-to-end comparison
//! against plain rdkafka of [`super::kafka_e2e`]. Beside it, `consumer_path`
//! compares the bus's consumer path against a hand-written rdkafka consumer
//! doing the same keyed work, on the same records — this module:
//!
//! One topic with `--partitions` partitions is filled once, by the bus
//! (`publish_batch` in windows of `--window`; its rate is reported apart as
//! `publish_msgs_per_sec`). Then `--rounds` rounds each read the whole topic
//! twice from the beginning, once per side, with a new consumer group per
//! read; the side that goes first alternates from round to round. A side's
//! interval runs from its first handled record to its last, so group joins
//! and shutdown are not in it. The report gives the median rates and the
//! median of the per-round ratios.
//!
//! - **bus**: the bus's one consumer (its poll thread) → keyed dispatch
//!   (`--concurrency` lanes at once) → handler; offsets stored as records
//!   finish (never past an unfinished one), committed as they advance
//!   (`kafka.consumer.commit_interval` apart at least).
//! - **baseline**: what a service would write by hand with rdkafka for the
//!   same guarantees: a `BaseConsumer` created with exactly the bus's
//!   consumer properties ([`consumer_properties`]: fetch sizes, prefetch,
//!   manual offset store; librdkafka's auto-commit every 5 s), polled on its own thread, which
//!   copies out of librdkafka what a handler needs (key, payload, the message
//!   id header, timestamp — what the bus's `Delivery` carries) and hands the
//!   records by key hash to `--concurrency` tokio tasks, one batch per task
//!   and poll batch (at most 512 records a turn, as the bus's poll thread
//!   hands over; bounded channels of 2 batches, so per-key order holds and
//!   the poll thread waits when a task is behind); each task handles its
//!   records one after another and reports their offsets back; the poll
//!   thread stores, per partition, the lowest unfinished offset
//!   ([`PartitionOffsets`], as the bus does), committed by that
//!   auto-commit. No retries, dead letters, metrics, tracing or other
//!   headers.
//!
//! Both handlers do the same work (per-key order check, count; the latency
//! since publish is not reported, the records were published before).
//! `cpu_us_per_msg` is the whole process's CPU time over the side's run
//! (group join included) per record: steadier than rates on a busy machine.
//! `side_peak_rss_mb` is the process's largest resident set while a side
//! ran and `side_rss_growth_mb` what the side added to the resident set it
//! started with ([`super::rss`]): the bus's memory while it reads the
//! filled topic, apart from the other sides of the run.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use jxt_eventbus::backend::kafka::{consumer_properties, MESSAGE_ID_HEADER};
use jxt_eventbus::config::TopicSettings;
use jxt_eventbus::offsets::PartitionOffsets;
use jxt_eventbus::{BackendKind, BusConfig, EventBus};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Headers as _, Message as _};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;

use super::rss::RssSampler;
use super::{cpu_since, process_cpu, BenchArgs, Outcome, Reference, SideResult, Tally};

const TIMEOUT: Duration = Duration::from_secs(600);
/// Records the baseline's poll thread takes per loop turn at most, as the
/// bus's poll thread does.
const POLL_BATCH: usize = 512;
/// Batches queued per baseline worker before the poll thread waits.
const QUEUED_BATCHES: usize = 2;

pub(crate) async fn run(args: &BenchArgs) -> Result<Outcome> {
    let brokers = args.brokers.clone();
    reachable(&brokers).await?;
    let run_id = super::run_id();
    let topic = format!("bench-{run_id}");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .context("admin client")?;
    let end_to_end = super::kafka_e2e::rounds(args, &brokers, &admin, &run_id).await?;
    let consumer_path = measure(args, &brokers, &topic, &run_id).await;
    let _ = admin.delete_topics(&[&topic], &AdminOptions::new()).await;
    let mut in_place = Vec::new();
    let mut keyed = Vec::new();
    for r in end_to_end {
        in_place.push((r.bus.clone(), r.in_place));
        keyed.push((r.bus, r.keyed));
    }
    Ok(Outcome {
        consumer_path: Some(Box::new(consumer_path?)),
        reference: Some(Reference {
            name: "keyed_end_to_end",
            outcome: Box::new(Outcome::new(keyed, super::kafka_e2e::KEYED_BASELINE)),
        }),
        ..Outcome::new(in_place, super::kafka_e2e::BASELINE)
    })
}

async fn measure(args: &BenchArgs, brokers: &str, topic: &str, run_id: &str) -> Result<Outcome> {
    let publish_msgs_per_sec = fill(args, brokers, topic, run_id).await?;
    let mut rounds = Vec::new();
    for round in 0..args.rounds.max(1) {
        let bus_group = format!("bench-bus-{run_id}-{round}");
        let raw_group = format!("bench-raw-{run_id}-{round}");
        let (bus, raw) = if round % 2 == 0 {
            let bus = bus_side(args, brokers, topic, &bus_group).await?;
            (bus, raw_side(args, brokers, topic, &raw_group).await?)
        } else {
            let raw = raw_side(args, brokers, topic, &raw_group).await?;
            (bus_side(args, brokers, topic, &bus_group).await?, raw)
        };
        rounds.push((bus, raw));
    }
    Ok(Outcome {
        publish_msgs_per_sec: Some(publish_msgs_per_sec),
        ..Outcome::new(rounds, "rdkafka BaseConsumer with the bus's consumer properties, poll thread → batches by key hash → --concurrency tokio tasks, lowest unfinished offset stored, auto-commit")
    })
}

pub(super) fn bus_config(args: &BenchArgs, brokers: &str, group: &str) -> BusConfig {
    let mut config = BusConfig {
        backend: BackendKind::Kafka,
        group: group.to_string(),
        ..(*args.config).clone()
    };
    config.kafka.brokers = brokers.split(',').map(str::to_string).collect();
    config.dispatch.max_concurrency = args.concurrency;
    config
}

/// Fails within the connect timeout when no broker answers, instead of
/// waiting for the first admin call's own (longer) timeout.
async fn reachable(brokers: &str) -> Result<()> {
    let mut config = BusConfig {
        backend: BackendKind::Kafka,
        ..BusConfig::default()
    };
    config.kafka.brokers = brokers.split(',').map(str::to_string).collect();
    let (consumer, context) = crate::kafka_client::consumer(&config, "bench")?;
    crate::kafka_client::metadata(
        std::sync::Arc::new(consumer),
        &context,
        &config,
        None,
        config.kafka.connect_timeout,
    )
    .await?;
    Ok(())
}

/// A bus on `brokers` in `group` that creates `topic` with `--partitions`
/// partitions at build (topic strategy create_only).
pub(super) async fn bus_with_topic(
    args: &BenchArgs,
    brokers: &str,
    group: &str,
    topic: &str,
) -> Result<EventBus> {
    let mut config = bus_config(args, brokers, group);
    config.kafka.topics.insert(
        topic.to_string(),
        TopicSettings {
            partitions: Some(args.partitions),
            ..TopicSettings::default()
        },
    );
    EventBus::from_config(config)
        .await
        .with_context(|| format!("cannot start the bus on Kafka at {brokers}"))
}

/// Fills the topic through the bus; returns the publish rate.
async fn fill(args: &BenchArgs, brokers: &str, topic: &str, run_id: &str) -> Result<f64> {
    let bus = bus_with_topic(args, brokers, &format!("bench-fill-{run_id}"), topic).await?;
    let started = Instant::now();
    super::publish_windows(&bus, topic, args, args.window).await?;
    let rate = args.messages as f64 / started.elapsed().as_secs_f64();
    bus.shutdown().await?;
    Ok(rate)
}

/// Reads the topic through the bus in a new group.
async fn bus_side(args: &BenchArgs, brokers: &str, topic: &str, group: &str) -> Result<SideResult> {
    // Sampled from before the client is built, so the side's growth holds
    // everything of the bus.
    let rss = RssSampler::start();
    let bus = EventBus::from_config(bus_config(args, brokers, group)).await?;
    let tally = Tally::new(args.messages, args.keys, args.work());
    let cpu_before = process_cpu();
    tally.subscribe(&bus, topic).await?;
    let mut result = tally.wait(TIMEOUT).await?;
    result.cpu = cpu_since(cpu_before);
    result.rss = rss.map(RssSampler::finish);
    bus.shutdown().await?;
    Ok(without_latency(result))
}

/// Waits for a raw consumer's poll thread (told to stop) and returns its error.
pub(super) async fn join_poller(poller: std::thread::JoinHandle<Result<()>>) -> Result<()> {
    match tokio::task::spawn_blocking(move || poller.join()).await? {
        Ok(result) => result,
        Err(_) => bail!("raw consumer thread panicked"),
    }
}

fn without_latency(mut r: SideResult) -> SideResult {
    r.p50_us = None;
    r.p99_us = None;
    r
}

/// A record handed from the baseline's poll thread to a worker task: what a
/// handler needs of it, owned (the bus's `Delivery` carries the same).
#[allow(dead_code)] // Only the payload is read by the bench's handler.
struct RawJob {
    partition: i32,
    offset: i64,
    id: Option<String>,
    key: Option<Bytes>,
    timestamp: Option<i64>,
    payload: Bytes,
}

/// A hand-written consumer's client: the bus's consumer properties (fetch
/// sizes, prefetch, manual offset store), committing the stored offsets with
/// librdkafka's own timer at its default interval (5 s), as such consumers
/// do; the bus commits its positions itself, as they advance.
pub(super) fn hand_written_client(config: &jxt_eventbus::BusConfig, group: &str) -> ClientConfig {
    let mut client = ClientConfig::new();
    for (k, v) in consumer_properties(config, group) {
        client.set(k, v);
    }
    client.set("enable.auto.commit", "true");
    client.set("auto.commit.interval.ms", "5000");
    client
}

/// Reads the topic by hand in a new group (see the module docs).
async fn raw_side(args: &BenchArgs, brokers: &str, topic: &str, group: &str) -> Result<SideResult> {
    let rss = RssSampler::start();
    let config = bus_config(args, brokers, group);
    let consumer: BaseConsumer = hand_written_client(&config, group).create()?;
    consumer.subscribe(&[topic])?;
    let tally = Tally::new(args.messages, args.keys, args.work());
    let cpu_before = process_cpu();
    let keyed = spawn_keyed(args, consumer, topic, &tally);
    let result = tally.wait(TIMEOUT).await;
    let cpu = cpu_since(cpu_before);
    let rss = rss.map(RssSampler::finish);
    keyed.stop().await?;
    let mut result = result?;
    result.cpu = cpu;
    result.rss = rss;
    Ok(without_latency(result))
}

/// A raw consumer's poll thread, running until stopped.
pub(super) struct RawPoller {
    pub(super) poller: std::thread::JoinHandle<Result<()>>,
    pub(super) stop: Arc<AtomicBool>,
    /// Set once the group assigned every partition of the topic.
    pub(super) assigned: Arc<AtomicBool>,
}

impl RawPoller {
    /// Stops the poll thread; returns its error.
    pub(super) async fn stop(self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        join_poller(self.poller).await
    }
}

/// Starts the hand-written keyed consumer on `consumer` (subscribed to
/// `topic`): a poll thread handing records by key hash to `--concurrency`
/// tokio tasks, each handling its records in order through `tally`, and
/// storing the lowest unfinished offset per partition.
pub(super) fn spawn_keyed(
    args: &BenchArgs,
    consumer: BaseConsumer,
    topic: &str,
    tally: &Arc<Tally>,
) -> RawPoller {
    // Workers: one FIFO per key hash bucket, fed in batches (one per poll
    // batch and worker, as the bus's poll thread hands over batches).
    let workers = args.concurrency.max(1);
    let (done_tx, done_rx) = std_mpsc::channel::<Vec<(i32, i64)>>();
    let mut queues = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (tx, mut rx) = mpsc::channel::<Vec<RawJob>>(QUEUED_BATCHES);
        let (t, done) = (tally.clone(), done_tx.clone());
        tokio::spawn(async move {
            while let Some(jobs) = rx.recv().await {
                let mut finished = Vec::with_capacity(jobs.len());
                for job in jobs {
                    t.handle(&job.payload).await;
                    finished.push((job.partition, job.offset));
                }
                let _ = done.send(finished);
            }
        });
        queues.push(tx);
    }
    drop(done_tx);
    let stop = Arc::new(AtomicBool::new(false));
    let assigned = Arc::new(AtomicBool::new(false));
    let poll = PollLoop {
        consumer,
        topic: topic.to_string(),
        partitions: args.partitions as usize,
        queues,
        done: done_rx,
        stop: stop.clone(),
        assigned: assigned.clone(),
    };
    let poller = std::thread::spawn(move || poll.run());
    RawPoller {
        poller,
        stop,
        assigned,
    }
}

/// The keyed consumer's poll thread.
struct PollLoop {
    consumer: BaseConsumer,
    topic: String,
    partitions: usize,
    queues: Vec<mpsc::Sender<Vec<RawJob>>>,
    done: std_mpsc::Receiver<Vec<(i32, i64)>>,
    stop: Arc<AtomicBool>,
    assigned: Arc<AtomicBool>,
}

impl PollLoop {
    /// Polls, hands records to workers by key hash, stores the lowest
    /// unfinished offset per partition.
    fn run(self) -> Result<()> {
        let PollLoop {
            consumer,
            topic,
            partitions,
            queues,
            done,
            stop,
            assigned,
        } = self;
        let mut offsets: HashMap<i32, PartitionOffsets> = HashMap::new();
        let mut advanced: HashMap<i32, i64> = HashMap::new();
        let mut batches: Vec<Vec<RawJob>> = (0..queues.len()).map(|_| Vec::new()).collect();
        while !stop.load(Ordering::Relaxed) {
            let mut wait = Duration::from_millis(50);
            for _ in 0..POLL_BATCH {
                let m = match consumer.poll(wait) {
                    None => break,
                    Some(Ok(m)) => m,
                    Some(Err(e)) if topic_not_known_yet(&e) => break,
                    Some(Err(e)) => bail!("raw consumer failed: {e}"),
                };
                wait = Duration::ZERO;
                let key = m.key().map(Bytes::copy_from_slice);
                let shard = key.as_deref().map_or(0, fnv1a) as usize % queues.len();
                offsets
                    .entry(m.partition())
                    .or_default()
                    .deliver(m.offset());
                // The message id, for de-duplication, as the bus reads it.
                let id = m.headers().and_then(|hs| {
                    hs.iter()
                        .find(|h| h.key == MESSAGE_ID_HEADER)
                        .and_then(|h| std::str::from_utf8(h.value?).ok().map(str::to_string))
                });
                let job = RawJob {
                    partition: m.partition(),
                    offset: m.offset(),
                    id,
                    key,
                    timestamp: m.timestamp().to_millis(),
                    payload: m.payload().map(Bytes::copy_from_slice).unwrap_or_default(),
                };
                batches[shard].push(job);
            }
            for (queue, batch) in queues.iter().zip(batches.iter_mut()) {
                if !batch.is_empty() && queue.blocking_send(std::mem::take(batch)).is_err() {
                    return Ok(());
                }
            }
            for (partition, offset) in done.try_iter().flatten() {
                if let Some(position) = offsets.get_mut(&partition).and_then(|o| o.complete(offset))
                {
                    advanced.insert(partition, position);
                }
            }
            if !advanced.is_empty() {
                let mut tpl = TopicPartitionList::with_capacity(advanced.len());
                for (partition, position) in advanced.drain() {
                    tpl.add_partition_offset(&topic, partition, Offset::Offset(position))?;
                }
                consumer.store_offsets(&tpl)?;
            }
            if !assigned.load(Ordering::Relaxed)
                && consumer.assignment().is_ok_and(|a| a.count() == partitions)
            {
                assigned.store(true, Ordering::Release);
            }
        }
        Ok(())
    }
}

/// FNV-1a: a cheap stable hash to pick a key's worker.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A topic created a moment ago may be unknown to the consumer's first
/// metadata: librdkafka reports it as a consumption error and fetches it at
/// the next metadata refresh, as the bus's consumer does. Not a failure.
pub(super) fn topic_not_known_yet(e: &rdkafka::error::KafkaError) -> bool {
    matches!(
        e,
        rdkafka::error::KafkaError::MessageConsumption(
            rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition
        )
    )
}
