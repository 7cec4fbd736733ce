//! Queue calls: from entering a queue to wrap-up (the queue-router and call-control services).

use serde::{Deserialize, Serialize};

use crate::domain::{AgentNumber, DeviceId, DialString, QueueNumber};
use crate::pbx::Party;
use crate::EventFamily;
use cc_core::Command;

/// Why an offer to an agent was withdrawn (none of these count against the agent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WithdrawReason {
    /// Another agent answered first (ring-all).
    AnsweredElsewhere,
    /// The caller hung up while the phone rang.
    CallerGone,
    /// The agent's device could not be rung (it went offline).
    DeviceUnavailable,
    /// The agent logged out (or was logged out by a supervisor, or their account was
    /// disabled) while the phone rang, or the leg was answered after that logout.
    AgentLoggedOut,
    /// The agent's device unregistered while it rang.
    DeviceOffline,
    /// The agent started an outbound call from the portal while the phone rang.
    AgentDialedOut,
}

/// Who ended a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EndedBy {
    /// The agent, from the portal.
    Agent,
    /// The agent's phone hung up.
    AgentPhone,
    Caller,
    /// The agent transferred the call and dropped from it.
    Transferred,
}

/// How a transfer goes (the portal's Blind / Attended / Live Transfer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TransferMethod {
    /// The customer is sent to the target and the agent drops at once.
    Blind,
    /// The customer waits on hold while the agent consults the target; Complete joins them.
    Attended,
    /// Customer, agent and target in one call (a 3-way bridge); Complete drops the agent.
    Live,
}

/// Where a transfer sends the customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TransferTarget {
    /// Any extension (device) of the tenant.
    Extension(DeviceId),
    /// A logged-in agent (their device rings).
    Agent(AgentNumber),
    /// A queue: the customer re-enters it at the head.
    Queue(QueueNumber),
    /// An outside number.
    Number(String),
}

impl TransferTarget {
    /// How the portal names the target.
    pub fn label(&self) -> String {
        match self {
            TransferTarget::Extension(d) => format!("Extension {d}"),
            TransferTarget::Agent(a) => format!("Agent {a}"),
            TransferTarget::Queue(q) => format!("Queue {q}"),
            TransferTarget::Number(n) => format!("Number {n}"),
        }
    }
}

/// Why a transfer did not reach its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TransferFailure {
    Busy,
    NoAnswer,
    Rejected,
    /// The target device went offline or could not be rung.
    Unavailable,
    /// The target answered and then hung up before the transfer completed.
    TargetHungUp,
    /// The customer hung up while the transfer was going on.
    CallerGone,
}

/// Who ended a call that had been transferred to a target other than an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Caller,
    Target,
}

/// Why a call left its queue without being answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    MaxWait,
    NoAgents,
}

/// How a supervisor takes part in an agent's call (the supervisor page's Listen, Whisper and
/// Barge). The supervisor always hears the agent and the customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MonitorMode {
    /// Neither the agent nor the customer hears the supervisor.
    Listen,
    /// The agent hears the supervisor (coaching); the customer does not.
    Whisper,
    /// Everyone hears everyone.
    Barge,
}

impl MonitorMode {
    pub fn label(&self) -> &'static str {
        match self {
            MonitorMode::Listen => "Listen",
            MonitorMode::Whisper => "Whisper",
            MonitorMode::Barge => "Barge",
        }
    }
}

/// Why a supervisor's monitoring of a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MonitorEndReason {
    /// The supervisor pressed Leave.
    Left,
    /// The supervisor's phone hung up.
    SupervisorHungUp,
    /// The supervisor's phone did not answer within 30 seconds.
    NoAnswer,
    /// The supervisor's phone declined or was busy.
    Rejected,
    /// The supervisor's device could not be rung.
    Unavailable,
    /// The agent's part of the call ended (hangup by anyone, or the agent transferred it).
    CallEnded,
}

