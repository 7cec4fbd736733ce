//! call-control's state, rebuilt from the call events alone: which calls are up, which legs
//! (channels) belong to them and in which role, and the transfer going on. A pure function
//! of the events, so a restarted replica knows what its predecessor knew.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

use cc_contracts::call::{CallEvent, EndedBy, MonitorMode, TransferMethod, TransferTarget};
use cc_contracts::domain::{AgentNumber, DeviceId, DialString, QueueNumber};
use cc_contracts::pbx::Party;
use chrono::{DateTime, Utc};

/// The agent on a call: their leg and since when they talk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentLeg {
    pub agent: AgentNumber,
    pub leg: String,
    pub device: Option<DeviceId>,
    pub answered_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transfer {
    pub id: String,
    /// The agent who started it.
    pub agent: AgentNumber,
    pub method: TransferMethod,
    pub target: TransferTarget,
    /// The target's channel (none for a queue).
    pub leg: Option<String>,
    pub target_agent: Option<AgentNumber>,
    pub answered_at: Option<DateTime<Utc>>,
    pub conference: bool,
    pub started_at: DateTime<Utc>,
}

/// A supervisor on the call (Listen, Whisper or Barge), from their phone ringing to their leaving.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Monitor {
    pub id: String,
    pub supervisor: String,
    /// The agent monitored (the monitor ends with their part of the call).
    pub agent: AgentNumber,
    pub leg: String,
    pub mode: MonitorMode,
    /// The supervisor's phone answered.
    pub joined: bool,
}

/// What an outbound call (dialled by the agent from the portal) is before it connects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outbound {
    pub number: DialString,
    pub extension: bool,
    /// The agent's phone answered and the number is being rung (on the call's `customer` leg).
    pub dialed: bool,
    /// The far end answered and was joined with the agent: from here on it is a connected call
    /// like any other (whoever has it after a transfer).
    pub connected: bool,
    /// How long the number may ring.
    pub ring_timeout_s: i64,
    pub started_at: DateTime<Utc>,
}

/// A call from its answer (or an outbound call from its dial) to its end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Live {
    pub tenant: String,
    /// The call's queue; none for an outbound call.
    pub queue: Option<QueueNumber>,
    pub caller: Party,
    /// The customer's channel.
    pub customer: String,
    /// The agent on the call (none once they dropped in a transfer).
    pub agent: Option<AgentLeg>,
    /// The customer and the agent are bridged.
    pub connected: bool,
    /// The customer is on hold.
    pub held: bool,
    pub transfer: Option<Transfer>,
    /// After a transfer to an extension or number without an agent: that leg and its answer.
    pub outside: Option<(String, DateTime<Utc>)>,
    pub monitor: Option<Monitor>,
    /// For an outbound call: how its dial went (it stays set once connected).
    pub outbound: Option<Outbound>,
}

/// What a channel is to a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Customer,
    Agent,
    Target,
    Outside,
    /// A supervisor's leg.
    Monitor,
}

impl Live {
    /// An outbound call that has not connected yet (the agent's phone or the number rings).
    pub fn dialing(&self) -> Option<&Outbound> {
        self.outbound.as_ref().filter(|o| !o.connected)
    }

    pub fn role_of(&self, channel: &str) -> Option<Role> {
        if self.customer == channel {
            Some(Role::Customer)
        } else if self.agent.as_ref().is_some_and(|a| a.leg == channel) {
            Some(Role::Agent)
        } else if self.transfer.as_ref().and_then(|t| t.leg.as_deref()) == Some(channel) {
            Some(Role::Target)
        } else if self.outside.as_ref().is_some_and(|(l, _)| l == channel) {
            Some(Role::Outside)
        } else if self.monitor.as_ref().is_some_and(|m| m.leg == channel) {
            Some(Role::Monitor)
        } else {
            None
        }
    }

