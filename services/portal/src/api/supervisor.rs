//! The supervisor's live view of a tenant's agents, and forced logout.

use axum::extract::{Path, State};
use axum::Json;
use cc_contracts::auth::Role;
use cc_contracts::domain::AgentNumber;
use cc_contracts::session::{LogoutAgent, LogoutReason, SessionState};
use cc_contracts::views::AgentView;

use crate::error::{parsed, ApiResult};
use crate::identity::Authed;
use crate::Portal;

pub const ROLES: &[Role] = &[Role::Supervisor, Role::Admin];

/// `GET /api/supervisor/agents`: every agent's view.
pub async fn agents(State(p): State<Portal>, who: Authed) -> ApiResult<Json<Vec<AgentView>>> {
    who.require(ROLES)?;
    Ok(Json(crate::views::agents(&p.ctx.pool, who.tenant()).await?))
}

/// `POST /api/supervisor/agents/{agent}/logout`: forced logout.
pub async fn force_logout(State(p): State<Portal>, who: Authed, Path(agent): Path<String>) -> ApiResult<Json<SessionState>> {
    who.require(ROLES)?;
    let agent = parsed("agent", AgentNumber::parse(&agent))?;
    Ok(Json(p.ctx.bus.request(&who.context(), &LogoutAgent { agent, reason: LogoutReason::Supervisor }).await?))
}
