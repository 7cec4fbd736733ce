//! The tenant's webhook subscriptions (admins only): create one (its secret is in the reply,
//! once), list them, remove one, see its deliveries, send a test event, redeliver a time range,
//! resume a suspended one. The `webhooks` service owns them.

use axum::extract::State;
use axum::Json;
use cc_contracts::webhooks::*;
use schemars::JsonSchema;
use serde::Deserialize;
use uuid::Uuid;

use crate::error::ApiResult;
use crate::identity::Authed;
use crate::route::{Body, Created, NoContent, PathParams, Route, Tag, ADMIN};
use crate::Portal;

/// The webhook of a path.
#[derive(Deserialize, JsonSchema)]
pub struct WebhookPath {
    /// The subscription's id.
    id: Uuid,
}

/// `GET /api/admin/webhooks`.
pub async fn list(State(p): State<Portal>, who: Authed) -> ApiResult<Json<Vec<Webhook>>> {
    Ok(Json(
        p.ctx.bus.request(&who.context(), &ListWebhooks {}).await?,
    ))
}

/// `POST /api/admin/webhooks`: 201 with the subscription and its secret (shown once).
pub async fn create(
    State(p): State<Portal>,
    who: Authed,
    Body(cmd): Body<CreateWebhook>,
) -> ApiResult<Created<CreatedWebhook>> {
    Ok(Created(p.ctx.bus.request(&who.context(), &cmd).await?))
}

/// `DELETE /api/admin/webhooks/{id}`.
pub async fn delete(
    State(p): State<Portal>,
    who: Authed,
    PathParams(WebhookPath { id }): PathParams<WebhookPath>,
) -> ApiResult<NoContent> {
    p.ctx
        .bus
        .request(&who.context(), &DeleteWebhook { id })
        .await?;
    Ok(NoContent)
}

/// `POST /api/admin/webhooks/{id}/test`: one test event now; how it went.
pub async fn test(
    State(p): State<Portal>,
    who: Authed,
    PathParams(WebhookPath { id }): PathParams<WebhookPath>,
) -> ApiResult<Json<Delivery>> {
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
    PathParams(WebhookPath { id }): PathParams<WebhookPath>,
) -> ApiResult<Json<Vec<Delivery>>> {
    Ok(Json(
        p.ctx
            .bus
            .request(&who.context(), &ListDeliveries { id })
            .await?,
    ))
}

/// The time range `[from, to)` of the events to send again.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RangeBody {
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
}

/// `POST /api/admin/webhooks/{id}/redeliver`: `{"from", "to"}` (RFC 3339).
pub async fn redeliver(
    State(p): State<Portal>,
    who: Authed,
    PathParams(WebhookPath { id }): PathParams<WebhookPath>,
    Body(b): Body<RangeBody>,
) -> ApiResult<Json<Redelivered>> {
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
    PathParams(WebhookPath { id }): PathParams<WebhookPath>,
) -> ApiResult<Json<Webhook>> {
    Ok(Json(
        p.ctx
            .bus
            .request(&who.context(), &ResumeWebhook { id })
            .await?,
    ))
}

pub(crate) fn routes() -> Vec<Route> {
    const UNAVAILABLE: (u16, &str) = (503, "The webhooks service does not answer now");
    const NO_SUCH: (u16, &str) = (404, "No such webhook");
    vec![
        Route::get("/api/admin/webhooks", list)
            .tag(Tag::Admin)
            .roles(ADMIN)
            .summary("The tenant's webhook subscriptions")
            .commands(&[])
            .notes(&[UNAVAILABLE]),
        Route::post("/api/admin/webhooks", create)
            .tag(Tag::Admin)
            .roles(ADMIN)
            .summary("Subscribe a URL to the tenant's events")
            .description("Deliveries are CloudEvents in structured JSON (content type application/cloudevents+json), signed as the Standard Webhooks specification says (webhook-id = the event id, webhook-timestamp, webhook-signature v1 HMAC-SHA256 with the secret in the reply), in the tenant's event order, at least once; failures are retried with exponential backoff and jitter for 24 h, then the subscription is suspended. See docs/webhooks.md. invalid_field names url (not https, not public, not resolvable), event_types (no such type), agents, queues or description.")
            .commands(&["invalid_field"])
            .notes(&[UNAVAILABLE, (409, "At most 50 webhooks per tenant, or the Idempotency-Key was used for another action")]),
        Route::delete("/api/admin/webhooks/{id}", delete)
            .tag(Tag::Admin)
            .roles(ADMIN)
            .summary("Remove a webhook subscription (its deliveries stop)")
            .commands(&["not_found"])
            .notes(&[UNAVAILABLE, NO_SUCH]),
        Route::post("/api/admin/webhooks/{id}/test", test)
            .tag(Tag::Admin)
            .roles(ADMIN)
            .summary("Send a test event now")
            .description("Type callcenter.webhook.test.v1, outside the event order; the reply says how it went.")
            .commands(&["not_found"])
            .notes(&[UNAVAILABLE, NO_SUCH]),
        Route::get("/api/admin/webhooks/{id}/deliveries", deliveries)
            .tag(Tag::Admin)
            .roles(ADMIN)
            .summary("The newest delivery attempts, newest first (at most 200)")
            .commands(&["not_found"])
            .notes(&[UNAVAILABLE, NO_SUCH]),
        Route::post("/api/admin/webhooks/{id}/redeliver", redeliver)
            .tag(Tag::Admin)
            .roles(ADMIN)
            .summary("Send again every matching event of a time range")
            .description("Every event of the tenant recorded in [from, to) that the subscription wants, in order, with its own id (at most 1000 events: narrow the range beyond).")
            .commands(&["not_found"])
            .notes(&[UNAVAILABLE, NO_SUCH]),
        Route::post("/api/admin/webhooks/{id}/resume", resume)
            .tag(Tag::Admin)
            .roles(ADMIN)
            .summary("Take a suspended webhook up again, from the first event it did not deliver")
            .commands(&["not_found"])
            .notes(&[UNAVAILABLE, NO_SUCH]),
    ]
}
