//! Call control's decisions on the agent's desk commands as a pure core ([`Decider`]): Hold
//! and Resume, Hangup (the end of the call, or the agent leaving a transfer), Complete and
//! Cancel. The state is the [`Model`]; what is decided comes out as the call events to record
//! and the PBX actions to carry out around them, in order. No store, bus or clock inside: the
//! time comes in the command.
//!
//! The IO around it (lib.rs) finds nothing to decide on without catching up with the store
//! first, carries out the actions marked [`Step::Before`] (a PBX refusal refuses the command,
//! nothing recorded), records the events at the version the model stands on, and then carries
//! out the actions marked [`Step::After`] (best effort: a leg may be gone already).
//!
//! What the world must tell first comes in the command (the PBX's devices for a dial, drawn
//! ids) or as a check before anything is recorded ([`Pbx::CheckOnline`], [`Pbx::CheckRoute`]).
//! A ring that cannot be placed is decided by the pure functions beside the core
//! ([`target_fails`], [`dial_fails`], [`monitor_fails`]), which the IO calls when the PBX
//! refuses it. Left to the IO: joining a caller with the agent who answered (the PBX's bridge
//! comes first, without holding the state, then [`CallEvent::CallConnected`] or the end) and,
//! after a restart, reconciling with the legs the PBX still has.

use cc_contracts::call::{
    CallEvent, DialOutbound, EndedBy, MonitorCall, MonitorEndReason, MonitorMode, OutboundFailure,
    Side, TransferCall, TransferFailure, TransferMethod, TransferTarget,
};
use cc_contracts::domain::{AgentNumber, DeviceId};
use cc_contracts::pbx::{BridgeMode, Endpoint, HangupCause, Party};
use cc_core::Decider;
use chrono::{DateTime, Utc};

use crate::model::{Live, Model, Monitor, Role, Transfer};

/// The core of the agent's desk commands.
pub struct CallCore;

/// What is asked of call control, with the time it is decided at.
#[derive(Debug, Clone, PartialEq)]
pub struct Ask {
    pub tenant: String,
    pub now: DateTime<Utc>,
    pub what: What,
}

#[derive(Debug, Clone, PartialEq)]
pub enum What {
    /// The agent puts the customer on hold (`held`) or takes them off it.
    Hold { agent: AgentNumber, held: bool },
    /// The agent hangs up: the call ends, or during a transfer the agent leaves it to its
    /// target.
    Hangup { agent: AgentNumber },
    /// The agent completes the transfer: they leave it to its target.
    Complete { agent: AgentNumber },
    /// The agent cancels the transfer: its target's leg goes, the agent is back with the
    /// customer.
    Cancel { agent: AgentNumber },
    /// The agent transfers their connected call. `transfer` and `leg` are the ids the transfer
    /// and the target's leg get (drawn by the adapter: the core has no randomness).
    Transfer {
        cmd: TransferCall,
        transfer: String,
        leg: String,
    },
    /// The supervisor on the agent's call changes their mode (Listen, Whisper, Barge).
    SetMonitorMode {
        agent: AgentNumber,
        supervisor: String,
        mode: MonitorMode,
    },
    /// The supervisor on the agent's call leaves it.
    StopMonitor {
        agent: AgentNumber,
        supervisor: String,
    },
    /// The PBX reports a leg of a call gone: the customer's, the agent's phone's, a
    /// supervisor's, a transfer's target's, an outside party's, or a leg of an outbound call
    /// still dialling. A leg of no call held decides nothing.
    LegGone { channel: String, cause: HangupCause },
    /// The PBX reports a leg answered: a transfer's target (its consultation, its conference, or
    /// the customer joined with it), a supervisor's phone (they join the call's bridge), the
    /// agent's phone of an outbound call (the number is rung now). The far end of an outbound
    /// call answering is joined by the IO (as a queue call's answer is); any other leg decides
    /// nothing.
    LegAnswered { channel: String },
    /// The agent dials a number from their device. `devices` are the PBX's devices and whether
    /// each is registered (asked just before); `call`, `leg` and `far_leg` the ids the call, the
    /// agent's leg and the far end's get.
    Dial {
        cmd: DialOutbound,
        devices: Vec<(DeviceId, bool)>,
        call: String,
        leg: String,
        far_leg: String,
    },
    /// A supervisor starts monitoring the agent's connected call from their device: it rings,
    /// and on its answer they join in their mode. `monitor` and `leg` are the ids drawn.
    Monitor {
        cmd: MonitorCall,
        monitor: String,
        leg: String,
    },
}

/// What the core decides, in the order it happens.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A call event, recorded on the call's stream.
    Call {
        tenant: String,
        at: DateTime<Utc>,
        event: CallEvent,
    },
    /// A PBX action (no state of its own: [`Decider::evolve`] passes it by).
    Act(Step, Pbx),
}

