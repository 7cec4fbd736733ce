//! The PBX contract, modelled on Asterisk ARI. Events are facts the PBX reports, published on
//! `<p>.pbx.evt.<tenant>.<kind>.<id>.<Type>` (JetStream stream `<P>_PBX`); commands go to the
//! service `pbx` (`<p>.cmd.pbx.<tenant>.<Command>`). The PBX simulator implements it; a real
//! Asterisk ARI or FreeSWITCH ESL adapter would implement the same.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{
    strip_controls, CallerName, CallerNumber, DeviceId, Invalid, CALLER_NUMBER_MAX,
};
use cc_core::Command;

/// A device (SIP extension) registration fact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type")]
pub enum DeviceEvent {
    DeviceRegistered {
        tenant: String,
        device: DeviceId,
        at: DateTime<Utc>,
    },
    DeviceUnregistered {
        tenant: String,
        device: DeviceId,
        at: DateTime<Utc>,
    },
}

impl DeviceEvent {
    pub fn device(&self) -> &DeviceId {
        match self {
            DeviceEvent::DeviceRegistered { device, .. }
            | DeviceEvent::DeviceUnregistered { device, .. } => device,
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DeviceState {
    pub device: DeviceId,
    pub registered: bool,
}

/// Every device of the tenant and whether it is registered (for reconciliation).
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ListDevices {}
impl Command for ListDevices {
    const SERVICE: &'static str = "pbx";
    const NAME: &'static str = "ListDevices";
    type Reply = Vec<DeviceState>;
}

/// A party's number and display name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Party {
    pub number: String,
    #[serde(default)]
    pub name: String,
}

impl Party {
    /// A caller as an edge that can refuse it takes it in (the PBX simulator's HTTP API, a PBX
    /// adapter's own input): the number must be a [`CallerNumber`] (refused naming
    /// `caller_number`), the name a [`CallerName`] (control characters removed, more than 100
    /// characters refused naming `caller_name`).
    pub fn parse(number: &str, name: &str) -> Result<Party, Invalid> {
        Ok(Party {
            number: CallerNumber::parse(number)?.into_string(),
            name: CallerName::parse(name)?.into_string(),
        })
    }

    /// A caller as a PBX reported it, made safe to record (a fact cannot be refused): control
    /// characters removed from both, the name cut to 100 characters and the number to 32.
    pub fn cleaned(&self) -> Party {
        Party {
            number: strip_controls(&self.number)
                .chars()
                .take(CALLER_NUMBER_MAX)
                .collect(),
            name: CallerName::lossy(&self.name).into_string(),
        }
    }
}

/// Which way a call leg goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// A caller reaching the PBX (e.g. dialling a queue number).
    Inbound,
    /// A leg the PBX places on command (to a device or an outside number).
    Outbound,
}

/// Why a channel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HangupCause {
    /// One side hung up after the call was answered, or on command.
    Normal,
    /// The device or number was busy.
    Busy,
    /// It rang until the ringing was stopped without an answer.
    NoAnswer,
    /// The phone declined the call.
    Rejected,
    /// The caller hung up before being answered.
    CallerGone,
    /// The device is not registered.
    Unavailable,
}

/// Facts about one call leg (channel), as a PBX reports them. Subject:
/// `<p>.pbx.evt.<tenant>.channel.<channel id>.<Type>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type")]
pub enum ChannelEvent {
    ChannelCreated {
        tenant: String,
        channel: String,
        direction: Direction,
        /// Who calls (for an outbound leg: the caller id presented).
        caller: Party,
        /// What the inbound caller dialled (a queue number, an extension).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dialed: Option<String>,
        /// The device an outbound leg rings.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device: Option<DeviceId>,
        /// The outside number an outbound leg calls.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        number: Option<String>,
        at: DateTime<Utc>,
    },
    ChannelRinging {
        tenant: String,
        channel: String,
        at: DateTime<Utc>,
    },
    ChannelAnswered {
        tenant: String,
        channel: String,
        at: DateTime<Utc>,
    },
    ChannelHeld {
        tenant: String,
        channel: String,
        at: DateTime<Utc>,
    },
    ChannelUnheld {
        tenant: String,
        channel: String,
        at: DateTime<Utc>,
    },
    ChannelHungUp {
        tenant: String,
        channel: String,
        cause: HangupCause,
        at: DateTime<Utc>,
    },
    /// The phone on this channel asked to transfer its call with its own transfer button (SIP
    /// REFER): to `to`, an extension, queue or outside number. With `replaces`, the transfer is
    /// attended: the phone consulted the target on a call of its own first, and `replaces` is
    /// the channel of that call's target (the customer is to be joined with it). What happens
    /// is call-control's decision; the PBX only reports the request.
    ChannelTransferRequested {
        tenant: String,
        channel: String,
        to: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        replaces: Option<String>,
        at: DateTime<Utc>,
    },
}

