//! The world around the router: agent-session (the agents' sessions), the PBX (callers,
//! phones, the reports it sends and their delivery), call-control (the calls from the answer
//! on); and the router's side: its decisions asked for and carried out as the router does.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use cc_contracts::call::{EndedBy, QueueSettings};
use cc_contracts::session::LogoutReason;

use super::ledger::Ledger;
use super::*;

/// An agent's session as agent-session has it.
#[derive(Debug, Clone, Default)]
pub(super) struct Session {
    pub(super) logged_in: bool,
    pub(super) paused: bool,
    pub(super) online: bool,
    pub(super) queues: BTreeSet<QueueNumber>,
}

/// An agent's phone leg at the PBX.
#[derive(Debug, Clone)]
pub(super) struct Leg {
    pub(super) call: String,
    pub(super) agent: AgentNumber,
    pub(super) answered: bool,
}

/// The router's model and the world around it.
pub(super) struct World {
    pub(super) acd: Acd,
    pub(super) now: i64,
    pub(super) settings: [QueueSettings; 2],
    /// Every recorded event, in order (what a rebuild reads).
    pub(super) store: Vec<Event>,
    pub(super) sessions: BTreeMap<AgentNumber, Session>,
    pub(super) ledger: Ledger,
    /// Legs ringing or answered at the PBX, by channel (the offer id).
    pub(super) legs: BTreeMap<String, Leg>,
    /// Legs the router hung up before they were answered: (call, agent) by channel.
    pub(super) hung_up: BTreeMap<String, (String, AgentNumber)>,
    /// Callers' channels up at the PBX.
    pub(super) callers: BTreeSet<String>,
    /// The PBX's reports, not delivered yet, and delivered.
    pub(super) facts: VecDeque<ChannelEvent>,
    pub(super) delivered: Vec<ChannelEvent>,
    /// `CancelRing` requests the PBX has not answered: (call, agent, offer).
    pub(super) cancels: Vec<(String, AgentNumber, String)>,
    /// What the phones did: legs rung out, and legs declined, per agent.
    pub(super) rang_out: BTreeMap<AgentNumber, u32>,
    pub(super) declined: BTreeMap<AgentNumber, u32>,
    pub(super) seq: u128,
}

impl World {
    pub(super) fn new(settings: [QueueSettings; 2]) -> Self {
        let mut w = World {
            acd: Acd::default(),
            now: 0,
            settings: settings.clone(),
            store: vec![],
            sessions: AGENTS
                .iter()
                .map(|n| (AgentNumber::parse(n).unwrap(), Session::default()))
                .collect(),
            ledger: Ledger::default(),
            legs: BTreeMap::new(),
            hung_up: BTreeMap::new(),
            callers: BTreeSet::new(),
            facts: VecDeque::new(),
            delivered: vec![],
            cancels: vec![],
            rang_out: BTreeMap::new(),
            declined: BTreeMap::new(),
            seq: 0,
        };
        for (qi, s) in settings.into_iter().enumerate() {
            let mut events = vec![
                QueueEvent::QueueCreated {
                    queue: queue(qi),
                    name: QUEUES[qi].into(),
                },
                QueueEvent::QueueConfigured {
                    queue: queue(qi),
                    settings: s,
                },
            ];
            for &ai in ASSIGNED[qi] {
                events.push(QueueEvent::AgentAssignedToQueue {
                    queue: queue(qi),
                    agent: agent(ai),
                    penalty: ai as i32,
                });
            }
            for event in events {
                w.evolve(Event::Queue {
                    tenant: T.into(),
                    event,
                });
            }
        }
        w
    }

    /// One step of the world, then the router's dispatch (as its loop makes one after each
    /// input), then the invariants.
    pub(super) fn step(&mut self, op: &Op) -> Check {
        self.apply(op)?;
        let ids = self.ids();
        self.decide(Command::Dispatch {
            now: t(self.now),
            ids,
        })?;
        self.check_state()
    }

