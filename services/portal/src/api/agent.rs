//! The agent's own actions: sign in, the two login steps, pause, queues, log out, their
//! view. The call options are in [`super::call`].

use axum::extract::State;
use axum::Json;
use cc_bus::{CommandContext, CommandError};
use cc_contracts::auth::{LoginKind, SignIn, SignOut, SignedIn};
use cc_contracts::domain::{DeviceId, QueueNumber};
use cc_contracts::session::*;
use cc_contracts::views::AgentView;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::error::{not_found, parsed, ApiError, ApiResult};
use crate::identity::{Authed, Origin, Tenant, COOKIE};
use crate::route::{
    Body, MaybeBody, NoContent, PathParams, Route, SetCookie, Tag, AGENT, ANY_ROLE,
};
use crate::Portal;

/// An agent signs in with agent_number, an admin or supervisor with username: one of the two,
/// not both (null is as absent).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend(
    "anyOf" = [
        { "required": ["agent_number"], "properties": { "agent_number": { "type": "string" } } },
        { "required": ["username"], "properties": { "username": { "type": "string" } } }
    ],
    "not" = {
        "required": ["agent_number", "username"],
        "properties": { "agent_number": { "type": "string" }, "username": { "type": "string" } }
    }
))]
pub struct LoginBody {
    #[serde(default)]
    #[schemars(pattern(r"^[0-9]{1,15}$"), example = &"1001")]
    agent_number: Option<String>,
    #[serde(default)]
    #[schemars(example = &"admin")]
    username: Option<String>,
    #[schemars(length(min = 1), example = &"the agent's password")]
    password: String,
}

/// `POST /api/login`: agent number (or admin username) and password. Sets the session cookie.
pub async fn login(
    State(p): State<Portal>,
    Tenant(tenant): Tenant,
    origin: Origin,
    Body(b): Body<LoginBody>,
) -> ApiResult<SetCookie<Json<SignedIn>>> {
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
    Ok(SetCookie(cookie, Json(signed)))
}

/// `POST /api/signout`: ends the portal session (not the agent's login; see DELETE /api/session).
pub async fn signout(
    State(p): State<Portal>,
    origin: Origin,
    who: Authed,
) -> ApiResult<SetCookie<NoContent>> {
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
    Ok(SetCookie(cookie, NoContent))
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

/// The device and queues of the session; an empty body takes the defaults.
#[derive(Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteLoginBody {
    /// The device (extension) to take calls on; unset: the agent's own extension.
    #[serde(default)]
    #[schemars(pattern(r"^[0-9]{1,15}$"), example = &"1001")]
    device: Option<String>,
    /// The queues to log into; unset: every assigned queue (a subset needs "may manage own
    /// queues").
    #[serde(default)]
    #[schemars(inner(pattern(r"^[0-9]{1,15}$")), example = serde_json::json!(["500"]))]
    queues: Option<Vec<String>>,
}

/// `POST /api/session`: "Complete Login" with the chosen device and queues.
pub async fn complete_login(
    State(p): State<Portal>,
    who: Authed,
    MaybeBody(b): MaybeBody<CompleteLoginBody>,
) -> ApiResult<Json<SessionState>> {
    let agent = who.agent()?;
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

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseBody {
    /// One of the tenant's pause reasons (GET /api/pause-reasons).
    #[schemars(example = &"Lunch")]
    reason: String,
}

/// `POST /api/session/pause`: pause with one of the tenant's reasons (or change the reason).
pub async fn pause(
    State(p): State<Portal>,
    who: Authed,
    Body(b): Body<PauseBody>,
) -> ApiResult<Json<SessionState>> {
    let agent = who.agent()?;
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

/// The queue of a path.
#[derive(Deserialize, JsonSchema)]
pub struct QueuePath {
    queue: QueueNumber,
}

/// `PUT /api/session/queues/{queue}`: join an assigned queue (when allowed).
pub async fn join_queue(
    State(p): State<Portal>,
    who: Authed,
    PathParams(QueuePath { queue }): PathParams<QueuePath>,
) -> ApiResult<Json<SessionState>> {
    let agent = who.agent()?;
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
    PathParams(QueuePath { queue }): PathParams<QueuePath>,
) -> ApiResult<Json<SessionState>> {
    let agent = who.agent()?;
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
    crate::views::caught_up(&p.ctx, who.tenant(), READ_YOUR_WRITES).await?;
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

pub(crate) fn routes() -> Vec<Route> {
    vec![
        Route::post("/api/login", login)
            .tag(Tag::Agent)
            .summary("Sign in with agent number (or admin username) and password; sets the HttpOnly session cookie and returns the token for API use")
            .refuses(&["unknown_tenant", "invalid_credentials", "account_disabled", "too_many_attempts", "unavailable"])
            .notes(&[
                (403, "The account is disabled"),
                (429, "Too many failed sign-ins: this login from this address, or (from an address it has not signed in from before) this login or this address; the message says when to try again"),
            ]),
        Route::post("/api/signout", signout)
            .tag(Tag::Agent)
            .roles(ANY_ROLE)
            .summary("End the portal session (the agent stays logged in; see DELETE /api/session)")
            .commands(&[]),
        Route::get("/api/login-options", login_options)
            .tag(Tag::Agent)
            .roles(AGENT)
            .summary("Login step 2: online devices, the default device (the agent's own extension), assigned queues, whether the agent may choose queues")
            .commands(&["unknown_agent"]),
        Route::post("/api/session", complete_login)
            .tag(Tag::Agent)
            .roles(AGENT)
            .summary("Complete Login: start the agent's session on a device with queues (defaults: own extension, every assigned queue)")
            .commands(&["unknown_agent", "account_disabled", "queue_change_not_allowed", "unknown_device", "device_offline", "queue_not_assigned", "already_logged_in", "device_in_use"]),
        Route::delete("/api/session", logout)
            .tag(Tag::Agent)
            .roles(AGENT)
            .summary("Log out (the agent's session ends)")
            .commands(&["unknown_agent", "on_call", "not_logged_in"]),
        Route::post("/api/session/pause", pause)
            .tag(Tag::Agent)
            .roles(AGENT)
            .summary("Pause with one of the tenant's pause reasons, or change the reason while paused")
            .commands(&["unknown_pause_reason", "not_logged_in", "already_paused"]),
        Route::post("/api/session/unpause", unpause)
            .tag(Tag::Agent)
            .roles(AGENT)
            .summary("Unpause")
            .commands(&["not_logged_in", "not_paused"]),
        Route::put("/api/session/queues/{queue}", join_queue)
            .tag(Tag::Agent)
            .roles(AGENT)
            .summary("Join an assigned queue (when the agent may manage their queues)")
            .commands(&["unknown_agent", "queue_change_not_allowed", "queue_not_assigned", "not_logged_in", "already_in_queue"]),
        Route::delete("/api/session/queues/{queue}", leave_queue)
            .tag(Tag::Agent)
            .roles(AGENT)
            .summary("Leave a queue (when the agent may manage their queues)")
            .commands(&["unknown_agent", "queue_change_not_allowed", "queue_not_assigned", "not_logged_in", "not_in_queue"]),
        Route::get("/api/me", me)
            .tag(Tag::Agent)
            .roles(AGENT)
            .summary("The agent's view: status, pause reason, device, login time, queues, counts, current call")
            .refuses(&["not_found"])
            .notes(&[(404, "No view of the agent yet")]),
        Route::get("/api/pause-reasons", pause_reasons)
            .tag(Tag::Agent)
            .roles(ANY_ROLE)
            .summary("The tenant's pause reasons")
            .commands(&[]),
    ]
}
