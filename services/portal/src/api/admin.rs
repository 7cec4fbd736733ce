//! The admin directory: agents, queues and assignments, pause reasons, agent defaults, users.
//! Each change is a command to the service that owns it, and an event there.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use bytes::Bytes;
use cc_contracts::auth::*;
use cc_contracts::domain::{AgentNumber, QueueNumber};
use cc_contracts::queue::*;
use cc_contracts::session::*;
use serde::Deserialize;

use crate::error::{body, parsed, ApiResult};
use crate::identity::Authed;
use crate::Portal;

const ADMIN: &[Role] = &[Role::Admin];

fn agent_path(s: &str) -> ApiResult<AgentNumber> {
    parsed("agent", AgentNumber::parse(s))
}

fn queue_path(s: &str) -> ApiResult<QueueNumber> {
    parsed("queue", QueueNumber::parse(s))
}

pub async fn list_agents(
    State(p): State<Portal>,
    who: Authed,
) -> ApiResult<Json<Vec<AgentAccount>>> {
    who.require(crate::api::supervisor::ROLES)?;
    Ok(Json(
        p.ctx.bus.request(&who.context(), &ListAgents {}).await?,
    ))
}

pub async fn create_agent(
    State(p): State<Portal>,
    who: Authed,
    raw: Bytes,
) -> ApiResult<(StatusCode, Json<AgentAccount>)> {
    who.require(ADMIN)?;
    let cmd: CreateAgent = body(&raw)?;
    Ok((
        StatusCode::CREATED,
        Json(p.ctx.bus.request(&who.context(), &cmd).await?),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentChanges {
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    may_manage_queues: Option<bool>,
}

pub async fn update_agent(
    State(p): State<Portal>,
    who: Authed,
    Path(agent): Path<String>,
    raw: Bytes,
) -> ApiResult<Json<AgentAccount>> {
    who.require(ADMIN)?;
    let agent = agent_path(&agent)?;
    let b: AgentChanges = body(&raw)?;
    let cmd = UpdateAgent {
        agent,
        display_name: b.display_name,
        may_manage_queues: b.may_manage_queues,
    };
    Ok(Json(p.ctx.bus.request(&who.context(), &cmd).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordBody {
    password: String,
}

pub async fn reset_password(
    State(p): State<Portal>,
    who: Authed,
    Path(agent): Path<String>,
    raw: Bytes,
) -> ApiResult<StatusCode> {
    who.require(ADMIN)?;
    let agent = agent_path(&agent)?;
    let b: PasswordBody = body(&raw)?;
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
    Ok(StatusCode::NO_CONTENT)
}

pub async fn disable_agent(
    State(p): State<Portal>,
    who: Authed,
    Path(agent): Path<String>,
) -> ApiResult<Json<AgentAccount>> {
    who.require(ADMIN)?;
    let agent = agent_path(&agent)?;
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
    Path(agent): Path<String>,
) -> ApiResult<Json<AgentAccount>> {
    who.require(ADMIN)?;
    let agent = agent_path(&agent)?;
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
    who.require(crate::api::supervisor::ROLES)?;
    Ok(Json(
        p.ctx.bus.request(&who.context(), &ListQueues {}).await?,
    ))
}

pub async fn create_queue(
    State(p): State<Portal>,
    who: Authed,
    raw: Bytes,
) -> ApiResult<(StatusCode, Json<QueueInfo>)> {
    who.require(ADMIN)?;
    let cmd: CreateQueue = body(&raw)?;
    Ok((
        StatusCode::CREATED,
        Json(p.ctx.bus.request(&who.context(), &cmd).await?),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignmentBody {
    #[serde(default)]
    penalty: i32,
}

pub async fn assign(
    State(p): State<Portal>,
    who: Authed,
    Path((queue, agent)): Path<(String, String)>,
    raw: Bytes,
) -> ApiResult<Json<QueueInfo>> {
    who.require(ADMIN)?;
    let (queue, agent) = (queue_path(&queue)?, agent_path(&agent)?);
    let b: AssignmentBody = if raw.is_empty() {
        AssignmentBody { penalty: 0 }
    } else {
        body(&raw)?
    };
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
    Path((queue, agent)): Path<(String, String)>,
) -> ApiResult<Json<QueueInfo>> {
    who.require(ADMIN)?;
    let (queue, agent) = (queue_path(&queue)?, agent_path(&agent)?);
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
    who.require(crate::api::supervisor::ROLES)?;
    Ok(Json(
        p.ctx
            .bus
            .request(&who.context(), &ListPauseReasons {})
            .await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameBody {
    name: String,
}

pub async fn add_pause_reason(
    State(p): State<Portal>,
    who: Authed,
    raw: Bytes,
) -> ApiResult<(StatusCode, Json<Vec<PauseReason>>)> {
    who.require(ADMIN)?;
    let b: NameBody = body(&raw)?;
    Ok((
        StatusCode::CREATED,
        Json(
            p.ctx
                .bus
                .request(&who.context(), &ChangePauseReason::Add { name: b.name })
                .await?,
        ),
    ))
}

pub async fn rename_pause_reason(
    State(p): State<Portal>,
    who: Authed,
    Path(name): Path<String>,
    raw: Bytes,
) -> ApiResult<Json<Vec<PauseReason>>> {
    who.require(ADMIN)?;
    let b: NameBody = body(&raw)?;
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
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<PauseReason>>> {
    who.require(ADMIN)?;
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
    who.require(ADMIN)?;
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
    raw: Bytes,
) -> ApiResult<Json<AgentDefaults>> {
    who.require(ADMIN)?;
    let cmd: SetAgentDefaults = body(&raw)?;
    Ok(Json(p.ctx.bus.request(&who.context(), &cmd).await?))
}

pub async fn create_user(
    State(p): State<Portal>,
    who: Authed,
    raw: Bytes,
) -> ApiResult<(StatusCode, Json<User>)> {
    who.require(ADMIN)?;
    let cmd: CreateUser = body(&raw)?;
    Ok((
        StatusCode::CREATED,
        Json(p.ctx.bus.request(&who.context(), &cmd).await?),
    ))
}

/// `PUT /api/admin/queues/{queue}/settings`: the queue's routing settings.
pub async fn configure_queue(
    State(p): State<Portal>,
    who: Authed,
    Path(queue): Path<String>,
    raw: Bytes,
) -> ApiResult<Json<cc_contracts::call::QueueSettings>> {
    who.require(ADMIN)?;
    let queue = queue_path(&queue)?;
    let settings: cc_contracts::call::QueueSettings = body(&raw)?;
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
