//! Simulated call legs (channels), bridges and phones, reported on the PBX contract.
//!
//! The PBX's own state lives in memory, like a real PBX's: a restart of the simulator drops
//! its calls (and reports nothing for them), which is what a PBX crash looks like to the rest.
//! Phones behave per device: `manual` (the default: they ring until told to answer or reject
//! through the control surface), `auto_answer`, `reject` or `ignore`, after a delay.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use cc_bus::facts::FactQueue;
use cc_bus::CommandError;
use cc_contracts::domain::DeviceId;
use cc_contracts::pbx::*;
use cc_runtime::Context;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

/// How a simulated phone reacts when it rings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum PhoneMode {
    Manual,
    AutoAnswer {
        after_ms: u64,
    },
    Reject {
        after_ms: u64,
    },
    Ignore,
    /// For traffic: answer after `after_ms` with probability `probability` (else let it ring),
    /// then hang up after a talk time drawn from an exponential distribution of mean `talk_ms`.
    Agent {
        after_ms: u64,
        probability: f64,
        talk_ms: u64,
    },
}

/// The longest delay or talk time a phone mode may name (ms): an hour.
pub const MAX_MODE_MS: u64 = 3_600_000;

impl PhoneMode {
    /// Refuses a mode that cannot be acted out, naming the field: a probability outside [0, 1]
    /// or not a number, a delay or talk time beyond an hour.
    pub fn check(&self) -> Result<(), CommandError> {
        let ms = |field: &str, v: u64| {
            if v > MAX_MODE_MS {
                Err(err(
                    "invalid_field",
                    field,
                    format!("at most {MAX_MODE_MS} ms (an hour)"),
                ))
            } else {
                Ok(())
            }
        };
        match self {
            PhoneMode::Manual | PhoneMode::Ignore => Ok(()),
            PhoneMode::AutoAnswer { after_ms } | PhoneMode::Reject { after_ms } => {
                ms("after_ms", *after_ms)
            }
            PhoneMode::Agent {
                after_ms,
                probability,
                talk_ms,
            } => {
                if !(0.0..=1.0).contains(probability) {
                    return Err(err(
                        "invalid_field",
                        "probability",
                        format!("{probability} is not a probability (0 to 1)"),
                    ));
                }
                ms("after_ms", *after_ms)?;
                ms("talk_ms", *talk_ms)
            }
        }
    }
}

#[derive(Default)]
struct Tenant {
    channels: HashMap<String, ChannelState>,
    bridges: HashMap<String, Vec<String>>,
    /// How each channel in a bridge takes part (absent: speak), cleared when it leaves.
    modes: HashMap<String, BridgeMode>,
    phones: HashMap<DeviceId, PhoneMode>,
    /// Channels that have been in a bridge with another channel (until they are hung up).
    bridged: std::collections::HashSet<String>,
    tally: Tally,
}

/// What the simulator itself saw of a tenant's calls (only what it reported on the PBX
/// contract), to check the product's figures against (the chaos suite).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    /// Per device: how each ringing leg to it ended.
    pub devices: std::collections::BTreeMap<String, DeviceTally>,
    /// Every inbound channel (a caller) reported created, with how many hang-ups were reported
    /// for it (1 once it is over).
    pub inbound: std::collections::BTreeMap<String, u32>,
    /// Every leg that rang a device (or found it busy), by channel: the device and how the
    /// leg ended (`completed`, `missed`, `rejected`, `withdrawn`, `busy`, `late_answer`,
    /// `answered_unconnected`;
    /// counted in `devices`).
    pub legs: std::collections::BTreeMap<String, (String, String)>,
    /// Facts the simulator could not queue for JetStream (its queue full after a long outage):
    /// a call placed while its creation could not be queued is dropped, and counted here.
    pub unreported: u64,
    /// Facts of every tenant queued and not yet taken by JetStream (sent again until they
    /// are).
    #[serde(default)]
    pub facts_waiting: u64,
}

