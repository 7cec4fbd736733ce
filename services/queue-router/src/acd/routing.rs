//! The router's rule book as one [`Decider`]: [`Routing`], over the [`Acd`].
//!
//! What the core decides, from the model's state and what it is told (the time included):
//! - a caller's arrival on a queue number: the call enters the queue (or leaves it at once when
//!   the queue sends callers away while nobody is logged into it);
//! - the offers of the waiting calls to the eligible agents, and the phones to ring
//!   ([`Command::Dispatch`]);
//! - a phone answering: the call is answered by that agent and the other offers are withdrawn;
//!   a second answer, or an answer from an agent who can no longer take the call (logged out,
//!   device offline, dialling out), is withdrawn and hung up;
//! - a leg hung up at the phone: rejected, or missed when it rang out (with an automatic pause
//!   after the queue's limit of missed offers in a row); the caller hanging up before an answer:
//!   abandoned, the offers withdrawn and their legs hung up;
//! - the timers that fall due ([`Command::Due`]): a ring timeout asks the PBX to end the ring
//!   (missed only once it says it ended it: [`Command::RingEnded`]), a caller's max wait or a
//!   queue with nobody logged in ends the wait, a wrap-up ends;
//! - the offers of agents who can no longer take them, withdrawn; a phone that could not be
//!   rung, withdrawn; an agent's wrap-up after their part of a call.
//!
//! What the IO around it does (`router.rs`): it holds the lease, reads the store and the PBX
//! facts, and for each input asks [`Routing::decide`]; then it applies what was decided to its
//! model at once ([`Routing::evolve`]), appends each call's events (fenced) and carries out the
//! actions that follow them: rings phones while the offer is recorded, hangs up legs once the
//! events are committed, asks the PBX to end timed-out rings, asks agent-session to pause an
//! agent. It also filters what the model is not to see: a report it already parked, the agent's
//! newest session events read ahead of the store before an answer is decided.
//!
//! Why the decided output is more than recorded events: the router's decisions are also PBX
//! actions, and some change only what the router holds in memory. Both are part of the decision
//! and a test must see them, so [`Event`] has three kinds, and `decide` returns them in the
//! order they are to happen:
//! - [`Event::Call`] (with [`Event::Session`] and [`Event::Queue`], read from the store): the
//!   facts recorded; the model is their fold.
//! - [`Event::Noted`]: what the router only notes in memory ([`Note`]: a dispatch done, a timed
//!   out ring postponed while the PBX is asked to end it, a withdrawn leg gone, an automatic
//!   pause accepted). Lost with the process, and rightly: a rebuilt router re-derives them
//!   (a ring timeout falls due again, a leg's wait ends by itself).
//! - [`Event::Act`]: the actions ([`Action`]); evolving them changes nothing, since what they
//!   lead to comes back as facts (the PBX's reports, agent-session's events).
//!
//! Nothing is refused: a fact the router has no use for (a channel it does not know, a report
//! delivered again) decides nothing. Ids of what a decision creates (calls, offers) come in the
//! command ([`Ids`]), as the time does: the core has no clock and no randomness of its own.

use std::convert::Infallible;

use cc_contracts::call::{CallEvent, LeaveReason, WithdrawReason};
use cc_contracts::domain::{AgentNumber, DeviceId, QueueNumber};
use cc_contracts::pbx::{ChannelEvent, Direction, HangupCause, Party};
use cc_contracts::queue::QueueEvent;
use cc_contracts::session::AgentSessionEvent;
use cc_core::Decider;
use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use super::{Acd, Decision};

mod rules;

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;

use rules::Decided;

/// The ids the router gives the legs it originates to agents' phones (offers) start with this,
/// so that after a crash it can tell its own legs from the PBX's other calls: a phone is rung
/// while the offer is being recorded, and a leg whose offer never made it to the store is hung
/// up at the next start (the router's reconciliation with the PBX).
pub const OFFER_PREFIX: &str = "ccq-";

