//! The chaos suite (`scripts/chaos`, docs/reliability.md): the PBX simulator's traffic
//! generator drives many logged-in agents while each fault is injected in turn: SIGKILL of
//! every service process, SIGSTOP of the router, a restart of nats-server, a restart of
//! PostgreSQL (a cluster of the test's own), the JetStream events stream full, a slow
//! PostgreSQL (a lock on the event store). Afterwards: every call placed has exactly one end
//! (the simulator's view and the store's call streams), no agent is stuck, every agent's
//! Completed / Missed / Rejected equal what the simulator's phones did, the reporting tables
//! equal a rebuild, and JetStream holds every stored event once, in store order.
//!
//! `CC_CHAOS=short` (the default; scripts/test) or `full` (`scripts/chaos --full`);
//! `CC_CHAOS_STRICT=1` (scripts/chaos) also fails on the open findings (lost calls, legs
//! ending otherwise than at the phone, counts, reporting), which are reported otherwise;
//! `CC_CHAOS_REPORT=<file>` also writes the figures there (Markdown), `CC_CHAOS_LOG=<file>`
//! keeps the services' logs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use cc_bus::{Bus, CommandContext, Subjects};
use cc_contracts::auth::CreateAgent;
use cc_contracts::call::{ConfigureQueue, QueueSettings, Strategy};
use cc_contracts::domain::{AgentNumber, DeviceId, QueueNumber};
use cc_contracts::queue::{AssignAgent, CreateQueue};
use cc_contracts::session::LoginAgent;
use cc_pbx_sim::calls::{PhoneMode, Tally};
use cc_pbx_sim::control::{AddDevice, SetPhoneMode, SetRegistered};
use cc_pbx_sim::traffic::{StartTraffic, StopTraffic};
use cc_testkit::tls::PgServer;
use cc_testkit::NatsSetup;
use futures::StreamExt;
use serde_json::Value;

use crate::process::Callcenter;
use crate::system::System;

/// A process per service target (auth with the portal, whose NATS rights seed the demo
/// tenant); the simulator (the PBX) in its own.
const GROUPS: &[&str] = &[
    "relay",
    "auth,portal",
    "agent-session",
    "queue-router",
    "call-control",
    "projection",
];
const QUEUE: &str = "700";

struct Plan {
    name: &'static str,
    agents: usize,
    rate: f64,
    /// How long a killed process stays down, nats-server and PostgreSQL stay down.
    outage: Duration,
    /// SIGSTOP of the router, the store full, the lock held.
    stop: Duration,
    full: Duration,
    lock: Duration,
    /// Steady traffic before the first fault and between faults (after recovery).
    steady: Duration,
    talk_ms: u64,
}

impl Plan {
    fn from_env() -> Plan {
        match std::env::var("CC_CHAOS").as_deref() {
            Ok("full") => Plan {
                name: "full",
                agents: 200,
                rate: 50.0,
                outage: Duration::from_secs(3),
                stop: Duration::from_secs(10),
                full: Duration::from_secs(10),
                lock: Duration::from_secs(5),
                steady: Duration::from_secs(5),
                talk_ms: 2000,
            },
            _ => Plan {
                name: "short",
                agents: 40,
                rate: 10.0,
                outage: Duration::from_secs(1),
                stop: Duration::from_secs(5),
                full: Duration::from_secs(4),
                lock: Duration::from_secs(5),
                steady: Duration::from_secs(2),
                talk_ms: 1500,
            },
        }
    }
}

/// A fault's figures.
struct Phase {
    fault: String,
    /// A UUIDv7 taken when the fault began: the simulator's channel ids (UUIDv7 too) from here
    /// to the next phase's are this phase's calls.
    from: String,
    /// Seconds from the fault's end until an offer was recorded again (None: not within 60 s).
    recovery: Option<f64>,
}

struct Chaos {
    sys: System,
    pg: PgServer,
    procs: BTreeMap<&'static str, Callcenter>,
    bus: Bus,
    ctx: CommandContext,
}

