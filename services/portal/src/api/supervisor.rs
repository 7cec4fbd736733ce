//! The supervisor's live view of a tenant's agents, forced logout, and listening in on an
//! agent's call (Listen, Whisper, Barge).

use axum::extract::State;
use axum::Json;
use cc_contracts::call::{MonitorCall, MonitorMode, SetMonitorMode, StopMonitor};
use cc_contracts::domain::{AgentNumber, DeviceId};
use cc_contracts::session::{LogoutAgent, LogoutReason, SessionState};
use cc_contracts::views::AgentView;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::admin::AgentPath;
use crate::error::{parsed, ApiResult};
use crate::identity::Authed;
use crate::route::{Accepted, Body, NoContent, PathParams, Route, Tag, ANY_ROLE, SUPERVISORS};
use crate::Portal;

/// `GET /api/supervisor/agents`: every agent's view (read-your-writes, as `GET /api/me`).
pub async fn agents(State(p): State<Portal>, who: Authed) -> ApiResult<Json<Vec<AgentView>>> {
    crate::views::caught_up(&p.ctx, who.tenant(), super::agent::READ_YOUR_WRITES).await?;
    Ok(Json(crate::views::agents(&p.ctx.pool, who.tenant()).await?))
}

/// `POST /api/supervisor/agents/{agent}/logout`: forced logout.
pub async fn force_logout(
    State(p): State<Portal>,
    who: Authed,
    PathParams(AgentPath { agent }): PathParams<AgentPath>,
) -> ApiResult<Json<SessionState>> {
    Ok(Json(
        p.ctx
            .bus
            .request(
                &who.context(),
                &LogoutAgent {
                    agent,
                    reason: LogoutReason::Supervisor,
                },
            )
            .await?,
    ))
}

/// `GET /api/whoami`: the signed-in principal (agent, supervisor or admin).
pub async fn whoami(who: Authed) -> Json<cc_contracts::auth::Principal> {
    Json(who.principal)
}

/// One queue as the supervisor view shows it: now, and today's figures.
#[derive(Serialize, JsonSchema)]
pub struct QueueNow {
    queue: String,
    name: String,
    /// Callers waiting in the queue now.
    waiting: i64,
    /// Since when the longest-waiting caller waits (null when none).
    longest_waiting_since: Option<chrono::DateTime<chrono::Utc>>,
    /// The tenant's day the figures below count (its time zone), `YYYY-MM-DD`.
    #[schemars(extend("format" = "date"))]
    day: String,
    /// The queue's service-level threshold, seconds.
    service_level_s: i64,
    /// Callers who entered the queue today (each call once per queue).
    offered: i64,
    answered: i64,
    abandoned: i64,
    /// Answered within the threshold over the waits that ended, less those abandoned within
    /// 5 s, in percent (one decimal); null before any wait ended today.
    service_level_pct: Option<f64>,
    /// The average wait of today's waits that ended; null before any.
    avg_wait_ms: Option<i64>,
}

/// Each queue's callers waiting now and today's figures (from the reporting model, a moment
/// behind the events). What `GET /api/supervisor/queues` answers and the supervisors' stream
/// pushes (`event: queues`).
pub async fn queue_figures(pool: &sqlx::PgPool, tenant: &str) -> ApiResult<Vec<QueueNow>> {
    type Row = (
        String,
        String,
        i64,
        Option<chrono::DateTime<chrono::Utc>>,
        String,
        i64,
        i64,
        i64,
        i64,
        Option<f64>,
        Option<i64>,
    );
    let rows: Vec<Row> = sqlx::query_as(include_str!("../../sql/queues_today.sql"))
        .bind(tenant)
        .fetch_all(pool)
        .await
        .map_err(|e| {
            crate::error::ApiError(cc_bus::CommandError::new(
                "unavailable",
                format!("queue figures cannot be read now: {e}"),
            ))
        })?;
    Ok(rows
        .into_iter()
        .map(
            |(
                queue,
                name,
                waiting,
                longest_waiting_since,
                day,
                service_level_s,
                offered,
                answered,
                abandoned,
                service_level_pct,
                avg_wait_ms,
            )| QueueNow {
                queue,
                name,
                waiting,
                longest_waiting_since,
                day,
                service_level_s,
                offered,
                answered,
                abandoned,
                service_level_pct,
                avg_wait_ms,
            },
        )
        .collect())
}

