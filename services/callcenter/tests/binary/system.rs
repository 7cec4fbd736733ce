//! The whole system as an operator runs it: the real binary, its own database and nats-server,
//! driven over HTTP like a browser or curl would. A test makes its own tenant in it
//! (`System::tenant`, see tenant.rs); `System::start_demo` runs demo mode, as a newcomer does.

use std::time::Duration;

use cc_testkit::{eventually, free_port, Nats, NatsServer, NatsSetup, NatsShape, TestDb};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::process::Callcenter;

pub struct System {
    pub db: TestDb,
    /// One nats-server, or a three-node cluster (`Custom::nats_shape`); the services'
    /// `CC_NATS_URL` lists every node.
    pub nats: Nats,
    /// Every NATS user's password variable but the operator's (`CC_NATS_PASSWORD_<USER>`).
    pub nats_env: Vec<(String, String)>,
    pub _app: Callcenter,
    /// The PBX simulator in a process of its own (`start_split`), so the rest can restart.
    pub _pbx: Option<Callcenter>,
    portal_port: u16,
    pbx_port: u16,
    pub portal: String,
    pub pbx: String,
    pub prefix: String,
    pub http: reqwest::Client,
    /// Where the SIP gateway listens (`start_sip`), for tenant `office`.
    pub sip: Option<std::net::SocketAddr>,
    /// The SIP gateway in a process of its own (`start_sip(true)`), so it can restart.
    pub _gateway: Option<Callcenter>,
    /// Trunk mode (`start_trunk`): the PBX the tenant's extensions register on.
    pub pbx_sip: Option<std::net::SocketAddr>,
    /// More environment for the services (`start_with_env`).
    pub env: Vec<(String, String)>,
    /// Where the services' stdout and stderr go (`Custom::log`).
    pub log: Option<std::path::PathBuf>,
    /// Whether the services run in demo mode (`CC_DEMO`), which seeds the demo tenant.
    pub demo: bool,
}

/// How a test's system differs from [`System::start`] (`System::start_custom`).
#[derive(Default)]
pub struct Custom {
    /// The nats-server's setup beyond the product's permissions (e.g. `NatsSetup::tls`).
    pub nats: NatsSetup,
    /// More environment for the services.
    pub env: Vec<(String, String)>,
    /// With the SIP gateway serving tenant `office`, as `start_sip(false)`.
    pub sip: bool,
    /// Appends every service's stdout and stderr (its log lines) to this file.
    pub log: Option<std::path::PathBuf>,
    /// One nats-server (the default) or a three-node cluster.
    pub nats_shape: NatsShape,
    /// Every target as the one combined NATS user (`CC_NATS_USER=callcenter`, as scripts/run
    /// runs), not each as its own.
    pub combined_user: bool,
    /// In demo mode, ready once the demo tenant is seeded.
    pub demo: bool,
    /// Tenants whose read-only integrator users the nats-server knows (besides `demo` and the
    /// SIP tenant): the name of a test's tenant (`TenantSpec::named`) must be known before it
    /// starts.
    pub integrators: Vec<String>,
}

/// A nats-server with the product's permissions for subject prefix `prefix` (the file
/// `callcenter nats-config` prints), a random password per user, and the integrators of
/// `tenants`. Returns the server (whose `url()` logs in as `operator`, for the test's own
/// clients, see `login()`) and every other user's password variable (`CC_NATS_PASSWORD_<USER>`).
pub fn secured_nats(
    prefix: &str,
    tenants: &[&str],
    more: NatsSetup,
) -> (NatsServer, Vec<(String, String)>) {
    let (setup, env) = secured_setup(prefix, tenants, more);
    (NatsServer::start_with(setup), env)
}