    pub(super) fn apply(&mut self, op: &Op) -> Check {
        let now = t(self.now);
        match *op {
            Op::Login { agent: ai, queues } => {
                let a = agent(ai);
                if self.sessions[&a].logged_in {
                    return Ok(());
                }
                let queues: Vec<QueueNumber> = (0..QUEUES.len())
                    .filter(|qi| queues & (1 << qi) != 0)
                    .map(queue)
                    .filter(|q| self.assigned(q, &a))
                    .collect();
                self.session(AgentSessionEvent::AgentLoggedIn {
                    agent: a.clone(),
                    login_id: Uuid::nil(),
                    device: DeviceId::parse(a.as_str()).unwrap(),
                    queues,
                })?;
            }
            Op::Logout { agent: ai, unseen } => {
                let a = agent(ai);
                // agent-session refuses to log out an agent on a call.
                if !self.sessions[&a].logged_in || self.ledger.connected.contains_key(&a) {
                    return Ok(());
                }
                let e = AgentSessionEvent::AgentLoggedOut {
                    agent: a,
                    login_id: Uuid::nil(),
                    reason: LogoutReason::Agent,
                };
                self.session_seen(e, !unseen)?;
            }
            Op::Pause { agent: ai } => {
                let a = agent(ai);
                let s = &self.sessions[&a];
                if s.logged_in && !s.paused {
                    self.session(AgentSessionEvent::AgentPaused {
                        agent: a,
                        reason: "Lunch".into(),
                    })?;
                }
            }
            Op::Unpause { agent: ai } => {
                let a = agent(ai);
                let s = &self.sessions[&a];
                if s.logged_in && s.paused {
                    self.session(AgentSessionEvent::AgentUnpaused {
                        agent: a,
                        reason: "Lunch".into(),
                    })?;
                }
            }
            Op::JoinQueue {
                agent: ai,
                queue: qi,
            } => {
                let (a, q) = (agent(ai), queue(qi));
                let s = &self.sessions[&a];
                if s.logged_in && !s.queues.contains(&q) && self.assigned(&q, &a) {
                    self.session(AgentSessionEvent::AgentJoinedQueue { agent: a, queue: q })?;
                }
            }
            Op::LeaveQueue {
                agent: ai,
                queue: qi,
            } => {
                let (a, q) = (agent(ai), queue(qi));
                if self.sessions[&a].queues.contains(&q) {
                    self.session(AgentSessionEvent::AgentLeftQueue { agent: a, queue: q })?;
                }
            }
            Op::DeviceOffline { agent: ai, unseen } => {
                let a = agent(ai);
                let s = &self.sessions[&a];
                if s.logged_in && s.online {
                    let device = DeviceId::parse(a.as_str()).unwrap();
                    let e = AgentSessionEvent::AgentDeviceWentOffline { agent: a, device };
                    self.session_seen(e, !unseen)?;
                }
            }
            Op::DeviceOnline { agent: ai } => {
                let a = agent(ai);
                let s = &self.sessions[&a];
                if s.logged_in && !s.online {
                    let device = DeviceId::parse(a.as_str()).unwrap();
                    self.session(AgentSessionEvent::AgentDeviceCameOnline { agent: a, device })?;
                }
            }
            Op::CallArrives { queue: qi } => {
                self.seq += 1;
                let channel = format!("caller-{}", self.seq);
                self.callers.insert(channel.clone());
                self.facts.push_back(ChannelEvent::ChannelCreated {
                    tenant: T.into(),
                    channel,
                    direction: Direction::Inbound,
                    caller: Party {
                        number: "555".into(),
                        name: String::new(),
                    },
                    dialed: Some(QUEUES[qi].into()),
                    device: None,
                    number: None,
                    at: now,
                });
            }
            Op::Deliver => {
                if let Some(fact) = self.facts.pop_front() {
                    self.deliver(fact)?;
                }
            }
            Op::Redeliver { i } => {
                if !self.delivered.is_empty() {
                    let fact = self.delivered[i % self.delivered.len()].clone();
                    self.deliver(fact)?;
                }
            }
            Op::PhoneAnswers { leg } => {
                if let Some(ch) = self.ringing_leg(leg) {
                    self.legs.get_mut(&ch).unwrap().answered = true;
                    self.facts.push_back(ChannelEvent::ChannelAnswered {
                        tenant: T.into(),
                        channel: ch,
                        at: now,
                    });
                }
            }
            Op::PhoneRejects { leg, cause } => {
                if let Some(ch) = self.ringing_leg(leg) {
                    let l = self.legs.remove(&ch).unwrap();
                    *self.declined.entry(l.agent).or_default() += 1;
                    let cause = [
                        HangupCause::Busy,
                        HangupCause::Rejected,
                        HangupCause::Normal,
                    ][cause as usize % 3];
                    self.facts.push_back(ChannelEvent::ChannelHungUp {
                        tenant: T.into(),
                        channel: ch,
                        cause,
                        at: now,
                    });
                }
            }
            Op::PhoneRingsOut { leg } => {
                if let Some(ch) = self.ringing_leg(leg) {
                    let l = self.legs.remove(&ch).unwrap();
                    *self.rang_out.entry(l.agent).or_default() += 1;
                    self.facts.push_back(ChannelEvent::ChannelHungUp {
                        tenant: T.into(),
                        channel: ch,
                        cause: HangupCause::NoAnswer,
                        at: now,
                    });
                }
            }
            Op::RingFails { leg } => {
                let ringing = self.ringing_leg(leg);
                let failed = if leg % 2 == 0 && !self.hung_up.is_empty() {
                    let (ch, (call, a)) =
                        self.hung_up.iter().nth(leg % self.hung_up.len()).unwrap();
                    Some((ch.clone(), call.clone(), a.clone()))
                } else if let Some(ch) = ringing {
                    let l = self.legs.remove(&ch).unwrap();
                    Some((ch, l.call, l.agent))
                } else {
                    None
                };
                if let Some((offer, call, agent)) = failed {
                    self.decide(Command::NotRung {
                        tenant: T.into(),
                        call,
                        agent,
                        offer,
                        now,
                    })?;
                }
            }
            Op::CallerHangsUp { caller } => {
                if !self.callers.is_empty() {
                    let ch = self
                        .callers
                        .iter()
                        .nth(caller % self.callers.len())
                        .cloned();
                    self.caller_hangs_up(&ch.unwrap())?;
                }
            }
            Op::AgentHangsUp { call } => {
                if !self.ledger.connected.is_empty() {
                    let n = call % self.ledger.connected.len();
                    let (a, c) = self.ledger.connected.iter().nth(n).unwrap();
                    let (a, c) = (a.clone(), c.clone());
                    let channel = self.ledger.calls[&c].channel.clone();
                    if self.callers.remove(&channel) {
                        self.facts.push_back(ChannelEvent::ChannelHungUp {
                            tenant: T.into(),
                            channel,
                            cause: HangupCause::Normal,
                            at: now,
                        });
                    }
                    self.call_ends(&c, &a, EndedBy::Agent)?;
                }
            }
            Op::PbxAnswersCancel { i } => {
                if !self.cancels.is_empty() {
                    let (call, a, offer) = self.cancels.remove(i % self.cancels.len());
                    let how = match self.legs.get(&offer) {
                        Some(l) if l.answered => RingEnded::Answered,
                        Some(_) => {
                            self.legs.remove(&offer);
                            *self.rang_out.entry(a.clone()).or_default() += 1;
                            self.facts.push_back(ChannelEvent::ChannelHungUp {
                                tenant: T.into(),
                                channel: offer.clone(),
                                cause: HangupCause::NoAnswer,
                                at: now,
                            });
                            RingEnded::Cancelled
                        }
                        None => RingEnded::Gone,
                    };
                    self.decide(Command::RingEnded {
                        tenant: T.into(),
                        call,
                        agent: a,
                        offer,
                        how,
                        now,
                    })?;
                }
            }
            Op::EndWrapUp { agent: ai } => {
                let a = agent(ai);
                if let Some(call) = self.ledger.wrap_up.get(&a).cloned() {
                    self.record(CallEvent::WrapUpEnded {
                        call,
                        agent: a,
                        early: true,
                    })?;
                }
            }
            Op::Tick { secs } => {
                self.now += secs;
                self.decide(Command::Due { now: t(self.now) })?;
            }
            Op::Rebuild { snapshot_at } => {
                let replayed = Routing::fold(self.store.iter());
                if let Some(at) = snapshot_at {
                    self.acd = from_snapshot(&self.store, at)?;
                    ensure!(
                        self.acd == replayed,
                        "a snapshot of the first {at} of {} events plus the events after it is not what the whole store folds to",
                        self.store.len()
                    );
                } else {
                    self.acd = replayed;
                }
                // The old router's requests in flight are lost with it; its timers come again.
                self.cancels.clear();
                self.decide(Command::WithdrawUnavailable { only: None, now })?;
            }
        }
        Ok(())
    }

