//! Draws the scale curves of `docs/benchmarks-scale.md` from the JSON lines
//! `scripts/bench-scale` writes (one `eventbus --json bench` line per point,
//! tagged with its `matrix`), and prints the points as a Markdown table.
//!
//! ```text
//! cargo run --release -p jxt-eventbus-cli --example scale_plot -- \
//!     target/bench-scale/<run>.jsonl docs/img
//! ```
//!
//! writes `scale-keys.svg`, `scale-partitions.svg`, `scale-payload.svg`,
//! `scale-nats.svg`, `scale-backlog.svg` and `scale-topics.svg` into the
//! directory (SVG only: no font or image libraries are built); a figure
//! none of whose matrices is in the file is left as it is, so a run of some
//! matrices (`scripts/bench-scale --only`) redraws only theirs.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use serde_json::Value;

/// One measured point: the matrix it belongs to and the figures plotted.
#[derive(Debug)]
struct Point {
    matrix: String,
    /// `memory`, `kafka` or `nats`.
    backend: String,
    keys: f64,
    partitions: f64,
    size: f64,
    messages: f64,
    /// End to end: the bus, the in-place loop (memory: the mpsc channel;
    /// NATS: async-nats on a plain consumer), the keyed consumer written by
    /// hand (Kafka only), async-nats on a pinned consumer (NATS only).
    bus: f64,
    baseline: f64,
    keyed: Option<f64>,
    pinned: Option<f64>,
    /// Consumer path on a filled topic (Kafka only): the bus and the keyed
    /// consumer written by hand.
    path_bus: Option<f64>,
    path_keyed: Option<f64>,
    /// The bus ÷ each raw client: medians of the per-round ratios, as the
    /// benchmark reports them.
    ratio_baseline: f64,
    ratio_keyed: Option<f64>,
    ratio_pinned: Option<f64>,
    ratio_path: Option<f64>,
    /// CPU time of the process per record while the bus, the baseline and
    /// the pinned consumer by hand ran, µs (where measured).
    cpu_bus: Option<f64>,
    cpu_baseline: Option<f64>,
    cpu_pinned: Option<f64>,
    /// Consumer path (Kafka): CPU per record of the bus and of the keyed
    /// consumer by hand, µs; the largest resident set while each ran, and
    /// what each added to the resident set it started with, MiB.
    path_cpu_bus: Option<f64>,
    path_cpu_keyed: Option<f64>,
    path_rss_bus: Option<f64>,
    path_rss_keyed: Option<f64>,
    path_growth_bus: Option<f64>,
    path_growth_keyed: Option<f64>,
    rss_mib: f64,
}

fn parse(line: &str) -> Result<Point> {
    let v: Value = serde_json::from_str(line)?;
    let num = |v: &Value, k: &str| v.get(k).and_then(Value::as_f64);
    let need = |k: &str| num(&v, k).with_context(|| format!("no `{k}` in {line}"));
    Ok(Point {
        matrix: v["matrix"].as_str().context("no `matrix`")?.to_string(),
        backend: v["backend"].as_str().unwrap_or("kafka").to_string(),
        keys: need("keys")?,
        partitions: need("partitions")?,
        size: need("size")?,
        messages: need("messages")?,
        bus: need("msgs_per_sec")?,
        baseline: need("baseline_msgs_per_sec")?,
        // The reference's own `msgs_per_sec` is the bus again.
        keyed: num(&v["keyed_end_to_end"], "baseline_msgs_per_sec"),
        pinned: num(&v["pinned_end_to_end"], "baseline_msgs_per_sec"),
        path_bus: num(&v["consumer_path"], "msgs_per_sec"),
        path_keyed: num(&v["consumer_path"], "baseline_msgs_per_sec"),
        ratio_baseline: need("ratio")?,
        ratio_keyed: num(&v["keyed_end_to_end"], "ratio"),
        ratio_pinned: num(&v["pinned_end_to_end"], "ratio"),
        ratio_path: num(&v["consumer_path"], "ratio"),
        cpu_bus: num(&v, "cpu_us_per_msg"),
        cpu_baseline: num(&v, "baseline_cpu_us_per_msg"),
        cpu_pinned: num(&v["pinned_end_to_end"], "baseline_cpu_us_per_msg"),
        path_cpu_bus: num(&v["consumer_path"], "cpu_us_per_msg"),
        path_cpu_keyed: num(&v["consumer_path"], "baseline_cpu_us_per_msg"),
        path_rss_bus: num(&v["consumer_path"], "side_peak_rss_mb"),
        path_rss_keyed: num(&v["consumer_path"], "baseline_side_peak_rss_mb"),
        path_growth_bus: num(&v["consumer_path"], "side_rss_growth_mb"),
        path_growth_keyed: num(&v["consumer_path"], "baseline_side_rss_growth_mb"),
        rss_mib: need("peak_rss_mb")?,
    })
}