/// When a PBX action is carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Before the events are recorded; the PBX refusing it refuses the command.
    Before,
    /// After the events are recorded; best effort.
    After,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Pbx {
    Hold {
        channel: String,
        held: bool,
    },
    /// The device must be known to the PBX and registered, or the command is refused naming
    /// `field` (`unknown_extension`, `device_offline`).
    CheckOnline {
        device: DeviceId,
        field: &'static str,
    },
    /// The PBX must be able to reach `endpoint` (a number its trunks take, an extension it has),
    /// or the command is refused naming `field`.
    CheckRoute {
        endpoint: Endpoint,
        field: &'static str,
    },
    /// Ring the agent's own phone for an outbound call (on leg `leg`, showing whom it is about
    /// to call); if it cannot be rung, the call fails as `agent_unavailable` (see
    /// [`dial_fails`]) and the dial is refused naming `device`; else it rings for at most
    /// [`OUTBOUND_AGENT_RING_S`].
    RingDialer {
        leg: String,
        device: DeviceId,
        caller: Party,
    },
    /// Ring the number of an outbound call (its agent answered); if it cannot be rung, the call
    /// fails as `unavailable`; else it rings for `ring_timeout_s`.
    RingFar {
        leg: String,
        endpoint: Endpoint,
        caller: Party,
        ring_timeout_s: u64,
    },
    /// Ring a supervisor's device for monitoring; if it cannot be rung, the monitoring ends as
    /// `unavailable` (see [`monitor_fails`]) and the command is refused naming `device`; else it
    /// rings for at most [`MONITOR_RING_S`].
    RingMonitor {
        monitor: String,
        leg: String,
        device: DeviceId,
        caller: Party,
    },
    /// Answer a leg (the PBX's side of it).
    Answer {
        channel: String,
    },
    /// Join a leg to `bridge`, heard as `mode`, in one step.
    JoinBridge {
        channel: String,
        mode: BridgeMode,
        bridge: String,
    },
    /// Ring a transfer's target on leg `leg`; if it cannot be rung, the transfer fails as
    /// `unavailable` (see [`target_fails`]); else its ring ends after `ring_timeout_s`.
    RingTarget {
        transfer: String,
        leg: String,
        endpoint: Endpoint,
        caller: Party,
        ring_timeout_s: u64,
    },
    /// How a supervisor's leg is heard (joined already).
    SetBridgeMode {
        channel: String,
        mode: BridgeMode,
    },
    Bridge {
        bridge: String,
        channels: Vec<String>,
    },
    /// Hang up these legs (asked again a few times while the PBX cannot be reached).
    HangUp {
        legs: Vec<String>,
    },
}

/// Why a desk command is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The agent is on no call of their own.
    NoCall {
        agent: AgentNumber,
    },
    /// The agent is the answered target of another agent's transfer, still going on.
    TransferTarget {
        from: AgentNumber,
        method: TransferMethod,
    },
    NotConnected,
    AlreadyOnHold,
    NotOnHold,
    NoTransferToComplete,
    NoTransferToCancel,
    NoMonitor {
        agent: AgentNumber,
    },
    /// A transfer of a call not connected yet.
    TransferNotConnected,
    TransferInProgress,
    /// The request itself is wrong: `code` (`invalid_field`, `missing_field`, `own_device`)
    /// about `field`.
    Invalid {
        code: &'static str,
        field: &'static str,
        message: String,
    },
    /// Another supervisor is on the call: only they can switch or leave.
    NotYourMonitor {
        agent: AgentNumber,
        supervisor: String,
    },
    /// A dial while the agent is on a call (their own, or a transfer's target).
    OnCall,
    /// Monitoring a call not connected yet.
    MonitorNotConnected {
        agent: AgentNumber,
    },
    /// A supervisor is on the call already.
    MonitorInProgress {
        agent: AgentNumber,
        supervisor: String,
    },
}

impl Refusal {
    /// The error code of the API (docs/getting-started.md).
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::NoCall { .. } => "no_call",
            Refusal::TransferTarget { .. } => "transfer_target",
            Refusal::NotConnected => "not_connected",
            Refusal::AlreadyOnHold => "already_on_hold",
            Refusal::NotOnHold => "not_on_hold",
            Refusal::NoTransferToComplete | Refusal::NoTransferToCancel => "no_transfer",
            Refusal::NoMonitor { .. } => "no_monitor",
            Refusal::TransferNotConnected => "not_connected",
            Refusal::TransferInProgress => "transfer_in_progress",
            Refusal::Invalid { code, .. } => code,
            Refusal::NotYourMonitor { .. } => "forbidden",
            Refusal::OnCall => "on_call",
            Refusal::MonitorNotConnected { .. } => "not_connected",
            Refusal::MonitorInProgress { .. } => "monitor_in_progress",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Refusal::NoCall { agent } => format!("Agent {agent} is not on a call"),
            Refusal::TransferTarget { from, method } => {
                let what = if *method == TransferMethod::Live {
                    "a 3-way call"
                } else {
                    "a consultation"
                };
                format!(
                    "You are in {what} for agent {from}'s transfer: you can leave it (Hangup); the call is yours once agent {from} completes the transfer"
                )
            }
            Refusal::NotConnected => "The call is not connected yet".into(),
            Refusal::AlreadyOnHold => "The caller is already on hold".into(),
            Refusal::NotOnHold => "The caller is not on hold".into(),
            Refusal::NoTransferToComplete => {
                "There is no transfer to complete: start an attended or live transfer first".into()
            }
            Refusal::NoTransferToCancel => "There is no transfer to cancel".into(),
            Refusal::NoMonitor { agent } => format!("No supervisor is on agent {agent}'s call"),
            Refusal::TransferNotConnected => {
                "The call is not connected yet: transfer it once it is".into()
            }
            Refusal::TransferInProgress => {
                "A transfer of this call is going on: complete or cancel it first".into()
            }
            Refusal::Invalid { message, .. } => message.clone(),
            Refusal::NotYourMonitor { agent, supervisor } => {
                format!("{supervisor} is on agent {agent}'s call; only they can switch or leave")
            }
            Refusal::OnCall => "You are on a call: end it before you dial another".into(),
            Refusal::MonitorNotConnected { agent } => {
                format!("Agent {agent}'s call is not connected yet")
            }
            Refusal::MonitorInProgress { agent, supervisor } => {
                format!("{supervisor} is already on agent {agent}'s call")
            }
        }
    }

    /// The field at fault, when one is.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Refusal::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }

    /// Whether the refusal may come from a model behind the store (the agent's call not taken
    /// in yet): the IO catches up and asks again before answering it.
    pub fn may_be_stale(&self) -> bool {
        matches!(
            self,
            Refusal::NoCall { .. } | Refusal::TransferTarget { .. }
        )
    }
}

