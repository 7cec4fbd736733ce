//! The agent's own actions: sign in, the two login steps, pause, queues, log out.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use bytes::Bytes;
use cc_bus::{CommandContext, CommandError};
use cc_contracts::auth::{LoginKind, SignIn, SignOut};
use cc_contracts::domain::{AgentNumber, DeviceId, QueueNumber};
use cc_contracts::session::*;
use cc_contracts::views::AgentView;
use serde::Deserialize;

use crate::error::{body, not_found, parsed, ApiError, ApiResult};
use crate::identity::{Authed, Origin, Tenant, COOKIE};
use crate::Portal;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    #[serde(default)]
    agent_number: Option<String>,
    #[serde(default)]
    username: Option<String>,
    password: String,
}

/// `POST /api/login`: agent number (or admin username) and password. Sets the session cookie.
pub async fn login(
    State(p): State<Portal>,
    Tenant(tenant): Tenant,
    origin: Origin,
    raw: Bytes,
) -> ApiResult<impl IntoResponse> {
    let b: LoginBody = body(&raw)?;
    let (kind, login) = match (b.agent_number, b.username) {
        (Some(a), None) => (LoginKind::Agent, a),
        (None, Some(u)) => (LoginKind::User, u),
        (Some(_), Some(_)) => {
            return Err(ApiError(CommandError::field(
                "invalid_field",
                "agent_number",
                "send agent_number or username, not both",
            )))
        }
        (None, None) => {
            return Err(ApiError(CommandError::field(
                "missing_field",
                "agent_number",
                "agent_number is required",
            )))
        }
    };
    let cmd = SignIn {
        kind,
        login,
        password: b.password,
        client: origin.client.to_string(),
    };
    let signed = p
        .ctx
        .bus
        .request(&CommandContext::new(&tenant, "portal"), &cmd)
        .await?;
    // Over https (through a trusted proxy) the browser must never send the cookie over http.
    let secure = origin.https;
    let cookie = format!(
        "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{}",
        signed.token,
        (signed.principal.expires_at - chrono::Utc::now())
            .num_seconds()
            .max(0),
        if secure { "; Secure" } else { "" }
    );
    Ok(([(header::SET_COOKIE, cookie)], Json(signed)))
}

/// `POST /api/signout`: ends the portal session (not the agent's login; see DELETE /api/session).
pub async fn signout(
    State(p): State<Portal>,
    origin: Origin,
    who: Authed,
) -> ApiResult<impl IntoResponse> {
    p.ctx
        .bus
        .request(
            &who.context(),
            &SignOut {
                token: who.token.clone(),
            },
        )
        .await?;
    let cookie = format!(
        "{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{}",
        if origin.https { "; Secure" } else { "" }
    );
    Ok(([(header::SET_COOKIE, cookie)], StatusCode::NO_CONTENT))
}