    /// The `i`th leg still ringing at the PBX.
    pub(super) fn ringing_leg(&self, i: usize) -> Option<String> {
        let ringing: Vec<&String> = self
            .legs
            .iter()
            .filter(|(_, l)| !l.answered)
            .map(|(c, _)| c)
            .collect();
        (!ringing.is_empty()).then(|| ringing[i % ringing.len()].clone())
    }

    pub(super) fn caller_hangs_up(&mut self, channel: &str) -> Check {
        self.callers.remove(channel);
        self.facts.push_back(ChannelEvent::ChannelHungUp {
            tenant: T.into(),
            channel: channel.into(),
            cause: HangupCause::Normal,
            at: t(self.now),
        });
        // Connected to an agent: call-control ends the call.
        let connected = self
            .ledger
            .calls
            .iter()
            .find(|(_, c)| c.channel == channel && c.answered_by.is_some() && c.ends == 0)
            .map(|(id, c)| (id.clone(), c.answered_by.clone().unwrap()));
        if let Some((call, a)) = connected {
            self.call_ends(&call, &a, EndedBy::Caller)?;
        }
        Ok(())
    }

    /// call-control ends a connected call (the agent's leg goes), and the router starts the
    /// agent's wrap-up.
    pub(super) fn call_ends(&mut self, call: &str, a: &AgentNumber, by: EndedBy) -> Check {
        self.legs
            .retain(|_, l| !(l.call == call && l.agent == *a && l.answered));
        self.record(CallEvent::CallEnded {
            call: call.into(),
            agent: a.clone(),
            by,
            talk_ms: 1000,
        })?;
        self.decide(Command::StartWrapUp {
            tenant: T.into(),
            call: call.into(),
            agent: a.clone(),
            now: t(self.now),
        })
    }

