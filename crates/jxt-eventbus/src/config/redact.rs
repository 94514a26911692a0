//! Keeping secrets out of errors, logs and `Debug` output.
//!
//! Secret fields are [`Secret`](super::Secret)s (shown as `***`), raw
//! properties whose name says secret are shown as `***`
//! ([`Redacted`](super::kafka::Redacted)), and server URLs are shown with
//! their password masked ([`url`]). As a last guard, every error of a load
//! is scrubbed of the secret values the loaded sources hold ([`scrub`]), so
//! that a message quoting a value cannot show one.

use figment::value::Value;
use figment::Figment;

/// `url` with the password of its userinfo (or a lone token) masked:
/// `nats://bob:secret@host` → `nats://bob:***@host`, `nats://tok@host` →
/// `nats://***@host`. Text that is no URL with userinfo is returned as is.
pub(crate) fn url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    let userinfo = &rest[..at];
    let shown = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => "***".to_string(),
    };
    format!("{}{shown}{}", &url[..scheme_end], &rest[at..])
}

/// Credentials in a URL's userinfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum UrlCredentials {
    /// `user:password@`.
    UserPassword(String, String),
    /// `token@`.
    Token(String),
}

/// `url` without its userinfo, and the credentials it held.
pub(crate) fn split_credentials(url: &str) -> (String, Option<UrlCredentials>) {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return (url.to_string(), None);
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return (url.to_string(), None);
    };
    let credentials = match rest[..at].split_once(':') {
        Some((user, password)) => UrlCredentials::UserPassword(user.into(), password.into()),
        None => UrlCredentials::Token(rest[..at].into()),
    };
    (
        format!("{}{}", &url[..scheme_end], &rest[at + 1..]),
        Some(credentials),
    )
}

/// Server URLs, masked, comma-separated (for errors, logs and health).
#[cfg_attr(not(feature = "nats"), allow(dead_code))]
pub(crate) fn urls(urls: &[String]) -> String {
    urls.iter().map(|u| url(u)).collect::<Vec<_>>().join(",")
}

/// Shows a list of URLs masked.
pub(crate) struct MaskedUrls<'a>(pub(crate) &'a [String]);

impl std::fmt::Debug for MaskedUrls<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|u| url(u)))
            .finish()
    }
}

/// Fields holding a secret, as figment key paths.
const SECRET_FIELDS: &[&str] = &[
    "kafka.sasl.password",
    "kafka.tls.key_password",
    "nats.auth.token",
    "nats.auth.password",
    "nats.auth.nkey_seed",
];

/// Maps of raw properties, whose secret-named entries are secrets.
const PROPERTY_MAPS: &[&str] = &[
    "kafka.properties",
    "kafka.producer.properties",
    "kafka.consumer.properties",
];

/// Every secret value the sources of `figment` hold, as text.
pub(super) fn secrets(figment: &Figment) -> Vec<String> {
    let mut out = Vec::new();
    for field in SECRET_FIELDS {
        if let Ok(v) = figment.find_value(field) {
            out.extend(scalar(&v));
        }
    }
    // A scalar given where a section holding secrets belongs is likely a
    // secret in the wrong place; the type error would quote it.
    for section in ["kafka.sasl", "kafka.tls", "nats.auth"]
        .iter()
        .chain(PROPERTY_MAPS)
    {
        if let Ok(v) = figment.find_value(section) {
            out.extend(scalar(&v));
        }
    }
    for map in PROPERTY_MAPS {
        if let Ok(Value::Dict(_, entries)) = figment.find_value(map) {
            for (key, v) in entries {
                if super::kafka::is_secret(&key) {
                    out.extend(scalar(&v));
                }
            }
        }
    }
    // A list of URLs, or one URL given where the list belongs.
    match figment.find_value("nats.servers") {
        Ok(Value::Array(_, servers)) => {
            for s in servers {
                out.extend(s.as_str().and_then(password));
            }
        }
        Ok(Value::String(_, s)) => out.extend(password(&s)),
        _ => {}
    }
    out.retain(|s| s.len() >= MIN_SCRUBBED);
    out
}

/// Secrets shorter than this are not scrubbed from messages: replacing
/// every `1` or `ab` would garble them, and such a value is no secret.
const MIN_SCRUBBED: usize = 4;

/// The text of a scalar, as a secret field would load it.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(_, s) => Some(s.clone()),
        Value::Num(_, n) => Some(match n.to_u128() {
            Some(u) => u.to_string(),
            None => match n.to_i128() {
                Some(i) => i.to_string(),
                None => n.to_f64().map(|f| f.to_string()).unwrap_or_default(),
            },
        }),
        Value::Bool(_, b) => Some(b.to_string()),
        Value::Char(_, c) => Some(c.to_string()),
        _ => None,
    }
}

/// The password (or token) in a URL's userinfo.
fn password(text: &str) -> Option<String> {
    let rest = &text[text.find("://")? + 3..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let userinfo = &authority[..authority.rfind('@')?];
    Some(match userinfo.split_once(':') {
        Some((_, pass)) => pass.to_string(),
        None => userinfo.to_string(),
    })
}

/// `text` with every secret replaced by `***`.
pub(super) fn scrub(mut text: String, secrets: &[String]) -> String {
    for s in secrets {
        if text.contains(s.as_str()) {
            text = text.replace(s.as_str(), "***");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_and_tokens_are_masked() {
        assert_eq!(url("nats://bob:s3cr3t@h:4222"), "nats://bob:***@h:4222");
        assert_eq!(url("nats://tok3n@h:4222/x"), "nats://***@h:4222/x");
        assert_eq!(url("tls://a:b:c@h"), "tls://a:***@h");
        assert_eq!(url("nats://h:4222"), "nats://h:4222");
        assert_eq!(url("nats://h:4222/p@q"), "nats://h:4222/p@q");
        assert_eq!(url("not a url"), "not a url");
        assert_eq!(password("nats://bob:s3cr3t@h").as_deref(), Some("s3cr3t"));
        assert_eq!(password("nats://tok@h").as_deref(), Some("tok"));
        assert_eq!(password("nats://h"), None);
        assert_eq!(
            split_credentials("nats://bob:pw@h:1/x"),
            (
                "nats://h:1/x".to_string(),
                Some(UrlCredentials::UserPassword("bob".into(), "pw".into()))
            )
        );
        assert_eq!(
            split_credentials("nats://tok@h"),
            (
                "nats://h".to_string(),
                Some(UrlCredentials::Token("tok".into()))
            )
        );
        assert_eq!(
            split_credentials("nats://h"),
            ("nats://h".to_string(), None)
        );
    }

    #[test]
    fn scrub_replaces_every_secret() {
        let s = vec!["918273645".to_string()];
        assert_eq!(
            scrub("found `918273645` twice: 918273645".into(), &s),
            "found `***` twice: ***"
        );
    }
}