impl Decider for CallCore {
    type State = Model;
    type Command = Ask;
    type Event = Event;
    type Refusal = Refusal;

    fn decide(m: &Model, ask: &Ask) -> Result<Vec<Event>, Refusal> {
        let mut d = Decided {
            tenant: &ask.tenant,
            at: ask.now,
            out: vec![],
        };
        if let What::LegGone { channel, cause } = &ask.what {
            if let Some((call, role)) = m.leg(&ask.tenant, channel) {
                let l = &m.calls[&call];
                leg_gone(&mut d, &call, l, channel, role, *cause);
            }
            return Ok(d.out);
        }
        if let What::LegAnswered { channel } = &ask.what {
            if let Some((call, role)) = m.leg(&ask.tenant, channel) {
                let l = &m.calls[&call];
                match (role, l.dialing()) {
                    (Role::Monitor, _) => monitor_joined(&mut d, &call, l),
                    (Role::Agent, Some(o)) if !o.dialed => dial_far_end(&mut d, &call, l, o),
                    (Role::Target, None) => target_answered(&mut d, &call, l, channel),
                    _ => {}
                }
            }
            return Ok(d.out);
        }
        if let What::Dial {
            cmd,
            devices,
            call,
            leg,
            far_leg,
        } = &ask.what
        {
            dial(&mut d, m, cmd, devices, call, leg, far_leg)?;
            return Ok(d.out);
        }
        let agent = match &ask.what {
            What::Hold { agent, .. }
            | What::Hangup { agent }
            | What::Complete { agent }
            | What::Cancel { agent }
            | What::SetMonitorMode { agent, .. }
            | What::StopMonitor { agent, .. } => agent,
            What::Transfer { cmd, .. } => &cmd.agent,
            What::Monitor { cmd, .. } => &cmd.agent,
            What::LegGone { .. } | What::LegAnswered { .. } | What::Dial { .. } => {
                unreachable!("decided above")
            }
        };
        let (call, l) = agent_call(m, &ask.tenant, agent)?;
        match &ask.what {
            What::Hold { held, .. } => hold(&mut d, call, l, agent, *held)?,
            What::Hangup { .. } if l.transfer.is_some() => agent_leaves(&mut d, call, l),
            What::Hangup { .. } => end(&mut d, call, l, EndedBy::Agent),
            What::Complete { .. } if l.transfer.is_none() => {
                return Err(Refusal::NoTransferToComplete)
            }
            What::Complete { .. } => agent_leaves(&mut d, call, l),
            What::Cancel { .. } => cancel(&mut d, call, l, agent)?,
            What::Transfer { cmd, transfer, leg } => {
                start_transfer(&mut d, call, l, cmd, transfer, leg)?
            }
            What::SetMonitorMode {
                supervisor, mode, ..
            } => {
                let m = own_monitor(l, agent, supervisor)?;
                if m.mode != *mode {
                    d.record(CallEvent::MonitorModeChanged {
                        call: call.into(),
                        monitor: m.id.clone(),
                        agent: m.agent.clone(),
                        supervisor: m.supervisor.clone(),
                        mode: *mode,
                    });
                    if m.joined {
                        d.act(
                            Step::After,
                            Pbx::SetBridgeMode {
                                channel: m.leg.clone(),
                                mode: bridge_mode(l, *mode),
                            },
                        );
                    }
                }
            }
            What::StopMonitor { supervisor, .. } => {
                let m = own_monitor(l, agent, supervisor)?;
                d.record(CallEvent::MonitorEnded {
                    call: call.into(),
                    monitor: m.id.clone(),
                    agent: m.agent.clone(),
                    supervisor: m.supervisor.clone(),
                    reason: MonitorEndReason::Left,
                });
                d.act(
                    Step::After,
                    Pbx::HangUp {
                        legs: vec![m.leg.clone()],
                    },
                );
            }
            What::Monitor { cmd, monitor, leg } => {
                start_monitor(&mut d, call, l, cmd, monitor, leg)?
            }
            What::LegGone { .. } | What::LegAnswered { .. } | What::Dial { .. } => {
                unreachable!("decided above")
            }
        }
        Ok(d.out)
    }

    fn evolve(m: &mut Model, e: &Event) {
        if let Event::Call { tenant, at, event } = e {
            m.apply(tenant, event, *at);
        }
    }
}

/// The decision being written.
struct Decided<'a> {
    tenant: &'a str,
    at: DateTime<Utc>,
    out: Vec<Event>,
}

impl Decided<'_> {
    fn record(&mut self, event: CallEvent) {
        self.out.push(Event::Call {
            tenant: self.tenant.to_string(),
            at: self.at,
            event,
        });
    }

    fn act(&mut self, step: Step, pbx: Pbx) {
        self.out.push(Event::Act(step, pbx));
    }
}

