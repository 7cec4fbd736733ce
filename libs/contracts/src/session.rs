//! Agents' sessions, pause reasons and agent defaults (the agent-session service).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{AgentNumber, DeviceId, QueueNumber};
use crate::EventFamily;
use cc_core::Command;

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogoutReason {
    /// The agent logged out.
    Agent,
    /// A supervisor forced the logout.
    Supervisor,
    /// The admin disabled the agent's account.
    AccountDisabled,
}

/// Events of an agent's session. Stream: `agent-<agent number>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type")]
pub enum AgentSessionEvent {
    AgentLoggedIn {
        agent: AgentNumber,
        login_id: Uuid,
        device: DeviceId,
        queues: Vec<QueueNumber>,
    },
    AgentLoggedOut {
        agent: AgentNumber,
        login_id: Uuid,
        reason: LogoutReason,
    },
    AgentPaused {
        agent: AgentNumber,
        reason: String,
    },
    AgentPauseReasonChanged {
        agent: AgentNumber,
        from: String,
        to: String,
    },
    AgentUnpaused {
        agent: AgentNumber,
        reason: String,
    },
    AgentJoinedQueue {
        agent: AgentNumber,
        queue: QueueNumber,
    },
    AgentLeftQueue {
        agent: AgentNumber,
        queue: QueueNumber,
    },
    /// The agent's device unregistered: the agent is out of routing until it registers again.
    AgentDeviceWentOffline {
        agent: AgentNumber,
        device: DeviceId,
    },
    AgentDeviceCameOnline {
        agent: AgentNumber,
        device: DeviceId,
    },
}
impl EventFamily for AgentSessionEvent {
    const CATEGORY: &'static str = "agent";
}

impl AgentSessionEvent {
    /// The agent whose session it is.
    pub fn agent(&self) -> &AgentNumber {
        use AgentSessionEvent::*;
        match self {
            AgentLoggedIn { agent, .. }
            | AgentLoggedOut { agent, .. }
            | AgentPaused { agent, .. }
            | AgentPauseReasonChanged { agent, .. }
            | AgentUnpaused { agent, .. }
            | AgentJoinedQueue { agent, .. }
            | AgentLeftQueue { agent, .. }
            | AgentDeviceWentOffline { agent, .. }
            | AgentDeviceCameOnline { agent, .. } => agent,
        }
    }
}

/// Tenant-wide settings of the agent-session service. Streams: `settings-pause_reasons`,
/// `settings-agent_defaults`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type")]
pub enum SettingsEvent {
    PauseReasonAdded {
        name: String,
    },
    PauseReasonRenamed {
        from: String,
        to: String,
    },
    PauseReasonRetired {
        name: String,
    },
    AgentDefaultsChanged {
        may_manage_queues: bool,
        /// Agents see on their page when a supervisor is on their call (older events: off).
        #[serde(default)]
        agents_see_monitoring: bool,
    },
}
impl EventFamily for SettingsEvent {
    const CATEGORY: &'static str = "settings";
}

/// A device the agent may pick at login.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DeviceOption {
    pub device: DeviceId,
    pub online: bool,
    /// The agent logged in on it, if another agent uses it.
    pub in_use_by: Option<AgentNumber>,
}

/// A queue the agent is assigned to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AssignedQueue {
    pub queue: QueueNumber,
    pub name: String,
    pub penalty: i32,
}

/// What the second login step offers the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LoginOptions {
    pub agent: AgentNumber,
    pub default_device: DeviceId,
    /// The tenant's devices that are registered and online; `in_use_by` names another agent
    /// logged in on one (picking it is refused).
    pub devices: Vec<DeviceOption>,
    pub assigned_queues: Vec<AssignedQueue>,
    pub may_manage_queues: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct GetLoginOptions {
    pub agent: AgentNumber,
}
impl Command for GetLoginOptions {
    const SERVICE: &'static str = "agent-session";
    const NAME: &'static str = "GetLoginOptions";
    type Reply = LoginOptions;
}

