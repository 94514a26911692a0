//! `eventbus check`: is this configuration usable here and now? Loads and
//! validates it, connects to the brokers, and looks up every configured
//! topic (and `--topic`), reporting each item ok or failed with the reason.
//!
//! The whole check is bounded (`--timeout`, default 10 s): a broker that
//! does not answer fails the check within the bound, named once. Nothing
//! is created or changed; a missing topic is reported as "would be created"
//! when the topic strategy creates topics.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{anyhow, Result};
use clap::Args;
use jxt_eventbus::config::TopicStrategy;
use jxt_eventbus::{BackendKind, BusConfig};
use serde::Serialize;
use tokio::time::Instant;

use crate::global::{self, Global};
use crate::output;

/// Arguments of `eventbus check`.
#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// Also check these topics (repeatable), besides the configured ones.
    #[arg(long = "topic", value_name = "TOPIC")]
    topics: Vec<String>,
    /// The longest the whole check may take.
    #[arg(long, default_value = "10s", value_parser = global::parse_duration)]
    timeout: Duration,
}

/// One line of the report.
#[derive(Debug, Serialize)]
struct Item {
    item: String,
    status: Status,
    detail: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Ok,
    Failed,
    Skipped,
}

impl Item {
    fn new(item: impl Into<String>, status: Status, detail: impl Into<String>) -> Self {
        Item {
            item: item.into(),
            status,
            detail: crate::secrets::scrub(&detail.into()),
        }
    }
}

pub(crate) async fn run(global: &Global, args: CheckArgs) -> Result<()> {
    let mut items = Vec::new();
    let config = match global.load() {
        Ok(c) => c,
        Err(e) if crate::failure::exit_code(&e) == crate::failure::USAGE => return Err(e),
        Err(e) => {
            items.push(Item::new("config", Status::Failed, format!("{e:#}")));
            return report(global, &items);
        }
    };
    items.push(Item::new("config", Status::Ok, describe(global, &config)));
    let deadline = Instant::now() + args.timeout;
    let topics = topics(&config, &args.topics);
    match config.backend {
        #[cfg(feature = "kafka")]
        BackendKind::Kafka => kafka(&config, &topics, deadline, &mut items).await,
        #[cfg(feature = "nats")]
        BackendKind::Nats => nats(&config, &topics, deadline, &mut items).await,
        BackendKind::Memory => {
            items.push(Item::new(
                "brokers",
                Status::Ok,
                "memory backend: in-process, nothing to connect to",
            ));
            for t in &topics {
                items.push(topic_item(
                    t,
                    jxt_eventbus::validate::topic(t)
                        .map_err(|e| e.to_string())
                        .map(|()| "created in the process at first use".to_string()),
                ));
            }
        }
        #[allow(unreachable_patterns)]
        other => items.push(Item::new(
            "brokers",
            Status::Failed,
            format!(
                "the {} backend is not compiled into this binary",
                other.as_str()
            ),
        )),
    }
    report(global, &items)
}

fn describe(global: &Global, config: &BusConfig) -> String {
    let source = match &global.config {
        Some(p) => p.display().to_string(),
        None => "defaults".to_string(),
    };
    let vars = jxt_eventbus::config::environment_overrides()
        .map(|v| v.len())
        .unwrap_or(0);
    format!(
        "{source}{}: backend {}, group {}, {}",
        match vars {
            0 => String::new(),
            n => format!(
                " + {n} EVENTBUS_* variable{}",
                if n == 1 { "" } else { "s" }
            ),
        },
        config.backend.as_str(),
        config.group,
        global::brokers(config)
    )
}

/// The configured topics of the backend in force, then `extra`.
fn topics(config: &BusConfig, extra: &[String]) -> Vec<String> {
    let configured: BTreeSet<String> = match config.backend {
        BackendKind::Kafka => config.kafka.topics.keys().cloned().collect(),
        BackendKind::Nats => config.nats.topics.keys().cloned().collect(),
        _ => BTreeSet::new(),
    };
    let mut out: Vec<String> = configured.into_iter().collect();
    for t in extra {
        if !out.contains(t) {
            out.push(t.clone());
        }
    }
    out
}

fn topic_item(topic: &str, outcome: std::result::Result<String, String>) -> Item {
    match outcome {
        Ok(detail) => Item::new(format!("topic {topic}"), Status::Ok, detail),
        Err(detail) => Item::new(format!("topic {topic}"), Status::Failed, detail),
    }
}

/// What the strategy does about a missing topic: a configured one is
/// created when a bus starts, another when first published or subscribed.
fn missing(
    strategy: TopicStrategy,
    section: &str,
    configured: bool,
) -> std::result::Result<String, String> {
    let when = if configured {
        "when a bus starts"
    } else {
        "at first use"
    };
    match strategy {
        TopicStrategy::CreateOnly | TopicStrategy::CreateOrUpdate => Ok(format!(
            "missing; would be created {when} ({section}.topic_strategy {})",
            strategy_name(strategy)
        )),
        other => Err(format!(
            "missing, and {section}.topic_strategy {} does not create it",
            strategy_name(other)
        )),
    }
}

fn strategy_name(s: TopicStrategy) -> &'static str {
    match s {
        TopicStrategy::CreateOnly => "create_only",
        TopicStrategy::CreateOrUpdate => "create_or_update",
        TopicStrategy::ValidateOnly => "validate_only",
        _ => "skip",
    }
}

