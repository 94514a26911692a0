//! The bus's one NATS connection: options, credentials, TLS, a ping interval
//! that notices a stalled connection, a signal that fires when the
//! connection is lost and when it is re-established, and the publishes the
//! server refused for the user's permissions.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, ConnectErrorKind, ConnectOptions, Event};
use tokio::sync::watch;

use super::backend_error;
use super::permissions::PublishDenials;
use crate::config::UrlCredentials;
use crate::config::{BusConfig, NatsConfig};
use crate::error::{Error, Result};

/// A connected client and the state of its link to the server.
pub(crate) struct Connection {
    pub(crate) client: Client,
    pub(crate) link: watch::Receiver<Link>,
    /// Publishes the server refused for the user's permissions.
    pub(crate) denials: Arc<PublishDenials>,
}

/// The state of the connection as the pull loops see it. Pull requests live
/// on the server only while their connection does, and a lost connection
/// may have lost a topic's pin: pullers start again when it changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Link {
    /// Increases on every (re)connect.
    pub(crate) connects: u64,
    /// False from the moment the client declared the connection lost until
    /// it is re-established.
    pub(crate) up: bool,
}

/// The longest the client waits between pings (the client's own default).
const MAX_PING_INTERVAL: Duration = Duration::from_secs(60);

/// How often the client pings a server that sent nothing meanwhile. The
/// client declares the connection lost when its third ping goes unanswered,
/// so a stalled connection (a network that drops packets without closing
/// anything) is noticed after about three intervals. With `sharing: pinned`
/// that must happen well inside the pin lifetime: a bus that lost its
/// connection must stop handling its topics before a standby may be pinned
/// (`pinned_ttl / 8`, so about `3/8` of it). Otherwise a quarter of
/// `ack_wait`, so that records are not handled long after their
/// redelivery.
pub(crate) fn ping_interval(nats: &NatsConfig) -> Duration {
    let wanted = match nats.pinned_ttl() {
        Some(ttl) => ttl / 8,
        None => nats.ack_wait / 4,
    };
    wanted.clamp(Duration::from_millis(100), MAX_PING_INTERVAL)
}

/// Connects to the configured servers.
///
/// # Errors
/// [`Error::Config`] for unreadable credentials, [`Error::Backend`] when no
/// server accepts the connection within `nats.connect_timeout`.
pub(crate) async fn connect(config: &BusConfig) -> Result<Connection> {
    let nats = &config.nats;
    // Connected once `connect` returns; the client reports that first
    // connection with an event too, which changes nothing.
    let (link_tx, link) = watch::channel(Link {
        connects: 1,
        up: true,
    });
    let first = Arc::new(AtomicBool::new(true));
    let denials = Arc::new(PublishDenials::default());
    let seen = denials.clone();
    let name = nats
        .connection_name
        .clone()
        .unwrap_or_else(|| format!("jxt-eventbus/{}", config.group));
    let options = options(nats)
        .await?
        .name(name)
        .connection_timeout(nats.connect_timeout)
        .request_timeout(Some(nats.request_timeout))
        .ping_interval(ping_interval(nats))
        .event_callback(move |event| {
            let link_tx = link_tx.clone();
            let first = first.clone();
            let seen = seen.clone();
            async move {
                match event {
                    Event::Connected if first.swap(false, Ordering::AcqRel) => {}
                    Event::Connected => {
                        tracing::info!("NATS connection re-established");
                        link_tx.send_modify(|l| {
                            l.connects += 1;
                            l.up = true;
                        });
                    }
                    Event::Disconnected => {
                        first.store(false, Ordering::Release);
                        tracing::warn!("NATS connection lost; reconnecting");
                        link_tx.send_modify(|l| l.up = false);
                    }
                    Event::SlowConsumer(sid) => {
                        tracing::error!(
                            sid,
                            "NATS subscription overflowed; messages were dropped by the client"
                        )
                    }
                    Event::ServerError(e) => {
                        let text = e.to_string();
                        seen.observe(&text);
                        crate::log_limit::warn_limited!(error = %text, "NATS server error");
                    }
                    other => tracing::info!(event = %other, "NATS connection event"),
                }
            }
        });
    // Credentials in a URL go to the options (validation made them the
    // same on every URL): the client logs the URLs it connects to.
    let mut options = options;
    let mut bare = Vec::new();
    for s in &nats.servers {
        let (url, credentials) = crate::config::split_credentials(s);
        options = match credentials {
            Some(UrlCredentials::UserPassword(user, password)) => {
                options.user_and_password(user, password)
            }
            Some(UrlCredentials::Token(token)) => options.token(token),
            None => options,
        };
        bare.push(url);
    }
    let servers: Vec<async_nats::ServerAddr> = bare
        .iter()
        .map(|s| {
            s.parse().map_err(|e: std::io::Error| {
                Error::config(
                    "nats.servers",
                    format!(
                        "{:?} is not a server URL: {e}",
                        crate::config::masked_url(s)
                    ),
                )
            })
        })
        .collect::<Result<_>>()?;
    let client = options
        .connect(servers)
        .await
        .map_err(|e| connect_error(nats, e))?;
    Ok(Connection {
        client,
        link,
        denials,
    })
}