/// A line of a panel: its name, its colour and its (x, y) points; a rate
/// keeps its colour in every panel.
type Series = (&'static str, RGBColor, Vec<(f64, f64)>);

/// One of a point's rates, where it was measured.
type Rate = fn(&Point) -> Option<f64>;

/// The throughput lines of `points` along `x`; `unit` turns a point's msg/s
/// into the panel's unit.
fn rates(points: &[&Point], x: fn(&Point) -> f64, unit: fn(&Point) -> f64) -> Vec<Series> {
    let line = |f: Rate| -> Vec<(f64, f64)> {
        points
            .iter()
            .filter_map(|p| Some((x(p), f(p)? * unit(p))))
            .collect()
    };
    let all: [(&'static str, Rate); 6] = [
        ("bus, end to end", |p| Some(p.bus)),
        ("keyed by hand, end to end", |p| p.keyed),
        (baseline_name(points), |p| Some(p.baseline)),
        ("async-nats, pinned consumer", |p| p.pinned),
        ("bus, consumer path", |p| p.path_bus),
        ("keyed by hand, consumer path", |p| p.path_keyed),
    ];
    let colors = [BLUE, RED, BLACK, CYAN, GREEN, MAGENTA];
    all.into_iter()
        .zip(colors)
        .map(|((name, f), color)| (name, color, line(f)))
        .filter(|(_, _, pts)| !pts.is_empty())
        .collect()
}

/// What the headline baseline of `points` is.
fn baseline_name(points: &[&Point]) -> &'static str {
    match points.first().map(|p| p.backend.as_str()) {
        Some("memory") => "tokio mpsc, one task",
        Some("nats") => "async-nats, plain consumer",
        _ => "in-place loop, end to end",
    }
}

/// One panel: title, x axis name, y unit, and its lines.
struct Panel {
    title: String,
    x_desc: &'static str,
    unit: &'static str,
    lines: Vec<Series>,
}

/// An axis label: 1.5M, 200k, 96, 0.85.
fn short(v: f64) -> String {
    match v.abs() {
        a if a >= 1e6 => format!("{}M", v / 1e6),
        a if a >= 1e4 => format!("{:.0}k", v / 1e3),
        a if a >= 10.0 || a == 0.0 => format!("{v:.0}"),
        _ => format!("{v:.2}"),
    }
}

/// A drawing area of a figure.
type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// A panel's chart: both axes linear in f64.
type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A figure of `panels` panels: the title on top, then three panels a row
/// (a matrix's throughput, ratios and memory side by side). Returns the
/// root, to present once drawn, and the panels' areas.
fn figure<'a>(path: &'a str, title: &str, panels: usize) -> Result<(Area<'a>, Vec<Area<'a>>)> {
    let rows = panels.div_ceil(3);
    let root = SVGBackend::new(path, (1500, 400 * rows as u32 + 40)).into_drawing_area();
    root.fill(&WHITE)?;
    let (head, body) = root.split_vertically(40);
    head.draw(&Text::new(
        title.to_string(),
        (20, 12),
        ("sans-serif", 18).into_font(),
    ))?;
    let areas = body.split_evenly((rows, 3));
    Ok((root, areas))
}