/// How long a timed-out ring waits for the PBX to say it ended it before its timeout is looked
/// at again.
pub const RING_END_WAIT_MS: i64 = 1000;

/// The router's decider: its state is the [`Acd`].
pub struct Routing;

/// Fresh ids for what a decision creates (a call, its offers), from a UUIDv7 the caller draws.
/// The `n`th id of one seed differs from the seed in its lowest bits only (random in a UUIDv7,
/// below its time and counter), so ids of one seed are distinct and ids of distinct seeds never
/// meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids(Uuid);

impl Ids {
    pub fn new(seed: Uuid) -> Self {
        Ids(seed)
    }

    fn nth(&self, n: usize) -> Uuid {
        Uuid::from_u128(self.0.as_u128() ^ (n as u32 as u128))
    }
}

/// What the router asks of its core, with the facts and the time the decision needs.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// A PBX channel fact, taken at `now`.
    Channel {
        fact: ChannelEvent,
        now: DateTime<Utc>,
        ids: Ids,
    },
    /// Offer the waiting calls to the agents free to take them.
    Dispatch { now: DateTime<Utc>, ids: Ids },
    /// The timers due at `now`.
    Due { now: DateTime<Utc> },
    /// The PBX's answer to [`Action::CancelRing`].
    RingEnded {
        tenant: String,
        call: String,
        agent: AgentNumber,
        offer: String,
        how: RingEnded,
        now: DateTime<Utc>,
    },
    /// The agent's phone could not be rung for the offer.
    NotRung {
        tenant: String,
        call: String,
        agent: AgentNumber,
        offer: String,
        now: DateTime<Utc>,
    },
    /// Withdraw the offers ringing agents who can no longer take them: this agent's (after
    /// their logout, their device going offline, their dialling out), or everybody's (after a
    /// rebuild).
    WithdrawUnavailable {
        only: Option<(String, AgentNumber)>,
        now: DateTime<Utc>,
    },
    /// The agent's part of the call ended: their wrap-up begins.
    StartWrapUp {
        tenant: String,
        call: String,
        agent: AgentNumber,
        now: DateTime<Utc>,
    },
}

/// What the PBX said to a timed-out ring's `CancelRing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingEnded {
    /// Ended as rung out: the offer is missed.
    Cancelled,
    /// The phone had answered: its `ChannelAnswered` decides.
    Answered,
    /// The PBX has no such leg, and no report of its end came meanwhile: it never rang.
    Gone,
}

/// What the model evolves on, and what [`Routing::decide`] decides (see the module doc).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// An agent-session event, recorded at `at`.
    Session {
        tenant: String,
        event: AgentSessionEvent,
        at: DateTime<Utc>,
    },
    /// A queue's configuration or membership.
    Queue { tenant: String, event: QueueEvent },
    /// A call event, recorded (or, decided, to be recorded) at `at`.
    Call {
        tenant: String,
        event: CallEvent,
        at: DateTime<Utc>,
    },
    /// Noted in the router's memory only.
    Noted(Note),
    /// To do; changes nothing in the model.
    Act(Action),
}

/// What the router keeps in memory only.
#[derive(Debug, Clone, PartialEq)]
pub enum Note {
    /// A dispatch was made: nothing new to offer until something changes or `recheck_at` (a
    /// reject delay that held an agent back ends); `rng` is the chooser's random state after it.
    Dispatched {
        recheck_at: Option<DateTime<Utc>>,
        rng: u64,
    },
    /// A reject delay ended at `at`: its timer is spent, the agent may be offered calls.
    RejectDelayOver {
        tenant: String,
        agent: AgentNumber,
        at: DateTime<Utc>,
    },
    /// A timed-out ring that the PBX is asked to end is looked at again at `until`.
    RingTimeoutPostponed {
        call: String,
        offer: String,
        until: DateTime<Utc>,
    },
    /// The PBX reported a withdrawn offer's leg gone: its agent may be rung again.
    LegGone { channel: String },
    /// agent-session accepted the automatic pause of the agent (its event is not read yet).
    AutoPaused { tenant: String, agent: AgentNumber },
}

