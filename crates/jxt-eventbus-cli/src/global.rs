//! Options every command takes, and the configuration they lead to.
//!
//! The configuration is loaded exactly as a service loads it
//! ([`BusConfig::load`]: the file, then every `EVENTBUS_*` variable), then the
//! shorthands on the command line are applied on top: `--backend`,
//! `--brokers`, `--nats-url`, `--group`. A shorthand for another backend
//! than the one in force is a usage error, never ignored.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{ArgAction, Args, ValueEnum};
use jxt_eventbus::{BackendKind, BusConfig};

use crate::failure::usage;

/// `--backend`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum BackendArg {
    Memory,
    Kafka,
    Nats,
}

impl From<BackendArg> for BackendKind {
    fn from(b: BackendArg) -> Self {
        match b {
            BackendArg::Memory => BackendKind::Memory,
            BackendArg::Kafka => BackendKind::Kafka,
            BackendArg::Nats => BackendKind::Nats,
        }
    }
}

/// Options of every command.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub(crate) struct Global {
    /// Configuration file (YAML or TOML), loaded as a service loads it: the
    /// file, then every EVENTBUS_* variable, then the options below.
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Read only this section of the --config file (for example `eventbus`
    /// in a service's own file); the rest of the file is not looked at.
    #[arg(long, global = true, value_name = "NAME")]
    pub(crate) section: Option<String>,
    /// Backend (overrides the configuration's `backend`).
    #[arg(long, global = true, value_enum)]
    pub(crate) backend: Option<BackendArg>,
    /// Kafka bootstrap brokers (`kafka.brokers`); implies `--backend kafka`.
    #[arg(
        long,
        global = true,
        value_name = "HOST:PORT,...",
        value_delimiter = ','
    )]
    pub(crate) brokers: Vec<String>,
    /// NATS server URLs (`nats.servers`); implies `--backend nats`.
    #[arg(long, global = true, value_name = "URL,...", value_delimiter = ',')]
    pub(crate) nats_url: Vec<String>,
    /// Consumer group (`group`): the group `lag` and `dlq` look at, and the
    /// one `serve` runs in.
    #[arg(long, global = true, value_name = "GROUP")]
    pub(crate) group: Option<String>,
    /// Print data as JSON, one object per line.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// More detail: every cause of an error on its own line and the bus's
    /// info logs (-v), debug logs (-vv).
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub(crate) verbose: u8,
}

impl Global {
    /// The configuration: file, environment, then the shorthands.
    ///
    /// # Errors
    /// The library's configuration error (naming the file or variable and
    /// the field); a usage error for contradicting shorthands.
    pub(crate) fn load(&self) -> Result<BusConfig> {
        let loaded = match (&self.config, &self.section) {
            (Some(path), Some(name)) => BusConfig::load_section(path, name),
            (None, Some(_)) => return Err(usage("--section needs the file of --config")),
            (path, None) => BusConfig::load(path.as_deref()),
        };
        let mut config = loaded.with_context(|| match (&self.config, &self.section) {
            (Some(path), Some(name)) => {
                format!("configuration {} (section {name})", path.display())
            }
            (Some(path), None) => format!("configuration {}", path.display()),
            _ => "configuration (defaults and EVENTBUS_* variables)".to_string(),
        })?;
        self.apply(&mut config)?;
        crate::secrets::register(&config);
        config.validate().context("configuration")?;
        Ok(config)
    }