/// Draws each line of a panel (its x values through `x`) with its points,
/// then the legend.
fn draw_lines<'a, 'b: 'a>(
    chart: &mut Chart<'a, 'b>,
    lines: &[Series],
    x: impl Fn(f64) -> f64,
    width: u32,
    radius: u32,
) -> Result<()> {
    for &(name, color, ref points) in lines {
        let points: Vec<(f64, f64)> = points.iter().map(|&(px, y)| (x(px), y)).collect();
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(width),
            ))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
        chart.draw_series(
            points
                .iter()
                .map(|&p| Circle::new(p, radius, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 12))
        .draw()?;
    Ok(())
}

fn draw(path: &str, title: &str, panels: &[Panel]) -> Result<()> {
    if panels
        .iter()
        .all(|p| p.lines.iter().all(|l| l.2.is_empty()))
    {
        eprintln!("scale_plot: no points for {path}, left as it is");
        return Ok(());
    }
    let (root, areas) = figure(path, title, panels.len())?;
    for (area, panel) in areas.iter().zip(panels) {
        // The x values (10, 100, ... or 6, 24, 96, 192) sit evenly spaced,
        // one step each, labelled with their value.
        let mut xs: Vec<f64> = panel
            .lines
            .iter()
            .flat_map(|(_, _, p)| p.iter().map(|q| q.0))
            .collect();
        xs.sort_by(f64::total_cmp);
        xs.dedup();
        let step = |x: f64| xs.iter().position(|&v| v == x).unwrap_or(0) as f64;
        let label = |v: &f64| match xs.get(v.round() as usize) {
            Some(&x) if (v - v.round()).abs() < 1e-6 && *v >= 0.0 => short(x),
            _ => String::new(),
        };
        let y_max = panel
            .lines
            .iter()
            .flat_map(|(_, _, p)| p.iter().map(|q| q.1))
            .fold(1e-3, f64::max)
            * 1.5; // room for the legend above the lines
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(70)
            .build_cartesian_2d(-0.3..xs.len() as f64 - 0.7, 0.0..y_max)?;
        chart
            .configure_mesh()
            .x_desc(panel.x_desc)
            .y_desc(panel.unit)
            .disable_x_mesh()
            .light_line_style(WHITE.mix(0.0))
            .label_style(("sans-serif", 12))
            .x_labels(4 * xs.len())
            .x_label_formatter(&label)
            .y_label_formatter(&|y| short(*y))
            .draw()?;
        draw_lines(&mut chart, &panel.lines, step, 2, 3)?;
    }
    root.present()?;
    Ok(())
}

