//! TLS to a real nats-server with certificates made for the test: the bus
//! trusts the CA in `nats.tls.ca_file`, shows `nats.tls.cert_file` to a
//! server that verifies clients, and fails with a clear error when the CA
//! did not sign the server's certificate or the server wants a client
//! certificate it did not get; `handshake_first` for servers that start
//! with TLS. Runs private nats-servers (see
//! `nats_support::server`).
#![cfg(feature = "nats")]

mod nats_support;
mod support;

use std::time::Duration;

use jxt_eventbus::{BusConfig, Error};
use nats_support::server::NatsServer;
use nats_support::tls::TestPki;
use nats_support::{refused, round_trip};

fn tls_config(server: &NatsServer, pki: &TestPki) -> BusConfig {
    let mut config = nats_support::config(&server.url(), "tls");
    config.nats.tls.required = true;
    config.nats.tls.ca_file = Some(pki.ca());
    config.nats.connect_timeout = Duration::from_secs(3);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_ca_is_trusted() {
    let pki = TestPki::generate("server-only");
    let Some(server) = NatsServer::start(&pki.server_config(false, false)) else {
        return;
    };
    round_trip(tls_config(&server, &pki)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_for_a_verifying_server() {
    let pki = TestPki::generate("mutual");
    let Some(server) = NatsServer::start(&pki.server_config(true, false)) else {
        return;
    };
    let mut config = tls_config(&server, &pki);
    config.nats.tls.cert_file = Some(pki.client_cert());
    config.nats.tls.key_file = Some(pki.client_key());
    round_trip(config.clone()).await;

    // Without the client certificate the server closes the connection.
    config.nats.tls.cert_file = None;
    config.nats.tls.key_file = None;
    let err = refused(config).await;
    assert!(matches!(err, Error::Backend { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains(&server.url()), "{text}");
    assert!(
        text.contains("nats.tls.cert_file"),
        "names the setting: {text}"
    );
    assert!(!err.is_retryable(), "retrying cannot help: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_that_did_not_sign_the_server_is_a_clear_error() {
    let pki = TestPki::generate("real");
    let other = TestPki::generate("other");
    let Some(server) = NatsServer::start(&pki.server_config(false, false)) else {
        return;
    };
    let mut config = tls_config(&server, &pki);
    config.nats.tls.ca_file = Some(other.ca());
    let err = refused(config).await;
    assert!(matches!(err, Error::Backend { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains(&server.url()), "{text}");
    assert!(
        text.contains("nats.tls.ca_file"),
        "names the setting: {text}"
    );
    assert!(
        text.to_lowercase().contains("certificate"),
        "says the certificate was refused: {text}"
    );
    assert!(!err.is_retryable(), "retrying cannot help: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_ca_file_is_a_config_error() {
    let pki = TestPki::generate("missing");
    let Some(server) = NatsServer::start(&pki.server_config(false, false)) else {
        return;
    };
    let mut config = tls_config(&server, &pki);
    config.nats.tls.ca_file = Some(pki.ca().with_file_name("no-such-ca.pem"));
    let err = refused(config).await;
    assert!(matches!(err, Error::Config { .. }), "{err}");
    assert!(
        err.to_string().contains("nats.tls.ca_file"),
        "names the setting: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_before_the_nats_protocol() {
    let pki = TestPki::generate("handshake-first");
    let Some(server) = NatsServer::start(&pki.server_config(false, true)) else {
        return;
    };
    let mut config = tls_config(&server, &pki);
    config.nats.tls.handshake_first = true;
    round_trip(config.clone()).await;

    // The server sends nothing until the TLS handshake starts.
    config.nats.tls.handshake_first = false;
    config.nats.connect_timeout = Duration::from_secs(1);
    assert!(matches!(refused(config).await, Error::Backend { .. }));
}
