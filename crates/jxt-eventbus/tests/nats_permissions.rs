//! NATS account permissions on a private nats-server: a bus whose user may
//! not publish to a subject gets a clear, bounded error naming the subject
//! and the permission, and the same bus still works where it is allowed.
#![cfg(feature = "nats")]

mod nats_support;
mod support;

use std::time::{Duration, Instant};

use jxt_eventbus::{Error, EventBus, Message};
use nats_support::server::NatsServer;

const PASSWORD: &str = "limited-pw-7f3a";

/// An account with JetStream whose user `limited` may not publish to
/// `denied.>`.
fn accounts() -> String {
    format!(
        r#"accounts {{
  APP {{
    jetstream: enabled
    users = [
      {{ user: limited, password: "{PASSWORD}", permissions: {{ publish: {{ deny: ["denied.>"] }} }} }}
    ]
  }}
}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_the_user_may_not_publish_to_is_a_clear_error() {
    let Some(server) = NatsServer::start(&accounts()) else {
        return;
    };
    let mut config = nats_support::config(&server.url(), "perm");
    config.nats.auth.user = Some("limited".into());
    config.nats.auth.password = Some(jxt_eventbus::config::Secret::new(PASSWORD));
    config.nats.request_timeout = Duration::from_secs(10);
    let bus = EventBus::from_config(config).await.expect("bus");

    let allowed = support::unique_name("allowed");
    bus.publish(&allowed, Message::new("ok"))
        .await
        .expect("an allowed subject takes the record");

    let subject = format!("denied.{}", support::unique_name("t"));
    let t0 = Instant::now();
    let err = bus
        .publish(&subject, Message::new("no"))
        .await
        .expect_err("the server refuses the subject");
    let took = t0.elapsed();
    let text = err.to_string();
    eprintln!("after {took:?}: {text}");
    assert!(text.contains(&subject), "names the subject: {text}");
    assert!(
        text.to_lowercase().contains("permission"),
        "says it is a permission: {text}"
    );
    assert!(!err.is_retryable(), "the same publish fails again: {err}");
    assert!(!text.contains(PASSWORD), "{text}");
    assert!(
        took < Duration::from_secs(5),
        "refused at once, not after nats.request_timeout: {took:?}"
    );
    assert!(matches!(err, Error::Publish { .. }), "{err:?}");
    bus.shutdown().await.unwrap();
}
