//! The Kafka benchmark's headline, as the Kafka issue defines it: end to end
//! (publish → broker → consumer → handler, at-least-once commits on), the
//! bus against plain rdkafka — a producer and one consumer loop handling
//! each record in place — on the same broker and the same messages.
//!
//! Each round runs three sides, each on a topic of its own with
//! `--partitions` partitions, the side that goes first rotating. All publish in windows
//! of `--window` records whose acknowledgements are awaited together (the bus
//! through `publish_batch`, rdkafka through a `FutureProducer` with the bus's
//! producer settings: acks=all, idempotent, murmur2_random, linger 5ms, and
//! the same records: key, payload and a message id header) while
//! their consumer reads; the interval runs from the first publish to the
//! last record handled.
//!
//! - **bus**: keyed dispatch (`--concurrency` lanes), offsets stored as
//!   records finish, committed as they advance.
//! - **baseline**: a `BaseConsumer` with the bus's consumer properties (the
//!   same fetch settings; librdkafka's auto-commit of stored offsets) polled in a loop
//!   that handles each record where it polled it and stores its offset: no
//!   keyed parallelism, nothing to hand over.
//! - **keyed by hand** (reported apart, `keyed_end_to_end`): the same
//!   producer, and the hand-written keyed consumer of the consumer-path
//!   comparison ([`super::kafka`]). It shows what keyed parallel handling
//!   costs by itself, so the bus's own share of the gap is visible.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use futures::future::join_all;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Header, Message as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use uuid::Uuid;

use jxt_eventbus::backend::kafka::MESSAGE_ID_HEADER;

use super::kafka::{bus_config, bus_with_topic, spawn_keyed, RawPoller};
use super::{cpu_since, key_of, payload, process_cpu, BenchArgs, SideResult, Tally};

const TIMEOUT: Duration = Duration::from_secs(600);

pub(crate) const BASELINE: &str =
    "rdkafka end to end: FutureProducer (bus's producer settings) + one BaseConsumer loop (bus's consumer properties) handling and storing each record in place, auto-commit";

pub(crate) const KEYED_BASELINE: &str =
    "rdkafka end to end, keyed by hand: FutureProducer (bus's producer settings) + the consumer_path baseline (poll thread -> batches by key hash -> --concurrency tokio tasks, lowest unfinished offset stored, auto-commit)";

/// How a raw side consumes.
#[derive(Clone, Copy, Debug)]
pub(super) enum RawConsumer {
    /// One loop handling each record where it polled it.
    InPlace,
    /// The hand-written keyed consumer of the consumer-path comparison.
    Keyed,
}

/// The three sides of one round.
pub(crate) struct Round {
    pub(crate) bus: SideResult,
    pub(crate) in_place: SideResult,
    pub(crate) keyed: SideResult,
}

#[derive(Clone, Copy)]
enum Side {
    Bus,
    Raw(RawConsumer),
}

/// `--rounds` rounds of the three sides, the side that goes first rotating.
pub(crate) async fn rounds(
    args: &BenchArgs,
    brokers: &str,
    admin: &AdminClient<DefaultClientContext>,
    run_id: &str,
) -> Result<Vec<Round>> {
    const SIDES: [Side; 3] = [
        Side::Bus,
        Side::Raw(RawConsumer::InPlace),
        Side::Raw(RawConsumer::Keyed),
    ];
    let mut rounds = Vec::new();
    for round in 0..args.rounds.max(1) {
        let mut results: [Option<SideResult>; 3] = [None, None, None];
        for turn in 0..SIDES.len() {
            let i = (round as usize + turn) % SIDES.len();
            let topic = format!("bench-e2e-{i}-{run_id}-{round}");
            let result = match SIDES[i] {
                Side::Bus => bus_side(args, brokers, &topic).await,
                Side::Raw(kind) => raw_side(args, brokers, admin, &topic, kind).await,
            };
            let _ = admin.delete_topics(&[&topic], &AdminOptions::new()).await;
            results[i] = Some(result?);
        }
        let [Some(bus), Some(in_place), Some(keyed)] = results else {
            unreachable!("every side ran");
        };
        rounds.push(Round {
            bus,
            in_place,
            keyed,
        });
    }
    Ok(rounds)
}

