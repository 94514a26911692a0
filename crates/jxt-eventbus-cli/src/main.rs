//! `eventbus`: a demo of jxt-eventbus on the memory backend, and benchmarks
//! of the bus against the raw clients.

use anyhow::Result;
use clap::{Parser, Subcommand};

mod bench;
mod demo;

// mimalloc rather than glibc's malloc: an event bus allocates records on one
// thread (the Kafka poll thread, the NATS connection task) and frees them on
// another (the handler's worker), and glibc's malloc contends on its arena
// locks for such frees. It is what we recommend to services using the
// library (docs/benchmarks.md has figures with both). Both sides of every
// benchmark run in this process, so they share the allocator.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// jxt-eventbus command line.
#[derive(Debug, Parser)]
#[command(name = "eventbus", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a self-contained demo on the in-memory backend.
    Demo(demo::DemoArgs),
    /// Measure end-to-end throughput and latency, bus vs raw client, in one run.
    Bench(bench::BenchArgs),
    /// Print the default configuration as TOML, or check a configuration.
    Config {
        /// Load and validate the configuration as a service would: FILE
        /// (YAML or TOML) if given, then every EVENTBUS_* variable. Lists
        /// the variables applied; a variable that is no configuration fails
        /// the check.
        #[arg(long, value_name = "FILE", num_args = 0..=1)]
        check: Option<Option<std::path::PathBuf>>,
        /// Check only this section of FILE (for example `eventbus` in a
        /// service's own file); the rest of the file is not looked at.
        #[arg(long, value_name = "NAME", requires = "check")]
        section: Option<String>,
    },
}

/// Errors print as their message (one line per configuration problem),
/// without a backtrace whatever `RUST_BACKTRACE` says.
fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EVENTBUS_DEV_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Demo(args) => runtime.block_on(demo::run(args)),
        Command::Bench(args) => runtime.block_on(bench::run(args)),
        Command::Config { check, section } => config(check, section),
    }
}

fn config(check: Option<Option<std::path::PathBuf>>, section: Option<String>) -> Result<()> {
    let Some(path) = check else {
        let defaults = jxt_eventbus::BusConfig::default();
        print!("{}", toml::to_string_pretty(&defaults)?);
        return Ok(());
    };
    let (loaded, source) = match (&path, &section) {
        (Some(file), Some(name)) => (
            jxt_eventbus::BusConfig::load_section(file, name)?,
            format!("{} (section {name})", file.display()),
        ),
        (None, Some(_)) => anyhow::bail!("--section needs the FILE of --check"),
        (_, None) => (
            jxt_eventbus::BusConfig::load(path.as_deref())?,
            path.map_or_else(|| "defaults".to_string(), |p| p.display().to_string()),
        ),
    };
    println!(
        "{source}: valid (backend {:?}, group {:?})",
        loaded.backend, loaded.group
    );
    for (variable, field) in jxt_eventbus::config::environment_overrides()? {
        println!("  {variable} sets {field}");
    }
    Ok(())
}
