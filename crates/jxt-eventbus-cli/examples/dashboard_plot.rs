//! Draws `docs/img/dashboard.svg`: the panels of the Grafana dashboard
//! (`deploy/grafana/eventbus.json`), computed the way Prometheus would from a
//! bus's real metrics, for readers who do not run Grafana.
//!
//! A memory bus runs for about 70 seconds: a steady publisher, a burst that
//! outruns the handlers (lag, recovery mode), then catching up; 1% of the
//! records fail for good (dead letters) and 2% fail once (retries). The
//! bus's metrics registry is scraped once a second — the same text `/metrics`
//! serves — and the dashboard's queries (`rate` over 5 s, `histogram_quantile`
//! over the bucket rates, sums by label) are evaluated over those scrapes.
//!
//! ```text
//! cargo run -p jxt-eventbus-cli --example dashboard_plot -- docs/img/dashboard.svg
//! ```
//!
//! A development tool: `plotters` is a dev-dependency of the CLI crate only.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jxt_eventbus::config::BusConfig;
use jxt_eventbus::{Delivery, ErrorKind, EventBus, HandlerError, Message, SubscribeOptions};
use plotters::prelude::*;
use prometheus_client::encoding::text::encode;

/// Seconds the scenario runs.
const RUN_SECS: u64 = 70;
/// The `rate` window, as `$__rate_interval` would be with a 1 s scrape.
const WINDOW: usize = 5;

/// Publish rate (records/s) at second `t`.
fn publish_rate(t: f64) -> u64 {
    match t {
        t if t < 20.0 => 120,
        t if t < 32.0 => 600,
        _ => 100,
    }
}

/// One sample line: name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
                .collect();
            Some(Sample {
                name: name.to_string(),
                labels,
                value: value.parse().ok()?,
            })
        })
        .collect()
}

/// Scrapes: (seconds since start, samples).
struct Scrapes(Vec<(f64, Vec<Sample>)>);

type Series = BTreeMap<String, Vec<(f64, f64)>>;

impl Scrapes {
    /// `sum by (by) (name{filter})` at every scrape.
    fn sum_by(
        &self,
        name: &str,
        filter: &[(&str, &str)],
        by: &[&str],
    ) -> Vec<BTreeMap<String, f64>> {
        self.0
            .iter()
            .map(|(_, samples)| {
                let mut out = BTreeMap::new();
                for s in samples.iter().filter(|s| s.name == name) {
                    if filter
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
                    {
                        let key = by
                            .iter()
                            .map(|b| s.labels.get(*b).cloned().unwrap_or_default())
                            .collect::<Vec<_>>()
                            .join("/");
                        *out.entry(key).or_insert(0.0) += s.value;
                    }
                }
                out
            })
            .collect()
    }

    /// `sum by (by) (name{filter})` as series.
    fn gauge(&self, name: &str, filter: &[(&str, &str)], by: &[&str]) -> Series {
        let mut series = Series::new();
        for ((t, _), point) in self.0.iter().zip(self.sum_by(name, filter, by)) {
            for (k, v) in point {
                series.entry(k).or_default().push((*t, v));
            }
        }
        series
    }

    /// `sum by (by) (rate(name{filter}[WINDOW]))`.
    fn rate(&self, name: &str, filter: &[(&str, &str)], by: &[&str]) -> Series {
        let points = self.sum_by(name, filter, by);
        let mut series = Series::new();
        for i in WINDOW..points.len() {
            let dt = self.0[i].0 - self.0[i - WINDOW].0;
            for (k, v) in &points[i] {
                let before = points[i - WINDOW].get(k).copied().unwrap_or(0.0);
                series
                    .entry(k.clone())
                    .or_default()
                    .push((self.0[i].0, (v - before).max(0.0) / dt));
            }
        }
        series
    }

    /// `histogram_quantile(q, sum by (le) (rate(name_bucket[WINDOW])))`.
    fn quantile(&self, q: f64, bucket: &str) -> Vec<(f64, f64)> {
        let rates = self.rate(bucket, &[], &["le"]);
        let times: Vec<f64> = rates
            .values()
            .next()
            .map(|v| v.iter().map(|p| p.0).collect())
            .unwrap_or_default();
        let mut les: Vec<(f64, &Vec<(f64, f64)>)> = rates
            .iter()
            .map(|(le, v)| {
                (
                    if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse().unwrap()
                    },
                    v,
                )
            })
            .collect();
        les.sort_by(|a, b| a.0.total_cmp(&b.0));
        times
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                let counts: Vec<(f64, f64)> = les.iter().map(|(le, v)| (*le, v[i].1)).collect();
                histogram_quantile(q, &counts).map(|v| (*t, v))
            })
            .collect()
    }
}

