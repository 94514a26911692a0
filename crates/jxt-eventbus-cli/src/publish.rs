//! `eventbus publish TOPIC [VALUE]`: publish one record (or one per line)
//! through a bus built from the configuration, exactly as a service
//! publishes, and print each receipt (partition and offset, or stream
//! sequence on NATS).
//!
//! The value is the argument, `@FILE` for a file's content, or standard
//! input (`-` or no value). `--lines` makes each non-empty line a record,
//! published in batches. `--envelope` wraps each JSON value in the jxt-core
//! envelope (event id, aggregate id as key, type, version, time).

use std::io::{IsTerminal, Read};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use clap::Args;
use jxt_eventbus::{Envelope, EventBus, Message, PublishReceipt};
use serde::Serialize;

use crate::failure::usage;
use crate::global::{self, Global};
use crate::output;

/// Records handed to the bus at once with `--lines`.
const BATCH: usize = 500;

/// Arguments of `eventbus publish`.
#[derive(Debug, Args)]
pub(crate) struct PublishArgs {
    /// The topic.
    topic: String,
    /// The value: text, `@FILE` for a file's content, `-` (or nothing) for
    /// standard input.
    value: Option<String>,
    /// One record per non-empty line of the value, published in batches.
    #[arg(long)]
    lines: bool,
    /// The record key (aggregate id). With --envelope the key is the
    /// aggregate.
    #[arg(long, conflicts_with = "envelope")]
    key: Option<String>,
    /// A header `NAME=VALUE` (repeatable).
    #[arg(long = "header", value_name = "NAME=VALUE", value_parser = header)]
    headers: Vec<(String, String)>,
    /// Wrap each JSON value in the jxt-core envelope (needs --type and
    /// --aggregate).
    #[arg(long, requires_all = ["event_type", "aggregate"])]
    envelope: bool,
    /// Envelope event type.
    #[arg(long = "type", value_name = "TYPE", requires = "envelope")]
    event_type: Option<String>,
    /// Envelope aggregate id (also the record key).
    #[arg(long, value_name = "ID", requires = "envelope")]
    aggregate: Option<String>,
    /// Envelope event version.
    #[arg(long, value_name = "N", default_value_t = 1, requires = "envelope")]
    version: i64,
    /// The longest the whole publish may take, connecting included.
    #[arg(long, default_value = "30s", value_parser = global::parse_duration)]
    timeout: Duration,
}

fn header(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err("expected NAME=VALUE".to_string()),
    }
}

/// One printed receipt.
#[derive(Debug, Serialize)]
struct Receipt<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
}

pub(crate) async fn run(global: &Global, args: PublishArgs) -> Result<()> {
    let config = global.load()?;
    global::require_broker(&config, "publish")?;
    let values = values(&args)?;
    let messages = values
        .into_iter()
        .map(|v| message(&args, v))
        .collect::<Result<Vec<_>>>()?;
    let brokers = global::brokers(&config);
    let timeout = args.timeout;
    let published = tokio::time::timeout(timeout, async {
        let bus = EventBus::from_config(config)
            .await
            .context("cannot start the bus")?;
        let outcome = publish(&bus, &args.topic, messages, global.json).await;
        let closed = bus.shutdown().await;
        outcome.and(closed.map_err(Into::into))
    })
    .await;
    match published {
        Ok(r) => r,
        Err(_) => bail!(
            "publishing to {brokers} did not finish within {} (--timeout); records not \
             reported above may or may not have been stored",
            global::shown(timeout)
        ),
    }
}

async fn publish(bus: &EventBus, topic: &str, messages: Vec<Message>, json: bool) -> Result<()> {
    let total = messages.len();
    let bar = output::progress((total > BATCH).then_some(total as u64), "publishing");
    let mut table = output::table(&["TOPIC", "PARTITION", "OFFSET", "ID", "KEY"]);
    let mut failed = Vec::new();
    let mut rest = messages;
    while !rest.is_empty() {
        let batch: Vec<Message> = rest.drain(..rest.len().min(BATCH)).collect();
        let shown: Vec<(String, Option<String>)> = batch
            .iter()
            .map(|m| {
                (
                    m.id.clone(),
                    crate::tail::render::key_text(m.key.as_deref()),
                )
            })
            .collect();
        let results: Vec<jxt_eventbus::Result<PublishReceipt>> = if batch.len() == 1 {
            let m = batch.into_iter().next().expect("one message");
            vec![bus.publish(topic, m).await]
        } else {
            bus.publish_batch(topic, batch).await?
        };
        for ((id, key), r) in shown.into_iter().zip(results) {
            match r {
                Ok(receipt) => {
                    let line = Receipt {
                        topic,
                        partition: receipt.partition,
                        offset: receipt.offset,
                        id,
                        key,
                    };
                    if json {
                        output::json_line(&line)?;
                    } else {
                        table.add_row(vec![
                            line.topic.to_string(),
                            line.partition.to_string(),
                            line.offset.to_string(),
                            line.id,
                            line.key.unwrap_or_else(|| "-".into()),
                        ]);
                    }
                }
                Err(e) => failed.push(format!("{id}: {e}")),
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    if !json && failed.len() < total {
        output::print_table(&table)?;
    }
    match failed.len() {
        0 => Ok(()),
        1 if total == 1 => Err(anyhow!("publish to `{topic}` failed: {}", failed[0])),
        n => Err(anyhow!(
            "{n} of {total} records were not published to `{topic}`; first: {}",
            failed[0]
        )),
    }
}

/// The record values: the argument, a file, or standard input, split into
/// lines with `--lines`.
fn values(args: &PublishArgs) -> Result<Vec<Bytes>> {
    let raw: Vec<u8> = match args.value.as_deref() {
        Some(path) if path.starts_with('@') => {
            let path = &path[1..];
            std::fs::read(path).with_context(|| format!("cannot read {path}"))?
        }
        Some("-") | None => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                return Err(usage(
                    "give the value as an argument, @FILE, or on standard input",
                ));
            }
            let mut buf = Vec::new();
            stdin
                .lock()
                .read_to_end(&mut buf)
                .context("reading standard input")?;
            buf
        }
        Some(text) => text.as_bytes().to_vec(),
    };
    if !args.lines {
        return Ok(vec![Bytes::from(raw)]);
    }
    let values: Vec<Bytes> = raw
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .map(Bytes::copy_from_slice)
        .collect();
    if values.is_empty() {
        return Err(usage("--lines: the input has no non-empty line"));
    }
    Ok(values)
}

fn message(args: &PublishArgs, value: Bytes) -> Result<Message> {
    let mut m = if args.envelope {
        let text = std::str::from_utf8(&value).context("--envelope: the value is not UTF-8")?;
        let envelope = Envelope::new(
            args.aggregate.clone().unwrap_or_default(),
            args.event_type.clone().unwrap_or_default(),
            args.version,
            &(),
        )?
        .with_raw_payload(text.trim().to_string())
        .context("--envelope: the value must be one JSON value")?;
        envelope.to_message()?
    } else {
        let m = Message::new(value);
        match &args.key {
            Some(k) => m.with_key(k.clone()),
            None => m,
        }
    };
    for (name, value) in &args.headers {
        m.headers.insert(name.clone(), Bytes::from(value.clone()));
    }
    Ok(m)
}
