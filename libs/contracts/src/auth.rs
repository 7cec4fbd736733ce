//! Accounts, credentials and portal sessions (the auth service). Secrets never enter events:
//! password hashes and session tokens live only in the auth service's tables.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::AgentNumber;
use crate::EventFamily;
use cc_core::Command;

/// What a signed-in principal may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Agent,
    Supervisor,
    Admin,
}

/// Events of an agent's account. Stream: `agent_account-<agent number>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type")]
pub enum AgentAccountEvent {
    AgentAccountCreated {
        agent: AgentNumber,
        display_name: String,
        may_manage_queues: bool,
    },
    AgentAccountUpdated {
        agent: AgentNumber,
        display_name: String,
        may_manage_queues: bool,
    },
    AgentPasswordChanged {
        agent: AgentNumber,
    },
    AgentAccountDisabled {
        agent: AgentNumber,
    },
    AgentAccountEnabled {
        agent: AgentNumber,
    },
}
impl EventFamily for AgentAccountEvent {
    const CATEGORY: &'static str = "agent_account";
}

/// Events of an admin or supervisor account. Stream: `user-<username>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type")]
pub enum UserEvent {
    UserCreated {
        username: String,
        display_name: String,
        role: Role,
    },
}
impl EventFamily for UserEvent {
    const CATEGORY: &'static str = "user";
}

/// Events of a tenant. Stream: `tenant-<slug>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type")]
pub enum TenantEvent {
    TenantCreated {
        tenant: String,
        name: String,
        demo: bool,
        /// The IANA time zone of the tenant's day boundaries in reports (older events: UTC).
        #[serde(default = "utc")]
        time_zone: String,
    },
}

fn utc() -> String {
    "UTC".into()
}
impl EventFamily for TenantEvent {
    const CATEGORY: &'static str = "tenant";
}

/// Events of portal sign-ins. Stream: `portal_session-<session id>`. No token inside.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type")]
pub enum PortalSessionEvent {
    SignedIn {
        session_id: Uuid,
        principal: String,
        role: Role,
        expires_at: DateTime<Utc>,
    },
    SignedOut {
        session_id: Uuid,
        principal: String,
        reason: String,
    },
}
impl EventFamily for PortalSessionEvent {
    const CATEGORY: &'static str = "portal_session";
}

/// An agent account as other services see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AgentAccount {
    pub agent: AgentNumber,
    pub display_name: String,
    pub may_manage_queues: bool,
    pub enabled: bool,
}

/// Who a session token belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Principal {
    pub tenant: String,
    pub session_id: Uuid,
    /// The agent number for agents, the username for admins and supervisors.
    pub principal: String,
    pub role: Role,
    pub display_name: String,
    pub expires_at: DateTime<Utc>,
}

/// Whether a sign-in is for an agent (agent number) or an admin/supervisor (username).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LoginKind {
    Agent,
    User,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SignIn {
    pub kind: LoginKind,
    pub login: String,
    pub password: String,
    /// The client's address, for throttling.
    pub client: String,
}
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SignedIn {
    pub token: String,
    pub principal: Principal,
}
impl Command for SignIn {
    const SERVICE: &'static str = "auth";
    const NAME: &'static str = "SignIn";
    type Reply = SignedIn;
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Authenticate {
    pub token: String,
}
impl Command for Authenticate {
    const SERVICE: &'static str = "auth";
    const NAME: &'static str = "Authenticate";
    type Reply = Principal;
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SignOut {
    pub token: String,
}
impl Command for SignOut {
    const SERVICE: &'static str = "auth";
    const NAME: &'static str = "SignOut";
    type Reply = ();
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CreateAgent {
    #[schemars(example = &"1005")]
    pub agent: AgentNumber,
    /// 1 to 80 characters (trimmed), no control characters.
    #[schemars(pattern(crate::domain::NAME_80), example = &"Eve Example")]
    pub display_name: String,
    /// 6 to 256 characters.
    #[schemars(length(min = 6, max = 256), example = &"a-long-secret")]
    pub password: String,
    /// Unset: the tenant's agent default.
    #[serde(default)]
    pub may_manage_queues: Option<bool>,
}
impl Command for CreateAgent {
    const SERVICE: &'static str = "auth";
    const NAME: &'static str = "CreateAgent";
    type Reply = AgentAccount;
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct UpdateAgent {
    pub agent: AgentNumber,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub may_manage_queues: Option<bool>,
}
impl Command for UpdateAgent {
    const SERVICE: &'static str = "auth";
    const NAME: &'static str = "UpdateAgent";
    type Reply = AgentAccount;
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SetAgentPassword {
    pub agent: AgentNumber,
    pub password: String,
}
impl Command for SetAgentPassword {
    const SERVICE: &'static str = "auth";
    const NAME: &'static str = "SetAgentPassword";
    type Reply = ();
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SetAgentEnabled {
    pub agent: AgentNumber,
    pub enabled: bool,
}
impl Command for SetAgentEnabled {
    const SERVICE: &'static str = "auth";
    const NAME: &'static str = "SetAgentEnabled";
    type Reply = AgentAccount;
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct GetAgent {
    pub agent: AgentNumber,
}
impl Command for GetAgent {
    const SERVICE: &'static str = "auth";
    const NAME: &'static str = "GetAgent";
    type Reply = AgentAccount;
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ListAgents {}
impl Command for ListAgents {
    const SERVICE: &'static str = "auth";
    const NAME: &'static str = "ListAgents";
    type Reply = Vec<AgentAccount>;
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CreateUser {
    /// 1 to 40 of a-z, 0-9, '-' and '_' (trimmed; capitals are taken as small letters).
    #[schemars(
        pattern(r"^[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[A-Za-z0-9_-]{1,40}[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"),
        example = &"sam"
    )]
    pub username: String,
    /// 1 to 80 characters (trimmed), no control characters.
    #[schemars(pattern(crate::domain::NAME_80), example = &"Sam Supervisor")]
    pub display_name: String,
    /// 6 to 256 characters.
    #[schemars(length(min = 6, max = 256))]
    pub password: String,
    /// supervisor or admin (an agent is created as an agent, with its number).
    #[schemars(extend("enum" = ["supervisor", "admin"]))]
    pub role: Role,
}
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct User {
    pub username: String,
    pub display_name: String,
    pub role: Role,
}
impl Command for CreateUser {
    const SERVICE: &'static str = "auth";
    const NAME: &'static str = "CreateUser";
    type Reply = User;
}

/// Creates a tenant (operator command and demo mode). Idempotent for the same slug.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CreateTenant {
    pub name: String,
    pub demo: bool,
    /// An IANA time zone name, e.g. `Europe/Berlin` (default UTC).
    #[serde(default = "utc")]
    pub time_zone: String,
}
impl Command for CreateTenant {
    const SERVICE: &'static str = "auth";
    const NAME: &'static str = "CreateTenant";
    type Reply = bool;
}