/// Why an outbound call from the portal did not connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutboundFailure {
    /// The agent's own phone rang out (30 seconds) without being answered.
    AgentNoAnswer,
    /// The agent's phone declined the call (or was busy).
    AgentDeclined,
    /// The agent's device could not be rung (not registered).
    AgentUnavailable,
    /// The agent hung up (in the portal or on the phone) before the far end answered.
    Cancelled,
    /// The number or extension dialled was busy.
    Busy,
    /// The far end rang out (60 seconds, or the dial's `ring_timeout_s`) without being answered.
    NoAnswer,
    /// The far end declined the call.
    Rejected,
    /// The far end could not be reached (an extension not registered, the trunk refused it).
    Unavailable,
}

impl OutboundFailure {
    /// How the portal says it.
    pub fn label(&self) -> &'static str {
        match self {
            OutboundFailure::AgentNoAnswer => "Your phone did not answer",
            OutboundFailure::AgentDeclined => "Your phone declined the call",
            OutboundFailure::AgentUnavailable => "Your phone could not be rung",
            OutboundFailure::Cancelled => "Cancelled",
            OutboundFailure::Busy => "Busy",
            OutboundFailure::NoAnswer => "No answer",
            OutboundFailure::Rejected => "Declined",
            OutboundFailure::Unavailable => "Not reachable",
        }
    }
}