/// How the legs that rang a device ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceTally {
    /// Answered, then hung up (by either side): a completed call.
    pub completed: u64,
    /// Hung up unanswered because the application gave up ringing (`NoAnswer`): missed.
    pub missed: u64,
    /// Declined by the phone.
    pub rejected: u64,
    /// Hung up unanswered on any other command (the offer was withdrawn).
    pub withdrawn: u64,
    /// Rings refused at once because the device already had a call (`Busy`).
    pub busy: u64,
    /// Answered, then hung up by the application as if it had rung out (`NoAnswer` after
    /// the answer: the answer reached it too late). Not in `completed`.
    pub answered_then_no_answer: u64,
    /// Answered, then hung up by the application before it was bridged to anyone (the
    /// caller hung up, or another phone answered, just as this one answered). Not in
    /// `completed`.
    #[serde(default)]
    pub answered_unconnected: u64,
}

/// How many facts may wait for JetStream (about ten minutes of a busy PBX's reports).
const FACTS_WAITING: usize = 100_000;

/// The simulator's calls. Cheap to clone.
#[derive(Clone)]
pub struct Calls {
    ctx: Context,
    /// Which devices exist and are registered.
    pub registry: crate::devices::Registry,
    // One lock, held while publishing, so each channel's events leave in order.
    state: Arc<Mutex<HashMap<String, Tenant>>>,
    /// The facts on their way to JetStream.
    pub facts: FactQueue,
}

enum Fact {
    Channel(ChannelEvent),
    Bridge(BridgeEvent),
}

impl Fact {
    fn type_name(&self) -> &'static str {
        match self {
            Fact::Channel(e) => e.type_name(),
            Fact::Bridge(e) => e.type_name(),
        }
    }
}

fn err(code: &str, field: &str, message: String) -> CommandError {
    CommandError::field(code, field, message)
}

fn new_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

impl Calls {
    pub fn new(ctx: Context) -> Self {
        Self {
            facts: FactQueue::start(ctx.bus.jetstream.clone(), FACTS_WAITING),
            registry: Default::default(),
            state: Arc::default(),
            ctx,
        }
    }

    /// Queues the facts, in order, for JetStream ([`FactQueue`]: each is sent again until it is
    /// taken). Called under the state lock so that each channel's facts leave in order. Fails
    /// only when the queue is full (JetStream away for long): the facts are then dropped, and
    /// counted as unreported.
    async fn publish(&self, tenant: &str, facts: Vec<Fact>) -> Result<(), CommandError> {
        for f in facts {
            let (subject, body) = match &f {
                Fact::Channel(e) => (
                    self.ctx
                        .bus
                        .subjects
                        .pbx_event(tenant, "channel", e.channel(), e.type_name()),
                    serde_json::to_vec(e),
                ),
                Fact::Bridge(e) => (
                    self.ctx
                        .bus
                        .subjects
                        .pbx_event(tenant, "bridge", e.bridge(), e.type_name()),
                    serde_json::to_vec(e),
                ),
            };
            let span = tracing::info_span!(
                "pbx channel report",
                otel.name = format!("pbx report {}", f.type_name()),
                otel.kind = "producer",
            );
            let mut headers = async_nats::HeaderMap::new();
            span.in_scope(|| cc_bus::inject_trace(&mut headers));
            self.facts
                .send(cc_bus::facts::Fact {
                    subject,
                    headers,
                    body: body.expect("events serialize").into(),
                    span,
                })
                .map_err(|e| {
                    CommandError::new("unavailable", format!("could not report a PBX event: {e}"))
                })?;
        }
        Ok(())
    }

