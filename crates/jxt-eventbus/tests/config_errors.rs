//! Bad configuration gets a clear error, and never shows a secret.
//!
//! A distinctive secret is planted in every secret field (and in the
//! userinfo of a NATS server URL), then every error the loader, the
//! validation and the backends can produce is provoked: wrong types,
//! unknown keys beside it, validation failures, librdkafka refusing a
//! property, and connecting with bad credentials to real brokers. The
//! secret must appear in no error's `Display` or `Debug`, in no `Debug` of
//! the configuration, and in no log line.

use std::path::Path;

use jxt_eventbus::{BusConfig, Error, Result};

/// Planted in every secret field; a number, so that it also tests a
/// secret given unquoted.
const PLANT: &str = "918273645";

/// Asserts that `shown` does not contain the planted secret.
fn hides(case: &str, shown: &str) {
    assert!(
        !shown.contains(PLANT),
        "{case}: the secret is shown in {shown}"
    );
    assert!(
        !shown.contains("s3cr3t"),
        "{case}: the secret is shown in {shown}"
    );
}

fn hides_error(case: &str, e: &Error) {
    hides(case, &e.to_string());
    hides(case, &format!("{e:?}"));
}

/// Loads `text` as `bus.yaml` in a jail whose environment holds only
/// `vars`.
#[allow(clippy::result_large_err)]
fn load(file: Option<&str>, vars: &[(&str, &str)]) -> Result<BusConfig> {
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
fn secrets_take_any_scalar_as_text() {
    let c = load(
        Some(&format!(
            "kafka:\n  sasl:\n    mechanism: plain\n    username: svc\n    password: {PLANT}\n  \
             tls:\n    key_password: 12345\n  properties:\n    statistics.interval.ms: 0\n    \
             ssl.keystore.password: 2024\n\
             nats:\n  auth:\n    token: 20240611\n"
        )),
        &[],
    );
    // TLS and SASL together own the security properties; drop the one
    // property that would collide.
    let c = match c {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let sasl = c.kafka.sasl.as_ref().unwrap();
    assert_eq!(sasl.password.expose(), PLANT);
    assert_eq!(
        c.kafka
            .tls
            .as_ref()
            .unwrap()
            .key_password
            .as_ref()
            .unwrap()
            .expose(),
        "12345"
    );
    assert_eq!(c.kafka.properties["statistics.interval.ms"], "0");
    assert_eq!(c.kafka.properties["ssl.keystore.password"], "2024");
    assert_eq!(c.nats.auth.token.as_ref().unwrap().expose(), "20240611");
    hides("Debug of the configuration", &format!("{c:?}"));

    let c = load(
        None,
        &[
            ("EVENTBUS_NATS__AUTH__PASSWORD", PLANT),
            ("EVENTBUS_NATS__AUTH__USER", "bob"),
            ("EVENTBUS_KAFKA__PROPERTIES__sasl.password", "007"),
            (
                "EVENTBUS_KAFKA__CONSUMER__PROPERTIES__fetch.error.backoff.ms",
                "50",
            ),
        ],
    )
    .unwrap();
    assert_eq!(c.nats.auth.password.as_ref().unwrap().expose(), PLANT);
    assert_eq!(
        c.kafka.properties["sasl.password"], "007",
        "a property from the environment is text, as it is"
    );
    assert_eq!(c.kafka.consumer.properties["fetch.error.backoff.ms"], "50");
}

#[test]
fn no_load_or_validation_error_shows_a_secret() {
    let files = [
        // A secret of the wrong shape.
        format!("kafka:\n  sasl:\n    mechanism: plain\n    username: u\n    password: [{PLANT}]\n"),
        format!("nats:\n  auth:\n    token:\n      value: {PLANT}\n"),
        // Unknown keys beside a secret.
        format!("kafka:\n  sasl:\n    mechanism: plain\n    username: u\n    password: {PLANT}\n    pasword: s3cr3t\n"),
        format!("nats:\n  auth:\n    token: {PLANT}\n    tokn: 1\n"),
        // Validation failures of the section holding a secret.
        format!("kafka:\n  sasl:\n    mechanism: plain\n    username: \"\"\n    password: {PLANT}\n"),
        format!("nats:\n  auth:\n    token: {PLANT}\n    nkey_seed: s3cr3t\n"),
        format!("nats:\n  auth:\n    password: {PLANT}\n"),
        format!("kafka:\n  tls:\n    key_password: {PLANT}\n  sasl:\n    mechanism: plain\n    username: u\n    password: s3cr3t\n  properties:\n    ssl.key.password: {PLANT}\n"),
        // A secret property of the wrong shape, and a managed key beside one.
        format!("kafka:\n  properties:\n    sasl.password: {{a: {PLANT}}}\n"),
        format!("kafka:\n  properties:\n    sasl.password: {PLANT}\n    enable.auto.commit: s3cr3t\n"),
        // Credentials in a NATS server URL that is otherwise wrong.
        format!("nats:\n  servers: [\"nats://bob:{PLANT}@127.0.0.1:notaport\"]\n"),
        format!("nats:\n  servers: \"nats://bob:{PLANT}@127.0.0.1:4222\"\n"),
        // A secret where its section belongs.
        format!("kafka:\n  sasl: {PLANT}\n"),
        format!("nats:\n  auth: {PLANT}\n"),
        format!("nats:\n  servers: [\"nats://bob:{PLANT}@127.0.0.1:4222\"]\n  auth:\n    token: s3cr3t\n  pull_batch: 0\n"),
    ];
    for text in &files {
        match load(Some(text), &[]) {
            Ok(c) => panic!("{text:?} loaded: {c:?}"),
            Err(e) => hides_error(text, &e),
        }
    }
    let vars: [&[(&str, &str)]; 5] = [
        &[("EVENTBUS_KAFKA__SASL__PASSWORD", PLANT)],
        &[
            ("EVENTBUS_KAFKA_SASL_PASSWORD", PLANT),
            ("EVENTBUS_KAFKA_SASL_USERNAME", ""),
        ],
        &[
            ("EVENTBUS_KAFKA__PROPERTIES__sasl.password", PLANT),
            ("EVENTBUS_KAFKA__PROPERTIES__enable.auto.commit", "1"),
        ],
        &[
            ("EVENTBUS_NATS__AUTH__TOKEN", PLANT),
            ("EVENTBUS_NATS__AUTH__NKEY_SEED", "s3cr3t"),
        ],
        &[
            ("EVENTBUS_NATS__SERVERS", "nats://bob:918273645@[::1"),
            ("EVENTBUS_NATS__AUTH__TOKN", PLANT),
        ],
    ];
    for set in vars {
        match load(None, set) {
            Ok(c) => panic!("{set:?} loaded: {c:?}"),
            Err(e) => hides_error(&format!("{set:?}"), &e),
        }
    }
}

#[test]
fn credentials_in_a_nats_url_are_masked_in_debug() {
    let c = BusConfig::from_yaml_str(&format!(
        "nats:\n  servers: [\"nats://bob:{PLANT}@127.0.0.1:4222\", \"nats://bob:{PLANT}@127.0.0.1:4223\"]\n"
    ))
    .unwrap();
    let shown = format!("{c:?}");
    hides("Debug", &shown);
    assert!(shown.contains("nats://bob:***@127.0.0.1:4222"), "{shown}");
    let mut c = BusConfig::default();
    c.nats.servers = vec![format!("nats://{PLANT}@127.0.0.1:4222")];
    let shown = format!("{c:?}");
    hides("Debug of a token URL", &shown);
    assert!(shown.contains("nats://***@127.0.0.1:4222"), "{shown}");
}

#[test]
fn credentials_in_nats_urls_agree_and_do_not_double_auth() {
    for text in [
        format!(
            "nats:\n  servers: [\"nats://bob:{PLANT}@a:4222\", \"nats://eve:{PLANT}@b:4222\"]\n"
        ),
        format!("nats:\n  servers: [\"nats://bob:{PLANT}@a:4222\"]\n  auth:\n    token: s3cr3t\n"),
    ] {
        let e = BusConfig::from_yaml_str(&text).unwrap_err();
        assert!(e.to_string().contains("nats.servers"), "{e}");
        hides_error(&text, &e);
    }
}

#[test]
fn validation_errors_name_their_source_and_come_all_at_once() {
    let e = load(
        Some(
            "dispatch:\n  max_concurrency: 0\nkafka:\n  consumer:\n    session_timeout: 10s\n    heartbeat_interval: 20s\nnats:\n  pull_batch: 0\n",
        ),
        &[("EVENTBUS_RETRY__MAX_ATTEMPTS", "0")],
    )
    .unwrap_err();
    let shown = e.to_string();
    for field in [
        "dispatch.max_concurrency",
        "kafka.consumer.heartbeat_interval",
        "nats.pull_batch",
        "retry.max_attempts",
    ] {
        let line = shown
            .lines()
            .find(|l| l.contains(&format!("`{field}`")))
            .unwrap_or_else(|| panic!("{field} is not reported: {shown}"));
        let source = if field.starts_with("retry") {
            "environment variable EVENTBUS_RETRY__MAX_ATTEMPTS"
        } else {
            "bus.yaml"
        };
        assert!(
            line.contains(source),
            "{field} does not name {source}: {line}"
        );
    }
    assert_eq!(shown.lines().count(), 4, "one line per problem: {shown}");
}

#[test]
fn kafka_needs_its_brokers() {
    let e = load(Some("backend: kafka\n"), &[]).unwrap_err().to_string();
    assert!(e.contains("kafka.brokers"), "{e}");
    assert!(
        e.contains("EVENTBUS_KAFKA_BROKERS"),
        "says how to set it: {e}"
    );
    let c = load(
        Some("backend: kafka\n"),
        &[("EVENTBUS_KAFKA_BROKERS", "k1:9092")],
    )
    .unwrap();
    assert_eq!(c.kafka.brokers, ["k1:9092"]);
    // Other backends do not need them.
    load(Some("backend: nats\n"), &[]).unwrap();
}

#[cfg(feature = "kafka")]
#[test]
fn librdkafka_property_names_are_checked_offline() {
    let e = BusConfig::from_yaml_str(
        "backend: kafka\nkafka:\n  brokers: [\"k1:9092\"]\n  properties:\n    bogus.property: \"1\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("kafka.properties.bogus.property"), "{e}");
    let e = BusConfig::from_yaml_str(&format!(
        "backend: kafka\nkafka:\n  brokers: [\"k1:9092\"]\n  consumer:\n    properties:\n      sasl.pasword: {PLANT}\n"
    ))
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("kafka.consumer.properties.sasl.pasword"),
        "{e}"
    );
    hides_error("a mistyped secret property", &e);
}