/// The ratios of the bus to the raw clients along `x` (above 1 the bus is
/// faster).
fn ratios(points: &[&Point], x: fn(&Point) -> f64) -> Vec<Series> {
    let line = |f: fn(&Point) -> Option<f64>| -> Vec<(f64, f64)> {
        points.iter().filter_map(|p| Some((x(p), f(p)?))).collect()
    };
    let baseline = match points.first().map(|p| p.backend.as_str()) {
        Some("nats") => "bus ÷ async-nats, plain consumer",
        _ => "bus ÷ in-place loop (memory: mpsc)",
    };
    let all: [(&'static str, RGBColor, Rate); 4] = [
        ("bus ÷ keyed by hand, end to end", RED, |p| p.ratio_keyed),
        (baseline, BLACK, |p| Some(p.ratio_baseline)),
        ("bus ÷ async-nats, pinned consumer", CYAN, |p| {
            p.ratio_pinned
        }),
        ("bus ÷ keyed by hand, consumer path", MAGENTA, |p| {
            p.ratio_path
        }),
    ];
    all.into_iter()
        .map(|(name, color, f)| (name, color, line(f)))
        .filter(|(_, _, pts)| !pts.is_empty())
        .collect()
}

/// The throughput, ratio and peak RSS panels of one matrix.
fn panels(points: &[&Point], what: &str, x_desc: &'static str, x: fn(&Point) -> f64) -> [Panel; 3] {
    let rss = points.iter().map(|p| (x(p), p.rss_mib)).collect();
    [
        Panel {
            title: format!("{what}: throughput"),
            x_desc,
            unit: "msg/s",
            lines: rates(points, x, |_| 1.0),
        },
        Panel {
            title: format!("{what}: the bus against the raw client"),
            x_desc,
            unit: "bus ÷ raw client",
            lines: ratios(points, x),
        },
        Panel {
            title: format!("{what}: peak RSS of the benchmark process"),
            x_desc,
            unit: "MiB",
            lines: vec![("peak RSS", BLUE, rss)],
        },
    ]
}

fn table(points: &[Point]) {
    let points: Vec<&Point> = points
        .iter()
        .filter(|p| p.backend != "nats" && p.matrix != "backlog")
        .collect();
    if points.is_empty() {
        return;
    }
    let rate = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.0}"));
    let ratio = |r: Option<f64>| r.map_or("—".to_string(), |r| format!("{r:.2}"));
    println!("| matrix | keys | partitions | bytes | records | bus msg/s | keyed by hand | in-place (memory: mpsc) | bus ÷ keyed | bus ÷ in-place | consumer path: bus | keyed by hand | bus ÷ keyed | peak RSS MiB |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for p in points {
        println!(
            "| {} | {} | {} | {} | {} | {:.0} | {} | {:.0} | {} | {:.2} | {} | {} | {} | {:.0} |",
            p.matrix,
            p.keys,
            p.partitions,
            p.size,
            p.messages,
            p.bus,
            rate(p.keyed),
            p.baseline,
            ratio(p.ratio_keyed),
            p.ratio_baseline,
            rate(p.path_bus),
            rate(p.path_keyed),
            ratio(p.ratio_path),
            p.rss_mib
        );
    }
}

/// The backlog points: the consumer path reading a filled topic of more and
/// more records, and the memory each side of it used.
fn backlog_table(points: &[Point]) {
    let points: Vec<&Point> = points.iter().filter(|p| p.matrix == "backlog").collect();
    if points.is_empty() {
        return;
    }
    let opt =
        |v: Option<f64>, digits: usize| v.map_or("—".to_string(), |v| format!("{v:.digits$}"));
    println!();
    println!("| records | consumer path: bus msg/s | keyed by hand | bus ÷ keyed | CPU µs/record: bus / keyed | peak RSS MiB while reading: bus / keyed | growth MiB: bus / keyed | end to end: bus msg/s | bus ÷ keyed | process peak RSS MiB |");
    println!("|---:|---:|---:|---:|---|---|---|---:|---:|---:|");
    for p in points {
        println!(
            "| {} | {} | {} | {} | {} / {} | {} / {} | {} / {} | {:.0} | {} | {:.0} |",
            p.messages,
            opt(p.path_bus, 0),
            opt(p.path_keyed, 0),
            opt(p.ratio_path, 2),
            opt(p.path_cpu_bus, 2),
            opt(p.path_cpu_keyed, 2),
            opt(p.path_rss_bus, 0),
            opt(p.path_rss_keyed, 0),
            opt(p.path_growth_bus, 0),
            opt(p.path_growth_keyed, 0),
            p.bus,
            opt(p.ratio_keyed, 2),
            p.rss_mib
        );
    }
}

