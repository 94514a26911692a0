//! Kafka benchmark: the bus end to end (publish → broker → keyed dispatch →
//! handler, offsets stored only for finished records, periodic commits) vs
//! rdkafka doing the same hand-off by hand — a `FutureProducer` and one
//! `BaseConsumer` poll loop handling every record in the polling thread,
//! with auto-commit.
//!
//! Both sides use the same broker (`EVENTBUS_KAFKA_BROKERS`, default
//! `127.0.0.1:9092`), their own topic with `--partitions` partitions, the
//! same producer settings (acks=all, idempotent, linger 5ms, murmur2_random)
//! and publish in windows of `--window` records whose delivery reports are
//! awaited together (the bus through `publish_batch`). The sides run one
//! after the other; both topics are deleted afterwards.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _, Result};
use futures::future::join_all;
use jxt_eventbus::config::TopicSettings;
use jxt_eventbus::{BackendKind, BusConfig, EventBus};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::{key_of, payload, BenchArgs, SideResult, Tally};

const TIMEOUT: Duration = Duration::from_secs(600);

pub(crate) async fn run(args: &BenchArgs) -> Result<(SideResult, SideResult, &'static str)> {
    let brokers = std::env::var("EVENTBUS_KAFKA_BROKERS")
        .ok()
        .filter(|b| !b.trim().is_empty())
        .unwrap_or_else(|| "127.0.0.1:9092".into());
    let run_id = format!(
        "{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    );
    let (bus_topic, raw_topic) = (format!("bench-bus-{run_id}"), format!("bench-raw-{run_id}"));
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .context("admin client")?;
    let bus = bus_side(args, &brokers, &bus_topic, &run_id).await;
    let raw = raw_side(args, &brokers, &admin, &raw_topic, &run_id).await;
    let _ = admin
        .delete_topics(&[&bus_topic, &raw_topic], &AdminOptions::new())
        .await;
    Ok((
        bus?,
        raw?,
        "rdkafka: FutureProducer (same settings) + one BaseConsumer poll loop handling records in place, auto-commit",
    ))
}

fn message(args: &BenchArgs, i: u64) -> (String, Vec<u8>) {
    let (k, seq, key) = key_of(i, args.keys);
    (key, payload(k, seq, args.size))
}

async fn bus_side(
    args: &BenchArgs,
    brokers: &str,
    topic: &str,
    run_id: &str,
) -> Result<SideResult> {
    let mut config = BusConfig {
        backend: BackendKind::Kafka,
        group: format!("bench-bus-{run_id}"),
        ..BusConfig::default()
    };
    config.kafka.brokers = brokers.split(',').map(str::to_string).collect();
    // The bus creates its topic at build (topic strategy create_only).
    config.kafka.topics.insert(
        topic.to_string(),
        TopicSettings {
            partitions: Some(args.partitions),
            ..TopicSettings::default()
        },
    );
    config.dispatch.max_concurrency = args.concurrency;
    let bus = EventBus::from_config(config).await.with_context(|| {
        format!("cannot start the bus on Kafka at {brokers} (EVENTBUS_KAFKA_BROKERS)")
    })?;
    super::bus_side_windowed(bus, topic, args, args.window).await
}

async fn raw_side(
    args: &BenchArgs,
    brokers: &str,
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
    run_id: &str,
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
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("bench-raw-{run_id}"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .create()?;
    consumer.subscribe(&[topic])?;
    let tally = Tally::new(args.messages, args.keys);
    let stop = Arc::new(AtomicBool::new(false));
    let assigned = Arc::new(AtomicBool::new(false));
    let (t, s, a) = (tally.clone(), stop.clone(), assigned.clone());
    let partitions = args.partitions as usize;
    let poller = std::thread::spawn(move || -> Result<()> {
        while !s.load(Ordering::Relaxed) {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => t.record(m.payload().unwrap_or_default()),
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
    // As the bus's subscribe does: start publishing once the group assigned.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !assigned.load(Ordering::Acquire) {
        if tokio::time::Instant::now() > deadline || poller.is_finished() {
            stop.store(true, Ordering::Relaxed);
            bail!("the raw consumer got no assignment within 60s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tally.start();
    let mut from = 0;
    while from < args.messages {
        let to = (from + args.window.max(1)).min(args.messages);
        let records: Vec<(String, Vec<u8>)> = (from..to).map(|i| message(args, i)).collect();
        let mut deliveries = Vec::with_capacity(records.len());
        for (key, p) in &records {
            let mut record = FutureRecord::to(topic)
                .key(key.as_str())
                .payload(p.as_slice());
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
    stop.store(true, Ordering::Relaxed);
    match poller.join() {
        Ok(Err(e)) => return Err(e),
        Err(_) => bail!("raw consumer thread panicked"),
        Ok(Ok(())) => {}
    }
    result
}