/// `GET /api/supervisor/queues`: each queue's waiting callers, the longest wait, and today's
/// service level, answered, abandoned and average wait.
pub async fn queues(State(p): State<Portal>, who: Authed) -> ApiResult<Json<Vec<QueueNow>>> {
    Ok(Json(queue_figures(&p.ctx.pool, who.tenant()).await?))
}

/// One device a supervisor may be rung on.
#[derive(Serialize, JsonSchema)]
pub struct DeviceNow {
    #[schemars(example = &"1005")]
    device: String,
    online: bool,
}

/// `GET /api/supervisor/devices`: the tenant's devices (extensions) and whether each is online,
/// for the supervisor's "Your phone" when listening in.
pub async fn devices(State(p): State<Portal>, who: Authed) -> ApiResult<Json<Vec<DeviceNow>>> {
    let ctx = cc_bus::CommandContext::new(who.tenant(), "system:portal");
    let mut list = p
        .ctx
        .bus
        .request(&ctx, &cc_contracts::pbx::ListDevices {})
        .await?;
    list.sort_by(|a, b| a.device.cmp(&b.device));
    Ok(Json(
        list.into_iter()
            .map(|d| DeviceNow {
                device: d.device.to_string(),
                online: d.registered,
            })
            .collect(),
    ))
}

