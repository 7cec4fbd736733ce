//! Live updates over Server-Sent Events.
//!
//! The projection publishes every changed view on `<p>.views.<tenant>.agent.<agent>`. One NATS
//! subscription per portal process feeds a [`Hub`] that fans changes out to the open streams.
//!
//! An agent's stream sends `event: agent`, `id: <view version>`, `data: <view>`. On connect it
//! first sends what the browser has not seen: every change after `Last-Event-ID` (from the
//! read model's change history), or the current view (also when `Last-Event-ID` is ahead of
//! the view). Changes are sent once each, in version order, whatever the race between the
//! replay and the live feed. A supervisor's stream sends
//! every agent of the tenant (a snapshot first, then each change), and the queues' figures
//! (`event: queues`: now and today, [`crate::api::supervisor::queue_figures`]) at once and
//! whenever the reporting projection says they changed (`<p>.views.<tenant>.queues.today`).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, KeepAliveStream, Sse};
use cc_contracts::auth::Authenticate;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::broadcast;

use crate::error::ApiResult;
use crate::identity::Authed;
use crate::route::{Events, JsonText, LastEventId, Route, Tag, AGENT, SUPERVISORS};
use crate::Portal;

/// One changed view, ready to send.
#[derive(Debug)]
pub struct Change {
    pub agent: String,
    pub version: i64,
    pub json: String,
}

type Key = (String, String);

/// Fans view changes out to the open streams, per agent and per tenant.
#[derive(Default)]
pub struct Hub {
    agents: Mutex<HashMap<Key, broadcast::Sender<Arc<Change>>>>,
    tenants: Mutex<HashMap<String, broadcast::Sender<Arc<Change>>>>,
    /// Per tenant: its queue figures changed (the streams read them again).
    queues: Mutex<HashMap<String, broadcast::Sender<()>>>,
}

/// Per-agent buffer; a reader that falls further behind catches up from the change history.
const CAPACITY: usize = 8;

impl Hub {
    pub fn subscribe_agent(&self, tenant: &str, agent: &str) -> broadcast::Receiver<Arc<Change>> {
        let mut m = self.agents.lock().unwrap();
        m.entry((tenant.to_string(), agent.to_string()))
            .or_insert_with(|| broadcast::channel(CAPACITY).0)
            .subscribe()
    }

    pub fn subscribe_tenant(&self, tenant: &str) -> broadcast::Receiver<Arc<Change>> {
        let mut m = self.tenants.lock().unwrap();
        m.entry(tenant.to_string())
            .or_insert_with(|| broadcast::channel(CAPACITY).0)
            .subscribe()
    }

    pub fn subscribe_queues(&self, tenant: &str) -> broadcast::Receiver<()> {
        let mut m = self.queues.lock().unwrap();
        m.entry(tenant.to_string())
            .or_insert_with(|| broadcast::channel(CAPACITY).0)
            .subscribe()
    }

    /// The tenant's queue figures changed.
    pub fn queues_changed(&self, tenant: &str) {
        let mut m = self.queues.lock().unwrap();
        if let Some(tx) = m.get(tenant) {
            if tx.send(()).is_err() {
                m.remove(tenant);
            }
        }
    }

    pub fn dispatch(&self, tenant: &str, change: Change) {
        let change = Arc::new(change);
        {
            let mut m = self.agents.lock().unwrap();
            let key = (tenant.to_string(), change.agent.clone());
            if let Some(tx) = m.get(&key) {
                if tx.send(change.clone()).is_err() {
                    m.remove(&key); // nobody listens any more
                }
            }
        }
        let mut m = self.tenants.lock().unwrap();
        if let Some(tx) = m.get(tenant) {
            if tx.send(change).is_err() {
                m.remove(tenant);
            }
        }
    }

    /// Open streams (for metrics and tests).
    pub fn listeners(&self) -> usize {
        self.agents
            .lock()
            .unwrap()
            .values()
            .map(|s| s.receiver_count())
            .sum::<usize>()
            + self
                .tenants
                .lock()
                .unwrap()
                .values()
                .map(|s| s.receiver_count())
                .sum::<usize>()
    }
}

