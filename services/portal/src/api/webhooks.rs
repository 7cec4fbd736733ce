//! The tenant's webhook subscriptions (admins only): create one (its secret is in the reply,
//! once), list them, remove one, see its deliveries, send a test event, redeliver a time range,
//! resume a suspended one. The `webhooks` service owns them.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use bytes::Bytes;
use cc_contracts::auth::Role;
use cc_contracts::webhooks::*;
use uuid::Uuid;

use crate::error::{body, ApiError, ApiResult};
use crate::identity::Authed;
use crate::Portal;

const ADMIN: &[Role] = &[Role::Admin];

fn webhook_id(id: &str) -> ApiResult<Uuid> {
    id.parse().map_err(|_| {
        ApiError(cc_bus::CommandError::field(
            "invalid_field",
            "id",
            format!("{id:?} is no webhook id"),
        ))
    })
}

/// `GET /api/admin/webhooks`.
pub async fn list(State(p): State<Portal>, who: Authed) -> ApiResult<Json<Vec<Webhook>>> {
    who.require(ADMIN)?;
    Ok(Json(
        p.ctx.bus.request(&who.context(), &ListWebhooks {}).await?,
    ))
}

/// `POST /api/admin/webhooks`: 201 with the subscription and its secret (shown once).
pub async fn create(
    State(p): State<Portal>,
    who: Authed,
    raw: Bytes,
) -> ApiResult<(StatusCode, Json<CreatedWebhook>)> {
    who.require(ADMIN)?;
    let cmd: CreateWebhook = body(&raw)?;
    Ok((
        StatusCode::CREATED,
        Json(p.ctx.bus.request(&who.context(), &cmd).await?),
    ))
}

/// `DELETE /api/admin/webhooks/{id}`.
pub async fn delete(
    State(p): State<Portal>,
    who: Authed,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    who.require(ADMIN)?;
    let id = webhook_id(&id)?;
    p.ctx
        .bus
        .request(&who.context(), &DeleteWebhook { id })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/admin/webhooks/{id}/test`: one test event now; how it went.
pub async fn test(
    State(p): State<Portal>,
    who: Authed,
    Path(id): Path<String>,
) -> ApiResult<Json<Delivery>> {
    who.require(ADMIN)?;
    let id = webhook_id(&id)?;
    Ok(Json(
        p.ctx
            .bus
            .request(&who.context(), &TestWebhook { id })
            .await?,
    ))
}

/// `GET /api/admin/webhooks/{id}/deliveries`: the newest attempts, newest first.
pub async fn deliveries(
    State(p): State<Portal>,
    who: Authed,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<Delivery>>> {
    who.require(ADMIN)?;
    let id = webhook_id(&id)?;
    Ok(Json(
        p.ctx
            .bus
            .request(&who.context(), &ListDeliveries { id })
            .await?,
    ))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RangeBody {
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
}

/// `POST /api/admin/webhooks/{id}/redeliver`: `{"from", "to"}` (RFC 3339).
pub async fn redeliver(
    State(p): State<Portal>,
    who: Authed,
    Path(id): Path<String>,
    raw: Bytes,
) -> ApiResult<Json<Redelivered>> {
    who.require(ADMIN)?;
    let id = webhook_id(&id)?;
    let b: RangeBody = body(&raw)?;
    Ok(Json(
        p.ctx
            .bus
            .request(
                &who.context(),
                &RedeliverWebhook {
                    id,
                    from: b.from,
                    to: b.to,
                },
            )
            .await?,
    ))
}

/// `POST /api/admin/webhooks/{id}/resume`.
pub async fn resume(
    State(p): State<Portal>,
    who: Authed,
    Path(id): Path<String>,
) -> ApiResult<Json<Webhook>> {
    who.require(ADMIN)?;
    let id = webhook_id(&id)?;
    Ok(Json(
        p.ctx
            .bus
            .request(&who.context(), &ResumeWebhook { id })
            .await?,
    ))
}