/// The NATS points: the bus against async-nats on a plain and on a pinned
/// consumer, and the CPU each used per record.
fn nats_table(points: &[Point]) {
    let points: Vec<&Point> = points.iter().filter(|p| p.backend == "nats").collect();
    if points.is_empty() {
        return;
    }
    let opt =
        |v: Option<f64>, digits: usize| v.map_or("—".to_string(), |v| format!("{v:.digits$}"));
    println!();
    println!("| matrix | keys | bytes | records | bus msg/s | async-nats plain | async-nats pinned | bus ÷ plain | bus ÷ pinned | CPU µs/record: bus / plain / pinned | peak RSS MiB |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|");
    for p in points {
        println!(
            "| {} | {} | {} | {} | {:.0} | {:.0} | {} | {:.2} | {} | {} / {} / {} | {:.0} |",
            p.matrix,
            p.keys,
            p.size,
            p.messages,
            p.bus,
            p.baseline,
            opt(p.pinned, 0),
            p.ratio_baseline,
            opt(p.ratio_pinned, 2),
            opt(p.cpu_bus, 1),
            opt(p.cpu_baseline, 1),
            opt(p.cpu_pinned, 1),
            p.rss_mib
        );
    }
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(jsonl), Some(dir)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: scale_plot <points.jsonl> <output directory>");
    };
    let text = std::fs::read_to_string(&jsonl).with_context(|| jsonl.clone())?;
    let (topic_lines, lines): (Vec<&str>, Vec<&str>) = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .partition(|l| is_topics_step(l));
    let points: Vec<Point> = lines.into_iter().map(parse).collect::<Result<_>>()?;
    let mut by: BTreeMap<&str, Vec<&Point>> = BTreeMap::new();
    for p in &points {
        by.entry(p.matrix.as_str()).or_default().push(p);
    }
    let of = |m: &str| by.get(m).cloned().unwrap_or_default();
    let keys = |p: &Point| p.keys;
    let mut figure = Vec::new();
    figure.extend(panels(&of("keys-kafka"), "Kafka", "keys", keys));
    figure.extend(panels(&of("keys-memory"), "memory", "keys", keys));
    draw(
        &format!("{dir}/scale-keys.svg"),
        "Keys 10 to 1,000,000: Kafka (6 partitions, 1 KiB) and memory (1 KiB)",
        &figure,
    )?;
    let partitions = panels(&of("partitions"), "Kafka", "partitions", |p| p.partitions);
    draw(
        &format!("{dir}/scale-partitions.svg"),
        "Kafka partitions 6 to 192 (1,000 keys, 1 KiB)",
        &partitions,
    )?;
    let payload = of("payload");
    let size = |p: &Point| p.size;
    let mut figure = Vec::from(panels(&payload, "Kafka", "payload bytes", size));
    figure.push(Panel {
        title: "Kafka: payload throughput".into(),
        x_desc: "payload bytes",
        unit: "MiB/s",
        lines: rates(&payload, size, |p| p.size / 1_048_576.0),
    });
    draw(
        &format!("{dir}/scale-payload.svg"),
        "Kafka payload 100 B to 100 KiB (1,000 keys, 6 partitions)",
        &figure,
    )?;
    let mut figure = Vec::from(panels(&of("nats-keys"), "NATS", "keys", keys));
    let payload = of("nats-payload");
    figure.extend(panels(&payload, "NATS", "payload bytes", size));
    figure.push(Panel {
        title: "NATS: payload throughput".into(),
        x_desc: "payload bytes",
        unit: "MiB/s",
        lines: rates(&payload, size, |p| p.size / 1_048_576.0),
    });
    draw(
        &format!("{dir}/scale-nats.svg"),
        "NATS JetStream: keys 10 to 100,000 (1 KiB) and payload 100 B to 100 KiB (1,000 keys)",
        &figure,
    )?;
    let backlog = of("backlog");
    let records = |p: &Point| p.messages;
    let [throughput, ratios, _] = panels(&backlog, "Kafka backlog", "records", records);
    let side = |f: Rate| {
        backlog
            .iter()
            .filter_map(|p| Some((p.messages, f(p)?)))
            .collect()
    };
    let memory = Panel {
        title: "Kafka backlog: resident set while reading it".into(),
        x_desc: "records",
        unit: "MiB",
        lines: vec![
            ("bus, consumer path", GREEN, side(|p| p.path_rss_bus)),
            (
                "keyed by hand, consumer path",
                MAGENTA,
                side(|p| p.path_rss_keyed),
            ),
            ("whole process (VmHWM)", BLACK, side(|p| Some(p.rss_mib))),
        ],
    };
    draw(
        &format!("{dir}/scale-backlog.svg"),
        "Kafka backlog: 100 B records (1,000 keys, 6 partitions) read from the beginning",
        &[throughput, ratios, memory],
    )?;
    table(&points);
    nats_table(&points);
    backlog_table(&points);
    if !topic_lines.is_empty() {
        let steps: Vec<TopicStep> = topic_lines
            .into_iter()
            .map(parse_topic_step)
            .collect::<Result<_>>()?;
        draw_topics(&format!("{dir}/scale-topics.svg"), &steps)?;
        topics_table(&steps);
    }
    Ok(())
}