/// Events of one call: a queue call from entering its queue, or an agent's outbound call from
/// the dial (`OutboundCallStarted`; after `CallConnected` it goes on as a queue call does: hold,
/// transfers, `CallEnded`, but with no queue and no wrap-up). The transfer events name the agent
/// who started the transfer (`agent`) and the receiving agent, if any (`target_agent`). Stream:
/// `call-<call id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type")]
pub enum CallEvent {
    CallEnteredQueue {
        call: String,
        queue: QueueNumber,
        caller: Party,
        channel: String,
        priority: i32,
    },
    CallOffered {
        call: String,
        queue: QueueNumber,
        agent: AgentNumber,
        device: DeviceId,
        offer: String,
        /// Seconds the offer rings before it counts as missed (the queue's ring timeout when
        /// offered); absent in events recorded before it was carried.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ring_timeout_s: Option<i64>,
    },
    OfferRejected {
        call: String,
        agent: AgentNumber,
        offer: String,
    },
    OfferTimedOut {
        call: String,
        agent: AgentNumber,
        offer: String,
    },
    OfferWithdrawn {
        call: String,
        agent: AgentNumber,
        offer: String,
        reason: WithdrawReason,
    },
    CallAnswered {
        call: String,
        queue: QueueNumber,
        agent: AgentNumber,
        offer: String,
        wait_ms: i64,
    },
    CallAbandoned {
        call: String,
        queue: QueueNumber,
        wait_ms: i64,
        position: i32,
    },
    CallLeftQueue {
        call: String,
        queue: QueueNumber,
        reason: LeaveReason,
        wait_ms: i64,
    },
    CallConnected {
        call: String,
        agent: AgentNumber,
        bridge: String,
    },
    CallHeld {
        call: String,
        agent: AgentNumber,
    },
    CallResumed {
        call: String,
        agent: AgentNumber,
    },
    CallEnded {
        call: String,
        agent: AgentNumber,
        by: EndedBy,
        talk_ms: i64,
    },
    WrapUpStarted {
        call: String,
        agent: AgentNumber,
        seconds: i64,
    },
    WrapUpEnded {
        call: String,
        agent: AgentNumber,
        early: bool,
    },
    /// An agent started a transfer. `leg` is the target's channel (none for a queue);
    /// `target_agent` the agent whose device rings, when the target is an agent's device.
    TransferStarted {
        call: String,
        transfer: String,
        agent: AgentNumber,
        method: TransferMethod,
        target: TransferTarget,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        leg: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target_agent: Option<AgentNumber>,
        /// The queue the call came from (the receiving agent's wrap-up follows its settings);
        /// absent for an outbound call (never null).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(with = "QueueNumber")]
        queue: Option<QueueNumber>,
    },
    /// The target answered (for an attended transfer: the consultation begins).
    TransferAnswered {
        call: String,
        transfer: String,
        agent: AgentNumber,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target_agent: Option<AgentNumber>,
    },
    /// Live transfer: customer, agent and target are joined in one call.
    ConferenceFormed {
        call: String,
        transfer: String,
        agent: AgentNumber,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target_agent: Option<AgentNumber>,
    },
    /// The target did not take the call; the customer stays with the agent, or (the agent
    /// having dropped) goes back to the head of the queue.
    TransferFailed {
        call: String,
        transfer: String,
        agent: AgentNumber,
        reason: TransferFailure,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target_agent: Option<AgentNumber>,
    },
    /// The agent cancelled: the target's leg ends, the customer is back with the agent.
    TransferCancelled {
        call: String,
        transfer: String,
        agent: AgentNumber,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target_agent: Option<AgentNumber>,
    },
    /// The customer and the target are joined; the transferring agent is off the call.
    TransferCompleted {
        call: String,
        transfer: String,
        agent: AgentNumber,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target_agent: Option<AgentNumber>,
    },
    /// A supervisor started monitoring the agent's connected call: `leg` is the supervisor's
    /// channel (their device rings). `agent` is the agent monitored.
    MonitorStarted {
        call: String,
        monitor: String,
        agent: AgentNumber,
        /// The supervisor's (or admin's) username.
        supervisor: String,
        supervisor_name: String,
        device: DeviceId,
        leg: String,
        mode: MonitorMode,
    },
    /// The supervisor's phone answered: they are on the call in their mode.
    MonitorJoined {
        call: String,
        monitor: String,
        agent: AgentNumber,
        supervisor: String,
    },
    /// The supervisor switched between Listen, Whisper and Barge.
    MonitorModeChanged {
        call: String,
        monitor: String,
        agent: AgentNumber,
        supervisor: String,
        mode: MonitorMode,
    },
    /// The supervisor is off the call (their leg is hung up).
    MonitorEnded {
        call: String,
        monitor: String,
        agent: AgentNumber,
        supervisor: String,
        reason: MonitorEndReason,
    },
    /// A call transferred to an extension or number without an agent ended.
    TransferredCallEnded {
        call: String,
        by: Side,
        talk_ms: i64,
    },
    /// An agent dialled from the portal: their own device (`device`, leg `leg`) rings first,
    /// showing the number dialled; once they answer, the number is rung on `far_leg`
    /// (`OutboundCallDialed`). Not a queue call: no queue, no ACD offer, no wrap-up; the agent
    /// is offered no queue call until it ends.
    OutboundCallStarted {
        call: String,
        agent: AgentNumber,
        device: DeviceId,
        /// What the agent dialled.
        number: DialString,
        /// It is an extension of the tenant (a device), not an outside number.
        extension: bool,
        leg: String,
        far_leg: String,
        /// Seconds the number may ring once the agent answered (the agent's own phone rings 30
        /// seconds at most); 60 when absent.
        #[serde(default = "dial_ring_timeout")]
        ring_timeout_s: i64,
    },
    /// The agent's phone answered: the number is rung now (they hear it ring).
    OutboundCallDialed {
        call: String,
        agent: AgentNumber,
    },
    /// The outbound call ended before the far end answered; both legs are hung up.
    OutboundCallFailed {
        call: String,
        agent: AgentNumber,
        reason: OutboundFailure,
    },
    /// In wrap-up, the agent gave the call's disposition (one of the queue's codes) and/or a
    /// note. Given again, the last one counts.
    CallDispositionRecorded {
        call: String,
        agent: AgentNumber,
        queue: QueueNumber,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disposition: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
}
impl EventFamily for CallEvent {
    const CATEGORY: &'static str = "call";
}

impl CallEvent {
    pub fn call(&self) -> &str {
        use CallEvent::*;
        match self {
            CallEnteredQueue { call, .. }
            | CallOffered { call, .. }
            | OfferRejected { call, .. }
            | OfferTimedOut { call, .. }
            | OfferWithdrawn { call, .. }
            | CallAnswered { call, .. }
            | CallAbandoned { call, .. }
            | CallLeftQueue { call, .. }
            | CallConnected { call, .. }
            | CallHeld { call, .. }
            | CallResumed { call, .. }
            | CallEnded { call, .. }
            | WrapUpStarted { call, .. }
            | WrapUpEnded { call, .. }
            | TransferStarted { call, .. }
            | TransferAnswered { call, .. }
            | ConferenceFormed { call, .. }
            | TransferFailed { call, .. }
            | TransferCancelled { call, .. }
            | TransferCompleted { call, .. }
            | MonitorStarted { call, .. }
            | MonitorJoined { call, .. }
            | MonitorModeChanged { call, .. }
            | MonitorEnded { call, .. }
            | CallDispositionRecorded { call, .. }
            | OutboundCallStarted { call, .. }
            | OutboundCallDialed { call, .. }
            | OutboundCallFailed { call, .. }
            | TransferredCallEnded { call, .. } => call,
        }
    }

