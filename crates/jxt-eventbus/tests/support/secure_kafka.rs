//! A private single-node Kafka (KRaft) with secured listeners, shared by the
//! tests of one test binary, so that the bus's TLS, SASL and ACL handling is
//! tested against a real broker rather than only as configuration.
//!
//! Listeners, all on 127.0.0.1 and free ports:
//!
//! | listener | protocol | for |
//! |----------|----------|-----|
//! | `CONTROLLER` | PLAINTEXT | the KRaft controller |
//! | `INTERNAL` | PLAINTEXT | inter-broker and the tests' own admin requests (a super user) |
//! | `SASL` | SASL_SSL, SCRAM-SHA-512 and PLAIN | the bus with a password |
//! | `MTLS` | SSL, client certificate required | the bus with a certificate |
//! | `MISMATCH` | SASL_SSL, SCRAM-SHA-512, with a certificate for another host | hostname verification |
//!
//! The certificates (a CA, the broker's for `127.0.0.1` and `localhost`,
//! one for `wrong-host.invalid`, a client's, and a second CA that signed
//! nothing the broker shows) are made with `rcgen` into a temporary
//! directory. SCRAM users are written by the storage tool
//! (`kafka-storage format --add-scram`), PLAIN users by the listener's JAAS
//! configuration; the `StandardAuthorizer` checks ACLs made with the admin
//! API (`kafka-acls`' `AclCommand`, run through `scripts/services kafka-tool`
//! on the cached Kafka jars).
//!
//! Principals and what they may do:
//!
//! | principal | ACLs |
//! |-----------|------|
//! | `alice` (SCRAM and PLAIN), `eventbus-client` (the client certificate) | everything on every topic and group |
//! | `noread` | everything, but READ on topics denied |
//! | `nogroup` | everything, but READ on groups denied |
//! | `nodlq` | everything, but WRITE on [`SecureKafka::dlq_denied_topic`]`.dlq` denied |
//!
//! The broker runs under a small shell watchdog that holds the read end of
//! a pipe from the test process: when the test binary exits (or dies), the
//! pipe closes and the watchdog kills the broker it started and removes the
//! temporary directory. Without Java or the Kafka jars the tests are
//! skipped, or fail under `EVENTBUS_DEV_REQUIRE_BROKERS=1`.

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// How long the broker may take to start on a loaded machine.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The SCRAM-SHA-512 and PLAIN user with every right.
pub const USER: &str = "alice";
/// The principal of the client certificate (its CN, by the broker's
/// `ssl.principal.mapping.rules`).
pub const CERT_USER: &str = "eventbus-client";
/// A user without READ on topics.
pub const NO_TOPIC_READ_USER: &str = "noread";
/// A user without READ on groups.
pub const NO_GROUP_READ_USER: &str = "nogroup";
/// A user without WRITE on one dead-letter topic.
pub const NO_DLQ_WRITE_USER: &str = "nodlq";

/// The shared secured broker.
pub struct SecureKafka {
    dir: PathBuf,
    /// The watchdog's stdin: closing it (at exit) stops the broker.
    _watchdog_stdin: Mutex<ChildStdin>,
    _watchdog: Mutex<Child>,
    internal_port: u16,
    sasl_port: u16,
    mtls_port: u16,
    mismatch_port: u16,
    run: String,
    password: String,
}

impl std::fmt::Debug for SecureKafka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecureKafka")
            .field("dir", &self.dir)
            .field("sasl", &self.sasl())
            .finish_non_exhaustive()
    }
}

static NODE: OnceLock<Option<SecureKafka>> = OnceLock::new();