/// A leg of the call gone, by its role: the customer (the call ends, a transfer going on fails,
/// the other legs are hung up), the agent's phone (the call ends, or the agent leaves the
/// transfer), a supervisor (the monitoring ends, why by the cause), an outside party after a
/// transfer (the call ends, the customer is hung up). A target's or a dialling call's leg is
/// not decided here.
fn leg_gone(d: &mut Decided, call: &str, l: &Live, channel: &str, role: Role, cause: HangupCause) {
    if let Some(o) = l.dialing() {
        let reason = match role {
            Role::Agent => outbound_failure(cause, true, o.dialed),
            // The far leg is placed only once the agent answered.
            Role::Customer if o.dialed => outbound_failure(cause, false, true),
            _ => return,
        };
        d.out.extend(dial_fails(d.at, call, l, reason));
        return;
    }
    match role {
        Role::Target => {
            let answered = l.transfer.as_ref().is_some_and(|t| t.answered_at.is_some());
            d.out
                .extend(target_fails(d.at, call, l, failure(cause, answered)));
        }
        Role::Customer => {
            if let Some(t) = &l.transfer {
                d.record(CallEvent::TransferFailed {
                    call: call.into(),
                    transfer: t.id.clone(),
                    agent: t.agent.clone(),
                    reason: TransferFailure::CallerGone,
                    target_agent: t.target_agent.clone(),
                });
            }
            d.record(match (&l.agent, &l.outside) {
                (Some(a), _) => CallEvent::CallEnded {
                    call: call.into(),
                    agent: a.agent.clone(),
                    by: EndedBy::Caller,
                    talk_ms: talk_ms(a.answered_at, d.at),
                },
                (None, Some((_, since))) => CallEvent::TransferredCallEnded {
                    call: call.into(),
                    by: Side::Caller,
                    talk_ms: talk_ms(*since, d.at),
                },
                (None, None) => CallEvent::TransferredCallEnded {
                    call: call.into(),
                    by: Side::Caller,
                    talk_ms: 0,
                },
            });
            let legs = l
                .legs()
                .into_iter()
                .map(|(leg, _)| leg)
                .filter(|leg| leg != channel)
                .collect();
            d.act(Step::After, Pbx::HangUp { legs });
        }
        Role::Agent if l.transfer.is_some() => agent_leaves(d, call, l),
        Role::Agent => end(d, call, l, EndedBy::AgentPhone),
        Role::Monitor => {
            let m = l
                .monitor
                .as_ref()
                .expect("a monitor leg belongs to a monitor");
            let reason = match cause {
                _ if m.joined => MonitorEndReason::SupervisorHungUp,
                HangupCause::Busy | HangupCause::Rejected => MonitorEndReason::Rejected,
                HangupCause::Unavailable => MonitorEndReason::Unavailable,
                _ => MonitorEndReason::NoAnswer,
            };
            d.record(CallEvent::MonitorEnded {
                call: call.into(),
                monitor: m.id.clone(),
                agent: m.agent.clone(),
                supervisor: m.supervisor.clone(),
                reason,
            });
        }
        Role::Outside => {
            let since = l.outside.as_ref().map_or(d.at, |(_, s)| *s);
            d.record(CallEvent::TransferredCallEnded {
                call: call.into(),
                by: Side::Target,
                talk_ms: talk_ms(since, d.at),
            });
            d.act(
                Step::After,
                Pbx::HangUp {
                    legs: vec![l.customer.clone()],
                },
            );
        }
    }
}

/// Starts a transfer of the agent's connected call (docs/transfers.md): the target checked
/// before anything is touched, then recorded (a blind transfer drops the agent at once; to a
/// queue the caller re-enters it at its head), then the PBX: the agent's leg hung up (blind) or
/// the customer held (attended), and the target rung.
fn start_transfer(
    d: &mut Decided,
    call: &str,
    l: &Live,
    cmd: &TransferCall,
    transfer: &str,
    leg: &str,
) -> Result<(), Refusal> {
    let a = l.agent.as_ref().expect("the agent's call has the agent");
    if !l.connected {
        return Err(Refusal::TransferNotConnected);
    }
    if l.transfer.is_some() {
        return Err(Refusal::TransferInProgress);
    }
    let invalid = |code, field, message: String| Refusal::Invalid {
        code,
        field,
        message,
    };
    let endpoint = match &cmd.target {
        TransferTarget::Queue(_) if cmd.method != TransferMethod::Blind => {
            return Err(invalid(
                "invalid_field",
                "method",
                "a call goes to a queue by blind transfer only".into(),
            ));
        }
        TransferTarget::Queue(_) => None,
        TransferTarget::Number(n) => {
            let digits = n
                .chars()
                .enumerate()
                .all(|(i, c)| c.is_ascii_digit() || (i == 0 && c == '+'));
            if n.is_empty() || n.len() > 32 || !digits {
                return Err(invalid(
                    "invalid_field",
                    "target",
                    format!("{n:?} is not a phone number (digits, may start with +)"),
                ));
            }
            Some(Endpoint::Number(n.clone()))
        }
        TransferTarget::Extension(_) | TransferTarget::Agent(_) => {
            let Some(device) = cmd.device.clone() else {
                return Err(invalid(
                    "missing_field",
                    "device",
                    "the device to ring is required".into(),
                ));
            };
            if a.device.as_ref() == Some(&device) {
                return Err(invalid(
                    "own_device",
                    "target",
                    format!("Extension {device} is your own device"),
                ));
            }
            if cmd.target_agent.as_ref() == Some(&cmd.agent) {
                return Err(invalid(
                    "own_device",
                    "target",
                    "you cannot transfer a call to yourself".into(),
                ));
            }
            d.act(
                Step::Before,
                Pbx::CheckOnline {
                    device: device.clone(),
                    field: "target",
                },
            );
            Some(Endpoint::Device(device))
        }
    };
    let leg = endpoint.as_ref().map(|_| leg.to_string());
    d.record(CallEvent::TransferStarted {
        call: call.into(),
        transfer: transfer.into(),
        agent: cmd.agent.clone(),
        method: cmd.method,
        target: cmd.target.clone(),
        leg: leg.clone(),
        target_agent: cmd.target_agent.clone(),
        queue: l.queue.clone(),
    });
    let dropped = CallEvent::CallEnded {
        call: call.into(),
        agent: cmd.agent.clone(),
        by: EndedBy::Transferred,
        talk_ms: talk_ms(a.answered_at, d.at),
    };
    match (&cmd.method, &cmd.target) {
        (TransferMethod::Blind, TransferTarget::Queue(q)) => {
            d.record(dropped);
            d.record(CallEvent::TransferCompleted {
                call: call.into(),
                transfer: transfer.into(),
                agent: cmd.agent.clone(),
                target_agent: None,
            });
            d.record(CallEvent::CallEnteredQueue {
                call: call.into(),
                queue: q.clone(),
                caller: l.caller.clone(),
                channel: l.customer.clone(),
                priority: REQUEUE_PRIORITY,
            });
        }
        (TransferMethod::Blind, _) => d.record(dropped),
        (TransferMethod::Attended, _) if !l.held => d.record(CallEvent::CallHeld {
            call: call.into(),
            agent: cmd.agent.clone(),
        }),
        _ => {}
    }
    match cmd.method {
        TransferMethod::Blind => d.act(
            Step::After,
            Pbx::HangUp {
                legs: vec![a.leg.clone()],
            },
        ),
        TransferMethod::Attended => d.act(
            Step::After,
            Pbx::Hold {
                channel: l.customer.clone(),
                held: true,
            },
        ),
        TransferMethod::Live => {}
    }
    if let (Some(endpoint), Some(leg)) = (endpoint, leg) {
        d.act(
            Step::After,
            Pbx::RingTarget {
                transfer: transfer.into(),
                leg,
                endpoint,
                caller: l.caller.clone(),
                ring_timeout_s: cmd.ring_timeout_s.clamp(1, 600) as u64,
            },
        );
    }
    Ok(())
}

