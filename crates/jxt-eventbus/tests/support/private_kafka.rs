//! A private single-node Kafka for tests that stop and start the broker,
//! started by `scripts/services` in its own state directory on free ports so
//! the shared broker other tests use is never touched.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;

pub struct PrivateKafka {
    state: tempfile::TempDir,
    kafka_port: u16,
    controller_port: u16,
    /// Bootstrap servers of the private broker.
    pub brokers: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/services")
}

impl PrivateKafka {
    /// Starts the broker and waits until it answers (as `scripts/services up`
    /// does). Panics with the script's output when it cannot.
    pub fn start() -> Self {
        let state = tempfile::Builder::new()
            .prefix("eventbus-private-kafka-")
            .tempdir()
            .expect("a state directory");
        let kafka_port = free_port();
        let k = PrivateKafka {
            state,
            kafka_port,
            controller_port: free_port(),
            brokers: format!("127.0.0.1:{kafka_port}"),
        };
        k.run(&["up", "kafka"]);
        k
    }

    /// Stops the broker (SIGTERM, waits for it to exit).
    pub fn stop(&self) {
        self.run(&["kafka-node", "1", "stop"]);
    }

    /// Kills the broker (SIGKILL): no clean shutdown, as in a crash.
    pub fn kill(&self) {
        self.run(&["kafka-node", "1", "kill"]);
    }

    /// Starts it again on the same ports and data, and waits until it answers.
    pub fn restart(&self) {
        self.run(&["kafka-node", "1", "start"]);
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("bash")
            .arg(script())
            .args(args)
            .env("EVENTBUS_DEV_SERVICES_DIR", self.state.path())
            .env("EVENTBUS_DEV_KAFKA_PORT", self.kafka_port.to_string())
            .env(
                "EVENTBUS_DEV_KAFKA_CONTROLLER_PORT",
                self.controller_port.to_string(),
            )
            .output()
            .expect("scripts/services runs");
        assert!(
            out.status.success(),
            "scripts/services {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for PrivateKafka {
    fn drop(&mut self) {
        // Also on a failed test: never leave a broker behind.
        let _ = Command::new("bash")
            .arg(script())
            .args(["down", "kafka"])
            .env("EVENTBUS_DEV_SERVICES_DIR", self.state.path())
            .env("EVENTBUS_DEV_KAFKA_PORT", self.kafka_port.to_string())
            .env(
                "EVENTBUS_DEV_KAFKA_CONTROLLER_PORT",
                self.controller_port.to_string(),
            )
            .output();
    }
}
