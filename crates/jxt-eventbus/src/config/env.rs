//! `EVENTBUS_*` environment variables as configuration.
//!
//! Every variable whose name starts with [`ENV_PREFIX`] is configuration, or
//! loading fails naming it: a variable is never silently ignored. The
//! variables of the project's own scripts, test rig and benchmarks carry the
//! reserved prefix [`DEV_PREFIX`] and are skipped (no section is named
//! `dev`).
//!
//! The rest of the name is a field path, matched case-insensitively against
//! the schema (the field paths of the serialized configuration): `__` always
//! separates two levels, and `_` either separates two levels or belongs to a
//! field name. `EVENTBUS_DISPATCH__MAX_CONCURRENCY` and
//! `EVENTBUS_DISPATCH_MAX_CONCURRENCY` both set `dispatch.max_concurrency`;
//! a name that matches no field, or more than one, is an error listing what
//! it could be. Entries of maps (`kafka.topics`, the `properties` maps) are
//! named after the map with `__`: `EVENTBUS_KAFKA__TOPICS__orders__PARTITIONS`.
//! Lists take `a,b` (or `[a, b]`). Two variables that set one field to
//! different values are an error.

use std::collections::BTreeMap;
use std::ffi::OsString;

use figment::value::{Dict, Map, Value};
use figment::{Metadata, Profile, Provider, Source};
use serde_json::Value as Json;

use super::{BusConfig, KafkaSaslConfig, KafkaTlsConfig, SaslMechanism, Secret};
use crate::error::{Error, Result};

/// Environment variables starting with this are configuration overrides.
pub const ENV_PREFIX: &str = "EVENTBUS_";

/// Environment variables starting with this are not configuration: they
/// belong to the project's scripts, test rig and benchmarks, and
/// [`BusConfig::load`] skips them.
pub const DEV_PREFIX: &str = "EVENTBUS_DEV_";

/// What the schema holds at a field path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A section: a struct with named fields.
    Section,
    /// A map with free keys (topics, properties); below it the schema is
    /// unknown and the deserializer checks the keys.
    Map,
    /// A list.
    List,
    /// Text (names, paths, secrets, durations, choices): taken as it is,
    /// so that `007` stays `007` and a secret is never parsed (nor shown in
    /// a type error).
    Text,
    /// Another single value (number, boolean, duration, choice, unset
    /// option).
    Value,
}

fn kind(node: &Json) -> Kind {
    match node {
        // Sections always have fields (defaults serialize every field, an
        // unset option as null); an empty object is a map.
        Json::Object(fields) if fields.is_empty() => Kind::Map,
        Json::Object(_) => Kind::Section,
        Json::Array(_) => Kind::List,
        Json::String(_) => Kind::Text,
        _ => Kind::Value,
    }
}

/// The configuration schema: the default configuration with every optional
/// section set, serialized, so that each field path exists in it. Optional
/// text fields are set too, so that they are known as text.
pub(super) fn schema() -> Json {
    let mut c = BusConfig {
        publish_rate_limit: Some(crate::middleware::RateLimit::per_second(1)),
        ..BusConfig::default()
    };
    c.retry.max_elapsed = Some(std::time::Duration::from_secs(1));
    let text = String::new;
    let secret = || Some(Secret::new(""));
    c.kafka.group_instance_id = Some(text());
    c.kafka.tls = Some(KafkaTlsConfig {
        ca_location: Some(text()),
        certificate_location: Some(text()),
        key_location: Some(text()),
        key_password: secret(),
        ..KafkaTlsConfig::default()
    });
    c.kafka.sasl = Some(KafkaSaslConfig {
        mechanism: SaslMechanism::Plain,
        username: text(),
        password: Secret::new(""),
    });
    let n = &mut c.nats;
    n.connection_name = Some(text());
    n.domain = Some(text());
    n.auth.token = secret();
    n.auth.user = Some(text());
    n.auth.password = secret();
    n.auth.nkey_seed = secret();
    n.auth.creds_file = Some("".into());
    n.tls.ca_file = Some("".into());
    n.tls.cert_file = Some("".into());
    n.tls.key_file = Some("".into());
    serde_json::to_value(c).expect("the configuration serializes")
}

/// A field path a variable resolved to.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Resolved {
    path: Vec<String>,
    kind: Option<Kind>,
}