    pub fn legs(&self) -> Vec<(String, Role)> {
        let mut v = vec![(self.customer.clone(), Role::Customer)];
        v.extend(self.agent.as_ref().map(|a| (a.leg.clone(), Role::Agent)));
        v.extend(
            self.transfer
                .as_ref()
                .and_then(|t| t.leg.clone())
                .map(|l| (l, Role::Target)),
        );
        v.extend(
            self.outside
                .as_ref()
                .map(|(l, _)| (l.clone(), Role::Outside)),
        );
        v.extend(
            self.monitor
                .as_ref()
                .map(|m| (m.leg.clone(), Role::Monitor)),
        );
        v
    }
}

/// A call waiting in a queue (as call-control needs it when an agent answers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Waiting {
    pub tenant: String,
    pub queue: QueueNumber,
    pub caller: Party,
    pub customer: String,
}

/// Every call held, as a take-over's snapshot saves it (see `crate::lead`): every struct of it
/// refuses unknown fields and has no defaults, so a snapshot of another shape does not decode
/// and call control replays the store instead.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    pub waiting: HashMap<String, Waiting>,
    pub calls: HashMap<String, Live>,
    /// offer (channel) -> the device it rings, until the offer ends.
    pub offer_devices: HashMap<String, DeviceId>,
}

