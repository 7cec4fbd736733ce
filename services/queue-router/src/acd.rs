//! The automatic call distributor as a pure model: state built from events, decisions made
//! from state. No I/O: the router feeds it events and the clock, and carries out its
//! decisions (appending the events that record them, ringing phones).
//!
//! Two layers: [`Acd`] knows the agents, queues, calls and timers, and chooses (who is offered
//! a waiting call, which timers are due: [`Decision`]); [`routing::Routing`] is the router's
//! whole rule book over it as a [`cc_core::Decider`]: a PBX fact, a tick of the clock or a
//! writer's report in, the call events to record and the PBX actions to take out.

use std::collections::{BTreeMap, HashMap, HashSet};

use cc_contracts::call::{CallEvent, QueueSettings, Strategy, WithdrawReason};
use cc_contracts::domain::{AgentNumber, DeviceId, QueueNumber};
use cc_contracts::pbx::{HangupCause, Party};
use cc_contracts::queue::QueueEvent;
use cc_contracts::session::AgentSessionEvent;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

pub mod routing;

pub use routing::{Routing, OFFER_PREFIX};

pub type Key<T> = (String, T);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    pub logged_in: bool,
    pub device: Option<DeviceId>,
    pub device_online: bool,
    pub paused: bool,
    pub queues: HashSet<QueueNumber>,
    /// Offers ringing now.
    pub ringing: usize,
    pub on_call: Option<String>,
    /// The agent's own outbound call, from the dial to its end: never offered a queue call
    /// meanwhile, not even by a ring-in-use queue.
    pub outbound: Option<String>,
    /// The last call answered, with its queue (for its wrap-up).
    pub last_call: Option<(String, QueueNumber)>,
    pub wrap_up: Option<(String, DateTime<Utc>)>,
    /// The wrap-up waits for a disposition (the queue requires one and none is given yet): its
    /// timer is not armed until one is.
    pub disposition_pending: bool,
    pub reject_until: Option<DateTime<Utc>>,
    pub idle_since: DateTime<Utc>,
    pub calls_answered: i64,
    pub talk_ms: i64,
    pub missed_in_row: i64,
    /// The leg of a withdrawn offer, hung up on the PBX but not yet reported gone, and until
    /// when it is waited for: the agent's phone is not rung again before (the PBX would find
    /// it busy and the agent would be charged with a reject).
    pub leg_up: Option<(String, DateTime<Utc>)>,
    /// This agent's entries in [`Acd::timers`] (wrap-up end, reject delay end).
    timers: Vec<(DateTime<Utc>, Timer)>,
}

impl Agent {
    fn new(at: DateTime<Utc>) -> Self {
        Agent {
            logged_in: false,
            device: None,
            device_online: false,
            paused: false,
            queues: HashSet::new(),
            ringing: 0,
            on_call: None,
            outbound: None,
            last_call: None,
            wrap_up: None,
            disposition_pending: false,
            reject_until: None,
            idle_since: at,
            calls_answered: 0,
            talk_ms: 0,
            missed_in_row: 0,
            leg_up: None,
            timers: vec![],
        }
    }

    /// The routing invariant: logged in, in the queue, not paused, device online, not ringing,
    /// not on a call (unless ring-in-use), not in wrap-up, not in a reject delay.
    pub fn eligible(&self, queue: &QueueNumber, ring_in_use: bool, now: DateTime<Utc>) -> bool {
        self.logged_in
            && self.queues.contains(queue)
            && !self.paused
            && self.device_online
            && self.device.is_some()
            && self.ringing == 0
            && (self.on_call.is_none() || ring_in_use)
            && self.outbound.is_none()
            && self.wrap_up.is_none()
            && self.reject_until.is_none_or(|t| t <= now)
            && self.leg_up.as_ref().is_none_or(|(_, until)| *until <= now)
    }

    /// Until when a reject delay or a withdrawn leg still up holds the agent back (if later
    /// than `now`).
    fn held_until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let leg = self.leg_up.as_ref().map(|(_, t)| *t);
        self.reject_until.max(leg).filter(|t| *t > now)
    }
}