/// A transfer's target answered on `channel`: after a blind transfer (or once the agent left)
/// the customer is joined with it; a live transfer forms the conference; an attended one the
/// consultation (the agent with the target while the customer is held; if the agent went back
/// to the customer meanwhile, the target waits on hold). Once only: a repeated report finds
/// the answer recorded.
fn target_answered(d: &mut Decided, call: &str, l: &Live, channel: &str) {
    let t = l
        .transfer
        .as_ref()
        .expect("a target leg belongs to a transfer");
    if t.answered_at.is_some() {
        return;
    }
    d.record(CallEvent::TransferAnswered {
        call: call.into(),
        transfer: t.id.clone(),
        agent: t.agent.clone(),
        target_agent: t.target_agent.clone(),
    });
    match &l.agent {
        None => {
            for e in joined(call, t) {
                d.record(e);
            }
            d.act(
                Step::After,
                Pbx::Bridge {
                    bridge: call.into(),
                    channels: vec![l.customer.clone(), channel.to_string()],
                },
            );
        }
        Some(a) if t.method == TransferMethod::Live => {
            d.record(CallEvent::ConferenceFormed {
                call: call.into(),
                transfer: t.id.clone(),
                agent: a.agent.clone(),
                target_agent: t.target_agent.clone(),
            });
            d.act(
                Step::After,
                Pbx::Bridge {
                    bridge: call.into(),
                    channels: vec![l.customer.clone(), a.leg.clone(), channel.to_string()],
                },
            );
        }
        Some(a) if l.held => d.act(
            Step::After,
            Pbx::Bridge {
                bridge: format!("{call}-consult"),
                channels: vec![a.leg.clone(), channel.to_string()],
            },
        ),
        Some(_) => d.act(
            Step::After,
            Pbx::Hold {
                channel: channel.to_string(),
                held: true,
            },
        ),
    }
}

/// The supervisor on the agent's call, when it is `supervisor`.
fn own_monitor<'l>(
    l: &'l Live,
    agent: &AgentNumber,
    supervisor: &str,
) -> Result<&'l Monitor, Refusal> {
    match &l.monitor {
        None => Err(Refusal::NoMonitor {
            agent: agent.clone(),
        }),
        Some(m) if m.supervisor != supervisor => Err(Refusal::NotYourMonitor {
            agent: agent.clone(),
            supervisor: m.supervisor.clone(),
        }),
        Some(m) => Ok(m),
    }
}

/// How the PBX is told a monitor mode: a listener is heard by nobody, a whisper by the agent's
/// leg only, a barge by everyone.
pub fn bridge_mode(l: &Live, mode: MonitorMode) -> BridgeMode {
    match (mode, l.agent.as_ref()) {
        (MonitorMode::Listen, _) | (MonitorMode::Whisper, None) => BridgeMode::Listen,
        (MonitorMode::Whisper, Some(a)) => BridgeMode::Whisper { to: a.leg.clone() },
        (MonitorMode::Barge, _) => BridgeMode::Speak,
    }
}

/// A transfer's target failed (`reason`): with the agent still on the call, they are back
/// with the customer; after a blind transfer the caller re-enters the queue at its head, and
/// an outbound call (no queue) ends.
pub fn target_fails(
    now: DateTime<Utc>,
    call: &str,
    l: &Live,
    reason: TransferFailure,
) -> Vec<Event> {
    let mut d = Decided {
        tenant: &l.tenant,
        at: now,
        out: vec![],
    };
    let Some(t) = &l.transfer else {
        return d.out;
    };
    d.record(CallEvent::TransferFailed {
        call: call.into(),
        transfer: t.id.clone(),
        agent: t.agent.clone(),
        reason,
        target_agent: t.target_agent.clone(),
    });
    match (&l.agent, &l.queue) {
        (Some(a), _) => {
            let back = t.method == TransferMethod::Attended && l.held;
            if back {
                d.record(CallEvent::CallResumed {
                    call: call.into(),
                    agent: a.agent.clone(),
                });
            }
            if t.method == TransferMethod::Attended {
                d.act(
                    Step::After,
                    Pbx::Bridge {
                        bridge: call.into(),
                        channels: vec![l.customer.clone(), a.leg.clone()],
                    },
                );
            }
            if back {
                d.act(
                    Step::After,
                    Pbx::Hold {
                        channel: l.customer.clone(),
                        held: false,
                    },
                );
            }
        }
        (None, Some(queue)) => d.record(CallEvent::CallEnteredQueue {
            call: call.into(),
            queue: queue.clone(),
            caller: l.caller.clone(),
            channel: l.customer.clone(),
            priority: REQUEUE_PRIORITY,
        }),
        (None, None) => {
            d.record(CallEvent::TransferredCallEnded {
                call: call.into(),
                by: Side::Target,
                talk_ms: 0,
            });
            d.act(
                Step::After,
                Pbx::HangUp {
                    legs: vec![l.customer.clone()],
                },
            );
        }
    }
    d.out
}