impl Model {
    pub fn apply(&mut self, tenant: &str, e: &CallEvent, at: DateTime<Utc>) {
        use CallEvent::*;
        match e {
            CallEnteredQueue {
                call,
                queue,
                caller,
                channel,
                ..
            } => {
                // A call re-entering a queue after a transfer is no longer any agent's.
                self.calls.remove(call);
                self.waiting.insert(
                    call.clone(),
                    Waiting {
                        tenant: tenant.into(),
                        queue: queue.clone(),
                        caller: caller.clone(),
                        customer: channel.clone(),
                    },
                );
            }
            CallOffered { offer, device, .. } => {
                self.offer_devices.insert(offer.clone(), device.clone());
            }
            OfferRejected { offer, .. }
            | OfferTimedOut { offer, .. }
            | OfferWithdrawn { offer, .. } => {
                self.offer_devices.remove(offer);
            }
            CallAnswered {
                call, agent, offer, ..
            } => {
                let device = self.offer_devices.remove(offer);
                if let Some(w) = self.waiting.remove(call) {
                    self.calls.insert(
                        call.clone(),
                        Live {
                            tenant: w.tenant,
                            queue: Some(w.queue),
                            caller: w.caller,
                            customer: w.customer,
                            agent: Some(AgentLeg {
                                agent: agent.clone(),
                                leg: offer.clone(),
                                device,
                                answered_at: at,
                            }),
                            connected: false,
                            held: false,
                            transfer: None,
                            outside: None,
                            monitor: None,
                            outbound: None,
                        },
                    );
                }
            }
            OutboundCallStarted {
                call,
                agent,
                device,
                number,
                extension,
                leg,
                far_leg,
                ring_timeout_s,
            } => {
                self.calls.insert(
                    call.clone(),
                    Live {
                        tenant: tenant.into(),
                        queue: None,
                        caller: Party {
                            number: number.to_string(),
                            name: String::new(),
                        },
                        customer: far_leg.clone(),
                        agent: Some(AgentLeg {
                            agent: agent.clone(),
                            leg: leg.clone(),
                            device: Some(device.clone()),
                            answered_at: at,
                        }),
                        connected: false,
                        held: false,
                        transfer: None,
                        outside: None,
                        monitor: None,
                        outbound: Some(Outbound {
                            number: number.clone(),
                            extension: *extension,
                            dialed: false,
                            connected: false,
                            ring_timeout_s: *ring_timeout_s,
                            started_at: at,
                        }),
                    },
                );
            }
            OutboundCallDialed { call, .. } => {
                if let Some(o) = self.calls.get_mut(call).and_then(|l| l.outbound.as_mut()) {
                    o.dialed = true;
                }
            }
            OutboundCallFailed { call, .. } => {
                self.calls.remove(call);
            }
            CallAbandoned { call, .. } | CallLeftQueue { call, .. } => {
                self.waiting.remove(call);
            }
            CallConnected { call, agent, .. } => {
                if let Some(l) = self
                    .calls
                    .get_mut(call)
                    .filter(|l| l.agent.as_ref().is_some_and(|a| &a.agent == agent))
                {
                    if let Some(o) = l.outbound.as_mut().filter(|o| !o.connected) {
                        // An outbound call's talk starts when the far end answers.
                        o.connected = true;
                        if let Some(a) = l.agent.as_mut() {
                            a.answered_at = at;
                        }
                    }
                    l.connected = true;
                }
            }
            CallHeld { call, .. } | CallResumed { call, .. } => {
                if let Some(l) = self.calls.get_mut(call) {
                    l.held = matches!(e, CallHeld { .. });
                }
            }
            CallEnded {
                call, agent, by, ..
            } => {
                if *by == EndedBy::Transferred {
                    // The agent dropped; the customer stays for the transfer's target.
                    if let Some(l) = self
                        .calls
                        .get_mut(call)
                        .filter(|l| l.agent.as_ref().is_some_and(|a| &a.agent == agent))
                    {
                        l.agent = None;
                        l.connected = false;
                        l.held = false;
                    }
                } else if self
                    .calls
                    .get(call)
                    .is_some_and(|l| l.agent.as_ref().is_some_and(|a| &a.agent == agent))
                {
                    self.calls.remove(call);
                }
            }
            TransferStarted {
                call,
                transfer,
                agent,
                method,
                target,
                leg,
                target_agent,
                ..
            } => {
                if let Some(l) = self.calls.get_mut(call) {
                    l.transfer = Some(Transfer {
                        id: transfer.clone(),
                        agent: agent.clone(),
                        method: *method,
                        target: target.clone(),
                        leg: leg.clone(),
                        target_agent: target_agent.clone(),
                        answered_at: None,
                        conference: false,
                        started_at: at,
                    });
                }
            }
            TransferAnswered { call, transfer, .. } => {
                if let Some(t) = self.transfer_mut(call, transfer) {
                    t.answered_at = Some(at);
                }
            }
            ConferenceFormed { call, transfer, .. } => {
                if let Some(t) = self.transfer_mut(call, transfer) {
                    t.conference = true;
                }
            }
            TransferFailed { call, transfer, .. } | TransferCancelled { call, transfer, .. } => {
                if self.transfer_mut(call, transfer).is_some() {
                    self.calls.get_mut(call).expect("found").transfer = None;
                }
            }
            TransferCompleted { call, transfer, .. } => {
                if self.transfer_mut(call, transfer).is_none() {
                    return;
                }
                let l = self.calls.get_mut(call).expect("found");
                let t = l.transfer.take().expect("found");
                l.held = false;
                match (t.target_agent, t.leg) {
                    (Some(agent), Some(leg)) => {
                        let device = match &t.target {
                            TransferTarget::Extension(d) => Some(d.clone()),
                            _ => None,
                        };
                        l.agent = Some(AgentLeg {
                            agent,
                            leg,
                            device,
                            answered_at: t.answered_at.unwrap_or(at),
                        });
                        l.connected = false; // until CallConnected for the receiving agent
                    }
                    (None, Some(leg)) => l.outside = Some((leg, t.answered_at.unwrap_or(at))),
                    // To a queue: CallEnteredQueue follows.
                    (_, None) => {}
                }
            }
            TransferredCallEnded { call, .. } => {
                self.calls.remove(call);
            }
            MonitorStarted {
                call,
                monitor,
                agent,
                supervisor,
                leg,
                mode,
                ..
            } => {
                if let Some(l) = self.calls.get_mut(call) {
                    l.monitor = Some(Monitor {
                        id: monitor.clone(),
                        supervisor: supervisor.clone(),
                        agent: agent.clone(),
                        leg: leg.clone(),
                        mode: *mode,
                        joined: false,
                    });
                }
            }
            MonitorJoined { call, monitor, .. } => {
                if let Some(m) = self.monitor_mut(call, monitor) {
                    m.joined = true;
                }
            }
            MonitorModeChanged {
                call,
                monitor,
                mode,
                ..
            } => {
                if let Some(m) = self.monitor_mut(call, monitor) {
                    m.mode = *mode;
                }
            }
            MonitorEnded { call, monitor, .. } => {
                if self.monitor_mut(call, monitor).is_some() {
                    self.calls.get_mut(call).expect("found").monitor = None;
                }
            }
            WrapUpStarted { .. } | WrapUpEnded { .. } | CallDispositionRecorded { .. } => {}
        }
    }

