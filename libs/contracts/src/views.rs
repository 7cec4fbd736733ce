//! Read-model views, as the portal shows them and as the projection writes them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The name of the portal projection's row in `rm_checkpoints` (where it has read the store
/// to): the portal waits on it for read-your-writes.
pub const PORTAL_CHECKPOINT: &str = "portal";

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

/// One agent as the portal and the supervisor view show them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AgentView {
    pub tenant: String,
    pub agent: String,
    pub display_name: String,
    pub enabled: bool,
    pub status: AgentStatus,
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
    /// The current call (from the calls issue on); empty until then.
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
