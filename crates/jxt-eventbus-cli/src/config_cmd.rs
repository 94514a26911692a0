//! `eventbus config`: the default configuration, or an offline check of one.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::global::Global;

/// Arguments of `eventbus config`.
#[derive(Debug, Args)]
pub(crate) struct ConfigArgs {
    /// Load and validate the configuration as a service would: FILE (YAML
    /// or TOML) if given (or --config), then every EVENTBUS_* variable.
    /// Lists the variables applied; a variable that is no configuration
    /// fails the check. Connects to nothing (see `eventbus check`).
    #[arg(long, value_name = "FILE", num_args = 0..=1)]
    check: Option<Option<PathBuf>>,
}

pub(crate) fn run(global: &Global, args: ConfigArgs) -> Result<()> {
    let Some(path) = args.check else {
        if global.config.is_some() {
            return Err(crate::failure::usage(
                "`eventbus config` prints the defaults; check a file with \
                 `eventbus config --check FILE` (or `eventbus --config FILE check` to connect too)",
            ));
        }
        global.refuse_configuration("config")?;
        let defaults = jxt_eventbus::BusConfig::default();
        print!("{}", toml::to_string_pretty(&defaults)?);
        return Ok(());
    };
    let path = path.or_else(|| global.config.clone());
    // `--section NAME` (a global option) checks that section of FILE.
    let section = global.section.clone();
    if section.is_some() && path.is_none() {
        return Err(crate::failure::usage("--section needs the FILE of --check"));
    }
    let global = Global {
        config: path.clone(),
        section: section.clone(),
        backend: global.backend,
        brokers: global.brokers.clone(),
        nats_url: global.nats_url.clone(),
        group: global.group.clone(),
        json: global.json,
        verbose: global.verbose,
    };
    let loaded = global.load()?;
    let source = match (path, section) {
        (Some(p), Some(name)) => format!("{} (section {name})", p.display()),
        (Some(p), None) => p.display().to_string(),
        (None, _) => "defaults".to_string(),
    };
    println!(
        "{source}: valid (backend {:?}, group {:?})",
        loaded.backend, loaded.group
    );
    for (variable, field) in jxt_eventbus::config::environment_overrides().context("environment")? {
        println!("  {variable} sets {field}");
    }
    Ok(())
}
