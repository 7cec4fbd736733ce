//! The admin directory: agents, queues and assignments, pause reasons, agent defaults, users.
//! Each change is a command to the service that owns it, and an event there.

use axum::extract::State;
use axum::Json;
use cc_contracts::auth::*;
use cc_contracts::call::QueueSettings;
use cc_contracts::domain::{AgentNumber, QueueNumber};
use cc_contracts::queue::*;
use cc_contracts::session::*;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::error::ApiResult;
use crate::identity::Authed;
use crate::route::{
    Body, Created, MaybeBody, NoContent, PathParams, Route, Tag, ADMIN, SUPERVISORS,
};
use crate::Portal;

/// The agent of a path.
#[derive(Deserialize, JsonSchema)]
pub struct AgentPath {
    pub agent: AgentNumber,
}

/// The queue of a path.
#[derive(Deserialize, JsonSchema)]
pub struct QueuePath {
    queue: QueueNumber,
}

/// A queue and an agent of a path.
#[derive(Deserialize, JsonSchema)]
pub struct AssignmentPath {
    queue: QueueNumber,
    agent: AgentNumber,
}

/// A pause reason of a path.
#[derive(Deserialize, JsonSchema)]
pub struct ReasonPath {
    /// The pause reason's name as listed.
    name: String,
}

pub async fn list_agents(
    State(p): State<Portal>,
    who: Authed,
) -> ApiResult<Json<Vec<AgentAccount>>> {
    Ok(Json(
        p.ctx.bus.request(&who.context(), &ListAgents {}).await?,
    ))
}

pub async fn create_agent(
    State(p): State<Portal>,
    who: Authed,
    Body(cmd): Body<CreateAgent>,
) -> ApiResult<Created<AgentAccount>> {
    Ok(Created(p.ctx.bus.request(&who.context(), &cmd).await?))
}

/// What to change (a field left out stays as it is).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentChanges {
    /// 1 to 80 characters (trimmed), no control characters.
    #[serde(default)]
    #[schemars(pattern(cc_contracts::domain::NAME_80))]
    display_name: Option<String>,
    /// The agent may choose their queues at login and join or leave them.
    #[serde(default)]
    may_manage_queues: Option<bool>,
}

pub async fn update_agent(
    State(p): State<Portal>,
    who: Authed,
    PathParams(AgentPath { agent }): PathParams<AgentPath>,
    Body(b): Body<AgentChanges>,
) -> ApiResult<Json<AgentAccount>> {
    let cmd = UpdateAgent {
        agent,
        display_name: b.display_name,
        may_manage_queues: b.may_manage_queues,
    };
    Ok(Json(p.ctx.bus.request(&who.context(), &cmd).await?))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordBody {
    /// The new password: 6 to 256 characters.
    #[schemars(length(min = 6, max = 256))]
    password: String,
}

pub async fn reset_password(
    State(p): State<Portal>,
    who: Authed,
    PathParams(AgentPath { agent }): PathParams<AgentPath>,
    Body(b): Body<PasswordBody>,
) -> ApiResult<NoContent> {
    p.ctx
        .bus
        .request(
            &who.context(),
            &SetAgentPassword {
                agent,
                password: b.password,
            },
        )
        .await?;
    Ok(NoContent)
}

pub async fn disable_agent(
    State(p): State<Portal>,
    who: Authed,
    PathParams(AgentPath { agent }): PathParams<AgentPath>,
) -> ApiResult<Json<AgentAccount>> {
    Ok(Json(
        p.ctx
            .bus
            .request(
                &who.context(),
                &SetAgentEnabled {
                    agent,
                    enabled: false,
                },
            )
            .await?,
    ))
}

pub async fn enable_agent(
    State(p): State<Portal>,
    who: Authed,
    PathParams(AgentPath { agent }): PathParams<AgentPath>,
) -> ApiResult<Json<AgentAccount>> {
    Ok(Json(
        p.ctx
            .bus
            .request(
                &who.context(),
                &SetAgentEnabled {
                    agent,
                    enabled: true,
                },
            )
            .await?,
    ))
}

pub async fn list_queues(State(p): State<Portal>, who: Authed) -> ApiResult<Json<Vec<QueueInfo>>> {
    Ok(Json(
        p.ctx.bus.request(&who.context(), &ListQueues {}).await?,
    ))
}

pub async fn create_queue(
    State(p): State<Portal>,
    who: Authed,
    Body(cmd): Body<CreateQueue>,
) -> ApiResult<Created<QueueInfo>> {
    Ok(Created(p.ctx.bus.request(&who.context(), &cmd).await?))
}

/// The assignment; an empty body is penalty 0.
#[derive(Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignmentBody {
    /// Lower is asked first (default 0).
    #[serde(default)]
    #[schemars(range(min = 0, max = 1000))]
    penalty: i32,
}

