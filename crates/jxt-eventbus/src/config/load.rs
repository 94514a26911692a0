//! Loading [`BusConfig`] from files, sections of a service's file, figment
//! providers and the environment (figment).
//!
//! Every source is merged over the defaults, then `EVENTBUS_*` overrides,
//! then [`BusConfig::validate`]. Each error names the field and where its
//! value came from (the file, or the environment variable); every problem
//! is reported, not only the first; and no error shows a secret the
//! sources hold.

use std::path::Path;

use figment::providers::{Format, Serialized, Toml, Yaml};
use figment::{Figment, Provider, Source};

use super::problems::Problems;
use super::{env, redact, BusConfig};
use crate::error::{Error, Result};

impl BusConfig {
    /// Loads the configuration: defaults, then the file at `path` (YAML for
    /// `.yaml`/`.yml`, TOML for `.toml`) if given, then `EVENTBUS_*`
    /// environment overrides, then [`BusConfig::validate`].
    ///
    /// Every `EVENTBUS_*` variable is configuration, except those starting
    /// with the reserved `EVENTBUS_DEV_`: a variable that names no field is
    /// an error, never ignored. Levels nest with `__`
    /// (`EVENTBUS_DISPATCH__MAX_CONCURRENCY=8` sets `dispatch.max_concurrency`);
    /// a single `_` works too when exactly one field matches
    /// (`EVENTBUS_KAFKA_BROKERS`). Lists take `a,b`. See
    /// `docs/configuration.md` for the rules.
    ///
    /// # Errors
    /// [`Error::Config`] (or [`Error::InvalidConfig`] listing several)
    /// naming the field path and where its value came from (the file or the
    /// variable): unknown keys, wrong types, bad durations, out-of-range
    /// values, unreadable files; an `EVENTBUS_*` variable that names no
    /// field or several; two variables setting one field to different
    /// values. No error shows the value of a secret.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        match path {
            Some(path) => Self::load_from(file(path)?),
            None => Self::load_from(Figment::new()),
        }
    }

    /// Loads the configuration from the section `section` (a key, or a
    /// dotted path such as `"messaging.bus"`) of the service's own file:
    /// defaults, then that section, then `EVENTBUS_*` overrides, then
    /// [`BusConfig::validate`]. Keys outside the section are the service's
    /// and are not looked at; unknown keys inside it are errors, as with
    /// [`BusConfig::load`].
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("billing.yaml");
    /// std::fs::write(
    ///     &path,
    ///     "service:\n  name: billing\n  port: 8080\n\
    ///      eventbus:\n  group: billing\n  dispatch:\n    max_concurrency: 8\n",
    /// )?;
    /// let config = jxt_eventbus::BusConfig::load_section(&path, "eventbus")?;
    /// assert_eq!(config.group, "billing");
    /// assert_eq!(config.dispatch.max_concurrency, 8);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`BusConfig::load`]; also when the file has no such section (a
    /// service that wants every default writes `eventbus: {}`), or the
    /// section is not a map.
    pub fn load_section(path: impl AsRef<Path>, section: &str) -> Result<Self> {
        let path = path.as_ref();
        let figment = Figment::from(file(path)?);
        match figment.find_value(section) {
            Ok(figment::value::Value::Dict(..)) => {}
            Ok(_) => {
                return Err(Error::config(
                    section,
                    format!(
                        "is not a section (a map of bus settings) (from {})",
                        path.display()
                    ),
                ))
            }
            Err(e) if e.missing() => {
                return Err(Error::config(
                    section,
                    format!(
                        "no such section in {}: add it (`{section}: {{}}` for every default) \
                         or name the section that holds the bus settings",
                        path.display()
                    ),
                ))
            }
            Err(e) => return Err(figment_errors(e, &[])),
        }
        Self::load_from(figment.focus(section))
    }

    /// Loads the configuration from any figment provider, for a service
    /// that builds its own [`Figment`] (re-exported as
    /// [`config::figment`](crate::config::figment)): defaults, then
    /// `provider`, then `EVENTBUS_*` overrides, then
    /// [`BusConfig::validate`]. Pass the bus's part of the service's
    /// configuration, such as `service_figment.focus("eventbus")`; its
    /// unknown keys are errors.
    ///
    /// ```
    /// use jxt_eventbus::config::figment::providers::{Format, Yaml};
    /// use jxt_eventbus::config::figment::Figment;
    ///
    /// let service = Figment::from(Yaml::string(
    ///     "service: {name: billing}\neventbus: {group: billing}\n",
    /// ));
    /// let config = jxt_eventbus::BusConfig::load_from(service.focus("eventbus")).unwrap();
    /// assert_eq!(config.group, "billing");
    /// ```
    ///
    /// # Errors
    /// As [`BusConfig::load`].
    pub fn load_from(provider: impl Provider) -> Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(BusConfig::default())).merge(provider);
        for variable in env::overrides()? {
            figment = figment.merge(variable);
        }
        Self::extract(figment)
    }

    /// Parses YAML text (no environment overrides), then validates.
    ///
    /// # Errors
    /// [`Error::Config`] (or [`Error::InvalidConfig`]) naming the field path.
    pub fn from_yaml_str(text: &str) -> Result<Self> {
        Self::extract(
            Figment::from(Serialized::defaults(BusConfig::default())).merge(Yaml::string(text)),
        )
    }

    /// Parses TOML text (no environment overrides), then validates.
    ///
    /// # Errors
    /// [`Error::Config`] (or [`Error::InvalidConfig`]) naming the field path.
    pub fn from_toml_str(text: &str) -> Result<Self> {
        Self::extract(
            Figment::from(Serialized::defaults(BusConfig::default())).merge(Toml::string(text)),
        )
    }

    fn extract(figment: Figment) -> Result<Self> {
        let secrets = redact::secrets(&figment);
        let config: BusConfig = figment.extract().map_err(|e| figment_errors(e, &secrets))?;
        config.validate().map_err(|e| {
            Problems::map(e, |e| match e {
                Error::Config { field, reason } => {
                    let reason = match source_of(&figment, &field) {
                        Some(source) if !reason.contains("(from ") => {
                            format!("{reason} (from {source})")
                        }
                        _ => reason,
                    };
                    Error::Config {
                        reason: redact::scrub(reason, &secrets),
                        field,
                    }
                }
                other => other,
            })
        })?;
        Ok(config)
    }
}

