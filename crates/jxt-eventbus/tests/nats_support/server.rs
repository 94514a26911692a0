//! A private nats-server for tests that must stop, restart or reconfigure
//! the server: they never touch the shared one from `scripts/services`.
//!
//! The binary is `EVENTBUS_DEV_NATS_SERVER_BIN`, else the one `scripts/services`
//! built into its cache (`~/.cache/jxt-eventbus/nats/<version>/nats-server`,
//! moved by `EVENTBUS_DEV_CACHE_DIR` or `XDG_CACHE_HOME`), else `nats-server` on
//! `PATH`. Without one the test is skipped (or fails under
//! `EVENTBUS_DEV_REQUIRE_BROKERS=1`).

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A nats-server child process with its own port, config and store.
#[derive(Debug)]
pub struct NatsServer {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server with JetStream (file store, every write synced, so a
    /// killed server keeps what it acknowledged) plus `extra` configuration
    /// lines. `None` when no nats-server binary is found.
    pub fn start(extra: &str) -> Option<NatsServer> {
        Self::start_with(extra, true)
    }

    /// As [`NatsServer::start`], with or without JetStream.
    pub fn start_with(extra: &str, jetstream: bool) -> Option<NatsServer> {
        let Some(bin) = binary() else {
            let why = "no nats-server binary (set EVENTBUS_DEV_NATS_SERVER_BIN, or run \
                       `scripts/services up nats` once to build it)";
            if crate::support::brokers_required() {
                panic!("EVENTBUS_DEV_REQUIRE_BROKERS=1 but {why}");
            }
            let name = std::thread::current().name().unwrap_or("test").to_owned();
            let _ = writeln!(std::io::stderr(), "SKIPPED {name}: {why}");
            return None;
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let store = dir.path().join("store");
        let js = if jetstream {
            format!(
                "jetstream {{\n  store_dir: {store:?}\n  sync_interval: always\n  max_memory_store: 64MB\n  max_file_store: 1GB\n}}\n"
            )
        } else {
            String::new()
        };
        let config =
            format!("server_name: jxt-test-{port}\nlisten: 127.0.0.1:{port}\n{js}{extra}\n");
        std::fs::write(dir.path().join("nats.conf"), config).expect("write config");
        let mut server = NatsServer {
            bin,
            dir,
            port,
            child: None,
        };
        server.spawn();
        Some(server)
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL): no shutdown, no flush.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same store.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("nats.log")).expect("log file");
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(self.dir.path().join("nats.conf"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("nats-server exited ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen within 30s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn binary() -> Option<PathBuf> {
    if let Ok(bin) = std::env::var("EVENTBUS_DEV_NATS_SERVER_BIN") {
        if !bin.trim().is_empty() {
            return Some(PathBuf::from(bin));
        }
    }
    let cache = std::env::var_os("EVENTBUS_DEV_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| Path::new(&d).join("jxt-eventbus")))
        .or_else(|| std::env::var_os("HOME").map(|d| Path::new(&d).join(".cache/jxt-eventbus")));
    if let Some(cache) = cache {
        let mut found: Vec<PathBuf> = std::fs::read_dir(cache.join("nats"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("nats-server"))
            .filter(|p| p.is_file())
            .collect();
        found.sort();
        if let Some(bin) = found.pop() {
            return Some(bin);
        }
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("nats-server"))
            .find(|p| p.is_file())
    })
}