/// A failed first connection as a backend error, with what to check when
/// TLS refused it. The TLS library's errors come as text only (rustls'
/// "invalid peer certificate" on this side, a fatal alert from the server).
fn connect_error(nats: &NatsConfig, e: async_nats::ConnectError) -> Error {
    let text = e.to_string().to_ascii_lowercase();
    let (hint, retryable) = if text.contains("invalid peer certificate") {
        (
            "; this bus refused the server's TLS certificate: nats.tls.ca_file must hold the CA \
             that signed it (the system's CAs are trusted too), and the certificate must name \
             the host or IP of the server URL",
            false,
        )
    } else if text.contains("fatal alert") && text.contains("certificate") {
        (
            "; the server refused this bus's TLS client certificate: set nats.tls.cert_file and \
             nats.tls.key_file to a certificate signed by a CA the server trusts",
            false,
        )
    } else if e.kind() == ConnectErrorKind::Tls {
        (
            "; check the nats.tls settings (PEM files; cert_file and key_file must match)",
            false,
        )
    } else {
        ("", true)
    };
    backend_error(
        format!(
            "cannot connect to NATS at {} within {:?}: {e}{hint}",
            crate::config::masked_urls(&nats.servers),
            nats.connect_timeout
        ),
        retryable,
        e,
    )
}

async fn options(nats: &NatsConfig) -> Result<ConnectOptions> {
    let a = &nats.auth;
    let mut o = if let Some(path) = &a.creds_file {
        ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|e| {
                Error::config(
                    "nats.auth.creds_file",
                    format!(
                        "{} cannot be read as a NATS credentials file: {e}",
                        path.display()
                    ),
                )
            })?
    } else {
        ConnectOptions::new()
    };
    if let Some(token) = &a.token {
        o = o.token(token.expose().to_string());
    }
    if let (Some(user), Some(password)) = (&a.user, &a.password) {
        o = o.user_and_password(user.clone(), password.expose().to_string());
    }
    if let Some(seed) = &a.nkey_seed {
        o = o.nkey(seed.expose().to_string());
    }
    let tls = &nats.tls;
    if tls.required {
        o = o.require_tls(true);
    }
    if let Some(ca) = &tls.ca_file {
        o = o.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        o = o.add_client_certificate(cert.clone(), key.clone());
    }
    if tls.handshake_first {
        o = o.tls_first();
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NatsSharing;

    #[test]
    fn a_stalled_connection_is_noticed_well_inside_the_pin_lifetime() {
        let mut nats = NatsConfig::default();
        // Pin lifetime 60 s (twice ack_wait): lost after about 22.5 s.
        assert_eq!(ping_interval(&nats), Duration::from_millis(7500));
        nats.ack_wait = Duration::from_secs(2);
        assert_eq!(ping_interval(&nats), Duration::from_millis(500));
        nats.consumer.pinned_ttl = Some(Duration::from_secs(3600));
        assert_eq!(ping_interval(&nats), MAX_PING_INTERVAL);
        nats.consumer.pinned_ttl = None;
        nats.consumer.sharing = NatsSharing::Shared;
        assert_eq!(ping_interval(&nats), Duration::from_millis(500));
    }
}