/// The provider of the file at `path`, by its extension.
fn file(path: &Path) -> Result<Figment> {
    if !path.is_file() {
        return Err(Error::config(
            "<file>",
            format!("{} does not exist or is not a file", path.display()),
        ));
    }
    match path.extension().and_then(|e| e.to_str()) {
        Some("yaml" | "yml") => Ok(Figment::from(Yaml::file_exact(path))),
        Some("toml") => Ok(Figment::from(Toml::file_exact(path))),
        _ => Err(Error::config(
            "<file>",
            format!(
                "{}: unknown format; use a .yaml, .yml or .toml file",
                path.display()
            ),
        )),
    }
}

/// Where the value at `field` (a dotted path, maybe with `[i]` indexes or
/// a map key holding dots) came from: a file or an environment variable.
/// `None` for defaults and in-memory text.
fn source_of(figment: &Figment, field: &str) -> Option<String> {
    let field = field.split('[').next().unwrap_or(field);
    let mut key = field;
    loop {
        if figment.find_value(key).is_ok() {
            return match figment.find_metadata(key)?.source.as_ref()? {
                Source::File(path) => Some(
                    std::env::current_dir()
                        .ok()
                        .and_then(|cwd| path.strip_prefix(cwd).ok())
                        .unwrap_or(path)
                        .display()
                        .to_string(),
                ),
                Source::Custom(text) => Some(text.clone()),
                _ => None,
            };
        }
        key = &key[..key.rfind('.')?];
    }
}

