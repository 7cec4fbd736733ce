//! The chaos suite's rig: the plan (short or full), the system split over processes, the
//! agents and their phones, each fault, the recovery time and the settling.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use cc_bus::{Bus, CommandContext};
use cc_contracts::auth::CreateAgent;
use cc_contracts::call::{ConfigureQueue, QueueSettings, Strategy};
use cc_contracts::domain::{AgentNumber, DeviceId, QueueNumber};
use cc_contracts::queue::{AssignAgent, CreateQueue};
use cc_contracts::session::LoginAgent;
use cc_pbx_sim::calls::{PhoneMode, Tally};
use cc_pbx_sim::control::{AddDevice, SetPhoneMode, SetRegistered};
use cc_testkit::tls::PgServer;
use futures::StreamExt;
use serde_json::Value;

use crate::process::Callcenter;
use crate::system::System;

/// A process per service target (auth with the portal, whose NATS rights seed the demo
/// tenant); the simulator (the PBX) in its own.
pub const GROUPS: &[&str] = &[
    "relay",
    "auth,portal",
    "agent-session",
    "queue-router",
    "call-control",
    "projection",
];
pub const QUEUE: &str = "700";

/// How long calls may wait for routing after a NATS node is SIGKILLed. A stream (or durable
/// consumer) the node led has no leader until the two others elect one, and a follower of
/// nats-server waits 4-9 s for a lost leader before it campaigns (its Raft election timeout,
/// `minElectionTimeoutDefault`..`maxElectionTimeoutDefault` in server/raft.go, not
/// configurable), then up to 0.8 s more to campaign; meanwhile a PBX fact finds no stream and
/// is sent again. Nothing is lost in that time (the tests check every call), it is delayed:
/// most losses delay calls by well under a second (the node led nothing a call needs), one
/// that led the PBX stream by up to the election.
pub const NATS_ELECTION: Duration = Duration::from_secs(12);

pub struct Plan {
    pub name: &'static str,
    pub agents: usize,
    pub rate: f64,
    /// How long a killed process stays down, nats-server and PostgreSQL stay down.
    pub outage: Duration,
    /// SIGSTOP of the router, the store full, the lock held.
    pub stop: Duration,
    pub full: Duration,
    pub lock: Duration,
    /// Steady traffic before the first fault and between faults (after recovery).
    pub steady: Duration,
    pub talk_ms: u64,
}