/// The setup of [`secured_nats`], for a server or a cluster of them, and the users' password
/// variables.
pub fn secured_setup(
    prefix: &str,
    tenants: &[&str],
    more: NatsSetup,
) -> (NatsSetup, Vec<(String, String)>) {
    use cc_bus::permissions::{
        integrator_user, password_var, COMBINED_USER, OPERATOR_USER, SERVICES,
    };
    let out = Callcenter::command(
        "postgres://unused",
        "nats://unused",
        &["nats-config", "--tenants", &tenants.join(",")],
    )
    .env("CC_SUBJECT_PREFIX", prefix)
    // The router's consumers of tests with partitions (replicas) are allowed as well.
    .env("CC_PARTITIONS", "4")
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut users: Vec<String> = SERVICES.iter().map(|(n, _)| n.to_string()).collect();
    users.push(COMBINED_USER.into());
    users.extend(tenants.iter().map(|t| integrator_user(t)));
    // A letter first: the server parses the variable's value as a configuration value.
    let password = || format!("p{}", uuid::Uuid::new_v4().simple());
    let operator = password();
    let env: Vec<(String, String)> = users
        .iter()
        .map(|u| (password_var(u), password()))
        .collect();
    let mut server_env = env.clone();
    server_env.push((password_var(OPERATOR_USER), operator.clone()));
    // The setup's own configuration (e.g. a `tls` block) goes with the permissions.
    let mut config = String::from_utf8(out.stdout).unwrap();
    config.push_str(more.config.as_deref().unwrap_or(""));
    let setup = NatsSetup {
        config: Some(config),
        env: server_env,
        login: Some((OPERATOR_USER.into(), operator)),
        ..more
    };
    (setup, env)
}

/// The tenant served by the SIP gateway in `start_sip`.
pub const SIP_TENANT: &str = "office";

/// Every target but the PBX simulator.
const CORE: &str = "relay,auth,agent-session,queue-router,call-control,projection,portal";

/// A client of one tenant, signed in or not.
#[derive(Clone)]
pub struct Client {
    pub base: String,
    pub tenant: String,
    pub token: Option<String>,
    pub http: reqwest::Client,
}

pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
}

impl Reply {
    pub fn ok(self) -> Value {
        assert!(
            self.status.is_success(),
            "expected success, got {} {}",
            self.status,
            self.body
        );
        self.body
    }
    #[track_caller]
    pub fn refused(&self, status: u16, error: &str) -> &Value {
        assert_eq!(
            (
                self.status.as_u16(),
                self.body["error"].as_str().unwrap_or("")
            ),
            (status, error),
            "{}",
            self.body
        );
        assert!(
            self.body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "a message in words: {}",
            self.body
        );
        &self.body
    }
}

impl Client {
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        self.raw(method, path, body.map(|b| b.to_string())).await
    }

    pub async fn raw(&self, method: Method, path: &str, body: Option<String>) -> Reply {
        self.raw_with(method, path, body, None).await
    }

    /// A command sent with an `Idempotency-Key`.
    pub async fn post_once(&self, path: &str, body: Value, key: &str) -> Reply {
        self.raw_with(Method::POST, path, Some(body.to_string()), Some(key))
            .await
    }

    async fn raw_with(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
        key: Option<&str>,
    ) -> Reply {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("X-Tenant", &self.tenant);
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let r = match req.send().await {
            Ok(r) => r,
            // Not listening yet (start-up) or gone: a 503 the caller can wait on.
            Err(e) => {
                return Reply {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    body: Value::String(e.to_string()),
                }
            }
        };
        let status = r.status();
        let text = r.text().await.unwrap();
        Reply {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, None).await
    }
    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(body)).await
    }
}

impl System {
    /// Every service in one process, not in demo mode: make the test's tenant with
    /// [`System::tenant`].
    pub async fn start() -> System {
        Self::start_with(false, vec![]).await
    }

    /// As a newcomer starts it: every service in one process in demo mode, ready once the demo
    /// tenant is seeded (`demo_tenant()`).
    pub async fn start_demo() -> System {
        Self::start_custom(Custom {
            demo: true,
            ..Custom::default()
        })
        .await
    }

    /// The PBX simulator in one process, every other service in another.
    pub async fn start_split() -> System {
        Self::start_with(true, vec![]).await
    }

    /// As [`System::start`], with more environment for the services.
    pub async fn start_with_env(env: &[(&str, &str)]) -> System {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::start_with(false, env).await
    }

    /// Only the service targets' passwords: not the combined user's, not the integrators'.
    pub fn service_nats_env(&self) -> Vec<(String, String)> {
        self.nats_env
            .iter()
            .filter(|(k, _)| {
                cc_bus::permissions::SERVICES
                    .iter()
                    .any(|(n, _)| cc_bus::permissions::password_var(n) == *k)
            })
            .cloned()
            .collect()
    }