impl ChannelEvent {
    pub fn channel(&self) -> &str {
        match self {
            ChannelEvent::ChannelCreated { channel, .. }
            | ChannelEvent::ChannelRinging { channel, .. }
            | ChannelEvent::ChannelAnswered { channel, .. }
            | ChannelEvent::ChannelHeld { channel, .. }
            | ChannelEvent::ChannelUnheld { channel, .. }
            | ChannelEvent::ChannelHungUp { channel, .. }
            | ChannelEvent::ChannelTransferRequested { channel, .. } => channel,
        }
    }
    pub fn type_name(&self) -> &'static str {
        match self {
            ChannelEvent::ChannelCreated { .. } => "ChannelCreated",
            ChannelEvent::ChannelRinging { .. } => "ChannelRinging",
            ChannelEvent::ChannelAnswered { .. } => "ChannelAnswered",
            ChannelEvent::ChannelHeld { .. } => "ChannelHeld",
            ChannelEvent::ChannelUnheld { .. } => "ChannelUnheld",
            ChannelEvent::ChannelHungUp { .. } => "ChannelHungUp",
            ChannelEvent::ChannelTransferRequested { .. } => "ChannelTransferRequested",
        }
    }
}

/// Facts about bridges (channels joined; three channels = a 3-way conference). Subject:
/// `<p>.pbx.evt.<tenant>.bridge.<bridge id>.<Type>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type")]
pub enum BridgeEvent {
    /// The bridge now joins exactly these channels. `modes` names each channel that is not
    /// an ordinary party (`speak`): who hears whom in the bridge.
    BridgeChanged {
        tenant: String,
        bridge: String,
        channels: Vec<String>,
        #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        modes: std::collections::BTreeMap<String, BridgeMode>,
        at: DateTime<Utc>,
    },
    BridgeDestroyed {
        tenant: String,
        bridge: String,
        at: DateTime<Utc>,
    },
}

impl BridgeEvent {
    pub fn bridge(&self) -> &str {
        match self {
            BridgeEvent::BridgeChanged { bridge, .. }
            | BridgeEvent::BridgeDestroyed { bridge, .. } => bridge,
        }
    }
    pub fn type_name(&self) -> &'static str {
        match self {
            BridgeEvent::BridgeChanged { .. } => "BridgeChanged",
            BridgeEvent::BridgeDestroyed { .. } => "BridgeDestroyed",
        }
    }
}

/// Where an originated leg goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    Device(DeviceId),
    Number(String),
}

/// A channel as the PBX knows it now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ChannelState {
    pub channel: String,
    pub direction: Direction,
    pub caller: Party,
    pub dialed: Option<String>,
    pub device: Option<DeviceId>,
    pub number: Option<String>,
    pub answered: bool,
    pub held: bool,
    pub bridge: Option<String>,
}

/// Places a call leg to a device or an outside number. The reply names the channel; the
/// leg's life is reported by channel events.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Originate {
    /// The id to give the channel (so the caller can correlate before any event); unset: chosen
    /// by the PBX.
    #[serde(default)]
    pub channel: Option<String>,
    pub endpoint: Endpoint,
    /// The caller id the ringing phone shows.
    pub caller: Party,
}
impl Command for Originate {
    const SERVICE: &'static str = "pbx";
    const NAME: &'static str = "Originate";
    type Reply = ChannelState;
}

/// Whether an Originate to `endpoint` would be placed now, without placing it: the same
/// refusals as Originate (`invalid_field`, `unknown_device`, `device_unavailable`, `no_route`),
/// so a caller can refuse a request before it rings anyone.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CheckRoute {
    pub endpoint: Endpoint,
}
impl Command for CheckRoute {
    const SERVICE: &'static str = "pbx";
    const NAME: &'static str = "CheckRoute";
    type Reply = ();
}

/// Answers an inbound channel (e.g. so a waiting caller hears music).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Answer {
    pub channel: String,
}
impl Command for Answer {
    const SERVICE: &'static str = "pbx";
    const NAME: &'static str = "Answer";
    type Reply = ChannelState;
}

