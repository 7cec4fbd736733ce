//! Fixtures for tests against real PostgreSQL and NATS on loopback.
//!
//! - [`TestDb`]: a fresh database per test (created from `CC_TEST_DATABASE_URL`, default
//!   `postgres://postgres@127.0.0.1:5432/postgres`), dropped by the test command's cleanup.
//! - [`NatsServer`]: a `nats-server` with JetStream per test on a free port with its own store
//!   directory; it can be stopped and restarted on the same port to test reconnection
//!   ([`NatsSetup::tls`]: TLS with client certificates).
//! - [`Nats`]: the NATS of a test, one server or a three-node cluster on loopback
//!   ([`NatsShape::Cluster3`]), each node configured by the product's node file
//!   `infra/k8s/nats-cluster.conf`, as Kubernetes, docker-compose and scripts/nats-cluster do.
//! - [`tls::Certs`]: a CA and certificates made at test time; [`tls::PgServer`]: a PostgreSQL of
//!   the test's own (TLS only, or plain and restartable).
//! - [`decider`]: the `given(events).when(command).then(events | refusal)` harness of every
//!   domain core.

pub mod decider;
pub mod history;
pub mod tls;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

/// A database of its own for one test.
pub struct TestDb {
    pub pool: PgPool,
    pub url: String,
    pub name: String,
}

