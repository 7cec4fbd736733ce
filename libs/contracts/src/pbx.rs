//! The PBX contract, modelled on Asterisk ARI. Events are facts the PBX reports, published on
//! `<p>.pbx.evt.<tenant>.<kind>.<id>.<Type>` (JetStream stream `<P>_PBX`); commands go to the
//! service `pbx` (`<p>.cmd.pbx.<tenant>.<Command>`). The PBX simulator implements it; a real
//! Asterisk ARI or FreeSWITCH ESL adapter would implement the same.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::DeviceId;
use cc_bus::Command;

/// A device (SIP extension) registration fact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum DeviceEvent {
    DeviceRegistered { tenant: String, device: DeviceId, at: DateTime<Utc> },
    DeviceUnregistered { tenant: String, device: DeviceId, at: DateTime<Utc> },
}

impl DeviceEvent {
    pub fn device(&self) -> &DeviceId {
        match self {
            DeviceEvent::DeviceRegistered { device, .. } | DeviceEvent::DeviceUnregistered { device, .. } => device,
        }
    }
    pub fn type_name(&self) -> &'static str {
        match self {
            DeviceEvent::DeviceRegistered { .. } => "DeviceRegistered",
            DeviceEvent::DeviceUnregistered { .. } => "DeviceUnregistered",
        }
    }
}

/// A device as the PBX knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceState {
    pub device: DeviceId,
    pub registered: bool,
}

/// Every device of the tenant and whether it is registered (for reconciliation).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ListDevices {}
impl Command for ListDevices {
    const SERVICE: &'static str = "pbx";
    const NAME: &'static str = "ListDevices";
    type Reply = Vec<DeviceState>;
}