    /// A process running `targets` (comma-separated) of this system.
    pub fn spawn_services(&self, targets: &str) -> Callcenter {
        let (portal_port, pbx_port, prefix, sip, pbx_sip, env, demo) = (
            self.portal_port,
            self.pbx_port,
            self.prefix.clone(),
            self.sip,
            self.pbx_sip,
            self.env.clone(),
            self.demo,
        );
        let log = self.log.as_ref().map(|p| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .unwrap()
        });
        let nats_env = self.service_nats_env();
        Callcenter::spawn_with(
            &self.db.url,
            &self.nats.url(),
            &["run", "--target", targets],
            |c| {
                // Each target connects as its own NATS user, with its own permissions.
                c.envs(nats_env);
                if let Some(sip) = sip {
                    c.env("CC_SIP_TENANTS", SIP_TENANT)
                        .env("CC_SIP_ADDR", sip.to_string())
                        .env("CC_RTP_PORTS", "0")
                        .env("CC_SIP_MIN_EXPIRES", "1");
                    match pbx_sip {
                        // Trunk mode: the PBX is the only trunk.
                        Some(pbx) => c
                            .env("CC_SIP_PBX", format!("{SIP_TENANT}={pbx},reg"))
                            .env("CC_SIP_PBX_SUBSCRIBE_SECS", "20"),
                        None => c.env("CC_SIP_TRUNKS", format!("{SIP_TENANT}=127.0.0.1")),
                    };
                }
                // Webhooks: loopback receivers allowed, fast retries, suspension after seconds.
                c.env("CC_WEBHOOK_ALLOW_PRIVATE", "true")
                    .env("CC_WEBHOOK_TIMEOUT_MS", "1500")
                    .env("CC_WEBHOOK_RETRY_BASE_MS", "200")
                    .env("CC_WEBHOOK_RETRY_MAX_MS", "1000")
                    .env("CC_WEBHOOK_SUSPEND_AFTER_SECS", "6");
                c.env("CC_DEMO", if demo { "true" } else { "false" })
                    .env("CC_PORTAL_ADDR", format!("127.0.0.1:{portal_port}"))
                    .env("CC_PBX_SIM_ADDR", format!("127.0.0.1:{pbx_port}"))
                    .env("CC_SUBJECT_PREFIX", &prefix);
                c.envs(env);
                if let Some(f) = log {
                    c.stdout(f.try_clone().unwrap()).stderr(f);
                }
            },
        )
    }

    /// Kills every service but the PBX simulator (SIGKILL: no graceful stop) and starts them again.
    pub async fn restart_services(&mut self) {
        assert!(self._pbx.is_some(), "start_split first");
        self._app.kill();
        self._app = self.spawn_services(CORE);
    }

    /// The whole system in demo mode with the SIP gateway serving tenant `office` (a copy of
    /// the demo tenant that demo mode seeds, `demo_like(SIP_TENANT)`; its demo devices 1001-1006
    /// have the SIP password `sip<ext>`), trunk 127.0.0.1. `split`: the gateway in a process of
    /// its own.
    pub async fn start_sip(split: bool) -> System {
        let sip: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        Self::start_sip_with(split, sip, None).await
    }

    /// As `start_sip`, with tenant `office` in trunk mode: its extensions register on the PBX
    /// at `pbx` (`CC_SIP_PBX`, reg event package, subscriptions of 20 s), which is its only
    /// trunk; the gateway listens on `sip`.
    pub async fn start_trunk(
        split: bool,
        sip: std::net::SocketAddr,
        pbx: std::net::SocketAddr,
    ) -> System {
        Self::start_sip_with(split, sip, Some(pbx)).await
    }

    async fn start_sip_with(
        split: bool,
        sip: std::net::SocketAddr,
        pbx: Option<std::net::SocketAddr>,
    ) -> System {
        // Demo mode seeds the SIP tenant (`CC_SIP_TENANTS`) with the SIP devices' passwords.
        let mut sys = Self::new_unstarted(NatsSetup::default()).await;
        sys.sip = Some(sip);
        sys.pbx_sip = pbx;
        if split {
            sys._gateway = Some(sys.spawn_services("sip-gateway"));
            sys._app = sys.spawn_services(&format!("{CORE},pbx-sim"));
        } else {
            sys._app = sys.spawn_services("all");
        }
        sys.wait_ready("demo").await;
        sys.wait_ready(SIP_TENANT).await;
        sys
    }

    /// Kills the SIP gateway's process (SIGKILL) and starts it again.
    pub fn restart_gateway(&mut self) {
        let g = self._gateway.as_mut().expect("start_sip(true) first");
        g.kill();
        self._gateway = Some(self.spawn_services("sip-gateway"));
    }

    /// A client of a tenant.
    pub fn tenant_client(&self, tenant: &str) -> Client {
        Client {
            base: self.portal.clone(),
            tenant: tenant.into(),
            token: None,
            http: self.http.clone(),
        }
    }

    /// A system as `custom` says: every service in one process.
    pub async fn start_custom(custom: Custom) -> System {
        let mut sys =
            Self::unstarted_with(None, custom.nats, custom.nats_shape, &custom.integrators).await;
        sys.demo = custom.demo || custom.sip;
        sys.env = custom.env;
        sys.log = custom.log;
        if custom.combined_user {
            let user = cc_bus::permissions::COMBINED_USER;
            let password = sys.nats_password(user);
            sys.env.push(("CC_NATS_USER".into(), user.into()));
            sys.env.push(("CC_NATS_PASSWORD".into(), password));
        }
        if custom.sip {
            sys.sip = Some(format!("127.0.0.1:{}", free_port()).parse().unwrap());
        }
        sys._app = sys.spawn_services("all");
        if sys.demo {
            sys.wait_ready("demo").await;
        } else {
            sys.wait_up().await;
        }
        if custom.sip {
            sys.wait_ready(SIP_TENANT).await;
        }
        sys
    }

    async fn new_unstarted(more: NatsSetup) -> System {
        Self::unstarted_on(None, more).await
    }

    /// A system in demo mode with no process yet, its database on the PostgreSQL of
    /// `admin_url` (else the test PostgreSQL): start processes with `spawn_services`, then
    /// `wait_ready("demo")` (or set `demo` false first, then `wait_up`).
    pub async fn unstarted_on(admin_url: Option<&str>, more: NatsSetup) -> System {
        Self::unstarted_in(admin_url, more, NatsShape::Single).await
    }

    /// As [`System::unstarted_on`], with NATS of the given shape.
    pub async fn unstarted_in(
        admin_url: Option<&str>,
        more: NatsSetup,
        shape: NatsShape,
    ) -> System {
        let mut sys = Self::unstarted_with(admin_url, more, shape, &[]).await;
        sys.demo = true;
        sys
    }

    async fn unstarted_with(
        admin_url: Option<&str>,
        more: NatsSetup,
        shape: NatsShape,
        integrators: &[String],
    ) -> System {
        let db = match admin_url {
            Some(u) => TestDb::new_on(u).await,
            None => TestDb::new().await,
        };
        let (portal_port, pbx_port) = (free_port(), free_port());
        let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
        let mut tenants = vec!["demo", SIP_TENANT];
        tenants.extend(integrators.iter().map(String::as_str));
        let (setup, nats_env) = secured_setup(&prefix, &tenants, more);
        let nats = Nats::start(shape, setup);
        System {
            db,
            nats,
            nats_env,
            _app: Callcenter::placeholder(),
            _pbx: None,
            portal_port,
            pbx_port,
            portal: format!("http://127.0.0.1:{portal_port}"),
            pbx: format!("http://127.0.0.1:{pbx_port}"),
            prefix,
            http: reqwest::Client::new(),
            sip: None,
            _gateway: None,
            pbx_sip: None,
            env: vec![],
            log: None,
            demo: false,
        }
    }

    /// Ready when every process of the system answers `/readyz` (its database and NATS are
    /// connected, the migrations applied). The services may still be subscribing: what talks
    /// to them retries (`System::tenant` does).
    pub async fn wait_up(&self) {
        let http = &self.http;
        for p in std::iter::once(&self._app).chain(&self._pbx) {
            let url = p.admin("/readyz");
            eventually("/readyz 200", Duration::from_secs(60), || async {
                let r = http.get(&url).send().await.ok()?;
                (r.status() == 200).then_some(())
            })
            .await;
        }
    }

    /// In demo mode: ready when the tenant's last demo agent can sign in and its queues are
    /// known. Signs in once (a sign-in hashes the password: one every poll would starve the
    /// system it waits for), then polls the login options; a timeout says what was missing.
    pub async fn wait_ready(&self, tenant: &str) {
        let c = self.tenant_client(tenant);
        let sim = tenant == "demo";
        let timeout = Duration::from_secs(90);
        let deadline = std::time::Instant::now() + timeout;
        let mut agent: Option<Client> = None;
        let mut last = String::from("nothing yet");
        loop {
            if std::time::Instant::now() > deadline {
                let tail = self.log.as_ref().map_or(String::new(), |p| {
                    let log = std::fs::read_to_string(p).unwrap_or_default();
                    let lines: Vec<&str> = log.lines().collect();
                    let from = lines.len().saturating_sub(60);
                    format!(
                        "\nthe services' last log lines:\n{}",
                        lines[from..].join("\n")
                    )
                });
                panic!("timed out after {timeout:?} waiting for the {tenant} tenant: {last}{tail}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            let Some(a) = &agent else {
                // Sign in only once the demo agent exists: sign-ins before the seed would be
                // failures the throttle counts, and enough of them lock the account out from
                // this address.
                let seeded: Option<i64> = sqlx::query_scalar(
                    "select count(*) from auth_agents where tenant = $1 and agent = '1004'",
                )
                .bind(tenant)
                .fetch_one(&self.db.pool)
                .await
                .ok();
                if seeded != Some(1) {
                    last = format!("agent 1004 not created yet ({seeded:?})");
                    continue;
                }
                let r = c
                    .post(
                        "/api/login",
                        json!({"agent_number": "1004", "password": "demo1004"}),
                    )
                    .await;
                if !r.status.is_success() {
                    last = format!("sign-in of 1004: {} {}", r.status, r.body);
                    continue;
                }
                let mut a = c.clone();
                a.token = r.body["token"].as_str().map(String::from);
                agent = Some(a);
                continue;
            };
            let opts = a.get("/api/login-options").await;
            let devices_known = !sim
                || opts.body["devices"]
                    .as_array()
                    .is_some_and(|d| d.len() >= 6);
            if opts.status.is_success()
                && devices_known
                && opts.body["assigned_queues"]
                    .as_array()
                    .is_some_and(|q| q.len() == 2)
            {
                return;
            }
            last = format!("login options of 1004: {} {}", opts.status, opts.body);
        }
    }

    async fn start_with(split: bool, env: Vec<(String, String)>) -> System {
        let mut sys =
            Self::unstarted_with(None, NatsSetup::default(), NatsShape::Single, &[]).await;
        sys.env = env;
        if split {
            sys._pbx = Some(sys.spawn_services("pbx-sim"));
            sys._app = sys.spawn_services(CORE);
        } else {
            sys._app = sys.spawn_services("all");
        }
        sys.wait_up().await;
        sys
    }

    /// A NATS client of the test itself, as the `operator` user (every subject).
    pub async fn operator_nats(&self) -> Result<async_nats::Client, async_nats::ConnectError> {
        let (user, password) = self.nats.login().expect("a secured nats-server");
        async_nats::ConnectOptions::with_user_and_password(user, password)
            .connect(self.nats.urls())
            .await
    }

    /// The password of a NATS user (a service target, `callcenter`, an integrator).
    pub fn nats_password(&self, user: &str) -> String {
        let var = cc_bus::permissions::password_var(user);
        self.nats_env
            .iter()
            .find(|(k, _)| *k == var)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no NATS password for {user}"))
    }

    /// The environment of an operator command (`callcenter events`, ...) of this system: the
    /// operator's NATS login, and the services' NATS TLS files if any.
    pub fn operator_env(&self) -> Vec<(String, String)> {
        let (user, password) = self.nats.login().expect("a secured nats-server");
        let mut env: Vec<(String, String)> = self
            .env
            .iter()
            .filter(|(k, _)| k.starts_with("CC_NATS_") && k.ends_with("_FILE"))
            .cloned()
            .collect();
        env.extend([
            ("CC_NATS_USER".into(), user),
            ("CC_NATS_PASSWORD".into(), password),
            ("CC_SUBJECT_PREFIX".into(), self.prefix.clone()),
        ]);
        env
    }

    /// Events stored for one stream, oldest first: (type, data).
    pub async fn stream_events(&self, stream: &str) -> Vec<(String, Value)> {
        sqlx::query_as("select event_type, data from es_events where stream = $1 order by version")
            .bind(stream)
            .fetch_all(&self.db.pool)
            .await
            .unwrap()
    }

    pub async fn event_count(&self) -> i64 {
        sqlx::query_scalar("select count(*) from es_events")
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }

    /// The types of the events on a NATS subject filter, as JetStream holds them.
    pub async fn published_types(&self, filter: &str) -> Vec<String> {
        use futures::StreamExt;
        let client = self.operator_nats().await.unwrap();
        let js = async_nats::jetstream::new(client);
        let stream = js
            .get_stream(format!("{}_EVENTS", self.prefix.to_uppercase()))
            .await
            .unwrap();
        let consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
                filter_subject: filter.to_string(),
                ..Default::default()
            })
            .await
            .unwrap();
        let pending = consumer.cached_info().num_pending as usize;
        let mut messages = consumer.messages().await.unwrap();
        let mut out = Vec::new();
        while out.len() < pending {
            let m = tokio::time::timeout(Duration::from_secs(5), messages.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            out.push(
                m.headers
                    .as_ref()
                    .unwrap()
                    .get("Cc-Event-Type")
                    .unwrap()
                    .as_str()
                    .to_string(),
            );
        }
        out
    }

    /// Writes every event published on NATS so far to `target/contract-samples/<name>.ndjson`
    /// (`{"subject","type","version","data"}` per line), for scripts/check-contracts to
    /// validate against the JSON Schemas. Returns how many.
    pub async fn record_published_events(&self, name: &str) -> usize {
        use futures::StreamExt;
        let client = self.operator_nats().await.unwrap();
        let js = async_nats::jetstream::new(client);
        let stream = js
            .get_stream(format!("{}_EVENTS", self.prefix.to_uppercase()))
            .await
            .unwrap();
        // The domain events (not their copies on the target agents' subjects).
        let consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
                filter_subject: format!("{}.events.>", self.prefix),
                ..Default::default()
            })
            .await
            .unwrap();
        let pending = consumer.cached_info().num_pending as usize;
        let mut messages = consumer.messages().await.unwrap();
        let mut out = String::new();
        for _ in 0..pending {
            let m = tokio::time::timeout(Duration::from_secs(5), messages.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            let h = m.headers.as_ref().unwrap();
            let ce_type = h.get("ce-type").unwrap().as_str().to_string();
            let version: i64 = ce_type.rsplit(".v").next().unwrap().parse().unwrap();
            let line = json!({
                "subject": m.subject.as_str().replacen(&self.prefix, "cc", 1),
                "type": h.get("Cc-Event-Type").unwrap().as_str(),
                "version": version,
                "data": serde_json::from_slice::<Value>(&m.payload).unwrap(),
            });
            out.push_str(&line.to_string());
            out.push('\n');
        }
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/contract-samples");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.ndjson")), out).unwrap();
        pending
    }

    /// The agent's view, once `pred` holds (the read model is eventually consistent).
    pub async fn view_when(&self, c: &Client, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        view_when(c, what, pred).await
    }
}

