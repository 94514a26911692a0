//! `eventbus lag`: how far a consumer group is behind, without joining it.
//!
//! Kafka: per partition the group's committed offset, the log end, the lag
//! (end − committed) and the age of the oldest record not yet committed
//! (read at the committed offset by a throwaway, assign-only consumer).
//! A partition the group never committed counts from where the group would
//! start (`start_from`). NATS: per topic the group's durable consumer, its
//! pending (not yet delivered) and ack-pending (delivered, unacknowledged)
//! records; their sum is the lag.
//!
//! `--max-lag N` exits 3 when the total lag is over N, for cron and CI.

use std::time::{Duration, SystemTime};

use anyhow::{bail, Result};
use clap::Args;
use jxt_eventbus::BackendKind;
use serde::Serialize;

use crate::failure::Threshold;
use crate::global::{self, Global};
use crate::output;

#[cfg(feature = "kafka")]
mod kafka;
#[cfg(feature = "nats")]
mod nats;

/// Arguments of `eventbus lag`.
#[derive(Debug, Args)]
pub(crate) struct LagArgs {
    /// Topics to look at (repeatable). Default: the configured topics, or
    /// else every topic the group has positions on.
    #[arg(long = "topic", value_name = "TOPIC")]
    topics: Vec<String>,
    /// Exit with code 3 when the total lag is over N.
    #[arg(long, value_name = "N")]
    max_lag: Option<u64>,
    /// The longest the brokers may take to answer.
    #[arg(long, default_value = "10s", value_parser = global::parse_duration)]
    timeout: Duration,
}

/// The lag of one partition (Kafka) or durable consumer (NATS).
#[derive(Debug, Serialize)]
pub(crate) struct Row {
    pub(crate) topic: String,
    /// Kafka partition; 0 on NATS.
    pub(crate) partition: i32,
    /// NATS: the durable consumer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) consumer: Option<String>,
    /// Kafka: the committed offset (`None`: never committed); NATS: the
    /// stream sequence below which everything is acknowledged.
    pub(crate) committed: Option<i64>,
    /// Kafka: the log end offset; NATS: the stream's last sequence.
    pub(crate) end: i64,
    pub(crate) lag: u64,
    /// NATS: records not yet delivered to the group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) pending: Option<u64>,
    /// NATS: records delivered and not yet acknowledged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) ack_pending: Option<u64>,
    /// Age of the oldest record not yet committed, in seconds, where the
    /// backend can tell.
    pub(crate) oldest_age_secs: Option<f64>,
}

/// Seconds since `t`.
pub(crate) fn age(t: SystemTime) -> f64 {
    let secs = SystemTime::now()
        .duration_since(t)
        .unwrap_or_default()
        .as_secs_f64();
    (secs * 1000.0).round() / 1000.0
}

/// What `lag` works on.
pub(crate) struct Query<'a> {
    pub(crate) config: &'a jxt_eventbus::BusConfig,
    pub(crate) group: &'a str,
    pub(crate) topics: &'a [String],
    pub(crate) timeout: Duration,
}

#[derive(Debug, Serialize)]
struct Total<'a> {
    group: &'a str,
    total_lag: u64,
    rows: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_lag: Option<u64>,
}

pub(crate) async fn run(global: &Global, args: LagArgs) -> Result<()> {
    let config = global.load()?;
    global::require_broker(&config, "lag")?;
    let topics = if args.topics.is_empty() {
        match config.backend {
            BackendKind::Kafka => config.kafka.topics.keys().cloned().collect(),
            _ => config.nats.topics.keys().cloned().collect(),
        }
    } else {
        args.topics.clone()
    };
    let query = Query {
        config: &config,
        group: &config.group,
        topics: &topics,
        timeout: args.timeout,
    };
    let rows: Vec<Row> = match config.backend {
        #[cfg(feature = "kafka")]
        BackendKind::Kafka => kafka::lag(&query).await?,
        #[cfg(feature = "nats")]
        BackendKind::Nats => nats::lag(&query).await?,
        other => bail!("lag is not available on the {} backend", other.as_str()),
    };
    let total: u64 = rows.iter().map(|r| r.lag).sum();
    print(global, &config, &rows, total, args.max_lag)?;
    if let Some(max) = args.max_lag {
        if total > max {
            return Err(Threshold(format!(
                "group {} is {total} records behind, over --max-lag {max}",
                config.group
            ))
            .into());
        }
    }
    Ok(())
}

fn print(
    global: &Global,
    config: &jxt_eventbus::BusConfig,
    rows: &[Row],
    total: u64,
    max_lag: Option<u64>,
) -> Result<()> {
    if global.json {
        for r in rows {
            output::json_line(r)?;
        }
        return output::json_line(&Total {
            group: &config.group,
            total_lag: total,
            rows: rows.len(),
            max_lag,
        });
    }
    if rows.is_empty() {
        println!(
            "group {} has no positions on {}",
            config.group,
            if global.json {
                ""
            } else {
                "the topics looked at"
            }
        );
        return Ok(());
    }
    let nats = config.backend == BackendKind::Nats;
    let oldest = |r: &Row| {
        r.oldest_age_secs.map_or("-".to_string(), |s| {
            global::shown(Duration::from_secs_f64(s))
        })
    };
    let opt = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
    let mut t = if nats {
        output::table(&[
            "TOPIC",
            "CONSUMER",
            "ACK FLOOR",
            "LAST SEQ",
            "PENDING",
            "ACK PENDING",
            "LAG",
            "OLDEST",
        ])
    } else {
        output::table(&["TOPIC", "PARTITION", "COMMITTED", "END", "LAG", "OLDEST"])
    };
    for r in rows {
        if nats {
            t.add_row(vec![
                r.topic.clone(),
                r.consumer.clone().unwrap_or_default(),
                opt(r.committed),
                r.end.to_string(),
                r.pending.unwrap_or_default().to_string(),
                r.ack_pending.unwrap_or_default().to_string(),
                r.lag.to_string(),
                oldest(r),
            ]);
        } else {
            t.add_row(vec![
                r.topic.clone(),
                r.partition.to_string(),
                opt(r.committed),
                r.end.to_string(),
                r.lag.to_string(),
                oldest(r),
            ]);
        }
    }
    output::print_table(&t)?;
    println!("group {}: total lag {total}", config.group);
    Ok(())
}
