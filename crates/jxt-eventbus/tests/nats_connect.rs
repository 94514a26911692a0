//! Connecting to NATS: credentials from the configuration, clear errors for
//! wrong ones, and no bus without JetStream (never a silent fall back to core
//! NATS). Runs private nats-servers (see `nats_support::server`).
#![cfg(feature = "nats")]

mod nats_support;
mod support;

use std::time::Duration;

use jxt_eventbus::config::Secret;
use jxt_eventbus::Error;
use nats_support::server::NatsServer;
use nats_support::{refused, round_trip};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_password() {
    let Some(server) =
        NatsServer::start("authorization {\n  users = [ { user: alice, password: s3cret } ]\n}")
    else {
        return;
    };
    let mut config = nats_support::config(&server.url(), "auth");
    config.nats.auth.user = Some("alice".into());
    config.nats.auth.password = Some(Secret::new("s3cret"));
    round_trip(config.clone()).await;

    config.nats.auth.password = Some(Secret::new("wrong"));
    config.nats.connect_timeout = Duration::from_secs(2);
    let err = refused(config).await;
    assert!(matches!(err, Error::Backend { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains(&server.url()), "{text}");
    assert!(!text.contains("wrong"), "the password is not shown: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token() {
    let Some(server) = NatsServer::start("authorization {\n  token: \"t0k3n\"\n}") else {
        return;
    };
    let mut config = nats_support::config(&server.url(), "auth");
    config.nats.auth.token = Some(Secret::new("t0k3n"));
    round_trip(config.clone()).await;

    config.nats.auth.token = None;
    config.nats.connect_timeout = Duration::from_secs(2);
    assert!(matches!(refused(config).await, Error::Backend { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_jetstream_no_bus() {
    let Some(server) = NatsServer::start_with("", false) else {
        return;
    };
    let err = refused(nats_support::config(&server.url(), "core")).await;
    assert!(err.to_string().contains("JetStream"), "{err}");
    assert!(!err.is_retryable(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_is_a_clear_error() {
    let mut config = nats_support::config("nats://127.0.0.1:1", "nowhere");
    config.nats.connect_timeout = Duration::from_millis(500);
    let err = refused(config).await;
    assert!(matches!(err, Error::Backend { .. }), "{err}");
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    assert!(err.is_retryable(), "{err}");
}
