//! Loading [`BusConfig`] from files and the environment (figment).

use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml, Yaml};
use figment::Figment;

use super::BusConfig;
use crate::error::{Error, Result};

/// Environment variables starting with this are configuration overrides.
pub const ENV_PREFIX: &str = "EVENTBUS_";

/// Top-level keys an environment override may start with. Variables with the
/// prefix whose first segment is not one of these (such as the test rig's
/// `EVENTBUS_KAFKA_BROKERS`) are not configuration and are left alone; inside
/// a section, unknown keys are errors as in files.
const ENV_SECTIONS: &[&str] = &[
    "backend",
    "group",
    "start_from",
    "dispatch",
    "retry",
    "dead_letter",
    "health",
    "backlog",
    "publish_rate_limit",
    "memory",
    "kafka",
    "nats",
];

impl BusConfig {
    /// Loads the configuration: defaults, then the file at `path` (YAML for
    /// `.yaml`/`.yml`, TOML for `.toml`) if given, then `EVENTBUS_*`
    /// environment overrides, then [`BusConfig::validate`].
    ///
    /// Environment keys nest with `__`: `EVENTBUS_DISPATCH__MAX_CONCURRENCY=8`
    /// sets `dispatch.max_concurrency`; `EVENTBUS_GROUP=orders` sets `group`.
    ///
    /// # Errors
    /// [`Error::Config`] naming the field path: unknown keys, wrong types,
    /// bad durations, out-of-range values, unreadable files.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(BusConfig::default()));
        if let Some(path) = path {
            if !path.is_file() {
                return Err(Error::config(
                    "<file>",
                    format!("{} does not exist or is not a file", path.display()),
                ));
            }
            figment = match path.extension().and_then(|e| e.to_str()) {
                Some("yaml" | "yml") => figment.merge(Yaml::file_exact(path)),
                Some("toml") => figment.merge(Toml::file_exact(path)),
                _ => {
                    return Err(Error::config(
                        "<file>",
                        format!(
                            "{}: unknown format; use a .yaml, .yml or .toml file",
                            path.display()
                        ),
                    ))
                }
            };
        }
        Self::extract(figment.merge(env_overrides()))
    }

    /// Parses YAML text (no environment overrides), then validates.
    ///
    /// # Errors
    /// [`Error::Config`] naming the field path.
    pub fn from_yaml_str(text: &str) -> Result<Self> {
        Self::extract(
            Figment::from(Serialized::defaults(BusConfig::default())).merge(Yaml::string(text)),
        )
    }

    /// Parses TOML text (no environment overrides), then validates.
    ///
    /// # Errors
    /// [`Error::Config`] naming the field path.
    pub fn from_toml_str(text: &str) -> Result<Self> {
        Self::extract(
            Figment::from(Serialized::defaults(BusConfig::default())).merge(Toml::string(text)),
        )
    }

    fn extract(figment: Figment) -> Result<Self> {
        let config: BusConfig = figment.extract().map_err(figment_error)?;
        config.validate()?;
        Ok(config)
    }
}

fn env_overrides() -> Env {
    Env::prefixed(ENV_PREFIX).split("__").filter(|key| {
        let first = key.as_str().split('.').next().unwrap_or_default();
        ENV_SECTIONS.iter().any(|s| first.eq_ignore_ascii_case(s))
    })
}

fn figment_error(err: figment::Error) -> Error {
    // Report the first error; figment chains one per failing field.
    let field = if err.path.is_empty() {
        "<root>".to_string()
    } else {
        err.path.join(".")
    };
    let mut reason = err.kind.to_string();
    if let Some(source) = err.metadata.as_ref().and_then(|m| m.source.as_ref()) {
        reason.push_str(&format!(" (from {source})"));
    }
    Error::config(field, reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn yaml_and_toml_set_nested_fields() {
        let c = BusConfig::from_yaml_str(
            "group: orders\ndispatch:\n  max_concurrency: 8\n  revoke_timeout: 2s\n",
        )
        .unwrap();
        assert_eq!(c.group, "orders");
        assert_eq!(c.dispatch.max_concurrency, 8);
        assert_eq!(c.dispatch.revoke_timeout, Duration::from_secs(2));
        assert_eq!(c.dispatch.max_buffered, 10_000, "untouched default");
        let c = BusConfig::from_toml_str("[retry]\nmax_backoff = \"1m\"\n").unwrap();
        assert_eq!(c.retry.max_backoff, Duration::from_secs(60));
    }

    #[test]
    fn unknown_keys_are_errors_with_their_path() {
        let e = BusConfig::from_yaml_str("dispatch:\n  max_concurency: 8\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("dispatch"), "{e}");
        assert!(e.contains("max_concurency"), "{e}");
        let e = BusConfig::from_yaml_str("kafak: {}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("kafak"), "{e}");
    }

    #[test]
    fn bad_values_name_field_and_allowed() {
        let e = BusConfig::from_yaml_str("dispatch:\n  revoke_timeout: 30 seconds please\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("dispatch.revoke_timeout"), "{e}");
        let e = BusConfig::from_yaml_str("backend: rabbit\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("backend") && e.contains("memory"), "{e}");
        let e = BusConfig::from_yaml_str("memory:\n  partitions: 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("memory.partitions"), "{e}");
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn env_overrides_files_and_ignores_foreign_variables() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("bus.yaml", "group: from-file\ndispatch:\n  max_batch: 4\n")?;
            jail.set_env("EVENTBUS_GROUP", "from-env");
            jail.set_env("EVENTBUS_DISPATCH__MAX_CONCURRENCY", "3");
            jail.set_env("EVENTBUS_KAFKA_BROKERS", "127.0.0.1:9092");
            let c = BusConfig::load(Some(Path::new("bus.yaml"))).unwrap();
            assert_eq!(c.group, "from-env");
            assert_eq!(c.dispatch.max_concurrency, 3);
            assert_eq!(c.dispatch.max_batch, 4);
            jail.set_env("EVENTBUS_DISPATCH__NOPE", "1");
            let e = BusConfig::load(Some(Path::new("bus.yaml")))
                .unwrap_err()
                .to_string();
            assert!(e.contains("nope"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn env_sections_match_the_struct() {
        let v = serde_json::to_value(BusConfig::default()).unwrap();
        let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        keys.push("publish_rate_limit".into()); // optional, absent by default
        keys.sort();
        let mut sections: Vec<_> = ENV_SECTIONS.iter().map(|s| s.to_string()).collect();
        sections.sort();
        assert_eq!(keys, sections);
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let e = BusConfig::load(Some(Path::new("/nonexistent/bus.yaml")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not exist"), "{e}");
    }
}