/// Feeds the hub from NATS until cancelled.
pub async fn feed(p: Portal) -> anyhow::Result<()> {
    let mut sub = p
        .ctx
        .bus
        .client
        .subscribe(p.ctx.bus.subjects.all_views())
        .await?;
    loop {
        let msg = tokio::select! {
            _ = p.ctx.cancel.cancelled() => return Ok(()),
            m = sub.next() => match m { Some(m) => m, None => return Ok(()) },
        };
        let (tenant, agent) = match p.ctx.bus.subjects.parse_view(msg.subject.as_str()) {
            Some((tenant, "agent", agent)) => (tenant, agent),
            Some((tenant, "queues", _)) => {
                p.hub.queues_changed(tenant);
                continue;
            }
            _ => continue,
        };
        let Ok(json) = std::str::from_utf8(&msg.payload) else {
            continue;
        };
        let version = serde_json::from_str::<serde_json::Value>(json)
            .ok()
            .and_then(|v| v["version"].as_i64())
            .unwrap_or(0);
        let trace = cc_bus::header(msg.headers.as_ref(), cc_trace::TRACEPARENT);
        let change = Change {
            agent: agent.to_string(),
            version,
            json: json.to_string(),
        };
        match trace {
            Some(t) => cc_trace::following(
                tracing::info_span!("portal sse push", otel.kind = "consumer", %agent, version),
                Some(&t),
            )
            .in_scope(|| p.hub.dispatch(tenant, change)),
            None => p.hub.dispatch(tenant, change),
        }
    }
}

fn agent_event(version: i64, json: String) -> Event {
    Event::default()
        .event("agent")
        .id(version.to_string())
        .data(json)
}

struct AgentStream {
    portal: Portal,
    tenant: String,
    agent: String,
    token: String,
    rx: broadcast::Receiver<Arc<Change>>,
    pending: VecDeque<(i64, String)>,
    last_sent: i64,
    recheck: tokio::time::Interval,
    /// A session check in flight: it never holds up delivery.
    checking: Option<tokio::task::JoinHandle<bool>>,
    done: bool,
}

/// How often an open stream checks that its session still stands (with jitter, so streams
/// opened together do not check together).
const RECHECK: Duration = Duration::from_secs(120);

fn rand_millis(max: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(max);
    h.finish() % max.max(1)
}

async fn still_signed_in(p: &Portal, tenant: &str, token: &str) -> bool {
    let ctx = cc_bus::CommandContext::new(tenant, "portal");
    !matches!(
        p.ctx
            .bus
            .request(
                &ctx,
                &Authenticate {
                    token: token.to_string()
                }
            )
            .await,
        Err(cc_bus::RequestError::Rejected(_))
    )
}

/// An event of an agent's stream (`GET /api/events`).
#[derive(schemars::JsonSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
#[allow(dead_code)] // the document's words for the events `agent_event` and the stream write
pub enum AgentStreamEvent {
    /// The agent's view: what the client has not seen first (every change after Last-Event-ID,
    /// or the current view), then each change, once each, in version order.
    Agent {
        /// The view's version.
        id: String,
        data: JsonText<cc_contracts::views::AgentView>,
    },
    /// The session ended (signed out, or the account disabled): the stream ends. data is `{}`.
    SignedOut {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        data: String,
    },
}

/// An event of a supervisor's stream (`GET /api/supervisor/events`).
#[derive(schemars::JsonSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
#[allow(dead_code)] // the document's words for the events the stream writes
pub enum SupervisorStreamEvent {
    /// An agent's view: first every agent's (one each), then each change.
    Agent {
        data: JsonText<cc_contracts::views::AgentView>,
    },
    /// The queues now and today, as GET /api/supervisor/queues answers.
    Queues {
        data: JsonText<Vec<crate::api::supervisor::QueueNow>>,
    },
    /// The stream fell too far behind: read GET /api/supervisor/agents again. data is `{}`.
    Resync { data: String },
}

/// A stream of events `E` describes.
type EventStream<E> = Events<E, KeepAliveStream<BoxStream<'static, Result<Event, Infallible>>>>;