fn v7() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

impl Chaos {
    async fn pbx_get(&self, path: &str) -> Option<Value> {
        let r = self
            .sys
            .http
            .get(format!("{}/tenants/demo{path}", self.sys.pbx))
            .send()
            .await
            .ok()?;
        r.json().await.ok()
    }

    async fn tally(&self) -> Tally {
        serde_json::from_value(self.pbx_get("/tally").await.expect("the simulator answers"))
            .unwrap()
    }

    /// Retries a request while the services are starting (no responders, timeouts).
    async fn request<C: cc_bus::Command>(&self, cmd: &C) -> C::Reply {
        let mut last = None;
        for _ in 0..100 {
            match self.bus.request(&self.ctx, cmd).await {
                Ok(r) => return r,
                Err(cc_bus::RequestError::Rejected(e))
                    if e.error != "unknown_device" && e.error != "device_offline" =>
                {
                    panic!("{} refused: {e:?}", C::NAME)
                }
                Err(e) => last = Some(format!("{e:?}")),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("{} failed: {last:?}", C::NAME)
    }

    async fn setup(&self, plan: &Plan) -> Vec<String> {
        let q = QueueNumber::parse(QUEUE).unwrap();
        self.request(&CreateQueue {
            queue: q.clone(),
            name: "Chaos".into(),
        })
        .await;
        self.request(&ConfigureQueue {
            queue: q.clone(),
            settings: QueueSettings {
                strategy: Strategy::LongestIdle,
                ring_timeout_s: 3,
                wrap_up_s: 1,
                ..Default::default()
            },
        })
        .await;
        let agents: Vec<String> = (0..plan.agents).map(|i| format!("{}", 20000 + i)).collect();
        let each = futures::stream::iter(agents.iter().enumerate().map(|(i, n)| {
            let q = q.clone();
            async move {
                let (a, d) = (AgentNumber::parse(n).unwrap(), DeviceId::parse(n).unwrap());
                self.request(&CreateAgent {
                    agent: a.clone(),
                    display_name: format!("Chaos {n}"),
                    password: "chaos-secret".into(),
                    may_manage_queues: Some(false),
                })
                .await;
                self.request(&AssignAgent {
                    queue: q,
                    agent: a.clone(),
                    penalty: 0,
                })
                .await;
                self.request(&AddDevice { device: d.clone() }).await;
                // Most phones answer 80 % of their rings; every tenth rejects them all.
                let mode = if i % 10 == 9 {
                    PhoneMode::Reject { after_ms: 400 }
                } else {
                    PhoneMode::Agent {
                        after_ms: 300,
                        probability: 0.8,
                        talk_ms: plan.talk_ms,
                    }
                };
                self.request(&SetPhoneMode {
                    device: d.clone(),
                    mode,
                })
                .await;
                self.request(&SetRegistered {
                    device: d,
                    registered: true,
                })
                .await;
                self.request(&LoginAgent {
                    agent: a,
                    device: None,
                    queues: None,
                })
                .await;
            }
        }))
        .buffer_unordered(8);
        each.collect::<Vec<()>>().await;
        agents
    }

    /// Starts a group's process again and waits until it is ready; like an orchestrator,
    /// starts it once more when it exits (returns how many extra starts that took).
    async fn respawn(&mut self, group: &'static str) -> usize {
        let mut extra = 0;
        let p = self.sys.spawn_services(group);
        self.procs.insert(group, p);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            let p = self.procs.get_mut(group).unwrap();
            if p.exited() {
                extra += 1;
                let p = self.sys.spawn_services(group);
                self.procs.insert(group, p);
                continue;
            }
            let ready = self
                .sys
                .http
                .get(p.admin("/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ready {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        extra
    }

    /// Seconds from now until an offer is recorded after now (None: not within 60 s).
    async fn recovery(&self) -> Option<f64> {
        let since = chrono::Utc::now();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(60) {
            let n: Result<i64, _> = sqlx::query_scalar(
                "select count(*) from es_events where event_type = 'CallOffered' and recorded_at > $1",
            )
            .bind(since)
            .fetch_one(&self.sys.db.pool)
            .await;
            if n.is_ok_and(|n| n > 0) {
                return Some(t.elapsed().as_secs_f64());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    /// The events stream's limits: `Some(bytes)`: at most that many, new messages refused.
    async fn limit_events_stream(&self, bytes: Option<i64>) {
        let js = async_nats::jetstream::new(self.sys.operator_nats().await.unwrap());
        let mut stream = js
            .get_stream(format!("{}_EVENTS", self.sys.prefix.to_uppercase()))
            .await
            .unwrap();
        let info = stream.info().await.unwrap().clone();
        let mut config = info.config;
        match bytes {
            Some(room) => {
                config.max_bytes = info.state.bytes as i64 + room;
                config.discard = async_nats::jetstream::stream::DiscardPolicy::New;
            }
            None => {
                config.max_bytes = -1;
                config.discard = async_nats::jetstream::stream::DiscardPolicy::Old;
            }
        }
        js.update_stream(config).await.unwrap();
    }

    /// Injects one fault; returns when it is over (the process back, the server up, ...).
    async fn inject(&mut self, fault: &str, plan: &Plan) -> usize {
        match fault.split_once(' ') {
            Some(("kill", group)) => {
                let group = GROUPS.iter().find(|g| **g == group).unwrap();
                self.procs.get_mut(group).unwrap().kill();
                tokio::time::sleep(plan.outage).await;
                return self.respawn(group).await;
            }
            Some(("stop", group)) => {
                let p = &self.procs[group];
                p.signal("STOP");
                tokio::time::sleep(plan.stop).await;
                p.signal("CONT");
            }
            _ if fault == "restart nats-server" => {
                self.sys.nats.stop();
                tokio::time::sleep(plan.outage).await;
                self.sys.nats.restart();
            }
            _ if fault == "restart postgresql" => {
                self.pg.stop();
                tokio::time::sleep(plan.outage).await;
                self.pg.restart();
            }
            _ if fault == "jetstream full" => {
                self.limit_events_stream(Some(16 * 1024)).await;
                tokio::time::sleep(plan.full).await;
                self.limit_events_stream(None).await;
            }
            _ if fault == "slow postgresql" => {
                let mut tx = self.sys.db.pool.begin().await.unwrap();
                sqlx::query("lock table es_events in exclusive mode")
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                sqlx::query(&format!("select pg_sleep({})", plan.lock.as_secs_f64()))
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
            }
            _ => panic!("no fault {fault}"),
        }
        0
    }

    /// Waits until the simulator has no call, no event arrived for 3 s and both projections
    /// have projected every event (at most `within`).
    async fn settle(&self, within: Duration) -> bool {
        let t = Instant::now();
        let mut last = -1;
        while t.elapsed() < within {
            tokio::time::sleep(Duration::from_secs(3)).await;
            let live = self
                .pbx_get("/channels")
                .await
                .and_then(|v| v.as_array().map(|a| a.len()))
                .unwrap_or(usize::MAX);
            let n: i64 = sqlx::query_scalar("select count(*) from es_events")
                .fetch_one(&self.sys.db.pool)
                .await
                .unwrap_or(-2);
            let caught_up: bool = sqlx::query_scalar(
                "select coalesce((select (xid, position) from es_events order by xid desc, position desc limit 1)
                     = all (select (xid, position) from rm_checkpoints where name = 'portal'
                            union all select (xid, position) from reporting.checkpoint), false)",
            )
            .fetch_one(&self.sys.db.pool)
            .await
            .unwrap_or(false);
            if live == 0 && n == last && caught_up {
                return true;
            }
            last = n;
        }
        false
    }
}

/// Every row of every reporting table, as text, in key order.
async fn reporting_snapshot(pool: &sqlx::PgPool) -> Vec<String> {
    let mut out = vec![];
    for (table, key) in [
        ("tenants", "tenant"),
        ("queues", "tenant, queue"),
        ("calls", "tenant, call"),
        ("call_segments", "tenant, call, seq"),
        ("agent_states", "tenant, agent, seq"),
        ("agent_logins", "tenant, login_id"),
    ] {
        let rows: Vec<String> = sqlx::query_scalar(&format!(
            "select t::text from reporting.{table} t order by {key}"
        ))
        .fetch_all(pool)
        .await
        .unwrap();
        out.extend(rows.into_iter().map(|r| format!("{table} {r}")));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_every_fault_under_traffic_loses_nothing() {
    let plan = Plan::from_env();
    let started = Instant::now();
    let pg = PgServer::start_plain();
    let mut sys = System::unstarted_on(Some(&pg.url()), NatsSetup::default()).await;
    sys.env = vec![
        ("CC_DATABASE_MAX_CONNECTIONS".into(), "8".into()),
        ("CC_LOG".into(), "warn".into()),
    ];
    // CC_CHAOS_LOG=<file>: the services' log lines.
    sys.log = std::env::var_os("CC_CHAOS_LOG").map(Into::into);
    let mut procs = BTreeMap::new();
    procs.insert("pbx-sim", sys.spawn_services("pbx-sim"));
    for g in GROUPS {
        procs.insert(*g, sys.spawn_services(g));
    }
    sys.wait_ready("demo").await;
    let client = sys.operator_nats().await.unwrap();
    let bus = Bus::new(client, Subjects::new(&sys.prefix));
    let mut chaos = Chaos {
        sys,
        pg,
        procs,
        bus,
        ctx: CommandContext::new("demo", "chaos"),
    };
    let agents = chaos.setup(&plan).await;
    eprintln!(
        "chaos {}: {} agents logged in, {} processes, {:.0} s",
        plan.name,
        agents.len(),
        chaos.procs.len(),
        started.elapsed().as_secs_f64()
    );

    let mut faults: Vec<String> = GROUPS.iter().map(|g| format!("kill {g}")).collect();
    faults.extend(
        [
            "stop queue-router",
            "restart nats-server",
            "restart postgresql",
            "jetstream full",
            "slow postgresql",
        ]
        .map(String::from),
    );
    chaos
        .request(&StartTraffic {
            queues: vec![QUEUE.into()],
            calls_per_second: plan.rate,
            duration_s: 3600,
            patience_ms: 8000,
            phones: None,
            caller_prefix: "555".into(),
        })
        .await;
    tokio::time::sleep(plan.steady).await;
    let mut phases = vec![];
    let mut restarts: Vec<String> = vec![];
    for fault in &faults {
        let from = v7();
        let t = Instant::now();
        let extra = chaos.inject(fault, &plan).await;
        if extra > 0 {
            restarts.push(format!("{fault}: started {extra} more time(s)"));
        }
        let recovery = chaos.recovery().await;
        eprintln!(
            "chaos: {fault}: {:.1} s, recovery {recovery:?} s",
            t.elapsed().as_secs_f64()
        );
        phases.push(Phase {
            fault: fault.clone(),
            from,
            recovery,
        });
        tokio::time::sleep(plan.steady).await;
    }
    let end_of_faults = v7();
    // The traffic stops (a restart of nats-server may have cut the simulator's requests: retry).
    chaos.request(&StopTraffic {}).await;
    let settled = chaos.settle(Duration::from_secs(90)).await;
    let mut problems: Vec<String> = vec![];
    for (group, p) in chaos.procs.iter_mut() {
        if p.exited() {
            problems.push(format!("the {group} process exited"));
        }
    }

    // Calls: the simulator's callers and the store's call streams.
    let tally = chaos.tally().await;
    let pool = &chaos.sys.db.pool;
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "select e.data->>'channel', e.stream, (select count(*) from es_events t where t.stream = e.stream
                 and t.event_type in ('CallEnded', 'CallAbandoned', 'CallLeftQueue'))
           from es_events e where e.event_type = 'CallEnteredQueue' and e.tenant = 'demo'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let store_ends: HashMap<String, (String, i64)> =
        rows.into_iter().map(|(c, s, n)| (c, (s, n))).collect();
    let phase_of = |channel: &str| {
        phases
            .iter()
            .rposition(|p| p.from.as_str() <= channel)
            .filter(|_| channel < end_of_faults.as_str())
    };
    let mut lost: Vec<(Option<usize>, String)> = vec![];
    let mut placed: HashMap<Option<usize>, usize> = HashMap::new();
    for (channel, hangups) in &tally.inbound {
        *placed.entry(phase_of(channel)).or_default() += 1;
        let ends = store_ends.get(channel).map(|(_, n)| *n);
        if *hangups != 1 || ends != Some(1) {
            lost.push((
                phase_of(channel),
                format!("caller {channel}: {hangups} hang-ups at the PBX, store ends {ends:?}"),
            ));
        }
    }
    let sim_channels: HashSet<&String> = tally.inbound.keys().collect();
    for (channel, (stream, _)) in &store_ends {
        if !sim_channels.contains(channel) {
            problems.push(format!("{stream}: a call the simulator never placed"));
        }
    }

    // Agents: not stuck, and their counts are those of the simulator's phones.
    let views: Vec<(String, Value)> = sqlx::query_as(
        "select agent, view from rm_agents where tenant = 'demo' and agent like '2%'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let call_channel: HashMap<String, String> = store_ends
        .iter()
        .map(|(ch, (stream, _))| (stream.trim_start_matches("call-").to_string(), ch.clone()))
        .collect();
    let mut stuck: Vec<(Option<usize>, String)> = vec![];
    let mut miscounted: Vec<String> = vec![];
    for (agent, v) in &views {
        let status = v["status"].as_str().unwrap_or("?");
        if !matches!(status, "idle" | "paused") {
            let call = v["current_call"]["call"].as_str().unwrap_or("");
            let phase = call_channel.get(call).and_then(|c| phase_of(c));
            stuck.push((phase, format!("agent {agent} {status} (call {call})")));
        }
    }
    // Leg by leg: how the store says each offer ended, against the simulator's phone.
    let offers: Vec<(String, String, String)> = sqlx::query_as(
        "select data->>'offer', data->>'agent', event_type from es_events
          where tenant = 'demo' and event_type in ('CallAnswered', 'OfferTimedOut', 'OfferRejected', 'OfferWithdrawn')",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut product_legs: HashMap<String, (String, String)> = HashMap::new();
    for (o, a, t) in offers {
        if let Some((_, first)) = product_legs.insert(o.clone(), (a, t.clone())) {
            problems.push(format!("offer {o} ended twice in the store: {first}, {t}"));
        }
    }
    let mut legs_differ: Vec<(Option<usize>, String)> = vec![];
    // Known and measured (docs/reliability.md), reported, not failures: an answer that reached
    // the router after the ring deadline it judged by (a stalled router), and a leg whose
    // answer fact the simulator could not report while nats-server was down.
    let mut late: Vec<(Option<usize>, String)> = vec![];
    let nats_phase = phases.iter().position(|p| p.fault == "restart nats-server");
    // What each agent's counts must be: its phone's outcomes (a late or unreported answer: as
    // the store judged it).
    let mut expected_counts: HashMap<&str, (u64, u64, u64)> = HashMap::new();
    for (leg, (device, outcome)) in &tally.legs {
        let product = product_legs.get(leg).map(|(_, t)| t.as_str());
        // The router's offer ids are `ccq-<UUIDv7>`.
        let phase = phase_of(leg.strip_prefix("ccq-").unwrap_or(leg));
        let expected = match outcome.as_str() {
            "completed" => "CallAnswered",
            "missed" | "late_answer" => "OfferTimedOut",
            "rejected" | "busy" => "OfferRejected",
            _ => "OfferWithdrawn",
        };
        let unreported = tally.unreported > 0 && phase == nats_phase && outcome == "completed";
        let judged = if outcome == "late_answer" || (unreported && product != Some(expected)) {
            late.push((
                phase,
                format!("leg {leg} of {device}: {outcome}, the store {product:?}"),
            ));
            product.unwrap_or("")
        } else {
            if product != Some(expected) {
                legs_differ.push((
                    phase,
                    format!("leg {leg} of {device}: the phone {outcome}, the store {product:?}"),
                ));
            }
            expected
        };
        let counts = expected_counts.entry(device.as_str()).or_default();
        match judged {
            "CallAnswered" => counts.0 += 1,
            "OfferTimedOut" => counts.1 += 1,
            "OfferRejected" => counts.2 += 1,
            _ => {}
        }
    }
    for (agent, v) in &views {
        let c = &v["counts"];
        let product = (
            c["completed"].as_u64().unwrap_or(0),
            c["missed"].as_u64().unwrap_or(0),
            c["rejected"].as_u64().unwrap_or(0),
        );
        let sim = expected_counts
            .get(agent.as_str())
            .copied()
            .unwrap_or_default();
        if product != sim {
            miscounted.push(format!(
                "agent {agent}: completed/missed/rejected {product:?}, by the simulator's phones {sim:?}"
            ));
        }
    }
    if views.len() != agents.len() {
        problems.push(format!("{} agent views of {}", views.len(), agents.len()));
    }

    // Reporting: the live tables equal a rebuild from the store (taken again when an event
    // arrived meanwhile: a late reconciliation of the router).
    let events = || async {
        sqlx::query_scalar::<_, i64>("select count(*) from es_events")
            .fetch_one(pool)
            .await
            .unwrap()
    };
    let mut reporting_diff = 0;
    for attempt in 0..3 {
        let before = events().await;
        chaos.settle(Duration::from_secs(20)).await;
        let live = reporting_snapshot(pool).await;
        let out = Callcenter::output(
            &chaos.sys.db.url,
            &chaos.sys.nats.url(),
            &["rebuild", "--projection", "reporting"],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rebuilt = reporting_snapshot(pool).await;
        if events().await != before && attempt < 2 {
            continue;
        }
        let live_set: HashSet<&String> = live.iter().collect();
        let rebuilt_set: HashSet<&String> = rebuilt.iter().collect();
        reporting_diff = live_set.symmetric_difference(&rebuilt_set).count();
        if reporting_diff > 0 {
            problems.push(format!(
                "reporting: {reporting_diff} rows differ from a rebuild ({} live, {} rebuilt), e.g. {:?}",
                live.len(),
                rebuilt.len(),
                live_set.symmetric_difference(&rebuilt_set).take(3).collect::<Vec<_>>()
            ));
        }
        break;
    }

    // JetStream: every stored event once, in store order (an outside client reads the stream).
    let stored: Vec<String> =
        sqlx::query_scalar("select event_id::text from es_events order by xid, position")
            .fetch_all(pool)
            .await
            .unwrap();
    let js = async_nats::jetstream::new(chaos.sys.operator_nats().await.unwrap());
    let stream = js
        .get_stream(format!("{}_EVENTS", chaos.sys.prefix.to_uppercase()))
        .await
        .unwrap();
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await
        .unwrap();
    let pending = consumer.cached_info().num_pending as usize;
    let mut messages = consumer.messages().await.unwrap();
    let mut published = Vec::with_capacity(pending);
    for _ in 0..pending {
        let m = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("the stream delivers")
            .unwrap()
            .unwrap();
        let h = m.headers.as_ref().unwrap();
        if h.get("Cc-Copy").is_none() {
            published.push(h.get("ce-id").unwrap().as_str().to_string());
        }
    }
    let unique: HashSet<&String> = published.iter().collect();
    let duplicated = published.len() - unique.len();
    let stored_set: HashSet<&String> = stored.iter().collect();
    let missing = stored_set.difference(&unique).count();
    let extra = unique.difference(&stored_set).count();
    if duplicated + missing + extra > 0 || published != stored {
        problems.push(format!(
            "JetStream: {} messages for {} stored events: {duplicated} duplicated, {missing} missing, {extra} unknown, order {}",
            published.len(),
            stored.len(),
            if published == stored { "same" } else { "differs" }
        ));
    }

    // The figures.
    let count =
        |v: &[(Option<usize>, String)], i: Option<usize>| v.iter().filter(|(p, _)| *p == i).count();
    let mut report = format!(
        "Chaos suite, {} form: {} agents, {} calls/s, {} processes; {:.0} s in all.\n\n\
         | fault | calls placed | lost | stuck agents | legs differing | late answers | recovery (s) |\n|---|---|---|---|---|---|---|\n",
        plan.name,
        agents.len(),
        plan.rate,
        chaos.procs.len(),
        started.elapsed().as_secs_f64()
    );
    let mut rows: Vec<(String, Option<usize>, Option<f64>)> =
        vec![("(steady traffic before the faults)".into(), None, Some(0.0))];
    rows.extend(
        phases
            .iter()
            .enumerate()
            .map(|(i, p)| (p.fault.clone(), Some(i), p.recovery)),
    );
    for (name, i, recovery) in rows {
        report.push_str(&format!(
            "| {name} | {} | {} | {} | {} | {} | {} |\n",
            placed.get(&i).copied().unwrap_or(0),
            count(&lost, i),
            count(&stuck, i),
            count(&legs_differ, i),
            count(&late, i),
            recovery.map_or("not within 60 s".into(), |r| format!("{r:.1}"))
        ));
    }
    report.push_str(&format!(
        "\nIn all: {} calls placed, {} lost, {} agents stuck, {} legs rung, {} ending otherwise \
         in the store than at the phone, {} late answers, {} agents miscounted, {} facts the \
         simulator could not report, reporting rows differing from a rebuild: {reporting_diff}, \
         JetStream: {} events, {duplicated} duplicated, {missing} missing.\n",
        tally.inbound.len(),
        lost.len(),
        stuck.len(),
        tally.legs.len(),
        legs_differ.len(),
        late.len(),
        miscounted.len(),
        tally.unreported,
        published.len()
    ));
    for r in &restarts {
        report.push_str(&format!(
            "A process that exited at once on its restart, started again: {r}.\n"
        ));
    }
    eprintln!("{report}");
    if let Ok(file) = std::env::var("CC_CHAOS_REPORT") {
        std::fs::write(file, &report).unwrap();
    }
    // What the product does not survive yet (docs/reliability.md, "Open defects"): fatal with
    // CC_CHAOS_STRICT=1 (scripts/chaos), reported otherwise (scripts/test).
    let mut open: Vec<String> = vec![];
    open.extend(lost.iter().take(10).map(|(_, l)| l.clone()));
    open.extend(miscounted.iter().take(10).cloned());
    open.extend(
        legs_differ
            .iter()
            .take(20)
            .map(|(p, l)| format!("{l} (during {:?})", p.map(|i| &phases[i].fault))),
    );
    if !settled {
        open.push("the system did not settle within 90 s (a call left at the PBX)".into());
    }
    if reporting_diff > 0 {
        open.push(format!(
            "reporting: {reporting_diff} rows differ from a rebuild"
        ));
    }
    problems
        .retain(|p| !p.starts_with("reporting:") && !p.starts_with("the system did not settle"));
    problems.extend(stuck.iter().take(10).map(|(_, s)| s.clone()));
    let strict = std::env::var("CC_CHAOS_STRICT").is_ok_and(|v| v == "1");
    if !open.is_empty() {
        eprintln!(
            "chaos: {} open finding(s){}:\n{}",
            open.len(),
            if strict {
                ""
            } else {
                " (not fatal without CC_CHAOS_STRICT=1)"
            },
            open.join("\n")
        );
    }
    assert!(
        problems.is_empty() && stuck.is_empty() && (!strict || open.is_empty()),
        "{report}\n{}\n{}",
        problems.join("\n"),
        open.join("\n")
    );
}
