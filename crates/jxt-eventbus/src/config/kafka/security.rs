//! Kafka network, TLS and SASL settings.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{at_most_i32_ms, positive};
use crate::error::{Error, Result};

/// A secret string (password, key passphrase, token): shown as `"***"` by
/// `Debug`. It serializes as the plain value, so a configuration written
/// back to a file keeps it; keep such files private.
///
/// Any scalar loads as its text (`password: 20240611` unquoted in YAML is
/// the secret `"20240611"`), and a value of the wrong shape fails without
/// showing it. Quote a secret that YAML or TOML would read as a number of
/// another spelling (`007`, `1e3`, `0x1f`): the text of the parsed number
/// is what is kept.
#[derive(Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        super::super::scalar::text(d).map(Secret)
    }
}

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// Network timeouts (jxt-core's `net` section).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaNetConfig {
    /// How long opening one broker connection (TCP, TLS, SASL) may take
    /// (`socket.connection.setup.timeout.ms`; jxt-core `dial_timeout`).
    /// Default 30s.
    #[serde(with = "humantime_serde")]
    pub dial_timeout: Duration,
    /// How long a request may wait for its response before the connection
    /// is considered broken (`socket.timeout.ms`; jxt-core `read_timeout`
    /// and `write_timeout`, which librdkafka does not separate). Default 60s.
    #[serde(with = "humantime_serde")]
    pub socket_timeout: Duration,
    /// TCP keep-alive on broker connections (`socket.keepalive.enable`);
    /// keeps idle connections open through NAT gateways and load balancers.
    /// Default true.
    pub keepalive: bool,
}

impl Default for KafkaNetConfig {
    fn default() -> Self {
        KafkaNetConfig {
            dial_timeout: Duration::from_secs(30),
            socket_timeout: Duration::from_secs(60),
            keepalive: true,
        }
    }
}

impl KafkaNetConfig {
    pub(super) fn validate(&self) -> Result<()> {
        positive("kafka.net.dial_timeout", self.dial_timeout)?;
        at_most_i32_ms("kafka.net.dial_timeout", self.dial_timeout)?;
        if self.socket_timeout < Duration::from_millis(10)
            || self.socket_timeout > Duration::from_secs(300)
        {
            return Err(Error::config(
                "kafka.net.socket_timeout",
                format!("{:?} is not allowed: use 10ms to 300s", self.socket_timeout),
            ));
        }
        Ok(())
    }
}

/// TLS to the brokers (`security.protocol` `ssl` or `sasl_ssl`). Paths are
/// PEM files.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaTlsConfig {
    /// CA certificate(s) that signed the brokers' certificates
    /// (`ssl.ca.location`). Unset: the system trust store. Default unset.
    pub ca_location: Option<String>,
    /// Client certificate for mutual TLS (`ssl.certificate.location`).
    /// Default unset.
    pub certificate_location: Option<String>,
    /// Client private key for mutual TLS (`ssl.key.location`).
    /// Default unset.
    pub key_location: Option<String>,
    /// Passphrase of the private key (`ssl.key.password`). Default unset.
    pub key_password: Option<Secret>,
    /// Check that the broker's certificate names the host connected to
    /// (`ssl.endpoint.identification.algorithm` `https`). Turning it off
    /// allows man-in-the-middle attacks. Default true.
    pub verify_hostname: bool,
}

impl Default for KafkaTlsConfig {
    fn default() -> Self {
        KafkaTlsConfig {
            ca_location: None,
            certificate_location: None,
            key_location: None,
            key_password: None,
            verify_hostname: true,
        }
    }
}

/// SASL mechanism (`sasl.mechanism`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SaslMechanism {
    /// PLAIN: the password crosses the wire; use it only with TLS.
    #[serde(alias = "PLAIN")]
    Plain,
    /// SCRAM-SHA-256 challenge-response.
    #[serde(rename = "scram_sha_256", alias = "SCRAM-SHA-256")]
    ScramSha256,
    /// SCRAM-SHA-512 challenge-response.
    #[serde(rename = "scram_sha_512", alias = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    pub(crate) fn as_property(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// SASL authentication (`security.protocol` `sasl_plaintext`, or
/// `sasl_ssl` together with [`KafkaTlsConfig`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSaslConfig {
    /// Mechanism (`sasl.mechanism`).
    pub mechanism: SaslMechanism,
    /// User name (`sasl.username`).
    pub username: String,
    /// Password (`sasl.password`), redacted in `Debug` output.
    pub password: Secret,
}

impl KafkaSaslConfig {
    pub(super) fn validate(&self) -> Result<()> {
        if self.username.is_empty() {
            return Err(Error::config("kafka.sasl.username", "must not be empty"));
        }
        Ok(())
    }
}