/// `GET /api/events`: the agent's own view, live.
pub async fn agent_events(
    State(p): State<Portal>,
    who: Authed,
    LastEventId(last): LastEventId,
) -> ApiResult<EventStream<AgentStreamEvent>> {
    let agent = who.agent()?.to_string();
    let tenant = who.tenant().to_string();
    // Subscribe before reading the history, so nothing falls between the two.
    let rx = p.hub.subscribe_agent(&tenant, &agent);
    // What to send first, and the version the client has seen.
    let (pending, last_sent): (VecDeque<(i64, String)>, i64) = match last {
        Some(v) => {
            let missed = crate::views::changes_after(&p.ctx.pool, &tenant, &agent, v).await?;
            match (
                missed.is_empty(),
                crate::views::current(&p.ctx.pool, &tenant, &agent).await?,
            ) {
                // History pruned (a very old id): send the current view.
                (true, Some(cur)) if cur.0 > v => (vec![cur].into(), v),
                // An id ahead of the view (from before a rebuild of the read model, or from
                // another installation): the client's idea of the view is not ours. Send the
                // current view and go on from it, rather than wait for a version that high.
                (true, Some(cur)) if cur.0 < v => (vec![cur].into(), 0),
                (true, None) => (VecDeque::new(), 0),
                _ => (missed.into(), v),
            }
        }
        None => (
            crate::views::current(&p.ctx.pool, &tenant, &agent)
                .await?
                .into_iter()
                .collect(),
            0,
        ),
    };
    let jitter = Duration::from_millis(rand_millis(RECHECK.as_millis() as u64));
    let recheck = tokio::time::interval_at(tokio::time::Instant::now() + RECHECK + jitter, RECHECK);
    let state = AgentStream {
        portal: p,
        tenant,
        agent,
        token: who.token,
        rx,
        pending,
        last_sent,
        recheck,
        checking: None,
        done: false,
    };
    // A first comment sends the response headers at once, even when there is nothing to say yet.
    let hello = futures::stream::once(async { Ok(Event::default().comment("connected")) });
    let stream = hello.chain(futures::stream::unfold(state, |mut s| async move {
        loop {
            if s.done {
                return None;
            }
            if let Some((version, json)) = s.pending.pop_front() {
                if version > s.last_sent {
                    s.last_sent = version;
                    let json = s.portal.shown_to_agent(&s.tenant, json).await;
                    return Some((Ok(agent_event(version, json)), s));
                }
                continue;
            }
            tokio::select! {
                r = s.rx.recv() => match r {
                    Ok(c) if c.version > s.last_sent + 1 => {
                        // A change was lost on the way (NATS is at most once): fill the gap
                        // from the change history, in order.
                        match crate::views::changes_after(&s.portal.ctx.pool, &s.tenant, &s.agent, s.last_sent).await {
                            Ok(missed) if !missed.is_empty() => s.pending.extend(missed),
                            _ => s.pending.push_back((c.version, c.json.clone())),
                        }
                    }
                    Ok(c) => {
                        if c.version > s.last_sent {
                            s.last_sent = c.version;
                            let json = s.portal.shown_to_agent(&s.tenant, c.json.clone()).await;
                            return Some((Ok(agent_event(c.version, json)), s));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Too slow a reader: catch up from the change history.
                        if let Ok(missed) = crate::views::changes_after(&s.portal.ctx.pool, &s.tenant, &s.agent, s.last_sent).await {
                            s.pending.extend(missed);
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = s.recheck.tick(), if s.checking.is_none() => {
                    // A session that was ended (logout, disabled account) ends its stream.
                    let (p, tenant, token) = (s.portal.clone(), s.tenant.clone(), s.token.clone());
                    s.checking = Some(tokio::spawn(async move { still_signed_in(&p, &tenant, &token).await }));
                }
                r = async { s.checking.as_mut().unwrap().await }, if s.checking.is_some() => {
                    s.checking = None;
                    if matches!(r, Ok(false)) {
                        s.done = true;
                        return Some((Ok(Event::default().event("signed_out").data("{}")), s));
                    }
                }
                _ = s.portal.ctx.cancel.cancelled() => return None,
            }
        }
    }));
    Ok(Events::new(Sse::new(stream.boxed()).keep_alive(
        KeepAlive::new().interval(Duration::from_secs(15)),
    )))
}

/// How long a supervisor's stream gathers queue changes before it reads the figures again: a
/// burst of calls costs one query per stream, not one per call.
const QUEUES_SETTLE: Duration = Duration::from_millis(150);
/// The figures are read again at least this often (today's figures start again at midnight).
const QUEUES_REFRESH: Duration = Duration::from_secs(60);

struct SupervisorStream {
    portal: Portal,
    tenant: String,
    token: String,
    rx: broadcast::Receiver<Arc<Change>>,
    queues_rx: broadcast::Receiver<()>,
    pending: VecDeque<Event>,
    seen: HashMap<String, i64>,
    recheck: tokio::time::Interval,
    refresh: tokio::time::Interval,
}

impl SupervisorStream {
    /// The queues' figures as an event (none when they cannot be read now: the next change or
    /// refresh tries again).
    async fn queues_event(&self) -> Option<Event> {
        let figures =
            crate::api::supervisor::queue_figures(&self.portal.ctx.pool, &self.tenant).await;
        match figures {
            Ok(f) => Some(
                Event::default()
                    .event("queues")
                    .data(serde_json::to_string(&f).expect("figures serialize")),
            ),
            Err(e) => {
                tracing::debug!(error = %e.0.message, "queue figures not read");
                None
            }
        }
    }
}

/// `GET /api/supervisor/events`: every agent of the tenant, and the queues' figures, live.
pub async fn supervisor_events(
    State(p): State<Portal>,
    who: Authed,
) -> ApiResult<EventStream<SupervisorStreamEvent>> {
    let tenant = who.tenant().to_string();
    let rx = p.hub.subscribe_tenant(&tenant);
    let queues_rx = p.hub.subscribe_queues(&tenant);
    let snapshot = crate::views::agents(&p.ctx.pool, &tenant).await?;
    let mut seen: HashMap<String, i64> = HashMap::new();
    let mut pending = VecDeque::new();
    for view in snapshot {
        seen.insert(view.agent.clone(), view.version);
        pending.push_back(
            Event::default()
                .event("agent")
                .data(serde_json::to_string(&view).expect("views serialize")),
        );
    }
    let jitter = Duration::from_millis(rand_millis(RECHECK.as_millis() as u64));
    let recheck = tokio::time::interval_at(tokio::time::Instant::now() + RECHECK + jitter, RECHECK);
    // The first tick is at once: the figures follow the agents' snapshot.
    let refresh = tokio::time::interval(QUEUES_REFRESH);
    let state = SupervisorStream {
        portal: p,
        tenant,
        token: who.token,
        rx,
        queues_rx,
        pending,
        seen,
        recheck,
        refresh,
    };
    let hello = futures::stream::once(async { Ok(Event::default().comment("connected")) });
    let stream = hello.chain(futures::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(e) = s.pending.pop_front() {
                return Some((Ok(e), s));
            }
            let cancel = s.portal.ctx.cancel.clone();
            tokio::select! {
                _ = s.recheck.tick() => {
                    // A supervisor who signed out stops receiving the tenant's views.
                    if !Box::pin(still_signed_in(&s.portal, &s.tenant, &s.token)).await {
                        return None;
                    }
                }
                _ = s.refresh.tick() => {
                    if let Some(e) = s.queues_event().await {
                        return Some((Ok(e), s));
                    }
                }
                r = s.queues_rx.recv() => match r {
                    Ok(()) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        tokio::time::sleep(QUEUES_SETTLE).await;
                        while s.queues_rx.try_recv().is_ok() {}
                        if let Some(e) = s.queues_event().await {
                            return Some((Ok(e), s));
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                r = s.rx.recv() => match r {
                    Ok(c) => {
                        let last = s.seen.entry(c.agent.clone()).or_insert(0);
                        if c.version > *last {
                            *last = c.version;
                            return Some((Ok(Event::default().event("agent").data(c.json.clone())), s));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        return Some((Ok(Event::default().event("resync").data("{}")), s));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = cancel.cancelled() => return None,
            }
        }
    }));
    Ok(Events::new(Sse::new(stream.boxed()).keep_alive(
        KeepAlive::new().interval(Duration::from_secs(15)),
    )))
}

pub(crate) fn routes() -> Vec<Route> {
    vec![
        Route::get("/api/events", agent_events)
            .tag(Tag::Agent)
            .roles(AGENT)
            .summary("Live updates of the agent's view (Server-Sent Events: `event: agent`, `id: <version>`, data = AgentView). Send Last-Event-ID to resume without losing a change."),
        Route::get("/api/supervisor/events", supervisor_events)
            .tag(Tag::Supervisor)
            .roles(SUPERVISORS)
            .summary("Live updates of every agent of the tenant (SSE `event: agent`) and of the queues' figures (`event: queues`)")
            .description("First every agent's view (`event: agent`, one each), then each change; `event: resync` when the stream fell too far behind (read GET /api/supervisor/agents again). `event: queues`: the array of GET /api/supervisor/queues, sent at once, whenever the reporting projection records a change of a queue's waits (within about 200 ms of the event, a burst coalesced into one), and at least every 60 s (today's figures start again at midnight). Supervisors and admins."),
    ]
}