    /// The agent the event is about, if any.
    pub fn agent(&self) -> Option<&AgentNumber> {
        use CallEvent::*;
        match self {
            CallOffered { agent, .. }
            | OfferRejected { agent, .. }
            | OfferTimedOut { agent, .. }
            | OfferWithdrawn { agent, .. }
            | CallAnswered { agent, .. }
            | CallConnected { agent, .. }
            | CallHeld { agent, .. }
            | CallResumed { agent, .. }
            | CallEnded { agent, .. }
            | WrapUpStarted { agent, .. }
            | WrapUpEnded { agent, .. }
            | TransferStarted { agent, .. }
            | TransferAnswered { agent, .. }
            | ConferenceFormed { agent, .. }
            | TransferFailed { agent, .. }
            | TransferCancelled { agent, .. }
            | TransferCompleted { agent, .. }
            | MonitorStarted { agent, .. }
            | MonitorJoined { agent, .. }
            | MonitorModeChanged { agent, .. }
            | MonitorEnded { agent, .. }
            | CallDispositionRecorded { agent, .. }
            | OutboundCallStarted { agent, .. }
            | OutboundCallDialed { agent, .. }
            | OutboundCallFailed { agent, .. } => Some(agent),
            CallEnteredQueue { .. }
            | CallAbandoned { .. }
            | CallLeftQueue { .. }
            | TransferredCallEnded { .. } => None,
        }
    }

    /// The receiving agent of a transfer the event is about, if any.
    pub fn target_agent(&self) -> Option<&AgentNumber> {
        use CallEvent::*;
        match self {
            TransferStarted { target_agent, .. }
            | TransferAnswered { target_agent, .. }
            | ConferenceFormed { target_agent, .. }
            | TransferFailed { target_agent, .. }
            | TransferCancelled { target_agent, .. }
            | TransferCompleted { target_agent, .. } => target_agent.as_ref(),
            _ => None,
        }
    }

    /// Every agent whose view the event changes.
    pub fn agents(&self) -> Vec<&AgentNumber> {
        self.agent()
            .into_iter()
            .chain(self.target_agent())
            .collect()
    }
}

/// How a queue picks among the eligible agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Ring every eligible agent; the first answer wins.
    RingAll,
    /// The agent idle the longest.
    LongestIdle,
    /// The next agent after the one offered last (by agent number), wrapping around.
    RoundRobin,
    /// The agent who answered the fewest calls (since login).
    FewestCalls,
    /// The agent with the least talk time (since login).
    LeastTalkTime,
    /// By assignment penalty, lowest first (ties: agent number).
    Linear,
    Random,
}