fn admin_url() -> String {
    std::env::var("CC_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

impl TestDb {
    pub async fn new() -> TestDb {
        Self::new_on(&admin_url()).await
    }

    /// A fresh database on the server of `admin_url` (e.g. a [`tls::PgServer`] of the test's).
    pub async fn new_on(admin_url: &str) -> TestDb {
        let admin: PgConnectOptions = admin_url
            .parse()
            .expect("CC_TEST_DATABASE_URL is a PostgreSQL URL");
        let name = format!("cc_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = admin
            .connect()
            .await
            .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL at {admin_url}: {e}"));
        sqlx::query(&format!("create database {name}"))
            .execute(&mut conn)
            .await
            .expect("create test database");
        // A test that leaves a transaction open would hold back every catch-up reader of the
        // cluster (they read below the oldest running transaction): cap how long that can last.
        let opts = admin
            .clone()
            .database(&name)
            .options([("idle_in_transaction_session_timeout", "5000")]);
        let url = opts.to_url_lossy().to_string();
        let pool = PgPoolOptions::new()
            .max_connections(20)
            .connect_with(opts)
            .await
            .expect("connect to test database");
        TestDb { pool, url, name }
    }
}

/// A nats-server with JetStream, just for one test.
pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    store: PathBuf,
    setup: NatsSetup,
    /// As a node of a cluster: its name, route port and the route ports of every node.
    node: Option<ClusterNode>,
}

#[derive(Debug, Clone)]
struct ClusterNode {
    name: String,
    route_port: u16,
    routes: Vec<u16>,
    /// The monitoring port (`/healthz`: JetStream current with the cluster).
    http_port: u16,
}

/// The product's configuration of one cluster node (server name, cluster routes, the
/// permissions included), filled in from each node's environment.
pub const NATS_CLUSTER_CONF: &str = include_str!("../../../infra/k8s/nats-cluster.conf");

/// How a test's nats-server is configured beyond the defaults (`NatsServer::start_with`).
#[derive(Debug, Clone, Default)]
pub struct NatsSetup {
    /// A configuration file's text (e.g. the authorization block of `callcenter nats-config`).
    pub config: Option<String>,
    /// Environment variables of the server (the passwords the configuration refers to).
    pub env: Vec<(String, String)>,
    /// More command-line arguments (e.g. `--tls ...`).
    pub args: Vec<String>,
    /// The user and password of the test's own clients ([`NatsServer::login`]).
    pub login: Option<(String, String)>,
    /// The URL scheme (`nats` or `tls`).
    pub scheme: Option<String>,
}

impl NatsSetup {
    /// TLS on the client port with the certificates of `certs`, a client certificate signed by
    /// their CA required (`verify: true`); the URL becomes `tls://`.
    pub fn tls(certs: &tls::Certs) -> NatsSetup {
        NatsSetup {
            config: Some(certs.nats_server_block()),
            scheme: Some("tls".into()),
            ..NatsSetup::default()
        }
    }
}

/// The nats-server binary: `CC_NATS_SERVER_BIN`, else the project's `.tools/bin/nats-server`,
/// else `nats-server` on the PATH.
pub fn nats_server_bin() -> PathBuf {
    if let Ok(p) = std::env::var("CC_NATS_SERVER_BIN") {
        return PathBuf::from(p);
    }
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    while dir.pop() {
        let candidate = dir.join(".tools/bin/nats-server");
        if candidate.exists() {
            return candidate;
        }
    }
    PathBuf::from("nats-server")
}

/// A loopback port free for TCP and UDP, for a server a test starts. Taken below the kernel's
/// ephemeral range (which starts at 32768 on Linux): a port the kernel handed out with
/// `bind(0)` is free only until it lends it to an outgoing connection, and a test system opens
/// hundreds of those (a server that then could not listen, "address already in use", was a
/// flake). Each test process starts at a random place in 20000..32000 and counts on in steps of
/// 10, leaving the ports just above each one free (a phone's media next to its SIP port).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        uuid::Uuid::new_v4().as_u128() as u32 % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN / 10 {
        let port = (FIRST + NEXT.fetch_add(10, Ordering::SeqCst) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
    panic!("no free loopback port in {FIRST}..{}", FIRST + SPAN)
}

impl NatsServer {
    pub fn start() -> NatsServer {
        Self::start_on(free_port())
    }

    /// Starts a server on a given port (e.g. one a process under test already waits for).
    pub fn start_on(port: u16) -> NatsServer {
        Self::start_with_on(port, NatsSetup::default())
    }

    /// A server with a configuration file, environment and arguments of the test's choice.
    pub fn start_with(setup: NatsSetup) -> NatsServer {
        Self::start_with_on(free_port(), setup)
    }

    fn start_with_on(port: u16, setup: NatsSetup) -> NatsServer {
        let store = std::env::temp_dir().join(format!("cc-nats-{}", uuid::Uuid::new_v4().simple()));
        let mut s = NatsServer {
            child: None,
            port,
            store,
            setup,
            node: None,
        };
        s.spawn();
        s
    }

    /// The server's name: a cluster node's (`n1`...), else empty.
    pub fn name(&self) -> &str {
        self.node.as_ref().map_or("", |n| n.name.as_str())
    }

    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme(), self.port)
    }

    /// The user and password of the setup, for the test's own clients (async-nats ignores a
    /// user and password in the URL).
    pub fn login(&self) -> Option<(String, String)> {
        self.setup.login.clone()
    }

    fn scheme(&self) -> &str {
        self.setup.scheme.as_deref().unwrap_or("nats")
    }

    fn spawn(&mut self) {
        let bin = nats_server_bin();
        let mut cmd = Command::new(&bin);
        if let Some(node) = &self.node {
            // The node file includes the permissions from beside it (empty: none).
            let dir = self.store.with_extension("conf.d");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("nats-cluster.conf"), NATS_CLUSTER_CONF).unwrap();
            std::fs::write(
                dir.join("nats-permissions.conf"),
                self.setup.config.as_deref().unwrap_or(""),
            )
            .unwrap();
            let route = |p: &u16| format!("nats://127.0.0.1:{p}");
            cmd.arg("-c")
                .arg(dir.join("nats-cluster.conf"))
                .env("NATS_NODE_NAME", &node.name)
                .env(
                    "NATS_CLUSTER_LISTEN",
                    format!("127.0.0.1:{}", node.route_port),
                )
                .envs(
                    node.routes
                        .iter()
                        .enumerate()
                        .map(|(i, p)| (format!("NATS_ROUTE_{}", i + 1), route(p))),
                )
                .args(["-m", &node.http_port.to_string()]);
        } else if let Some(config) = &self.setup.config {
            let file = self.store.with_extension("conf");
            std::fs::write(&file, config).unwrap();
            cmd.arg("-c").arg(file);
        }
        cmd.envs(self.setup.env.iter().cloned())
            .args(&self.setup.args);
        // CC_TEST_NATS_LOG_DIR=dir keeps each server's log (permission violations, TLS errors),
        // across its restarts.
        let stderr = match std::env::var_os("CC_TEST_NATS_LOG_DIR") {
            Some(dir) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(PathBuf::from(dir).join(format!("nats-{}.log", self.port)))
                    .unwrap(),
            ),
            None => Stdio::null(),
        };
        let child = cmd
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} (set CC_NATS_SERVER_BIN): {e}",
                    bin.display()
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (like a crash); JetStream data stays in its store directory.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port with the same store.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.store);
        let _ = std::fs::remove_file(self.store.with_extension("conf"));
        let _ = std::fs::remove_dir_all(self.store.with_extension("conf.d"));
    }
}