impl Plan {
    pub fn from_env() -> Plan {
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
pub struct Phase {
    pub fault: String,
    /// A UUIDv7 taken when the fault began: the simulator's channel ids (UUIDv7 too) from here
    /// to the next phase's are this phase's calls.
    pub from: String,
    /// Seconds from the fault's end until an offer was recorded again (None: not within 60 s).
    pub recovery: Option<f64>,
}

pub struct Chaos {
    pub sys: System,
    pub pg: PgServer,
    pub procs: BTreeMap<&'static str, Callcenter>,
    pub bus: Bus,
    pub ctx: CommandContext,
}

pub fn v7() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

impl Chaos {
    pub async fn pbx_get(&self, path: &str) -> Option<Value> {
        let r = self
            .sys
            .http
            .get(format!("{}/tenants/demo{path}", self.sys.pbx))
            .send()
            .await
            .ok()?;
        r.json().await.ok()
    }

    pub async fn tally(&self) -> Tally {
        serde_json::from_value(self.pbx_get("/tally").await.expect("the simulator answers"))
            .unwrap()
    }

    /// Retries a request while the services are starting (no responders, timeouts, a device
    /// not yet seen online), for up to 60 s: on a loaded machine agent-session can take 20 s
    /// to see the simulated phones registered.
    pub async fn request<C: cc_bus::Command>(&self, cmd: &C) -> C::Reply {
        let mut last = None;
        for _ in 0..300 {
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

    pub async fn setup(&self, plan: &Plan) -> Vec<String> {
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
    pub async fn respawn(&mut self, group: &'static str) -> usize {
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
    pub async fn recovery(&self) -> Option<f64> {
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
    pub async fn limit_events_stream(&self, bytes: Option<i64>) {
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
    pub async fn inject(&mut self, fault: &str, plan: &Plan) -> usize {
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
    /// Waits for the system to settle; `Err` says what was still going on.
    pub async fn settle(&self, within: Duration) -> Result<(), String> {
        let t = Instant::now();
        let mut last = -1;
        let mut why = String::new();
        while t.elapsed() < within {
            tokio::time::sleep(Duration::from_secs(3)).await;
            let live = self.pbx_get("/channels").await;
            let channels = live.as_ref().and_then(|v| v.as_array().map(|a| a.len()));
            let n: i64 = sqlx::query_scalar("select count(*) from es_events")
                .fetch_one(&self.sys.db.pool)
                .await
                .unwrap_or(-2);
            let caught_up: bool = sqlx::query_scalar(
                "select coalesce((select (xid, position) from es_events order by xid desc, position desc limit 1)
                     = all (select (xid, position) from rm_checkpoints where name ~ '^portal(/p[0-9]+)?$'
                            union all select (xid, position) from reporting.checkpoint), false)",
            )
            .fetch_one(&self.sys.db.pool)
            .await
            .unwrap_or(false);
            if channels == Some(0) && n == last && caught_up {
                return Ok(());
            }
            why = format!(
                "channels at the PBX: {}; events: {n} (before: {last}); projections at the head: {caught_up}",
                live.map_or("unknown".into(), |v| v.to_string())
            );
            last = n;
        }
        Err(why)
    }
}

/// The calls of the store that the simulator never placed.
pub fn calls_never_placed(tally: &Tally, ends: &HashMap<String, (String, i64)>) -> Vec<String> {
    ends.iter()
        .filter(|(channel, _)| !tally.inbound.contains_key(*channel))
        .map(|(_, (stream, _))| format!("{stream}: a call the simulator never placed"))
        .collect()
}

/// The agents of `views` ([`Chaos::agent_views`]) neither Idle nor Paused: (their call's id,
/// what they are).
pub fn stuck_agents(views: &[(String, Value)]) -> Vec<(String, String)> {
    views
        .iter()
        .filter_map(|(agent, v)| {
            let status = v["status"].as_str().unwrap_or("?");
            let call = v["current_call"]["call"].as_str().unwrap_or("");
            (!matches!(status, "idle" | "paused")).then(|| {
                (
                    call.to_string(),
                    format!("agent {agent} {status} (call {call})"),
                )
            })
        })
        .collect()
}

impl Chaos {
    /// The callers whose call did not end exactly once at the PBX and once in the store
    /// (`ends`: [`Chaos::store_call_ends`]): (channel, what happened, with the call's history).
    pub async fn calls_not_ended_once(
        &self,
        tally: &Tally,
        ends: &HashMap<String, (String, i64)>,
    ) -> Vec<(String, String)> {
        let mut out = vec![];
        for (channel, hangups) in &tally.inbound {
            let stored = ends.get(channel).map(|(_, n)| *n);
            if *hangups == 1 && stored == Some(1) {
                continue;
            }
            let history: Option<String> = match ends.get(channel) {
                Some((stream, _)) => sqlx::query_scalar(
                    "select string_agg(event_type, ' ' order by version) from es_events where stream = $1",
                )
                .bind(stream)
                .fetch_one(&self.sys.db.pool)
                .await
                .unwrap(),
                None => None,
            };
            out.push((
                channel.clone(),
                format!(
                    "caller {channel}: {hangups} hang-ups at the PBX, store ends {stored:?} ({})",
                    history.as_deref().unwrap_or("no call stream")
                ),
            ));
        }
        out
    }

    /// Every call of the demo tenant the store saw enter a queue: its channel, and its call
    /// stream with how many ends (`CallEnded`, `CallAbandoned`, `CallLeftQueue`) it holds.
    pub async fn store_call_ends(&self) -> HashMap<String, (String, i64)> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "select e.data->>'channel', e.stream, (select count(*) from es_events t where t.stream = e.stream
                     and t.event_type in ('CallEnded', 'CallAbandoned', 'CallLeftQueue'))
               from es_events e where e.event_type = 'CallEnteredQueue' and e.tenant = 'demo'",
        )
        .fetch_all(&self.sys.db.pool)
        .await
        .unwrap();
        rows.into_iter().map(|(c, s, n)| (c, (s, n))).collect()
    }

    /// The portal views of the agents [`Chaos::setup`] made (numbers 2xxxx).
    pub async fn agent_views(&self) -> Vec<(String, Value)> {
        sqlx::query_as(
            "select agent, view from rm_agents where tenant = 'demo' and agent like '2%'",
        )
        .fetch_all(&self.sys.db.pool)
        .await
        .unwrap()
    }
}

/// Every row of every reporting table, as text, in key order.
pub async fn reporting_snapshot(pool: &sqlx::PgPool) -> Vec<String> {
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

impl Chaos {
    /// Reporting: the live tables equal a rebuild from the store (taken again when an event
    /// arrived meanwhile: a late reconciliation of the router). Returns how many rows differ.
    pub async fn reporting_against_rebuild(&self, problems: &mut Vec<String>) -> usize {
        let pool = &self.sys.db.pool;
        let events = || async {
            sqlx::query_scalar::<_, i64>("select count(*) from es_events")
                .fetch_one(pool)
                .await
                .unwrap()
        };
        let mut reporting_diff = 0;
        for attempt in 0..3 {
            let before = events().await;
            let _ = self.settle(Duration::from_secs(20)).await;
            let live = reporting_snapshot(pool).await;
            let out = Callcenter::output(
                &self.sys.db.url,
                &self.sys.nats.url(),
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
        reporting_diff
    }

    /// JetStream: every stored event once, in store order (an outside client reads the
    /// stream). Returns the messages read (copies aside), the duplicated and the missing.
    /// The PBX's channel reports of the demo tenant, in the order of its stream.
    pub async fn pbx_reports(&self) -> PbxOrder {
        let js = async_nats::jetstream::new(self.sys.operator_nats().await.unwrap());
        let stream = js
            .get_stream(format!("{}_PBX", self.sys.prefix.to_uppercase()))
            .await
            .unwrap();
        let consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
                filter_subject: format!("{}.pbx.evt.demo.channel.>", self.sys.prefix),
                ..Default::default()
            })
            .await
            .unwrap();
        let pending = consumer.cached_info().num_pending as usize;
        let mut messages = consumer.messages().await.unwrap();
        let mut order = PbxOrder::default();
        for _ in 0..pending {
            let m = tokio::time::timeout(Duration::from_secs(10), messages.next())
                .await
                .expect("the PBX stream delivers")
                .unwrap()
                .unwrap();
            let seq = m.info().unwrap().stream_sequence;
            // <prefix>.pbx.evt.demo.channel.<channel>.<type>
            let mut parts = m.subject.rsplitn(3, '.');
            let (kind, channel) = (parts.next().unwrap(), parts.next().unwrap());
            order
                .channels
                .entry(channel.to_string())
                .or_default()
                .push((seq, kind.to_string()));
        }
        order
    }

    pub async fn jetstream_against_store(
        &self,
        problems: &mut Vec<String>,
    ) -> (usize, usize, usize) {
        let pool = &self.sys.db.pool;
        let stored: Vec<String> =
            sqlx::query_scalar("select event_id::text from es_events order by xid, position")
                .fetch_all(pool)
                .await
                .unwrap();
        let js = async_nats::jetstream::new(self.sys.operator_nats().await.unwrap());
        let stream = js
            .get_stream(format!("{}_EVENTS", self.sys.prefix.to_uppercase()))
            .await
            .unwrap();
        // With a cluster node down, nats-server before 2.15.1 places about one ephemeral
        // consumer in three on the offline node, and its creation times out: try again.
        let mut attempts = 0;
        let consumer = loop {
            attempts += 1;
            match stream
                .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
                .await
            {
                Ok(c) => break c,
                Err(e) if attempts < 5 => eprintln!("reading the events stream: {e}; again"),
                Err(e) => panic!("cannot read the events stream: {e}"),
            }
        };
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
        (published.len(), duplicated, missing)
    }
}

/// The PBX's channel reports by channel: (stream sequence, report type), in stream order.
#[derive(Default)]
pub struct PbxOrder {
    channels: HashMap<String, Vec<(u64, String)>>,
}

impl PbxOrder {
    /// Where the first of `kinds` was reported for `channel`.
    pub fn first(&self, channel: &str, kinds: &[&str]) -> Option<u64> {
        self.channels
            .get(channel)?
            .iter()
            .find(|(_, k)| kinds.contains(&k.as_str()))
            .map(|(seq, _)| *seq)
    }

    /// Where `channel`'s hangup was reported.
    pub fn end(&self, channel: &str) -> Option<u64> {
        self.first(channel, &["ChannelHungUp"])
    }
}