/// What a queue does with its calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
#[schemars(extend(
    "if" = { "required": ["disposition_required"], "properties": { "disposition_required": { "const": true } } },
    "then" = { "required": ["dispositions"], "properties": { "dispositions": { "minItems": 1 } } }
))]
pub struct QueueSettings {
    pub strategy: Strategy,
    /// Seconds an offer rings before it counts as missed.
    #[schemars(range(min = 1, max = 600))]
    pub ring_timeout_s: i64,
    /// Seconds of wrap-up after each call.
    #[schemars(range(min = 0, max = 3600))]
    pub wrap_up_s: i64,
    /// Seconds a caller may wait before leaving the queue (0 = forever).
    #[schemars(range(min = 0, max = 86_400))]
    pub max_wait_s: i64,
    /// Leave the queue at once when no agent is logged into it (else keep waiting).
    pub leave_when_no_agents: bool,
    /// Seconds an agent who rejected is not offered calls.
    #[schemars(range(min = 0, max = 3600))]
    pub reject_delay_s: i64,
    /// Pause an agent after this many consecutive missed offers (0 = never).
    #[schemars(range(min = 0, max = 100))]
    pub auto_pause_after: i64,
    /// Offer calls to agents who are on a call already.
    pub ring_in_use: bool,
    /// The answer time that counts as within service level (reporting), seconds.
    #[schemars(range(min = 1, max = 3600))]
    pub service_level_s: i64,
    /// The disposition codes an agent picks from in this queue's wrap-up (each 1-40
    /// characters, no control characters, no leading or trailing spaces, no duplicates; at
    /// most 50). Empty: no disposition asked.
    #[schemars(
        length(max = 50),
        inner(pattern(crate::domain::CODE_40)),
        extend("uniqueItems" = true),
        example = serde_json::json!(["Sale", "No sale", "Call back"])
    )]
    pub dispositions: Vec<String>,
    /// A disposition must be given before the agent becomes available again: End wrap-up
    /// (POST /api/call/wrap-up/end) is refused (409 disposition_required) and the wrap-up
    /// timer waits until one is given (then the wrap-up ends at once if its time is over).
    /// Needs at least one disposition code.
    pub disposition_required: bool,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            strategy: Strategy::LongestIdle,
            ring_timeout_s: 20,
            wrap_up_s: 10,
            max_wait_s: 0,
            leave_when_no_agents: false,
            reject_delay_s: 5,
            auto_pause_after: 0,
            ring_in_use: false,
            service_level_s: 20,
            dispositions: vec![],
            disposition_required: false,
        }
    }
}

/// The agent's call, as the portal shows and acts on it.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HangupCall {
    pub agent: AgentNumber,
}
impl Command for HangupCall {
    const SERVICE: &'static str = "call-control";
    const NAME: &'static str = "HangupCall";
    type Reply = ();
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HoldCall {
    pub agent: AgentNumber,
    pub held: bool,
}
impl Command for HoldCall {
    const SERVICE: &'static str = "call-control";
    const NAME: &'static str = "HoldCall";
    type Reply = ();
}

/// Starts a transfer of the agent's connected call. The portal resolves an agent target to
/// their device (`device`, `target_agent`) and an extension target to the agent logged in on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TransferCall {
    pub agent: AgentNumber,
    pub method: TransferMethod,
    pub target: TransferTarget,
    /// The device to ring (extension and agent targets).
    #[serde(default)]
    pub device: Option<DeviceId>,
    /// The agent logged in on `device`, credited with the call if they take it.
    #[serde(default)]
    pub target_agent: Option<AgentNumber>,
    /// Seconds the target may ring before the transfer fails as not answered.
    #[serde(default = "transfer_ring_timeout")]
    pub ring_timeout_s: i64,
}
fn transfer_ring_timeout() -> i64 {
    30
}
impl Command for TransferCall {
    const SERVICE: &'static str = "call-control";
    const NAME: &'static str = "TransferCall";
    type Reply = ();
}

/// Completes the agent's attended or live transfer.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CompleteTransfer {
    pub agent: AgentNumber,
}
impl Command for CompleteTransfer {
    const SERVICE: &'static str = "call-control";
    const NAME: &'static str = "CompleteTransfer";
    type Reply = ();
}