pub(super) async fn bus_side(args: &BenchArgs, brokers: &str, topic: &str) -> Result<SideResult> {
    let bus = bus_with_topic(args, brokers, &format!("{topic}-group"), topic).await?;
    let cpu_before = process_cpu();
    let mut result = super::bus_side_windowed(bus, topic, args, args.window).await?;
    result.cpu = cpu_since(cpu_before);
    Ok(result)
}

pub(super) async fn raw_side(
    args: &BenchArgs,
    brokers: &str,
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
    kind: RawConsumer,
) -> Result<SideResult> {
    let new = NewTopic::new(topic, args.partitions as i32, TopicReplication::Fixed(1));
    for r in admin
        .create_topics(
            [&new],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await?
    {
        if let Err((name, code)) = r {
            bail!("cannot create topic {name}: {code}");
        }
    }
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("partitioner", "murmur2_random")
        .set("message.timeout.ms", "30000")
        .create()?;
    let group = format!("{topic}-group");
    let client = super::kafka::hand_written_client(&bus_config(args, brokers, &group), &group);
    let consumer: BaseConsumer = client.create()?;
    consumer.subscribe(&[topic])?;
    let tally = Tally::new(args.messages, args.keys, args.work());
    let cpu_before = process_cpu();
    let poller = match kind {
        RawConsumer::InPlace => spawn_in_place(consumer, args.partitions as usize, &tally),
        RawConsumer::Keyed => spawn_keyed(args, consumer, topic, &tally),
    };
    // As the bus's subscribe does: publish once the group assigned.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !poller.assigned.load(Ordering::Acquire) {
        if tokio::time::Instant::now() > deadline || poller.poller.is_finished() {
            poller.stop().await?;
            bail!("the raw consumer got no assignment within 60s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tally.start();
    let mut from = 0;
    while from < args.messages {
        let to = (from + args.window.max(1)).min(args.messages);
        // Each record carries a message id as the bus's do (a UUIDv7 in
        // `X-Message-ID`), which the keyed consumer reads for de-duplication.
        let records: Vec<(String, Vec<u8>, String)> = (from..to)
            .map(|i| {
                let (k, seq, key) = key_of(i, args.keys);
                (key, payload(k, seq, args.size), Uuid::now_v7().to_string())
            })
            .collect();
        let mut deliveries = Vec::with_capacity(records.len());
        for (key, p, id) in &records {
            let headers = OwnedHeaders::new_with_capacity(1).insert(Header {
                key: MESSAGE_ID_HEADER,
                value: Some(id.as_str()),
            });
            let mut record = FutureRecord::to(topic)
                .key(key.as_str())
                .payload(p.as_slice())
                .headers(headers);
            loop {
                match producer.send_result(record) {
                    Ok(d) => break deliveries.push(d),
                    Err((e, back))
                        if e.rdkafka_error_code()
                            == Some(rdkafka::error::RDKafkaErrorCode::QueueFull) =>
                    {
                        record = back;
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    Err((e, _)) => bail!("raw publish failed: {e}"),
                }
            }
        }
        for d in join_all(deliveries).await {
            if let Err((e, _)) = d? {
                bail!("raw delivery failed: {e}");
            }
        }
        from = to;
    }
    let result = tally.wait(TIMEOUT).await;
    let cpu = cpu_since(cpu_before);
    poller.stop().await?;
    let mut result = result?;
    result.cpu = cpu;
    Ok(result)
}

/// Starts the in-place consumer on `consumer`: one loop handling each record
/// where it polled it and storing its offset.
fn spawn_in_place(consumer: BaseConsumer, partitions: usize, tally: &Arc<Tally>) -> RawPoller {
    let stop = Arc::new(AtomicBool::new(false));
    let assigned = Arc::new(AtomicBool::new(false));
    let (t, s, a) = (tally.clone(), stop.clone(), assigned.clone());
    let poller = std::thread::spawn(move || -> Result<()> {
        while !s.load(Ordering::Relaxed) {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    t.handle_blocking(m.payload().unwrap_or_default());
                    consumer.store_offset(m.topic(), m.partition(), m.offset() + 1)?;
                }
                Some(Err(e)) if super::kafka::topic_not_known_yet(&e) => {}
                Some(Err(e)) => bail!("raw consumer failed: {e}"),
                None => {}
            }
            if !a.load(Ordering::Relaxed)
                && consumer.assignment().is_ok_and(|x| x.count() == partitions)
            {
                a.store(true, Ordering::Release);
            }
        }
        Ok(())
    });
    RawPoller {
        poller,
        stop,
        assigned,
    }
}