    /// A caller dials `dialed` (a queue number): a new inbound channel.
    pub async fn place_caller(
        &self,
        tenant: &str,
        dialed: &str,
        caller: Party,
    ) -> Result<ChannelState, CommandError> {
        if caller.number.trim().is_empty() {
            return Err(err(
                "missing_field",
                "caller_number",
                "caller_number is required".into(),
            ));
        }
        // Text from outside is checked here, at the simulator's edge (the HTTP surface, the
        // PlaceCall command and the traffic generator all come through): digits and + for the
        // number, control characters out of the name, lengths bounded.
        let caller = Party::parse(&caller.number, &caller.name)
            .map_err(|e| err("invalid_field", e.field, e.message))?;
        if dialed.is_empty() || dialed.len() > 15 || !dialed.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err(
                "invalid_field",
                "queue",
                format!("a queue number is 1 to 15 digits, got {dialed:?}"),
            ));
        }
        let mut st = self.state.lock().await;
        let t = st.entry(tenant.to_string()).or_default();
        let ch = ChannelState {
            channel: new_id(),
            direction: Direction::Inbound,
            caller: caller.clone(),
            dialed: Some(dialed.to_string()),
            device: None,
            number: None,
            answered: false,
            held: false,
            bridge: None,
        };
        t.channels.insert(ch.channel.clone(), ch.clone());
        let e = ChannelEvent::ChannelCreated {
            tenant: tenant.into(),
            channel: ch.channel.clone(),
            direction: Direction::Inbound,
            caller,
            dialed: Some(dialed.into()),
            device: None,
            number: None,
            at: Utc::now(),
        };
        let id = ch.channel.clone();
        if let Err(e) = self.publish(tenant, vec![Fact::Channel(e)]).await {
            // Nobody heard of this caller: the call did not happen.
            let t = st.entry(tenant.to_string()).or_default();
            t.channels.remove(&id);
            t.tally.unreported += 1;
            return Err(e);
        }
        st.entry(tenant.to_string())
            .or_default()
            .tally
            .inbound
            .insert(id, 0);
        Ok(ch)
    }

    /// The contract's CheckRoute: the refusals an Originate to `endpoint` would give now (an
    /// outside number is 1 to 32 of `0-9 + * #`; a device must exist and be registered).
    pub async fn check_route(&self, tenant: &str, endpoint: &Endpoint) -> Result<(), CommandError> {
        match endpoint {
            Endpoint::Device(d) => {
                match crate::devices::get(&self.ctx.pool, &self.registry, tenant, d).await? {
                    None => Err(err(
                        "unknown_device",
                        "device",
                        format!("There is no device {d} on this PBX"),
                    )),
                    Some(s) if !s.registered => Err(err(
                        "device_unavailable",
                        "device",
                        format!("Device {d} is not registered"),
                    )),
                    Some(_) => Ok(()),
                }
            }
            Endpoint::Number(n) => {
                if n.is_empty()
                    || n.chars().count() > 32
                    || !n
                        .chars()
                        .all(|c| c.is_ascii_digit() || matches!(c, '+' | '*' | '#'))
                {
                    return Err(err(
                        "invalid_field",
                        "number",
                        format!("{n:?} is not a phone number (1 to 32 of 0-9 + * #)"),
                    ));
                }
                Ok(())
            }
        }
    }

    /// The contract's Originate: a leg to a device (it rings) or an outside number.
    pub async fn originate(
        &self,
        tenant: &str,
        cmd: Originate,
    ) -> Result<ChannelState, CommandError> {
        self.check_route(tenant, &cmd.endpoint).await?;
        let mut st = self.state.lock().await;
        let t = st.entry(tenant.to_string()).or_default();
        let id = cmd.channel.clone().unwrap_or_else(new_id);
        if t.channels.contains_key(&id) {
            return Err(err(
                "channel_exists",
                "channel",
                format!("channel {id} already exists"),
            ));
        }
        let (device, number) = match &cmd.endpoint {
            Endpoint::Device(d) => (Some(d.clone()), None),
            Endpoint::Number(n) => (None, Some(n.clone())),
        };
        let busy = device
            .as_ref()
            .is_some_and(|d| t.channels.values().any(|c| c.device.as_ref() == Some(d)));
        let ch = ChannelState {
            channel: id.clone(),
            direction: Direction::Outbound,
            caller: cmd.caller.clone(),
            dialed: None,
            device: device.clone(),
            number: number.clone(),
            answered: false,
            held: false,
            bridge: None,
        };
        let now = Utc::now();
        let mut facts = vec![Fact::Channel(ChannelEvent::ChannelCreated {
            tenant: tenant.into(),
            channel: id.clone(),
            direction: Direction::Outbound,
            caller: cmd.caller,
            dialed: None,
            device: device.clone(),
            number: number.clone(),
            at: now,
        })];
        if busy {
            facts.push(Fact::Channel(ChannelEvent::ChannelHungUp {
                tenant: tenant.into(),
                channel: id.clone(),
                cause: HangupCause::Busy,
                at: now,
            }));
        } else {
            t.channels.insert(id.clone(), ch.clone());
            facts.push(Fact::Channel(ChannelEvent::ChannelRinging {
                tenant: tenant.into(),
                channel: id.clone(),
                at: now,
            }));
        }
        let mode = match &device {
            Some(d) => t.phones.get(d).copied().unwrap_or(PhoneMode::Manual),
            // Outside numbers pick up after a short while.
            None => PhoneMode::AutoAnswer { after_ms: 300 },
        };
        let span = match (&device, busy) {
            (Some(d), false) => tracing::info_span!("phone ringing", device = %d),
            _ => tracing::Span::none(),
        };
        self.publish(tenant, facts).instrument(span).await?;
        if let (Some(d), true) = (&device, busy) {
            let t = st.entry(tenant.to_string()).or_default();
            t.tally.devices.entry(d.to_string()).or_default().busy += 1;
            t.tally
                .legs
                .insert(id.clone(), (d.to_string(), "busy".to_string()));
        }
        drop(st);
        if !busy {
            self.react(tenant, &id, mode);
        }
        Ok(ch)
    }

    /// Schedules what the ringing phone does by itself.
    fn react(&self, tenant: &str, channel: &str, mode: PhoneMode) {
        let (me, tenant, channel) = (self.clone(), tenant.to_string(), channel.to_string());
        let (delay, answer, talk) = match mode {
            PhoneMode::AutoAnswer { after_ms } => (after_ms, true, None),
            PhoneMode::Reject { after_ms } => (after_ms, false, None),
            PhoneMode::Agent {
                after_ms,
                probability,
                talk_ms,
            } => {
                if crate::traffic::uniform() >= probability {
                    return; // this time the agent does not pick up
                }
                (
                    after_ms,
                    true,
                    Some(crate::traffic::exponential(talk_ms as f64)),
                )
            }
            PhoneMode::Manual | PhoneMode::Ignore => return,
        };
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            if !answer {
                let _ = me.hangup(&tenant, &channel, HangupCause::Rejected).await;
                return;
            }
            if me.answer(&tenant, &channel).await.is_err() {
                return;
            }
            if let Some(talk) = talk {
                tokio::time::sleep(talk).await;
                let _ = me.hangup(&tenant, &channel, HangupCause::Normal).await;
            }
        });
    }

    /// Answers a ringing channel (a phone picking up, or the application answering a caller).
    pub async fn answer(&self, tenant: &str, channel: &str) -> Result<ChannelState, CommandError> {
        let mut st = self.state.lock().await;
        let t = st.entry(tenant.to_string()).or_default();
        let ch = t
            .channels
            .get_mut(channel)
            .ok_or_else(|| unknown_channel(channel))?;
        if ch.answered {
            return Ok(ch.clone());
        }
        ch.answered = true;
        let out = ch.clone();
        let e = ChannelEvent::ChannelAnswered {
            tenant: tenant.into(),
            channel: channel.into(),
            at: Utc::now(),
        };
        self.publish(tenant, vec![Fact::Channel(e)]).await?;
        Ok(out)
    }

    /// Ends a channel; a caller who hangs up before an answer is `caller_gone`.
    pub async fn hangup(
        &self,
        tenant: &str,
        channel: &str,
        cause: HangupCause,
    ) -> Result<(), CommandError> {
        self.hangup_if(tenant, channel, cause, false).await
    }

    /// Ends a channel; with `unless_answered`, an answered one is refused instead.
    async fn hangup_if(
        &self,
        tenant: &str,
        channel: &str,
        cause: HangupCause,
        unless_answered: bool,
    ) -> Result<(), CommandError> {
        let mut st = self.state.lock().await;
        let t = st.entry(tenant.to_string()).or_default();
        let answered = t
            .channels
            .get(channel)
            .ok_or_else(|| unknown_channel(channel))?
            .answered;
        if unless_answered && answered {
            return Err(err(
                "already_answered",
                "channel",
                format!("channel {channel} was answered"),
            ));
        }
        let ch = t
            .channels
            .remove(channel)
            .ok_or_else(|| unknown_channel(channel))?;
        let requested = cause;
        let cause = match (cause, ch.direction, ch.answered) {
            (HangupCause::Normal, Direction::Inbound, false) => HangupCause::CallerGone,
            (HangupCause::Normal, Direction::Outbound, false) => HangupCause::NoAnswer,
            (c, _, _) => c,
        };
        let now = Utc::now();
        let mut facts = vec![Fact::Channel(ChannelEvent::ChannelHungUp {
            tenant: tenant.into(),
            channel: channel.into(),
            cause,
            at: now,
        })];
        if let Some(b) = ch.bridge.clone() {
            facts.push(leave_bridge(t, tenant, &b, channel, now));
        }
        if let Err(e) = self.publish(tenant, facts).await {
            st.entry(tenant.to_string()).or_default().tally.unreported += 1;
            return Err(e);
        }
        let t = st.entry(tenant.to_string()).or_default();
        let bridged = t.bridged.remove(channel);
        let tally = &mut t.tally;
        if let Some(n) = tally.inbound.get_mut(channel) {
            *n += 1;
        }
        if let (Some(d), Direction::Outbound) = (&ch.device, ch.direction) {
            let dt = tally.devices.entry(d.to_string()).or_default();
            let outcome = match (ch.answered, requested) {
                (true, HangupCause::NoAnswer) => {
                    dt.answered_then_no_answer += 1;
                    "late_answer"
                }
                (true, _) if bridged => {
                    dt.completed += 1;
                    "completed"
                }
                // Answered, then hung up by the application before anyone was put through:
                // the caller had gone (or another phone answered first) as this one answered.
                // Which came first is the order of the PBX's own reports.
                (true, _) => {
                    dt.answered_unconnected += 1;
                    "answered_unconnected"
                }
                (false, HangupCause::NoAnswer) => {
                    dt.missed += 1;
                    "missed"
                }
                (false, HangupCause::Rejected) => {
                    dt.rejected += 1;
                    "rejected"
                }
                (false, _) => {
                    dt.withdrawn += 1;
                    "withdrawn"
                }
            };
            tally
                .legs
                .insert(channel.to_string(), (d.to_string(), outcome.to_string()));
        }
        Ok(())
    }

    /// The contract's CancelRing: a ringing outbound leg ends as rung out; an answered one is
    /// refused `already_answered` (the answer happened first: it stands). Checked and done
    /// under one lock, so an answer cannot slip in between.
    pub async fn cancel_ring(&self, tenant: &str, channel: &str) -> Result<(), CommandError> {
        self.hangup_if(tenant, channel, HangupCause::NoAnswer, true)
            .await
    }

    /// What the simulator saw of the tenant's calls ([`Tally`]).
    pub async fn tally(&self, tenant: &str) -> Tally {
        let st = self.state.lock().await;
        let mut tally = st.get(tenant).map(|t| t.tally.clone()).unwrap_or_default();
        tally.facts_waiting = self.facts.waiting();
        tally
    }

    /// Joins channels in a bridge.
    pub async fn bridge(
        &self,
        tenant: &str,
        bridge: &str,
        channels: &[String],
    ) -> Result<Vec<String>, CommandError> {
        if channels.is_empty() {
            return Err(err(
                "invalid_field",
                "channels",
                "a bridge joins at least one channel".into(),
            ));
        }
        let mut st = self.state.lock().await;
        let t = st.entry(tenant.to_string()).or_default();
        if let Some(missing) = channels.iter().find(|c| !t.channels.contains_key(*c)) {
            return Err(unknown_channel(missing));
        }
        let (facts, members) = join(t, tenant, bridge, channels);
        self.publish(tenant, facts).await?;
        Ok(members)
    }

    /// Takes a channel out of its bridge.
    pub async fn unbridge(&self, tenant: &str, channel: &str) -> Result<(), CommandError> {
        let mut st = self.state.lock().await;
        let t = st.entry(tenant.to_string()).or_default();
        let ch = t
            .channels
            .get_mut(channel)
            .ok_or_else(|| unknown_channel(channel))?;
        let Some(b) = ch.bridge.take() else {
            return Ok(());
        };
        let fact = leave_bridge(t, tenant, &b, channel, Utc::now());
        self.publish(tenant, vec![fact]).await
    }

    /// Sets how a channel takes part in its bridge (the simulator records who hears whom).
    /// With `join`, the channel first joins that bridge (as Bridge does), in one step.
    pub async fn set_bridge_mode(
        &self,
        tenant: &str,
        channel: &str,
        mode: BridgeMode,
        join_bridge: Option<&str>,
    ) -> Result<std::collections::BTreeMap<String, BridgeMode>, CommandError> {
        let mut st = self.state.lock().await;
        let t = st.entry(tenant.to_string()).or_default();
        let ch = t
            .channels
            .get(channel)
            .ok_or_else(|| unknown_channel(channel))?;
        let Some(bridge) = join_bridge
            .map(str::to_string)
            .or_else(|| ch.bridge.clone())
        else {
            return Err(err(
                "not_bridged",
                "channel",
                format!("Channel {channel} is in no bridge"),
            ));
        };
        let members = t.bridges.get(&bridge).cloned().unwrap_or_default();
        if let BridgeMode::Whisper { to } = &mode {
            if to == channel || !members.contains(to) {
                return Err(err(
                    "invalid_field",
                    "to",
                    format!("{to:?} is not another channel of bridge {bridge}"),
                ));
            }
        }
        let mut facts = vec![];
        let mut members = members;
        if ch.bridge.as_deref() != Some(bridge.as_str()) {
            let (joined, now_members) = join(t, tenant, &bridge, &[channel.to_string()]);
            facts = joined;
            facts.pop(); // its BridgeChanged: told once below, with the mode
            members = now_members;
        }
        t.modes.insert(channel.to_string(), mode);
        let modes = modes_of(t, &members);
        facts.push(Fact::Bridge(BridgeEvent::BridgeChanged {
            tenant: tenant.into(),
            bridge: bridge.clone(),
            channels: members,
            modes: modes.clone(),
            at: Utc::now(),
        }));
        self.publish(tenant, facts).await?;
        Ok(modes)
    }

    pub async fn hold(
        &self,
        tenant: &str,
        channel: &str,
        held: bool,
    ) -> Result<ChannelState, CommandError> {
        let mut st = self.state.lock().await;
        let t = st.entry(tenant.to_string()).or_default();
        let ch = t
            .channels
            .get_mut(channel)
            .ok_or_else(|| unknown_channel(channel))?;
        if ch.held == held {
            return Ok(ch.clone());
        }
        ch.held = held;
        let out = ch.clone();
        let at = Utc::now();
        let e = if held {
            ChannelEvent::ChannelHeld {
                tenant: tenant.into(),
                channel: channel.into(),
                at,
            }
        } else {
            ChannelEvent::ChannelUnheld {
                tenant: tenant.into(),
                channel: channel.into(),
                at,
            }
        };
        self.publish(tenant, vec![Fact::Channel(e)]).await?;
        Ok(out)
    }

    pub async fn list(&self, tenant: &str) -> Vec<ChannelState> {
        let st = self.state.lock().await;
        let mut v: Vec<_> = st
            .get(tenant)
            .map(|t| t.channels.values().cloned().collect())
            .unwrap_or_default();
        v.sort_by(|a, b| a.channel.cmp(&b.channel));
        v
    }

    /// The live channel of a device (ringing or answered).
    async fn device_channel(
        &self,
        tenant: &str,
        device: &DeviceId,
    ) -> Result<ChannelState, CommandError> {
        let st = self.state.lock().await;
        st.get(tenant)
            .and_then(|t| {
                t.channels
                    .values()
                    .find(|c| c.device.as_ref() == Some(device))
                    .cloned()
            })
            .ok_or_else(|| err("no_call", "device", format!("Device {device} has no call")))
    }

    /// The phone of `device` does `action`: answer, reject or hang up.
    pub async fn phone(
        &self,
        tenant: &str,
        device: &DeviceId,
        action: PhoneAction,
    ) -> Result<(), CommandError> {
        let ch = self.device_channel(tenant, device).await?;
        match action {
            PhoneAction::Answer if !ch.answered => {
                self.answer(tenant, &ch.channel).await.map(|_| ())
            }
            PhoneAction::Answer => Err(err(
                "already_answered",
                "device",
                format!("Device {device} is already on the call"),
            )),
            PhoneAction::Reject if !ch.answered => {
                self.hangup(tenant, &ch.channel, HangupCause::Rejected)
                    .await
            }
            PhoneAction::Reject => Err(err(
                "already_answered",
                "device",
                format!("Device {device} answered; hang up instead"),
            )),
            PhoneAction::Hangup => self.hangup(tenant, &ch.channel, HangupCause::Normal).await,
        }
    }

    pub async fn set_mode(&self, tenant: &str, device: &DeviceId, mode: PhoneMode) {
        self.state
            .lock()
            .await
            .entry(tenant.to_string())
            .or_default()
            .phones
            .insert(device.clone(), mode);
    }

    /// Sets the mode of every phone of the tenant.
    pub async fn set_all_modes(&self, tenant: &str, devices: &[DeviceId], mode: PhoneMode) {
        let mut st = self.state.lock().await;
        let t = st.entry(tenant.to_string()).or_default();
        for d in devices {
            t.phones.insert(d.clone(), mode);
        }
    }

    /// Whether a channel is still up and not answered (a waiting caller).
    pub async fn waiting(&self, tenant: &str, channel: &str) -> bool {
        let st = self.state.lock().await;
        st.get(tenant)
            .and_then(|t| t.channels.get(channel))
            .is_some_and(|c| !c.answered)
    }
}

