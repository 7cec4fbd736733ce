//! The SIP gateway's own commands (service `sip-gateway`): the SIP credentials of a tenant's
//! devices. The PBX contract itself is in [`crate::pbx`].
//!
//! Only what digest verification needs is stored (HA1 = MD5(user:realm:password)); the
//! password is returned once, by [`ProvisionSipDevice`], and never again.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::DeviceId;
use cc_core::Command;

/// Creates a device on the gateway (or gives an existing one a new SIP password). The reply
/// holds the new password: shown once, stored nowhere.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProvisionSipDevice {
    pub device: DeviceId,
}
impl Command for ProvisionSipDevice {
    const SERVICE: &'static str = "sip-gateway";
    const NAME: &'static str = "ProvisionSipDevice";
    type Reply = SipCredentials;
}

/// What a phone needs to register. The password is in this reply only: the gateway keeps its
/// digest hash (HA1), never the password.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SipCredentials {
    pub device: DeviceId,
    /// The SIP user name (the extension).
    pub username: String,
    /// The SIP domain and digest realm: `<tenant>.<base domain>`.
    pub domain: String,
    /// The new password; the gateway keeps only its digest hash.
    pub password: String,
    /// Where phones send REGISTER (host:port, UDP and TCP).
    pub registrar: String,
    /// The tenant's phones register on its own PBX (trunk mode, `CC_SIP_PBX`): `password` is
    /// not used, the gateway follows the extension's registration on `registrar`.
    #[serde(default)]
    pub on_pbx: bool,
}

/// The tenant's SIP devices and their registrations.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListSipDevices {}
impl Command for ListSipDevices {
    const SERVICE: &'static str = "sip-gateway";
    const NAME: &'static str = "ListSipDevices";
    type Reply = Vec<SipDeviceInfo>;
}

/// One SIP device as the gateway knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SipDeviceInfo {
    pub device: DeviceId,
    pub registered: bool,
    /// The registered Contact, while registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    /// Where the registration came from (transport and address), while registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// Removes a device from the gateway: its credentials and any registration (the device goes
/// offline).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveSipDevice {
    pub device: DeviceId,
}
impl Command for RemoveSipDevice {
    const SERVICE: &'static str = "sip-gateway";
    const NAME: &'static str = "RemoveSipDevice";
    type Reply = ();
}