/// Why a name resolved to no single field.
#[derive(Debug, PartialEq, Eq)]
enum Unresolved {
    None,
    Several(Vec<String>),
    /// The name reaches into a map with `_`: the key is ambiguous.
    MapNeedsDoubleUnderscore(String),
}

/// Resolves `name` (without the prefix) against `schema`.
fn resolve(schema: &Json, name: &str) -> std::result::Result<Resolved, Unresolved> {
    let groups: Vec<&str> = name.split("__").collect();
    let mut found = Vec::new();
    let mut into_map = None;
    walk(schema, &groups, &mut Vec::new(), &mut found, &mut into_map);
    found.dedup();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(match into_map {
            Some(map) => Unresolved::MapNeedsDoubleUnderscore(map),
            None => Unresolved::None,
        }),
        _ => Err(Unresolved::Several(
            found.iter().map(|r| r.path.join(".")).collect(),
        )),
    }
}

/// Collects every field path that `groups` (the name split at `__`) can
/// mean below `node`, reached by `path`.
fn walk(
    node: &Json,
    groups: &[&str],
    path: &mut Vec<String>,
    found: &mut Vec<Resolved>,
    into_map: &mut Option<String>,
) {
    let Some((first, rest)) = groups.split_first() else {
        found.push(Resolved {
            path: path.clone(),
            kind: Some(kind(node)),
        });
        return;
    };
    match node {
        Json::Object(fields) if !fields.is_empty() => {
            let lower = first.to_ascii_lowercase();
            for (field, child) in fields {
                path.push(field.clone());
                if lower == *field {
                    walk(child, rest, path, found, into_map);
                } else if let Some(tail) = lower
                    .strip_prefix(field.as_str())
                    .and_then(|t| t.strip_prefix('_'))
                    .filter(|t| !t.is_empty())
                {
                    // `_` separated this field from the next level.
                    let tail = &first[first.len() - tail.len()..];
                    let mut next = vec![tail];
                    next.extend_from_slice(rest);
                    if kind(child) == Kind::Map {
                        *into_map = Some(path.join("."));
                    } else {
                        walk(child, &next, path, found, into_map);
                    }
                }
                path.pop();
            }
        }
        Json::Object(_) => {
            // A map entry: the key keeps its case; the fields below it are
            // checked by the deserializer.
            let mut full = path.clone();
            full.push(first.to_string());
            full.extend(rest.iter().map(|g| g.to_ascii_lowercase()));
            // Entries of the raw property maps are text for the client,
            // taken as they are (`007` stays `007`, a secret is not parsed).
            let text =
                full.len() >= 2 && matches!(full[full.len() - 2].as_str(), "properties" | "config");
            found.push(Resolved {
                path: full,
                kind: text.then_some(Kind::Text),
            });
        }
        _ => {}
    }
}

/// Every field path of the schema, for suggestions.
fn paths(node: &Json, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match node {
        Json::Object(fields) if !fields.is_empty() => {
            for (field, child) in fields {
                path.push(field.clone());
                paths(child, path, out);
                path.pop();
            }
        }
        _ => out.push(path.clone()),
    }
}

/// The variable name that sets `path` with `__` separators.
fn variable_for(path: &[String]) -> String {
    format!("{ENV_PREFIX}{}", path.join("__").to_ascii_uppercase())
}

/// The field whose name is closest to `name`, if one is close.
fn closest(schema: &Json, name: &str) -> Option<Vec<String>> {
    let mut all = Vec::new();
    paths(schema, &mut Vec::new(), &mut all);
    let wanted = name.to_ascii_lowercase().replace("__", "_");
    all.into_iter()
        .map(|p| (strsim::jaro_winkler(&wanted, &p.join("_")), p))
        .filter(|(score, _)| *score >= 0.9)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, p)| p)
}

/// The top-level section `name` starts with, and its fields, listed.
fn section_fields(schema: &Json, name: &str) -> Option<(String, String)> {
    let lower = name.to_ascii_lowercase();
    schema.as_object()?.iter().find_map(|(section, node)| {
        let fields = node.as_object().filter(|f| !f.is_empty())?;
        let rest = lower.strip_prefix(section.as_str())?;
        if !rest.starts_with('_') {
            return None;
        }
        let list: Vec<String> = fields.keys().map(|k| format!("`{k}`")).collect();
        Some((section.clone(), list.join(", ")))
    })
}

