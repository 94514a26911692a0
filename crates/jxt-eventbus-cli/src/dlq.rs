//! `eventbus dlq list|show|replay TOPIC`: the dead letters of a topic with
//! their `x-dlq-*` provenance decoded, and their replay — through the
//! library's own listing and scoped replay
//! ([`EventBus::list_dead_letters`] with [`ListOptions`],
//! [`EventBus::replay_dead_letters`]), so
//! the rules are the service's: the group's dead letters only (`--group`,
//! default the configured group; `--all-groups` to list every group's), a
//! replay publishes only to the dead letter's own topic, refuses records
//! replayed too often, and acknowledges in the `<group>.dlq-replay` group.

use std::time::{Duration, SystemTime};

use anyhow::{anyhow, Context, Result};
use clap::{Args, Subcommand};
use jxt_eventbus::{DeadLetter, DeadLetterFilter, EventBus, ListOptions, ReplayOptions};
use serde::Serialize;

use crate::global::{self, Global};
use crate::output;
use crate::tail::render::{key_cell, key_hex, key_text, Shown};

/// `eventbus dlq`.
#[derive(Debug, Args)]
pub(crate) struct DlqArgs {
    #[command(subcommand)]
    command: DlqCommand,
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// List dead letters of TOPIC (read in the replay group; nothing acknowledged).
    List(ListArgs),
    /// Show one dead letter in full: provenance, headers, payload.
    Show(ShowArgs),
    /// Publish dead letters back to TOPIC and acknowledge them.
    Replay(ReplayArgs),
}

/// Which dead letters.
#[derive(Debug, Args)]
struct FilterArgs {
    /// The original topic (its dead letters are in `<TOPIC><dead_letter.suffix>`).
    topic: String,
    /// Only records with this key.
    #[arg(long)]
    key: Option<String>,
    /// Only records that failed at or after this time (RFC 3339) or this
    /// long ago (10m).
    #[arg(long, value_parser = point_in_time)]
    since: Option<SystemTime>,
    /// Only records that failed before this time (RFC 3339) or this long
    /// ago.
    #[arg(long, value_parser = point_in_time)]
    until: Option<SystemTime>,
    /// Stop reading when no record arrived for this long.
    #[arg(long, default_value = "2s", value_parser = global::parse_duration)]
    idle: Duration,
    /// The longest the whole command may take.
    #[arg(long, default_value = "30s", value_parser = global::parse_duration)]
    timeout: Duration,
}

#[derive(Debug, Args)]
struct ListArgs {
    #[command(flatten)]
    filter: FilterArgs,
    /// Only the record with this message or event id.
    #[arg(long)]
    id: Option<String>,
    /// Every group's dead letters, not only the group's.
    #[arg(long)]
    all_groups: bool,
    /// List at most this many.
    #[arg(long, default_value_t = 1000)]
    max: usize,
}

#[derive(Debug, Args)]
struct ShowArgs {
    #[command(flatten)]
    filter: FilterArgs,
    /// The message or event id of the dead letter.
    #[arg(long)]
    id: String,
    /// Look in every group's dead letters, not only the group's.
    #[arg(long)]
    all_groups: bool,
}

#[derive(Debug, Args)]
struct ReplayArgs {
    #[command(flatten)]
    filter: FilterArgs,
    /// Only the record with this message or event id.
    #[arg(long)]
    id: Option<String>,
    /// Print what would be replayed; publish and acknowledge nothing.
    #[arg(long)]
    dry_run: bool,
    /// Replay records that were already replayed this often too.
    #[arg(long)]
    force: bool,
}

fn point_in_time(text: &str) -> Result<SystemTime, String> {
    if let Ok(t) = humantime::parse_rfc3339_weak(text) {
        return Ok(t);
    }
    humantime::parse_duration(text)
        .map(|ago| SystemTime::now() - ago)
        .map_err(|_| "use an RFC 3339 time (2026-12-05T09:00:00Z) or a duration ago (10m)".into())
}