/// Cancels the agent's attended or live transfer: the customer is back with the agent.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CancelTransfer {
    pub agent: AgentNumber,
}
impl Command for CancelTransfer {
    const SERVICE: &'static str = "call-control";
    const NAME: &'static str = "CancelTransfer";
    type Reply = ();
}

/// Ends the agent's wrap-up early.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EndWrapUp {
    pub agent: AgentNumber,
}
impl Command for EndWrapUp {
    const SERVICE: &'static str = "queue-router";
    const NAME: &'static str = "EndWrapUp";
    type Reply = ();
}

/// The longest note an agent may write on a call in wrap-up, in characters.
pub const NOTE_MAX_CHARS: usize = 1000;

/// Records the disposition and/or note of the call the agent is wrapping up.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RecordDisposition {
    pub agent: AgentNumber,
    /// One of the queue's disposition codes.
    #[serde(default)]
    pub disposition: Option<String>,
    /// Free text, at most [`NOTE_MAX_CHARS`] characters, no control characters but line breaks.
    #[serde(default)]
    pub note: Option<String>,
}
impl Command for RecordDisposition {
    const SERVICE: &'static str = "queue-router";
    const NAME: &'static str = "RecordDisposition";
    type Reply = ();
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ConfigureQueue {
    pub queue: QueueNumber,
    pub settings: QueueSettings,
}
impl Command for ConfigureQueue {
    const SERVICE: &'static str = "queue-router";
    const NAME: &'static str = "ConfigureQueue";
    type Reply = QueueSettings;
}

/// The call an agent is on (ringing calls do not count), if any.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct GetAgentCall {
    pub agent: AgentNumber,
}
impl Command for GetAgentCall {
    const SERVICE: &'static str = "call-control";
    const NAME: &'static str = "GetAgentCall";
    type Reply = Option<String>;
}

/// The agent dials a number or an extension from the portal (see
/// [`CallEvent::OutboundCallStarted`]). The portal checks that the agent is logged in and free
/// (Idle or Paused) and fills `device` from their login. The reply is the call's id.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, PartialEq)]
pub struct DialOutbound {
    pub agent: AgentNumber,
    pub device: DeviceId,
    pub number: DialString,
    /// Seconds the number may ring (once the agent answered) before the call fails as not
    /// answered (`no_answer`); the agent's own phone rings 30 seconds at most.
    #[serde(default = "dial_ring_timeout")]
    pub ring_timeout_s: i64,
}
fn dial_ring_timeout() -> i64 {
    60
}
impl Command for DialOutbound {
    const SERVICE: &'static str = "call-control";
    const NAME: &'static str = "DialOutbound";
    type Reply = String;
}

/// A supervisor (or admin) starts monitoring an agent's connected call: the supervisor's
/// device rings, and on answer they are on the call in `mode`. The portal fills `supervisor`
/// and `supervisor_name` from the signed-in user, never from the request.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, PartialEq)]
pub struct MonitorCall {
    pub agent: AgentNumber,
    pub device: DeviceId,
    pub mode: MonitorMode,
    pub supervisor: String,
    pub supervisor_name: String,
}
impl Command for MonitorCall {
    const SERVICE: &'static str = "call-control";
    const NAME: &'static str = "MonitorCall";
    type Reply = ();
}

/// The monitoring supervisor switches between Listen, Whisper and Barge (no new call).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SetMonitorMode {
    pub agent: AgentNumber,
    pub mode: MonitorMode,
    pub supervisor: String,
}
impl Command for SetMonitorMode {
    const SERVICE: &'static str = "call-control";
    const NAME: &'static str = "SetMonitorMode";
    type Reply = ();
}

/// The monitoring supervisor leaves the agent's call.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StopMonitor {
    pub agent: AgentNumber,
    pub supervisor: String,
}
impl Command for StopMonitor {
    const SERVICE: &'static str = "call-control";
    const NAME: &'static str = "StopMonitor";
    type Reply = ();
}