/// What a phone's user does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhoneAction {
    Answer,
    Reject,
    Hangup,
}

fn unknown_channel(c: &str) -> CommandError {
    CommandError::field(
        "unknown_channel",
        "channel",
        format!("There is no channel {c}"),
    )
}

/// Channels (all known) join a bridge, leaving any other: the facts, ending with the bridge's
/// BridgeChanged, and its members.
fn join(
    t: &mut Tenant,
    tenant: &str,
    bridge: &str,
    channels: &[String],
) -> (Vec<Fact>, Vec<String>) {
    let now = Utc::now();
    let mut facts = vec![];
    for c in channels {
        if let Some(old) = t.channels[c].bridge.clone().filter(|b| b != bridge) {
            facts.push(leave_bridge(t, tenant, &old, c, now));
        }
    }
    let members = t.bridges.entry(bridge.to_string()).or_default();
    for c in channels {
        if !members.contains(c) {
            members.push(c.clone());
        }
    }
    let members = members.clone();
    for c in channels {
        t.channels.get_mut(c).expect("checked").bridge = Some(bridge.to_string());
    }
    if members.len() >= 2 {
        t.bridged.extend(members.iter().cloned());
    }
    facts.push(Fact::Bridge(BridgeEvent::BridgeChanged {
        tenant: tenant.into(),
        bridge: bridge.into(),
        modes: modes_of(t, &members),
        channels: members.clone(),
        at: now,
    }));
    (facts, members)
}

fn leave_bridge(
    t: &mut Tenant,
    tenant: &str,
    bridge: &str,
    channel: &str,
    at: chrono::DateTime<Utc>,
) -> Fact {
    t.modes.remove(channel);
    let members = t.bridges.entry(bridge.to_string()).or_default();
    members.retain(|c| c != channel);
    let members = members.clone();
    if members.is_empty() {
        t.bridges.remove(bridge);
        Fact::Bridge(BridgeEvent::BridgeDestroyed {
            tenant: tenant.into(),
            bridge: bridge.into(),
            at,
        })
    } else {
        Fact::Bridge(BridgeEvent::BridgeChanged {
            tenant: tenant.into(),
            bridge: bridge.into(),
            modes: modes_of(t, &members),
            channels: members,
            at,
        })
    }
}

/// The bridge's channels that are not ordinary parties, and how they take part.
fn modes_of(t: &Tenant, members: &[String]) -> std::collections::BTreeMap<String, BridgeMode> {
    members
        .iter()
        .filter_map(|m| t.modes.get(m).map(|mode| (m.clone(), mode.clone())))
        .filter(|(_, m)| *m != BridgeMode::Speak)
        .collect()
}
