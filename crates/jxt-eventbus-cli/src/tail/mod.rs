//! `eventbus tail TOPIC...`: show records as they arrive, or from a given
//! position, without disturbing any consumer group.
//!
//! | backend | how it reads |
//! |---------|--------------|
//! | Kafka | an assign-only consumer in a throwaway group (`eventbus-tail-<uuid>`): it never joins a group's rebalance and never commits |
//! | NATS | an ordered consumer per topic: ephemeral, unacknowledged, gone when tail exits; durable consumers are not touched |
//! | memory | refused: the memory backend lives inside one process, and tail's process is not the service's |
//!
//! `--from` is `latest` (default: only what arrives from now on),
//! `earliest`, an offset (Kafka: in every partition; NATS: a stream
//! sequence) or a duration ago (`10m`: records since then).

use std::time::{Duration, SystemTime};

use anyhow::{bail, Result};
use clap::Args;
#[cfg(any(feature = "kafka", feature = "nats"))]
use jxt_eventbus::BackendKind;
use jxt_eventbus::Message;
use tokio::sync::mpsc;

use crate::global::{self, Global};

#[cfg(feature = "kafka")]
mod kafka;
#[cfg(feature = "nats")]
mod nats;
pub(crate) mod render;

/// Where reading starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum From {
    Earliest,
    Latest,
    Offset(i64),
    Since(SystemTime),
}

fn from(text: &str) -> Result<From, String> {
    match text {
        "earliest" | "beginning" => Ok(From::Earliest),
        "latest" | "end" => Ok(From::Latest),
        _ => {
            if let Ok(offset) = text.parse::<i64>() {
                return if offset >= 0 {
                    Ok(From::Offset(offset))
                } else {
                    Err("an offset is 0 or more".to_string())
                };
            }
            let ago = humantime::parse_duration(text).map_err(|_| {
                "use earliest, latest, an offset (42) or a duration ago (10m, 1h30m)".to_string()
            })?;
            Ok(From::Since(SystemTime::now() - ago))
        }
    }
}

/// Arguments of `eventbus tail`.
#[derive(Debug, Args)]
pub(crate) struct TailArgs {
    /// Topics to read.
    #[arg(required = true)]
    topics: Vec<String>,
    /// Where to start: earliest, latest, an offset, or a duration ago (10m).
    #[arg(long, default_value = "latest", value_parser = from)]
    from: From,
    /// Exit after this many records (those --key lets through).
    #[arg(short = 'n', long = "count", value_name = "N")]
    count: Option<u64>,
    /// Only records with this key.
    #[arg(long)]
    key: Option<String>,
    /// How long to wait for the brokers when starting.
    #[arg(long, default_value = "10s", value_parser = global::parse_duration)]
    timeout: Duration,
}

/// A record read by tail.
#[derive(Debug)]
pub(crate) struct Tailed {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) message: Message,
}

/// What a backend reader needs.
pub(crate) struct Reader<'a> {
    pub(crate) config: &'a jxt_eventbus::BusConfig,
    pub(crate) topics: &'a [String],
    pub(crate) from: From,
    pub(crate) timeout: Duration,
    pub(crate) records: mpsc::Sender<Tailed>,
}

pub(crate) async fn run(global: &Global, args: TailArgs) -> Result<()> {
    let config = global.load()?;
    global::require_broker(&config, "tail")?;
    for t in &args.topics {
        jxt_eventbus::validate::topic(t)?;
    }
    let (tx, mut rx) = mpsc::channel(1024);
    let reader = Reader {
        config: &config,
        topics: &args.topics,
        from: args.from,
        timeout: args.timeout,
        records: tx,
    };
    // The reader runs until its channel closes: when we stop taking records.
    let reading = async {
        match config.backend {
            #[cfg(feature = "kafka")]
            BackendKind::Kafka => kafka::read(reader).await,
            #[cfg(feature = "nats")]
            BackendKind::Nats => nats::read(reader).await,
            other => bail!("the {} backend cannot be tailed", other.as_str()),
        }
    };
    let showing = async {
        let mut shown = 0u64;
        if args.count == Some(0) {
            return Ok(());
        }
        while let Some(record) = rx.recv().await {
            if let Some(k) = &args.key {
                if record.message.key.as_deref() != Some(k.as_bytes()) {
                    continue;
                }
            }
            render::print(&record, global.json)?;
            shown += 1;
            if args.count.is_some_and(|n| shown >= n) {
                return Ok(());
            }
        }
        Ok::<_, anyhow::Error>(())
    };
    tokio::select! {
        r = reading => r,
        r = showing => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}