/// Prometheus's `histogram_quantile` over cumulative (le, rate) buckets:
/// linear interpolation inside the bucket that holds the rank; `None`
/// without observations.
fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let i = buckets.iter().position(|(_, c)| *c >= rank)?;
    if buckets[i].0.is_infinite() {
        return Some(buckets[i.checked_sub(1)?].0);
    }
    let (lower, below) = if i == 0 { (0.0, 0.0) } else { buckets[i - 1] };
    let (upper, count) = buckets[i];
    Some(lower + (upper - lower) * (rank - below) / (count - below))
}

/// A tiny deterministic generator (xorshift), so runs are alike.
fn next_random(state: &AtomicU64) -> u64 {
    let mut x = state.load(Ordering::Relaxed);
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    state.store(x, Ordering::Relaxed);
    x
}

async fn run_scenario() -> Scrapes {
    let mut config = BusConfig {
        group: "dashboard".into(),
        ..BusConfig::default()
    };
    config.dispatch.max_concurrency = 8;
    config.backlog.check_interval = Duration::from_secs(1);
    config.backlog.max_lag = 400;
    config.retry.initial_backoff = Duration::from_millis(20);
    config.retry.max_attempts = 3;
    let bus = EventBus::builder()
        .config(config)
        .build()
        .await
        .expect("a memory bus");
    let random = Arc::new(AtomicU64::new(0x9e37_79b9_7f4a_7c15));
    let r = random.clone();
    bus.subscribe(
        "orders",
        move |d: Delivery| {
            let r = r.clone();
            async move {
                // Mostly 5–20 ms, a tail up to ~120 ms.
                let x = next_random(&r) % 1000;
                let ms = 5 + x % 15 + if x > 950 { (x - 950) * 2 } else { 0 };
                tokio::time::sleep(Duration::from_millis(ms)).await;
                match (&d.payload()[..], d.attempt()) {
                    (b"bad", _) => Err(HandlerError::new(ErrorKind::Permanent, "declined")),
                    (b"flaky", 1) => Err(HandlerError::new(ErrorKind::Retryable, "try again")),
                    _ => Ok(()),
                }
            }
        },
        SubscribeOptions::new(),
    )
    .await
    .expect("subscribed");

    let started = Instant::now();
    let publisher = {
        let bus = bus.clone();
        let random = random.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut n = 0u64;
            while started.elapsed() < Duration::from_secs(RUN_SECS) {
                tick.tick().await;
                for _ in 0..publish_rate(started.elapsed().as_secs_f64()) / 10 {
                    let payload = match next_random(&random) % 100 {
                        0 => "bad",
                        1 | 2 => "flaky",
                        _ => "order placed",
                    };
                    n += 1;
                    let key = format!("order-{}", n % 64);
                    bus.publish("orders", Message::new(payload).with_key(key))
                        .await
                        .expect("published");
                }
            }
        })
    };

    let registry = bus.metrics_registry().expect("the bus owns its registry");
    let mut scrapes = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while started.elapsed() < Duration::from_secs(RUN_SECS) {
        tick.tick().await;
        let mut text = String::new();
        encode(&mut text, &registry).expect("encoded");
        scrapes.push((started.elapsed().as_secs_f64(), parse(&text)));
    }
    publisher.await.expect("publisher");
    bus.shutdown().await.expect("shut down");
    Scrapes(scrapes)
}

struct Panel {
    title: &'static str,
    unit: &'static str,
    lines: Vec<(String, Vec<(f64, f64)>)>,
}

fn named(series: Series, label: impl Fn(&str) -> String) -> Vec<(String, Vec<(f64, f64)>)> {
    series.into_iter().map(|(k, v)| (label(&k), v)).collect()
}