/// How long the router waits for a withdrawn offer's leg to be reported gone before ringing
/// the agent's phone again anyway (a hangup fact lost with a crashed PBX adapter).
pub const LEG_GONE_WAIT_MS: i64 = 3000;

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Queue {
    pub settings: QueueSettings,
    pub members: BTreeMap<AgentNumber, i32>,
    pub last_offered: Option<AgentNumber>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Offer {
    pub offer: String,
    pub agent: AgentNumber,
    pub at: DateTime<Utc>,
    /// Its ring timeout, when it is not `at` + the queue's ring timeout: the timeout came and
    /// the router is waiting for the PBX to end the ring ([`Acd::postpone_offer`]).
    pub due: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Call {
    pub tenant: String,
    pub queue: QueueNumber,
    pub caller: Party,
    pub channel: String,
    pub priority: i32,
    pub entered_at: DateTime<Utc>,
    pub seq: u64,
    pub offers: Vec<Offer>,
    pub answered: Option<AgentNumber>,
    pub done: bool,
    /// This call's entries in [`Acd::timers`] (ring timeouts of its offers, its max wait).
    timers: Vec<(DateTime<Utc>, Timer)>,
    /// Its place in its queue's waiting line while it waits for an offer.
    waiting: Option<WaitKey>,
}

/// A timer derived from state, kept in [`Acd::timers`] in deadline order so that finding the
/// next one and the due ones costs nothing like a scan of every call and agent.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum Timer {
    Offer {
        call: String,
        offer: String,
    },
    MaxWait {
        call: String,
    },
    WrapUp {
        tenant: String,
        agent: AgentNumber,
    },
    /// The end of a reject delay: nothing to do but route again.
    Reject {
        tenant: String,
        agent: AgentNumber,
    },
}

/// Service order in a queue: higher priority first, then first come first served.
type WaitKey = (std::cmp::Reverse<i32>, DateTime<Utc>, u64, String);

/// A decision to carry out.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Ring these agents (several for ring-all) for this call.
    Offer {
        call: String,
        agents: Vec<(AgentNumber, DeviceId)>,
    },
    /// An offer rang too long.
    OfferTimedOut {
        call: String,
        agent: AgentNumber,
        offer: String,
    },
    /// A caller waited longer than the queue allows.
    MaxWait { call: String },
    /// A wrap-up is over.
    WrapUpOver {
        call: String,
        tenant: String,
        agent: AgentNumber,
    },
    /// Nobody is logged into the queue of a waiting call, and the queue sends callers away then.
    NoAgents { call: String },
}

/// The whole state, as a take-over's snapshot saves it (serialized with serde: see
/// `crate::fold`). Every struct of it refuses unknown fields and has no defaults, so a
/// snapshot of another shape does not decode and the router replays the store instead.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Acd {
    #[serde(with = "cc_core::pairs")]
    pub agents: HashMap<Key<AgentNumber>, Agent>,
    #[serde(with = "cc_core::pairs")]
    pub queues: HashMap<Key<QueueNumber>, Queue>,
    pub calls: HashMap<String, Call>,
    /// offer (channel) id -> call id
    pub offers: HashMap<String, String>,
    /// caller channel id -> call id
    pub channels: HashMap<String, String>,
    /// Transfers ringing or talking to an agent: transfer id -> (tenant, agent, answered).
    pub transfers: HashMap<String, (String, AgentNumber, bool)>,
    /// The most recent channels the router must have hung up (offers that ended without an
    /// answer, callers who left the queue): (tenant, channel). A restart hangs up again any
    /// the PBX still has, in case the hangup was lost with the previous router.
    pub to_hang_up: std::collections::VecDeque<(String, String, HangupCause)>,
    /// Every pending timer, by deadline.
    timers: std::collections::BTreeSet<(DateTime<Utc>, Timer)>,
    /// Withdrawn offers' legs still up (see [`Agent::leg_up`]): channel -> agent.
    legs_up: HashMap<String, Key<AgentNumber>>,
    /// Each queue's calls waiting for an offer, in service order.
    #[serde(with = "cc_core::pairs")]
    waiting: HashMap<Key<QueueNumber>, std::collections::BTreeSet<WaitKey>>,
    /// Something changed since the last dispatch (a dispatch finds nothing new otherwise).
    dirty: bool,
    /// A reject delay that held an agent back at the last dispatch ends then.
    recheck_at: Option<DateTime<Utc>>,
    /// Agents changed by the event being applied (their timers are re-indexed after it).
    touched: Vec<Key<AgentNumber>>,
    /// Caller channels already taken into a queue (the most recent ones): a redelivered PBX
    /// report does not enter the same caller twice.
    callers_seen: (HashSet<String>, std::collections::VecDeque<String>),
    seq: u64,
    rng: u64,
}

/// What a dispatch chose: the offers to make ([`Decision::Offer`]), and what it leaves for the
/// next dispatch.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    pub offers: Vec<Decision>,
    /// When a reject delay (or a withdrawn leg still up) that held an agent back ends.
    pub recheck_at: Option<DateTime<Utc>>,
    /// The chooser's random state after it.
    pub rng: u64,
}

/// How many caller channels [`Acd::caller_seen`] remembers.
const CALLERS_REMEMBERED: usize = 100_000;

/// What the chooser knows of a candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub agent: AgentNumber,
    pub penalty: i32,
    pub idle_since: DateTime<Utc>,
    pub calls_answered: i64,
    pub talk_ms: i64,
}

