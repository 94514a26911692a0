//! `eventbus`: operate and inspect jxt-eventbus buses from the command line
//! (check, publish, tail, lag, dead letters, serve), on the same
//! configuration file a service uses; plus a demo and benchmarks.
//!
//! Exit codes are in [`failure`]: 0 done, 1 error, 2 usage, 3 threshold.

// Built without a broker backend (`--no-default-features`), the broker
// paths are compiled out and leave helpers and bindings they alone use.
#![cfg_attr(
    not(any(feature = "kafka", feature = "nats")),
    allow(dead_code, unused_variables, unused_imports, unreachable_code)
)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod check;
mod completions;
mod config_cmd;
mod demo;
mod dlq;
mod failure;
mod global;
mod kafka_client;
mod lag;
mod output;
mod publish;
mod secrets;
mod serve;
mod tail;

// mimalloc rather than glibc's malloc: an event bus allocates records on one
// thread (the Kafka poll thread, the NATS connection task) and frees them on
// another (the handler's worker), and glibc's malloc contends on its arena
// locks for such frees. It is what we recommend to services using the
// library (docs/benchmarks.md has figures with both). Both sides of every
// benchmark run in this process, so they share the allocator.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// jxt-eventbus command line: check, publish, tail, lag, dead letters,
/// serve — on the configuration file your service uses.
///
/// Exit codes: 0 ok, 1 error, 2 usage, 3 a threshold was crossed.
#[derive(Debug, Parser)]
#[command(
    name = "eventbus",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("JXT_EVENTBUS_GIT_COMMIT"), ")"),
    about,
    long_about = None
)]
struct Cli {
    #[command(flatten)]
    global: global::Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Connect to the brokers and check the configured topics, in bounded time.
    Check(check::CheckArgs),
    /// Publish a record (or one per line) and print its receipt.
    Publish(publish::PublishArgs),
    /// Show records as they arrive (or from --from) without joining a group.
    Tail(tail::TailArgs),
    /// Show how far a consumer group is behind, per partition.
    Lag(lag::LagArgs),
    /// List, show and replay dead letters.
    Dlq(dlq::DlqArgs),
    /// Run a bus from the configuration with its status page and /metrics /healthz /readyz /status.
    Serve(serve::ServeArgs),
    /// Print the default configuration as TOML, or check one offline.
    Config(config_cmd::ConfigArgs),
    /// Run a self-contained demo on the in-memory backend.
    Demo(demo::DemoArgs),
    /// Measure end-to-end throughput and latency, bus vs raw client, in one run.
    Bench(bench::BenchArgs),
    /// Print a shell completion script.
    Completions(completions::CompletionsArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(cli.global.verbose);
    let verbose = cli.global.verbose > 0;
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            failure::print(&e, verbose);
            ExitCode::from(failure::exit_code(&e))
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let global = cli.global;
    match cli.command {
        Command::Check(args) => runtime.block_on(check::run(&global, args)),
        Command::Publish(args) => runtime.block_on(publish::run(&global, args)),
        Command::Tail(args) => runtime.block_on(tail::run(&global, args)),
        Command::Lag(args) => runtime.block_on(lag::run(&global, args)),
        Command::Dlq(args) => runtime.block_on(dlq::run(&global, args)),
        Command::Serve(args) => runtime.block_on(serve::run(&global, args)),
        Command::Config(args) => config_cmd::run(&global, args),
        Command::Demo(args) => runtime.block_on(demo::run(&global, args)),
        Command::Bench(args) => runtime.block_on(bench::run(&global, args)),
        Command::Completions(args) => completions::run::<Cli>(args),
    }
}

/// Logs go to stderr. By default only the bus's warnings and errors, and
/// none of librdkafka's own lines: a dead broker would repeat the same
/// connection error for every attempt, and each command reports the
/// outcome itself in one line. `-v` shows info, `-vv` debug (librdkafka's
/// included); `EVENTBUS_DEV_LOG` takes a full filter.
fn init_logs(verbose: u8) {
    let default = match verbose {
        0 => "warn,librdkafka=off",
        1 => "info,librdkafka=warn",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EVENTBUS_DEV_LOG")
                .unwrap_or_else(|_| default.into()),
        )
        .with_writer(|| secrets::ScrubbedStderr)
        .with_ansi(colour_on_stderr())
        .init();
}

/// Colour on stderr only on a terminal and never with `NO_COLOR`.
fn colour_on_stderr() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