    pub(super) fn session(&mut self, event: AgentSessionEvent) -> Check {
        self.session_seen(event, true)
    }

    /// An agent-session event: recorded and applied; the router withdraws the offers of an
    /// agent who logged out or whose device went offline (when it `reacts`).
    pub(super) fn session_seen(&mut self, event: AgentSessionEvent, reacts: bool) -> Check {
        let a = event.agent().clone();
        let s = self.sessions.get_mut(&a).unwrap();
        let withdraw = match &event {
            AgentSessionEvent::AgentLoggedIn { queues, .. } => {
                *s = Session {
                    logged_in: true,
                    paused: false,
                    online: true,
                    queues: queues.iter().cloned().collect(),
                };
                false
            }
            AgentSessionEvent::AgentLoggedOut { .. } => {
                *s = Session::default();
                true
            }
            AgentSessionEvent::AgentPaused { .. } => {
                s.paused = true;
                false
            }
            AgentSessionEvent::AgentUnpaused { .. } => {
                s.paused = false;
                false
            }
            AgentSessionEvent::AgentJoinedQueue { queue, .. } => {
                s.queues.insert(queue.clone());
                false
            }
            AgentSessionEvent::AgentLeftQueue { queue, .. } => {
                s.queues.remove(queue);
                false
            }
            AgentSessionEvent::AgentDeviceWentOffline { .. } => {
                s.online = false;
                true
            }
            AgentSessionEvent::AgentDeviceCameOnline { .. } => {
                s.online = true;
                false
            }
            AgentSessionEvent::AgentPauseReasonChanged { .. } => false,
        };
        self.evolve(Event::Session {
            tenant: T.into(),
            event,
            at: t(self.now),
        });
        if withdraw && reacts {
            self.decide(Command::WithdrawUnavailable {
                only: Some((T.into(), a)),
                now: t(self.now),
            })?;
        }
        Ok(())
    }

    /// A call event recorded by another service (call-control, queue-router's commands).
    pub(super) fn record(&mut self, event: CallEvent) -> Check {
        self.account(&event, t(self.now))?;
        self.evolve(Event::Call {
            tenant: T.into(),
            event,
            at: t(self.now),
        });
        Ok(())
    }

    pub(super) fn deliver(&mut self, fact: ChannelEvent) -> Check {
        self.delivered.push(fact.clone());
        let ids = self.ids();
        self.decide(Command::Channel {
            fact,
            now: t(self.now),
            ids,
        })
    }

