//! The reporting model as a pure fold over the events: every row of the reporting tables is a
//! function of the events alone (times are the events' `recorded_at`, never the clock), so a
//! rebuild from the store gives the same rows as the live projection, row for row.
//!
//! Rows that change are marked dirty; the caller writes them (upserts) and then calls
//! [`Reporter::take_dirty`]. Calls and agents whose rows can no longer change are evicted
//! from memory once written.

use std::collections::{BTreeSet, HashMap};

use cc_contracts::auth::TenantEvent;
use cc_contracts::call::{CallEvent, EndedBy};
use cc_contracts::queue::QueueEvent;
use cc_contracts::session::AgentSessionEvent;
use cc_eventstore::RecordedEvent;
use chrono::{DateTime, Utc};

use serde::{Deserialize, Serialize};

pub type Ts = DateTime<Utc>;

/// A word of a fixed vocabulary (a call's direction, a segment's kind, an agent's state): the
/// fold's literals, or a string read back from a snapshot.
pub type Word = std::borrow::Cow<'static, str>;

fn ms(from: Ts, to: Ts) -> i64 {
    (to - from).num_milliseconds().max(0)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantRow {
    pub tenant: String,
    pub name: String,
    pub time_zone: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueRow {
    pub tenant: String,
    pub queue: String,
    pub name: String,
    pub service_level_s: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallRow {
    pub tenant: String,
    pub call: String,
    /// inbound (a queue call) or outbound (dialled by an agent from the portal)
    pub direction: Word,
    /// The first queue; none for an outbound call.
    pub queue: Option<String>,
    pub caller_number: String,
    pub caller_name: String,
    pub entered_at: Ts,
    pub answered_at: Option<Ts>,
    pub ended_at: Option<Ts>,
    pub wait_ms: Option<i64>,
    pub talk_ms: Option<i64>,
    pub hold_ms: i64,
    /// waiting, in_progress, completed, abandoned, left_queue, transferred_out; for an outbound
    /// call also dialing and not_connected
    pub outcome: String,
    pub leave_reason: Option<String>,
    pub first_agent: Option<String>,
    pub last_agent: Option<String>,
    pub transfers: i64,
    /// The disposition code and note given in wrap-up (the last given), and by whom.
    pub disposition: Option<String>,
    pub disposition_note: Option<String>,
    pub disposition_agent: Option<String>,
}

/// One step of a call: kind `queue` (a wait in a queue), `offer`, `connected` (an agent's span
/// on the call), `hold`, `transfer`, `outside` (talk with an extension or number after a
/// transfer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentRow {
    pub tenant: String,
    pub call: String,
    pub seq: i64,
    pub kind: Word,
    pub agent: Option<String>,
    pub queue: Option<String>,
    pub started_at: Ts,
    pub ended_at: Option<Ts>,
    pub duration_ms: Option<i64>,
    pub outcome: Option<String>,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateRow {
    pub tenant: String,
    pub agent: String,
    pub seq: i64,
    /// idle, paused, ringing, connected, on_hold, wrap_up
    pub state: Word,
    pub reason: Option<String>,
    pub call: Option<String>,
    pub started_at: Ts,
    pub ended_at: Option<Ts>,
    pub duration_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRow {
    pub tenant: String,
    pub agent: String,
    pub login_id: String,
    pub device: String,
    pub started_at: Ts,
    pub ended_at: Option<Ts>,
    pub duration_ms: Option<i64>,
    pub logout_reason: Option<String>,
}

type CallKey = (String, String);
type AgentKey = (String, String);

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CallAcc {
    row: Option<CallRow>,
    segments: Vec<SegmentRow>,
    /// Open segments by what closes them.
    queue_seg: Option<usize>,
    offers: HashMap<String, usize>,
    connected: HashMap<String, usize>,
    hold: Option<usize>,
    transfer: Option<usize>,
    outside: Option<usize>,
    /// The transfer going on sends the customer to a queue (no outside party).
    to_queue: bool,
    /// An outbound call's open `dial` segment (from the dial to the far end's answer).
    dial: Option<usize>,
    /// The open monitor segment and its supervisor and device (a mode switch opens the next).
    monitor: Option<(usize, String, String)>,
    /// Agents in wrap-up for this call (the call is final once none is left and it ended).
    wrapping: BTreeSet<String>,
}

impl CallAcc {
    #[allow(clippy::too_many_arguments)] // one row's columns, named at each call
    fn open(
        &mut self,
        tenant: &str,
        call: &str,
        kind: &'static str,
        agent: Option<&str>,
        queue: Option<&str>,
        at: Ts,
        detail: Option<String>,
    ) -> usize {
        self.segments.push(SegmentRow {
            tenant: tenant.into(),
            call: call.into(),
            seq: self.segments.len() as i64 + 1,
            kind: kind.into(),
            agent: agent.map(String::from),
            queue: queue.map(String::from),
            started_at: at,
            ended_at: None,
            duration_ms: None,
            outcome: None,
            detail,
        });
        self.segments.len() - 1
    }

    fn close(&mut self, i: Option<usize>, at: Ts, outcome: &str) {
        if let Some(s) = i
            .and_then(|i| self.segments.get_mut(i))
            .filter(|s| s.ended_at.is_none())
        {
            s.ended_at = Some(at);
            s.duration_ms = Some(ms(s.started_at, at));
            s.outcome = Some(outcome.into());
        }
    }

    fn ended(&self) -> bool {
        self.row.as_ref().is_some_and(|r| r.ended_at.is_some())
    }
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentAcc {
    login: Option<LoginRow>,
    pause: Option<String>,
    /// The call the agent is busy with and its phase (ringing, connected, on_hold, wrap_up).
    call: Option<(String, Word)>,
    state: Option<StateRow>,
    seq: i64,
}

/// What changed since the last [`Reporter::take_dirty`].
#[derive(Debug, Default)]
pub struct Dirty {
    pub tenants: Vec<TenantRow>,
    pub queues: Vec<QueueRow>,
    pub calls: Vec<CallRow>,
    pub segments: Vec<SegmentRow>,
    pub states: Vec<StateRow>,
    pub logins: Vec<LoginRow>,
    /// Events of the folded categories that did not decode, with why: the live projection
    /// parks them with the rows (`cc_bus::parked`).
    pub undecodable: Vec<(RecordedEvent, String)>,
}

impl Dirty {
    pub fn rows(&self) -> usize {
        self.tenants.len()
            + self.queues.len()
            + self.calls.len()
            + self.segments.len()
            + self.states.len()
            + self.logins.len()
    }
}

/// The live fold's whole state, as its snapshot saves it (taken between batches, once the
/// dirty rows are written: the dirty sets are not saved). Every struct of it refuses unknown
/// fields and has no defaults, so a snapshot of another shape does not decode and the
/// projection replays the store instead.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reporter {
    tenants: HashMap<String, TenantRow>,
    #[serde(with = "cc_core::pairs")]
    queues: HashMap<(String, String), QueueRow>,
    #[serde(with = "cc_core::pairs")]
    calls: HashMap<CallKey, CallAcc>,
    #[serde(with = "cc_core::pairs")]
    agents: HashMap<AgentKey, AgentAcc>,
    #[serde(skip)]
    dirty_tenants: BTreeSet<String>,
    #[serde(skip)]
    dirty_queues: BTreeSet<(String, String)>,
    #[serde(skip)]
    dirty_calls: BTreeSet<CallKey>,
    /// (tenant, call, segment index)
    #[serde(skip)]
    dirty_segments: BTreeSet<(String, String, usize)>,
    /// Closed agent-state rows and the open one's key.
    closed_states: Vec<StateRow>,
    #[serde(skip)]
    dirty_agents: BTreeSet<AgentKey>,
    closed_logins: Vec<LoginRow>,
    #[serde(skip)]
    undecodable: Vec<(RecordedEvent, String)>,
}

impl Reporter {
    /// The event as one of family `E`, or `None`; one of the family's category that does not
    /// decode is kept for [`Dirty::undecodable`].
    fn decoded<E: cc_contracts::EventFamily>(&mut self, e: &RecordedEvent) -> Option<E> {
        match cc_contracts::decode_checked::<E>(e) {
            cc_contracts::Decoded::Event(event) => Some(event),
            cc_contracts::Decoded::OtherFamily => None,
            cc_contracts::Decoded::Undecodable(why) => {
                self.undecodable.push((e.clone(), why));
                None
            }
        }
    }

    pub fn apply(&mut self, e: &RecordedEvent) {
        let tenant = e.tenant().to_string();
        let at = e.recorded_at;
        match e.stream.category() {
            "tenant" => {
                if let Some(TenantEvent::TenantCreated {
                    tenant: t,
                    name,
                    time_zone,
                    ..
                }) = self.decoded::<TenantEvent>(e)
                {
                    let tz = if time_zone.is_empty() {
                        "UTC".to_string()
                    } else {
                        time_zone
                    };
                    self.tenants.insert(
                        t.clone(),
                        TenantRow {
                            tenant: t.clone(),
                            name,
                            time_zone: tz,
                        },
                    );
                    self.dirty_tenants.insert(t);
                }
            }
            "queue" => match self.decoded::<QueueEvent>(e) {
                Some(QueueEvent::QueueCreated { queue, name }) => {
                    let key = (tenant.clone(), queue.to_string());
                    let row = self.queues.entry(key.clone()).or_insert_with(|| QueueRow {
                        tenant: tenant.clone(),
                        queue: queue.to_string(),
                        name: String::new(),
                        service_level_s: 20,
                    });
                    row.name = name;
                    self.dirty_queues.insert(key);
                }
                Some(QueueEvent::QueueConfigured { queue, settings }) => {
                    let key = (tenant.clone(), queue.to_string());
                    let row = self.queues.entry(key.clone()).or_insert_with(|| QueueRow {
                        tenant: tenant.clone(),
                        queue: queue.to_string(),
                        name: queue.to_string(),
                        service_level_s: 20,
                    });
                    row.service_level_s = settings.service_level_s;
                    self.dirty_queues.insert(key);
                }
                _ => {}
            },
            "agent" => {
                if let Some(s) = self.decoded::<AgentSessionEvent>(e) {
                    self.session(&tenant, &s, at);
                }
            }
            "call" => {
                if let Some(c) = self.decoded::<CallEvent>(e) {
                    self.call(&tenant, &c, at);
                }
            }
            _ => {}
        }
    }

    fn agent(&mut self, tenant: &str, agent: &str) -> &mut AgentAcc {
        self.agents
            .entry((tenant.to_string(), agent.to_string()))
            .or_default()
    }

    /// Re-derives an agent's state after a change; a different state closes the interval.
    fn restate(&mut self, tenant: &str, agent: &str, at: Ts) {
        let key = (tenant.to_string(), agent.to_string());
        let a = self.agents.entry(key.clone()).or_default();
        let next: Option<(Word, Option<String>, Option<String>)> =
            match (&a.login, &a.call, &a.pause) {
                (None, _, _) => None,
                (Some(_), Some((call, phase)), _) => {
                    Some((phase.clone(), None, Some(call.clone())))
                }
                (Some(_), None, Some(reason)) => {
                    Some(("paused".into(), Some(reason.clone()), None))
                }
                (Some(_), None, None) => Some(("idle".into(), None, None)),
            };
        let same = match (&a.state, &next) {
            (Some(s), Some((state, reason, call))) => {
                s.state == *state && &s.reason == reason && &s.call == call
            }
            (None, None) => true,
            _ => false,
        };
        if same {
            return;
        }
        if let Some(mut s) = a.state.take() {
            s.ended_at = Some(at);
            s.duration_ms = Some(ms(s.started_at, at));
            self.closed_states.push(s);
        }
        if let Some((state, reason, call)) = next {
            a.seq += 1;
            a.state = Some(StateRow {
                tenant: tenant.into(),
                agent: agent.into(),
                seq: a.seq,
                state,
                reason,
                call,
                started_at: at,
                ended_at: None,
                duration_ms: None,
            });
        }
        self.dirty_agents.insert(key);
    }

    fn session(&mut self, tenant: &str, e: &AgentSessionEvent, at: Ts) {
        use AgentSessionEvent::*;
        let agent = match e {
            AgentLoggedIn { agent, .. }
            | AgentLoggedOut { agent, .. }
            | AgentPaused { agent, .. }
            | AgentPauseReasonChanged { agent, .. }
            | AgentUnpaused { agent, .. }
            | AgentJoinedQueue { agent, .. }
            | AgentLeftQueue { agent, .. }
            | AgentDeviceWentOffline { agent, .. }
            | AgentDeviceCameOnline { agent, .. } => agent.to_string(),
        };
        let a = self.agent(tenant, &agent);
        match e {
            AgentLoggedIn {
                login_id, device, ..
            } => {
                a.login = Some(LoginRow {
                    tenant: tenant.into(),
                    agent: agent.clone(),
                    login_id: login_id.to_string(),
                    device: device.to_string(),
                    started_at: at,
                    ended_at: None,
                    duration_ms: None,
                    logout_reason: None,
                });
                a.pause = None;
                a.call = None;
            }
            AgentLoggedOut { reason, .. } => {
                if let Some(mut l) = a.login.take() {
                    l.ended_at = Some(at);
                    l.duration_ms = Some(ms(l.started_at, at));
                    l.logout_reason = serde_json::to_value(reason)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from));
                    self.closed_logins.push(l);
                }
                let a = self.agent(tenant, &agent);
                a.pause = None;
                a.call = None;
            }
            AgentPaused { reason, .. } => a.pause = Some(reason.clone()),
            AgentPauseReasonChanged { to, .. } => a.pause = Some(to.clone()),
            AgentUnpaused { .. } => a.pause = None,
            _ => return,
        }
        self.dirty_agents
            .insert((tenant.to_string(), agent.clone()));
        self.restate(tenant, &agent, at);
    }

    /// Sets the agent's call phase (None: the call is no longer theirs), if `call` is theirs or
    /// they have none (or are in wrap-up: a new offer ends it, whatever the store's order).
    fn phase(
        &mut self,
        tenant: &str,
        agent: &str,
        call: &str,
        phase: Option<&'static str>,
        at: Ts,
    ) {
        let a = self.agent(tenant, agent);
        let theirs = a.call.as_ref().is_some_and(|(c, _)| c == call);
        match phase {
            Some(p)
                if theirs
                    || a.call.is_none()
                    || (p == "ringing"
                        && a.call.as_ref().is_some_and(|(_, ph)| *ph == "wrap_up")) =>
            {
                a.call = Some((call.to_string(), p.into()));
            }
            None if theirs => a.call = None,
            _ => return,
        }
        self.restate(tenant, agent, at);
    }

    fn call(&mut self, tenant: &str, e: &CallEvent, at: Ts) {
        use CallEvent::*;
        let key = (tenant.to_string(), e.call().to_string());
        let call = e.call().to_string();
        let before = self.calls.get(&key).map(|c| c.segments.len()).unwrap_or(0);
        if self.calls.contains_key(&key)
            || matches!(e, CallEnteredQueue { .. } | OutboundCallStarted { .. })
        {
            let c = self.calls.entry(key.clone()).or_default();
            match e {
                CallEnteredQueue {
                    queue,
                    caller,
                    priority,
                    ..
                } => {
                    if c.row.is_none() {
                        c.row = Some(CallRow {
                            tenant: tenant.into(),
                            call: call.clone(),
                            direction: "inbound".into(),
                            queue: Some(queue.to_string()),
                            caller_number: caller.number.clone(),
                            caller_name: caller.name.clone(),
                            entered_at: at,
                            answered_at: None,
                            ended_at: None,
                            wait_ms: None,
                            talk_ms: None,
                            hold_ms: 0,
                            outcome: "waiting".into(),
                            leave_reason: None,
                            first_agent: None,
                            last_agent: None,
                            transfers: 0,
                            disposition: None,
                            disposition_note: None,
                            disposition_agent: None,
                        });
                    }
                    let detail = (*priority != 0).then(|| format!("{{\"priority\":{priority}}}"));
                    c.queue_seg = Some(c.open(
                        tenant,
                        &call,
                        "queue",
                        None,
                        Some(queue.as_str()),
                        at,
                        detail,
                    ));
                }
                OutboundCallStarted {
                    agent,
                    number,
                    extension,
                    ..
                } => {
                    if c.row.is_none() {
                        c.row = Some(CallRow {
                            tenant: tenant.into(),
                            call: call.clone(),
                            direction: "outbound".into(),
                            queue: None,
                            caller_number: number.to_string(),
                            caller_name: String::new(),
                            entered_at: at,
                            answered_at: None,
                            ended_at: None,
                            wait_ms: None,
                            talk_ms: None,
                            hold_ms: 0,
                            outcome: "dialing".into(),
                            leave_reason: None,
                            first_agent: Some(agent.to_string()),
                            last_agent: Some(agent.to_string()),
                            transfers: 0,
                            disposition: None,
                            disposition_note: None,
                            disposition_agent: None,
                        });
                        let detail =
                            serde_json::json!({ "number": number, "extension": extension })
                                .to_string();
                        c.dial = Some(c.open(
                            tenant,
                            &call,
                            "dial",
                            Some(agent.as_str()),
                            None,
                            at,
                            Some(detail),
                        ));
                    }
                }
                OutboundCallFailed { reason, .. } => {
                    let d = c.dial.take();
                    let why = serde_json::to_value(reason)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_default();
                    c.close(d, at, &format!("failed:{why}"));
                    Self::finish(c, at, "not_connected");
                }
                CallConnected { agent, .. } if c.dial.is_some() => {
                    // The far end of an outbound call answered: the agent's part begins.
                    let d = c.dial.take();
                    c.close(d, at, "connected");
                    let s = c.open(
                        tenant,
                        &call,
                        "connected",
                        Some(agent.as_str()),
                        None,
                        at,
                        Some("{\"outbound\":true}".into()),
                    );
                    c.connected.insert(agent.to_string(), s);
                    if let Some(r) = c.row.as_mut() {
                        r.answered_at = Some(at);
                        r.outcome = "in_progress".into();
                    }
                }
                CallOffered {
                    agent,
                    queue,
                    offer,
                    ..
                } => {
                    let i = c.open(
                        tenant,
                        &call,
                        "offer",
                        Some(agent.as_str()),
                        Some(queue.as_str()),
                        at,
                        None,
                    );
                    c.offers.insert(offer.clone(), i);
                }
                OfferRejected { offer, .. } => {
                    let i = c.offers.remove(offer);
                    c.close(i, at, "rejected");
                }
                OfferTimedOut { offer, .. } => {
                    let i = c.offers.remove(offer);
                    c.close(i, at, "missed");
                }
                OfferWithdrawn { offer, reason, .. } => {
                    let i = c.offers.remove(offer);
                    let why = serde_json::to_value(reason)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_default();
                    c.close(i, at, &format!("withdrawn:{why}"));
                }
                CallAnswered {
                    agent,
                    offer,
                    queue,
                    wait_ms,
                    ..
                } => {
                    let i = c.offers.remove(offer);
                    c.close(i, at, "answered");
                    let q = c.queue_seg.take();
                    c.close(q, at, "answered");
                    let s = c.open(
                        tenant,
                        &call,
                        "connected",
                        Some(agent.as_str()),
                        Some(queue.as_str()),
                        at,
                        None,
                    );
                    c.connected.insert(agent.to_string(), s);
                    if let Some(r) = c.row.as_mut() {
                        if r.answered_at.is_none() {
                            r.answered_at = Some(at);
                            r.wait_ms = Some(*wait_ms);
                            r.first_agent = Some(agent.to_string());
                        }
                        r.last_agent = Some(agent.to_string());
                        r.outcome = "in_progress".into();
                    }
                }
                CallAbandoned { wait_ms, .. } | CallLeftQueue { wait_ms, .. } => {
                    let abandoned = matches!(e, CallAbandoned { .. });
                    let q = c.queue_seg.take();
                    c.close(q, at, if abandoned { "abandoned" } else { "left_queue" });
                    for (_, i) in std::mem::take(&mut c.offers) {
                        c.close(Some(i), at, "withdrawn:caller_gone");
                    }
                    if let Some(r) = c.row.as_mut() {
                        if r.answered_at.is_none() {
                            r.wait_ms = Some(*wait_ms);
                        }
                        if let CallLeftQueue { reason, .. } = e {
                            r.leave_reason = serde_json::to_value(reason)
                                .ok()
                                .and_then(|v| v.as_str().map(String::from));
                        }
                    }
                    // (Also after an earlier answer: a caller transferred into a queue who gave up.)
                    Self::finish(c, at, if abandoned { "abandoned" } else { "left_queue" });
                }
                CallHeld { agent, .. } => {
                    if c.hold.is_none() {
                        c.hold = Some(c.open(
                            tenant,
                            &call,
                            "hold",
                            Some(agent.as_str()),
                            None,
                            at,
                            None,
                        ));
                    }
                }
                CallResumed { .. } => {
                    let h = c.hold.take();
                    c.close(h, at, "resumed");
                    Self::add_hold(c, h);
                }
                CallEnded { agent, by, .. } => {
                    let s = c.connected.remove(agent.as_str());
                    let by = serde_json::to_value(by)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_default();
                    c.close(s, at, &by);
                    let h = c.hold.take();
                    c.close(h, at, "ended");
                    Self::add_hold(c, h);
                    // Only a queue call has a wrap-up (an outbound call has none to wait for).
                    if c.row.as_ref().is_some_and(|r| r.queue.is_some()) {
                        c.wrapping.insert(agent.to_string());
                    }
                    if !matches!(
                        e,
                        CallEnded {
                            by: EndedBy::Transferred,
                            ..
                        }
                    ) {
                        Self::finish(c, at, "completed");
                    }
                }
                WrapUpEnded { agent, .. } => {
                    c.wrapping.remove(agent.as_str());
                }
                TransferStarted {
                    agent,
                    method,
                    target,
                    target_agent,
                    ..
                } => {
                    c.to_queue = matches!(target, cc_contracts::call::TransferTarget::Queue(_));
                    let detail = serde_json::json!({ "method": method, "target": target, "target_agent": target_agent }).to_string();
                    c.transfer = Some(c.open(
                        tenant,
                        &call,
                        "transfer",
                        Some(agent.as_str()),
                        None,
                        at,
                        Some(detail),
                    ));
                    if let Some(r) = c.row.as_mut() {
                        r.transfers += 1;
                    }
                }
                TransferAnswered {
                    target_agent: Some(b),
                    ..
                } => {
                    let s = c.open(
                        tenant,
                        &call,
                        "connected",
                        Some(b.as_str()),
                        None,
                        at,
                        Some("{\"transferred\":true}".into()),
                    );
                    // Not the call's last agent yet: a consultation target who is cancelled or
                    // fails never had the customer (`TransferCompleted` makes them the last).
                    c.connected.insert(b.to_string(), s);
                }
                TransferFailed {
                    reason,
                    target_agent,
                    ..
                } => {
                    let t = c.transfer.take();
                    let why = serde_json::to_value(reason)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_default();
                    c.close(t, at, &format!("failed:{why}"));
                    if let Some(b) = target_agent {
                        let s = c.connected.remove(b.as_str());
                        c.close(s, at, "transfer_failed");
                    }
                }
                TransferCancelled { target_agent, .. } => {
                    let t = c.transfer.take();
                    c.close(t, at, "cancelled");
                    if let Some(b) = target_agent {
                        let s = c.connected.remove(b.as_str());
                        c.close(s, at, "transfer_cancelled");
                    }
                }
                TransferCompleted { target_agent, .. } => {
                    let t = c.transfer.take();
                    c.close(t, at, "completed");
                    if let (Some(b), Some(r)) = (target_agent, c.row.as_mut()) {
                        r.last_agent = Some(b.to_string());
                    }
                    let h = c.hold.take();
                    c.close(h, at, "transferred");
                    Self::add_hold(c, h);
                    if target_agent.is_none() && !std::mem::take(&mut c.to_queue) {
                        // To an extension without an agent or a number (a queue target re-enters).
                        c.outside = Some(c.open(tenant, &call, "outside", None, None, at, None));
                    }
                }
                TransferredCallEnded { by, .. } => {
                    let o = c.outside.take();
                    let by = serde_json::to_value(by)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_default();
                    c.close(o, at, &by);
                    let out = c.segments.iter().any(|s| s.kind == "outside");
                    Self::finish(c, at, if out { "transferred_out" } else { "completed" });
                }
                MonitorStarted {
                    agent,
                    supervisor,
                    device,
                    mode,
                    ..
                } => {
                    let detail = serde_json::json!({ "supervisor": supervisor, "device": device, "mode": mode }).to_string();
                    let i = c.open(
                        tenant,
                        &call,
                        "monitor",
                        Some(agent.as_str()),
                        None,
                        at,
                        Some(detail),
                    );
                    c.monitor = Some((i, supervisor.clone(), device.to_string()));
                }
                MonitorModeChanged { agent, mode, .. } => {
                    if let Some((i, supervisor, device)) = c.monitor.take() {
                        c.close(Some(i), at, "switched");
                        let detail = serde_json::json!({ "supervisor": supervisor, "device": device, "mode": mode }).to_string();
                        let i = c.open(
                            tenant,
                            &call,
                            "monitor",
                            Some(agent.as_str()),
                            None,
                            at,
                            Some(detail),
                        );
                        c.monitor = Some((i, supervisor, device));
                    }
                }
                MonitorEnded { reason, .. } => {
                    let why = serde_json::to_value(reason)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_default();
                    let m = c.monitor.take().map(|(i, _, _)| i);
                    c.close(m, at, &why);
                }
                CallDispositionRecorded {
                    agent,
                    disposition,
                    note,
                    ..
                } => {
                    if let Some(r) = c.row.as_mut() {
                        r.disposition = disposition.clone();
                        r.disposition_note = note.clone();
                        r.disposition_agent = Some(agent.to_string());
                    }
                }
                TransferAnswered { .. }
                | ConferenceFormed { .. }
                | OutboundCallDialed { .. }
                | CallConnected { .. }
                | MonitorJoined { .. }
                | WrapUpStarted { .. } => {}
            }
        }
        // The agents' states.
        let outbound = self
            .calls
            .get(&key)
            .and_then(|c| c.row.as_ref())
            .is_some_and(|r| r.queue.is_none());
        match e {
            OutboundCallStarted { agent, .. } => {
                self.phase(tenant, agent.as_str(), &call, Some("dialing"), at)
            }
            OutboundCallFailed { agent, .. } => self.phase(tenant, agent.as_str(), &call, None, at),
            // A call without a queue has no wrap-up: the agent is free when it ends.
            CallEnded { agent, .. } if outbound => {
                self.phase(tenant, agent.as_str(), &call, None, at)
            }
            CallOffered { agent, .. } => {
                self.phase(tenant, agent.as_str(), &call, Some("ringing"), at)
            }
            OfferRejected { agent, .. }
            | OfferTimedOut { agent, .. }
            | OfferWithdrawn { agent, .. } => self.phase(tenant, agent.as_str(), &call, None, at),
            CallAnswered { agent, .. }
            | CallConnected { agent, .. }
            | CallResumed { agent, .. } => {
                self.phase(tenant, agent.as_str(), &call, Some("connected"), at)
            }
            CallHeld { agent, .. } => {
                self.phase(tenant, agent.as_str(), &call, Some("on_hold"), at)
            }
            CallEnded { agent, .. } => {
                self.phase(tenant, agent.as_str(), &call, Some("wrap_up"), at)
            }
            WrapUpEnded { agent, .. } => self.phase(tenant, agent.as_str(), &call, None, at),
            TransferStarted {
                target_agent: Some(b),
                ..
            } => self.phase(tenant, b.as_str(), &call, Some("ringing"), at),
            TransferAnswered {
                target_agent: Some(b),
                ..
            } => self.phase(tenant, b.as_str(), &call, Some("connected"), at),
            TransferFailed {
                target_agent: Some(b),
                ..
            }
            | TransferCancelled {
                target_agent: Some(b),
                ..
            } => self.phase(tenant, b.as_str(), &call, None, at),
            _ => {}
        }
        // Which rows changed: the call row and every segment touched (new ones and closed ones).
        if let Some(c) = self.calls.get(&key) {
            if c.row.is_some() {
                self.dirty_calls.insert(key.clone());
            }
            for (i, s) in c.segments.iter().enumerate() {
                if i >= before || s.ended_at == Some(at) {
                    self.dirty_segments
                        .insert((key.0.clone(), key.1.clone(), i));
                }
            }
        }
    }

    fn add_hold(c: &mut CallAcc, h: Option<usize>) {
        if let (Some(i), Some(r)) = (h, c.row.as_mut()) {
            r.hold_ms += c.segments[i].duration_ms.unwrap_or(0);
        }
    }

    fn finish(c: &mut CallAcc, at: Ts, outcome: &str) {
        for s in c.segments.iter_mut().filter(|s| s.ended_at.is_none()) {
            s.ended_at = Some(at);
            s.duration_ms = Some(ms(s.started_at, at));
            s.outcome.get_or_insert_with(|| "call_ended".into());
        }
        c.offers.clear();
        c.connected.clear();
        c.hold = None;
        c.transfer = None;
        c.outside = None;
        c.queue_seg = None;
        // Talk: the time someone talked with the caller (the union of the agents' connected
        // spans and talk with an outside target, which overlap in consultations and
        // conferences), hold excluded; not the waits or ringing in between.
        let mut spans: Vec<(Ts, Ts)> = c
            .segments
            .iter()
            .filter(|s| s.kind == "connected" || s.kind == "outside")
            .filter_map(|s| Some((s.started_at, s.ended_at?)))
            .collect();
        spans.sort();
        let mut talked = 0i64;
        let mut open: Option<(Ts, Ts)> = None;
        for (a, b) in spans {
            match open {
                Some((oa, ob)) if a <= ob => open = Some((oa, ob.max(b))),
                Some((oa, ob)) => {
                    talked += ms(oa, ob);
                    open = Some((a, b));
                }
                None => open = Some((a, b)),
            }
        }
        if let Some((oa, ob)) = open {
            talked += ms(oa, ob);
        }
        if let Some(r) = c.row.as_mut() {
            r.ended_at = Some(at);
            r.outcome = outcome.into();
            if r.answered_at.is_some() {
                r.talk_ms = Some((talked - r.hold_ms).max(0));
            }
        }
    }

    /// The rows changed since the last call, in a deterministic order; forgets calls that can
    /// no longer change.
    pub fn take_dirty(&mut self) -> Dirty {
        let mut d = Dirty {
            undecodable: std::mem::take(&mut self.undecodable),
            ..Dirty::default()
        };
        for t in std::mem::take(&mut self.dirty_tenants) {
            d.tenants.extend(self.tenants.get(&t).cloned());
        }
        for q in std::mem::take(&mut self.dirty_queues) {
            d.queues.extend(self.queues.get(&q).cloned());
        }
        for k in std::mem::take(&mut self.dirty_calls) {
            d.calls
                .extend(self.calls.get(&k).and_then(|c| c.row.clone()));
        }
        for (t, c, i) in std::mem::take(&mut self.dirty_segments) {
            d.segments.extend(
                self.calls
                    .get(&(t, c))
                    .and_then(|c| c.segments.get(i).cloned()),
            );
        }
        d.states.append(&mut self.closed_states);
        d.logins.append(&mut self.closed_logins);
        for k in std::mem::take(&mut self.dirty_agents) {
            if let Some(a) = self.agents.get(&k) {
                d.states.extend(a.state.clone());
                d.logins.extend(a.login.clone());
            }
        }
        // Keep only what a later event can still change.
        self.calls
            .retain(|_, c| !(c.ended() && c.wrapping.is_empty()));
        // A state row closed and reopened in one batch appears twice: the last one wins.
        dedup_last(&mut d.states, |s| {
            (s.tenant.clone(), s.agent.clone(), s.seq)
        });
        dedup_last(&mut d.logins, |l| (l.tenant.clone(), l.login_id.clone()));
        d
    }

    /// Rows kept in memory (calls in progress and logged-in agents).
    pub fn open_calls(&self) -> usize {
        self.calls.len()
    }
}

fn dedup_last<T, K: Eq + std::hash::Hash>(rows: &mut Vec<T>, key: impl Fn(&T) -> K) {
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<T> = Vec::with_capacity(rows.len());
    for r in rows.drain(..).rev() {
        if seen.insert(key(&r)) {
            out.push(r);
        }
    }
    out.reverse();
    *rows = out;
}

#[cfg(test)]
mod tests {
    use super::*;
    use cc_contracts::call::{TransferMethod, TransferTarget};
    use cc_contracts::domain::{AgentNumber, DeviceId, QueueNumber};
    use cc_contracts::pbx::Party;
    use cc_eventstore::{Metadata, StreamName};

    /// Folds call events of call `c`, `step_ms` apart, and returns its row and segments.
    /// Every test through it also checks the snapshots: for every point of the history, the
    /// fold saved there (JSON, as the live projection saves it), read back and folded on with
    /// the rest is the fold of the whole history, and writes the same call row.
    fn fold(events: Vec<CallEvent>, step_ms: i64) -> (CallRow, Vec<SegmentRow>) {
        let t0 = Utc::now();
        let recorded: Vec<RecordedEvent> = events
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let n = cc_contracts::encode(e, Metadata::new("acme", "test"));
                RecordedEvent {
                    position: i as i64 + 1,
                    xid: 1,
                    event_id: n.event_id,
                    stream: StreamName::new("acme", "call", "c").unwrap(),
                    version: i as i64 + 1,
                    event_type: n.event_type.clone(),
                    schema_version: 1,
                    data: n.data.clone(),
                    metadata: n.metadata.clone(),
                    recorded_at: t0 + chrono::Duration::milliseconds(step_ms * i as i64),
                }
            })
            .collect();
        let mut r = Reporter::default();
        recorded.iter().for_each(|e| r.apply(e));
        let d = r.take_dirty();
        let row = d.calls.last().unwrap().clone();
        for k in 0..recorded.len() {
            let mut saved = Reporter::default();
            recorded[..k].iter().for_each(|e| saved.apply(e));
            drop(saved.take_dirty());
            let json = serde_json::to_vec(&saved).unwrap();
            let mut back: Reporter = serde_json::from_slice(&json).unwrap();
            assert_eq!(
                back, saved,
                "the snapshot after {k} events read back differs"
            );
            recorded[k..].iter().for_each(|e| back.apply(e));
            let rest = back.take_dirty();
            assert_eq!(
                back, r,
                "a snapshot after {k} events plus the rest is not the whole fold"
            );
            assert_eq!(
                rest.calls.last(),
                Some(&row),
                "the call row from a snapshot after {k}"
            );
        }
        let mut segs = d.segments;
        segs.sort_by_key(|s| s.seq);
        (row, segs)
    }

    fn a(n: &str) -> AgentNumber {
        AgentNumber::parse(n).unwrap()
    }
    fn q(n: &str) -> QueueNumber {
        QueueNumber::parse(n).unwrap()
    }
    fn entered(queue: &str, priority: i32) -> CallEvent {
        CallEvent::CallEnteredQueue {
            call: "c".into(),
            queue: q(queue),
            caller: Party {
                number: "555".into(),
                name: "J".into(),
            },
            channel: "ch".into(),
            priority,
        }
    }

    #[test]
    fn a_caller_sent_to_a_queue_who_gives_up_there_is_abandoned_with_the_talk_they_had() {
        use CallEvent::*;
        let (row, segs) = fold(
            vec![
                entered("500", 0),
                CallOffered {
                    call: "c".into(),
                    queue: q("500"),
                    agent: a("1002"),
                    device: DeviceId::parse("1002").unwrap(),
                    offer: "o1".into(),
                    ring_timeout_s: None,
                },
                CallAnswered {
                    call: "c".into(),
                    queue: q("500"),
                    agent: a("1002"),
                    offer: "o1".into(),
                    wait_ms: 1000,
                },
                TransferStarted {
                    call: "c".into(),
                    transfer: "t".into(),
                    agent: a("1002"),
                    method: TransferMethod::Blind,
                    target: TransferTarget::Queue(q("501")),
                    leg: None,
                    target_agent: None,
                    queue: Some(q("500")),
                },
                CallEnded {
                    call: "c".into(),
                    agent: a("1002"),
                    by: EndedBy::Transferred,
                    talk_ms: 2000,
                },
                TransferCompleted {
                    call: "c".into(),
                    transfer: "t".into(),
                    agent: a("1002"),
                    target_agent: None,
                },
                entered("501", 100),
                CallAbandoned {
                    call: "c".into(),
                    queue: q("501"),
                    wait_ms: 3000,
                    position: 1,
                },
            ],
            1000,
        );
        assert!(
            !segs.iter().any(|s| s.kind == "outside"),
            "a queue target has no outside party: {segs:?}"
        );
        assert!(
            segs.iter().all(|s| s.ended_at.is_some()),
            "nothing left open"
        );
        assert_eq!(
            (row.outcome.as_str(), row.talk_ms),
            ("abandoned", Some(2000)),
            "talk: Bob's 2 s only"
        );
        assert_eq!(segs.iter().filter(|s| s.kind == "queue").count(), 2);
    }

    #[test]
    fn talk_counts_overlapping_spans_once_and_not_the_ringing_of_a_target() {
        use CallEvent::*;
        let t = || "t".to_string();
        let (row, segs) = fold(
            vec![
                entered("500", 0),
                CallOffered {
                    call: "c".into(),
                    queue: q("500"),
                    agent: a("1002"),
                    device: DeviceId::parse("1002").unwrap(),
                    offer: "o1".into(),
                    ring_timeout_s: None,
                },
                CallAnswered {
                    call: "c".into(),
                    queue: q("500"),
                    agent: a("1002"),
                    offer: "o1".into(),
                    wait_ms: 1000,
                },
                // Bob talks 1 s, then a blind transfer to Carol: she rings 1 s, answers, talks 2 s.
                TransferStarted {
                    call: "c".into(),
                    transfer: t(),
                    agent: a("1002"),
                    method: TransferMethod::Blind,
                    target: TransferTarget::Agent(a("1003")),
                    leg: Some("l".into()),
                    target_agent: Some(a("1003")),
                    queue: Some(q("500")),
                },
                CallEnded {
                    call: "c".into(),
                    agent: a("1002"),
                    by: EndedBy::Transferred,
                    talk_ms: 1000,
                },
                TransferAnswered {
                    call: "c".into(),
                    transfer: t(),
                    agent: a("1002"),
                    target_agent: Some(a("1003")),
                },
                TransferCompleted {
                    call: "c".into(),
                    transfer: t(),
                    agent: a("1002"),
                    target_agent: Some(a("1003")),
                },
                CallConnected {
                    call: "c".into(),
                    agent: a("1003"),
                    bridge: "c".into(),
                },
                CallEnded {
                    call: "c".into(),
                    agent: a("1003"),
                    by: EndedBy::Caller,
                    talk_ms: 3000,
                },
            ],
            1000,
        );
        let spans: Vec<(Option<&str>, Option<i64>)> = segs
            .iter()
            .filter(|s| s.kind == "connected")
            .map(|s| (s.agent.as_deref(), s.duration_ms))
            .collect();
        assert_eq!(
            spans,
            [(Some("1002"), Some(2000)), (Some("1003"), Some(3000))]
        );
        // Bob 2 s (answer to drop) + Carol 3 s (her answer to the end), the ringing between excluded.
        assert_eq!(
            (row.outcome.as_str(), row.talk_ms),
            ("completed", Some(5000))
        );
        assert_eq!(
            row.last_agent.as_deref(),
            Some("1003"),
            "the receiving agent had it last"
        );
    }

    /// Defect 8: the target of an attended transfer that was cancelled, or that failed, only
    /// consulted the agent: the customer never was theirs, so they are not the call's last agent.
    #[test]
    fn a_consultation_target_of_a_cancelled_or_failed_attended_transfer_is_not_the_last_agent() {
        use cc_contracts::call::TransferFailure;
        use CallEvent::*;
        let start = |t: &str| TransferStarted {
            call: "c".into(),
            transfer: t.into(),
            agent: a("1002"),
            method: TransferMethod::Attended,
            target: TransferTarget::Agent(a("1003")),
            leg: Some(format!("l-{t}")),
            target_agent: Some(a("1003")),
            queue: Some(q("500")),
        };
        let answered = |t: &str| TransferAnswered {
            call: "c".into(),
            transfer: t.into(),
            agent: a("1002"),
            target_agent: Some(a("1003")),
        };
        let held = || CallHeld {
            call: "c".into(),
            agent: a("1002"),
        };
        let resumed = || CallResumed {
            call: "c".into(),
            agent: a("1002"),
        };
        let (row, segs) = fold(
            vec![
                entered("500", 0),
                CallOffered {
                    call: "c".into(),
                    queue: q("500"),
                    agent: a("1002"),
                    device: DeviceId::parse("1002").unwrap(),
                    offer: "o1".into(),
                    ring_timeout_s: None,
                },
                CallAnswered {
                    call: "c".into(),
                    queue: q("500"),
                    agent: a("1002"),
                    offer: "o1".into(),
                    wait_ms: 1000,
                },
                // Consulting Carol, then cancelled.
                start("t1"),
                held(),
                answered("t1"),
                TransferCancelled {
                    call: "c".into(),
                    transfer: "t1".into(),
                    agent: a("1002"),
                    target_agent: Some(a("1003")),
                },
                resumed(),
                // Consulting Carol again; she hangs up.
                start("t2"),
                held(),
                answered("t2"),
                TransferFailed {
                    call: "c".into(),
                    transfer: "t2".into(),
                    agent: a("1002"),
                    reason: TransferFailure::TargetHungUp,
                    target_agent: Some(a("1003")),
                },
                resumed(),
                CallEnded {
                    call: "c".into(),
                    agent: a("1002"),
                    by: EndedBy::Agent,
                    talk_ms: 9000,
                },
            ],
            1000,
        );
        assert_eq!(
            (
                row.first_agent.as_deref(),
                row.last_agent.as_deref(),
                row.outcome.as_str()
            ),
            (Some("1002"), Some("1002"), "completed")
        );
        let carol: Vec<&str> = segs
            .iter()
            .filter(|s| s.kind == "connected" && s.agent.as_deref() == Some("1003"))
            .map(|s| s.outcome.as_deref().unwrap_or(""))
            .collect();
        assert_eq!(
            carol,
            ["transfer_cancelled", "transfer_failed"],
            "her consultations are still recorded"
        );
    }
}