/// The agent's view, once `pred` holds (the read model is eventually consistent).
pub async fn view_when(c: &Client, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    eventually(what, Duration::from_secs(30), || async {
        let r = c.get("/api/me").await;
        (r.status.is_success() && pred(&r.body)).then_some(r.body)
    })
    .await
}

/// A Server-Sent Events stream read by the test: (event, id, data).
pub struct Sse {
    response: reqwest::Response,
    buffer: String,
}

impl Sse {
    pub async fn open(c: &Client, path: &str, last_event_id: Option<i64>) -> Sse {
        let mut req = c
            .http
            .get(format!("{}{path}", c.base))
            .header("X-Tenant", &c.tenant)
            .bearer_auth(c.token.as_ref().unwrap());
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id.to_string());
        }
        let response = req.send().await.unwrap();
        assert_eq!(response.status(), 200);
        Sse {
            response,
            buffer: String::new(),
        }
    }

    /// The next event, or None after `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<(String, Option<i64>, Value)> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut event, mut id, mut data) = (String::from("message"), None, String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().parse().ok();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // keep-alive comment
                }
                return Some((
                    event,
                    id,
                    serde_json::from_str(&data).unwrap_or(Value::String(data)),
                ));
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .ok()?
                .ok()??;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Reads events until one satisfies `pred`.
    pub async fn until(
        &mut self,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> (Option<i64>, Value) {
        loop {
            match self.next(Duration::from_secs(10)).await {
                Some((_, id, data)) if pred(&data) => return (id, data),
                Some(_) => continue,
                None => panic!("no SSE event with {what} within 10 s"),
            }
        }
    }
}