fn panels(s: &Scrapes) -> Vec<Panel> {
    let mut throughput = named(
        s.rate("eventbus_messages_consumed_total", &[], &["result"]),
        |r| format!("handled {r}"),
    );
    throughput.extend(named(
        s.rate(
            "eventbus_messages_published_total",
            &[("result", "ok")],
            &[],
        ),
        |_| "published".into(),
    ));
    let mut trouble = named(s.rate("eventbus_retries_total", &[], &[]), |_| {
        "retries".into()
    });
    trouble.extend(named(
        s.rate("eventbus_dead_lettered_total", &[], &[]),
        |_| "dead-lettered".into(),
    ));
    let latency = |bucket: &str| {
        [0.5, 0.9, 0.99]
            .iter()
            .map(|q| (format!("p{}", (q * 100.0) as u32), s.quantile(*q, bucket)))
            .collect()
    };
    let mut load = named(s.gauge("eventbus_in_flight_records", &[], &[]), |_| {
        "in flight".into()
    });
    load.extend(named(s.gauge("eventbus_running_records", &[], &[]), |_| {
        "running".into()
    }));
    load.extend(named(s.gauge("eventbus_live_lanes", &[], &[]), |_| {
        "live lanes".into()
    }));
    load.extend(named(s.gauge("eventbus_active_lanes", &[], &[]), |_| {
        "active lanes".into()
    }));
    let mut health = named(s.gauge("eventbus_recovery_mode", &[], &[]), |_| {
        "recovery mode".into()
    });
    health.extend(named(
        s.gauge("eventbus_backlog_detected", &[], &[]),
        |_| "backlog".into(),
    ));
    health.extend(named(
        s.gauge("eventbus_broker_reachable", &[], &[]),
        |_| "broker reachable".into(),
    ));
    vec![
        Panel {
            title: "Records / s (handled, published)",
            unit: "rec/s",
            lines: throughput,
        },
        Panel {
            title: "Retries and dead letters / s",
            unit: "rec/s",
            lines: trouble,
        },
        Panel {
            title: "Handler latency",
            unit: "s",
            lines: latency("eventbus_handler_duration_seconds_bucket"),
        },
        Panel {
            title: "Lag per partition",
            unit: "records",
            lines: named(
                s.gauge("eventbus_consumer_lag", &[], &["topic", "partition"]),
                str::to_string,
            ),
        },
        Panel {
            title: "In flight and lanes",
            unit: "",
            lines: load,
        },
        Panel {
            title: "Recovery mode, backlog, broker",
            unit: "",
            lines: health,
        },
        Panel {
            title: "Publish latency",
            unit: "s",
            lines: latency("eventbus_publish_duration_seconds_bucket"),
        },
        Panel {
            title: "Publisher backlog (in flight)",
            unit: "",
            lines: named(s.gauge("eventbus_publisher_in_flight", &[], &[]), |_| {
                "publisher in flight".into()
            }),
        },
    ]
}

fn draw(path: &str, panels: &[Panel]) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (1400, 1300)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(40);
    title.draw(&Text::new(
        "jxt-eventbus dashboard: a memory bus scraped once a second (steady, burst at 20-32 s, catching up)",
        (20, 12),
        ("sans-serif", 18).into_font(),
    ))?;
    let colors = [
        BLUE,
        RED,
        GREEN,
        MAGENTA,
        CYAN,
        BLACK,
        RGBColor(255, 140, 0),
        RGBColor(128, 0, 128),
    ];
    for (area, panel) in body.split_evenly((4, 2)).iter().zip(panels) {
        let x_max = RUN_SECS as f64;
        let y_max = panel
            .lines
            .iter()
            .flat_map(|(_, pts)| pts.iter().map(|p| p.1))
            .fold(0.0_f64, f64::max)
            .max(1e-3)
            * 1.15;
        let mut chart = ChartBuilder::on(area)
            .caption(panel.title, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(28)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc(panel.unit)
            .light_line_style(WHITE.mix(0.0))
            .label_style(("sans-serif", 12))
            .draw()?;
        for (i, (name, points)) in panel.lines.iter().enumerate() {
            let color = colors[i % colors.len()];
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(2),
                ))?
                .label(name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK.mix(0.3))
            .label_font(("sans-serif", 12))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "docs/img/dashboard.svg".into());
    eprintln!("running the scenario for {RUN_SECS} s ...");
    let scrapes = run_scenario().await;
    draw(&path, &panels(&scrapes))?;
    eprintln!("wrote {path} from {} scrapes", scrapes.0.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::histogram_quantile;

    #[test]
    fn quantile_interpolates_like_prometheus() {
        // 10 observations ≤ 0.1, 10 more ≤ 0.2: the median is the top of the
        // first bucket, p75 halfway into the second.
        let b = [(0.1, 10.0), (0.2, 20.0), (f64::INFINITY, 20.0)];
        assert_eq!(histogram_quantile(0.5, &b), Some(0.1));
        assert!((histogram_quantile(0.75, &b).unwrap() - 0.15).abs() < 1e-9);
        assert_eq!(
            histogram_quantile(0.5, &[(0.1, 0.0), (f64::INFINITY, 0.0)]),
            None
        );
        // A rank in the +Inf bucket answers the highest finite bound.
        assert_eq!(
            histogram_quantile(0.99, &[(0.1, 1.0), (f64::INFINITY, 10.0)]),
            Some(0.1)
        );
    }
}