/// Every error figment found, as field errors naming their source, with
/// the secrets of the sources masked.
fn figment_errors(err: figment::Error, secrets: &[String]) -> Error {
    let mut problems = Problems::default();
    for e in err {
        let field = if e.path.is_empty() {
            "<root>".to_string()
        } else {
            e.path.join(".")
        };
        let mut reason = e.kind.to_string();
        if let Some(source) = e.metadata.as_ref().and_then(|m| m.source.as_ref()) {
            reason.push_str(&format!(" (from {source})"));
        }
        problems.push(Error::config(field, redact::scrub(reason, secrets)));
    }
    match problems.finish() {
        Err(e) => e,
        Ok(()) => Error::config("<root>", "the configuration could not be read"),
    }
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

    /// Loads `bus.yaml` (if any) in a jail whose environment holds only
    /// `vars`.
    #[allow(clippy::result_large_err)]
    fn load_with_env(file: Option<&str>, vars: &[(&str, &str)]) -> Result<BusConfig> {
        let mut out = None;
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            if let Some(text) = file {
                jail.create_file("bus.yaml", text)?;
            }
            for (k, v) in vars {
                jail.set_env(k, v);
            }
            out = Some(BusConfig::load(file.map(|_| Path::new("bus.yaml"))));
            Ok(())
        });
        out.unwrap()
    }

    #[test]
    fn env_overrides_files() {
        let c = load_with_env(
            Some("group: from-file\ndispatch:\n  max_batch: 4\n"),
            &[
                ("EVENTBUS_GROUP", "from-env"),
                ("EVENTBUS_DISPATCH__MAX_CONCURRENCY", "3"),
            ],
        )
        .unwrap();
        assert_eq!(c.group, "from-env");
        assert_eq!(c.dispatch.max_concurrency, 3);
        assert_eq!(c.dispatch.max_batch, 4);
    }

    #[test]
    fn single_underscore_names_resolve_against_the_schema() {
        let c = load_with_env(
            None,
            &[
                ("EVENTBUS_KAFKA_BROKERS", "k1:9092"),
                ("EVENTBUS_DISPATCH_MAX_CONCURRENCY", "7"),
                ("EVENTBUS_KAFKA_CONSUMER_SESSION_TIMEOUT", "20s"),
                ("EVENTBUS_DEAD_LETTER_SUFFIX", ".dead"),
                ("EVENTBUS_KAFKA_TLS_CA_LOCATION", "/ca.pem"),
            ],
        )
        .unwrap();
        assert_eq!(c.kafka.brokers, ["k1:9092"]);
        assert_eq!(c.dispatch.max_concurrency, 7);
        assert_eq!(c.kafka.consumer.session_timeout, Duration::from_secs(20));
        assert_eq!(c.dead_letter.suffix, ".dead");
        assert_eq!(c.kafka.tls.unwrap().ca_location.as_deref(), Some("/ca.pem"));
    }

    #[test]
    fn lists_take_the_comma_form() {
        for name in ["EVENTBUS_KAFKA__BROKERS", "EVENTBUS_KAFKA_BROKERS"] {
            let c = load_with_env(None, &[(name, "k1:9092, k2:9092")]).unwrap();
            assert_eq!(c.kafka.brokers, ["k1:9092", "k2:9092"], "{name}");
        }
        let c = load_with_env(
            None,
            &[("EVENTBUS_NATS__SERVERS", "[nats://a:4222, nats://b:4222]")],
        )
        .unwrap();
        assert_eq!(c.nats.servers, ["nats://a:4222", "nats://b:4222"]);
    }

    #[test]
    fn unknown_variables_are_errors_naming_them() {
        let e = load_with_env(None, &[("EVENTBUS_DISPATCH__NOPE", "1")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("EVENTBUS_DISPATCH__NOPE"), "{e}");
        let e = load_with_env(None, &[("EVENTBUS_DISPATCH_MAX_CONCURENCY", "1")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("EVENTBUS_DISPATCH_MAX_CONCURENCY"), "{e}");
        assert!(e.contains("EVENTBUS_DISPATCH__MAX_CONCURRENCY"), "{e}");
        let e = load_with_env(None, &[("EVENTBUS_NATS_URL", "nats://x:4222")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("EVENTBUS_NATS_URL"), "{e}");
        assert!(e.contains("EVENTBUS_DEV_"), "{e}");
        assert!(e.contains("`nats` has") && e.contains("`servers`"), "{e}");
        let e = load_with_env(None, &[("EVENTBUS_REQUIRE_BROKERS", "1")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("EVENTBUS_REQUIRE_BROKERS"), "{e}");
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = load_with_env(None, &[("EVENTBUS_DISPATCH_MAX_CONCURRENCY", "many")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("dispatch.max_concurrency"), "{e}");
        assert!(e.contains("EVENTBUS_DISPATCH_MAX_CONCURRENCY"), "{e}");
    }

    #[test]
    fn text_fields_take_the_value_as_it_is() {
        let c = load_with_env(
            None,
            &[
                ("EVENTBUS_NATS__AUTH__TOKEN", "0123456789"),
                ("EVENTBUS_GROUP", "2024"),
                ("EVENTBUS_KAFKA_CLIENT_ID", "007"),
                ("EVENTBUS_DISPATCH_SHUTDOWN_TIMEOUT", "0"),
            ],
        )
        .unwrap();
        assert_eq!(
            c.nats.auth.token.as_ref().map(|t| t.expose()),
            Some("0123456789")
        );
        assert_eq!(c.group, "2024");
        assert_eq!(c.kafka.client_id, "007");
        assert_eq!(c.dispatch.shutdown_timeout, Duration::ZERO);
    }

    #[test]
    fn range_errors_of_variables_name_them() {
        let e = load_with_env(
            None,
            &[
                ("EVENTBUS_RETRY_INITIAL_BACKOFF", "0s"),
                ("EVENTBUS_RETRY_MAX_BACKOFF", "0s"),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("retry.max_backoff"), "{e}");
        assert!(e.contains("EVENTBUS_RETRY_MAX_BACKOFF"), "{e}");
    }

    #[test]
    fn one_field_set_twice_differently_is_an_error() {
        let e = load_with_env(
            None,
            &[
                ("EVENTBUS_DISPATCH_MAX_CONCURRENCY", "3"),
                ("EVENTBUS_DISPATCH__MAX_CONCURRENCY", "4"),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("EVENTBUS_DISPATCH_MAX_CONCURRENCY"), "{e}");
        assert!(e.contains("EVENTBUS_DISPATCH__MAX_CONCURRENCY"), "{e}");
        let c = load_with_env(
            None,
            &[
                ("EVENTBUS_DISPATCH_MAX_CONCURRENCY", "3"),
                ("EVENTBUS_DISPATCH__MAX_CONCURRENCY", "3"),
            ],
        )
        .unwrap();
        assert_eq!(c.dispatch.max_concurrency, 3);
    }

    #[test]
    fn the_dev_prefix_is_skipped_and_no_section_is_named_dev() {
        let c = load_with_env(
            None,
            &[
                ("EVENTBUS_DEV_REQUIRE_BROKERS", "1"),
                ("EVENTBUS_DEV_NATS_URL", "nats://x:4222"),
            ],
        )
        .unwrap();
        assert_eq!(c, BusConfig::default());
        let v = serde_json::to_value(BusConfig::default()).unwrap();
        assert!(
            v.as_object().unwrap().keys().all(|k| !k.starts_with("dev")),
            "`dev` is the reserved prefix of variables that are not configuration"
        );
    }

    #[test]
    fn map_entries_take_the_double_underscore_form() {
        let c = load_with_env(
            None,
            &[("EVENTBUS_KAFKA__TOPICS__orders__PARTITIONS", "12")],
        )
        .unwrap();
        assert_eq!(c.kafka.topic_settings("orders").partitions, Some(12));
    }

    /// Loads the section `section` of `service.yaml` holding `text`, in a
    /// jail whose environment holds only `vars`.
    #[allow(clippy::result_large_err)]
    fn load_section_with_env(
        text: &str,
        section: &str,
        vars: &[(&str, &str)],
    ) -> Result<BusConfig> {
        let mut out = None;
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file("service.yaml", text)?;
            for (k, v) in vars {
                jail.set_env(k, v);
            }
            out = Some(BusConfig::load_section(Path::new("service.yaml"), section));
            Ok(())
        });
        out.unwrap()
    }

    const SERVICE: &str = "service:\n  name: billing\n  anything: [1, 2]\neventbus:\n  group: billing\n  dispatch:\n    max_batch: 4\n";

    #[test]
    fn a_section_loads_with_overrides_and_the_rest_is_not_looked_at() {
        let c = load_section_with_env(
            SERVICE,
            "eventbus",
            &[("EVENTBUS_DISPATCH__MAX_CONCURRENCY", "3")],
        )
        .unwrap();
        assert_eq!(c.group, "billing");
        assert_eq!(c.dispatch.max_batch, 4);
        assert_eq!(c.dispatch.max_concurrency, 3);
        let nested = "app:\n  bus:\n    group: nested\n";
        assert_eq!(
            load_section_with_env(nested, "app.bus", &[]).unwrap().group,
            "nested"
        );
    }

    #[test]
    fn a_section_rejects_unknown_keys_and_must_exist() {
        let e = load_section_with_env(
            "service: {}\neventbus:\n  dispatch:\n    max_concurency: 8\n",
            "eventbus",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("max_concurency") && e.contains("service.yaml"),
            "{e}"
        );
        let e = load_section_with_env(SERVICE, "bus", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("`bus`") && e.contains("no such section"), "{e}");
        let e = load_section_with_env(SERVICE, "service.name", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a section"), "{e}");
        let e = load_section_with_env(
            "eventbus:\n  dispatch:\n    max_concurrency: 0\n",
            "eventbus",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("dispatch.max_concurrency") && e.contains("service.yaml"),
            "{e}"
        );
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let e = BusConfig::load(Some(Path::new("/nonexistent/bus.yaml")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not exist"), "{e}");
    }
}