/// Picks the agents to ring among eligible candidates (never empty if candidates are not).
pub fn choose(
    strategy: Strategy,
    mut c: Vec<Candidate>,
    last_offered: Option<&AgentNumber>,
    random: u64,
) -> Vec<AgentNumber> {
    if c.is_empty() {
        return vec![];
    }
    c.sort_by(|a, b| a.agent.cmp(&b.agent));
    let pick = |c: &[Candidate], key: &dyn Fn(&Candidate) -> (i64, DateTime<Utc>)| {
        c.iter()
            .min_by(|a, b| key(a).cmp(&key(b)).then(a.agent.cmp(&b.agent)))
            .map(|x| x.agent.clone())
            .into_iter()
            .collect()
    };
    match strategy {
        Strategy::RingAll => c.into_iter().map(|x| x.agent).collect(),
        Strategy::LongestIdle => pick(&c, &|x| (0, x.idle_since)),
        Strategy::FewestCalls => pick(&c, &|x| (x.calls_answered, x.idle_since)),
        Strategy::LeastTalkTime => pick(&c, &|x| (x.talk_ms, x.idle_since)),
        Strategy::Linear => pick(&c, &|x| (x.penalty as i64, DateTime::<Utc>::MIN_UTC)),
        Strategy::RoundRobin => {
            let next = last_offered
                .and_then(|l| c.iter().find(|x| &x.agent > l))
                .unwrap_or(&c[0]);
            vec![next.agent.clone()]
        }
        Strategy::Random => vec![c[(random % c.len() as u64) as usize].agent.clone()],
    }
}

impl Acd {
    fn agent(&mut self, tenant: &str, agent: &AgentNumber, at: DateTime<Utc>) -> &mut Agent {
        let key = (tenant.to_string(), agent.clone());
        self.touched.push(key.clone());
        self.agents.entry(key).or_insert_with(|| Agent::new(at))
    }

    /// Re-indexes the timers of the agents changed by the last event.
    fn index_touched_agents(&mut self, at: DateTime<Utc>) {
        for key in std::mem::take(&mut self.touched) {
            let Some(a) = self.agents.get_mut(&key) else {
                continue;
            };
            for t in a.timers.drain(..) {
                self.timers.remove(&t);
            }
            let (tenant, agent) = key;
            if let Some((_, until)) = a.wrap_up.as_ref().filter(|_| !a.disposition_pending) {
                a.timers.push((
                    *until,
                    Timer::WrapUp {
                        tenant: tenant.clone(),
                        agent: agent.clone(),
                    },
                ));
            }
            if let Some(until) = a.reject_until.filter(|t| *t > at) {
                a.timers.push((until, Timer::Reject { tenant, agent }));
            }
            self.timers.extend(a.timers.iter().cloned());
        }
    }

    /// Re-indexes a call after a change: its timers and its place in the waiting line; forgets
    /// it once it is over and nobody rings for it.
    fn index_call(&mut self, id: &str) {
        self.unindex_call(id);
        let Some(c) = self.calls.get(id) else { return };
        if c.done && c.offers.is_empty() {
            let c = self.calls.remove(id).unwrap();
            self.channels.remove(&c.channel);
            return;
        }
        let s = self
            .queues
            .get(&(c.tenant.clone(), c.queue.clone()))
            .map(|q| q.settings.clone())
            .unwrap_or_default();
        let mut timers: Vec<(DateTime<Utc>, Timer)> = c
            .offers
            .iter()
            .map(|o| {
                (
                    o.due.unwrap_or(o.at + Duration::seconds(s.ring_timeout_s)),
                    Timer::Offer {
                        call: id.to_string(),
                        offer: o.offer.clone(),
                    },
                )
            })
            .collect();
        let unanswered = !c.done && c.answered.is_none();
        if unanswered && s.max_wait_s > 0 {
            timers.push((
                c.entered_at + Duration::seconds(s.max_wait_s),
                Timer::MaxWait {
                    call: id.to_string(),
                },
            ));
        }
        let waiting = (unanswered && c.offers.is_empty()).then(|| {
            (
                std::cmp::Reverse(c.priority),
                c.entered_at,
                c.seq,
                id.to_string(),
            )
        });
        let queue = (c.tenant.clone(), c.queue.clone());
        self.timers.extend(timers.iter().cloned());
        if let Some(k) = &waiting {
            self.waiting.entry(queue).or_default().insert(k.clone());
        }
        let c = self.calls.get_mut(id).unwrap();
        c.timers = timers;
        c.waiting = waiting;
    }

    /// Moves an offer's ring timeout to `until` (while the PBX is asked to end the ring).
    pub fn postpone_offer(&mut self, call: &str, offer: &str, until: DateTime<Utc>) {
        let Some(o) = self
            .calls
            .get_mut(call)
            .and_then(|c| c.offers.iter_mut().find(|o| o.offer == offer))
        else {
            return;
        };
        o.due = Some(until);
        self.index_call(call);
    }

    /// Whether `offer` of `call` is still ringing (not answered, ended or withdrawn).
    pub fn offer_open(&self, call: &str, offer: &str) -> bool {
        self.calls
            .get(call)
            .is_some_and(|c| c.offers.iter().any(|o| o.offer == offer))
    }

