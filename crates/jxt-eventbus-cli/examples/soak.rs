//! A soak run on Kafka: publish and consume at a fixed rate for N minutes
//! with a slow key and periodic faults, sampling the process every few
//! seconds into a CSV; then `plot` draws RSS and lag over time.
//!
//! ```text
//! scripts/soak --minutes 60            # both steps, see the script
//! cargo run --release -p jxt-eventbus-cli --example soak -- run --minutes 10 --csv soak.csv
//! cargo run --release -p jxt-eventbus-cli --example soak -- plot soak.csv docs/img/soak.svg
//! ```
//!
//! The run: one publishing bus and two consuming buses (members `a` and `b`
//! of one group) in this process, on a new topic of 6 partitions. Keys are
//! `key-0`..`key-499`; one record in 50 has the key `slow`, whose handler
//! sleeps `--slow-ms`. Every `--fault-every` seconds a fault, alternately:
//! - `restart`: member `b` shuts down gracefully and a new `b` joins the
//!   group (two rebalances; `a` keeps its lanes running through them);
//! - `errors`: for 10 s, records whose sequence is divisible by 10 fail once
//!   with a retryable error (retried), and those divisible by 500 fail for
//!   good (dead-lettered).
//!
//! Every `--sample-secs` a CSV row: RSS and open file descriptors from
//! `/proc/self`, live tokio tasks (`RuntimeMetrics::num_alive_tasks`,
//! stable tokio API), live lanes and buffered records over both members,
//! total lag (`EventBus::lag`) and the running counters. At the end the
//! publisher stops and the run waits until every acknowledged record was
//! handled or dead-lettered, then prints lost and duplicate counts. A
//! bitset sized up front tracks the sequences, so the bookkeeping itself
//! does not grow the RSS being measured.
//!
//! A development tool: not run in CI.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use jxt_eventbus::config::TopicSettings;
use jxt_eventbus::{
    BackendKind, BusConfig, Delivery, EventBus, HandlerError, Message, SubscribeOptions,
};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the soak and writes the samples.
    Run(RunArgs),
    /// Draws RSS and lag over time from a CSV written by `run`.
    Plot {
        /// The CSV written by `run`.
        csv: String,
        /// The SVG to write.
        out: String,
        /// A line under the title (command, date, commit).
        #[arg(long, default_value = "")]
        subtitle: String,
    },
}

#[derive(clap::Args, Clone)]
struct RunArgs {
    /// How long to publish.
    #[arg(long, default_value_t = 10)]
    minutes: u64,
    /// Records published per second.
    #[arg(long, default_value_t = 300)]
    rate: u64,
    /// The slow key's handler time in milliseconds.
    #[arg(long, default_value_t = 50)]
    slow_ms: u64,
    /// Seconds between faults.
    #[arg(long, default_value_t = 120)]
    fault_every: u64,
    /// Seconds between samples.
    #[arg(long, default_value_t = 5)]
    sample_secs: u64,
    /// Where the samples go.
    #[arg(long, default_value = "soak.csv")]
    csv: String,
    /// Kafka bootstrap servers (default: `EVENTBUS_KAFKA_BROKERS`, else
    /// 127.0.0.1:9092).
    #[arg(long)]
    brokers: Option<String>,
}

/// Records of every sequence number: set when handled or dead-lettered.
struct Seen {
    bits: Vec<AtomicU64>,
    duplicates: AtomicU64,
}

