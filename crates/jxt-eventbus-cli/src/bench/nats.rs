//! NATS JetStream benchmark: the bus vs async-nats doing the same hand-off
//! by hand, end to end (publish → stream → consume → handler → ack).
//!
//! - **bus**: `publish_batch` in windows of [`WINDOW`] (every PubAck of a
//!   window awaited together; `Nats-Msg-Id` and key headers) → the bus's
//!   pull loop ([`PULL_BATCH`] per request, pinned priority group: the
//!   default `nats.consumer.sharing`; `--nats-sharing shared` for none) →
//!   keyed dispatch (`--concurrency` lanes) → handler → `+ACK` after the
//!   handler.
//! - **baseline** (the headline, as the NATS issue defines it): plain
//!   async-nats: `send_publish` of the same windows with PubAcks awaited
//!   together, a durable pull consumer (explicit acks, the same
//!   [`PULL_BATCH`] and [`MAX_ACK_PENDING`]) read by one task that handles
//!   each message and acks it. No lanes, no dispatch, no priority group.
//! - **pinned by hand** (reported apart, `pinned_end_to_end`): the same
//!   baseline on a consumer with the pinned-client priority group the bus
//!   uses (async-nats keeps the pin). The server writes a `Nats-Pin-Id`
//!   header into every record it delivers to a pinned consumer, a cost per
//!   record that falls mostly on the server; this side shows how much of
//!   the headline's gap that is, and what is the bus's own.
//!
//! Both raw sides set `Nats-Msg-Id`, as the bus does: de-duplication is the
//! documented JetStream practice. Their ids are UUIDv7s in the same text
//! form as the bus's, as an application would make them: the server's work
//! per record grows with the id's length (it keeps, stores and sends every
//! id), and a short counter (`raw-17`) saved it about a tenth, which the
//! comparison charged to the bus.
//!
//! Each side publishes into its own new file stream on the server at
//! `EVENTBUS_DEV_NATS_URL` (default `nats://127.0.0.1:4222`); the streams are
//! deleted after each side. `--rounds` rounds run the three sides one after
//! the other, the side that goes first rotating, so no side always meets the
//! server's state (or the machine's load) first. Every round is printed on
//! stderr; the report gives medians over the rounds. `cpu_us_per_msg` is
//! the whole process's CPU time over the side's run (set-up and shutdown
//! included) per record: steadier than rates on a busy machine. JetStream
//! has no partitions: `--partitions` does not apply.

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use async_nats::jetstream::consumer::{pull, AckPolicy, PriorityPolicy};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, stream};
use futures::StreamExt;
use jxt_eventbus::config::NatsSharing;
use jxt_eventbus::{BackendKind, BusConfig, EventBus};

use super::{
    cpu_since, key_of, payload, process_cpu, BenchArgs, NatsSharingArg, Outcome, Reference,
    SideResult, Tally,
};

const TIMEOUT: Duration = Duration::from_secs(600);
/// Publishes on the wire before their PubAcks are awaited, on both sides.
const WINDOW: u64 = 1_000;
/// Records per pull request, on both sides.
const PULL_BATCH: usize = 256;
/// Unacknowledged records the consumer may hold, on both sides (the bus's
/// default, `dispatch.max_buffered`).
const MAX_ACK_PENDING: i64 = 10_000;

const BASELINE: &str = "async-nats: publish with Nats-Msg-Id and PubAck in the same windows, durable pull consumer with explicit acks, one handler task";

const PINNED_BASELINE: &str = "async-nats as the baseline, on a consumer with the pinned-client priority group the bus uses by default (async-nats keeps the pin)";

/// How a raw side's consumer is shared.
#[derive(Clone, Copy, Debug)]
enum RawConsumer {
    /// No priority group.
    Plain,
    /// The pinned-client priority group, as the bus's default.
    Pinned,
}

#[derive(Clone, Copy)]
enum Side {
    Bus,
    Raw(RawConsumer),
}

const SIDES: [Side; 3] = [
    Side::Bus,
    Side::Raw(RawConsumer::Plain),
    Side::Raw(RawConsumer::Pinned),
];

/// The priority group of the pinned baseline's consumer.
const GROUP: &str = "bench";
/// The pinned baseline's pin lifetime: the bus's default (twice `ack_wait`).
const PINNED_TTL: Duration = Duration::from_secs(60);

pub(crate) async fn run(args: &BenchArgs) -> Result<Outcome> {
    let url = args.nats_url.clone();
    let shown = crate::global::mask_url(&url);
    let client = tokio::time::timeout(
        Duration::from_secs(10),
        async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .connect(url.as_str()),
    )
    .await
    .map_err(|_| anyhow::anyhow!("no NATS server answered at {shown} within 10s"))?
    .with_context(|| format!("cannot connect to NATS at {shown}"))?;
    let js = jetstream::new(client);
    let run_id = super::run_id();
    let (mut plain, mut pinned) = (Vec::new(), Vec::new());
    for round in 0..args.rounds.max(1) {
        let mut results: [Option<SideResult>; 3] = [None, None, None];
        for turn in 0..SIDES.len() {
            let i = (round as usize + turn) % SIDES.len();
            let topic = format!("bench-{i}-{run_id}-{round}");
            let before = process_cpu();
            let result = match SIDES[i] {
                Side::Bus => bus_side(args, &url, &topic).await,
                Side::Raw(kind) => raw_side(args, &js, &topic, kind).await,
            };
            let cpu = cpu_since(before);
            if let Ok(name) = js.stream_by_subject(topic.as_str()).await {
                let _ = js.delete_stream(&name).await;
            }
            results[i] = Some(SideResult { cpu, ..result? });
        }
        let [Some(bus), Some(raw), Some(raw_pinned)] = results else {
            unreachable!("every side ran");
        };
        report_round(args, round, &bus, &raw, &raw_pinned);
        plain.push((bus.clone(), raw));
        pinned.push((bus, raw_pinned));
    }
    Ok(Outcome {
        reference: Some(Reference {
            name: "pinned_end_to_end",
            outcome: Box::new(Outcome::new(pinned, PINNED_BASELINE)),
        }),
        ..Outcome::new(plain, BASELINE)
    })
}

