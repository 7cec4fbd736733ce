//! A test's own tenant, made through the product's public surfaces as an operator and the
//! tenant's admin would make it: `callcenter tenant create` (the tenant and its admin), the
//! admin API (pause reasons, users, queues, agents, their queues and penalties), the PBX
//! simulator's control surface (the devices, registered or not). Each test's tenant has a name
//! of its own, so no test depends on what demo mode seeds, and one test's data cannot be
//! another's.
//!
//! [`Tenant`] is the handle a test drives it by: its clients (agents, admin, supervisor), its
//! callers and phones on the simulated PBX, its streams in the store.

use std::time::Duration;

use cc_testkit::eventually;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::process::Callcenter;
use crate::system::{view_when, Client, System};

/// The display name of a tenant's `supervisor` ([`TenantSpec::supervisor`]).
pub const SUPERVISOR_NAME: &str = "Test Supervisor";

/// What a test's tenant holds. [`TenantSpec::call_center`] is the usual one; the builder
/// methods make others.
#[derive(Clone, Debug)]
pub struct TenantSpec {
    /// The tenant's slug: `prefix` and a unique suffix, or exactly `name`.
    slug: Slug,
    pause_reasons: Vec<String>,
    supervisor: bool,
    queues: Vec<(String, String)>,
    agents: Vec<AgentSpec>,
    /// The PBX simulator's devices: (extension, registered).
    devices: Vec<(String, bool)>,
}

#[derive(Clone, Debug)]
enum Slug {
    Prefix(&'static str),
    Exactly(String),
}

/// An agent of a [`TenantSpec`]: number, name, whether they may choose their own queues, and
/// the queues they are assigned to with their penalties.
#[derive(Clone, Debug)]
pub struct AgentSpec {
    number: String,
    name: String,
    may_manage_queues: bool,
    queues: Vec<(String, i32)>,
}

impl AgentSpec {
    pub fn new(number: &str, name: &str) -> AgentSpec {
        AgentSpec {
            number: number.into(),
            name: name.into(),
            may_manage_queues: false,
            queues: vec![],
        }
    }

    /// Assigned to `queue` with `penalty`.
    pub fn queue(mut self, queue: &str, penalty: i32) -> AgentSpec {
        self.queues.push((queue.into(), penalty));
        self
    }

    /// May choose their own queues at login and while logged in.
    pub fn manages_queues(mut self) -> AgentSpec {
        self.may_manage_queues = true;
        self
    }
}

impl TenantSpec {
    /// A tenant with nothing but its admin (`admin`), in UTC.
    pub fn empty() -> TenantSpec {
        TenantSpec {
            slug: Slug::Prefix("acme"),
            pause_reasons: vec![],
            supervisor: false,
            queues: vec![],
            agents: vec![],
            devices: vec![],
        }
    }

    /// The small call center most tests are written against, in UTC:
    /// - queues 500 Sales and 501 Support;
    /// - agents 1001 Alice (500 penalty 0, 501 penalty 1, may choose queues), 1002 Bob (500),
    ///   1003 Carol (501), 1004 Dave (500 penalty 1, 501 penalty 0, may choose queues);
    /// - pause reasons Lunch, Break, Bathroom;
    /// - users `admin` and `supervisor`;
    /// - devices 1001-1006 registered, 1007 not (an offline phone).
    pub fn call_center() -> TenantSpec {
        let mut spec = TenantSpec::empty()
            .supervisor()
            .pause_reasons(&["Lunch", "Break", "Bathroom"])
            .queue("500", "Sales")
            .queue("501", "Support")
            .agent(
                AgentSpec::new("1001", "Alice Agent")
                    .queue("500", 0)
                    .queue("501", 1)
                    .manages_queues(),
            )
            .agent(AgentSpec::new("1002", "Bob Agent").queue("500", 0))
            .agent(AgentSpec::new("1003", "Carol Agent").queue("501", 0))
            .agent(
                AgentSpec::new("1004", "Dave Agent")
                    .queue("500", 1)
                    .queue("501", 0)
                    .manages_queues(),
            );
        for d in 1001..=1006 {
            spec = spec.device(&d.to_string(), true);
        }
        spec.device("1007", false)
    }

    /// The slug starts with `prefix` (a-z, 0-9, '-'); a unique suffix follows.
    pub fn prefix(mut self, prefix: &'static str) -> TenantSpec {
        self.slug = Slug::Prefix(prefix);
        self
    }