    /// The router decides; the world applies it and carries it out.
    pub(super) fn decide(&mut self, command: Command) -> Check {
        let Ok(decided) = Routing::decide(&self.acd, &command);
        let mut answered = vec![];
        let mut pauses = vec![];
        for d in decided {
            match &d {
                Event::Call { event, at, .. } => {
                    self.account(event, *at)
                        .map_err(|e| format!("when {command:?}: {e}"))?;
                    if let CallEvent::CallAnswered { call, agent, .. } = event {
                        answered.push((call.clone(), agent.clone()));
                    }
                }
                Event::Act(Action::Ring {
                    call, offer, agent, ..
                }) => {
                    self.legs.insert(
                        offer.clone(),
                        Leg {
                            call: call.clone(),
                            agent: agent.clone(),
                            answered: false,
                        },
                    );
                }
                Event::Act(Action::HangUp { channel, .. }) => {
                    let leg = self.legs.remove(channel);
                    if let Some(l) = leg.as_ref().filter(|l| !l.answered) {
                        self.hung_up
                            .insert(channel.clone(), (l.call.clone(), l.agent.clone()));
                    }
                    if leg.is_some() || self.callers.remove(channel) {
                        self.facts.push_back(ChannelEvent::ChannelHungUp {
                            tenant: T.into(),
                            channel: channel.clone(),
                            cause: HangupCause::Normal,
                            at: t(self.now),
                        });
                    }
                }
                Event::Act(Action::CancelRing {
                    call, agent, offer, ..
                }) => {
                    // The router asks once while a request is out.
                    if !self.cancels.iter().any(|(_, _, o)| o == offer) {
                        self.cancels
                            .push((call.clone(), agent.clone(), offer.clone()));
                    }
                }
                Event::Act(Action::PauseAgent { agent, .. }) => pauses.push(agent.clone()),
                Event::Noted(_) | Event::Session { .. } | Event::Queue { .. } => {}
            }
            self.evolve(d);
        }
        // call-control takes over an answered call; a caller gone meanwhile ends it at once.
        for (call, a) in answered {
            let channel = self.ledger.calls[&call].channel.clone();
            if !self.callers.contains(&channel) {
                self.call_ends(&call, &a, EndedBy::Caller)?;
            }
        }
        // agent-session pauses an agent logged in and not paused; the router notes it.
        for a in pauses {
            let s = &self.sessions[&a];
            if s.logged_in && !s.paused {
                self.session(AgentSessionEvent::AgentPaused {
                    agent: a.clone(),
                    reason: "Missed calls".into(),
                })?;
                self.evolve(Event::Noted(Note::AutoPaused {
                    tenant: T.into(),
                    agent: a,
                }));
            }
        }
        Ok(())
    }

    pub(super) fn evolve(&mut self, e: Event) {
        Routing::evolve(&mut self.acd, &e);
        if matches!(
            e,
            Event::Session { .. } | Event::Queue { .. } | Event::Call { .. }
        ) {
            self.store.push(e);
        }
    }

    pub(super) fn ids(&mut self) -> Ids {
        self.seq += 1;
        Ids::new(Uuid::from_u128(self.seq << 64))
    }

    pub(super) fn assigned(&self, q: &QueueNumber, a: &AgentNumber) -> bool {
        let qi = QUEUES.iter().position(|n| *n == q.as_str()).unwrap();
        ASSIGNED[qi].iter().any(|&i| agent(i) == *a)
    }

    /// Every caller hangs up, every report is delivered, every request answered, the clock runs
    /// on: then every call has ended, once, and nobody is left ringing, connected or in wrap-up.
    pub(super) fn drain(&mut self) -> Check {
        for _ in 0..10 {
            for ch in self.callers.clone() {
                self.caller_hangs_up(&ch)?;
            }
            while !self.facts.is_empty() {
                self.step(&Op::Deliver)?;
            }
            while !self.cancels.is_empty() {
                self.step(&Op::PbxAnswersCancel { i: 0 })?;
            }
            self.step(&Op::Tick { secs: 100 })?;
            if self.facts.is_empty() && self.cancels.is_empty() && self.callers.is_empty() {
                break;
            }
        }
        self.step(&Op::Tick { secs: 100 })?;
        let l = &self.ledger;
        for (id, c) in &l.calls {
            ensure!(c.ends == 1, "{id} ended {} times", c.ends);
        }
        ensure!(l.open_offers.is_empty(), "offers left: {:?}", l.open_offers);
        ensure!(l.connected.is_empty(), "calls left: {:?}", l.connected);
        ensure!(l.wrap_up.is_empty(), "wrap-ups left: {:?}", l.wrap_up);
        ensure!(
            self.legs.is_empty(),
            "legs left at the PBX: {:?}",
            self.legs
        );
        ensure!(
            self.acd.calls.is_empty(),
            "the model still has calls: {:?}",
            self.acd.calls.keys()
        );
        for (k, m) in &self.acd.agents {
            ensure!(
                m.ringing == 0 && m.on_call.is_none() && m.wrap_up.is_none(),
                "{k:?} is stuck: {m:?}"
            );
        }
        Ok(())
    }
}

/// The model a take-over from a snapshot builds: what the first `at` events (at most all)
/// fold to, saved as the router saves it (JSON) and read back, then the events after it.
fn from_snapshot(store: &[Event], at: usize) -> Result<Acd, String> {
    let at = at.min(store.len());
    let saved = Routing::fold(&store[..at]);
    let json =
        serde_json::to_vec(&saved).map_err(|e| format!("the snapshot does not encode: {e}"))?;
    let mut back: Acd =
        serde_json::from_slice(&json).map_err(|e| format!("the snapshot does not decode: {e}"))?;
    ensure!(
        back == saved,
        "the snapshot read back differs from the state saved"
    );
    for e in &store[at..] {
        Routing::evolve(&mut back, e);
    }
    Ok(back)
}