pub async fn assign(
    State(p): State<Portal>,
    who: Authed,
    PathParams(AssignmentPath { queue, agent }): PathParams<AssignmentPath>,
    MaybeBody(b): MaybeBody<AssignmentBody>,
) -> ApiResult<Json<QueueInfo>> {
    Ok(Json(
        p.ctx
            .bus
            .request(
                &who.context(),
                &AssignAgent {
                    queue,
                    agent,
                    penalty: b.penalty,
                },
            )
            .await?,
    ))
}

pub async fn unassign(
    State(p): State<Portal>,
    who: Authed,
    PathParams(AssignmentPath { queue, agent }): PathParams<AssignmentPath>,
) -> ApiResult<Json<QueueInfo>> {
    Ok(Json(
        p.ctx
            .bus
            .request(&who.context(), &UnassignAgent { queue, agent })
            .await?,
    ))
}

pub async fn list_pause_reasons(
    State(p): State<Portal>,
    who: Authed,
) -> ApiResult<Json<Vec<PauseReason>>> {
    Ok(Json(
        p.ctx
            .bus
            .request(&who.context(), &ListPauseReasons {})
            .await?,
    ))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NameBody {
    /// The pause reason's name: 1 to 40 characters (trimmed), no control characters.
    #[schemars(pattern(cc_contracts::domain::NAME_40), example = &"Training")]
    name: String,
}

pub async fn add_pause_reason(
    State(p): State<Portal>,
    who: Authed,
    Body(b): Body<NameBody>,
) -> ApiResult<Created<Vec<PauseReason>>> {
    Ok(Created(
        p.ctx
            .bus
            .request(&who.context(), &ChangePauseReason::Add { name: b.name })
            .await?,
    ))
}

pub async fn rename_pause_reason(
    State(p): State<Portal>,
    who: Authed,
    PathParams(ReasonPath { name }): PathParams<ReasonPath>,
    Body(b): Body<NameBody>,
) -> ApiResult<Json<Vec<PauseReason>>> {
    Ok(Json(
        p.ctx
            .bus
            .request(
                &who.context(),
                &ChangePauseReason::Rename {
                    from: name,
                    to: b.name,
                },
            )
            .await?,
    ))
}

pub async fn retire_pause_reason(
    State(p): State<Portal>,
    who: Authed,
    PathParams(ReasonPath { name }): PathParams<ReasonPath>,
) -> ApiResult<Json<Vec<PauseReason>>> {
    Ok(Json(
        p.ctx
            .bus
            .request(&who.context(), &ChangePauseReason::Retire { name })
            .await?,
    ))
}

pub async fn get_agent_defaults(
    State(p): State<Portal>,
    who: Authed,
) -> ApiResult<Json<AgentDefaults>> {
    Ok(Json(
        p.ctx
            .bus
            .request(&who.context(), &GetAgentDefaults {})
            .await?,
    ))
}

pub async fn set_agent_defaults(
    State(p): State<Portal>,
    who: Authed,
    Body(cmd): Body<SetAgentDefaults>,
) -> ApiResult<Json<AgentDefaults>> {
    Ok(Json(p.ctx.bus.request(&who.context(), &cmd).await?))
}

pub async fn create_user(
    State(p): State<Portal>,
    who: Authed,
    Body(cmd): Body<CreateUser>,
) -> ApiResult<Created<User>> {
    Ok(Created(p.ctx.bus.request(&who.context(), &cmd).await?))
}

/// `PUT /api/admin/queues/{queue}/settings`: the queue's routing settings.
pub async fn configure_queue(
    State(p): State<Portal>,
    who: Authed,
    PathParams(QueuePath { queue }): PathParams<QueuePath>,
    Body(settings): Body<QueueSettings>,
) -> ApiResult<Json<QueueSettings>> {
    Ok(Json(
        p.ctx
            .bus
            .request(
                &who.context(),
                &cc_contracts::call::ConfigureQueue { queue, settings },
            )
            .await?,
    ))
}

pub(crate) fn routes() -> Vec<Route> {
    vec![
        Route::get("/api/admin/agents", list_agents)
            .tag(Tag::Admin)
            .roles(SUPERVISORS)
            .summary("List agents")
            .commands(&[]),
        Route::post("/api/admin/agents", create_agent)
            .tag(Tag::Admin)
            .roles(ADMIN)
            .summary("Create an agent")
            .commands(&["agent_exists"]),
        Route::patch("/api/admin/agents/{agent}", update_agent)
            .tag(Tag::Admin)
            .roles(ADMIN)
            .summary("Update an agent's name or the 'may manage own queues' setting")
            .commands(&["unknown_agent"]),
        Route::post("/api/admin/agents/{agent}/password", reset_password)
            .tag(Tag::Admin)
            .roles(ADMIN)
            .summary("Reset an agent's password")
            .commands(&["unknown_agent"]),
        Route::post("/api/admin/agents/{agent}/disable", disable_agent)
            .tag(Tag::Admin)
            .roles(ADMIN)
            .summary("Disable an agent: ends their portal sessions and logs them out (out of routing)")
            .commands(&["unknown_agent"]),
        Route::post("/api/admin/agents/{agent}/enable", enable_agent)
            .tag(Tag::Admin)
            .roles(ADMIN)
            .summary("Enable an agent")
            .commands(&["unknown_agent"]),
        Route::get("/api/admin/queues", list_queues)
            .tag(Tag::Admin)
            .roles(SUPERVISORS)
            .summary("List queues with their members and settings")
            .commands(&[]),
        Route::post("/api/admin/queues", create_queue)
            .tag(Tag::Admin)
            .roles(ADMIN)
            .summary("Create a queue")
            .commands(&["queue_exists"]),
        Route::put("/api/admin/queues/{queue}/agents/{agent}", assign)
            .tag(Tag::Admin)
            .roles(ADMIN)
            .summary("Assign an agent to a queue with a penalty (lower = asked first)")
            .commands(&["unknown_agent", "unknown_queue"]),
        Route::delete("/api/admin/queues/{queue}/agents/{agent}", unassign)
            .tag(Tag::Admin)
            .roles(ADMIN)
            .summary("Unassign an agent from a queue")
            .commands(&["unknown_queue", "not_assigned"]),
        Route::put("/api/admin/queues/{queue}/settings", configure_queue)
            .tag(Tag::Admin)
            .roles(ADMIN)
            .summary("Set a queue's routing settings (unset fields take their defaults)")
            .commands(&["unknown_queue"]),
        Route::get("/api/admin/pause-reasons", list_pause_reasons)
            .tag(Tag::Admin)
            .roles(SUPERVISORS)
            .summary("List pause reasons")
            .commands(&[]),
        Route::post("/api/admin/pause-reasons", add_pause_reason)
            .tag(Tag::Admin)
            .roles(ADMIN)
            .summary("Add a pause reason")
            .commands(&["pause_reason_exists"]),
        Route::patch("/api/admin/pause-reasons/{name}", rename_pause_reason)
            .tag(Tag::Admin)
            .roles(ADMIN)
            .summary("Rename a pause reason")
            .commands(&["unknown_pause_reason", "pause_reason_exists"]),
        Route::delete("/api/admin/pause-reasons/{name}", retire_pause_reason)
            .tag(Tag::Admin)
            .roles(ADMIN)
            .summary("Retire a pause reason (agents paused with it stay paused)")
            .commands(&["unknown_pause_reason"]),
        Route::get("/api/admin/agent-defaults", get_agent_defaults)
            .tag(Tag::Admin)
            .roles(ADMIN)
            .summary("Agent defaults")
            .commands(&[]),
        Route::put("/api/admin/agent-defaults", set_agent_defaults)
            .tag(Tag::Admin)
            .roles(ADMIN)
            .summary("Set agent defaults (the 'may manage own queues' default for new agents; whether agents see a supervisor on their call)")
            .commands(&[]),
        Route::post("/api/admin/users", create_user)
            .tag(Tag::Admin)
            .roles(ADMIN)
            .summary("Create an admin or supervisor account")
            .commands(&["user_exists"]),
    ]
}