/// One server, or a cluster of three.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NatsShape {
    #[default]
    Single,
    /// Three nodes on loopback, each its own client, route and monitoring port and store.
    Cluster3,
}

/// The NATS of a test: one server or the nodes of a cluster, all with the same setup.
pub struct Nats {
    pub nodes: Vec<NatsServer>,
}

impl Nats {
    /// Starts the servers; a cluster is returned once every node's JetStream is current with
    /// the cluster (a meta leader elected), so streams can be created at once.
    pub fn start(shape: NatsShape, setup: NatsSetup) -> Nats {
        match shape {
            NatsShape::Single => Nats {
                nodes: vec![NatsServer::start_with(setup)],
            },
            NatsShape::Cluster3 => {
                let ports: Vec<(u16, u16, u16)> = (0..3)
                    .map(|_| (free_port(), free_port(), free_port()))
                    .collect();
                let routes: Vec<u16> = ports.iter().map(|p| p.1).collect();
                let nodes = ports
                    .iter()
                    .enumerate()
                    .map(|(i, &(port, route_port, http_port))| {
                        let store = std::env::temp_dir()
                            .join(format!("cc-nats-{}", uuid::Uuid::new_v4().simple()));
                        let mut s = NatsServer {
                            child: None,
                            port,
                            store,
                            setup: setup.clone(),
                            node: Some(ClusterNode {
                                name: format!("n{}", i + 1),
                                route_port,
                                routes: routes.clone(),
                                http_port,
                            }),
                        };
                        s.spawn();
                        s
                    })
                    .collect();
                let nats = Nats { nodes };
                nats.wait_healthy(Duration::from_secs(30));
                nats
            }
        }
    }

    /// Every server's URL, comma-separated (`CC_NATS_URL` of a cluster).
    pub fn url(&self) -> String {
        self.urls().join(",")
    }

    /// Every server's URL, for a client of the test's own (async-nats takes a list).
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::url).collect()
    }

    /// The user and password of the setup, for the test's own clients.
    pub fn login(&self) -> Option<(String, String)> {
        self.nodes[0].login()
    }

    /// The node of a server name (`n1`...).
    pub fn node(&mut self, name: &str) -> &mut NatsServer {
        self.nodes
            .iter_mut()
            .find(|n| n.name() == name)
            .unwrap_or_else(|| panic!("no NATS node {name}"))
    }

    /// Kills every server (their stores stay).
    pub fn stop(&mut self) {
        self.nodes.iter_mut().for_each(NatsServer::stop);
    }

    /// Starts every server again on its ports with its store.
    pub fn restart(&mut self) {
        self.nodes.iter_mut().for_each(NatsServer::restart);
    }

    /// Waits until every running cluster node says it is healthy (`/healthz`: JetStream
    /// enabled and current with the meta leader, every stream and consumer replica it holds
    /// caught up).
    pub fn wait_healthy(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for n in self.nodes.iter().filter(|n| n.child.is_some()) {
            let Some(node) = &n.node else { continue };
            while !http_ok(node.http_port, "/healthz") {
                assert!(
                    Instant::now() < deadline,
                    "NATS node {} not healthy within {timeout:?}",
                    node.name
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Whether `GET path` on loopback `port` answers 200.
fn http_ok(port: u16, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    if c.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    c.read_exact(&mut head).is_ok() && head.ends_with(b" 200")
}

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