impl SecureKafka {
    /// The broker of this test binary, started by the first caller. `None`
    /// (after a skip note) when Java or the Kafka jars are missing and
    /// `EVENTBUS_DEV_REQUIRE_BROKERS` is not set.
    pub fn shared() -> Option<&'static SecureKafka> {
        NODE.get_or_init(SecureKafka::start).as_ref()
    }

    fn start() -> Option<SecureKafka> {
        if let Err(why) = java_ready() {
            if super::brokers_required() {
                panic!("EVENTBUS_DEV_REQUIRE_BROKERS=1 but the secured Kafka cannot start: {why}");
            }
            let name = std::thread::current().name().unwrap_or("test").to_owned();
            let _ = writeln!(std::io::stderr(), "SKIPPED {name}: {why}");
            return None;
        }
        let t0 = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("eventbus-secure-kafka-")
            .tempdir()
            .expect("a state directory")
            .keep();
        Pki::write(&dir);
        let ports = [(); 5].map(|()| free_port());
        let [controller_port, internal_port, sasl_port, mtls_port, mismatch_port] = ports;
        let run = super::unique_name("sec");
        let password = format!("scram-pw-{}", super::unique_name("s"));
        let props = server_properties(
            &dir,
            controller_port,
            internal_port,
            sasl_port,
            mtls_port,
            mismatch_port,
            &password,
        );
        std::fs::write(dir.join("server.properties"), props).expect("write server.properties");

        let cluster_id = match kafka_tool_ready() {
            Ok(id) => id,
            Err(why) => panic!("{why}"),
        };
        let mut format = vec![
            "kafka.tools.StorageTool".to_string(),
            "format".into(),
            // `=`: a random id may start with `-`.
            format!("--cluster-id={cluster_id}"),
            "-c".into(),
            dir.join("server.properties").display().to_string(),
        ];
        for user in [
            USER,
            NO_TOPIC_READ_USER,
            NO_GROUP_READ_USER,
            NO_DLQ_WRITE_USER,
        ] {
            format.push("--add-scram".into());
            format.push(format!("SCRAM-SHA-512=[name={user},password={password}]"));
        }
        kafka_tool(&format, &dir).expect("kafka-storage format");

        // The watchdog: starts the broker, waits for its stdin to close,
        // then kills the broker it started (by pid) and removes the state.
        let mut watchdog = Command::new("bash")
            .arg("-c")
            .arg(
                r#"dir=$1; shift
"$@" >"$dir/kafka.log" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$dir/pid"
read -r _ || true
kill -KILL "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
rm -rf "$dir""#,
            )
            .arg("secure-kafka-watchdog")
            .arg(&dir)
            .arg("bash")
            .arg(script())
            .arg("kafka-tool")
            .arg("kafka.Kafka")
            .arg(dir.join("server.properties"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the broker's watchdog");
        let stdin = watchdog.stdin.take().expect("watchdog stdin");
        let node = SecureKafka {
            dir,
            _watchdog_stdin: Mutex::new(stdin),
            _watchdog: Mutex::new(watchdog),
            internal_port,
            sasl_port,
            mtls_port,
            mismatch_port,
            run,
            password,
        };
        node.wait_listening();
        node.create_acls();
        let _ = writeln!(
            std::io::stderr(),
            "secured Kafka ready in {:.1}s (SASL_SSL {}, mTLS {}, state {})",
            t0.elapsed().as_secs_f64(),
            node.sasl(),
            node.mtls(),
            node.dir.display()
        );
        Some(node)
    }

    fn wait_listening(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        for port in [
            self.internal_port,
            self.sasl_port,
            self.mtls_port,
            self.mismatch_port,
        ] {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "the secured Kafka did not listen on {port} within {START_TIMEOUT:?}:\n{}",
                    self.log()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    fn create_acls(&self) {
        let all = format!(
            "--allow-principal User:{USER} --allow-principal User:{CERT_USER} \
             --allow-principal User:{NO_TOPIC_READ_USER} --allow-principal User:{NO_GROUP_READ_USER} \
             --allow-principal User:{NO_DLQ_WRITE_USER} --operation All --topic * --group *"
        );
        let no_topic_read =
            format!("--deny-principal User:{NO_TOPIC_READ_USER} --operation Read --topic *");
        let no_group_read =
            format!("--deny-principal User:{NO_GROUP_READ_USER} --operation Read --group *");
        let no_dlq_write = format!(
            "--deny-principal User:{NO_DLQ_WRITE_USER} --operation Write --topic {}.dlq",
            self.dlq_denied_topic()
        );
        // One JVM per rule; in parallel, as each spends most of its time
        // starting up.
        let handles: Vec<_> = [all, no_topic_read, no_group_read, no_dlq_write]
            .into_iter()
            .map(|rule| {
                let bootstrap = self.internal();
                let dir = self.dir.clone();
                std::thread::spawn(move || {
                    let mut args = vec![
                        "org.apache.kafka.tools.AclCommand".to_string(),
                        "--bootstrap-server".into(),
                        bootstrap,
                        "--add".into(),
                        "--force".into(),
                    ];
                    args.extend(rule.split(' ').filter(|s| !s.is_empty()).map(String::from));
                    kafka_tool(&args, &dir)
                })
            })
            .collect();
        for h in handles {
            if let Err(e) = h.join().expect("ACL thread") {
                panic!("creating ACLs failed: {e}\n{}", self.log());
            }
        }
    }

    /// Removes the deny rule on `<dlq_denied_topic>.dlq`, as an operator
    /// granting the missing right would.
    pub fn grant_dlq_write(&self) {
        let args: Vec<String> = [
            "org.apache.kafka.tools.AclCommand",
            "--bootstrap-server",
            &self.internal(),
            "--remove",
            "--force",
            "--deny-principal",
            &format!("User:{NO_DLQ_WRITE_USER}"),
            "--operation",
            "Write",
            "--topic",
            &format!("{}.dlq", self.dlq_denied_topic()),
        ]
        .map(String::from)
        .to_vec();
        kafka_tool(&args, &self.dir).expect("remove the ACL");
    }

    /// The PLAINTEXT listener, where every request is a super user's: for
    /// the tests' own topic creation and inspection.
    pub fn internal(&self) -> String {
        format!("127.0.0.1:{}", self.internal_port)
    }

    /// The SASL_SSL listener (SCRAM-SHA-512 and PLAIN).
    pub fn sasl(&self) -> String {
        format!("127.0.0.1:{}", self.sasl_port)
    }

    /// The SSL listener that requires a client certificate.
    pub fn mtls(&self) -> String {
        format!("127.0.0.1:{}", self.mtls_port)
    }

    /// A SASL_SSL listener (SCRAM-SHA-512) whose certificate names
    /// `wrong-host.invalid` only.
    pub fn mismatch(&self) -> String {
        format!("127.0.0.1:{}", self.mismatch_port)
    }

    /// The password of every SCRAM user.
    pub fn scram_password(&self) -> &str {
        &self.password
    }

    /// The password of [`USER`] for PLAIN.
    pub fn plain_password(&self) -> String {
        format!("plain-{}", self.password)
    }

    /// The topic whose dead-letter topic [`NO_DLQ_WRITE_USER`] may not
    /// write to.
    pub fn dlq_denied_topic(&self) -> String {
        format!("{}-nodlq", self.run)
    }

    /// The CA that signed the broker's certificates.
    pub fn ca(&self) -> String {
        self.file("ca.pem")
    }

    /// A CA that signed nothing the broker shows.
    pub fn other_ca(&self) -> String {
        self.file("other-ca.pem")
    }

    /// The client certificate (CN [`CERT_USER`]) and its key.
    pub fn client_cert(&self) -> (String, String) {
        (self.file("client.pem"), self.file("client-key.pem"))
    }

    /// The client certificate of a CA the broker does not trust.
    pub fn untrusted_client_cert(&self) -> (String, String) {
        (
            self.file("untrusted-client.pem"),
            self.file("untrusted-client-key.pem"),
        )
    }

    fn file(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// The broker's log so far (warnings and errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("kafka.log")).unwrap_or_default()
    }
}

fn server_properties(
    dir: &Path,
    controller: u16,
    internal: u16,
    sasl: u16,
    mtls: u16,
    mismatch: u16,
    password: &str,
) -> String {
    let d = dir.display();
    let scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;";
    format!(
        "# Written by the tests' secure_kafka support; throw-away broker.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller}
controller.listener.names=CONTROLLER
listeners=CONTROLLER://127.0.0.1:{controller},INTERNAL://127.0.0.1:{internal},SASL://127.0.0.1:{sasl},MTLS://127.0.0.1:{mtls},MISMATCH://127.0.0.1:{mismatch}
advertised.listeners=INTERNAL://127.0.0.1:{internal},SASL://127.0.0.1:{sasl},MTLS://127.0.0.1:{mtls},MISMATCH://127.0.0.1:{mismatch}
listener.security.protocol.map=CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT,SASL:SASL_SSL,MTLS:SSL,MISMATCH:SASL_SSL
inter.broker.listener.name=INTERNAL
log.dirs={d}/data
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:ANONYMOUS
allow.everyone.if.no.acl.found=false
ssl.keystore.type=PEM
ssl.keystore.location={d}/broker-keystore.pem
ssl.truststore.type=PEM
ssl.truststore.location={d}/ca.pem
ssl.principal.mapping.rules=RULE:^CN=([^,]+)$/$1/,DEFAULT
listener.name.mtls.ssl.client.auth=required
sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN
listener.name.sasl.sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN
listener.name.sasl.scram-sha-512.sasl.jaas.config={scram}
listener.name.sasl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_{USER}=\"plain-{password}\";
listener.name.mismatch.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.mismatch.scram-sha-512.sasl.jaas.config={scram}
listener.name.mismatch.ssl.keystore.type=PEM
listener.name.mismatch.ssl.keystore.location={d}/mismatch-keystore.pem
auto.create.topics.enable=false
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
num.recovery.threads.per.data.dir=1
"
    )
}

/// Runs a Kafka command-line class with the cached jars
/// (`scripts/services kafka-tool`); its output on failure.
fn kafka_tool(args: &[String], dir: &Path) -> Result<String, String> {
    let out = Command::new("bash")
        .arg(script())
        .arg("kafka-tool")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| format!("cannot run scripts/services: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("{args:?} failed ({}):\n{text}", out.status))
    }
}

/// Whether there is a Java runtime for the broker (scripts/bootstrap
/// installs one).
fn java_ready() -> Result<(), String> {
    let java = Command::new("java").arg("-version").output();
    if java.is_ok_and(|o| o.status.success()) {
        Ok(())
    } else {
        Err("no `java` on PATH (scripts/bootstrap installs it)".into())
    }
}

/// A new cluster id from the storage tool; this also fetches the Kafka jars
/// into the cache if `scripts/services up` has not yet.
fn kafka_tool_ready() -> Result<String, String> {
    let out = Command::new("bash")
        .arg(script())
        .args(["kafka-tool", "kafka-storage", "random-uuid"])
        .output()
        .map_err(|e| format!("cannot run scripts/services: {e}"))?;
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() && !id.is_empty() {
        Ok(id)
    } else {
        Err(format!(
            "`scripts/services kafka-tool kafka-storage random-uuid` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/services")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The test certificates, written as PEM files.
struct Pki;

impl Pki {
    fn write(dir: &Path) {
        let (ca, ca_pem) = new_ca("jxt-eventbus kafka test CA");
        let (other, other_pem) = new_ca("jxt-eventbus other test CA");
        write(dir, "ca.pem", &ca_pem);
        write(dir, "other-ca.pem", &other_pem);
        let broker = leaf(
            &ca,
            &["127.0.0.1", "localhost"],
            "kafka test broker",
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        // Kafka's PEM key store: the private key (PKCS#8) and the chain.
        write(
            dir,
            "broker-keystore.pem",
            &format!("{}{}", broker.1, broker.0),
        );
        let wrong = leaf(
            &ca,
            &["wrong-host.invalid"],
            "kafka test broker with another name",
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        write(
            dir,
            "mismatch-keystore.pem",
            &format!("{}{}", wrong.1, wrong.0),
        );
        let client = leaf(&ca, &[], CERT_USER, ExtendedKeyUsagePurpose::ClientAuth);
        write(dir, "client.pem", &client.0);
        write(dir, "client-key.pem", &client.1);
        let untrusted = leaf(&other, &[], CERT_USER, ExtendedKeyUsagePurpose::ClientAuth);
        write(dir, "untrusted-client.pem", &untrusted.0);
        write(dir, "untrusted-client-key.pem", &untrusted.1);
    }
}

fn new_ca(name: &str) -> (Issuer<'static, KeyPair>, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (Issuer::new(params, key), cert.pem())
}

/// A certificate (PEM) and its key (PEM, PKCS#8) signed by `issuer`.
fn leaf(
    issuer: &Issuer<'static, KeyPair>,
    sans: &[&str],
    cn: &str,
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let mut p =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.use_authority_key_identifier_extension = true;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![usage];
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn write(dir: &Path, name: &str, pem: &str) {
    std::fs::write(dir.join(name), pem).expect("write PEM file");
}