    /// Exactly this slug (one the test made unique, e.g. to name it before the system starts).
    pub fn named(mut self, slug: &str) -> TenantSpec {
        self.slug = Slug::Exactly(slug.into());
        self
    }

    pub fn pause_reasons(mut self, reasons: &[&str]) -> TenantSpec {
        self.pause_reasons = reasons.iter().map(|r| r.to_string()).collect();
        self
    }

    /// With a user `supervisor` (role supervisor).
    pub fn supervisor(mut self) -> TenantSpec {
        self.supervisor = true;
        self
    }

    pub fn queue(mut self, queue: &str, name: &str) -> TenantSpec {
        self.queues.push((queue.into(), name.into()));
        self
    }

    pub fn agent(mut self, agent: AgentSpec) -> TenantSpec {
        self.agents.push(agent);
        self
    }

    /// A device of the simulated PBX, registered (online) or not.
    pub fn device(mut self, device: &str, registered: bool) -> TenantSpec {
        self.devices.push((device.into(), registered));
        self
    }
}

/// A unique tenant slug starting with `prefix`.
pub fn unique_slug(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &id[..10])
}

/// A tenant of a running system, as a test drives it.
#[derive(Clone)]
pub struct Tenant {
    pub name: String,
    pub portal: String,
    pub pbx: String,
    pub http: reqwest::Client,
    /// The system's database.
    pub pool: sqlx::PgPool,
    /// The password of each login (agent number or username).
    passwords: Vec<(String, String)>,
}