/// One variable's value at its field path, as a figment provider whose
/// errors name the variable.
pub(super) struct Variable {
    name: String,
    path: Vec<String>,
    value: Value,
}

impl Provider for Variable {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment variable").source(Source::Custom(format!(
            "environment variable {}",
            self.name
        )))
    }

    fn data(&self) -> std::result::Result<Map<Profile, Dict>, figment::Error> {
        let mut value = self.value.clone();
        for key in self.path.iter().skip(1).rev() {
            let mut dict = Dict::new();
            dict.insert(key.clone(), value);
            value = Value::from(dict);
        }
        let mut root = Dict::new();
        if let Some(first) = self.path.first() {
            root.insert(first.clone(), value);
        }
        Ok(Profile::Default.collect(root))
    }
}

/// Parses a variable's text like figment's own environment provider; a list
/// field also takes the comma form.
fn parse(text: &str, kind: Option<Kind>) -> Value {
    if kind == Some(Kind::Text) {
        return Value::from(text.to_string());
    }
    let trimmed = text.trim();
    if kind == Some(Kind::List) && !trimmed.starts_with('[') {
        let items: Vec<Value> = trimmed
            .split(',')
            .map(|item| item.trim().parse().expect("infallible"))
            .collect();
        return Value::from(items);
    }
    text.parse().expect("infallible")
}

/// The configuration variables of `vars`, one provider each, in name order.
///
/// # Errors
/// [`Error::Config`] naming the variable: not configuration, ambiguous, not
/// valid UTF-8, or setting a field another variable set differently.
fn variables(vars: impl IntoIterator<Item = (OsString, OsString)>) -> Result<Vec<Variable>> {
    let schema = schema();
    let mut chosen: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut out = Vec::new();
    let mut vars: Vec<_> = vars
        .into_iter()
        .filter_map(|(k, v)| {
            let name = k.to_str()?.to_string();
            let upper = name.to_ascii_uppercase();
            (upper.starts_with(ENV_PREFIX) && !upper.starts_with(DEV_PREFIX)).then_some((name, v))
        })
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, value) in vars {
        let rest = &name[ENV_PREFIX.len()..];
        let resolved =
            resolve(&schema, rest).map_err(|why| not_configuration(&schema, &name, why))?;
        let Some(text) = value.to_str() else {
            return Err(Error::config(&name, "the value is not valid UTF-8"));
        };
        let dotted = resolved.path.join(".");
        if let Some((other, other_text)) = chosen.get(&dotted) {
            if other_text.trim() != text.trim() {
                return Err(Error::config(
                    &name,
                    format!(
                        "sets `{dotted}`, which {other} also sets, to another value: \
                         set it with one variable"
                    ),
                ));
            }
            continue;
        }
        chosen.insert(dotted, (name.clone(), text.to_string()));
        out.push(Variable {
            value: parse(text, resolved.kind),
            name,
            path: resolved.path,
        });
    }
    Ok(out)
}

fn not_configuration(schema: &Json, name: &str, why: Unresolved) -> Error {
    let reason = match why {
        Unresolved::Several(paths) => format!(
            "could set any of {}: use `__` between levels to say which (for example {})",
            paths
                .iter()
                .map(|p| format!("`{p}`"))
                .collect::<Vec<_>>()
                .join(", "),
            variable_for(&paths[0].split('.').map(String::from).collect::<Vec<_>>())
        ),
        Unresolved::MapNeedsDoubleUnderscore(map) => format!(
            "`{map}` is a map: name its entries with `__`, as in {}__<KEY>",
            variable_for(&map.split('.').map(String::from).collect::<Vec<_>>())
        ),
        Unresolved::None => {
            let hint = match closest(schema, &name[ENV_PREFIX.len()..]) {
                Some(p) => format!(
                    " (did you mean {}, for `{}`?)",
                    variable_for(&p),
                    p.join(".")
                ),
                None => section_fields(schema, &name[ENV_PREFIX.len()..])
                    .map(|(section, fields)| format!(" (`{section}` has {fields})"))
                    .unwrap_or_default(),
            };
            format!(
                "not a configuration setting{hint}. Every {ENV_PREFIX}* variable must name a \
                 field (see docs/configuration.md); variables of scripts and tools that are \
                 not configuration start with {DEV_PREFIX}"
            )
        }
    };
    Error::config(name, reason)
}