// Topics on one bus (`eventbus bench --topics ...`, matrix `topics`): one
// line per step of one growing bus, so the points are drawn along the
// number of topics, not from separate runs.

/// One step of the topics matrix: the bus with `topics` topics subscribed.
#[derive(Debug)]
struct TopicStep {
    topics: f64,
    partitions: f64,
    /// Number (1-based) of the first topic added in this step.
    added_from: f64,
    subscribe_ms: Vec<f64>,
    assigned_ms: Vec<f64>,
    first_record_ms: Vec<f64>,
    revoked_while_adding: f64,
    revoked_while_flowing: f64,
    assigned_partitions: f64,
    idle_cpu_ms_per_s: f64,
    idle_rss_mb: f64,
    rss_mb_before_bus: f64,
    msgs_per_sec: f64,
    /// Absent in lines written before it was measured.
    publish_msgs_per_sec: Option<f64>,
    cpu_us_per_msg: Option<f64>,
    p99_us: Option<f64>,
}

fn is_topics_step(line: &str) -> bool {
    serde_json::from_str::<Value>(line)
        .is_ok_and(|v| v.get("matrix").and_then(Value::as_str) == Some("topics"))
}

fn parse_topic_step(line: &str) -> Result<TopicStep> {
    let v: Value = serde_json::from_str(line)?;
    let need = |k: &str| {
        v.get(k)
            .and_then(Value::as_f64)
            .with_context(|| format!("no `{k}` in {line}"))
    };
    let list = |k: &str| -> Result<Vec<f64>> {
        v.get(k)
            .and_then(Value::as_array)
            .with_context(|| format!("no `{k}` in {line}"))?
            .iter()
            .map(|x| {
                x.as_f64()
                    .with_context(|| format!("`{k}` holds a non-number"))
            })
            .collect()
    };
    Ok(TopicStep {
        topics: need("topics")?,
        partitions: need("partitions")?,
        added_from: need("added_from")?,
        subscribe_ms: list("subscribe_ms")?,
        assigned_ms: list("assigned_ms")?,
        first_record_ms: list("first_record_ms")?,
        revoked_while_adding: need("revoked_while_adding")?,
        revoked_while_flowing: need("revoked_while_flowing")?,
        assigned_partitions: need("assigned_partitions")?,
        idle_cpu_ms_per_s: need("idle_cpu_ms_per_s")?,
        idle_rss_mb: need("idle_rss_mb")?,
        rss_mb_before_bus: need("rss_mb_before_bus")?,
        msgs_per_sec: need("msgs_per_sec")?,
        publish_msgs_per_sec: v.get("publish_msgs_per_sec").and_then(Value::as_f64),
        cpu_us_per_msg: v.get("cpu_us_per_msg").and_then(Value::as_f64),
        p99_us: v.get("p99_us").and_then(Value::as_f64),
    })
}

/// Panels with a linear x axis: the number of topics (or the topic's
/// number), 0 to the largest.
fn draw_linear(path: &str, title: &str, panels: &[Panel]) -> Result<()> {
    let (root, areas) = figure(path, title, panels.len())?;
    for (area, panel) in areas.iter().zip(panels) {
        let all = || panel.lines.iter().flat_map(|(_, _, p)| p.iter());
        let x_max = all().map(|q| q.0).fold(1.0, f64::max) * 1.05;
        let y_max = all().map(|q| q.1).fold(1.0, f64::max) * 1.5;
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
        chart
            .configure_mesh()
            .x_desc(panel.x_desc)
            .y_desc(panel.unit)
            .light_line_style(WHITE.mix(0.0))
            .label_style(("sans-serif", 12))
            .x_label_formatter(&|x| short(*x))
            .y_label_formatter(&|y| short(*y))
            .draw()?;
        draw_lines(&mut chart, &panel.lines, |x| x, 1, 2)?;
    }
    root.present()?;
    Ok(())
}