impl System {
    /// Creates a tenant of its own for the test, as `spec` says, and waits until its agents can
    /// log in with their devices and queues.
    pub async fn tenant(&self, spec: TenantSpec) -> Tenant {
        let name = match &spec.slug {
            Slug::Prefix(p) => unique_slug(p),
            Slug::Exactly(s) => s.clone(),
        };
        // Passwords of this tenant's own (never the demo's).
        let secret = uuid::Uuid::new_v4().simple().to_string();
        let password = |login: &str| format!("{login}-{}", &secret[..12]);
        let mut tenant = self.tenant_handle(&name, vec![("admin".into(), password("admin"))]);

        // The operator creates the tenant and its admin (retried while the services start).
        let out = eventually(
            "callcenter tenant create",
            Duration::from_secs(60),
            || async {
                let mut c = Callcenter::command(
                    &self.db.url,
                    &self.nats.url(),
                    &[
                        "tenant",
                        "create",
                        &name,
                        "--name",
                        &format!("Test tenant {name}"),
                        "--time-zone",
                        "UTC",
                    ],
                );
                c.envs(self.operator_env())
                    .env("CC_ADMIN_PASSWORD", password("admin"));
                let out = tokio::process::Command::from(c).output().await.unwrap();
                let stderr = String::from_utf8_lossy(&out.stderr);
                let starting = stderr.contains("service is running")
                    || stderr.contains("bus failed")
                    || stderr.contains("cannot connect");
                (out.status.success() || !starting).then_some(out)
            },
        )
        .await;
        assert!(
            out.status.success(),
            "callcenter tenant create {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );

        // The admin sets it up through the admin API (once the portal answers).
        let login = json!({"username": "admin", "password": password("admin")});
        let r = eventually("the admin signs in", Duration::from_secs(60), || async {
            let r = tenant.anonymous().post("/api/login", login.clone()).await;
            (r.status != StatusCode::SERVICE_UNAVAILABLE).then_some(r)
        })
        .await;
        let mut admin = tenant.anonymous();
        admin.token = Some(r.ok()["token"].as_str().unwrap().to_string());
        for reason in &spec.pause_reasons {
            set_up(
                &admin,
                Method::POST,
                "/api/admin/pause-reasons",
                json!({"name": reason}),
            )
            .await;
        }
        if spec.supervisor {
            let body = json!({"username": "supervisor", "display_name": SUPERVISOR_NAME,
                "password": password("supervisor"), "role": "supervisor"});
            set_up(&admin, Method::POST, "/api/admin/users", body).await;
            tenant
                .passwords
                .push(("supervisor".into(), password("supervisor")));
        }
        for (queue, queue_name) in &spec.queues {
            let body = json!({"queue": queue, "name": queue_name});
            set_up(&admin, Method::POST, "/api/admin/queues", body).await;
        }
        for a in &spec.agents {
            let body = json!({"agent": a.number, "display_name": a.name,
                "password": password(&a.number), "may_manage_queues": a.may_manage_queues});
            set_up(&admin, Method::POST, "/api/admin/agents", body).await;
            tenant
                .passwords
                .push((a.number.clone(), password(&a.number)));
            for (queue, penalty) in &a.queues {
                let path = format!("/api/admin/queues/{queue}/agents/{}", a.number);
                set_up(&admin, Method::PUT, &path, json!({"penalty": penalty})).await;
            }
        }

        // Its phones on the simulated PBX: every device added (unregistered), then the online
        // ones registered.
        for (device, _) in &spec.devices {
            let (status, body) = tenant.pbx_post("/devices", json!({"device": device})).await;
            assert!((200..300).contains(&status), "add device {device}: {body}");
        }
        for (device, _) in spec.devices.iter().filter(|(_, r)| *r) {
            tenant.set_registered(device, true).await;
        }

        // Ready when the last agent sees the online devices and their queues.
        if let Some(last) = spec.agents.last() {
            let online = spec.devices.iter().filter(|(_, r)| *r).count();
            let agent = tenant.agent(&last.number).await;
            eventually(
                &format!("tenant {name}: agent {} ready to log in", last.number),
                Duration::from_secs(30),
                || async {
                    let o = agent.get("/api/login-options").await;
                    let n = |k: &str| o.body[k].as_array().map(Vec::len);
                    (o.status.is_success()
                        && n("devices") == Some(online)
                        && n("assigned_queues") == Some(last.queues.len()))
                    .then_some(())
                },
            )
            .await;
        }
        tenant
    }

    /// A handle on a tenant that exists already, whose logins' passwords are `passwords`.
    pub fn tenant_handle(&self, name: &str, passwords: Vec<(String, String)>) -> Tenant {
        Tenant {
            name: name.into(),
            portal: self.portal.clone(),
            pbx: self.pbx.clone(),
            http: self.http.clone(),
            pool: self.db.pool.clone(),
            passwords,
        }
    }

    /// The tenant demo mode creates (`System::start_demo`), with its published passwords
    /// (agents `demo<n>`, `admin` / `demo-admin`, `supervisor` / `demo-supervisor`).
    pub fn demo_tenant(&self) -> Tenant {
        self.demo_like("demo")
    }

    /// A tenant demo mode created as a copy of the demo tenant (the SIP tenant of
    /// `start_sip`), with the demo's passwords.
    pub fn demo_like(&self, name: &str) -> Tenant {
        let mut passwords: Vec<(String, String)> = (1001..=1004)
            .map(|n| (n.to_string(), format!("demo{n}")))
            .collect();
        passwords.push(("admin".into(), "demo-admin".into()));
        passwords.push(("supervisor".into(), "demo-supervisor".into()));
        self.tenant_handle(name, passwords)
    }
}

/// One step of the admin's set-up: retried while the service it needs is not up yet.
async fn set_up(admin: &Client, method: Method, path: &str, body: Value) {
    let r = eventually(path, Duration::from_secs(30), || async {
        let r = admin.call(method.clone(), path, Some(body.clone())).await;
        (r.status != StatusCode::SERVICE_UNAVAILABLE).then_some(r)
    })
    .await;
    assert!(
        r.status.is_success(),
        "{method} {path} {body}: {} {}",
        r.status,
        r.body
    );
}

impl Tenant {
    /// A client of this tenant, not signed in.
    pub fn anonymous(&self) -> Client {
        Client {
            base: self.portal.clone(),
            tenant: self.name.clone(),
            token: None,
            http: self.http.clone(),
        }
    }

    /// The password of an agent (by number) or a user (by username).
    pub fn password(&self, login: &str) -> String {
        self.passwords
            .iter()
            .find(|(l, _)| l == login)
            .map(|(_, p)| p.clone())
            .unwrap_or_else(|| panic!("tenant {} has no login {login}", self.name))
    }

    /// Signs in an agent (all digits) or a user; the sign-in must succeed.
    pub async fn sign_in(&self, login: &str, password: &str) -> Client {
        let mut c = self.anonymous();
        let body = if login.chars().all(|c| c.is_ascii_digit()) {
            json!({"agent_number": login, "password": password})
        } else {
            json!({"username": login, "password": password})
        };
        let r = c.post("/api/login", body).await.ok();
        c.token = Some(r["token"].as_str().unwrap().to_string());
        c
    }