/// Joins channels in a bridge (created when new): 2 channels = a call, 3 = a conference.
/// Each channel leaves any other bridge it was in.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Bridge {
    pub bridge: String,
    pub channels: Vec<String>,
}
impl Command for Bridge {
    const SERVICE: &'static str = "pbx";
    const NAME: &'static str = "Bridge";
    type Reply = Vec<String>;
}

/// How a channel takes part in its bridge: who hears it (every channel of a bridge hears
/// every other it is allowed to; a held channel hears the music instead and is heard by none).
/// This one matrix serves conferences and a supervisor's listen, whisper and barge.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum BridgeMode {
    /// An ordinary party: hears everyone, heard by everyone (a supervisor's barge).
    #[default]
    Speak,
    /// Hears everyone, heard by no one (a supervisor listening).
    Listen,
    /// Hears everyone, heard only by the channel `to` (a supervisor coaching the agent).
    Whisper { to: String },
}

impl BridgeMode {
    /// Whether `listener` hears a channel in this mode.
    pub fn heard_by(&self, listener: &str) -> bool {
        match self {
            BridgeMode::Speak => true,
            BridgeMode::Listen => false,
            BridgeMode::Whisper { to } => to == listener,
        }
    }
}

/// Sets how a channel takes part in its bridge (see [`BridgeMode`]); the reply is the bridge's
/// modes (channels not named speak).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SetBridgeMode {
    pub channel: String,
    #[serde(flatten)]
    pub mode: BridgeMode,
    /// When given, the channel joins this bridge in `mode` (as Bridge does, leaving any other
    /// bridge), so it is never heard in another mode on the way in: a listening supervisor is
    /// not heard for a moment as an ordinary party.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
}
impl Command for SetBridgeMode {
    const SERVICE: &'static str = "pbx";
    const NAME: &'static str = "SetBridgeMode";
    type Reply = std::collections::BTreeMap<String, BridgeMode>;
}

/// Takes a channel out of its bridge.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Unbridge {
    pub channel: String,
}
impl Command for Unbridge {
    const SERVICE: &'static str = "pbx";
    const NAME: &'static str = "Unbridge";
    type Reply = ();
}

/// Puts a channel on hold (`held = true`) or takes it off hold.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Hold {
    pub channel: String,
    pub held: bool,
}
impl Command for Hold {
    const SERVICE: &'static str = "pbx";
    const NAME: &'static str = "Hold";
    type Reply = ChannelState;
}

/// Ends a channel.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Hangup {
    pub channel: String,
    #[serde(default = "normal")]
    pub cause: HangupCause,
}
fn normal() -> HangupCause {
    HangupCause::Normal
}
impl Command for Hangup {
    const SERVICE: &'static str = "pbx";
    const NAME: &'static str = "Hangup";
    type Reply = ();
}

/// Stops a ringing outbound leg as rung out (`no_answer`), unless it was answered first: then
/// it is refused `already_answered` and the leg stays up (its `ChannelAnswered` is reported, or
/// was). The PBX decides the race between a ring timeout and an answer, so an answer the
/// application has not heard of yet (NATS away, the application held up) is never hung up as
/// rung out. `unknown_channel` when the leg is gone (or never rang).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CancelRing {
    pub channel: String,
}
impl Command for CancelRing {
    const SERVICE: &'static str = "pbx";
    const NAME: &'static str = "CancelRing";
    type Reply = ();
}

/// Every live channel of the tenant (for reconciliation after a restart).
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ListChannels {}
impl Command for ListChannels {
    const SERVICE: &'static str = "pbx";
    const NAME: &'static str = "ListChannels";
    type Reply = Vec<ChannelState>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_is_parsed_at_the_edge_and_cleaned_when_reported() {
        let p = Party::parse(" +4930123 ", "Jane\u{0} Caller").unwrap();
        assert_eq!(
            (p.number.as_str(), p.name.as_str()),
            ("+4930123", "Jane Caller")
        );
        assert_eq!(
            Party::parse("555\u{0}1", "x").unwrap_err().field,
            "caller_number"
        );
        assert_eq!(
            Party::parse("5551", &"n".repeat(101)).unwrap_err().field,
            "caller_name"
        );
        let reported = Party {
            number: "55\u{0}51".into(),
            name: format!("a\u{0}b{}", "c".repeat(200)),
        };
        let clean = reported.cleaned();
        assert_eq!(clean.number, "5551");
        assert_eq!(clean.name.chars().count(), 100);
        assert!(clean.name.starts_with("abc"));
    }
}