    fn unindex_call(&mut self, id: &str) {
        let Some(c) = self.calls.get_mut(id) else {
            return;
        };
        for t in c.timers.drain(..) {
            self.timers.remove(&t);
        }
        if let Some(k) = c.waiting.take() {
            if let Some(w) = self.waiting.get_mut(&(c.tenant.clone(), c.queue.clone())) {
                w.remove(&k);
            }
        }
    }

    fn queue(&mut self, tenant: &str, q: &QueueNumber) -> &mut Queue {
        self.queues
            .entry((tenant.to_string(), q.clone()))
            .or_default()
    }

    pub fn settings(&self, tenant: &str, q: &QueueNumber) -> QueueSettings {
        self.queues
            .get(&(tenant.to_string(), q.clone()))
            .map(|q| q.settings.clone())
            .unwrap_or_default()
    }

    pub fn has_queue(&self, tenant: &str, q: &str) -> Option<QueueNumber> {
        let q = QueueNumber::parse(q).ok()?;
        self.queues
            .contains_key(&(tenant.to_string(), q.clone()))
            .then_some(q)
    }

    pub fn apply_session(&mut self, tenant: &str, e: &AgentSessionEvent, at: DateTime<Utc>) {
        use AgentSessionEvent::*;
        match e {
            AgentLoggedIn {
                agent,
                device,
                queues,
                ..
            } => {
                let a = self.agent(tenant, agent, at);
                a.logged_in = true;
                a.device = Some(device.clone());
                a.device_online = true;
                a.paused = false;
                a.queues = queues.iter().cloned().collect();
                a.idle_since = at;
                a.calls_answered = 0;
                a.talk_ms = 0;
                a.missed_in_row = 0;
            }
            AgentLoggedOut { agent, .. } => {
                let a = self.agent(tenant, agent, at);
                a.logged_in = false;
                a.queues.clear();
                // Logged out, the agent has no wrap-up form: a wrap-up waiting for a
                // disposition ends at its time, the call recorded without one.
                a.disposition_pending = false;
            }
            AgentPaused { agent, .. } | AgentPauseReasonChanged { agent, .. } => {
                self.agent(tenant, agent, at).paused = true
            }
            AgentUnpaused { agent, .. } => {
                let a = self.agent(tenant, agent, at);
                a.paused = false;
                a.missed_in_row = 0;
            }
            AgentJoinedQueue { agent, queue } => {
                self.agent(tenant, agent, at).queues.insert(queue.clone());
            }
            AgentLeftQueue { agent, queue } => {
                self.agent(tenant, agent, at).queues.remove(queue);
            }
            AgentDeviceWentOffline { agent, .. } => {
                self.agent(tenant, agent, at).device_online = false
            }
            AgentDeviceCameOnline { agent, .. } => {
                self.agent(tenant, agent, at).device_online = true
            }
        }
        self.index_touched_agents(at);
        self.dirty = true;
    }

    pub fn apply_queue(&mut self, tenant: &str, e: &QueueEvent) {
        match e {
            QueueEvent::QueueCreated { queue, .. } => {
                self.queue(tenant, queue);
            }
            QueueEvent::AgentAssignedToQueue {
                queue,
                agent,
                penalty,
            } => {
                self.queue(tenant, queue)
                    .members
                    .insert(agent.clone(), *penalty);
            }
            QueueEvent::AgentUnassignedFromQueue { queue, agent } => {
                self.queue(tenant, queue).members.remove(agent);
            }
            QueueEvent::QueueConfigured { queue, settings } => {
                self.queue(tenant, queue).settings = settings.clone();
                // Timers follow the new settings.
                let ids: Vec<String> = self
                    .calls
                    .iter()
                    .filter(|(_, c)| c.tenant == tenant && &c.queue == queue)
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in ids {
                    self.index_call(&id);
                }
            }
        }
        self.dirty = true;
    }

