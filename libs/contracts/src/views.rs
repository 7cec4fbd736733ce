//! Read-model views, as the portal shows them and as the projection writes them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The name of the portal projection's row in `rm_checkpoints` (where it has read the store
/// to): the portal waits on it for read-your-writes.
pub const PORTAL_CHECKPOINT: &str = "portal";

/// The row the portal waits on for `tenant`'s views: with `partitions` above 1, the checkpoint
/// of the tenant's partition's projection (`portal/p3`).
pub fn portal_checkpoint(tenant: &str, partitions: u32) -> String {
    cc_core::Partition {
        index: cc_core::partition::of(tenant, partitions),
        count: partitions.max(1),
    }
    .name(PORTAL_CHECKPOINT)
}

/// The agent's status as the portal shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    LoggedOut,
    Idle,
    Paused,
    Ringing,
    /// The agent's outbound call: their phone or the number rings.
    Dialing,
    Connected,
    OnHold,
    WrapUp,
}

impl AgentStatus {
    /// The word the portal shows.
    pub fn label(self) -> &'static str {
        match self {
            AgentStatus::LoggedOut => "Logged out",
            AgentStatus::Idle => "Idle",
            AgentStatus::Paused => "Paused",
            AgentStatus::Ringing => "Ringing",
            AgentStatus::Dialing => "Dialing",
            AgentStatus::Connected => "Connected",
            AgentStatus::OnHold => "On hold",
            AgentStatus::WrapUp => "Wrap-up",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Counts {
    pub completed: i64,
    pub missed: i64,
    pub rejected: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct QueueRef {
    pub queue: String,
    pub name: String,
}

/// One agent as the portal and the supervisor view show them. Also the data of each `agent`
/// SSE event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AgentView {
    pub tenant: String,
    pub agent: String,
    pub display_name: String,
    pub enabled: bool,
    pub status: AgentStatus,
    /// The word the portal shows for the status; "Consulting" (status on_hold) while the agent
    /// talks with the target of their attended transfer and the customer waits.
    #[schemars(example = &"Idle")]
    pub status_label: String,
    pub pause_reason: Option<String>,
    pub device: Option<String>,
    pub device_online: bool,
    pub login_time: Option<DateTime<Utc>>,
    /// When the current status began.
    pub status_since: DateTime<Utc>,
    /// The queues the agent is logged into.
    pub queues: Vec<QueueRef>,
    /// The queues the agent is assigned to.
    pub assigned_queues: Vec<QueueRef>,
    pub may_manage_queues: bool,
    /// The completed, missed and rejected calls of this login (a new login starts them at 0).
    pub counts: Counts,
    /// The call the agent is on: call, phase (ringing, dialing, connected, on_hold, wrap_up),
    /// queue, queue_name, caller_number, caller_name, entered_queue_at, offered_at,
    /// answered_at, wait_ms; after the call ended_at, talk_ms, ended_by, wrap_up_until.
    /// transferred_from: the agent who transferred the call to this one, transferred_from_name
    /// their display name; for a transferred call offered_at is when the transfer started and
    /// wait_ms the wait of this offer (to the answer). received_transfer (while the transfer to
    /// this agent is not complete): method, state (ringing, consultation, conference).
    /// transfer (while the agent transfers the call): method, target, target_label, state
    /// (ringing, answered, conference), customer_held. options: the call options that apply
    /// now, from hangup, hold, resume, blind_transfer, attended_transfer, live_transfer,
    /// complete, cancel, end_wrap_up, end_consultation, leave_conference (the last two: the
    /// receiving agent leaves a transfer not complete yet, by POST /api/call/hangup; the portal
    /// shows exactly these). Ringing: ring_until, when the offer counts as missed (the queue's
    /// ring timeout; absent for a transferred call). Hold: hold_count (holds so far), hold_ms
    /// (time of the ended holds), held_since (while the customer is on hold, else null); the
    /// talk time without hold is (now or ended_at) - answered_at - hold_ms - (now -
    /// held_since), as reporting.calls.talk_ms counts it. Outbound (the agent dialled it, POST
    /// /api/call/dial): direction outbound, number (what was dialled; also caller_number),
    /// extension (true: an extension of the tenant), queue null, dialed_at, dial_state while
    /// the phase is dialing (agent_ringing: the agent's own phone rings; number_ringing: then
    /// the number), answered_at when the far end answered; options while dialing: hangup (ends
    /// the dial). An outbound call has no wrap-up: when it ends current_call is null. A
    /// supervisor listening in: monitor (shown to the agent when the tenant's agent defaults
    /// say so).
    #[schemars(extend("type" = ["object", "null"]))]
    pub current_call: Option<serde_json::Value>,
    /// Who ended the agent's last login, while logged out: the agent, a supervisor (a forced
    /// logout) or the admin disabling the account. None while logged in.
    #[serde(default)]
    pub logged_out_by: Option<crate::session::LogoutReason>,
    /// How the agent's last outbound call ended when it did not connect (the portal says why);
    /// cleared by the next dial and by a new login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dial_failure: Option<DialFailure>,
    /// Grows by one with every change of this view: the SSE event id.
    pub version: i64,
}

/// An outbound call that did not connect, as the portal tells the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DialFailure {
    pub call: String,
    /// What the agent dialled.
    pub number: String,
    pub reason: crate::call::OutboundFailure,
    /// The reason in the portal's words ("Busy", "No answer", ...).
    pub label: String,
    pub at: DateTime<Utc>,
}
