//! The HTTP control surface of the simulator:
//!
//! - `GET  /tenants/{tenant}/devices`
//! - `POST /tenants/{tenant}/devices` `{"device": "1008"}`
//! - `POST /tenants/{tenant}/devices/{device}/register` and `/unregister`

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cc_bus::CommandError;
use cc_contracts::domain::DeviceId;
use cc_runtime::Context;

use crate::devices;

struct ApiError(CommandError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self.0.error.as_str() {
            "unknown_device" => StatusCode::NOT_FOUND,
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
    DeviceId::parse(s).map_err(|e| ApiError(CommandError::field("invalid_field", "device", e.message)))
}

pub fn router(ctx: Context) -> Router {
    Router::new()
        .route("/tenants/{tenant}/devices", get(list).post(add))
        .route("/tenants/{tenant}/devices/{device}/register", post(register))
        .route("/tenants/{tenant}/devices/{device}/unregister", post(unregister))
        .with_state(ctx)
}

async fn list(State(ctx): State<Context>, Path(tenant): Path<String>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(devices::list(&ctx.pool, &tenant).await?))
}

#[derive(serde::Deserialize)]
struct NewDevice {
    device: String,
}

async fn add(State(ctx): State<Context>, Path(tenant): Path<String>, body: axum::body::Bytes) -> Result<impl IntoResponse, ApiError> {
    let req: NewDevice = cc_bus::parse_json(&body)?;
    Ok(Json(devices::add(&ctx, &tenant, &device(&req.device)?).await?))
}

async fn register(State(ctx): State<Context>, Path((tenant, d)): Path<(String, String)>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(devices::set_registered(&ctx, &tenant, &device(&d)?, true).await?))
}

async fn unregister(State(ctx): State<Context>, Path((tenant, d)): Path<(String, String)>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(devices::set_registered(&ctx, &tenant, &device(&d)?, false).await?))
}
