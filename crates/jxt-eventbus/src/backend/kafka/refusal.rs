//! Broker connections refused for a reason that retrying cannot fix.
//!
//! librdkafka treats SASL credentials the broker rejects, and TLS handshakes
//! that fail on a certificate, like a broker that is down: it reports them
//! to the error callback and reconnects without end. The bus recognises
//! them there ([`Refusal::classify`]) so that `build()` and `health()` say
//! at once which broker refused what, and which settings to look at,
//! instead of "every broker went down" or a timeout.
//!
//! The text comes from librdkafka and never holds a password; as a last
//! guard the configured password is masked in it anyway.

use rdkafka::types::RDKafkaErrorCode;

use crate::config::KafkaConfig;

/// What the broker refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RefusalKind {
    /// SASL authentication failed (wrong user, password or mechanism).
    Authentication,
    /// The client could not verify the broker's certificate (its CA, or the
    /// host name it names).
    BrokerCertificate,
    /// The broker refused the TLS handshake over the client's certificate
    /// (none given, or one it does not trust).
    ClientCertificate,
}

/// A refused connection, as librdkafka reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Refusal {
    pub(super) kind: RefusalKind,
    /// `host:port` of the broker, when librdkafka named it.
    pub(super) broker: Option<String>,
    /// librdkafka's text, without the broker prefix.
    pub(super) detail: String,
}

impl Refusal {
    /// The refusal in a client error of librdkafka, if it is one.
    pub(super) fn classify(code: Option<RDKafkaErrorCode>, reason: &str) -> Option<Refusal> {
        let lower = reason.to_ascii_lowercase();
        let kind = match code {
            Some(RDKafkaErrorCode::Authentication) => RefusalKind::Authentication,
            Some(RDKafkaErrorCode::SSL | RDKafkaErrorCode::BrokerTransportFailure)
                if CLIENT_CERTIFICATE_ALERTS.iter().any(|a| lower.contains(a)) =>
            {
                RefusalKind::ClientCertificate
            }
            Some(RDKafkaErrorCode::SSL) if lower.contains("certificate verify failed") => {
                RefusalKind::BrokerCertificate
            }
            _ => return None,
        };
        let (broker, detail) = split_broker(reason);
        Some(Refusal {
            kind,
            broker,
            detail: detail.to_string(),
        })
    }

    /// One sentence for a person: who refused what, which settings to
    /// check, then librdkafka's words.
    pub(super) fn describe(&self, k: &KafkaConfig) -> String {
        let broker = self
            .broker
            .clone()
            .unwrap_or_else(|| format!("the brokers at {}", k.brokers.join(",")));
        let mut detail = self.detail.clone();
        if let Some(sasl) = &k.sasl {
            let password = sasl.password.expose();
            if !password.is_empty() {
                detail = detail.replace(password, "***");
            }
        }
        match self.kind {
            RefusalKind::Authentication => {
                let (user, mechanism) = match &k.sasl {
                    Some(s) => (s.username.as_str(), s.mechanism.as_property()),
                    None => ("(from kafka.properties)", "SASL"),
                };
                format!(
                    "SASL authentication as `{user}` with {mechanism} was refused by {broker} \
                     (kafka.sasl.username, kafka.sasl.password, kafka.sasl.mechanism): {detail}"
                )
            }
            RefusalKind::BrokerCertificate => {
                let tls = k.tls.as_ref();
                let ca = tls
                    .and_then(|t| t.ca_location.as_deref())
                    .map_or("the system trust store".to_string(), |c| format!("`{c}`"));
                let host = if tls.is_none_or(|t| t.verify_hostname) {
                    ", or it does not name the host connected to (kafka.tls.verify_hostname; \
                     check the name in kafka.brokers and the broker's advertised listener)"
                        .to_string()
                } else {
                    String::new()
                };
                format!(
                    "the TLS certificate of {broker} could not be verified: it is not signed by \
                     a CA in {ca} (kafka.tls.ca_location){host}: {detail}"
                )
            }
            RefusalKind::ClientCertificate => format!(
                "{broker} refused the TLS handshake: it requires a client certificate it \
                 trusts (kafka.tls.certificate_location, kafka.tls.key_location): {detail}"
            ),
        }
    }
}

/// TLS alerts a broker sends when the client's certificate is missing or
/// not trusted.
const CLIENT_CERTIFICATE_ALERTS: &[&str] = &[
    "alert bad certificate",
    "alert certificate required",
    "alert unknown ca",
    "alert certificate unknown",
];

