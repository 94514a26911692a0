//! The bus on a real Kafka with secured listeners (see
//! `support::secure_kafka`): SCRAM-SHA-512 and PLAIN over TLS, mutual TLS,
//! and what a user sees when a password, a CA, a host name or an ACL is
//! wrong. One private broker serves every test of this file.
#![cfg(feature = "kafka")]

mod kafka_support;
mod support;

use std::time::Duration;

use jxt_eventbus::config::{KafkaSaslConfig, KafkaTlsConfig, SaslMechanism, Secret};
use std::sync::atomic::Ordering;

use jxt_eventbus::health::HealthState;
use jxt_eventbus::{BusConfig, Delivery, Error, EventBus, Message, SubscribeOptions};
use support::secure_kafka::{self, SecureKafka};

const WAIT: Duration = Duration::from_secs(30);

/// `kafka.connect_timeout` of the tests that expect a refusal: the refusal
/// must come well before it ([`FAIL_FAST`]), as retrying cannot help.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(8);
const FAIL_FAST: Duration = Duration::from_secs(4);

fn tls(ca: &str) -> KafkaTlsConfig {
    KafkaTlsConfig {
        ca_location: Some(ca.to_string()),
        ..KafkaTlsConfig::default()
    }
}

fn sasl(mechanism: SaslMechanism, user: &str, password: &str) -> KafkaSaslConfig {
    KafkaSaslConfig {
        mechanism,
        username: user.to_string(),
        password: Secret::new(password),
    }
}

/// A bus configuration for `user` with SCRAM-SHA-512 over TLS.
fn scram_config(kafka: &SecureKafka, user: &str) -> BusConfig {
    let mut c = kafka_support::config(&kafka.sasl(), &support::unique_name("g"));
    c.kafka.tls = Some(tls(&kafka.ca()));
    c.kafka.sasl = Some(sasl(
        SaslMechanism::ScramSha512,
        user,
        kafka.scram_password(),
    ));
    c
}