    /// Agent `n` signed in (not logged in).
    pub async fn agent(&self, n: &str) -> Client {
        self.sign_in(n, &self.password(n)).await
    }

    pub async fn admin(&self) -> Client {
        self.sign_in("admin", &self.password("admin")).await
    }

    pub async fn supervisor(&self) -> Client {
        self.sign_in("supervisor", &self.password("supervisor"))
            .await
    }

    /// Agent `n` signed in, logged in with the defaults (own extension, every assigned queue)
    /// and Idle.
    pub async fn idle_agent(&self, n: &str) -> Client {
        let c = self.agent(n).await;
        c.post("/api/session", json!({})).await.ok();
        view_when(&c, "Idle", |v| v["status"] == "idle").await;
        c
    }

    /// The agent's view, once `pred` holds (the read model is eventually consistent).
    pub async fn view_when(&self, c: &Client, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        view_when(c, what, pred).await
    }

    /// A stream of this tenant by its key within the tenant (`agent-1001`, `call-<id>`).
    pub fn stream(&self, key: &str) -> String {
        format!("{}/{key}", self.name)
    }

    /// Events stored for one of the tenant's streams (`agent-1001`), oldest first:
    /// (type, data).
    pub async fn stream_events(&self, key: &str) -> Vec<(String, Value)> {
        sqlx::query_as("select event_type, data from es_events where stream = $1 order by version")
            .bind(self.stream(key))
            .fetch_all(&self.pool)
            .await
            .unwrap()
    }

    /// The types of the events of one call, in order.
    pub async fn call_events(&self, call: &str) -> Vec<String> {
        self.stream_events(&format!("call-{call}"))
            .await
            .into_iter()
            .map(|(t, _)| t)
            .collect()
    }

    /// The simulator's control surface of this tenant: `{pbx}/tenants/{tenant}{path}`.
    pub fn pbx_url(&self, path: &str) -> String {
        format!("{}/tenants/{}{path}", self.pbx, self.name)
    }

    pub async fn pbx_post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.pbx_url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// A caller dials `queue`; the caller's channel.
    pub async fn place_caller(&self, queue: &str, number: &str, name: &str) -> String {
        let (status, ch) = self
            .pbx_post(
                "/calls",
                json!({"queue": queue, "caller_number": number, "caller_name": name}),
            )
            .await;
        assert_eq!(status, 201, "{ch}");
        ch["channel"].as_str().unwrap().to_string()
    }

    /// The user of a simulated phone presses `answer`, `reject` or `hangup`.
    pub async fn phone(&self, device: &str, action: &str) {
        let (status, body) = self
            .pbx_post(&format!("/devices/{device}/{action}"), json!({}))
            .await;
        assert_eq!(status, 204, "{action} on {device}: {body}");
    }

    /// Presses a simulated phone's registration.
    pub async fn set_registered(&self, device: &str, registered: bool) {
        let action = if registered { "register" } else { "unregister" };
        let (status, body) = self
            .pbx_post(&format!("/devices/{device}/{action}"), json!({}))
            .await;
        assert!((200..300).contains(&status), "{action} {device}: {body}");
    }

    /// The simulator's live channels of this tenant.
    pub async fn channels(&self) -> Vec<Value> {
        self.http
            .get(self.pbx_url("/channels"))
            .send()
            .await
            .unwrap()
            .json::<Vec<Value>>()
            .await
            .unwrap()
    }

    /// The live channels of one device on the simulated PBX.
    pub async fn device_channels(&self, device: &str) -> Vec<Value> {
        self.channels()
            .await
            .into_iter()
            .filter(|c| c["device"] == device)
            .collect()
    }

    /// The caller of `channel` hangs up.
    pub async fn caller_hangs_up(&self, channel: &str) {
        let r = self
            .http
            .post(self.pbx_url(&format!("/channels/{channel}/hangup")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    }

    /// Sets how a simulated phone behaves by itself (`{"mode": "auto_answer", ...}`).
    pub async fn pbx_put_mode(&self, device: &str, mode: Value) -> (u16, String) {
        let r = self
            .http
            .put(self.pbx_url(&format!("/devices/{device}/mode")))
            .json(&mode)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }
}