fn skipped(items: &mut Vec<Item>, topics: &[String], why: &str) {
    for t in topics {
        items.push(Item::new(format!("topic {t}"), Status::Skipped, why));
    }
}

#[cfg(feature = "kafka")]
async fn kafka(config: &BusConfig, topics: &[String], deadline: Instant, items: &mut Vec<Item>) {
    use std::sync::Arc;

    let remaining = deadline.saturating_duration_since(Instant::now());
    let (consumer, context) = match crate::kafka_client::consumer(config, "check") {
        Ok(c) => c,
        Err(e) => {
            items.push(Item::new("brokers", Status::Failed, format!("{e:#}")));
            return skipped(items, topics, "no client");
        }
    };
    let consumer = Arc::new(consumer);
    let metadata =
        crate::kafka_client::metadata(consumer.clone(), &context, config, None, remaining).await;
    let metadata = match metadata {
        Ok(m) => m,
        Err(e) => {
            items.push(Item::new("brokers", Status::Failed, format!("{e:#}")));
            return skipped(items, topics, "no broker answered");
        }
    };
    let brokers: Vec<String> = metadata
        .brokers()
        .iter()
        .map(|b| format!("{}:{} (id {})", b.host(), b.port(), b.id()))
        .collect();
    items.push(Item::new(
        "brokers",
        Status::Ok,
        format!("{} answered: {}", brokers.len(), brokers.join(", ")),
    ));
    for t in topics {
        let found = metadata.topics().iter().find(|m| m.name() == t);
        let outcome = match found {
            Some(m) if m.error().is_none() => Ok(format!(
                "exists, {} partition{}",
                m.partitions().len(),
                if m.partitions().len() == 1 { "" } else { "s" }
            )),
            Some(m) => Err(format!("broker error {:?}", m.error())),
            None => missing(
                config.kafka.topic_strategy,
                "kafka",
                config.kafka.topics.contains_key(t),
            ),
        };
        items.push(topic_item(t, outcome));
    }
}

#[cfg(feature = "nats")]
async fn nats(config: &BusConfig, topics: &[String], deadline: Instant, items: &mut Vec<Item>) {
    use jxt_eventbus::backend::nats::inspect;

    let remaining = deadline.saturating_duration_since(Instant::now());
    let mut config = config.clone();
    config.nats.connect_timeout = config.nats.connect_timeout.min(remaining);
    config.nats.request_timeout = config.nats.request_timeout.min(remaining);
    let servers = global::masked_servers(&config);
    let connected = tokio::time::timeout_at(deadline, inspect::connect(&config)).await;
    let (_client, js) = match connected {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            items.push(Item::new("brokers", Status::Failed, e.to_string()));
            return skipped(items, topics, "not connected");
        }
        Err(_) => {
            items.push(Item::new(
                "brokers",
                Status::Failed,
                format!(
                    "no NATS server answered at {servers} within {}",
                    global::shown(remaining)
                ),
            ));
            return skipped(items, topics, "not connected");
        }
    };
    match tokio::time::timeout_at(deadline, js.query_account()).await {
        Ok(Ok(account)) => items.push(Item::new(
            "brokers",
            Status::Ok,
            format!(
                "{servers}: JetStream available ({} streams, {} consumers)",
                account.streams, account.consumers
            ),
        )),
        Ok(Err(e)) => {
            items.push(Item::new(
                "brokers",
                Status::Failed,
                format!("{servers}: JetStream is not available for this account: {e}"),
            ));
            return skipped(items, topics, "no JetStream");
        }
        Err(_) => {
            items.push(Item::new(
                "brokers",
                Status::Failed,
                format!("{servers}: JetStream did not answer in time"),
            ));
            return skipped(items, topics, "no JetStream");
        }
    }
    for t in topics {
        let outcome =
            match tokio::time::timeout_at(deadline, inspect::find_stream(&js, &config, t)).await {
                Ok(Ok(Some(mut stream))) => match stream.info().await {
                    Ok(info) => Ok(format!(
                        "stream {} ({} messages)",
                        info.config.name, info.state.messages
                    )),
                    Err(e) => Err(format!("cannot read its stream: {e}")),
                },
                Ok(Ok(None)) => missing(
                    config.nats.topic_strategy,
                    "nats",
                    config.nats.topics.contains_key(t),
                )
                .map(|d| format!("{d}, as stream {}", inspect::default_stream_name(t))),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("JetStream did not answer in time".to_string()),
            };
        items.push(topic_item(t, outcome));
    }
}

fn report(global: &Global, items: &[Item]) -> Result<()> {
    if global.json {
        for item in items {
            output::json_line(item)?;
        }
    } else {
        let mut t = output::table(&["ITEM", "STATUS", "DETAIL"]);
        for item in items {
            let status = match item.status {
                Status::Ok => "ok",
                Status::Failed => "FAILED",
                Status::Skipped => "skipped",
            };
            t.add_row(vec![item.item.as_str(), status, item.detail.as_str()]);
        }
        output::print_table(&t)?;
    }
    let failed = items.iter().filter(|i| i.status == Status::Failed).count();
    if failed > 0 {
        let first = items
            .iter()
            .find(|i| i.status == Status::Failed)
            .map(|i| i.item.as_str())
            .unwrap_or_default();
        return Err(anyhow!(
            "check failed: {failed} of {} items ({first}{})",
            items.len(),
            if failed > 1 { ", ..." } else { "" }
        ));
    }
    Ok(())
}
