//! The tenant's SIP devices, for tenants whose PBX is the SIP gateway: list them with their
//! registrations, add one, give one a new SIP password (shown once, in the reply), remove one.
//! The gateway owns them (`sip-gateway` commands); a tenant served by the PBX simulator has
//! none and gets 409 `not_sip_tenant`.

use axum::extract::State;
use axum::Json;
use cc_bus::CommandError;
use cc_contracts::domain::DeviceId;
use cc_contracts::sip::*;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::error::{parsed, ApiError, ApiResult};
use crate::identity::Authed;
use crate::route::{Body, Created, NoContent, PathParams, Route, Tag, ADMIN, SUPERVISORS};
use crate::Portal;

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
    sip_tenant(&p, &who)?;
    Ok(Json(
        p.ctx
            .bus
            .request(&who.context(), &ListSipDevices {})
            .await?,
    ))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDevice {
    /// The extension: 1 to 15 digits.
    #[schemars(pattern(r"^[0-9]{1,15}$"), example = &"1008")]
    device: String,
}

/// The device of a path.
#[derive(Deserialize, JsonSchema)]
pub struct DevicePath {
    device: DeviceId,
}

/// `POST /api/admin/devices` `{"device": "1008"}`: a new device and its SIP password (shown once).
pub async fn create(
    State(p): State<Portal>,
    who: Authed,
    Body(b): Body<NewDevice>,
) -> ApiResult<Created<SipCredentials>> {
    sip_tenant(&p, &who)?;
    let device = parsed("device", DeviceId::parse(&b.device))?;
    Ok(Created(
        p.ctx
            .bus
            .request(&who.context(), &ProvisionSipDevice { device })
            .await?,
    ))
}

/// `POST /api/admin/devices/{device}/password`: a new SIP password for an existing device
/// (shown once; the phone must be set up with it again).
pub async fn new_password(
    State(p): State<Portal>,
    who: Authed,
    PathParams(DevicePath { device }): PathParams<DevicePath>,
) -> ApiResult<Json<SipCredentials>> {
    sip_tenant(&p, &who)?;
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
    PathParams(DevicePath { device }): PathParams<DevicePath>,
) -> ApiResult<NoContent> {
    sip_tenant(&p, &who)?;
    p.ctx
        .bus
        .request(&who.context(), &RemoveSipDevice { device })
        .await?;
    Ok(NoContent)
}

pub(crate) fn routes() -> Vec<Route> {
    const NOT_SIP: (u16, &str) = (409, "The tenant's PBX is the simulator: no SIP devices");
    const GATEWAY: (u16, &str) = (503, "The SIP gateway is not running");
    vec![
        Route::get("/api/admin/devices", list)
            .tag(Tag::Admin)
            .roles(SUPERVISORS)
            .summary("The tenant's SIP devices and their registrations (supervisors and admins)")
            .commands(&["not_sip_tenant"])
            .notes(&[NOT_SIP, GATEWAY]),
        Route::post("/api/admin/devices", create)
            .tag(Tag::Admin)
            .roles(ADMIN)
            .summary("Create a SIP device; the reply holds its password, shown once")
            .commands(&["not_sip_tenant"])
            .notes(&[NOT_SIP, GATEWAY]),
        Route::post("/api/admin/devices/{device}/password", new_password)
            .tag(Tag::Admin)
            .roles(ADMIN)
            .summary("A new SIP password for a device (shown once)")
            .commands(&["not_sip_tenant", "unknown_device"])
            .notes(&[NOT_SIP, GATEWAY, (422, "No such device")]),
        Route::delete("/api/admin/devices/{device}", remove)
            .tag(Tag::Admin)
            .roles(ADMIN)
            .summary("Remove a SIP device (a phone registered with it goes offline)")
            .commands(&["not_sip_tenant", "unknown_device"])
            .notes(&[NOT_SIP, GATEWAY, (422, "No such device")]),
    ]
}