/// Publishes one record to a new topic and waits for it to come back
/// through a subscription of the same bus.
async fn round_trip(config: BusConfig) {
    let topic = support::unique_name("sec");
    let bus = EventBus::from_config(config).await.expect("bus");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    bus.subscribe(
        &topic,
        move |d: Delivery| {
            tx.send(d.payload().clone()).unwrap();
            std::future::ready(Ok(()))
        },
        SubscribeOptions::new(),
    )
    .await
    .expect("subscribe");
    bus.publish(&topic, Message::new("hello").with_key("k"))
        .await
        .expect("publish");
    let got = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("the record came back")
        .unwrap();
    assert_eq!(&got[..], b"hello");
    bus.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_sha_512_over_tls() {
    let Some(kafka) = SecureKafka::shared() else {
        return;
    };
    round_trip(scram_config(kafka, secure_kafka::USER)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_over_tls() {
    let Some(kafka) = SecureKafka::shared() else {
        return;
    };
    let mut c = scram_config(kafka, secure_kafka::USER);
    c.kafka.sasl = Some(sasl(
        SaslMechanism::Plain,
        secure_kafka::USER,
        &kafka.plain_password(),
    ));
    round_trip(c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_a_client_certificate() {
    let Some(kafka) = SecureKafka::shared() else {
        return;
    };
    let (cert, key) = kafka.client_cert();
    let mut c = kafka_support::config(&kafka.mtls(), &support::unique_name("g"));
    c.kafka.tls = Some(KafkaTlsConfig {
        certificate_location: Some(cert),
        key_location: Some(key),
        ..tls(&kafka.ca())
    });
    round_trip(c).await;
}

/// Every log line of this test binary, for the check that no secret is
/// ever written.
fn captured_logs() -> &'static std::sync::Mutex<Vec<u8>> {
    static LOGS: std::sync::OnceLock<std::sync::Mutex<Vec<u8>>> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        struct Sink;
        impl std::io::Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                captured_logs().lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(|| Sink)
            .try_init();
        std::sync::Mutex::new(Vec::new())
    })
}

fn logs() -> String {
    String::from_utf8_lossy(&captured_logs().lock().unwrap()).into_owned()
}

/// Builds a bus that must not start; the error and how long it took.
async fn refused(config: BusConfig) -> (Error, Duration) {
    captured_logs();
    let t0 = std::time::Instant::now();
    let err = EventBus::from_config(config)
        .await
        .expect_err("the bus must not start");
    (err, t0.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_one_clear_error_without_the_secret() {
    let Some(kafka) = SecureKafka::shared() else {
        return;
    };
    captured_logs();
    for mechanism in [SaslMechanism::ScramSha512, SaslMechanism::Plain] {
        let wrong = format!("wrong-{}", support::unique_name("pw"));
        let mut c = scram_config(kafka, secure_kafka::USER);
        c.kafka.connect_timeout = CONNECT_TIMEOUT;
        c.kafka.sasl = Some(sasl(mechanism, secure_kafka::USER, &wrong));
        let (err, took) = refused(c).await;
        let text = err.to_string();
        eprintln!("{mechanism:?} after {took:?}: {text}");
        assert!(matches!(err, Error::Backend { .. }), "{err:?}");
        let name = match mechanism {
            SaslMechanism::Plain => "PLAIN",
            _ => "SCRAM-SHA-512",
        };
        assert!(text.contains(name), "names the mechanism: {text}");
        assert!(text.contains(&kafka.sasl()), "names the broker: {text}");
        assert!(text.contains(secure_kafka::USER), "names the user: {text}");
        assert!(text.contains("kafka.sasl"), "names the setting: {text}");
        assert!(!err.is_retryable(), "the same password fails again: {err}");
        assert!(
            took < FAIL_FAST,
            "refused credentials end build() at once, not after connect_timeout: {took:?}"
        );
        let logs = logs();
        for secret in [wrong.as_str(), kafka.scram_password()] {
            assert!(!text.contains(secret), "the error shows a password: {text}");
            assert!(!logs.contains(secret), "a log line shows a password");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_that_did_not_sign_the_broker_is_a_clear_tls_error() {
    let Some(kafka) = SecureKafka::shared() else {
        return;
    };
    let mut c = scram_config(kafka, secure_kafka::USER);
    c.kafka.connect_timeout = CONNECT_TIMEOUT;
    c.kafka.tls = Some(tls(&kafka.other_ca()));
    let (err, took) = refused(c).await;
    let text = err.to_string();
    eprintln!("after {took:?}: {text}");
    assert!(matches!(err, Error::Backend { .. }), "{err:?}");
    assert!(text.contains(&kafka.sasl()), "names the broker: {text}");
    assert!(text.contains("TLS"), "says it is TLS: {text}");
    assert!(
        text.contains("certificate"),
        "says the certificate was refused: {text}"
    );
    assert!(
        text.contains("kafka.tls.ca_location"),
        "names the setting: {text}"
    );
    assert!(!err.is_retryable(), "retrying cannot help: {err}");
    assert!(took < FAIL_FAST, "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_name_the_certificate_does_not_name_is_refused_unless_verification_is_off() {
    let Some(kafka) = SecureKafka::shared() else {
        return;
    };
    let mut c = scram_config(kafka, secure_kafka::USER);
    c.kafka.brokers = vec![kafka.mismatch()];
    c.kafka.connect_timeout = CONNECT_TIMEOUT;
    let (err, took) = refused(c.clone()).await;
    let text = err.to_string();
    eprintln!("after {took:?}: {text}");
    assert!(matches!(err, Error::Backend { .. }), "{err:?}");
    assert!(text.contains(&kafka.mismatch()), "names the broker: {text}");
    assert!(
        text.contains("kafka.tls.verify_hostname"),
        "names the setting: {text}"
    );
    assert!(!err.is_retryable(), "retrying cannot help: {err}");
    assert!(took < FAIL_FAST, "{took:?}");

    // Explicitly off: the same broker is accepted.
    c.kafka.tls.as_mut().unwrap().verify_hostname = false;
    round_trip(c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_requires_a_client_certificate_refuses_a_bus_without_one() {
    let Some(kafka) = SecureKafka::shared() else {
        return;
    };
    let mut c = kafka_support::config(&kafka.mtls(), &support::unique_name("g"));
    c.kafka.connect_timeout = CONNECT_TIMEOUT;
    c.kafka.tls = Some(tls(&kafka.ca()));
    let (err, took) = refused(c.clone()).await;
    let text = err.to_string();
    eprintln!("after {took:?}: {text}");
    assert!(matches!(err, Error::Backend { .. }), "{err:?}");
    assert!(text.contains(&kafka.mtls()), "names the broker: {text}");
    assert!(
        text.contains("kafka.tls.certificate_location"),
        "names the setting: {text}"
    );
    assert!(!err.is_retryable(), "retrying cannot help: {err}");
    assert!(took < FAIL_FAST, "{took:?}");

    // A certificate from a CA the broker does not trust: the same refusal.
    let (cert, key) = kafka.untrusted_client_cert();
    c.kafka.tls = Some(KafkaTlsConfig {
        certificate_location: Some(cert),
        key_location: Some(key),
        ..tls(&kafka.ca())
    });
    let (err, took) = refused(c).await;
    let text = err.to_string();
    assert!(
        text.contains("kafka.tls.certificate_location"),
        "names the setting: {text}"
    );
    assert!(took < FAIL_FAST, "{took:?}");
}

/// Subscribes `user` to a topic holding one record (written by a user who
/// may) and returns the bus, the subscribe result and the handled count.
async fn subscribe_as(
    kafka: &SecureKafka,
    user: &str,
    topic: &str,
) -> (
    EventBus,
    jxt_eventbus::Result<()>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    kafka_support::create_topic(&kafka.internal(), topic, 1).await;
    let writer = EventBus::from_config(scram_config(kafka, secure_kafka::USER))
        .await
        .unwrap();
    writer
        .publish(topic, Message::new("waiting").with_key("k"))
        .await
        .unwrap();
    writer.shutdown().await.unwrap();
    captured_logs();
    let mut c = scram_config(kafka, user);
    c.start_from = jxt_eventbus::config::StartFrom::Earliest;
    let bus = EventBus::from_config(c).await.expect("the bus connects");
    let handled = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = handled.clone();
    let result = bus
        .subscribe(
            topic,
            move |_d: Delivery| {
                h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                std::future::ready(Ok(()))
            },
            SubscribeOptions::new(),
        )
        .await;
    (bus, result, handled)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_without_read_on_the_topic_makes_the_consumer_unhealthy_with_the_reason() {
    let Some(kafka) = SecureKafka::shared() else {
        return;
    };
    let topic = support::unique_name("noread");
    let (bus, result, handled) =
        subscribe_as(kafka, secure_kafka::NO_TOPIC_READ_USER, &topic).await;
    // The group assigns the partition before any fetch is refused: the
    // subscription stands (or fails with the reason, if the refusal came
    // first), and health says why nothing is read.
    if let Err(e) = &result {
        assert!(e.to_string().contains("READ ACL"), "{e}");
    }
    let consumer = support::unhealthy_component(&bus, "consumer", WAIT).await;
    assert!(consumer.reason.contains("READ ACL"), "{consumer:?}");
    assert!(consumer.reason.contains(&topic), "{consumer:?}");
    assert!(bus.readiness().await.is_err(), "not ready while refused");
    assert_eq!(handled.load(Ordering::SeqCst), 0);
    let group = bus_group(&bus);
    assert_eq!(
        kafka_support::committed(&kafka.internal(), &group, &topic, 1),
        vec![None],
        "nothing was handled, so nothing is committed"
    );
    bus.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_without_read_on_the_group_is_refused_at_subscribe() {
    let Some(kafka) = SecureKafka::shared() else {
        return;
    };
    let topic = support::unique_name("nogroup");
    let t0 = std::time::Instant::now();
    let (bus, result, handled) =
        subscribe_as(kafka, secure_kafka::NO_GROUP_READ_USER, &topic).await;
    let took = t0.elapsed();
    let err = result.expect_err("the group is refused");
    let text = err.to_string();
    eprintln!("after {took:?}: {text}");
    assert!(matches!(err, Error::Subscribe { .. }), "{err:?}");
    assert!(text.contains(&topic), "names the topic: {text}");
    assert!(
        text.contains(&format!("READ ACL on group `{}`", bus_group(&bus))),
        "names the missing ACL: {text}"
    );
    assert!(took < WAIT, "{took:?}");
    assert_eq!(handled.load(Ordering::SeqCst), 0);
    // The subscription was withdrawn: the bus is not left half subscribed.
    let h = bus.health().await;
    assert_ne!(
        h.component("consumer").map(|c| c.state),
        Some(HealthState::Unhealthy),
        "{h:?}"
    );
    bus.shutdown().await.unwrap();
}

fn bus_group(bus: &EventBus) -> String {
    bus.config().group.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_write_on_the_dead_letter_topic_the_lane_waits_and_health_says_why() {
    let Some(kafka) = SecureKafka::shared() else {
        return;
    };
    let topic = kafka.dlq_denied_topic();
    let dlq = format!("{topic}.dlq");
    kafka_support::create_topic(&kafka.internal(), &topic, 1).await;
    kafka_support::create_topic(&kafka.internal(), &dlq, 1).await;
    captured_logs();
    let bus = EventBus::from_config(scram_config(kafka, secure_kafka::NO_DLQ_WRITE_USER))
        .await
        .expect("bus");
    let (tx, mut handled) = tokio::sync::mpsc::unbounded_channel();
    bus.subscribe(
        &topic,
        move |d: Delivery| {
            let text = String::from_utf8_lossy(d.payload()).to_string();
            std::future::ready(if text == "bad" {
                Err(jxt_eventbus::HandlerError::permanent("cannot handle this"))
            } else {
                tx.send(text).unwrap();
                Ok(())
            })
        },
        SubscribeOptions::new(),
    )
    .await
    .expect("subscribe");
    for payload in ["bad", "sentinel"] {
        bus.publish(&topic, Message::new(payload).with_key("k"))
            .await
            .expect("publish");
    }
    let waiting = support::unhealthy_component(&bus, "dead_letters", WAIT).await;
    eprintln!("{waiting:?}");
    assert!(waiting.reason.contains(&dlq), "{waiting:?}");
    assert!(
        waiting.reason.contains("WRITE ACL"),
        "says which right is missing: {waiting:?}"
    );
    assert!(
        handled.try_recv().is_err(),
        "the sentinel waits behind the record whose dead letter is not written"
    );
    let group = bus_group(&bus);
    assert_eq!(
        kafka_support::committed(&kafka.internal(), &group, &topic, 1),
        vec![None],
        "nothing is committed past the record that is not dead-lettered"
    );
    // A publish of its own to that topic says what is missing.
    let t0 = std::time::Instant::now();
    let err = bus
        .publish(&dlq, Message::new("direct"))
        .await
        .expect_err("not allowed to write");
    assert!(matches!(err, Error::Publish { .. }), "{err:?}");
    assert!(err.to_string().contains("WRITE ACL"), "{err}");
    assert!(err.to_string().contains(&dlq), "{err}");
    assert!(!err.is_retryable(), "{err}");
    assert!(t0.elapsed() < FAIL_FAST, "{:?}", t0.elapsed());

    // The operator grants WRITE: the dead letter is written in full and
    // the lane moves on.
    kafka.grant_dlq_write();
    let next = tokio::time::timeout(WAIT, handled.recv())
        .await
        .expect("the lane moved on once the write was allowed");
    assert_eq!(next.as_deref(), Some("sentinel"));
    let c = bus.health().await;
    let c = c.component("dead_letters").unwrap();
    assert_eq!(c.state, HealthState::Healthy, "{c:?}");
    let (payload, pointer) = first_record(&kafka.internal(), &dlq);
    assert_eq!(payload, b"bad", "the dead letter is the full record");
    assert!(!pointer, "a full dead letter, not a pointer record");
    bus.shutdown().await.unwrap();
    assert!(
        !logs().contains(kafka.scram_password()),
        "a log line shows the password"
    );
}

/// The payload of the first record of partition 0 of `topic`, and whether
/// it is a dead-letter pointer record.
fn first_record(brokers: &str, topic: &str) -> (Vec<u8>, bool) {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    use rdkafka::message::{Headers as _, Message as _};
    let reader: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", support::unique_name("reader"))
        .create()
        .expect("reader");
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::Beginning)
        .unwrap();
    reader.assign(&tpl).unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some(m) = reader.poll(Duration::from_millis(200)) {
            let m = m.expect("a record");
            let pointer = m
                .headers()
                .is_some_and(|h| h.iter().any(|h| h.key == "x-dlq-pointer"));
            return (m.payload().unwrap_or_default().to_vec(), pointer);
        }
        assert!(std::time::Instant::now() < deadline, "no record in {topic}");
    }
}

/// The YAML block after `<!-- kafka-secure-example: NAME -->` in
/// docs/configuration.md.
fn documented_example(name: &str) -> String {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md"),
    )
    .expect("docs/configuration.md");
    let marker = format!("<!-- kafka-secure-example: {name} -->");
    let after = &doc[doc.find(&marker).expect("the example's marker") + marker.len()..];
    let start = after.find("```yaml\n").expect("a yaml block") + "```yaml\n".len();
    let block = &after[start..];
    block[..block.find("```").expect("the block's end")].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_examples_connect() {
    let Some(kafka) = SecureKafka::shared() else {
        return;
    };
    let (cert, key) = kafka.client_cert();
    let point_at_the_test_broker = |yaml: String| {
        yaml.replace("kafka-1.example.com:9094", &kafka.sasl())
            .replace("kafka-1.example.com:9093", &kafka.mtls())
            .replace("/etc/eventbus/kafka-ca.pem", &kafka.ca())
            .replace("/etc/eventbus/billing.pem", &cert)
            .replace("/etc/eventbus/billing-key.pem", &key)
            .replace(
                "username: billing",
                &format!("username: {}", secure_kafka::USER),
            )
            .replace("change-me", kafka.scram_password())
            .replace(
                "group: billing",
                &format!("group: {}", support::unique_name("g")),
            )
    };
    for name in ["scram", "mtls"] {
        let yaml = point_at_the_test_broker(documented_example(name));
        let config = BusConfig::from_yaml_str(&yaml)
            .unwrap_or_else(|e| panic!("the {name} example loads: {e}\n{yaml}"));
        round_trip(config).await;
    }
}