/// Per topic added, along its number: the time from `subscribe` to each
/// milestone.
fn per_topic(steps: &[TopicStep], f: fn(&TopicStep) -> &Vec<f64>) -> Vec<(f64, f64)> {
    steps
        .iter()
        .flat_map(|s| {
            f(s).iter()
                .enumerate()
                .map(move |(i, &ms)| (s.added_from + i as f64, ms))
        })
        .collect()
}

fn draw_topics(path: &str, steps: &[TopicStep]) -> Result<()> {
    let along = |f: fn(&TopicStep) -> Option<f64>| -> Vec<(f64, f64)> {
        steps
            .iter()
            .filter_map(|s| Some((s.topics, f(s)?)))
            .collect()
    };
    let x_desc = "topics subscribed";
    let panels = [
        Panel {
            title: "subscribe → ..., per topic added".into(),
            x_desc: "topic number (in the order subscribed)",
            unit: "ms",
            lines: vec![
                (
                    "subscribe returned",
                    BLUE,
                    per_topic(steps, |s| &s.subscribe_ms),
                ),
                (
                    "partitions owned",
                    GREEN,
                    per_topic(steps, |s| &s.assigned_ms),
                ),
                (
                    "first record handled",
                    RED,
                    per_topic(steps, |s| &s.first_record_ms),
                ),
            ],
        },
        Panel {
            title: "partitions revoked (must be 0)".into(),
            x_desc,
            unit: "partitions",
            lines: vec![
                (
                    "while topics were added",
                    RED,
                    along(|s| Some(s.revoked_while_adding)),
                ),
                (
                    "while records flowed",
                    BLACK,
                    along(|s| Some(s.revoked_while_flowing)),
                ),
            ],
        },
        Panel {
            title: "idle: CPU of the process".into(),
            x_desc,
            unit: "ms CPU per s",
            lines: vec![("idle CPU", BLUE, along(|s| Some(s.idle_cpu_ms_per_s)))],
        },
        Panel {
            title: "idle: RSS of the process".into(),
            x_desc,
            unit: "MiB",
            lines: vec![
                ("RSS, idle", BLUE, along(|s| Some(s.idle_rss_mb))),
                (
                    "RSS before the bus started",
                    BLACK,
                    along(|s| Some(s.rss_mb_before_bus)),
                ),
            ],
        },
        Panel {
            title: "records spread over the topics: throughput".into(),
            x_desc,
            unit: "msg/s",
            lines: vec![
                ("bus, end to end", BLUE, along(|s| Some(s.msgs_per_sec))),
                (
                    "publish alone (acknowledged)",
                    BLACK,
                    along(|s| s.publish_msgs_per_sec),
                ),
            ],
        },
        Panel {
            title: "records spread over the topics: CPU per record".into(),
            x_desc,
            unit: "µs CPU per record",
            lines: vec![("whole process", BLUE, along(|s| s.cpu_us_per_msg))],
        },
    ];
    let partitions = steps.first().map_or(0.0, |s| s.partitions);
    draw_linear(
        path,
        &format!(
            "Kafka topics 1 to {} on one bus ({partitions} partitions each)",
            short(steps.last().map_or(0.0, |s| s.topics))
        ),
        &panels,
    )
}