/// How long the agent's own phone rings for an outbound call before it fails as not answered.
pub const OUTBOUND_AGENT_RING_S: u64 = 30;

/// How long a supervisor's phone may ring before the monitoring ends as not answered.
pub const MONITOR_RING_S: u64 = 30;

/// The agent dials out: refused while they are on a call, to their own device, or with their
/// device not registered; the number must be routable (checked first); then recorded, and the
/// agent's own phone rings first (the number once it answers: [`dial_far_end`]). A number
/// that is one of the PBX's extensions is rung as that device.
fn dial(
    d: &mut Decided,
    m: &Model,
    cmd: &DialOutbound,
    devices: &[(DeviceId, bool)],
    call: &str,
    leg: &str,
    far_leg: &str,
) -> Result<(), Refusal> {
    if m.agent_call(d.tenant, &cmd.agent).is_some() || m.target_call(d.tenant, &cmd.agent).is_some()
    {
        return Err(Refusal::OnCall);
    }
    if cmd.number.as_str() == cmd.device.as_str() {
        return Err(Refusal::Invalid {
            code: "own_device",
            field: "number",
            message: format!("Extension {} is your own device", cmd.device),
        });
    }
    if !devices.iter().any(|(dev, up)| *dev == cmd.device && *up) {
        return Err(Refusal::Invalid {
            code: "device_offline",
            field: "device",
            message: format!(
                "Your device {} is not registered: register your phone, then dial",
                cmd.device
            ),
        });
    }
    let extension = devices
        .iter()
        .find(|(dev, _)| dev.as_str() == cmd.number.as_str())
        .map(|(dev, _)| dev.clone());
    let far = match &extension {
        Some(dev) => Endpoint::Device(dev.clone()),
        None => Endpoint::Number(cmd.number.to_string()),
    };
    d.act(
        Step::Before,
        Pbx::CheckRoute {
            endpoint: far,
            field: "number",
        },
    );
    d.record(CallEvent::OutboundCallStarted {
        call: call.into(),
        agent: cmd.agent.clone(),
        device: cmd.device.clone(),
        number: cmd.number.clone(),
        extension: extension.is_some(),
        leg: leg.into(),
        far_leg: far_leg.into(),
        ring_timeout_s: cmd.ring_timeout_s.clamp(1, 600),
    });
    d.act(
        Step::After,
        Pbx::RingDialer {
            leg: leg.into(),
            device: cmd.device.clone(),
            // The agent's phone shows whom it is about to call.
            caller: Party {
                number: cmd.number.to_string(),
                name: format!("Call {}", cmd.number),
            },
        },
    );
    Ok(())
}

/// The agent's phone answered their outbound call: the number is rung now (once: a repeated
/// report finds it dialled).
fn dial_far_end(d: &mut Decided, call: &str, l: &Live, o: &crate::model::Outbound) {
    let Some(a) = &l.agent else { return };
    d.record(CallEvent::OutboundCallDialed {
        call: call.into(),
        agent: a.agent.clone(),
    });
    let endpoint = match DeviceId::parse(o.number.as_str()) {
        Ok(dev) if o.extension => Endpoint::Device(dev),
        _ => Endpoint::Number(o.number.to_string()),
    };
    d.act(
        Step::After,
        Pbx::RingFar {
            leg: l.customer.clone(),
            endpoint,
            // The far end sees the agent's extension (a trunk presents the tenant's number).
            caller: Party {
                number: a.device.as_ref().map(|x| x.to_string()).unwrap_or_default(),
                name: String::new(),
            },
            ring_timeout_s: o.ring_timeout_s.clamp(1, 600) as u64,
        },
    );
}

/// A supervisor starts monitoring the agent's call: it must be connected, with nobody else on
/// it, from another device than the agent's, and that device online (checked first); then
/// recorded, and the supervisor's phone rings.
fn start_monitor(
    d: &mut Decided,
    call: &str,
    l: &Live,
    cmd: &MonitorCall,
    monitor: &str,
    leg: &str,
) -> Result<(), Refusal> {
    if !l.connected {
        return Err(Refusal::MonitorNotConnected {
            agent: cmd.agent.clone(),
        });
    }
    if let Some(m) = &l.monitor {
        return Err(Refusal::MonitorInProgress {
            agent: cmd.agent.clone(),
            supervisor: m.supervisor.clone(),
        });
    }
    if l.agent.as_ref().and_then(|a| a.device.as_ref()) == Some(&cmd.device) {
        return Err(Refusal::Invalid {
            code: "own_device",
            field: "device",
            message: format!("Extension {} is the agent's own device", cmd.device),
        });
    }
    d.act(
        Step::Before,
        Pbx::CheckOnline {
            device: cmd.device.clone(),
            field: "device",
        },
    );
    d.record(CallEvent::MonitorStarted {
        call: call.into(),
        monitor: monitor.into(),
        agent: cmd.agent.clone(),
        supervisor: cmd.supervisor.clone(),
        supervisor_name: cmd.supervisor_name.clone(),
        device: cmd.device.clone(),
        leg: leg.into(),
        mode: cmd.mode,
    });
    d.act(
        Step::After,
        Pbx::RingMonitor {
            monitor: monitor.into(),
            leg: leg.into(),
            device: cmd.device.clone(),
            caller: l.caller.clone(),
        },
    );
    Ok(())
}

