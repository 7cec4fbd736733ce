//! The simulator's control commands (service `pbx-sim`), used by the CLI and the HTTP surface.

use cc_bus::{Command, CommandHandlers};
use cc_contracts::domain::DeviceId;
use cc_contracts::pbx::{ChannelState, DeviceState, HangupCause, Party};
use serde::{Deserialize, Serialize};

use crate::calls::{PhoneAction, PhoneMode};
use crate::{devices, Sim};

/// A caller dials a queue number (with their number and name).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlaceCall {
    pub queue: String,
    pub caller_number: String,
    #[serde(default)]
    pub caller_name: String,
}
impl Command for PlaceCall {
    const SERVICE: &'static str = "pbx-sim";
    const NAME: &'static str = "PlaceCall";
    type Reply = ChannelState;
}

/// A caller hangs up.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallerHangup {
    pub channel: String,
}
impl Command for CallerHangup {
    const SERVICE: &'static str = "pbx-sim";
    const NAME: &'static str = "CallerHangup";
    type Reply = ();
}

/// A phone's user answers, rejects or hangs up.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhoneDo {
    pub device: DeviceId,
    pub action: PhoneAction,
}
impl Command for PhoneDo {
    const SERVICE: &'static str = "pbx-sim";
    const NAME: &'static str = "PhoneDo";
    type Reply = ();
}

/// How a phone reacts by itself when it rings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetPhoneMode {
    pub device: DeviceId,
    #[serde(flatten)]
    pub mode: PhoneMode,
}
impl Command for SetPhoneMode {
    const SERVICE: &'static str = "pbx-sim";
    const NAME: &'static str = "SetPhoneMode";
    type Reply = ();
}

/// The live channels of the tenant.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ListSimChannels {}
impl Command for ListSimChannels {
    const SERVICE: &'static str = "pbx-sim";
    const NAME: &'static str = "ListSimChannels";
    type Reply = Vec<ChannelState>;
}

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

/// What the simulator saw of the tenant's calls: per device how its rings ended, every
/// caller and its hang-ups (see [`crate::calls::Tally`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SimTally {}
impl Command for SimTally {
    const SERVICE: &'static str = "pbx-sim";
    const NAME: &'static str = "SimTally";
    type Reply = crate::calls::Tally;
}

pub fn handlers(sim: Sim) -> CommandHandlers<Sim> {
    CommandHandlers::new("pbx-sim", sim)
        .on(|s: Sim, c, cmd: AddDevice| async move {
            devices::add(&s.ctx, &s.calls.registry, &c.tenant, &cmd.device).await
        })
        .on(|s: Sim, c, cmd: SetRegistered| async move {
            devices::set_registered(
                &s.ctx,
                &s.calls.registry,
                &c.tenant,
                &cmd.device,
                cmd.registered,
            )
            .await
        })
        .on(|s: Sim, c, cmd: PlaceCall| async move {
            s.calls
                .place_caller(
                    &c.tenant,
                    &cmd.queue,
                    Party {
                        number: cmd.caller_number,
                        name: cmd.caller_name,
                    },
                )
                .await
        })
        .on(|s: Sim, c, cmd: CallerHangup| async move {
            s.calls
                .hangup(&c.tenant, &cmd.channel, HangupCause::Normal)
                .await
        })
        .on(|s: Sim, c, cmd: PhoneDo| async move {
            s.calls.phone(&c.tenant, &cmd.device, cmd.action).await
        })
        .on(|s: Sim, c, cmd: SetPhoneMode| async move {
            s.calls.set_mode(&c.tenant, &cmd.device, cmd.mode).await;
            Ok(())
        })
        .on(|s: Sim, c, _: ListSimChannels| async move { Ok(s.calls.list(&c.tenant).await) })
        .on(|s: Sim, c, _: SimTally| async move { Ok(s.calls.tally(&c.tenant).await) })
        .on(|s: Sim, c, cmd: crate::traffic::StartTraffic| async move {
            crate::traffic::start(&s, &c.tenant, cmd).await
        })
        .on(|s: Sim, c, _: crate::traffic::StopTraffic| async move {
            crate::traffic::stop(&s, &c.tenant).await;
            Ok(())
        })
}