    pub fn apply_call(&mut self, tenant: &str, e: &CallEvent, at: DateTime<Utc>) {
        use CallEvent::*;
        match e {
            CallEnteredQueue {
                call,
                queue,
                caller,
                channel,
                priority,
            } => {
                self.unindex_call(call);
                self.seq += 1;
                self.remember_caller(channel);
                self.channels.insert(channel.clone(), call.clone());
                self.calls.insert(
                    call.clone(),
                    Call {
                        tenant: tenant.into(),
                        queue: queue.clone(),
                        caller: caller.clone(),
                        channel: channel.clone(),
                        priority: *priority,
                        entered_at: at,
                        seq: self.seq,
                        offers: vec![],
                        answered: None,
                        done: false,
                        timers: vec![],
                        waiting: None,
                    },
                );
            }
            CallOffered {
                call,
                queue,
                agent,
                offer,
                ..
            } => {
                if let Some(c) = self.calls.get_mut(call) {
                    c.offers.push(Offer {
                        offer: offer.clone(),
                        agent: agent.clone(),
                        at,
                        due: None,
                    });
                }
                self.offers.insert(offer.clone(), call.clone());
                self.agent(tenant, agent, at).ringing += 1;
                self.queue(tenant, queue).last_offered = Some(agent.clone());
            }
            OfferRejected { call, agent, offer }
            | OfferTimedOut { call, agent, offer }
            | OfferWithdrawn {
                call, agent, offer, ..
            } => {
                // Hung up again with the cause the phone would have had: rung out, or not.
                let cause = if matches!(e, OfferTimedOut { .. }) {
                    HangupCause::NoAnswer
                } else {
                    HangupCause::Normal
                };
                self.remember_hangup(tenant, offer, cause);
                self.end_offer(call, offer);
                let reject_delay = self
                    .calls
                    .get(call)
                    .map(|c| self.settings(tenant, &c.queue).reject_delay_s)
                    .unwrap_or(0);
                let a = self.agent(tenant, agent, at);
                a.ringing = a.ringing.saturating_sub(1);
                let mut leg = None;
                match e {
                    OfferRejected { .. } => {
                        a.reject_until = Some(at + Duration::seconds(reject_delay))
                    }
                    OfferTimedOut { .. } => a.missed_in_row += 1,
                    _ => {
                        // The router hangs the leg up after this is recorded: wait for it.
                        let until = at + Duration::milliseconds(LEG_GONE_WAIT_MS);
                        leg = a.leg_up.replace((offer.clone(), until));
                        self.legs_up
                            .insert(offer.clone(), (tenant.to_string(), agent.clone()));
                    }
                }
                if let Some((old, _)) = leg {
                    self.legs_up.remove(&old);
                }
            }
            CallAnswered {
                call,
                agent,
                offer,
                queue,
                ..
            } => {
                self.end_offer(call, offer);
                if let Some(c) = self.calls.get_mut(call) {
                    c.answered = Some(agent.clone());
                }
                let a = self.agent(tenant, agent, at);
                a.ringing = a.ringing.saturating_sub(1);
                a.on_call = Some(call.clone());
                a.last_call = Some((call.clone(), queue.clone()));
                a.missed_in_row = 0;
                a.calls_answered += 1;
            }
            CallAbandoned { call, .. } | CallLeftQueue { call, .. } => {
                if let Some(c) = self.calls.get_mut(call) {
                    c.done = true;
                }
                if let (CallLeftQueue { .. }, Some(c)) = (e, self.calls.get(call)) {
                    let channel = c.channel.clone();
                    self.remember_hangup(tenant, &channel, HangupCause::Normal);
                }
            }
            CallEnded {
                call,
                agent,
                talk_ms,
                ..
            } => {
                if let Some(c) = self.calls.get_mut(call) {
                    c.done = true;
                }
                let a = self.agent(tenant, agent, at);
                a.on_call = None;
                if a.outbound.as_ref() == Some(call) {
                    a.outbound = None;
                }
                a.talk_ms += talk_ms;
                a.idle_since = at;
            }
            WrapUpStarted {
                call,
                agent,
                seconds,
            } => {
                let queue = self
                    .agents
                    .get(&(tenant.to_string(), agent.clone()))
                    .and_then(|a| a.last_call.as_ref())
                    .filter(|(c, _)| c == call)
                    .map(|(_, q)| q.clone());
                let required =
                    queue.is_some_and(|q| self.settings(tenant, &q).disposition_required);
                let a = self.agent(tenant, agent, at);
                a.wrap_up = Some((call.clone(), at + Duration::seconds(*seconds)));
                a.disposition_pending = required;
            }
            WrapUpEnded { agent, .. } => {
                let a = self.agent(tenant, agent, at);
                a.wrap_up = None;
                a.disposition_pending = false;
                a.idle_since = at;
            }
            CallDispositionRecorded {
                call,
                agent,
                disposition: Some(_),
                ..
            } => {
                let a = self.agent(tenant, agent, at);
                if a.wrap_up.as_ref().is_some_and(|(c, _)| c == call) {
                    // Past its time, the wrap-up ends at once (its timer is due).
                    a.disposition_pending = false;
                }
            }
            CallDispositionRecorded { .. } => {}
            // A transfer to an agent's device: the agent rings, then is on the call (and not
            // offered queue calls meanwhile); their wrap-up follows the call's queue.
            TransferStarted {
                call,
                transfer,
                target_agent: Some(agent),
                queue,
                ..
            } => {
                self.transfers
                    .insert(transfer.clone(), (tenant.to_string(), agent.clone(), false));
                let a = self.agent(tenant, agent, at);
                a.ringing += 1;
                if let Some(queue) = queue {
                    a.last_call = Some((call.clone(), queue.clone()));
                }
            }
            TransferAnswered { call, transfer, .. } => {
                if let Some((t, agent, answered)) = self.transfers.get_mut(transfer) {
                    *answered = true;
                    let (t, agent) = (t.clone(), agent.clone());
                    let a = self.agent(&t, &agent, at);
                    a.ringing = a.ringing.saturating_sub(1);
                    a.on_call = Some(call.clone());
                }
            }
            TransferFailed { transfer, .. } | TransferCancelled { transfer, .. } => {
                if let Some((t, agent, answered)) = self.transfers.remove(transfer) {
                    let a = self.agent(&t, &agent, at);
                    if answered {
                        a.on_call = None;
                        a.idle_since = at;
                    } else {
                        a.ringing = a.ringing.saturating_sub(1);
                    }
                }
            }
            TransferCompleted { transfer, .. } => {
                // The receiving agent is on the call now, until their CallEnded.
                self.transfers.remove(transfer);
            }
            // The agent's own outbound call: busy from the dial (no queue call is offered
            // meanwhile) to its end (CallEnded, or the dial failing).
            OutboundCallStarted { call, agent, .. } => {
                let a = self.agent(tenant, agent, at);
                a.on_call = Some(call.clone());
                a.outbound = Some(call.clone());
            }
            OutboundCallFailed { call, agent, .. } => {
                let a = self.agent(tenant, agent, at);
                if a.outbound.as_ref() == Some(call) {
                    a.outbound = None;
                    a.on_call = None;
                    a.idle_since = at;
                }
            }
            OutboundCallDialed { .. } => {}
            TransferStarted { .. }
            | ConferenceFormed { .. }
            | TransferredCallEnded { .. }
            | MonitorStarted { .. }
            | MonitorJoined { .. }
            | MonitorModeChanged { .. }
            | MonitorEnded { .. } => {}
            CallConnected { .. } | CallHeld { .. } | CallResumed { .. } => {}
        }
        self.index_call(e.call());
        self.index_touched_agents(at);
        self.dirty = true;
    }

