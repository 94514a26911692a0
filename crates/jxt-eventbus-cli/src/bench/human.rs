//! The benchmark report for people: one aligned table of every comparison
//! (the headline, the references beside it, the consumer path), each side
//! on its own row, between a line saying what ran and one saying whether
//! per-key order held.

use anyhow::Result;

use super::{Report, Summary};
use crate::output;

fn us(v: Option<u64>) -> String {
    v.map_or("-".to_string(), |v| v.to_string())
}

fn cpu(v: Option<f64>) -> String {
    v.map_or("-".to_string(), |v| format!("{v:.2}"))
}

/// The bus row and the baseline row of one comparison.
fn rows(t: &mut comfy_table::Table, name: &str, s: &Summary, latency: [Option<u64>; 4]) {
    let [p50, p99, base_p50, base_p99] = latency;
    t.add_row(vec![
        name.to_string(),
        "bus".to_string(),
        format!("{:.0}", s.msgs_per_sec),
        us(p50),
        us(p99),
        cpu(s.cpu_us_per_msg),
        format!("{:.3} {:?}", s.ratio, s.ratio_per_round),
        String::new(),
    ]);
    t.add_row(vec![
        String::new(),
        "baseline".to_string(),
        format!("{:.0}", s.baseline_msgs_per_sec),
        us(base_p50),
        us(base_p99),
        cpu(s.baseline_cpu_us_per_msg),
        String::new(),
        s.baseline.to_string(),
    ]);
}

pub(super) fn print(report: &Report) -> Result<()> {
    println!(
        "{:?}{}: {} messages over {} keys, {} bytes, {} partitions, {} lanes{}, {} rounds (eventbus {} {})",
        report.workload.backend,
        report
            .nats_sharing
            .map_or(String::new(), |s| format!(" (sharing {s:?})")),
        report.workload.messages,
        report.workload.keys,
        report.workload.size,
        report.workload.partitions,
        report.workload.concurrency,
        report.workload.work.describe(),
        report.headline.rounds,
        report.build.version,
        report.build.commit,
    );
    let mut t = output::table(&[
        "COMPARISON",
        "SIDE",
        "MSG/S",
        "P50 US",
        "P99 US",
        "CPU US/MSG",
        "RATIO (PER ROUND)",
        "BASELINE",
    ]);
    rows(
        &mut t,
        "end to end",
        &report.headline,
        [
            report.p50_us,
            report.p99_us,
            report.baseline_p50_us,
            report.baseline_p99_us,
        ],
    );
    for (name, s) in &report.reference {
        rows(&mut t, name, s, [None; 4]);
    }
    if let Some(c) = &report.consumer_path {
        rows(&mut t, "consumer path", c, [None; 4]);
    }
    output::print_table(&t)?;
    if let Some(p) = report
        .consumer_path
        .as_ref()
        .and_then(|c| c.publish_msgs_per_sec)
    {
        println!("bus publish filling the topic: {p:.0} msg/s");
    }
    if let Some(c) = &report.consumer_path {
        if let (Some(bus), Some(raw)) = (c.side_peak_rss_mb, c.baseline_side_peak_rss_mb) {
            println!(
                "consumer path, resident set while reading: bus {bus:.1} MiB (+{:.1}), baseline {raw:.1} MiB (+{:.1})",
                c.side_rss_growth_mb.unwrap_or(0.0),
                c.baseline_side_rss_growth_mb.unwrap_or(0.0),
            );
        }
    }
    println!(
        "ratios are medians over rounds; per-key order held: {}; peak RSS {:.1} MiB",
        report.per_key_order_held, report.peak_rss_mb
    );
    Ok(())
}