/// The state of an agent's session as the command side knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SessionState {
    pub agent: AgentNumber,
    pub logged_in: bool,
    pub device: Option<DeviceId>,
    pub queues: Vec<QueueNumber>,
    pub paused: Option<String>,
    pub device_online: bool,
    pub version: i64,
}

/// "Complete Login": start the session on a device with a set of queues.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LoginAgent {
    pub agent: AgentNumber,
    /// Unset: the agent's own extension.
    #[serde(default)]
    pub device: Option<DeviceId>,
    /// Unset: every assigned queue. A subset needs "may manage own queues".
    #[serde(default)]
    pub queues: Option<Vec<QueueNumber>>,
}
impl Command for LoginAgent {
    const SERVICE: &'static str = "agent-session";
    const NAME: &'static str = "LoginAgent";
    type Reply = SessionState;
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LogoutAgent {
    pub agent: AgentNumber,
    pub reason: LogoutReason,
}
impl Command for LogoutAgent {
    const SERVICE: &'static str = "agent-session";
    const NAME: &'static str = "LogoutAgent";
    type Reply = SessionState;
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PauseAgent {
    pub agent: AgentNumber,
    pub reason: String,
    /// A pause decided by the system (auto-pause after missed calls): its reason need not be
    /// one of the tenant's pause reasons. Not settable through the portal.
    #[serde(default)]
    pub auto: bool,
}
impl Command for PauseAgent {
    const SERVICE: &'static str = "agent-session";
    const NAME: &'static str = "PauseAgent";
    type Reply = SessionState;
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct UnpauseAgent {
    pub agent: AgentNumber,
}
impl Command for UnpauseAgent {
    const SERVICE: &'static str = "agent-session";
    const NAME: &'static str = "UnpauseAgent";
    type Reply = SessionState;
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SetQueueMembership {
    pub agent: AgentNumber,
    pub queue: QueueNumber,
    /// true = join, false = leave.
    pub member: bool,
}
impl Command for SetQueueMembership {
    const SERVICE: &'static str = "agent-session";
    const NAME: &'static str = "SetQueueMembership";
    type Reply = SessionState;
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct GetSession {
    pub agent: AgentNumber,
}
impl Command for GetSession {
    const SERVICE: &'static str = "agent-session";
    const NAME: &'static str = "GetSession";
    type Reply = SessionState;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PauseReason {
    pub name: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ListPauseReasons {}
impl Command for ListPauseReasons {
    const SERVICE: &'static str = "agent-session";
    const NAME: &'static str = "ListPauseReasons";
    type Reply = Vec<PauseReason>;
}

/// Adds, renames or retires a pause reason.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ChangePauseReason {
    Add { name: String },
    Rename { from: String, to: String },
    Retire { name: String },
}
impl Command for ChangePauseReason {
    const SERVICE: &'static str = "agent-session";
    const NAME: &'static str = "ChangePauseReason";
    type Reply = Vec<PauseReason>;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AgentDefaults {
    pub may_manage_queues: bool,
    /// Agents see on their page when a supervisor listens, whispers or barges in on their call
    /// (as Amazon Connect, off by default: supervisors usually listen unannounced).
    #[serde(default)]
    pub agents_see_monitoring: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct GetAgentDefaults {}
impl Command for GetAgentDefaults {
    const SERVICE: &'static str = "agent-session";
    const NAME: &'static str = "GetAgentDefaults";
    type Reply = AgentDefaults;
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SetAgentDefaults {
    pub may_manage_queues: bool,
    /// Left as it is when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agents_see_monitoring: Option<bool>,
}
impl Command for SetAgentDefaults {
    const SERVICE: &'static str = "agent-session";
    const NAME: &'static str = "SetAgentDefaults";
    type Reply = AgentDefaults;
}
