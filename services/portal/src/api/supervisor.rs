//! The supervisor's live view of a tenant's agents, forced logout, and listening in on an
//! agent's call (Listen, Whisper, Barge).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use cc_contracts::auth::Role;
use cc_contracts::call::{MonitorCall, MonitorMode, SetMonitorMode, StopMonitor};
use cc_contracts::domain::{AgentNumber, DeviceId};
use cc_contracts::session::{LogoutAgent, LogoutReason, SessionState};
use cc_contracts::views::AgentView;

use crate::error::{body, parsed, ApiResult};
use crate::identity::Authed;
use crate::Portal;

pub const ROLES: &[Role] = &[Role::Supervisor, Role::Admin];

/// `GET /api/supervisor/agents`: every agent's view (read-your-writes, as `GET /api/me`).
pub async fn agents(State(p): State<Portal>, who: Authed) -> ApiResult<Json<Vec<AgentView>>> {
    who.require(ROLES)?;
    crate::views::caught_up(&p.ctx.pool, super::agent::READ_YOUR_WRITES).await?;
    Ok(Json(crate::views::agents(&p.ctx.pool, who.tenant()).await?))
}

/// `POST /api/supervisor/agents/{agent}/logout`: forced logout.
pub async fn force_logout(
    State(p): State<Portal>,
    who: Authed,
    Path(agent): Path<String>,
) -> ApiResult<Json<SessionState>> {
    who.require(ROLES)?;
    let agent = parsed("agent", AgentNumber::parse(&agent))?;
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
#[derive(serde::Serialize)]
pub struct QueueNow {
    queue: String,
    name: String,
    /// Callers waiting in the queue now.
    waiting: i64,
    /// Since when the longest-waiting caller waits (null when none).
    longest_waiting_since: Option<chrono::DateTime<chrono::Utc>>,
    /// The tenant's day the figures below count (its time zone), `YYYY-MM-DD`.
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
    who.require(ROLES)?;
    Ok(Json(queue_figures(&p.ctx.pool, who.tenant()).await?))
}

/// One device a supervisor may be rung on.
#[derive(serde::Serialize)]
pub struct DeviceNow {
    device: String,
    online: bool,
}

/// `GET /api/supervisor/devices`: the tenant's devices (extensions) and whether each is online,
/// for the supervisor's "Your phone" when listening in.
pub async fn devices(State(p): State<Portal>, who: Authed) -> ApiResult<Json<Vec<DeviceNow>>> {
    who.require(ROLES)?;
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

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MonitorBody {
    device: String,
    mode: MonitorMode,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ModeBody {
    mode: MonitorMode,
}

/// `POST /api/supervisor/agents/{agent}/monitor`: Listen, Whisper or Barge on the agent's
/// connected call; the supervisor's `device` rings and they are on the call once it answers.
pub async fn monitor(
    State(p): State<Portal>,
    who: Authed,
    Path(agent): Path<String>,
    raw: Bytes,
) -> ApiResult<StatusCode> {
    who.require(ROLES)?;
    let agent = parsed("agent", AgentNumber::parse(&agent))?;
    let b: MonitorBody = body(&raw)?;
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
    Ok(StatusCode::ACCEPTED)
}

/// `PATCH /api/supervisor/agents/{agent}/monitor`: switch between Listen, Whisper and Barge.
pub async fn set_monitor_mode(
    State(p): State<Portal>,
    who: Authed,
    Path(agent): Path<String>,
    raw: Bytes,
) -> ApiResult<StatusCode> {
    who.require(ROLES)?;
    let agent = parsed("agent", AgentNumber::parse(&agent))?;
    let b: ModeBody = body(&raw)?;
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
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/supervisor/agents/{agent}/monitor`: Leave (the supervisor's phone hangs up).
pub async fn stop_monitor(
    State(p): State<Portal>,
    who: Authed,
    Path(agent): Path<String>,
) -> ApiResult<StatusCode> {
    who.require(ROLES)?;
    let agent = parsed("agent", AgentNumber::parse(&agent))?;
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
    Ok(StatusCode::NO_CONTENT)
}
