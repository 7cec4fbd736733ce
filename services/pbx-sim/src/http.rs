//! The HTTP control surface of the simulator:
//!
//! - `GET  /tenants/{tenant}/devices`
//! - `POST /tenants/{tenant}/devices` `{"device": "1008"}`
//! - `POST /tenants/{tenant}/devices/{device}/register` and `/unregister`
//! - `POST /tenants/{tenant}/devices/{device}/answer`, `/reject`, `/hangup`: the phone's user
//! - `PUT  /tenants/{tenant}/devices/{device}/mode` `{"mode": "auto_answer", "after_ms": 500}`
//! - `POST /tenants/{tenant}/calls` `{"queue": "500", "caller_number": "5551234", "caller_name": "Jane"}`
//! - `GET  /tenants/{tenant}/channels`
//! - `POST /tenants/{tenant}/channels/{channel}/hangup`: the caller hangs up
//! - `GET  /phone`: the demo phone page (with `/phone.js`, `/phone.css`)
//! - `GET  /tenants/{tenant}/tally`: what the simulator saw (see [`crate::calls::Tally`])
//! - `POST /tenants/{tenant}/traffic` (see [`crate::traffic::StartTraffic`]), `DELETE` to stop

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cc_bus::CommandError;
use cc_contracts::domain::DeviceId;
use cc_contracts::pbx::{HangupCause, Party};

use crate::calls::{PhoneAction, PhoneMode};
use crate::{devices, Sim};

/// The demo phone: the simulated devices ringing, with Answer / Reject / Hang up, and a caller
/// panel (`/phone?tenant=demo`).
const PHONE: cc_runtime::web::Asset = cc_runtime::asset!("services/pbx-sim", "web/phone.html");
/// Its script and style (files of their own: the page allows nothing inline).
const PHONE_JS: cc_runtime::web::Asset = cc_runtime::asset!("services/pbx-sim", "web/phone.js");
const PHONE_CSS: cc_runtime::web::Asset = cc_runtime::asset!("services/pbx-sim", "web/phone.css");

struct ApiError(CommandError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self.0.error.as_str() {
            "unknown_device" | "unknown_channel" | "no_call" => StatusCode::NOT_FOUND,
            "internal" | "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        };
        (status, Json(self.0)).into_response()
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        ApiError(e)
    }
}

fn device(s: &str) -> Result<DeviceId, ApiError> {
    DeviceId::parse(s)
        .map_err(|e| ApiError(CommandError::field("invalid_field", "device", e.message)))
}

pub fn router(sim: Sim) -> Router {
    Router::new()
        .route("/", get(|| async { PHONE }))
        .route("/phone", get(|| async { PHONE }))
        .route("/phone.js", get(|| async { PHONE_JS }))
        .route("/phone.css", get(|| async { PHONE_CSS }))
        .route("/tenants/{tenant}/devices", get(list).post(add))
        .route(
            "/tenants/{tenant}/devices/{device}/register",
            post(register),
        )
        .route(
            "/tenants/{tenant}/devices/{device}/unregister",
            post(unregister),
        )
        .route(
            "/tenants/{tenant}/devices/{device}/answer",
            post(|s, p| phone(s, p, PhoneAction::Answer)),
        )
        .route(
            "/tenants/{tenant}/devices/{device}/reject",
            post(|s, p| phone(s, p, PhoneAction::Reject)),
        )
        .route(
            "/tenants/{tenant}/devices/{device}/hangup",
            post(|s, p| phone(s, p, PhoneAction::Hangup)),
        )
        .route(
            "/tenants/{tenant}/devices/{device}/mode",
            axum::routing::put(mode),
        )
        .route("/tenants/{tenant}/calls", post(place_call))
        .route("/tenants/{tenant}/channels", get(channels))
        .route("/tenants/{tenant}/tally", get(tally))
        .route(
            "/tenants/{tenant}/channels/{channel}/hangup",
            post(caller_hangup),
        )
        .route(
            "/tenants/{tenant}/traffic",
            post(start_traffic).delete(stop_traffic),
        )
        .layer(axum::middleware::map_response(cc_runtime::web::harden))
        .layer(axum::middleware::from_fn(cc_runtime::web::trace))
        .with_state(sim)
}

async fn list(
    State(s): State<Sim>,
    Path(tenant): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(devices::list(&s.ctx.pool, &tenant).await?))
}

async fn phone(
    State(s): State<Sim>,
    Path((tenant, d)): Path<(String, String)>,
    action: PhoneAction,
) -> Result<StatusCode, ApiError> {
    s.calls.phone(&tenant, &device(&d)?, action).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn mode(
    State(s): State<Sim>,
    Path((tenant, d)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<StatusCode, ApiError> {
    let m: PhoneMode = cc_bus::parse_json(&body)?;
    m.check()?;
    s.calls.set_mode(&tenant, &device(&d)?, m).await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(serde::Deserialize)]
struct NewCall {
    queue: String,
    caller_number: String,
    #[serde(default)]
    caller_name: String,
}

async fn place_call(
    State(s): State<Sim>,
    Path(tenant): Path<String>,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let c: NewCall = cc_bus::parse_json(&body)?;
    let ch = s
        .calls
        .place_caller(
            &tenant,
            &c.queue,
            Party {
                number: c.caller_number,
                name: c.caller_name,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(ch)))
}

async fn tally(State(s): State<Sim>, Path(tenant): Path<String>) -> impl IntoResponse {
    Json(s.calls.tally(&tenant).await)
}

async fn channels(State(s): State<Sim>, Path(tenant): Path<String>) -> impl IntoResponse {
    Json(s.calls.list(&tenant).await)
}

async fn caller_hangup(
    State(s): State<Sim>,
    Path((tenant, channel)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    s.calls
        .hangup(&tenant, &channel, HangupCause::Normal)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(serde::Deserialize)]
struct NewDevice {
    device: String,
}

async fn add(
    State(s): State<Sim>,
    Path(tenant): Path<String>,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let req: NewDevice = cc_bus::parse_json(&body)?;
    Ok(Json(
        devices::add(&s.ctx, &s.calls.registry, &tenant, &device(&req.device)?).await?,
    ))
}

async fn register(
    State(s): State<Sim>,
    Path((tenant, d)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(
        devices::set_registered(&s.ctx, &s.calls.registry, &tenant, &device(&d)?, true).await?,
    ))
}

async fn unregister(
    State(s): State<Sim>,
    Path((tenant, d)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(
        devices::set_registered(&s.ctx, &s.calls.registry, &tenant, &device(&d)?, false).await?,
    ))
}

async fn start_traffic(
    State(s): State<Sim>,
    Path(tenant): Path<String>,
    body: axum::body::Bytes,
) -> Result<StatusCode, ApiError> {
    let cmd: crate::traffic::StartTraffic = cc_bus::parse_json(&body)?;
    crate::traffic::start(&s, &tenant, cmd).await?;
    Ok(StatusCode::ACCEPTED)
}

async fn stop_traffic(State(s): State<Sim>, Path(tenant): Path<String>) -> StatusCode {
    crate::traffic::stop(&s, &tenant).await;
    StatusCode::NO_CONTENT
}