impl Seen {
    fn new(capacity: u64) -> Self {
        Self {
            bits: (0..capacity.div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
            duplicates: AtomicU64::new(0),
        }
    }

    fn mark(&self, seq: u64) {
        let bit = 1 << (seq % 64);
        let word = &self.bits[(seq / 64) as usize];
        if word.fetch_or(bit, Ordering::Relaxed) & bit != 0 {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn missing(&self, below: u64) -> u64 {
        (0..below)
            .filter(|s| self.bits[(s / 64) as usize].load(Ordering::Relaxed) & (1 << (s % 64)) == 0)
            .count() as u64
    }
}

#[derive(Default)]
struct Counters {
    published: AtomicU64,
    publish_errors: AtomicU64,
    handled: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    error_burst: AtomicBool,
}

struct Soak {
    args: RunArgs,
    topic: String,
    group: String,
    counters: Counters,
    seen: Seen,
}

impl Soak {
    fn config(&self, group: &str) -> BusConfig {
        let mut config = BusConfig {
            backend: BackendKind::Kafka,
            group: group.to_string(),
            ..BusConfig::default()
        };
        let brokers = self.args.brokers.clone().unwrap_or_else(|| {
            std::env::var("EVENTBUS_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
        });
        config.kafka.brokers = brokers.split(',').map(str::to_string).collect();
        config.kafka.topics.insert(
            self.topic.clone(),
            TopicSettings {
                partitions: Some(6),
                ..TopicSettings::default()
            },
        );
        config.retry.initial_backoff = Duration::from_millis(100);
        config
    }

    async fn member(self: &Arc<Self>) -> anyhow::Result<EventBus> {
        let bus = EventBus::from_config(self.config(&self.group)).await?;
        let soak = self.clone();
        let handler = move |d: Delivery| {
            let soak = soak.clone();
            async move { soak.handle(d).await }
        };
        bus.subscribe(&self.topic, handler, SubscribeOptions::default())
            .await?;
        Ok(bus)
    }

    async fn handle(&self, d: Delivery) -> Result<(), HandlerError> {
        let seq: u64 = std::str::from_utf8(d.payload())
            .ok()
            .and_then(|p| p.split(' ').next()?.parse().ok())
            .ok_or_else(|| HandlerError::permanent("no sequence number"))?;
        if d.key_str() == Some("slow") {
            tokio::time::sleep(Duration::from_millis(self.args.slow_ms)).await;
        }
        let c = &self.counters;
        if c.error_burst.load(Ordering::Relaxed) {
            if seq.is_multiple_of(500) {
                c.dead_lettered.fetch_add(1, Ordering::Relaxed);
                self.seen.mark(seq);
                return Err(HandlerError::permanent("soak: poison record"));
            }
            if seq.is_multiple_of(10) && d.attempt() == 1 {
                c.retried.fetch_add(1, Ordering::Relaxed);
                return Err(HandlerError::retryable("soak: transient failure"));
            }
        }
        c.handled.fetch_add(1, Ordering::Relaxed);
        self.seen.mark(seq);
        Ok(())
    }

    /// Publishes `rate` records a second in batches every 100 ms until
    /// `stop`; returns the number of sequences handed out.
    async fn publish(self: Arc<Self>, bus: EventBus, stop: Arc<AtomicBool>) -> u64 {
        let per_tick = (self.args.rate / 10).max(1);
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seq = 0u64;
        let filler = "x".repeat(180);
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let batch: Vec<Message> = (seq..seq + per_tick)
                .map(|s| {
                    let key = if s % 50 == 0 {
                        "slow".to_string()
                    } else {
                        format!("key-{}", s % 500)
                    };
                    Message::new(format!("{s} {filler}")).with_key(key)
                })
                .collect();
            match bus.publish_batch(&self.topic, batch).await {
                Ok(_) => {
                    self.counters
                        .published
                        .fetch_add(per_tick, Ordering::Relaxed);
                }
                Err(e) => {
                    // Unacknowledged: the sequences count as handed out but
                    // are not expected; the run reports them.
                    self.counters
                        .publish_errors
                        .fetch_add(per_tick, Ordering::Relaxed);
                    eprintln!("publish failed: {e}");
                }
            }
            seq += per_tick;
        }
        seq
    }
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

const HEADER: &str = "elapsed_s,rss_kb,open_fds,tokio_tasks,live_lanes,buffered,lag,published,handled,retried,dead_lettered,publish_errors,fault";

async fn sample(soak: &Soak, members: &[&EventBus], started: Instant, fault: &str) -> String {
    let (mut lanes, mut buffered, mut lag) = (0, 0, 0i64);
    for bus in members {
        if let Some(s) = bus.dispatch_stats().await {
            lanes += s.live_lanes;
            buffered += s.buffered;
        }
        if let Ok(parts) = bus.lag().await {
            lag += parts.iter().map(|p| p.lag()).sum::<i64>();
        }
    }
    let c = &soak.counters;
    format!(
        "{:.1},{},{},{},{lanes},{buffered},{lag},{},{},{},{},{},{fault}",
        started.elapsed().as_secs_f64(),
        rss_kb(),
        open_fds(),
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks(),
        c.published.load(Ordering::Relaxed),
        c.handled.load(Ordering::Relaxed),
        c.retried.load(Ordering::Relaxed),
        c.dead_lettered.load(Ordering::Relaxed),
        c.publish_errors.load(Ordering::Relaxed),
    )
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let run_id = uuid::Uuid::now_v7().simple().to_string();
    let capacity = args.rate * (args.minutes * 60 + 60) * 11 / 10 + 1024;
    let soak = Arc::new(Soak {
        topic: format!("soak-{run_id}"),
        group: format!("soak-{run_id}"),
        seen: Seen::new(capacity),
        counters: Counters::default(),
        args: args.clone(),
    });
    let mut csv = std::fs::File::create(&args.csv)?;
    writeln!(csv, "{HEADER}")?;
    let publisher =
        EventBus::from_config(soak.config(&format!("{}-publisher", soak.group))).await?;
    let a = soak.member().await?;
    let mut b = soak.member().await?;
    let stop = Arc::new(AtomicBool::new(false));
    let publishing = tokio::spawn(soak.clone().publish(publisher.clone(), stop.clone()));

    let started = Instant::now();
    let end = started + Duration::from_secs(args.minutes * 60);
    let mut next_sample = started;
    let mut next_fault = started + Duration::from_secs(args.fault_every);
    let mut faults = 0u64;
    let mut burst_until: Option<Instant> = None;
    let mut fault = String::new();
    while Instant::now() < end {
        if Instant::now() >= next_fault {
            faults += 1;
            next_fault += Duration::from_secs(args.fault_every);
            if faults % 2 == 1 {
                fault = "restart".into();
                b.shutdown().await?;
                b = soak.member().await?;
            } else {
                fault = "errors".into();
                soak.counters.error_burst.store(true, Ordering::Relaxed);
                burst_until = Some(Instant::now() + Duration::from_secs(10));
            }
            eprintln!("{:>6.0}s fault: {fault}", started.elapsed().as_secs_f64());
        }
        if burst_until.is_some_and(|t| Instant::now() >= t) {
            soak.counters.error_burst.store(false, Ordering::Relaxed);
            burst_until = None;
        }
        if Instant::now() >= next_sample {
            let row = sample(&soak, &[&a, &b], started, &fault).await;
            writeln!(csv, "{row}")?;
            csv.flush()?;
            fault.clear();
            next_sample += Duration::from_secs(args.sample_secs);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    soak.counters.error_burst.store(false, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let handed_out = publishing.await?;
    let expected = soak.counters.published.load(Ordering::Relaxed);
    let drained = Instant::now();
    let mut missing = soak.seen.missing(handed_out);
    let unacknowledged = soak.counters.publish_errors.load(Ordering::Relaxed);
    while missing > unacknowledged && drained.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        missing = soak.seen.missing(handed_out);
    }
    let row = sample(&soak, &[&a, &b], started, "end").await;
    writeln!(csv, "{row}")?;
    a.shutdown().await?;
    b.shutdown().await?;
    publisher.shutdown().await?;
    println!(
        "soak: {} min at {}/s, {} faults; published {expected} (unacknowledged {unacknowledged}), \
         not handled {}, duplicates {}, retried {}, dead-lettered {}",
        args.minutes,
        args.rate,
        faults,
        missing.saturating_sub(unacknowledged),
        soak.seen.duplicates.load(Ordering::Relaxed),
        soak.counters.retried.load(Ordering::Relaxed),
        soak.counters.dead_lettered.load(Ordering::Relaxed),
    );
    Ok(())
}

/// One CSV row, as plotted.
struct Row {
    minutes: f64,
    rss_mib: f64,
    lag: f64,
    /// Published and not yet handled (or dead-lettered).
    unhandled: f64,
    fds: f64,
    tasks: f64,
    lanes: f64,
    fault: String,
}

/// A plot panel: title, unit, and the value it draws from a row.
type Panel = (&'static str, &'static str, fn(&Row) -> f64);

fn read_rows(path: &str) -> anyhow::Result<Vec<Row>> {
    let text = std::fs::read_to_string(path)?;
    let mut rows = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        anyhow::ensure!(f.len() == 13, "{path}: a row of {} fields: {line}", f.len());
        let n = |i: usize| f[i].parse::<f64>();
        rows.push(Row {
            minutes: n(0)? / 60.0,
            rss_mib: n(1)? / 1024.0,
            fds: n(2)?,
            tasks: n(3)?,
            lanes: n(4)?,
            lag: n(6)?,
            unhandled: (n(7)? - n(8)? - n(10)?).max(0.0),
            fault: f[12].to_string(),
        });
    }
    Ok(rows)
}

fn plot(csv: &str, out: &str, subtitle: &str) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let rows = read_rows(csv)?;
    anyhow::ensure!(rows.len() >= 2, "{csv}: fewer than two samples");
    let x_max = rows.last().map_or(1.0, |r| r.minutes).max(0.1);
    let root = SVGBackend::new(out, (1200, 1200)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(76);
    title.draw(&Text::new(
        "jxt-eventbus soak on Kafka: memory, lag, lanes, file descriptors and tasks over time",
        (20, 10),
        ("sans-serif", 18).into_font(),
    ))?;
    title.draw(&Text::new(
        subtitle.to_string(),
        (20, 34),
        ("sans-serif", 13).into_font(),
    ))?;
    title.draw(&Text::new(
        "vertical lines: red = member b restarted (leave, join), orange = a 10 s handler error burst (retries, dead letters)",
        (20, 54),
        ("sans-serif", 13).into_font(),
    ))?;
    let panels: [Panel; 6] = [
        ("RSS", "MiB", |r| r.rss_mib),
        (
            "Lag: records not yet committed (both members)",
            "records",
            |r| r.lag,
        ),
        ("Published, not yet handled", "records", |r| r.unhandled),
        ("Live key lanes (both members)", "lanes", |r| r.lanes),
        ("Open file descriptors", "fds", |r| r.fds),
        ("Live tokio tasks", "tasks", |r| r.tasks),
    ];
    for (area, (name, unit, value)) in body.split_evenly((3, 2)).iter().zip(panels) {
        let y_max = rows.iter().map(value).fold(1.0_f64, f64::max) * 1.15;
        let mut chart = ChartBuilder::on(area)
            .caption(name, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
        chart
            .configure_mesh()
            .x_desc("minutes")
            .y_desc(unit)
            .light_line_style(WHITE.mix(0.0))
            .label_style(("sans-serif", 12))
            .draw()?;
        // Faults as thin vertical lines: red a restart, orange an error burst.
        for r in rows
            .iter()
            .filter(|r| r.fault == "restart" || r.fault == "errors")
        {
            let color = if r.fault == "restart" {
                RED.mix(0.3)
            } else {
                RGBColor(255, 140, 0).mix(0.4)
            };
            chart.draw_series(LineSeries::new(
                [(r.minutes, 0.0), (r.minutes, y_max)],
                color,
            ))?;
        }
        chart.draw_series(LineSeries::new(
            rows.iter().map(|r| (r.minutes, value(r))),
            BLUE.stroke_width(2),
        ))?;
    }
    root.present()?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run(args) => run(args).await,
        Command::Plot { csv, out, subtitle } => plot(&csv, &out, &subtitle),
    }
}

#[cfg(test)]
mod tests {
    use super::Seen;

    #[test]
    fn seen_counts_missing_and_duplicates() {
        let seen = Seen::new(200);
        for s in (0..130).filter(|s| s % 7 != 0) {
            seen.mark(s);
        }
        seen.mark(64);
        assert_eq!(
            seen.missing(130),
            (0..130).filter(|s| s % 7 == 0).count() as u64
        );
        assert_eq!(
            seen.duplicates.load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }
}