    fn monitor_mut(&mut self, call: &str, id: &str) -> Option<&mut Monitor> {
        self.calls
            .get_mut(call)
            .and_then(|l| l.monitor.as_mut())
            .filter(|m| m.id == id)
    }

    fn transfer_mut(&mut self, call: &str, id: &str) -> Option<&mut Transfer> {
        self.calls
            .get_mut(call)
            .and_then(|l| l.transfer.as_mut())
            .filter(|t| t.id == id)
    }

    /// The call an agent is on (connected, or in a transfer they started).
    pub fn agent_call(&self, tenant: &str, agent: &AgentNumber) -> Option<String> {
        self.calls
            .iter()
            .find(|(_, l)| {
                l.tenant == tenant && l.agent.as_ref().is_some_and(|a| &a.agent == agent)
            })
            .map(|(c, _)| c.clone())
    }

    /// The call whose transfer an agent answered as its target while the transferring agent is
    /// still on it: an attended transfer's consultation or a live transfer's 3-way call. The
    /// target may only leave it (their Hangup); once the transfer completes the call is theirs.
    pub fn target_call(&self, tenant: &str, agent: &AgentNumber) -> Option<String> {
        self.calls
            .iter()
            .find(|(_, l)| {
                l.tenant == tenant
                    && l.agent.is_some()
                    && l.transfer.as_ref().is_some_and(|t| {
                        t.target_agent.as_ref() == Some(agent) && t.answered_at.is_some()
                    })
            })
            .map(|(c, _)| c.clone())
    }