    /// The PBX reported a channel gone: an agent waiting for it (a withdrawn offer's leg) may
    /// be rung again.
    pub fn channel_gone(&mut self, channel: &str) {
        if let Some(key) = self.legs_up.remove(channel) {
            if let Some(a) = self.agents.get_mut(&key) {
                if a.leg_up.as_ref().is_some_and(|(c, _)| c == channel) {
                    a.leg_up = None;
                    self.dirty = true;
                }
            }
        }
    }

    /// Remembers a caller channel taken into a queue (the last [`CALLERS_REMEMBERED`]).
    fn remember_caller(&mut self, channel: &str) {
        let (set, order) = &mut self.callers_seen;
        if !set.insert(channel.to_string()) {
            return;
        }
        order.push_back(channel.to_string());
        if order.len() > CALLERS_REMEMBERED {
            if let Some(old) = order.pop_front() {
                set.remove(&old);
            }
        }
    }

    /// Whether this caller channel was taken into a queue already (of the most recent ones).
    pub fn caller_seen(&self, channel: &str) -> bool {
        self.callers_seen.0.contains(channel)
    }

    /// The call and agent of an offer still ringing, by its leg's channel.
    pub fn offer_agent(&self, channel: &str) -> Option<(&str, &AgentNumber)> {
        let call = self.offers.get(channel)?;
        let o = self
            .calls
            .get(call)?
            .offers
            .iter()
            .find(|o| o.offer == channel)?;
        Some((call, &o.agent))
    }

    fn remember_hangup(&mut self, tenant: &str, channel: &str, cause: HangupCause) {
        if self.to_hang_up.len() >= 10_000 {
            self.to_hang_up.pop_front();
        }
        self.to_hang_up
            .push_back((tenant.to_string(), channel.to_string(), cause));
    }

    fn end_offer(&mut self, call: &str, offer: &str) {
        self.offers.remove(offer);
        if let Some(c) = self.calls.get_mut(call) {
            c.offers.retain(|o| o.offer != offer);
        }
    }

    /// The position (1-based) of a waiting call in its queue.
    pub fn position(&self, call: &str) -> i32 {
        let Some(c) = self.calls.get(call) else {
            return 0;
        };
        1 + self
            .calls
            .values()
            .filter(|o| {
                o.tenant == c.tenant
                    && o.queue == c.queue
                    && o.answered.is_none()
                    && !o.done
                    && (o.priority > c.priority
                        || (o.priority == c.priority
                            && (o.entered_at, o.seq) < (c.entered_at, c.seq)))
            })
            .count() as i32
    }

    /// Offers to make now (see [`Acd::plan_dispatch`]), the dispatch taken as done.
    pub fn dispatch(&mut self, now: DateTime<Utc>) -> Vec<Decision> {
        let Some(plan) = self.plan_dispatch(now) else {
            return vec![];
        };
        self.dispatched(plan.recheck_at, plan.rng);
        plan.offers
    }