/// One line per round on stderr (the JSON line gives medians).
fn report_round(
    args: &BenchArgs,
    round: u32,
    bus: &SideResult,
    raw: &SideResult,
    pinned: &SideResult,
) {
    let rate = |r: &SideResult| args.messages as f64 / r.elapsed.as_secs_f64();
    let cpu = |r: &SideResult| {
        r.cpu.map_or("-".into(), |c| {
            format!("{:.2}", c.as_secs_f64() * 1e6 / args.messages as f64)
        })
    };
    let ratio = |r: &SideResult| rate(bus) / rate(r);
    eprintln!(
        "round {round}: bus {:.0} msg/s cpu {} us/msg; raw {:.0} msg/s cpu {} us/msg, ratio {:.3}; raw pinned {:.0} msg/s cpu {} us/msg, ratio {:.3}",
        rate(bus),
        cpu(bus),
        rate(raw),
        cpu(raw),
        ratio(raw),
        rate(pinned),
        cpu(pinned),
        ratio(pinned),
    );
}

/// Messages `from..to`: key and a payload stamped now.
fn payloads(args: &BenchArgs, from: u64, to: u64) -> Vec<(String, Vec<u8>)> {
    (from..to)
        .map(|i| {
            let (k, seq, key) = key_of(i, args.keys);
            (key, payload(k, seq, args.size))
        })
        .collect()
}

async fn bus_side(args: &BenchArgs, url: &str, topic: &str) -> Result<SideResult> {
    let mut config = BusConfig {
        backend: BackendKind::Nats,
        group: "bench".into(),
        ..(*args.config).clone()
    };
    config.nats.servers = vec![url.to_string()];
    config.nats.pull_batch = PULL_BATCH;
    config.nats.max_ack_pending = Some(MAX_ACK_PENDING as u32);
    config.dispatch.max_concurrency = args.concurrency;
    config.nats.consumer.sharing = match args.nats_sharing {
        NatsSharingArg::Pinned => NatsSharing::Pinned,
        NatsSharingArg::Shared => NatsSharing::Shared,
    };
    let bus = EventBus::from_config(config).await?;
    super::bus_side_windowed(bus, topic, args, WINDOW).await
}

async fn raw_side(
    args: &BenchArgs,
    js: &jetstream::Context,
    topic: &str,
    kind: RawConsumer,
) -> Result<SideResult> {
    let stream = js
        .create_stream(stream::Config {
            name: topic.to_string(),
            subjects: vec![topic.to_string()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await?;
    let mut config = pull::Config {
        durable_name: Some("bench".into()),
        ack_policy: AckPolicy::Explicit,
        max_ack_pending: MAX_ACK_PENDING,
        ..Default::default()
    };
    if let RawConsumer::Pinned = kind {
        config.priority_policy = PriorityPolicy::PinnedClient;
        config.priority_groups = vec![GROUP.to_string()];
        config.priority_timeout = PINNED_TTL;
    }
    let consumer = stream.create_consumer(config).await?;
    let tally = Tally::new(args.messages, args.keys, args.work());
    let mut pull = consumer
        .stream()
        .max_messages_per_batch(PULL_BATCH)
        .heartbeat(Duration::from_secs(5));
    if let RawConsumer::Pinned = kind {
        pull = pull.group(GROUP);
    }
    let mut messages = pull.messages().await?;
    let t: Arc<Tally> = tally.clone();
    let handler = tokio::spawn(async move {
        while let Some(m) = messages.next().await {
            let m = match m {
                Ok(m) => m,
                Err(e) => return Err(anyhow::anyhow!("pull consumer failed: {e}")),
            };
            t.handle(&m.payload).await;
            if let Err(e) = m.ack().await {
                return Err(anyhow::anyhow!("ack failed: {e}"));
            }
        }
        Ok(())
    });
    tally.start();
    let mut from = 0;
    while from < args.messages {
        let to = (from + WINDOW).min(args.messages);
        let mut acks = Vec::with_capacity((to - from) as usize);
        // The same headers as the bus sends: id (de-duplication) and key.
        for (key, p) in payloads(args, from, to) {
            let publish = PublishMessage::build()
                .payload(p.into())
                .message_id(uuid::Uuid::now_v7().to_string())
                .header("X-Message-Key", key.as_str());
            acks.push(js.send_publish(topic.to_string(), publish).await?);
        }
        for ack in futures::future::join_all(acks.into_iter().map(|a| a.into_future())).await {
            ack?;
        }
        from = to;
    }
    let result = tally.wait(TIMEOUT).await;
    handler.abort();
    if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(1), handler).await {
        bail!(e);
    }
    result
}
