//! `eventbus bench --only SIDE`: one side alone (Kafka: an end-to-end
//! side; memory: the bus), for profiling it without the other sides in the
//! same process
//! (`scripts/profile` records `perf` profiles of the bus and of the
//! keyed consumer written by hand this way). It prints the side's rate and
//! CPU per record; comparisons belong to the full benchmark.

use anyhow::Result;
use serde::Serialize;

use super::{BenchArgs, BenchBackend, Build, OnlySide, SideResult, Workload, BUILD};

#[derive(Serialize)]
struct Report {
    #[serde(flatten)]
    build: Build,
    side: OnlySide,
    #[serde(flatten)]
    workload: Workload,
    msgs_per_sec_per_round: Vec<f64>,
    cpu_us_per_msg_per_round: Vec<Option<f64>>,
}

pub(crate) async fn run(args: &BenchArgs, side: OnlySide) -> Result<()> {
    let mut report = Report {
        build: BUILD,
        side,
        workload: args.workload(),
        msgs_per_sec_per_round: Vec::new(),
        cpu_us_per_msg_per_round: Vec::new(),
    };
    let results = match args.backend {
        BenchBackend::Memory => memory(args, side).await?,
        #[cfg(feature = "kafka")]
        BenchBackend::Kafka => kafka::rounds(args, side).await?,
        other => {
            return Err(crate::failure::usage(format!(
                "--only is not offered for the {other:?} benchmark"
            )))
        }
    };
    let n = args.messages as f64;
    for result in results {
        report
            .msgs_per_sec_per_round
            .push((n / result.elapsed.as_secs_f64()).round());
        report.cpu_us_per_msg_per_round.push(
            result
                .cpu
                .map(|c| (c.as_secs_f64() * 1e6 / n * 100.0).round() / 100.0),
        );
    }
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

async fn memory(args: &BenchArgs, side: OnlySide) -> Result<Vec<SideResult>> {
    let OnlySide::Bus = side else {
        return Err(crate::failure::usage(
            "the memory benchmark's sides are the bus and a tokio channel: use --only bus",
        ));
    };
    let mut results = Vec::new();
    for _ in 0..args.rounds.max(1) {
        let cpu_before = super::process_cpu();
        let mut result = super::memory::bus_side(args).await?;
        result.cpu = super::cpu_since(cpu_before);
        results.push(result);
    }
    Ok(results)
}

#[cfg(feature = "kafka")]
mod kafka {
    use anyhow::{Context, Result};
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::config::ClientConfig;

    use super::super::kafka_e2e::{bus_side, raw_side, RawConsumer};
    use super::super::{BenchArgs, OnlySide, SideResult};

    pub(super) async fn rounds(args: &BenchArgs, side: OnlySide) -> Result<Vec<SideResult>> {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &args.brokers)
            .create()
            .context("admin client")?;
        let run_id = super::super::run_id();
        let mut results = Vec::new();
        for round in 0..args.rounds.max(1) {
            let topic = format!("bench-only-{run_id}-{round}");
            let brokers = &args.brokers;
            let result = match side {
                OnlySide::Bus => bus_side(args, brokers, &topic).await,
                OnlySide::InPlace => {
                    raw_side(args, brokers, &admin, &topic, RawConsumer::InPlace).await
                }
                OnlySide::Keyed => {
                    raw_side(args, brokers, &admin, &topic, RawConsumer::Keyed).await
                }
            };
            let _ = admin.delete_topics(&[&topic], &AdminOptions::new()).await;
            results.push(result?);
        }
        Ok(results)
    }
}