/// The supervisor's phone answered: they join the call's bridge in their mode, in one step
/// (never heard, even for a moment, as an ordinary party). Once only.
fn monitor_joined(d: &mut Decided, call: &str, l: &Live) {
    let Some(m) = l.monitor.as_ref().filter(|m| !m.joined) else {
        return;
    };
    d.record(CallEvent::MonitorJoined {
        call: call.into(),
        monitor: m.id.clone(),
        agent: m.agent.clone(),
        supervisor: m.supervisor.clone(),
    });
    d.act(
        Step::After,
        Pbx::Answer {
            channel: m.leg.clone(),
        },
    );
    d.act(
        Step::After,
        Pbx::JoinBridge {
            channel: m.leg.clone(),
            mode: bridge_mode(l, m.mode),
            bridge: call.into(),
        },
    );
}

/// The supervisor's phone could not be rung: the monitoring `monitor` ends as `unavailable`
/// (if it is still the call's, not joined).
pub fn monitor_fails(now: DateTime<Utc>, call: &str, l: &Live, monitor: &str) -> Vec<Event> {
    let mut d = Decided {
        tenant: &l.tenant,
        at: now,
        out: vec![],
    };
    if let Some(m) = l.monitor.as_ref().filter(|m| m.id == monitor && !m.joined) {
        d.record(CallEvent::MonitorEnded {
            call: call.into(),
            monitor: m.id.clone(),
            agent: m.agent.clone(),
            supervisor: m.supervisor.clone(),
            reason: MonitorEndReason::Unavailable,
        });
    }
    d.out
}

/// Why a transfer's target failed, by how its leg ended.
fn failure(cause: HangupCause, answered: bool) -> TransferFailure {
    match cause {
        _ if answered => TransferFailure::TargetHungUp,
        HangupCause::Busy => TransferFailure::Busy,
        HangupCause::Rejected => TransferFailure::Rejected,
        HangupCause::Unavailable => TransferFailure::Unavailable,
        HangupCause::Normal | HangupCause::NoAnswer | HangupCause::CallerGone => {
            TransferFailure::NoAnswer
        }
    }
}

/// Why an outbound call's leg ended before the far end answered: the agent's (`agent`) or the
/// far end's.
fn outbound_failure(cause: HangupCause, agent: bool, dialed: bool) -> OutboundFailure {
    match (agent, cause) {
        // The agent hung up while the number rang.
        (true, _) if dialed => OutboundFailure::Cancelled,
        (true, HangupCause::NoAnswer) => OutboundFailure::AgentNoAnswer,
        (true, HangupCause::Unavailable) => OutboundFailure::AgentUnavailable,
        (true, _) => OutboundFailure::AgentDeclined,
        (false, HangupCause::Busy) => OutboundFailure::Busy,
        (false, HangupCause::NoAnswer | HangupCause::CallerGone) => OutboundFailure::NoAnswer,
        (false, HangupCause::Unavailable) => OutboundFailure::Unavailable,
        (false, HangupCause::Rejected | HangupCause::Normal) => OutboundFailure::Rejected,
    }
}

/// The priority a transferred call re-enters a queue with: ahead of every caller waiting.
pub const REQUEUE_PRIORITY: i32 = 100;

/// An outbound call still dialling fails (`reason`): recorded, and every leg hung up.
pub fn dial_fails(now: DateTime<Utc>, call: &str, l: &Live, reason: OutboundFailure) -> Vec<Event> {
    let mut d = Decided {
        tenant: &l.tenant,
        at: now,
        out: vec![],
    };
    let Some(a) = l.agent.as_ref().filter(|_| l.dialing().is_some()) else {
        return d.out;
    };
    d.record(CallEvent::OutboundCallFailed {
        call: call.into(),
        agent: a.agent.clone(),
        reason,
    });
    d.act(
        Step::After,
        Pbx::HangUp {
            legs: l.legs().into_iter().map(|(leg, _)| leg).collect(),
        },
    );
    d.out
}

/// The end of the agent's part of `call` (`by` them, the caller, their phone), and every leg
/// of it hung up.
pub fn ending(now: DateTime<Utc>, call: &str, l: &Live, by: EndedBy) -> Vec<Event> {
    let mut d = Decided {
        tenant: &l.tenant,
        at: now,
        out: vec![],
    };
    end(&mut d, call, l, by);
    d.out
}

/// The agent leaving `call`'s transfer to its target.
pub fn leaving(now: DateTime<Utc>, call: &str, l: &Live) -> Vec<Event> {
    let mut d = Decided {
        tenant: &l.tenant,
        at: now,
        out: vec![],
    };
    agent_leaves(&mut d, call, l);
    d.out
}

/// The agent's own call, or why there is none.
pub fn agent_call<'m>(
    m: &'m Model,
    tenant: &str,
    agent: &AgentNumber,
) -> Result<(&'m str, &'m Live), Refusal> {
    if let Some(c) = m.agent_call(tenant, agent) {
        let (c, l) = m.calls.get_key_value(&c).expect("the agent's call is held");
        return Ok((c.as_str(), l));
    }
    let target = m
        .target_call(tenant, agent)
        .and_then(|c| m.calls.get(&c))
        .and_then(|l| l.transfer.as_ref());
    Err(match target {
        Some(t) => Refusal::TransferTarget {
            from: t.agent.clone(),
            method: t.method,
        },
        None => Refusal::NoCall {
            agent: agent.clone(),
        },
    })
}