    /// A dispatch was made: nothing new until something changes (or `recheck_at`).
    fn dispatched(&mut self, recheck_at: Option<DateTime<Utc>>, rng: u64) {
        self.dirty = false;
        self.recheck_at = recheck_at;
        self.rng = rng;
    }

    /// Offers to make now: the waiting calls in service order (priority, then first come
    /// first served, across queues), each to the agents its queue's strategy picks among the
    /// eligible ones not picked for an earlier call. None when nothing changed since the last
    /// dispatch (it costs nothing then); otherwise it looks at each queue's members once per
    /// offer made.
    pub(crate) fn plan_dispatch(&self, now: DateTime<Utc>) -> Option<Plan> {
        let mut out = vec![];
        if !self.dirty && self.recheck_at.is_none_or(|t| t > now) {
            return None;
        }
        let mut recheck_at: Option<DateTime<Utc>> = None;
        // With no free agent (the usual case under load), nothing to do.
        let any_free = self.agents.values().any(|a| {
            a.logged_in && a.ringing == 0 && a.on_call.is_none() && a.wrap_up.is_none() && !a.paused
        });
        let ring_in_use = self.queues.values().any(|q| q.settings.ring_in_use);
        if !any_free && !ring_in_use {
            return Some(Plan {
                offers: out,
                recheck_at,
                rng: self.rng,
            });
        }
        let mut taken: HashSet<Key<AgentNumber>> = HashSet::new();
        // Each queue's line; the head that comes first overall is served next. A queue whose
        // head finds no agent is done: its later calls have the same candidates, or fewer.
        let mut lines: Vec<(
            &Key<QueueNumber>,
            std::collections::btree_set::Iter<WaitKey>,
            &WaitKey,
        )> = self
            .waiting
            .iter()
            .filter_map(|(q, w)| {
                let mut line = w.iter();
                line.next().map(|head| (q, line, head))
            })
            .collect();
        while let Some(i) = (0..lines.len()).min_by_key(|&i| lines[i].2) {
            let (qkey, call) = (lines[i].0, &lines[i].2 .3);
            match lines[i].1.next() {
                Some(next) => lines[i].2 = next,
                None => {
                    let _ = lines.swap_remove(i);
                }
            }
            let Some(q) = self.queues.get(qkey) else {
                continue;
            };
            let tenant = &qkey.0;
            let mut candidates = vec![];
            for (agent, penalty) in &q.members {
                let key = (tenant.clone(), agent.clone());
                let Some(a) = self.agents.get(&key) else {
                    continue;
                };
                if taken.contains(&key) {
                    continue;
                }
                if a.eligible(&qkey.1, q.settings.ring_in_use, now) {
                    candidates.push(Candidate {
                        agent: agent.clone(),
                        penalty: *penalty,
                        idle_since: a.idle_since,
                        calls_answered: a.calls_answered,
                        talk_ms: a.talk_ms,
                    });
                } else if let Some(until) = a.held_until(now) {
                    // Held back only by a reject delay or a leg still up? Route again then.
                    if (Agent {
                        reject_until: None,
                        leg_up: None,
                        ..a.clone()
                    })
                    .eligible(&qkey.1, q.settings.ring_in_use, now)
                    {
                        recheck_at = Some(recheck_at.map_or(until, |r| r.min(until)));
                    }
                }
            }
            let random = self
                .rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407 + out.len() as u64);
            let chosen = choose(
                q.settings.strategy,
                candidates,
                q.last_offered.as_ref(),
                random >> 33,
            );
            if chosen.is_empty() {
                lines.retain(|l| l.0 != qkey);
                continue;
            }
            let agents = chosen
                .into_iter()
                .filter_map(|a| {
                    let key = (tenant.clone(), a.clone());
                    let device = self.agents.get(&key)?.device.clone()?;
                    taken.insert(key);
                    Some((a, device))
                })
                .collect();
            out.push(Decision::Offer {
                call: call.clone(),
                agents,
            });
        }
        let rng = self
            .rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        Some(Plan {
            offers: out,
            recheck_at,
            rng,
        })
    }

    /// Timers that are due (see [`Acd::due_at`]); the ends of reject delays among them are
    /// taken as seen.
    pub fn due(&mut self, now: DateTime<Utc>) -> Vec<Decision> {
        let (out, wakes) = self.due_at(now);
        for (at, key) in wakes {
            self.reject_delay_over(at, key);
        }
        out
    }

    /// A reject delay that ended at `at` was seen: its timer is spent, and a dispatch may
    /// find the agent now.
    fn reject_delay_over(&mut self, at: DateTime<Utc>, (tenant, agent): Key<AgentNumber>) {
        self.timers.remove(&(at, Timer::Reject { tenant, agent }));
        self.dirty = true;
    }

    /// Timers that are due (ring timeouts, max wait, wrap-up ends), re-derived from state: a
    /// timer stays due until the event that settles it is applied. Also the reject delays
    /// that ended (when, and whose): they only ask for another dispatch.
    #[allow(clippy::type_complexity)]
    pub(crate) fn due_at(
        &self,
        now: DateTime<Utc>,
    ) -> (Vec<Decision>, Vec<(DateTime<Utc>, Key<AgentNumber>)>) {
        let mut out = vec![];
        let mut wakes = vec![];
        for (at, timer) in self.timers.iter().take_while(|(at, _)| *at <= now) {
            match timer {
                Timer::Offer { call, offer } => {
                    let Some(o) = self
                        .calls
                        .get(call)
                        .and_then(|c| c.offers.iter().find(|o| &o.offer == offer))
                    else {
                        continue;
                    };
                    out.push(Decision::OfferTimedOut {
                        call: call.clone(),
                        agent: o.agent.clone(),
                        offer: offer.clone(),
                    });
                }
                Timer::MaxWait { call } => out.push(Decision::MaxWait { call: call.clone() }),
                Timer::WrapUp { tenant, agent } => {
                    let Some((call, _)) = self
                        .agents
                        .get(&(tenant.clone(), agent.clone()))
                        .and_then(|a| a.wrap_up.as_ref())
                    else {
                        continue;
                    };
                    out.push(Decision::WrapUpOver {
                        call: call.clone(),
                        tenant: tenant.clone(),
                        agent: agent.clone(),
                    });
                }
                Timer::Reject { tenant, agent } => {
                    wakes.push((*at, (tenant.clone(), agent.clone())))
                }
            }
        }
        let max_waits: HashSet<&String> = out
            .iter()
            .filter_map(|d| {
                if let Decision::MaxWait { call } = d {
                    Some(call)
                } else {
                    None
                }
            })
            .collect();
        let away: Vec<String> = self
            .sent_away()
            .filter(|c| !max_waits.contains(c))
            .cloned()
            .collect();
        out.extend(away.into_iter().map(|call| Decision::NoAgents { call }));
        (out, wakes)
    }

    /// When the next timer falls due.
    pub fn next_deadline(&self) -> Option<DateTime<Utc>> {
        let timer = self.timers.first().map(|(at, _)| *at);
        let away = self
            .sent_away()
            .filter_map(|c| self.calls.get(c))
            .map(|c| c.entered_at)
            .min();
        timer.into_iter().chain(away).min()
    }

    /// Waiting calls in queues that send callers away when nobody is logged into them, while
    /// nobody is.
    fn sent_away(&self) -> impl Iterator<Item = &String> {
        self.waiting
            .iter()
            .filter(|((tenant, queue), w)| {
                !w.is_empty()
                    && self
                        .queues
                        .get(&(tenant.clone(), queue.clone()))
                        .is_some_and(|q| q.settings.leave_when_no_agents)
                    && !self.anyone_logged_in(tenant, queue)
            })
            .flat_map(|(_, w)| w.iter().map(|k| &k.3))
    }

    /// Why the agent can no longer take the offers ringing them, if they cannot: logged out
    /// (by themselves, a supervisor or a disabled account), or their device went offline.
    pub fn unavailable(&self, tenant: &str, agent: &AgentNumber) -> Option<WithdrawReason> {
        let a = self.agents.get(&(tenant.to_string(), agent.clone()))?;
        if !a.logged_in {
            Some(WithdrawReason::AgentLoggedOut)
        } else if !a.device_online {
            Some(WithdrawReason::DeviceOffline)
        } else if a.outbound.is_some() {
            Some(WithdrawReason::AgentDialedOut)
        } else {
            None
        }
    }

    /// The queue offers ringing agents who can no longer take them, to withdraw at once:
    /// (tenant, call, agent, offer, reason). Only `agent`'s when given, else every agent's (after
    /// a rebuild: a logout recorded while no router was leading).
    pub fn offers_to_withdraw(
        &self,
        only: Option<(&str, &AgentNumber)>,
    ) -> Vec<(String, String, AgentNumber, String, WithdrawReason)> {
        let mut out = vec![];
        for (id, c) in &self.calls {
            for o in &c.offers {
                if only.is_some_and(|(t, a)| t != c.tenant || *a != o.agent) {
                    continue;
                }
                if let Some(reason) = self.unavailable(&c.tenant, &o.agent) {
                    out.push((
                        c.tenant.clone(),
                        id.clone(),
                        o.agent.clone(),
                        o.offer.clone(),
                        reason,
                    ));
                }
            }
        }
        // Calls in the order they came (the map's order is arbitrary).
        out.sort_by_key(|(_, call, _, _, _)| self.calls.get(call).map(|c| c.seq));
        out
    }

    /// Whether any agent is logged into the queue.
    pub fn anyone_logged_in(&self, tenant: &str, queue: &QueueNumber) -> bool {
        self.agents
            .iter()
            .any(|((t, _), a)| t == tenant && a.logged_in && a.queues.contains(queue))
    }
}

#[cfg(test)]
mod tests;