/// The agent whose call is monitored.
#[derive(Deserialize, JsonSchema)]
pub struct MonitoredAgent {
    /// The agent whose call is monitored.
    agent: AgentNumber,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MonitorBody {
    /// The supervisor's extension (online).
    #[schemars(pattern(r"^[0-9]{1,15}$"), example = &"1005")]
    device: String,
    mode: MonitorMode,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModeBody {
    mode: MonitorMode,
}

/// `POST /api/supervisor/agents/{agent}/monitor`: Listen, Whisper or Barge on the agent's
/// connected call; the supervisor's `device` rings and they are on the call once it answers.
pub async fn monitor(
    State(p): State<Portal>,
    who: Authed,
    PathParams(MonitoredAgent { agent }): PathParams<MonitoredAgent>,
    Body(b): Body<MonitorBody>,
) -> ApiResult<Accepted> {
    let device = parsed("device", DeviceId::parse(&b.device))?;
    p.ctx
        .bus
        .request(
            &who.context(),
            &MonitorCall {
                agent,
                device,
                mode: b.mode,
                supervisor: who.principal.principal.clone(),
                supervisor_name: who.principal.display_name.clone(),
            },
        )
        .await?;
    Ok(Accepted)
}

/// `PATCH /api/supervisor/agents/{agent}/monitor`: switch between Listen, Whisper and Barge.
pub async fn set_monitor_mode(
    State(p): State<Portal>,
    who: Authed,
    PathParams(MonitoredAgent { agent }): PathParams<MonitoredAgent>,
    Body(b): Body<ModeBody>,
) -> ApiResult<NoContent> {
    p.ctx
        .bus
        .request(
            &who.context(),
            &SetMonitorMode {
                agent,
                mode: b.mode,
                supervisor: who.principal.principal.clone(),
            },
        )
        .await?;
    Ok(NoContent)
}

/// `DELETE /api/supervisor/agents/{agent}/monitor`: Leave (the supervisor's phone hangs up).
pub async fn stop_monitor(
    State(p): State<Portal>,
    who: Authed,
    PathParams(MonitoredAgent { agent }): PathParams<MonitoredAgent>,
) -> ApiResult<NoContent> {
    p.ctx
        .bus
        .request(
            &who.context(),
            &StopMonitor {
                agent,
                supervisor: who.principal.principal.clone(),
            },
        )
        .await?;
    Ok(NoContent)
}

pub(crate) fn routes() -> Vec<Route> {
    vec![
        Route::get("/api/supervisor/agents", agents)
            .tag(Tag::Supervisor)
            .roles(SUPERVISORS)
            .summary("Every agent of the tenant, as the supervisor view shows them"),
        Route::post("/api/supervisor/agents/{agent}/logout", force_logout)
            .tag(Tag::Supervisor)
            .roles(SUPERVISORS)
            .summary("Force an agent's logout")
            .commands(&["unknown_agent", "on_call", "not_logged_in"]),
        Route::get("/api/whoami", whoami)
            .tag(Tag::Auth)
            .roles(ANY_ROLE)
            .summary("Who is signed in")
            .description("The signed-in principal: tenant, principal (agent number or username), role, display_name, session_id, expires_at. Any role."),
        Route::get("/api/supervisor/queues", queues)
            .tag(Tag::Supervisor)
            .roles(SUPERVISORS)
            .summary("Queues now and today")
            .description("Each queue with its waiting callers and since when the longest-waiting one waits, and today's figures: service level, answered, abandoned and average wait. Today is the tenant's day in its time zone (reporting.tenants.time_zone; `day` names it), from midnight. Counted as reporting.queue_intervals counts: a call once per queue (its first wait there today); service_level_pct = answered within service_level_s over the waits that ended less those abandoned within 5 s; avg_wait_ms over the waits that ended (answered, abandoned, left the queue). From the reporting model, a moment behind the events. The supervisors' stream (GET /api/supervisor/events) pushes the same array as `event: queues` whenever it changes. Supervisors and admins.")
            .refuses(&["unavailable"])
            .notes(&[(503, "The reporting tables cannot be read now")]),
        Route::get("/api/supervisor/devices", devices)
            .tag(Tag::Supervisor)
            .roles(SUPERVISORS)
            .summary("The tenant's devices, for the supervisor's phone")
            .refuses(&["unavailable"])
            .notes(&[(503, "The PBX does not answer now")]),
        Route::post("/api/supervisor/agents/{agent}/monitor", monitor)
            .tag(Tag::Supervisor)
            .roles(SUPERVISORS)
            .summary("Listen, whisper or barge in on an agent's connected call")
            .description("The supervisor's device rings; once it answers the supervisor hears the agent and the customer and is heard as the mode says. Every start, switch and stop is a call event (MonitorStarted, MonitorJoined, MonitorModeChanged, MonitorEnded) and a `monitor` row in reporting.call_segments. The monitoring ends when the agent's part of the call ends. monitor_in_progress: another supervisor is on the call; own_device: the agent's own device.")
            .commands(&["no_call", "not_connected", "monitor_in_progress", "unknown_extension", "device_offline", "own_device"])
            .notes(&[
                (202, "The supervisor's device rings"),
                (404, "No such extension"),
                (422, "The device is offline or the agent's own"),
            ]),
        Route::patch("/api/supervisor/agents/{agent}/monitor", set_monitor_mode)
            .tag(Tag::Supervisor)
            .roles(SUPERVISORS)
            .summary("Switch between listen, whisper and barge")
            .description("Only the supervisor on the call may switch (forbidden otherwise).")
            .commands(&["no_call", "no_monitor"])
            .notes(&[(204, "Switched (or already in that mode)")]),
        Route::delete("/api/supervisor/agents/{agent}/monitor", stop_monitor)
            .tag(Tag::Supervisor)
            .roles(SUPERVISORS)
            .summary("Leave the agent's call")
            .description("The supervisor's phone is hung up (MonitorEnded, reason left). Only the supervisor on the call may leave it this way (forbidden otherwise).")
            .commands(&["no_call", "no_monitor"])
            .notes(&[(204, "Left")]),
    ]
}
