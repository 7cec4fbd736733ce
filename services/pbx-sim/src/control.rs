//! The simulator's control commands (service `pbx-sim`), used by the CLI and the HTTP surface.

use cc_bus::{Command, CommandHandlers};
use cc_contracts::domain::DeviceId;
use cc_contracts::pbx::DeviceState;
use cc_runtime::Context;
use serde::{Deserialize, Serialize};

use crate::devices;

/// Adds a device (extension) to the tenant's simulated PBX, unregistered.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddDevice {
    pub device: DeviceId,
}
impl Command for AddDevice {
    const SERVICE: &'static str = "pbx-sim";
    const NAME: &'static str = "AddDevice";
    type Reply = DeviceState;
}

/// Makes a simulated phone register (come online) or unregister (go offline).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetRegistered {
    pub device: DeviceId,
    pub registered: bool,
}
impl Command for SetRegistered {
    const SERVICE: &'static str = "pbx-sim";
    const NAME: &'static str = "SetRegistered";
    type Reply = DeviceState;
}

pub fn handlers(ctx: Context) -> CommandHandlers<Context> {
    CommandHandlers::new("pbx-sim", ctx)
        .on(|ctx, c, cmd: AddDevice| async move { devices::add(&ctx, &c.tenant, &cmd.device).await })
        .on(|ctx, c, cmd: SetRegistered| async move { devices::set_registered(&ctx, &c.tenant, &cmd.device, cmd.registered).await })
}
