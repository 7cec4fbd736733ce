//! Fixtures for tests against real PostgreSQL and NATS on loopback.
//!
//! - [`TestDb`]: a fresh database per test (created from `CC_TEST_DATABASE_URL`, default
//!   `postgres://postgres@127.0.0.1:5432/postgres`), dropped by the test command's cleanup.
//! - [`NatsServer`]: a `nats-server` with JetStream per test on a free port with its own store
//!   directory; it can be stopped and restarted on the same port to test reconnection
//!   ([`NatsSetup::tls`]: TLS with client certificates).
//! - [`tls::Certs`]: a CA and certificates made at test time; [`tls::PgServer`]: a PostgreSQL of
//!   the test's own (TLS only, or plain and restartable).

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
}

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

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
        };
        s.spawn();
        s
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
        if let Some(config) = &self.setup.config {
            let file = self.store.with_extension("conf");
            std::fs::write(&file, config).unwrap();
            cmd.arg("-c").arg(file);
        }
        cmd.envs(self.setup.env.iter().cloned())
            .args(&self.setup.args);
        // CC_TEST_NATS_LOG_DIR=dir keeps each server's log (permission violations, TLS errors).
        let stderr = match std::env::var_os("CC_TEST_NATS_LOG_DIR") {
            Some(dir) => Stdio::from(
                std::fs::File::create(PathBuf::from(dir).join(format!("nats-{}.log", self.port)))
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
    }
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
