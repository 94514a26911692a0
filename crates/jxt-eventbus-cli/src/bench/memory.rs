//! Memory backend benchmark: the bus over the in-memory broker vs a tokio
//! mpsc pipeline doing the same hand-off (publisher task → consumer task
//! handling each message), over `--rounds` rounds, the side that goes first
//! alternating. Both sides' rates are bimodal from run to run (where the
//! scheduler puts their tasks), so one round decides little; the CPU time a
//! side used per record (the whole process's, publisher included) is steadier
//! on a shared machine.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use jxt_eventbus::config::MemoryConfig;
use jxt_eventbus::{BusConfig, EventBus, MemoryBroker, Message};

use super::{cpu_since, key_of, payload, process_cpu, BenchArgs, Outcome, SideResult, Tally};

const TIMEOUT: Duration = Duration::from_secs(600);

pub(crate) async fn run(args: &BenchArgs) -> Result<Outcome> {
    let mut rounds = Vec::new();
    for round in 0..args.rounds.max(1) {
        rounds.push(if round % 2 == 0 {
            let bus = bus_side(args).await?;
            (bus, raw_side(args).await?)
        } else {
            let raw = raw_side(args).await?;
            (bus_side(args).await?, raw)
        });
    }
    Ok(Outcome::new(
        rounds,
        "tokio mpsc channel, one consumer task",
    ))
}

fn message(args: &BenchArgs, i: u64) -> Message {
    let (k, seq, key) = key_of(i, args.keys);
    Message::new(payload(k, seq, args.size)).with_key(key)
}

pub(super) async fn bus_side(args: &BenchArgs) -> Result<SideResult> {
    let mut config = BusConfig {
        backend: jxt_eventbus::BackendKind::Memory,
        group: "bench".into(),
        ..(*args.config).clone()
    };
    config.dispatch.max_concurrency = args.concurrency;
    let broker = MemoryBroker::new(MemoryConfig {
        partitions: args.partitions,
        ..MemoryConfig::default()
    });
    let bus = EventBus::builder()
        .config(config)
        .memory_broker(broker)
        .build()
        .await?;
    let tally = Tally::new(args.messages, args.keys, args.work());
    tally.subscribe(&bus, "bench").await?;
    let cpu_before = process_cpu();
    tally.start();
    for i in 0..args.messages {
        bus.publish("bench", message(args, i)).await?;
    }
    let mut result = tally.wait(TIMEOUT).await?;
    result.cpu = cpu_since(cpu_before);
    bus.shutdown().await?;
    Ok(result)
}

async fn raw_side(args: &BenchArgs) -> Result<SideResult> {
    let tally = Tally::new(args.messages, args.keys, args.work());
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Message>(1024);
    let t: Arc<Tally> = tally.clone();
    let consumer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            t.handle(m.payload()).await;
        }
    });
    let cpu_before = process_cpu();
    tally.start();
    for i in 0..args.messages {
        tx.send(message(args, i)).await?;
    }
    drop(tx);
    let mut result = tally.wait(TIMEOUT).await?;
    result.cpu = cpu_since(cpu_before);
    consumer.await?;
    Ok(result)
}