fn topics_table(steps: &[TopicStep]) {
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    };
    let max = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::max);
    let opt =
        |v: Option<f64>, digits: usize| v.map_or("—".to_string(), |v| format!("{v:.digits$}"));
    println!("| topics | partitions owned | topics added | subscribe returned, median ms | first record, median ms | first record, max ms | revoked while adding | idle CPU ms/s | idle RSS MiB | msg/s over the topics | published msg/s | p99 µs | CPU µs/record | revoked while flowing |");
    println!("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for s in steps {
        println!(
            "| {} | {} | {}–{} | {:.1} | {:.1} | {:.1} | {} | {:.1} | {:.1} | {:.0} | {} | {} | {} | {} |",
            s.topics,
            s.assigned_partitions,
            s.added_from,
            s.topics,
            median(&s.subscribe_ms),
            median(&s.first_record_ms),
            max(&s.first_record_ms),
            s.revoked_while_adding,
            s.idle_cpu_ms_per_s,
            s.idle_rss_mb,
            s.msgs_per_sec,
            opt(s.publish_msgs_per_sec, 0),
            opt(s.p99_us, 0),
            opt(s.cpu_us_per_msg, 2),
            s.revoked_while_flowing,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::{is_topics_step, parse, parse_topic_step};

    #[test]
    fn parses_a_kafka_point_and_a_memory_point() {
        let kafka = r#"{"matrix":"keys-kafka","keys":10,"partitions":6,"size":1024,"messages":200000,"rounds":1,"msgs_per_sec":150000.0,"baseline_msgs_per_sec":200000.0,"ratio":0.75,"keyed_end_to_end":{"msgs_per_sec":150000.0,"baseline_msgs_per_sec":160000.0},"consumer_path":{"msgs_per_sec":500000.0,"baseline_msgs_per_sec":450000.0},"peak_rss_mb":120.5}"#;
        let p = parse(kafka).unwrap();
        assert_eq!((p.keyed, p.path_bus), (Some(160000.0), Some(500000.0)));
        assert_eq!(p.rss_mib, 120.5);
        let memory = r#"{"matrix":"keys-memory","keys":10,"partitions":6,"size":1024,"messages":1000000,"rounds":3,"msgs_per_sec":5e5,"baseline_msgs_per_sec":2e6,"ratio":0.25,"peak_rss_mb":70.0}"#;
        let p = parse(memory).unwrap();
        assert_eq!((p.keyed, p.path_keyed), (None, None));
        assert!(parse(r#"{"matrix":"x"}"#).is_err());
    }

    #[test]
    fn parses_a_nats_point() {
        let nats = r#"{"matrix":"nats-keys","backend":"nats","keys":10,"partitions":6,"size":1024,"messages":100000,"msgs_per_sec":40000.0,"baseline_msgs_per_sec":46000.0,"ratio":0.87,"cpu_us_per_msg":10.2,"baseline_cpu_us_per_msg":8.9,"pinned_end_to_end":{"msgs_per_sec":40000.0,"baseline_msgs_per_sec":41000.0,"ratio":0.98,"baseline_cpu_us_per_msg":8.4},"peak_rss_mb":49.1}"#;
        let p = parse(nats).unwrap();
        assert_eq!(p.backend, "nats");
        assert_eq!((p.pinned, p.ratio_pinned), (Some(41000.0), Some(0.98)));
        assert_eq!((p.cpu_bus, p.cpu_pinned), (Some(10.2), Some(8.4)));
        assert_eq!((p.keyed, p.path_bus), (None, None));
    }

    #[test]
    fn parses_a_topics_step_apart_from_the_other_points() {
        let line = r#"{"matrix":"topics","mode":"topics","topics":10,"partitions":3,"messages":100000,"added_from":2,"subscribe_ms":[1500.1,1499.0],"assigned_ms":[1500.2,1499.1],"first_record_ms":[1501.0,1500.0],"revoked_while_adding":0,"revoked_while_flowing":0,"assigned_partitions":30,"idle_cpu_ms_per_s":12.0,"idle_rss_mb":40.5,"rss_mb_before_bus":20.1,"msgs_per_sec":60000.0,"p99_us":9000,"cpu_us_per_msg":6.5}"#;
        assert!(is_topics_step(line));
        let s = parse_topic_step(line).unwrap();
        assert_eq!((s.topics, s.added_from), (10.0, 2.0));
        assert_eq!(s.first_record_ms, vec![1501.0, 1500.0]);
        assert_eq!(s.cpu_us_per_msg, Some(6.5));
        assert!(!is_topics_step(r#"{"matrix":"keys-kafka"}"#));
        assert!(parse_topic_step(r#"{"matrix":"topics","topics":1}"#).is_err());
    }
}