    /// The call a channel belongs to, and its role.
    pub fn leg(&self, tenant: &str, channel: &str) -> Option<(String, Role)> {
        self.calls
            .iter()
            .filter(|(_, l)| l.tenant == tenant)
            .find_map(|(c, l)| l.role_of(channel).map(|r| (c.clone(), r)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cc_contracts::call::{TransferFailure, TransferMethod as M};

    fn a(n: &str) -> AgentNumber {
        AgentNumber::parse(n).unwrap()
    }
    fn q() -> QueueNumber {
        QueueNumber::parse("500").unwrap()
    }

    /// A call answered by 1002 on device 1002, connected.
    fn connected() -> Model {
        let mut m = Model::default();
        let now = Utc::now();
        let caller = Party {
            number: "5551234".into(),
            name: "Jane".into(),
        };
        m.apply(
            "acme",
            &CallEvent::CallEnteredQueue {
                call: "c".into(),
                queue: q(),
                caller,
                channel: "cust".into(),
                priority: 0,
            },
            now,
        );
        m.apply(
            "acme",
            &CallEvent::CallOffered {
                call: "c".into(),
                queue: q(),
                agent: a("1002"),
                device: DeviceId::parse("1002").unwrap(),
                offer: "bob".into(),
                ring_timeout_s: None,
            },
            now,
        );
        m.apply(
            "acme",
            &CallEvent::CallAnswered {
                call: "c".into(),
                queue: q(),
                agent: a("1002"),
                offer: "bob".into(),
                wait_ms: 5,
            },
            now,
        );
        m.apply(
            "acme",
            &CallEvent::CallConnected {
                call: "c".into(),
                agent: a("1002"),
                bridge: "c".into(),
            },
            now,
        );
        m
    }

    fn started(method: M, target: TransferTarget, target_agent: Option<&str>) -> CallEvent {
        CallEvent::TransferStarted {
            call: "c".into(),
            transfer: "t".into(),
            agent: a("1002"),
            method,
            target,
            leg: Some("tgt".into()),
            target_agent: target_agent.map(a),
            queue: Some(q()),
        }
    }

    #[test]
    fn an_answered_call_knows_its_legs_and_the_agents_device() {
        let m = connected();
        let l = &m.calls["c"];
        assert!(l.connected);
        assert_eq!(
            l.agent
                .as_ref()
                .unwrap()
                .device
                .as_ref()
                .map(|d| d.as_str()),
            Some("1002")
        );
        assert_eq!(m.leg("acme", "cust"), Some(("c".into(), Role::Customer)));
        assert_eq!(m.leg("acme", "bob"), Some(("c".into(), Role::Agent)));
        assert_eq!(m.leg("other", "bob"), None);
        assert_eq!(m.agent_call("acme", &a("1002")), Some("c".into()));
        assert!(
            m.offer_devices.is_empty(),
            "the offer's device is not kept after the answer"
        );
    }

    #[test]
    fn a_completed_attended_transfer_to_an_agent_hands_the_call_over() {
        let mut m = connected();
        let now = Utc::now();
        let device = DeviceId::parse("1003").unwrap();
        m.apply(
            "acme",
            &started(M::Attended, TransferTarget::Extension(device), Some("1003")),
            now,
        );
        m.apply(
            "acme",
            &CallEvent::CallHeld {
                call: "c".into(),
                agent: a("1002"),
            },
            now,
        );
        assert_eq!(m.leg("acme", "tgt"), Some(("c".into(), Role::Target)));
        m.apply(
            "acme",
            &CallEvent::TransferAnswered {
                call: "c".into(),
                transfer: "t".into(),
                agent: a("1002"),
                target_agent: Some(a("1003")),
            },
            now,
        );
        m.apply(
            "acme",
            &CallEvent::CallEnded {
                call: "c".into(),
                agent: a("1002"),
                by: EndedBy::Transferred,
                talk_ms: 1,
            },
            now,
        );
        assert_eq!(
            m.agent_call("acme", &a("1002")),
            None,
            "Bob is off the call"
        );
        assert_eq!(
            m.calls["c"].transfer.as_ref().map(|t| t.id.as_str()),
            Some("t"),
            "the transfer goes on"
        );
        m.apply(
            "acme",
            &CallEvent::TransferCompleted {
                call: "c".into(),
                transfer: "t".into(),
                agent: a("1002"),
                target_agent: Some(a("1003")),
            },
            now,
        );
        m.apply(
            "acme",
            &CallEvent::CallConnected {
                call: "c".into(),
                agent: a("1003"),
                bridge: "c".into(),
            },
            now,
        );
        let l = &m.calls["c"];
        assert_eq!(
            (
                l.agent.as_ref().map(|x| x.agent.as_str()),
                l.connected,
                l.held
            ),
            (Some("1003"), true, false)
        );
        assert_eq!(m.leg("acme", "tgt"), Some(("c".into(), Role::Agent)));
        m.apply(
            "acme",
            &CallEvent::CallEnded {
                call: "c".into(),
                agent: a("1003"),
                by: EndedBy::Caller,
                talk_ms: 1,
            },
            now,
        );
        assert!(m.calls.is_empty());
    }

    #[test]
    fn a_failed_blind_transfer_puts_the_call_back_in_the_queue_and_to_a_number_it_stays_outside() {
        let mut m = connected();
        let now = Utc::now();
        m.apply(
            "acme",
            &started(M::Blind, TransferTarget::Number("5559".into()), None),
            now,
        );
        m.apply(
            "acme",
            &CallEvent::CallEnded {
                call: "c".into(),
                agent: a("1002"),
                by: EndedBy::Transferred,
                talk_ms: 1,
            },
            now,
        );
        m.apply(
            "acme",
            &CallEvent::TransferFailed {
                call: "c".into(),
                transfer: "t".into(),
                agent: a("1002"),
                reason: TransferFailure::Busy,
                target_agent: None,
            },
            now,
        );
        let caller = Party {
            number: "5551234".into(),
            name: "Jane".into(),
        };
        m.apply(
            "acme",
            &CallEvent::CallEnteredQueue {
                call: "c".into(),
                queue: q(),
                caller,
                channel: "cust".into(),
                priority: 100,
            },
            now,
        );
        assert!(
            m.calls.is_empty() && m.waiting.contains_key("c"),
            "waiting again, nobody's call"
        );

        let mut m = connected();
        m.apply(
            "acme",
            &started(M::Live, TransferTarget::Number("5559".into()), None),
            now,
        );
        m.apply(
            "acme",
            &CallEvent::TransferAnswered {
                call: "c".into(),
                transfer: "t".into(),
                agent: a("1002"),
                target_agent: None,
            },
            now,
        );
        m.apply(
            "acme",
            &CallEvent::ConferenceFormed {
                call: "c".into(),
                transfer: "t".into(),
                agent: a("1002"),
                target_agent: None,
            },
            now,
        );
        assert!(m.calls["c"].transfer.as_ref().unwrap().conference);
        m.apply(
            "acme",
            &CallEvent::CallEnded {
                call: "c".into(),
                agent: a("1002"),
                by: EndedBy::Transferred,
                talk_ms: 1,
            },
            now,
        );
        m.apply(
            "acme",
            &CallEvent::TransferCompleted {
                call: "c".into(),
                transfer: "t".into(),
                agent: a("1002"),
                target_agent: None,
            },
            now,
        );
        assert_eq!(m.leg("acme", "tgt"), Some(("c".into(), Role::Outside)));
        m.apply(
            "acme",
            &CallEvent::TransferredCallEnded {
                call: "c".into(),
                by: cc_contracts::call::Side::Caller,
                talk_ms: 3,
            },
            now,
        );
        assert!(m.calls.is_empty());
    }

    #[test]
    fn a_cancelled_transfer_leaves_the_agent_on_the_call() {
        let mut m = connected();
        let now = Utc::now();
        m.apply(
            "acme",
            &started(M::Attended, TransferTarget::Number("5559".into()), None),
            now,
        );
        m.apply(
            "acme",
            &CallEvent::TransferCancelled {
                call: "c".into(),
                transfer: "t".into(),
                agent: a("1002"),
                target_agent: None,
            },
            now,
        );
        // An event about another transfer changes nothing.
        m.apply(
            "acme",
            &CallEvent::TransferAnswered {
                call: "c".into(),
                transfer: "t".into(),
                agent: a("1002"),
                target_agent: None,
            },
            now,
        );
        let l = &m.calls["c"];
        assert!(l.transfer.is_none() && l.connected);
        assert_eq!(m.leg("acme", "tgt"), None);
    }

    #[test]
    fn an_outbound_call_is_the_agents_from_the_dial_and_talks_from_the_far_answer() {
        let mut m = Model::default();
        let t0 = Utc::now();
        let started = CallEvent::OutboundCallStarted {
            call: "o".into(),
            agent: a("1002"),
            device: DeviceId::parse("1002").unwrap(),
            number: DialString::parse("5551234").unwrap(),
            extension: false,
            leg: "mine".into(),
            far_leg: "far".into(),
            ring_timeout_s: 60,
        };
        m.apply("acme", &started, t0);
        assert_eq!(m.agent_call("acme", &a("1002")), Some("o".into()));
        let l = &m.calls["o"];
        assert!(l.queue.is_none() && l.dialing().is_some_and(|o| !o.dialed));
        assert_eq!(m.leg("acme", "mine"), Some(("o".into(), Role::Agent)));
        assert_eq!(m.leg("acme", "far"), Some(("o".into(), Role::Customer)));
        let dialed = CallEvent::OutboundCallDialed {
            call: "o".into(),
            agent: a("1002"),
        };
        m.apply("acme", &dialed, t0);
        assert!(m.calls["o"].dialing().is_some_and(|o| o.dialed));
        let t1 = t0 + chrono::Duration::seconds(5);
        m.apply(
            "acme",
            &CallEvent::CallConnected {
                call: "o".into(),
                agent: a("1002"),
                bridge: "o".into(),
            },
            t1,
        );
        let l = &m.calls["o"];
        assert!(l.connected && l.dialing().is_none() && l.outbound.is_some());
        assert_eq!(
            l.agent.as_ref().unwrap().answered_at,
            t1,
            "talk from the far answer"
        );

        // A failed dial frees the agent.
        let mut m = Model::default();
        m.apply("acme", &started, t0);
        m.apply(
            "acme",
            &CallEvent::OutboundCallFailed {
                call: "o".into(),
                agent: a("1002"),
                reason: cc_contracts::call::OutboundFailure::Busy,
            },
            t0,
        );
        assert_eq!(m.agent_call("acme", &a("1002")), None);
        assert!(m.calls.is_empty());
    }
}