    fn apply(&self, config: &mut BusConfig) -> Result<()> {
        let implied = match (self.brokers.is_empty(), self.nats_url.is_empty()) {
            (false, false) => {
                return Err(usage(
                    "--brokers (Kafka) and --nats-url (NATS) name two backends; give one",
                ))
            }
            (false, true) => Some(BackendArg::Kafka),
            (true, false) => Some(BackendArg::Nats),
            (true, true) => None,
        };
        match (self.backend, implied) {
            (Some(chosen), Some(implied)) if chosen != implied => {
                let flag = if implied == BackendArg::Kafka {
                    "--brokers"
                } else {
                    "--nats-url"
                };
                return Err(usage(format!(
                    "{flag} applies to the {} backend, not to --backend {}",
                    BackendKind::from(implied).as_str(),
                    BackendKind::from(chosen).as_str()
                )));
            }
            (Some(b), _) | (None, Some(b)) => config.backend = b.into(),
            (None, None) => {}
        }
        if !self.brokers.is_empty() {
            config.kafka.brokers = self.brokers.clone();
        }
        if !self.nats_url.is_empty() {
            config.nats.servers = self.nats_url.clone();
        }
        if let Some(group) = &self.group {
            config.group = group.clone();
        }
        Ok(())
    }
}

impl Global {
    /// Refuses the configuration options for a command that takes none
    /// (`demo` runs on its own in-memory bus): given, they would be ignored.
    pub(crate) fn refuse_configuration(&self, command: &str) -> Result<()> {
        let given = [
            ("--config", self.config.is_some()),
            ("--section", self.section.is_some()),
            ("--backend", self.backend.is_some()),
            ("--brokers", !self.brokers.is_empty()),
            ("--nats-url", !self.nats_url.is_empty()),
            ("--group", self.group.is_some()),
        ];
        match given.iter().find(|(_, set)| *set) {
            Some((flag, _)) => Err(usage(format!(
                "`eventbus {command}` takes no configuration: {flag} does not apply"
            ))),
            None => Ok(()),
        }
    }
}

/// Where the brokers of `config` are, for messages.
pub(crate) fn brokers(config: &BusConfig) -> String {
    match config.backend {
        BackendKind::Kafka => format!("Kafka at {}", config.kafka.brokers.join(",")),
        BackendKind::Nats => format!("NATS at {}", masked_servers(config)),
        _ => "the in-process memory backend".to_string(),
    }
}

/// The NATS server URLs with any password in them replaced by `***`.
pub(crate) fn masked_servers(config: &BusConfig) -> String {
    config
        .nats
        .servers
        .iter()
        .map(|s| mask_url(s))
        .collect::<Vec<_>>()
        .join(",")
}

/// `scheme://user:secret@host` → `scheme://user:***@host`;
/// `scheme://token@host` → `scheme://***@host`.
pub(crate) fn mask_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((credentials, host)) = rest.rsplit_once('@') else {
        return url.to_string();
    };
    let shown = match credentials.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => "***".to_string(),
    };
    format!("{scheme}://{shown}@{host}")
}

/// The commands that need a broker refuse the memory backend: its records
/// live inside one process, and this process is not the service's.
pub(crate) fn require_broker(config: &BusConfig, command: &str) -> Result<()> {
    if config.backend == BackendKind::Memory {
        return Err(usage(format!(
            "`eventbus {command}` needs a broker: the memory backend lives inside one process, \
             so this command cannot see a service's records; choose Kafka or NATS \
             (--backend, --brokers, --nats-url or --config)"
        )));
    }
    Ok(())
}

/// Parses a duration such as `10s`, `1m30s`, `250ms`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (examples: 10s, 1m30s, 250ms)"))
}

/// A duration for messages: whole seconds above a second, else milliseconds.
pub(crate) fn shown(d: Duration) -> String {
    let d = if d >= Duration::from_secs(1) {
        Duration::from_secs(d.as_secs_f64().round() as u64)
    } else {
        Duration::from_millis(d.as_millis() as u64)
    };
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_masked() {
        assert_eq!(
            mask_url("nats://bob:s3cret@host:4222"),
            "nats://bob:***@host:4222"
        );
        assert_eq!(mask_url("nats://tok@host"), "nats://***@host");
        assert_eq!(mask_url("nats://host:4222"), "nats://host:4222");
        assert_eq!(mask_url("host:4222"), "host:4222");
    }
}