/// An action a decision asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Ring the agent's device for the offer (the leg's channel id is the offer id), while the
    /// offer is recorded.
    Ring {
        tenant: String,
        call: String,
        offer: String,
        agent: AgentNumber,
        device: DeviceId,
        caller: Party,
    },
    /// Hang up a channel (an offer's leg, a caller), once the call's events before it are
    /// recorded.
    HangUp {
        tenant: String,
        call: String,
        channel: String,
        cause: HangupCause,
    },
    /// Ask the PBX to end a timed-out ring (`CancelRing`); its answer comes back as
    /// [`Command::RingEnded`].
    CancelRing {
        tenant: String,
        call: String,
        agent: AgentNumber,
        offer: String,
    },
    /// Ask agent-session to pause an agent who missed too many offers in a row; accepted, it is
    /// noted as [`Note::AutoPaused`].
    PauseAgent {
        tenant: String,
        agent: AgentNumber,
        reason: String,
    },
}

impl Event {
    /// The call this event records, or this action is about (for an offer's leg or a caller).
    pub fn call(&self) -> Option<&str> {
        match self {
            Event::Call { event, .. } => Some(event.call()),
            Event::Act(Action::Ring { call, .. } | Action::HangUp { call, .. }) => Some(call),
            _ => None,
        }
    }
}

impl Decider for Routing {
    type State = Acd;
    type Command = Command;
    type Event = Event;
    type Refusal = Infallible;

    fn decide(acd: &Acd, command: &Command) -> Result<Vec<Event>, Infallible> {
        let mut d = Decided::default();
        match command {
            Command::Channel { fact, now, ids } => d.channel(acd, fact, *now, *ids),
            Command::Dispatch { now, ids } => d.dispatch(acd, *now, *ids),
            Command::Due { now } => d.due(acd, *now),
            Command::RingEnded {
                tenant,
                call,
                agent,
                offer,
                how,
                now,
            } => d.ring_ended(acd, tenant, call, agent, offer, *how, *now),
            Command::NotRung {
                tenant,
                call,
                agent,
                offer,
                now,
            } => d.not_rung(acd, tenant, call, agent, offer, *now),
            Command::WithdrawUnavailable { only, now } => d.withdraw_unavailable(acd, only, *now),
            Command::StartWrapUp {
                tenant,
                call,
                agent,
                now,
            } => d.start_wrap_up(acd, tenant, call, agent, *now),
        }
        Ok(d.out)
    }

    fn evolve(acd: &mut Acd, event: &Event) {
        match event {
            Event::Session { tenant, event, at } => acd.apply_session(tenant, event, *at),
            Event::Queue { tenant, event } => acd.apply_queue(tenant, event),
            Event::Call { tenant, event, at } => acd.apply_call(tenant, event, *at),
            Event::Noted(note) => acd.note(note),
            Event::Act(_) => {}
        }
    }
}

impl Acd {
    fn note(&mut self, note: &Note) {
        match note {
            Note::Dispatched { recheck_at, rng } => self.dispatched(*recheck_at, *rng),
            Note::RejectDelayOver { tenant, agent, at } => {
                self.reject_delay_over(*at, (tenant.clone(), agent.clone()))
            }
            Note::RingTimeoutPostponed { call, offer, until } => {
                self.postpone_offer(call, offer, *until)
            }
            Note::LegGone { channel } => self.channel_gone(channel),
            Note::AutoPaused { tenant, agent } => {
                // Known before the store brings agent-session's event: no offer meanwhile.
                if let Some(a) = self.agents.get_mut(&(tenant.clone(), agent.clone())) {
                    a.paused = true;
                }
            }
        }
    }
}