impl FilterArgs {
    fn filter(&self, id: Option<&str>, all_groups: bool) -> DeadLetterFilter {
        let mut f = DeadLetterFilter::new();
        if all_groups {
            f = f.all_groups();
        }
        if let Some(k) = &self.key {
            f = f.key(k.clone());
        }
        if let Some(id) = id {
            f = f.event_id(id);
        }
        if self.since.is_some() || self.until.is_some() {
            f = f.failed_between(self.since, self.until);
        }
        f
    }
}

/// A dead letter's provenance, as printed.
#[derive(Debug, Serialize)]
struct Provenance {
    dlq_partition: i32,
    dlq_offset: i64,
    id: String,
    /// The key when it is UTF-8 text.
    key: Option<String>,
    /// The key in hex when it is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    key_hex: Option<String>,
    /// The id the record had before it failed.
    original_id: Option<String>,
    original_topic: Option<String>,
    original_partition: Option<String>,
    original_offset: Option<String>,
    group: Option<String>,
    error_kind: Option<String>,
    error: Option<String>,
    attempts: Option<u32>,
    first_failure: Option<String>,
    last_failure: Option<String>,
    replays: u32,
    pointer: bool,
}

impl Provenance {
    fn of(d: &DeadLetter) -> Self {
        let h = |name: &str| d.message.headers.get_str(name).map(str::to_string);
        Provenance {
            dlq_partition: d.partition,
            dlq_offset: d.offset,
            id: d.message.id.clone(),
            key: key_text(d.message.key.as_deref()),
            key_hex: key_hex(d.message.key.as_deref()),
            original_id: h("x-dlq-original-id"),
            original_topic: d.original_topic.clone(),
            original_partition: h("x-dlq-original-partition"),
            original_offset: h("x-dlq-original-offset"),
            group: d.group.clone(),
            error_kind: d.error_kind.clone(),
            error: d.error.clone(),
            attempts: d.attempts,
            first_failure: h("x-dlq-first-failure"),
            last_failure: h("x-dlq-last-failure"),
            replays: d.replays,
            pointer: d.pointer,
        }
    }
}

pub(crate) async fn run(global: &Global, args: DlqArgs) -> Result<()> {
    let config = global.load()?;
    global::require_broker(&config, "dlq")?;
    let bus = EventBus::from_config(config)
        .await
        .context("cannot start the bus")?;
    let outcome = match args.command {
        DlqCommand::List(a) => list(&bus, global, a).await,
        DlqCommand::Show(a) => show(&bus, global, a).await,
        DlqCommand::Replay(a) => replay(&bus, global, a).await,
    };
    let closed = bus.shutdown().await;
    outcome.and(closed.map_err(Into::into))
}

async fn list(bus: &EventBus, global: &Global, a: ListArgs) -> Result<()> {
    let f = &a.filter;
    let spinner = output::progress(None, "reading dead letters");
    let letters = bus
        .list_dead_letters(
            &f.topic,
            &ListOptions::new()
                .filter(f.filter(a.id.as_deref(), a.all_groups))
                .max(a.max)
                .idle(f.idle)
                .timeout(f.timeout),
        )
        .await?;
    spinner.finish_and_clear();
    print_list(global, &letters)
}

fn print_list(global: &Global, letters: &[DeadLetter]) -> Result<()> {
    if global.json {
        for d in letters {
            output::json_line(&Provenance::of(d))?;
        }
        return Ok(());
    }
    if letters.is_empty() {
        println!("no dead letters in scope");
        return Ok(());
    }
    let mut t = output::table(&[
        "DLQ OFFSET",
        "ID",
        "KEY",
        "FROM",
        "GROUP",
        "KIND",
        "ATTEMPTS",
        "FAILED",
        "ERROR",
    ]);
    for d in letters {
        let p = Provenance::of(d);
        let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        t.add_row(vec![
            format!("{}[{}]@{}", "dlq", p.dlq_partition, p.dlq_offset),
            p.id,
            key_cell(d.message.key.as_deref()),
            format!(
                "{}[{}]@{}",
                p.original_topic.as_deref().unwrap_or("?"),
                p.original_partition.as_deref().unwrap_or("?"),
                p.original_offset.as_deref().unwrap_or("?")
            ),
            dash(p.group),
            dash(p.error_kind),
            p.attempts.map_or("-".into(), |a| a.to_string()),
            dash(p.last_failure),
            dash(p.error),
        ]);
    }
    output::print_table(&t)?;
    println!(
        "{} dead letter{}",
        letters.len(),
        if letters.len() == 1 { "" } else { "s" }
    );
    Ok(())
}

