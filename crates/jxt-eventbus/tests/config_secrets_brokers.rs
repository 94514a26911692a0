//! Bad credentials against real brokers: the errors, the health reasons
//! (and `/status`) and
//! every log line (captured at TRACE, the clients' own included) keep the
//! planted secret out. Kafka runs on the shared broker; NATS on private
//! servers (one that requires a password, one that does not).

mod nats_support;
mod support;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use jxt_eventbus::{BusConfig, EventBus};

const PLANT: &str = "918273645";

/// Every log line of this test binary.
fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || LogWriter(writer.clone()))
            .init();
        buf
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn assert_hidden(case: &str, shown: &str) {
    assert!(
        !shown.contains(PLANT),
        "{case}: the secret is shown in {shown}"
    );
}

fn assert_logs_hide_it(logs: &Mutex<Vec<u8>>) {
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(!text.is_empty(), "the logs were captured");
    for line in text.lines() {
        assert_hidden("log", line);
    }
}

#[cfg(feature = "kafka")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_sasl_against_a_plaintext_listener_hides_the_password() {
    let logs = logs();
    let Some(brokers) = support::kafka_brokers() else {
        return;
    };
    let config = BusConfig::from_yaml_str(&format!(
        "backend: kafka\ngroup: {}\nkafka:\n  brokers: [{brokers}]\n  connect_timeout: 3s\n  sasl:\n    mechanism: plain\n    username: bob\n    password: {PLANT}\n",
        support::unique_name("secret")
    ))
    .unwrap();
    let e = EventBus::from_config(config)
        .await
        .expect_err("SASL on a plaintext listener fails");
    assert_hidden("error", &e.to_string());
    assert_hidden("error", &format!("{e:?}"));
    assert_logs_hide_it(&logs);
}

#[cfg(feature = "nats")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_bad_credentials_hide_the_password() {
    let logs = logs();
    let Some(server) = nats_support::server::NatsServer::start(
        "authorization {\n  user: bob\n  password: right\n}\n",
    ) else {
        return;
    };
    let with_url = |url: String| {
        let mut c = nats_support::config(&url, "secret");
        c.nats.connect_timeout = Duration::from_secs(2);
        c
    };
    let url = server
        .url()
        .replace("nats://", &format!("nats://bob:{PLANT}@"));
    let mut password = with_url(server.url());
    password.nats.auth.user = Some("bob".into());
    password.nats.auth.password = Some(jxt_eventbus::config::Secret::new(PLANT));
    let dead = format!("nats://bob:{PLANT}@127.0.0.1:1");
    for (case, config) in [
        ("password in the URL", with_url(url)),
        ("password field", password),
        ("no server", with_url(dead)),
    ] {
        let e = EventBus::from_config(config)
            .await
            .expect_err("bad credentials fail");
        assert_hidden(case, &e.to_string());
        assert_hidden(case, &format!("{e:?}"));
    }
    assert_logs_hide_it(&logs);
}

#[cfg(feature = "nats")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_health_reasons_mask_url_credentials() {
    let logs = logs();
    // A server without authorization accepts any credentials.
    let Some(mut server) = nats_support::server::NatsServer::start("") else {
        return;
    };
    let url = server
        .url()
        .replace("nats://", &format!("nats://bob:{PLANT}@"));
    let mut config = nats_support::config(&url, "secret");
    config.health.status.show_error_messages = true;
    let bus = EventBus::from_config(config).await.expect("bus");
    server.kill();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let shown = format!("{:?}", bus.health().await);
        assert_hidden("health", &shown);
        if shown.contains("not connected") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "health never reported the lost server: {shown}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    #[cfg(feature = "http")]
    {
        let server = jxt_eventbus::http::serve(bus.clone(), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let status = support::http_get::get(server.local_addr(), "/status").await;
        assert!(status.body.contains("not connected"), "{}", status.body);
        assert_hidden("/status", &status.body);
    }
    bus.shutdown().await.ok();
    assert_logs_hide_it(&logs);
}