/// `GET /api/login-options`: the devices online, the default device, the assigned queues.
pub async fn login_options(State(p): State<Portal>, who: Authed) -> ApiResult<Json<LoginOptions>> {
    let agent = who.agent()?;
    Ok(Json(
        p.ctx
            .bus
            .request(&who.context(), &GetLoginOptions { agent })
            .await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompleteLoginBody {
    #[serde(default)]
    device: Option<String>,
    #[serde(default)]
    queues: Option<Vec<String>>,
}

/// `POST /api/session`: "Complete Login" with the chosen device and queues.
pub async fn complete_login(
    State(p): State<Portal>,
    who: Authed,
    raw: Bytes,
) -> ApiResult<Json<SessionState>> {
    let agent = who.agent()?;
    let b: CompleteLoginBody = if raw.is_empty() {
        CompleteLoginBody {
            device: None,
            queues: None,
        }
    } else {
        body(&raw)?
    };
    let device = b
        .device
        .as_deref()
        .map(|d| parsed("device", DeviceId::parse(d)))
        .transpose()?;
    let queues = b
        .queues
        .map(|qs| {
            qs.iter()
                .map(|q| parsed("queues", QueueNumber::parse(q)))
                .collect::<ApiResult<Vec<_>>>()
        })
        .transpose()?;
    Ok(Json(
        p.ctx
            .bus
            .request(
                &who.context(),
                &LoginAgent {
                    agent,
                    device,
                    queues,
                },
            )
            .await?,
    ))
}

/// `DELETE /api/session`: the agent logs out.
pub async fn logout(State(p): State<Portal>, who: Authed) -> ApiResult<Json<SessionState>> {
    let agent = who.agent()?;
    Ok(Json(
        p.ctx
            .bus
            .request(
                &who.context(),
                &LogoutAgent {
                    agent,
                    reason: LogoutReason::Agent,
                },
            )
            .await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PauseBody {
    reason: String,
}

/// `POST /api/session/pause`: pause with one of the tenant's reasons (or change the reason).
pub async fn pause(
    State(p): State<Portal>,
    who: Authed,
    raw: Bytes,
) -> ApiResult<Json<SessionState>> {
    let agent = who.agent()?;
    let b: PauseBody = body(&raw)?;
    Ok(Json(
        p.ctx
            .bus
            .request(
                &who.context(),
                &PauseAgent {
                    agent,
                    reason: b.reason,
                    auto: false,
                },
            )
            .await?,
    ))
}

/// `POST /api/session/unpause`.
pub async fn unpause(State(p): State<Portal>, who: Authed) -> ApiResult<Json<SessionState>> {
    let agent = who.agent()?;
    Ok(Json(
        p.ctx
            .bus
            .request(&who.context(), &UnpauseAgent { agent })
            .await?,
    ))
}

/// `PUT /api/session/queues/{queue}`: join an assigned queue (when allowed).
pub async fn join_queue(
    State(p): State<Portal>,
    who: Authed,
    Path(queue): Path<String>,
) -> ApiResult<Json<SessionState>> {
    let agent = who.agent()?;
    let queue = parsed("queue", QueueNumber::parse(&queue))?;
    Ok(Json(
        p.ctx
            .bus
            .request(
                &who.context(),
                &SetQueueMembership {
                    agent,
                    queue,
                    member: true,
                },
            )
            .await?,
    ))
}

/// `DELETE /api/session/queues/{queue}`: leave a queue (when allowed).
pub async fn leave_queue(
    State(p): State<Portal>,
    who: Authed,
    Path(queue): Path<String>,
) -> ApiResult<Json<SessionState>> {
    let agent = who.agent()?;
    let queue = parsed("queue", QueueNumber::parse(&queue))?;
    Ok(Json(
        p.ctx
            .bus
            .request(
                &who.context(),
                &SetQueueMembership {
                    agent,
                    queue,
                    member: false,
                },
            )
            .await?,
    ))
}

/// How long a `GET` of a view waits for the read model to take in commands already answered.
pub const READ_YOUR_WRITES: std::time::Duration = std::time::Duration::from_secs(2);

/// `GET /api/me`: the agent's view as the dashboard shows it, including the effect of every
/// command answered before the request (read-your-writes, see [`crate::views::caught_up`]).
pub async fn me(State(p): State<Portal>, who: Authed) -> ApiResult<Json<AgentView>> {
    let agent = who.agent()?;
    crate::views::caught_up(&p.ctx.pool, READ_YOUR_WRITES).await?;
    let view = crate::views::agent(&p.ctx.pool, who.tenant(), agent.as_str())
        .await?
        .ok_or_else(|| not_found(format!("no view of agent {agent} yet")))?;
    let mut view = view;
    if !p.agents_see_monitoring(who.tenant()).await {
        if let Some(c) = view.current_call.as_mut().and_then(|c| c.as_object_mut()) {
            c.remove("monitor");
        }
    }
    Ok(Json(view))
}

/// `GET /api/pause-reasons`.
pub async fn pause_reasons(
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

/// `POST /api/call/hangup`: the agent ends the call.
pub async fn hangup(State(p): State<Portal>, who: Authed) -> ApiResult<StatusCode> {
    let agent = who.agent()?;
    p.ctx
        .bus
        .request(&who.context(), &cc_contracts::call::HangupCall { agent })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DialBody {
    number: String,
    /// Seconds the number may ring once the agent answered (default 60).
    #[serde(default)]
    ring_timeout_s: Option<i64>,
}

/// `POST /api/call/dial`: an outbound call to a number or an extension. The agent's device
/// rings first; once they answer it, the number does. Only a logged-in agent who is Idle or
/// Paused may dial (no queue call is offered to them until the call ends).
pub async fn dial(
    State(p): State<Portal>,
    who: Authed,
    raw: Bytes,
) -> ApiResult<Json<serde_json::Value>> {
    use cc_contracts::views::AgentStatus;
    let agent = who.agent()?;
    let b: DialBody = body(&raw)?;
    let number = parsed("number", cc_contracts::domain::DialString::parse(&b.number))?;
    let ring_timeout_s = match b.ring_timeout_s {
        None => 60,
        Some(s) if (1..=600).contains(&s) => s,
        Some(_) => {
            return Err(ApiError(CommandError::field(
                "invalid_field",
                "ring_timeout_s",
                "ring_timeout_s must be 1 to 600 seconds",
            )))
        }
    };
    crate::views::caught_up(&p.ctx.pool, READ_YOUR_WRITES).await?;
    let view = crate::views::agent(&p.ctx.pool, who.tenant(), agent.as_str())
        .await?
        .ok_or_else(|| not_found(format!("no view of agent {agent} yet")))?;
    let device = match (&view.login_time, &view.device) {
        (Some(_), Some(d)) => parsed("device", DeviceId::parse(d))?,
        _ => {
            return Err(ApiError(CommandError::new(
                "not_logged_in",
                "Complete Login first: your device rings when you dial",
            )))
        }
    };
    let busy = match view.status {
        AgentStatus::Idle | AgentStatus::Paused => None,
        AgentStatus::WrapUp => Some("End the wrap-up before you dial"),
        AgentStatus::Ringing => Some("A call is ringing your phone: answer it or let it go first"),
        _ => Some("You are on a call: end it before you dial another"),
    };
    if let Some(message) = busy {
        return Err(ApiError(CommandError::new("on_call", message)));
    }
    let call = p
        .ctx
        .bus
        .request(
            &who.context(),
            &cc_contracts::call::DialOutbound {
                agent,
                device,
                number,
                ring_timeout_s,
            },
        )
        .await?;
    Ok(Json(serde_json::json!({ "call": call })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldBody {
    held: bool,
}

/// `POST /api/call/hold`: put the caller on hold (`{"held": true}`) or take them off it.
pub async fn hold(State(p): State<Portal>, who: Authed, raw: Bytes) -> ApiResult<StatusCode> {
    let agent = who.agent()?;
    let b: HoldBody = body(&raw)?;
    p.ctx
        .bus
        .request(
            &who.context(),
            &cc_contracts::call::HoldCall {
                agent,
                held: b.held,
            },
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/call/wrap-up/end`: ready for the next call before the wrap-up time is over.
pub async fn end_wrap_up(State(p): State<Portal>, who: Authed) -> ApiResult<StatusCode> {
    let agent = who.agent()?;
    p.ctx
        .bus
        .request(&who.context(), &cc_contracts::call::EndWrapUp { agent })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferBody {
    method: cc_contracts::call::TransferMethod,
    target: TargetBody,
    /// Seconds the target may ring before the transfer fails as not answered (default 30).
    #[serde(default)]
    ring_timeout_s: Option<i64>,
}

/// Exactly one of the four kinds of target.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetBody {
    extension: Option<String>,
    agent: Option<String>,
    queue: Option<String>,
    number: Option<String>,
}

fn target_error(code: &str, message: impl Into<String>) -> ApiError {
    ApiError(CommandError::field(code, "target", message))
}

/// `POST /api/call/transfer`: blind, attended or live transfer of the connected call to an
/// extension, an agent, a queue or an outside number. The target is checked before the call
/// is touched.
pub async fn transfer(State(p): State<Portal>, who: Authed, raw: Bytes) -> ApiResult<StatusCode> {
    use cc_contracts::call::{TransferCall, TransferTarget};
    let agent = who.agent()?;
    let b: TransferBody = body(&raw)?;
    let pool = &p.ctx.pool;
    let tenant = who.tenant();
    let (target, device, target_agent) = match (
        b.target.extension,
        b.target.agent,
        b.target.queue,
        b.target.number,
    ) {
        (Some(e), None, None, None) => {
            let device =
                DeviceId::parse(&e).map_err(|e| target_error("invalid_field", e.message))?;
            let on = crate::views::agent_on_device(pool, tenant, device.as_str()).await?;
            let on = on
                .map(|a| AgentNumber::parse(&a))
                .transpose()
                .map_err(|e| ApiError(CommandError::internal(e.message)))?;
            (TransferTarget::Extension(device.clone()), Some(device), on)
        }
        (None, Some(a), None, None) => {
            let target =
                AgentNumber::parse(&a).map_err(|e| target_error("invalid_field", e.message))?;
            if target == agent {
                return Err(target_error(
                    "own_device",
                    "you cannot transfer a call to yourself",
                ));
            }
            let view = crate::views::agent(pool, tenant, target.as_str())
                .await?
                .ok_or_else(|| {
                    target_error("unknown_agent", format!("There is no agent {target}"))
                })?;
            let device = match (&view.login_time, &view.device) {
                (Some(_), Some(d)) => {
                    DeviceId::parse(d).map_err(|e| ApiError(CommandError::internal(e.message)))?
                }
                _ => {
                    return Err(target_error(
                        "agent_not_logged_in",
                        format!("Agent {target} is not logged in"),
                    ))
                }
            };
            (
                TransferTarget::Agent(target.clone()),
                Some(device),
                Some(target),
            )
        }
        (None, None, Some(q), None) => {
            let queue =
                QueueNumber::parse(&q).map_err(|e| target_error("invalid_field", e.message))?;
            if !crate::views::queues(pool, tenant)
                .await?
                .iter()
                .any(|(n, _)| n == queue.as_str())
            {
                return Err(target_error(
                    "unknown_queue",
                    format!("There is no queue {queue}"),
                ));
            }
            (TransferTarget::Queue(queue), None, None)
        }
        (None, None, None, Some(n)) => (TransferTarget::Number(n.trim().to_string()), None, None),
        _ => {
            return Err(target_error(
                "invalid_field",
                "give exactly one of extension, agent, queue or number",
            ))
        }
    };
    let ring_timeout_s = match b.ring_timeout_s {
        None => 30,
        Some(s) if (1..=600).contains(&s) => s,
        Some(_) => {
            return Err(ApiError(CommandError::field(
                "invalid_field",
                "ring_timeout_s",
                "ring_timeout_s must be 1 to 600 seconds",
            )))
        }
    };
    let cmd = TransferCall {
        agent,
        method: b.method,
        target,
        device,
        target_agent,
        ring_timeout_s,
    };
    p.ctx.bus.request(&who.context(), &cmd).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/call/transfer/complete`: the agent drops; the customer stays with the target.
pub async fn complete_transfer(State(p): State<Portal>, who: Authed) -> ApiResult<StatusCode> {
    let agent = who.agent()?;
    p.ctx
        .bus
        .request(
            &who.context(),
            &cc_contracts::call::CompleteTransfer { agent },
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/call/transfer/cancel`: the target's leg ends; the customer is back with the agent.
pub async fn cancel_transfer(State(p): State<Portal>, who: Authed) -> ApiResult<StatusCode> {
    let agent = who.agent()?;
    p.ctx
        .bus
        .request(
            &who.context(),
            &cc_contracts::call::CancelTransfer { agent },
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(serde::Serialize)]
pub struct TransferTargets {
    extensions: Vec<serde_json::Value>,
    agents: Vec<serde_json::Value>,
    queues: Vec<serde_json::Value>,
}

/// `GET /api/transfer-targets`: the tenant's extensions (online or not, with the agent logged
/// in on each), the other agents with their status, and the queues.
pub async fn transfer_targets(
    State(p): State<Portal>,
    who: Authed,
) -> ApiResult<Json<TransferTargets>> {
    let me = who.agent()?;
    let views = crate::views::agents(&p.ctx.pool, who.tenant()).await?;
    let devices = p
        .ctx
        .bus
        .request(&who.context(), &cc_contracts::pbx::ListDevices {})
        .await?;
    let on_device = |d: &str| {
        views
            .iter()
            .find(|v| v.login_time.is_some() && v.device.as_deref() == Some(d))
            .map(|v| v.agent.clone())
    };
    let extensions = devices
        .iter()
        .map(|d| serde_json::json!({ "device": d.device, "online": d.registered, "agent": on_device(d.device.as_str()) }))
        .collect();
    let agents = views
        .iter()
        .filter(|v| v.agent != me.as_str() && v.enabled)
        .map(|v| serde_json::json!({ "agent": v.agent, "display_name": v.display_name, "status": v.status, "status_label": v.status_label, "device": v.device }))
        .collect();
    let queues = crate::views::queues(&p.ctx.pool, who.tenant())
        .await?
        .into_iter()
        .map(|(q, n)| serde_json::json!({ "queue": q, "name": n }))
        .collect();
    Ok(Json(TransferTargets {
        extensions,
        agents,
        queues,
    }))
}
