//! No secret of the configuration in anything this command prints.
//!
//! Once the configuration is loaded, its secrets — SASL and TLS key
//! passwords, NATS tokens, passwords and seeds, credentials in server URLs,
//! and raw client properties whose name says password or secret — are
//! registered here, and every error line, every check item and every
//! message naming servers goes through [`scrub`], which replaces them with
//! `***`. The library keeps secrets out of its own messages; this is the
//! command's second line of defence, for text it does not control (a
//! client library's error that quotes a URL).

use std::sync::{Mutex, OnceLock};

use jxt_eventbus::BusConfig;

/// Shorter values are not scrubbed: they would mangle unrelated text.
const MIN_LEN: usize = 3;

fn registry() -> &'static Mutex<Vec<String>> {
    static SECRETS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    SECRETS.get_or_init(Mutex::default)
}

/// Remembers the secrets of `config`.
pub(crate) fn register(config: &BusConfig) {
    let mut found: Vec<String> = Vec::new();
    let k = &config.kafka;
    if let Some(sasl) = &k.sasl {
        found.push(sasl.password.expose().to_string());
    }
    if let Some(p) = k.tls.as_ref().and_then(|t| t.key_password.as_ref()) {
        found.push(p.expose().to_string());
    }
    for props in [
        &k.properties,
        &k.producer.properties,
        &k.consumer.properties,
    ] {
        for (name, value) in props {
            let name = name.to_ascii_lowercase();
            if name.contains("password") || name.contains("secret") {
                found.push(value.clone());
            }
        }
    }
    let a = &config.nats.auth;
    for s in [&a.token, &a.password, &a.nkey_seed].into_iter().flatten() {
        found.push(s.expose().to_string());
    }
    for url in &config.nats.servers {
        if let Some(credentials) = url_credentials(url) {
            found.push(credentials.to_string());
        }
    }
    let mut secrets = registry().lock().unwrap_or_else(|e| e.into_inner());
    for s in found {
        if s.len() >= MIN_LEN && !secrets.contains(&s) {
            secrets.push(s);
        }
    }
    // Longest first, so that a secret containing another is replaced whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// The secret part of `scheme://user:secret@host` or `scheme://token@host`.
fn url_credentials(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let (credentials, _) = rest.rsplit_once('@')?;
    Some(match credentials.split_once(':') {
        Some((_, password)) => password,
        None => credentials,
    })
}

/// `text` with every registered secret replaced by `***`.
pub(crate) fn scrub(text: &str) -> String {
    let secrets = registry().lock().unwrap_or_else(|e| e.into_inner());
    let mut out = text.to_string();
    for s in secrets.iter() {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), "***");
        }
    }
    out
}

/// Stderr for log lines, each scrubbed (the formatter writes one event
/// per call).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ScrubbedStderr;

impl std::io::Write for ScrubbedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = scrub(&String::from_utf8_lossy(buf));
        std::io::stderr().write_all(text.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_secrets_are_replaced_everywhere() {
        let mut config = BusConfig::default();
        config.nats.servers = vec!["nats://bob:hunter22@host:4222".into()];
        config.kafka.properties.insert(
            "sasl.oauthbearer.client.secret".into(),
            "s3cr3t-value".into(),
        );
        register(&config);
        assert_eq!(
            scrub("cannot connect to nats://bob:hunter22@host:4222: refused (s3cr3t-value)"),
            "cannot connect to nats://bob:***@host:4222: refused (***)"
        );
        assert_eq!(scrub("nothing secret"), "nothing secret");
    }
}
