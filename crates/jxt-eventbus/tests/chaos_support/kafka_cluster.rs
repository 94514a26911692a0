//! A private 3-node Kafka cluster (KRaft, every node broker and controller)
//! for the node-loss scenario, started by `scripts/services up kafka
//! --kafka-brokers 3` in its own state directory on free ports, so the
//! shared broker other tests use is never touched. `scripts/services`
//! formats each node's storage with one cluster id and sets replication
//! factor 3 and `min.insync.replicas` 2 for a cluster of three.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;

/// Heap of each node: three nodes share the machine with the shared broker.
const NODE_HEAP: &str = "384m";

pub struct KafkaCluster {
    state: tempfile::TempDir,
    /// Node `i` (from 1) listens on `kafka_port + i - 1`.
    kafka_port: u16,
    controller_port: u16,
    pub nodes: u32,
    /// Bootstrap servers: every node.
    pub brokers: String,
}

/// `n` consecutive free ports, none of them in `avoid`.
fn free_ports(n: u16, avoid: &[u16]) -> u16 {
    for _ in 0..100 {
        let base = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        if base > u16::MAX - n {
            continue;
        }
        let ports: Vec<u16> = (base..base + n).collect();
        let free = ports
            .iter()
            .all(|p| !avoid.contains(p) && TcpListener::bind(("127.0.0.1", *p)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no {n} consecutive free ports");
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/services")
}

impl KafkaCluster {
    /// Starts `nodes` nodes and waits until every one answers metadata
    /// requests. Panics with the script's output when it cannot.
    pub fn start(nodes: u32) -> Self {
        let state = tempfile::Builder::new()
            .prefix("eventbus-kafka-cluster-")
            .tempdir()
            .expect("a state directory");
        let n = nodes as u16;
        let kafka_port = free_ports(n, &[]);
        let avoid: Vec<u16> = (kafka_port..kafka_port + n).collect();
        let controller_port = free_ports(n, &avoid);
        let brokers = (0..n)
            .map(|i| format!("127.0.0.1:{}", kafka_port + i))
            .collect::<Vec<_>>()
            .join(",");
        let c = KafkaCluster {
            state,
            kafka_port,
            controller_port,
            nodes,
            brokers,
        };
        c.run(&["up", "kafka", "--kafka-brokers", &nodes.to_string()]);
        c
    }

    /// Kills node `i` (SIGKILL): no clean shutdown, as in a crash.
    pub fn kill(&self, i: u32) {
        self.run(&["kafka-node", &i.to_string(), "kill"]);
    }

    /// Starts node `i` again on its ports and data, and waits until every
    /// node answers metadata requests.
    pub fn start_node(&self, i: u32) {
        self.run(&["kafka-node", &i.to_string(), "start"]);
    }

    /// Creates `topic` with replication factor 3 and `min.insync.replicas`
    /// 2: a write is acknowledged (acks=all) once two replicas hold it, so
    /// one node may die without losing it.
    pub async fn create_topic(&self, topic: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .create()
            .expect("admin client");
        let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(3))
            .set("min.insync.replicas", "2");
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        for r in admin
            .create_topics([&new], &opts)
            .await
            .expect("create_topics")
        {
            r.unwrap_or_else(|(name, code)| panic!("creating topic {name} failed: {code:?}"));
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("bash");
        cmd.arg(script())
            .args(args)
            .env("EVENTBUS_DEV_SERVICES_DIR", self.state.path())
            .env("EVENTBUS_DEV_KAFKA_PORT", self.kafka_port.to_string())
            .env(
                "EVENTBUS_DEV_KAFKA_CONTROLLER_PORT",
                self.controller_port.to_string(),
            )
            .env("EVENTBUS_DEV_KAFKA_HEAP", NODE_HEAP);
        cmd
    }

    fn run(&self, args: &[&str]) {
        let out = self.command(args).output().expect("scripts/services runs");
        assert!(
            out.status.success(),
            "scripts/services {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for KafkaCluster {
    fn drop(&mut self) {
        // Also on a failed test: never leave a node behind.
        let _ = self.command(&["down", "kafka"]).output();
    }
}