/// `sasl_ssl://host:port/bootstrap: text` → (`host:port`, `text`).
fn split_broker(reason: &str) -> (Option<String>, &str) {
    let Some((head, rest)) = reason.split_once(": ") else {
        return (None, reason);
    };
    let Some((_, addr)) = head.split_once("://") else {
        return (None, reason);
    };
    let host_port = addr.rsplit_once('/').map_or(addr, |(hp, _)| hp);
    (Some(host_port.to_string()), rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{KafkaSaslConfig, KafkaTlsConfig, SaslMechanism, Secret};

    const SCRAM: &str = "sasl_ssl://127.0.0.1:36295/bootstrap: SASL authentication error: \
        Authentication failed during authentication due to invalid credentials with SASL \
        mechanism SCRAM-SHA-512 (after 380ms in state AUTH_REQ)";
    const VERIFY: &str = "sasl_ssl://127.0.0.1:37189/bootstrap: SSL handshake failed: \
        error:0A000086:SSL routines::certificate verify failed: broker certificate could not be \
        verified, verify that ssl.ca.location is correctly configured or root CA certificates \
        are installed (install ca-certificates package) (after 219ms in state SSL_HANDSHAKE)";
    const NO_CLIENT_CERT: &str = "ssl://127.0.0.1:43663/bootstrap: Receive failed: \
        error:0A000412:SSL routines::sslv3 alert bad certificate: SSL alert number 42 (after \
        0ms in state APIVERSION_QUERY)";

    fn config() -> KafkaConfig {
        KafkaConfig {
            brokers: vec!["127.0.0.1:36295".into()],
            tls: Some(KafkaTlsConfig {
                ca_location: Some("/etc/ca.pem".into()),
                ..KafkaTlsConfig::default()
            }),
            sasl: Some(KafkaSaslConfig {
                mechanism: SaslMechanism::ScramSha512,
                username: "alice".into(),
                password: Secret::new("hunter2"),
            }),
            ..KafkaConfig::default()
        }
    }

    #[test]
    fn a_refused_password_names_user_mechanism_broker_and_settings() {
        let r = Refusal::classify(Some(RDKafkaErrorCode::Authentication), SCRAM).unwrap();
        assert_eq!(r.kind, RefusalKind::Authentication);
        assert_eq!(r.broker.as_deref(), Some("127.0.0.1:36295"));
        let text = r.describe(&config());
        for part in [
            "`alice`",
            "SCRAM-SHA-512",
            "127.0.0.1:36295",
            "kafka.sasl.password",
        ] {
            assert!(text.contains(part), "{part} in {text}");
        }
    }

    #[test]
    fn the_password_is_masked_even_if_librdkafka_quoted_it() {
        let reason = format!("{SCRAM} hunter2");
        let r = Refusal::classify(Some(RDKafkaErrorCode::Authentication), &reason).unwrap();
        let text = r.describe(&config());
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn an_unverified_broker_certificate_names_the_ca_and_the_host_check() {
        let r = Refusal::classify(Some(RDKafkaErrorCode::SSL), VERIFY).unwrap();
        assert_eq!(r.kind, RefusalKind::BrokerCertificate);
        let mut c = config();
        let text = r.describe(&c);
        assert!(text.contains("kafka.tls.ca_location"), "{text}");
        assert!(text.contains("`/etc/ca.pem`"), "{text}");
        assert!(text.contains("kafka.tls.verify_hostname"), "{text}");
        // With the host check off, only the CA can be the cause.
        c.tls.as_mut().unwrap().verify_hostname = false;
        let text = r.describe(&c);
        assert!(!text.contains("verify_hostname"), "{text}");
    }

    #[test]
    fn a_refused_client_certificate_names_the_certificate_settings() {
        let r = Refusal::classify(
            Some(RDKafkaErrorCode::BrokerTransportFailure),
            NO_CLIENT_CERT,
        )
        .unwrap();
        assert_eq!(r.kind, RefusalKind::ClientCertificate);
        let text = r.describe(&config());
        assert!(text.contains("127.0.0.1:43663"), "{text}");
        assert!(text.contains("kafka.tls.certificate_location"), "{text}");
    }

    #[test]
    fn other_errors_are_not_refusals() {
        for (code, reason) in [
            (
                RDKafkaErrorCode::BrokerTransportFailure,
                "127.0.0.1:9092/1: Connect to ipv4#127.0.0.1:9092 failed: Connection refused",
            ),
            (RDKafkaErrorCode::AllBrokersDown, "1/1 brokers are down"),
            (
                RDKafkaErrorCode::SSL,
                "ssl://h:1/b: SSL handshake failed: Disconnected",
            ),
        ] {
            assert_eq!(Refusal::classify(Some(code), reason), None, "{reason}");
        }
        assert_eq!(Refusal::classify(None, SCRAM), None);
    }

    #[test]
    fn a_reason_without_a_broker_prefix_is_kept_whole() {
        assert_eq!(split_broker("no prefix here"), (None, "no prefix here"));
        assert_eq!(split_broker("a: b"), (None, "a: b"));
    }
}