#[derive(Debug, Serialize)]
struct ShowJson {
    provenance: Provenance,
    record: Shown,
}

async fn show(bus: &EventBus, global: &Global, a: ShowArgs) -> Result<()> {
    let f = &a.filter;
    let letters = bus
        .list_dead_letters(
            &f.topic,
            &ListOptions::new()
                .filter(f.filter(Some(&a.id), a.all_groups))
                .max(1)
                .idle(f.idle)
                .timeout(f.timeout),
        )
        .await?;
    let d = letters
        .first()
        .ok_or_else(|| anyhow!("no dead letter of `{}` with id {} in scope", f.topic, a.id))?;
    let dlq = format!("{}{}", f.topic, bus.config().dead_letter.suffix);
    let record = Shown::of(&dlq, d.partition, d.offset, &d.message);
    if global.json {
        return output::json_line(&ShowJson {
            provenance: Provenance::of(d),
            record,
        });
    }
    let p = Provenance::of(d);
    let mut t = output::table(&["FIELD", "VALUE"]);
    let v = serde_json::to_value(&p)?;
    if let Some(map) = v.as_object() {
        for (k, v) in map {
            let text = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => "-".into(),
                other => other.to_string(),
            };
            t.add_row(vec![k.clone(), text]);
        }
    }
    output::print_table(&t)?;
    println!();
    let mut out = anstream::stdout().lock();
    record.pretty(&mut out)
}

#[derive(Debug, Serialize)]
struct Summary {
    dry_run: bool,
    replayed: usize,
    would_replay: usize,
    refused: usize,
    not_matching: usize,
    other_groups: usize,
}

async fn replay(bus: &EventBus, global: &Global, a: ReplayArgs) -> Result<()> {
    let f = &a.filter;
    let options = ReplayOptions::new()
        .filter(f.filter(a.id.as_deref(), false))
        .dry_run(a.dry_run)
        .force(a.force)
        .idle(f.idle)
        .timeout(f.timeout);
    // The library reports at the end only: a spinner while it works.
    let spinner = output::progress(
        None,
        if a.dry_run {
            "reading dead letters (dry run)"
        } else {
            "replaying dead letters"
        },
    );
    let report = bus.replay_dead_letters(&f.topic, &options).await?;
    spinner.finish_and_clear();
    let summary = Summary {
        dry_run: report.dry_run,
        replayed: report.replayed,
        would_replay: report.would_replay.len(),
        refused: report.refused.len(),
        not_matching: report.not_matching,
        other_groups: report.other_groups,
    };
    if global.json {
        for d in &report.would_replay {
            output::json_line(&serde_json::json!({"would_replay": Provenance::of(d)}))?;
        }
        for r in &report.refused {
            output::json_line(
                &serde_json::json!({"refused": Provenance::of(&r.dead_letter), "reason": r.reason}),
            )?;
        }
        return output::json_line(&summary);
    }
    if !report.would_replay.is_empty() {
        println!("would replay to `{}`:", f.topic);
        print_list(global, &report.would_replay)?;
    }
    if !report.refused.is_empty() {
        let mut t = output::table(&["REFUSED ID", "KEY", "REASON"]);
        for r in &report.refused {
            t.add_row(vec![
                r.dead_letter.message.id.clone(),
                key_cell(r.dead_letter.message.key.as_deref()),
                r.reason.clone(),
            ]);
        }
        output::print_table(&t)?;
    }
    if report.dry_run {
        println!(
            "dry run: {} would be replayed, {} refused, {} not matching the filter, {} of other groups; nothing published or acknowledged",
            summary.would_replay, summary.refused, summary.not_matching, summary.other_groups
        );
    } else {
        println!(
            "replayed {} to `{}`, {} refused (still tracked), {} not matching the filter (still tracked), {} of other groups passed over",
            summary.replayed, f.topic, summary.refused, summary.not_matching, summary.other_groups
        );
    }
    Ok(())
}