/// The `EVENTBUS_*` variables of this process that [`BusConfig::load`]
/// applies, each with the field path it sets, in name order. Values are
/// left out: they may be secrets.
///
/// # Errors
/// [`Error::Config`] naming a variable that is no configuration, as
/// [`BusConfig::load`] would.
pub fn environment_overrides() -> Result<Vec<(String, String)>> {
    Ok(variables(std::env::vars_os())?
        .into_iter()
        .map(|v| (v.name, v.path.join(".")))
        .collect())
}

/// The providers of the process's configuration variables.
///
/// # Errors
/// As [`variables`].
pub(super) fn overrides() -> Result<Vec<Variable>> {
    variables(std::env::vars_os())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(name: &str) -> String {
        resolve(&schema(), name).unwrap().path.join(".")
    }

    #[test]
    fn names_resolve_with_either_separator() {
        assert_eq!(resolved("GROUP"), "group");
        assert_eq!(resolved("DISPATCH_MAX_BATCH"), "dispatch.max_batch");
        assert_eq!(resolved("DISPATCH__MAX_BATCH"), "dispatch.max_batch");
        assert_eq!(
            resolved("KAFKA_CONSUMER__SESSION_TIMEOUT"),
            "kafka.consumer.session_timeout"
        );
        assert_eq!(
            resolved("HEALTH_PROBE_MAX_MISSED"),
            "health.probe.max_missed"
        );
        assert_eq!(
            resolved("KAFKA__TOPICS__Orders.V1__PARTITIONS"),
            "kafka.topics.Orders.V1.partitions",
            "a map key keeps its case; below it the deserializer checks"
        );
        assert_eq!(
            resolve(&schema(), "KAFKA_PROPERTIES_FOO"),
            Err(Unresolved::MapNeedsDoubleUnderscore(
                "kafka.properties".into()
            ))
        );
        assert_eq!(
            resolve(&schema(), "DISPATCH"),
            Ok(Resolved {
                path: vec!["dispatch".into()],
                kind: Some(Kind::Section),
            })
        );
        assert_eq!(resolve(&schema(), "DISPATCH_NOPE"), Err(Unresolved::None));
    }

    #[test]
    fn names_matching_several_fields_are_refused() {
        let schema = serde_json::json!({
            "a": { "b_c": 1 },
            "a_b": { "c": 2 },
        });
        match resolve(&schema, "A_B_C") {
            Err(Unresolved::Several(mut p)) => {
                p.sort();
                assert_eq!(p, ["a.b_c", "a_b.c"]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(resolve(&schema, "A__B_C").unwrap().path, ["a", "b_c"]);
        let e = not_configuration(
            &schema,
            "EVENTBUS_A_B_C",
            resolve(&schema, "A_B_C").unwrap_err(),
        )
        .to_string();
        assert!(e.contains("a.b_c") && e.contains("a_b.c"), "{e}");
    }

    #[test]
    fn every_field_of_the_configuration_resolves_to_itself() {
        // Derived from the schema, so that a field added later cannot be
        // shadowed by another one's single-underscore name.
        let schema = schema();
        let mut all = Vec::new();
        paths(&schema, &mut Vec::new(), &mut all);
        assert!(all.len() > 100, "{}", all.len());
        for p in all {
            let nested = p.join("__");
            assert_eq!(resolve(&schema, &nested).unwrap().path, p, "{nested}");
            let flat = p.join("_");
            match resolve(&schema, &flat) {
                Ok(r) => assert_eq!(r.path, p, "{flat}"),
                Err(e) => panic!("{flat}: {e:?}"),
            }
        }
    }

    #[test]
    fn optional_sections_of_the_schema_are_filled() {
        // An option left null hides the fields below it. Each null of the
        // schema must be a single value: an empty section there would load.
        let schema = schema();
        let mut all = Vec::new();
        paths(&schema, &mut Vec::new(), &mut all);
        for p in all {
            let mut node = &schema;
            for key in &p {
                node = &node[key];
            }
            if !node.is_null() {
                continue;
            }
            let mut value = serde_json::json!({});
            for key in p.iter().rev() {
                value = serde_json::json!({ key.clone(): value });
            }
            let loaded = figment::Figment::from(figment::providers::Serialized::defaults(
                BusConfig::default(),
            ))
            .merge(figment::providers::Serialized::defaults(value))
            .extract::<BusConfig>();
            assert!(loaded.is_err(), "{} is an optional section", p.join("."));
        }
    }
}