/// Holds or resumes the customer. In an attended transfer whose target answered, the agent
/// talks with one side at a time: holding the customer goes back to the target, resuming
/// the customer holds the target.
fn hold(
    d: &mut Decided,
    call: &str,
    l: &Live,
    agent: &AgentNumber,
    held: bool,
) -> Result<(), Refusal> {
    if !l.connected {
        return Err(Refusal::NotConnected);
    }
    if l.held == held {
        return Err(if held {
            Refusal::AlreadyOnHold
        } else {
            Refusal::NotOnHold
        });
    }
    let a = l.agent.as_ref().expect("the agent's call has the agent");
    d.act(
        Step::Before,
        Pbx::Hold {
            channel: l.customer.clone(),
            held,
        },
    );
    d.record(if held {
        CallEvent::CallHeld {
            call: call.into(),
            agent: agent.clone(),
        }
    } else {
        CallEvent::CallResumed {
            call: call.into(),
            agent: agent.clone(),
        }
    });
    let consulting = l
        .transfer
        .as_ref()
        .filter(|t| t.method == TransferMethod::Attended && t.answered_at.is_some());
    if let Some(t) = consulting {
        let leg = t.leg.clone().expect("an answered target has a leg");
        if held {
            d.act(
                Step::After,
                Pbx::Bridge {
                    bridge: format!("{call}-consult"),
                    channels: vec![a.leg.clone(), leg.clone()],
                },
            );
            d.act(
                Step::After,
                Pbx::Hold {
                    channel: leg,
                    held: false,
                },
            );
        } else {
            d.act(
                Step::After,
                Pbx::Hold {
                    channel: leg,
                    held: true,
                },
            );
            d.act(
                Step::After,
                Pbx::Bridge {
                    bridge: call.into(),
                    channels: vec![l.customer.clone(), a.leg.clone()],
                },
            );
        }
    }
    Ok(())
}

/// The agent's part of the call ends, and every leg of it is hung up.
fn end(d: &mut Decided, call: &str, l: &Live, by: EndedBy) {
    let Some(a) = &l.agent else { return };
    d.record(CallEvent::CallEnded {
        call: call.into(),
        agent: a.agent.clone(),
        by,
        talk_ms: talk_ms(a.answered_at, d.at),
    });
    d.act(
        Step::After,
        Pbx::HangUp {
            legs: l.legs().into_iter().map(|(leg, _)| leg).collect(),
        },
    );
}

/// The agent leaves a transfer (Complete, or their Hangup): their part ends as transferred;
/// an answered target is joined with the customer and has the call from here on.
fn agent_leaves(d: &mut Decided, call: &str, l: &Live) {
    let (Some(a), Some(t)) = (&l.agent, &l.transfer) else {
        return;
    };
    d.record(CallEvent::CallEnded {
        call: call.into(),
        agent: a.agent.clone(),
        by: EndedBy::Transferred,
        talk_ms: talk_ms(a.answered_at, d.at),
    });
    let answered = t.answered_at.is_some();
    if answered {
        for e in joined(call, t) {
            d.record(e);
        }
    }
    if let (true, Some(leg)) = (answered, t.leg.clone()) {
        d.act(
            Step::After,
            Pbx::Bridge {
                bridge: call.into(),
                channels: vec![l.customer.clone(), leg.clone()],
            },
        );
        d.act(
            Step::After,
            Pbx::Hold {
                channel: leg,
                held: false,
            },
        );
    }
    if l.held {
        d.act(
            Step::After,
            Pbx::Hold {
                channel: l.customer.clone(),
                held: false,
            },
        );
    }
    d.act(
        Step::After,
        Pbx::HangUp {
            legs: vec![a.leg.clone()],
        },
    );
}

/// The events of the customer joined with the transfer's target.
pub fn joined(call: &str, t: &Transfer) -> Vec<CallEvent> {
    let mut v = vec![CallEvent::TransferCompleted {
        call: call.into(),
        transfer: t.id.clone(),
        agent: t.agent.clone(),
        target_agent: t.target_agent.clone(),
    }];
    if let Some(b) = &t.target_agent {
        v.push(CallEvent::CallConnected {
            call: call.into(),
            agent: b.clone(),
            bridge: call.into(),
        });
    }
    v
}

/// The transfer is called off: its target's leg goes, and after an attended one the agent is
/// back with the customer (taken off hold if the consultation held them).
fn cancel(d: &mut Decided, call: &str, l: &Live, agent: &AgentNumber) -> Result<(), Refusal> {
    let Some(t) = &l.transfer else {
        return Err(Refusal::NoTransferToCancel);
    };
    let a = l.agent.as_ref().expect("the agent's call has the agent");
    let back = t.method == TransferMethod::Attended && l.held;
    d.record(CallEvent::TransferCancelled {
        call: call.into(),
        transfer: t.id.clone(),
        agent: agent.clone(),
        target_agent: t.target_agent.clone(),
    });
    if back {
        d.record(CallEvent::CallResumed {
            call: call.into(),
            agent: agent.clone(),
        });
    }
    if let Some(leg) = &t.leg {
        d.act(
            Step::After,
            Pbx::HangUp {
                legs: vec![leg.clone()],
            },
        );
    }
    if t.method == TransferMethod::Attended {
        d.act(
            Step::After,
            Pbx::Bridge {
                bridge: call.into(),
                channels: vec![l.customer.clone(), a.leg.clone()],
            },
        );
    }
    if back {
        d.act(
            Step::After,
            Pbx::Hold {
                channel: l.customer.clone(),
                held: false,
            },
        );
    }
    Ok(())
}

fn talk_ms(answered_at: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
    (now - answered_at).num_milliseconds().max(0)
}

#[cfg(test)]
mod tests;
