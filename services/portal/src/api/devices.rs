//! The tenant's SIP devices, for tenants whose PBX is the SIP gateway: list them with their
//! registrations, add one, give one a new SIP password (shown once, in the reply), remove one.
//! The gateway owns them (`sip-gateway` commands); a tenant served by the PBX simulator has
//! none and gets 409 `not_sip_tenant`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use bytes::Bytes;
use cc_bus::CommandError;
use cc_contracts::auth::Role;
use cc_contracts::domain::DeviceId;
use cc_contracts::sip::*;
use serde::Deserialize;

use crate::error::{body, parsed, ApiError, ApiResult};
use crate::identity::Authed;
use crate::Portal;

const ADMIN: &[Role] = &[Role::Admin];

fn sip_tenant(p: &Portal, who: &Authed) -> ApiResult<()> {
    let tenant = &who.context().tenant;
    if p.ctx.config.sip.tenants.iter().any(|t| t == tenant) {
        Ok(())
    } else {
        Err(ApiError(CommandError::new(
            "not_sip_tenant",
            format!(
                "Tenant {tenant} has no SIP devices: its PBX is the simulator (see CC_SIP_TENANTS)"
            ),
        )))
    }
}

/// `GET /api/admin/devices`: every SIP device with its registration.
pub async fn list(State(p): State<Portal>, who: Authed) -> ApiResult<Json<Vec<SipDeviceInfo>>> {
    who.require(crate::api::supervisor::ROLES)?;
    sip_tenant(&p, &who)?;
    Ok(Json(
        p.ctx
            .bus
            .request(&who.context(), &ListSipDevices {})
            .await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDevice {
    device: String,
}

/// `POST /api/admin/devices` `{"device": "1008"}`: a new device and its SIP password (shown once).
pub async fn create(
    State(p): State<Portal>,
    who: Authed,
    raw: Bytes,
) -> ApiResult<(StatusCode, Json<SipCredentials>)> {
    who.require(ADMIN)?;
    sip_tenant(&p, &who)?;
    let b: NewDevice = body(&raw)?;
    let device = parsed("device", DeviceId::parse(&b.device))?;
    Ok((
        StatusCode::CREATED,
        Json(
            p.ctx
                .bus
                .request(&who.context(), &ProvisionSipDevice { device })
                .await?,
        ),
    ))
}

/// `POST /api/admin/devices/{device}/password`: a new SIP password for an existing device
/// (shown once; the phone must be set up with it again).
pub async fn new_password(
    State(p): State<Portal>,
    who: Authed,
    Path(device): Path<String>,
) -> ApiResult<Json<SipCredentials>> {
    who.require(ADMIN)?;
    sip_tenant(&p, &who)?;
    let device = parsed("device", DeviceId::parse(&device))?;
    let known = p
        .ctx
        .bus
        .request(&who.context(), &ListSipDevices {})
        .await?;
    if !known.iter().any(|d| d.device == device) {
        return Err(ApiError(CommandError::field(
            "unknown_device",
            "device",
            format!("There is no SIP device {device}"),
        )));
    }
    Ok(Json(
        p.ctx
            .bus
            .request(&who.context(), &ProvisionSipDevice { device })
            .await?,
    ))
}

/// `DELETE /api/admin/devices/{device}`: removes the device (it goes offline).
pub async fn remove(
    State(p): State<Portal>,
    who: Authed,
    Path(device): Path<String>,
) -> ApiResult<StatusCode> {
    who.require(ADMIN)?;
    sip_tenant(&p, &who)?;
    let device = parsed("device", DeviceId::parse(&device))?;
    p.ctx
        .bus
        .request(&who.context(), &RemoveSipDevice { device })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
