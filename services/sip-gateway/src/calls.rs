//! Call legs (channels) and bridges over SIP: the PBX contract's commands and the facts it
//! reports, for callers (inbound INVITEs to a queue number) and for the legs the gateway places
//! to registered phones (Originate). Every leg's media is anchored here ([`crate::media`]);
//! which leg hears which is decided from the bridges and holds by [`plan`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tracing::Instrument;

use cc_bus::CommandError;
use cc_contracts::domain::DeviceId;
use cc_contracts::pbx::*;
use chrono::Utc;
use rsipstack::dialog::dialog::{DialogState, TerminatedReason};
use rsipstack::dialog::invitation::InviteOption;
use rsipstack::sip::{HeadersExt, StatusCode};
use rsipstack::transaction::Transaction;
use rsipstack::transport::SipAddr;
use tokio::sync::Mutex;

use crate::media::{Leg, Mixer, Plan};
use crate::registrar::reason;
use crate::report::Fact;
use crate::sdp;
use crate::stack::{self, reply, Signalling};
use crate::Gateway;
use rsipstack::sip::ToTypedHeader;

/// The most channels a bridge joins (each party of a bigger bridge costs a mix every 20 ms).
pub const MAX_BRIDGE: usize = 8;

struct Channel {
    state: ChannelState,
    leg: Arc<Leg>,
    signalling: Arc<dyn Signalling>,
    call_id: String,
    /// The phone put the call on hold (its re-INVITE said sendonly or inactive).
    phone_hold: bool,
    session_id: u64,
    sdp_version: u64,
    /// For a leg we placed: whether the phone answered (SIP), so Hangup sends BYE, not CANCEL.
    sip_answered: bool,
    ringing: bool,
    /// How it takes part in its bridge (reset when it leaves).
    mode: BridgeMode,
    /// The phone's REFER was reported and not finished: its end is NOTIFYed as a success.
    refer_pending: bool,
    /// The other leg of a phone's own call to an extension (its consultation before an
    /// attended transfer): the two end together, and the call ends once the PBX contract
    /// bridges either leg elsewhere (the transfer took it).
    peer: Option<String>,
    /// For the calling leg of such a call: our SDP answer, sent when the extension answers.
    pending_answer: Option<Vec<u8>>,
}

#[derive(Default)]
struct Tenant {
    channels: HashMap<String, Channel>,
    bridges: HashMap<String, Vec<String>>,
    /// The mixer of each bridge where someone hears several parties.
    mixers: HashMap<String, Arc<Mixer>>,
}

#[derive(Default)]
struct State {
    tenants: HashMap<String, Tenant>,
    /// SIP Call-ID -> (tenant, channel).
    by_call_id: HashMap<String, (String, String)>,
}

/// The gateway's calls. One lock, held while facts are published, so each channel's facts
/// leave in order (as in the simulator).
#[derive(Clone, Default)]
pub struct Calls {
    state: Arc<Mutex<State>>,
}

fn err(code: &str, field: &str, message: String) -> CommandError {
    CommandError::field(code, field, message)
}

fn unknown_channel(c: &str) -> CommandError {
    err(
        "unknown_channel",
        "channel",
        format!("There is no channel {c}"),
    )
}

fn new_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// What one channel hears: the music, and the channels it hears. Pure.
///
/// - A channel on hold (the contract's Hold) hears the music; nobody hears it.
/// - A phone that put the call on hold itself hears nothing and is heard by nobody; the other
///   parties of its bridge hear the music.
/// - Otherwise a channel hears every other party of its bridge whose mode lets it
///   ([`BridgeMode::heard_by`]: a listening supervisor is heard by none, a whispering one by
///   the agent only). A caller in no bridge (waiting in a queue, or between two agents) hears
///   the music.
fn hears(t: &Tenant, id: &str) -> (bool, Vec<String>) {
    let Some(c) = t.channels.get(id) else {
        return (false, vec![]);
    };
    let inbound = c.state.direction == Direction::Inbound;
    let silent = c.state.held || c.phone_hold;
    let others: Vec<(&String, &Channel)> =
        match c.state.bridge.as_ref().and_then(|b| t.bridges.get(b)) {
            Some(members) => members
                .iter()
                .filter(|m| m.as_str() != id)
                .filter_map(|m| t.channels.get(m).map(|c| (m, c)))
                .collect(),
            None => vec![],
        };
    let heard = if silent {
        vec![]
    } else {
        others
            .iter()
            .filter(|(_, o)| !o.state.held && !o.phone_hold && o.mode.heard_by(id))
            .map(|(m, _)| (*m).clone())
            .collect()
    };
    let music = c.state.held
        || (!c.phone_hold && others.iter().any(|(_, o)| o.phone_hold))
        || (inbound && !silent && others.is_empty());
    (music, heard)
}

impl Calls {
    /// Applies the media plan to these channels and everyone in their bridges. A channel that
    /// hears one other party gets that party's packets relayed; one that hears several gets
    /// the bridge's mix (the mixer exists while someone needs it).
    fn refresh(t: &mut Tenant, ids: &HashSet<String>) {
        let mut all: HashSet<String> = ids.clone();
        let mut bridges: HashSet<String> = HashSet::new();
        for id in ids {
            if let Some(b) = t.channels.get(id).and_then(|c| c.state.bridge.clone()) {
                if let Some(m) = t.bridges.get(&b) {
                    all.extend(m.iter().cloned());
                }
                bridges.insert(b);
            }
        }
        let plans: HashMap<String, (bool, Vec<String>)> =
            all.iter().map(|id| (id.clone(), hears(t, id))).collect();
        // Mixes per bridge: who hears several parties, and whom.
        for b in &bridges {
            let members = t.bridges.get(b).cloned().unwrap_or_default();
            let mixes: Vec<(Arc<crate::media::Output>, Vec<u64>)> = members
                .iter()
                .filter_map(|m| {
                    let (_, heard) = plans.get(m)?;
                    if heard.len() < 2 {
                        return None;
                    }
                    let out = t.channels.get(m)?.leg.output.clone();
                    Some((
                        out,
                        heard
                            .iter()
                            .filter_map(|h| t.channels.get(h))
                            .map(|h| h.leg.id)
                            .collect(),
                    ))
                })
                .collect();
            if mixes.is_empty() {
                t.mixers.remove(b);
            } else {
                t.mixers
                    .entry(b.clone())
                    .or_insert_with(Mixer::start)
                    .set_mixes(mixes);
            }
        }
        for id in &all {
            let Some(c) = t.channels.get(id) else {
                continue;
            };
            let (music, _) = plans[id];
            // Relayed to: the channels that hear this one alone.
            let listeners = plans
                .iter()
                .filter(|(_, (_, heard))| heard.len() == 1 && heard[0] == *id)
                .filter_map(|(l, _)| t.channels.get(l))
                .map(|l| l.leg.output.clone())
                .collect();
            let mixed = plans
                .values()
                .any(|(_, heard)| heard.len() >= 2 && heard.contains(id));
            let mixer = c
                .state
                .bridge
                .as_ref()
                .filter(|_| mixed)
                .and_then(|b| t.mixers.get(b))
                .cloned();
            c.leg.set_plan(Plan {
                listeners,
                music,
                mixer,
            });
        }
    }

    /// The extension a phone called answered (`far`): the calling phone gets our answer and the
    /// two legs are bridged. The facts of that, if `far` is such a leg.
    fn connect_internal(t: &mut Tenant, tenant: &str, far: &str) -> Vec<Fact> {
        let Some(near) = t.channels.get(far).and_then(|c| c.peer.clone()) else {
            return vec![];
        };
        let Some(c) = t.channels.get_mut(&near) else {
            return vec![];
        };
        let Some(answer) = c.pending_answer.take() else {
            return vec![];
        };
        if let Err(e) = c.signalling.accept(answer) {
            tracing::warn!(error = %e, "could not answer a phone's call to an extension");
        }
        c.state.answered = true;
        let mut facts = vec![Fact::Channel(ChannelEvent::ChannelAnswered {
            tenant: tenant.into(),
            channel: near.clone(),
            at: Utc::now(),
        })];
        match join(
            t,
            tenant,
            &format!("ext-{near}"),
            &[near, far.to_string()],
            None,
        ) {
            Ok((f, _)) => facts.extend(f),
            Err(e) => tracing::warn!(error = %e.message, "could not bridge a phone's call"),
        }
        facts
    }

    /// The contract's SetBridgeMode: how a channel takes part in its bridge; with `join`, the
    /// channel joins that bridge in that mode in one step.
    pub async fn set_bridge_mode(
        &self,
        gw: &Gateway,
        tenant: &str,
        channel: &str,
        mode: BridgeMode,
        join_bridge: Option<&str>,
    ) -> Result<std::collections::BTreeMap<String, BridgeMode>, CommandError> {
        let mut st = self.state.lock().await;
        let t = st.tenants.entry(tenant.to_string()).or_default();
        let c = t
            .channels
            .get(channel)
            .ok_or_else(|| unknown_channel(channel))?;
        let current = c.state.bridge.clone();
        let Some(bridge) = join_bridge.map(str::to_string).or_else(|| current.clone()) else {
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
        if current.as_deref() != Some(bridge.as_str()) {
            let (facts, _) = join(t, tenant, &bridge, &[channel.to_string()], Some(&mode))?;
            let modes = modes_of(t, &t.bridges[&bridge].clone());
            gw.reporter.publish(tenant, facts).await;
            return Ok(modes);
        }
        t.channels.get_mut(channel).expect("checked").mode = mode;
        Self::refresh(t, &HashSet::from([channel.to_string()]));
        let modes = modes_of(t, &members);
        let fact = Fact::Bridge(BridgeEvent::BridgeChanged {
            tenant: tenant.into(),
            bridge,
            channels: members,
            modes: modes.clone(),
            at: Utc::now(),
        });
        gw.reporter.publish(tenant, vec![fact]).await;
        Ok(modes)
    }

    pub async fn list(&self, tenant: &str) -> Vec<ChannelState> {
        let st = self.state.lock().await;
        let mut v: Vec<_> = st
            .tenants
            .get(tenant)
            .map(|t| t.channels.values().map(|c| c.state.clone()).collect())
            .unwrap_or_default();
        v.sort_by(|a, b| a.channel.cmp(&b.channel));
        v
    }

    /// The contract's Originate: an INVITE to a registered device.
    pub async fn originate(
        &self,
        gw: &Gateway,
        tenant: &str,
        cmd: Originate,
    ) -> Result<ChannelState, CommandError> {
        self.originate_for(gw, tenant, cmd, None).await
    }

    /// An INVITE to a device; with `peer`, as the far leg of a phone's own call to it.
    async fn originate_for(
        &self,
        gw: &Gateway,
        tenant: &str,
        cmd: Originate,
        peer: Option<&str>,
    ) -> Result<ChannelState, CommandError> {
        let route = route_of(gw, tenant, &cmd.endpoint)?;
        let (device, number) = (route.device.clone(), route.number.clone());
        let id = cmd.channel.clone().unwrap_or_else(new_id);
        let caller = sanitize(cmd.caller.clone());
        let now = Utc::now();
        let created = ChannelEvent::ChannelCreated {
            tenant: tenant.into(),
            channel: id.clone(),
            direction: Direction::Outbound,
            caller: caller.clone(),
            dialed: None,
            device: device.clone(),
            number: number.clone(),
            at: now,
        };
        let state = ChannelState {
            channel: id.clone(),
            direction: Direction::Outbound,
            caller: caller.clone(),
            dialed: None,
            device: device.clone(),
            number: number.clone(),
            answered: false,
            held: false,
            bridge: None,
        };
        let mut st = self.state.lock().await;
        let t = st.tenants.entry(tenant.to_string()).or_default();
        if t.channels.contains_key(&id) {
            return Err(err(
                "channel_exists",
                "channel",
                format!("channel {id} already exists"),
            ));
        }
        if device.is_some()
            && t.channels
                .values()
                .any(|c| c.state.device.is_some() && c.state.device == device)
        {
            // The phone has a call: busy, as the contract says for a device on a call.
            let busy = ChannelEvent::ChannelHungUp {
                tenant: tenant.into(),
                channel: id.clone(),
                cause: HangupCause::Busy,
                at: now,
            };
            gw.reporter
                .publish(tenant, vec![Fact::Channel(created), Fact::Channel(busy)])
                .await;
            return Ok(state);
        }
        let leg = gw
            .media
            .open()
            .await
            .map_err(|e| CommandError::new("unavailable", format!("no RTP port: {e}")))?;
        let session_id: u64 = rand::random::<u32>() as u64;
        let domain = gw.domain(tenant);
        let user = sip_user(&caller.number);
        let parse_uri = |s: String| {
            rsipstack::sip::Uri::try_from(s.as_str())
                .map_err(|e| CommandError::internal(format!("bad SIP URI {s}: {e}")))
        };
        let call_id = format!("{id}@cc-sip-gateway");
        let option = InviteOption {
            caller_display_name: (!caller.name.is_empty()).then(|| caller.name.clone()),
            caller: parse_uri(format!("sip:{user}@{domain}"))?,
            callee: parse_uri(route.uri.clone())?,
            destination: Some(SipAddr {
                r#type: Some(if route.tcp {
                    rsipstack::sip::Transport::Tcp
                } else {
                    rsipstack::sip::Transport::Udp
                }),
                addr: route.target.into(),
            }),
            content_type: Some("application/sdp".into()),
            offer: Some(sdp::offer(gw.media.ip, leg.port, session_id)),
            contact: parse_uri(format!("sip:gw@{}", gw.public_sip_addr()))?,
            call_id: Some(call_id.clone()),
            ..Default::default()
        };
        let (dialog, join) = gw
            .stack
            .dialogs
            .do_invite_async(option, gw.dialog_sender.clone())
            .map_err(|e| {
                CommandError::new("unavailable", format!("could not send the INVITE: {e}"))
            })?;
        t.channels.insert(
            id.clone(),
            Channel {
                state: state.clone(),
                leg,
                signalling: Arc::new(dialog),
                call_id: call_id.clone(),
                phone_hold: false,
                session_id,
                sdp_version: 1,
                sip_answered: false,
                ringing: false,
                mode: BridgeMode::Speak,
                refer_pending: false,
                peer: peer.map(str::to_string),
                pending_answer: None,
            },
        );
        st.by_call_id
            .insert(call_id, (tenant.to_string(), id.clone()));
        remember(gw, tenant, &id).await;
        gw.reporter
            .publish(tenant, vec![Fact::Channel(created)])
            .await;
        drop(st);
        let (me, gw2, tenant2, id2) = (self.clone(), gw.clone(), tenant.to_string(), id.clone());
        // The phone rings from the INVITE to its final answer.
        let ringing = tracing::info_span!(
            "phone ringing",
            otel.kind = "client",
            device = device.as_ref().map(|d| d.as_str()).unwrap_or(""),
            number = number.as_deref().unwrap_or(""),
        );
        tokio::spawn(
            async move {
                let outcome = join.await;
                me.invite_finished(&gw2, &tenant2, &id2, outcome).await;
            }
            .instrument(ringing),
        );
        Ok(state)
    }

    /// The outcome of an INVITE we sent: answered (with the phone's SDP) or failed.
    async fn invite_finished(
        &self,
        gw: &Gateway,
        tenant: &str,
        id: &str,
        outcome: Result<rsipstack::dialog::invitation::InviteAsyncResult, tokio::task::JoinError>,
    ) {
        let response = match outcome {
            Ok(Ok((_, r))) => r,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, channel = id, "INVITE failed");
                None
            }
            Err(_) => None,
        };
        let code = response
            .as_ref()
            .map(|r| r.status_code.code())
            .unwrap_or(408);
        let mut st = self.state.lock().await;
        let Some(t) = st.tenants.get_mut(tenant) else {
            return;
        };
        let Some(c) = t.channels.get_mut(id) else {
            // Hung up meanwhile (CANCEL sent): a 200 that crossed it was ended by the stack.
            return;
        };
        let now = Utc::now();
        if (200..300).contains(&code) {
            let media = response.as_ref().map(|r| sdp::parse(&r.body));
            match media {
                Some(Ok(m)) => {
                    c.leg.set_remote(&m);
                    c.sip_answered = true;
                    c.state.answered = true;
                    let mut facts = vec![];
                    if !c.ringing {
                        c.ringing = true;
                        facts.push(Fact::Channel(ChannelEvent::ChannelRinging {
                            tenant: tenant.into(),
                            channel: id.into(),
                            at: now,
                        }));
                    }
                    facts.push(Fact::Channel(ChannelEvent::ChannelAnswered {
                        tenant: tenant.into(),
                        channel: id.into(),
                        at: now,
                    }));
                    Self::refresh(t, &HashSet::from([id.to_string()]));
                    facts.extend(Self::connect_internal(t, tenant, id));
                    gw.reporter.publish(tenant, facts).await;
                }
                _ => {
                    tracing::warn!(
                        channel = id,
                        "the phone answered with an SDP the gateway cannot use; hanging up"
                    );
                    c.sip_answered = true;
                    let sig = c.signalling.clone();
                    tokio::spawn(async move { sig.end().await });
                    finish(gw, &mut st, tenant, id, HangupCause::Unavailable).await;
                }
            }
            return;
        }
        let cause = match code {
            486 | 600 => HangupCause::Busy,
            603 => HangupCause::Rejected,
            408 | 487 => HangupCause::NoAnswer,
            _ => HangupCause::Unavailable,
        };
        finish(gw, &mut st, tenant, id, cause).await;
    }

    /// A caller's INVITE (outside any dialog).
    pub async fn inbound(&self, gw: &Gateway, mut tx: Transaction) {
        let req = tx.original.clone();
        let Some(source) = stack::source(&req) else {
            return reply(&mut tx, StatusCode::BadRequest, vec![]).await;
        };
        // A PBX may send the gateway's address as the domain: the tenant is the one whose PBX it is.
        let tenant = gw
            .tenant_of_request(&req)
            .or_else(|| gw.tenant_of_pbx(source.ip()));
        let Some(tenant) = tenant else {
            return reply(
                &mut tx,
                StatusCode::NotFound,
                vec![reason("no such SIP domain here")],
            )
            .await;
        };
        let from = req.from_header().ok().and_then(|f| f.typed().ok());
        let from_user = from
            .as_ref()
            .and_then(|f| f.uri.auth.as_ref().map(|a| a.user.clone()))
            .unwrap_or_default();
        let dialed = req
            .uri
            .auth
            .as_ref()
            .map(|a| a.user.clone())
            .unwrap_or_default();
        let is_queue = gw.queues.is_queue(gw, &tenant, &dialed).await;
        let on_pbx = gw.pbx.contains_key(&tenant);
        if on_pbx && !gw.trunk_allows(&tenant, source.ip()) {
            let why = "this tenant's calls come through its PBX";
            return reply(&mut tx, StatusCode::Forbidden, vec![reason(why)]).await;
        }
        // (A trunk-mode tenant's extensions call each other on their PBX, not here.)
        let to_extension = !is_queue
            && !on_pbx
            && DeviceId::parse(&dialed).is_ok_and(|d| gw.registry.is_device(&tenant, d.as_str()));
        let mut calling_device = None;
        if !gw.trunk_allows(&tenant, source.ip()) || to_extension {
            // Not the tenant's trunk: only its own registered devices may call, with digest;
            // and a call to an extension is a device's own call, from any address.
            let device = DeviceId::parse(&from_user)
                .ok()
                .filter(|d| gw.registry.is_device(&tenant, d.as_str()));
            let Some(device) = device else {
                let why = "calls are taken from the tenant's trunk or its devices only";
                return reply(&mut tx, StatusCode::Forbidden, vec![reason(why)]).await;
            };
            if let Err(code) = gw.authorize_invite(&tenant, device.as_str(), &req) {
                let headers = if code == StatusCode::ProxyAuthenticationRequired {
                    let realm = gw.domain(&tenant);
                    vec![rsipstack::sip::Header::ProxyAuthenticate(
                        gw.nonces
                            .challenge(&realm, Utc::now().timestamp(), false)
                            .into(),
                    )]
                } else {
                    vec![reason("wrong user name or password")]
                };
                return reply(&mut tx, code, headers).await;
            }
            calling_device = Some(device);
        }
        // A device calling another extension of its tenant: a call of its own (a consultation
        // before an attended transfer from the phone); the gateway bridges the two.
        let internal = match (&calling_device, DeviceId::parse(&dialed)) {
            (Some(_), Ok(d)) if to_extension => Some((new_id(), d)),
            _ => None,
        };
        if internal.is_none() && !is_queue {
            return reply(
                &mut tx,
                StatusCode::NotFound,
                vec![reason("the number dialled is no queue of this tenant")],
            )
            .await;
        }
        let remote = match sdp::parse(&req.body) {
            Ok(m) => m,
            Err(e @ sdp::SdpError::Malformed(_)) => {
                return reply(
                    &mut tx,
                    StatusCode::BadRequest,
                    vec![reason(&e.to_string())],
                )
                .await
            }
            Err(e) => {
                return reply(
                    &mut tx,
                    StatusCode::NotAcceptableHere,
                    vec![reason(&e.to_string())],
                )
                .await
            }
        };
        let caller = caller_of(&req, from.as_ref(), gw.trunk_allows(&tenant, source.ip()));
        let caller_party = caller.clone();
        let leg = match gw.media.open().await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "no RTP port for a caller");
                return reply(
                    &mut tx,
                    StatusCode::ServiceUnavailable,
                    vec![reason("no media port free")],
                )
                .await;
            }
        };
        leg.set_remote(&remote);
        let contact =
            rsipstack::sip::Uri::try_from(format!("sip:gw@{}", gw.public_sip_addr()).as_str()).ok();
        let mut dialog = match gw.stack.dialogs.get_or_create_server_invite(
            &tx,
            gw.dialog_sender.clone(),
            None,
            contact,
        ) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "could not create a dialog for a caller");
                return reply(&mut tx, StatusCode::ServerInternalError, vec![]).await;
            }
        };
        let session_id: u64 = rand::random::<u32>() as u64;
        let answer = sdp::answer(gw.media.ip, leg.port, session_id, 1, &remote);
        let call_id = req
            .call_id_header()
            .map(|c| c.value().to_string())
            .unwrap_or_default();
        let id = new_id();
        let signalling: Arc<dyn Signalling> = Arc::new(dialog.clone());
        {
            let mut st = self.state.lock().await;
            let state = ChannelState {
                channel: id.clone(),
                direction: Direction::Inbound,
                caller: caller.clone(),
                dialed: Some(dialed.clone()),
                device: None,
                number: None,
                answered: false,
                held: false,
                bridge: None,
            };
            let t = st.tenants.entry(tenant.clone()).or_default();
            t.channels.insert(
                id.clone(),
                Channel {
                    state,
                    leg,
                    signalling: signalling.clone(),
                    call_id: call_id.clone(),
                    phone_hold: remote.direction.is_hold(),
                    session_id,
                    sdp_version: 1,
                    sip_answered: true,
                    ringing: false,
                    mode: BridgeMode::Speak,
                    refer_pending: false,
                    peer: internal.as_ref().map(|(b, _)| b.clone()),
                    pending_answer: internal.as_ref().map(|_| answer.clone()),
                },
            );
            Self::refresh(t, &HashSet::from([id.clone()]));
            st.by_call_id.insert(call_id, (tenant.clone(), id.clone()));
            remember(gw, &tenant, &id).await;
            // The queue answers the caller at once, with music, as queues do (a call to an
            // extension is answered when the extension answers).
            if internal.is_none() {
                if let Err(e) = signalling.accept(answer) {
                    tracing::warn!(error = %e, "could not answer a caller");
                }
            }
            let created = ChannelEvent::ChannelCreated {
                tenant: tenant.clone(),
                channel: id.clone(),
                direction: Direction::Inbound,
                caller,
                dialed: Some(dialed),
                device: None,
                number: None,
                at: Utc::now(),
            };
            gw.reporter
                .publish(&tenant, vec![Fact::Channel(created)])
                .await;
        }
        if let Some((far, device)) = internal {
            let ring = Originate {
                channel: Some(far.clone()),
                endpoint: Endpoint::Device(device),
                caller: caller_party.clone(),
            };
            let rung = self.originate_for(gw, &tenant, ring, Some(&id)).await;
            let mut st = self.state.lock().await;
            let gone = st
                .tenants
                .get(&tenant)
                .is_none_or(|t| !t.channels.contains_key(&far));
            if let Err(e) = &rung {
                tracing::info!(error = %e.message, "a phone's call to an extension could not ring");
            }
            if rung.is_err() || gone {
                // Busy (the extension has a call), or it could not be rung.
                signalling.reject(if rung.is_ok() { 486 } else { 480 });
                let facts = remove(&mut st, &tenant, &id, HangupCause::Busy, Utc::now());
                forget(gw, &tenant, &id).await;
                gw.reporter.publish(&tenant, facts).await;
            }
        }
        if let Err(e) = dialog.handle(&mut tx).await {
            tracing::debug!(error = %e, "caller's INVITE transaction");
        }
    }

    /// A change of a dialog, from the stack.
    pub async fn on_dialog(&self, gw: &Gateway, state: DialogState) {
        match state {
            DialogState::Early(id, _) => {
                let mut st = self.state.lock().await;
                let Some((tenant, ch)) = st.by_call_id.get(&id.call_id).cloned() else {
                    return;
                };
                let Some(c) = st
                    .tenants
                    .get_mut(&tenant)
                    .and_then(|t| t.channels.get_mut(&ch))
                else {
                    return;
                };
                if !c.ringing && c.state.direction == Direction::Outbound {
                    c.ringing = true;
                    let e = ChannelEvent::ChannelRinging {
                        tenant: tenant.clone(),
                        channel: ch,
                        at: Utc::now(),
                    };
                    gw.reporter.publish(&tenant, vec![Fact::Channel(e)]).await;
                }
            }
            DialogState::Updated(id, req, handle) => {
                // A re-INVITE (or UPDATE) from a phone: its hold, or new media.
                let mut st = self.state.lock().await;
                let Some((tenant, ch)) = st.by_call_id.get(&id.call_id).cloned() else {
                    let _ = handle.reply(StatusCode::CallTransactionDoesNotExist).await;
                    return;
                };
                let Some(t) = st.tenants.get_mut(&tenant) else {
                    return;
                };
                let Some(c) = t.channels.get_mut(&ch) else {
                    return;
                };
                if req.body.is_empty() {
                    let _ = handle.reply(StatusCode::OK).await;
                    return;
                }
                let m = match sdp::parse(&req.body) {
                    Ok(m) => m,
                    Err(_) => {
                        let _ = handle.reply(StatusCode::NotAcceptableHere).await;
                        return;
                    }
                };
                c.leg.set_remote(&m);
                c.sdp_version += 1;
                let answer = sdp::answer(gw.media.ip, c.leg.port, c.session_id, c.sdp_version, &m);
                let ct = rsipstack::sip::Header::ContentType("application/sdp".into());
                let _ = handle
                    .respond(StatusCode::OK, Some(vec![ct]), Some(answer))
                    .await;
                let hold = m.direction.is_hold();
                if hold != c.phone_hold {
                    c.phone_hold = hold;
                    let at = Utc::now();
                    let e = if hold {
                        ChannelEvent::ChannelHeld {
                            tenant: tenant.clone(),
                            channel: ch.clone(),
                            at,
                        }
                    } else {
                        ChannelEvent::ChannelUnheld {
                            tenant: tenant.clone(),
                            channel: ch.clone(),
                            at,
                        }
                    };
                    Self::refresh(t, &HashSet::from([ch.clone()]));
                    gw.reporter.publish(&tenant, vec![Fact::Channel(e)]).await;
                }
            }
            DialogState::Info(_, _, h)
            | DialogState::Options(_, _, h)
            | DialogState::Message(_, _, h)
            | DialogState::Notify(_, _, h) => {
                let _ = h.reply(StatusCode::OK).await;
            }
            DialogState::Refer(id, req, h) => {
                // The phone's transfer button: reported to call-control, which decides.
                let mut st = self.state.lock().await;
                let Some((tenant, ch)) = st.by_call_id.get(&id.call_id).cloned() else {
                    let _ = h.reply(StatusCode::CallTransactionDoesNotExist).await;
                    return;
                };
                let refer_to = crate::stack::header(&req, "Refer-To").unwrap_or_default();
                let (to, replaces) = match parse_refer_to(&refer_to) {
                    Ok(found) => found,
                    Err(why) => {
                        tracing::info!(%tenant, channel = %ch, why, "a REFER was refused");
                        let _ = h.reply(StatusCode::BadRequest).await;
                        return;
                    }
                };
                let replaces = match replaces {
                    None => None,
                    // The phone's own call to the target: call-control is told the target's
                    // leg of it (the one to join with the customer).
                    Some(call_id) => match st.by_call_id.get(&call_id) {
                        Some((t, other)) if *t == tenant => Some(
                            st.tenants
                                .get(t)
                                .and_then(|t| t.channels.get(other))
                                .and_then(|c| c.peer.clone())
                                .unwrap_or_else(|| other.clone()),
                        ),
                        // Replaces names a call the gateway does not have (RFC 3891: 481).
                        _ => {
                            let _ = h.reply(StatusCode::CallTransactionDoesNotExist).await;
                            return;
                        }
                    },
                };
                let Some(c) = st
                    .tenants
                    .get_mut(&tenant)
                    .and_then(|t| t.channels.get_mut(&ch))
                else {
                    let _ = h.reply(StatusCode::CallTransactionDoesNotExist).await;
                    return;
                };
                c.refer_pending = true;
                let sig = c.signalling.clone();
                drop(st);
                let _ = h.reply(StatusCode::Accepted).await;
                tokio::spawn(async move { sig.notify_refer(100, false).await });
                let e = ChannelEvent::ChannelTransferRequested {
                    tenant: tenant.clone(),
                    channel: ch,
                    to,
                    replaces,
                    at: Utc::now(),
                };
                gw.reporter.publish(&tenant, vec![Fact::Channel(e)]).await;
            }
            DialogState::Publish(_, _, h) => {
                let _ = h.reply(StatusCode::NotImplemented).await;
            }
            DialogState::Terminated(id, why) => {
                gw.stack.dialogs.remove_dialog(&id);
                let mut st = self.state.lock().await;
                let Some((tenant, ch)) = st.by_call_id.get(&id.call_id).cloned() else {
                    return;
                };
                let Some(c) = st.tenants.get(&tenant).and_then(|t| t.channels.get(&ch)) else {
                    return;
                };
                // A leg we placed that never got its answer ends through invite_finished.
                if c.state.direction == Direction::Outbound && !c.sip_answered {
                    return;
                }
                let cause = match why {
                    TerminatedReason::UacCancel => HangupCause::CallerGone,
                    _ if c.state.direction == Direction::Inbound && !c.state.answered => {
                        HangupCause::CallerGone
                    }
                    _ => HangupCause::Normal,
                };
                finish(gw, &mut st, &tenant, &ch, cause).await;
            }
            _ => {}
        }
    }

    /// The contract's Answer: the application takes an inbound caller (SIP-wise the queue
    /// answered at once, with music).
    pub async fn answer(
        &self,
        gw: &Gateway,
        tenant: &str,
        channel: &str,
    ) -> Result<ChannelState, CommandError> {
        let mut st = self.state.lock().await;
        let t = st.tenants.entry(tenant.to_string()).or_default();
        let c = t
            .channels
            .get_mut(channel)
            .ok_or_else(|| unknown_channel(channel))?;
        if c.state.answered {
            return Ok(c.state.clone());
        }
        if c.state.direction != Direction::Inbound {
            return Err(err(
                "not_inbound",
                "channel",
                format!("Channel {channel} is a leg to a phone; only its phone can answer it"),
            ));
        }
        c.state.answered = true;
        let out = c.state.clone();
        gw.reporter
            .publish(
                tenant,
                vec![Fact::Channel(ChannelEvent::ChannelAnswered {
                    tenant: tenant.into(),
                    channel: channel.into(),
                    at: Utc::now(),
                })],
            )
            .await;
        Ok(out)
    }

    /// The contract's Hangup: CANCEL to a ringing phone, BYE to an answered leg.
    pub async fn hangup(
        &self,
        gw: &Gateway,
        tenant: &str,
        channel: &str,
        cause: HangupCause,
    ) -> Result<(), CommandError> {
        let mut st = self.state.lock().await;
        let c = st
            .tenants
            .get(tenant)
            .and_then(|t| t.channels.get(channel))
            .ok_or_else(|| unknown_channel(channel))?;
        let cause = match (cause, c.state.direction, c.state.answered) {
            (HangupCause::Normal, Direction::Inbound, false) => HangupCause::CallerGone,
            (HangupCause::Normal, Direction::Outbound, false) => HangupCause::NoAnswer,
            (c, _, _) => c,
        };
        let sig = c.signalling.clone();
        let referred = c.refer_pending;
        tokio::spawn(async move {
            if referred {
                // The transfer the phone asked for took its call away: it succeeded.
                sig.notify_refer(200, true).await;
            }
            sig.end().await
        });
        finish(gw, &mut st, tenant, channel, cause).await;
        Ok(())
    }

    /// The contract's CancelRing: CANCEL to a phone still ringing (rung out); a leg the phone
    /// answered already (its 200 OK taken) is refused `already_answered` and stays up. Checked
    /// and done under one lock, so an answer cannot slip in between.
    pub async fn cancel_ring(
        &self,
        gw: &Gateway,
        tenant: &str,
        channel: &str,
    ) -> Result<(), CommandError> {
        let mut st = self.state.lock().await;
        let c = st
            .tenants
            .get(tenant)
            .and_then(|t| t.channels.get(channel))
            .ok_or_else(|| unknown_channel(channel))?;
        if c.state.answered {
            return Err(err(
                "already_answered",
                "channel",
                format!("channel {channel} was answered"),
            ));
        }
        let sig = c.signalling.clone();
        tokio::spawn(async move { sig.end().await });
        finish(gw, &mut st, tenant, channel, HangupCause::NoAnswer).await;
        Ok(())
    }

    /// The contract's Bridge (up to [`MAX_BRIDGE`] channels; more than two are mixed).
    pub async fn bridge(
        &self,
        gw: &Gateway,
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
        let t = st.tenants.entry(tenant.to_string()).or_default();
        if let Some(missing) = channels.iter().find(|c| !t.channels.contains_key(*c)) {
            return Err(unknown_channel(missing));
        }
        let (mut facts, members) = join(t, tenant, bridge, channels, None)?;
        // A leg of a phone's own call taken into another bridge (an attended transfer from the
        // phone): that call is over; its other leg (the transferring phone's) is hung up.
        let taken: Vec<String> = channels
            .iter()
            .filter_map(|c| t.channels.get_mut(c).and_then(|c| c.peer.take()))
            .collect();
        for other in taken {
            let Some(c) = st
                .tenants
                .get_mut(tenant)
                .and_then(|t| t.channels.get_mut(&other))
            else {
                continue;
            };
            c.peer = None;
            let sig = c.signalling.clone();
            tokio::spawn(async move { sig.end().await });
            facts.extend(remove(
                &mut st,
                tenant,
                &other,
                HangupCause::Normal,
                Utc::now(),
            ));
            forget(gw, tenant, &other).await;
        }
        gw.reporter.publish(tenant, facts).await;
        Ok(members)
    }

    pub async fn unbridge(
        &self,
        gw: &Gateway,
        tenant: &str,
        channel: &str,
    ) -> Result<(), CommandError> {
        let mut st = self.state.lock().await;
        let t = st.tenants.entry(tenant.to_string()).or_default();
        let c = t
            .channels
            .get_mut(channel)
            .ok_or_else(|| unknown_channel(channel))?;
        let Some(b) = c.state.bridge.take() else {
            return Ok(());
        };
        let mut touched: HashSet<String> = t
            .bridges
            .get(&b)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .collect();
        touched.insert(channel.to_string());
        let fact = leave_bridge(t, tenant, &b, channel, Utc::now());
        Self::refresh(t, &touched);
        gw.reporter.publish(tenant, vec![fact]).await;
        Ok(())
    }

    /// The contract's Hold: the held channel hears the music, nobody hears it.
    pub async fn hold(
        &self,
        gw: &Gateway,
        tenant: &str,
        channel: &str,
        held: bool,
    ) -> Result<ChannelState, CommandError> {
        let mut st = self.state.lock().await;
        let t = st.tenants.entry(tenant.to_string()).or_default();
        let c = t
            .channels
            .get_mut(channel)
            .ok_or_else(|| unknown_channel(channel))?;
        if c.state.held == held {
            return Ok(c.state.clone());
        }
        c.state.held = held;
        let out = c.state.clone();
        Self::refresh(t, &HashSet::from([channel.to_string()]));
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
        gw.reporter.publish(tenant, vec![Fact::Channel(e)]).await;
        Ok(out)
    }

    /// Media counters of a channel's leg (received from its phone, sent to it).
    pub async fn leg_stats(&self, tenant: &str, channel: &str) -> Option<(u64, u64)> {
        use std::sync::atomic::Ordering;
        let st = self.state.lock().await;
        let c = st.tenants.get(tenant)?.channels.get(channel)?;
        Some((
            c.leg.output.stats.received.load(Ordering::Relaxed),
            c.leg.output.stats.sent.load(Ordering::Relaxed),
        ))
    }
}

/// The contract's CheckRoute: the refusal an Originate to `endpoint` would give now, if any.
pub fn check_route(gw: &Gateway, tenant: &str, endpoint: &Endpoint) -> Result<(), CommandError> {
    route_of(gw, tenant, endpoint).map(|_| ())
}

/// Where an Originate goes.
struct Route {
    device: Option<DeviceId>,
    number: Option<String>,
    /// The Request-URI.
    uri: String,
    target: std::net::SocketAddr,
    tcp: bool,
}

/// An extension of the tenant rings its phone: at its binding here, or through the tenant's
/// PBX in trunk mode (`INVITE sip:<extension>@<pbx>`), where any other number goes too (the
/// PBX routes it). Without a PBX, other numbers have no route.
fn route_of(gw: &Gateway, tenant: &str, endpoint: &Endpoint) -> Result<Route, CommandError> {
    enum To {
        Device(DeviceId),
        Number(String),
    }
    let to = match endpoint {
        Endpoint::Device(d) => To::Device(d.clone()),
        Endpoint::Number(n) => match DeviceId::parse(n) {
            // An extension of this tenant dialled as a number.
            Ok(d) if gw.registry.is_device(tenant, d.as_str()) => To::Device(d),
            _ => To::Number(n.trim().to_string()),
        },
    };
    match (gw.pbx.get(tenant), to) {
        (_, To::Device(d)) if !gw.registry.is_device(tenant, d.as_str()) => Err(err(
            "unknown_device",
            "device",
            format!("There is no device {d} on this PBX"),
        )),
        (Some(pbx), To::Device(d)) => {
            if !gw.presence.is_online(tenant, d.as_str()) {
                return Err(err(
                    "device_unavailable",
                    "device",
                    format!("Device {d} is not registered on the tenant's PBX"),
                ));
            }
            Ok(Route {
                uri: pbx.uri(d.as_str()),
                device: Some(d),
                number: None,
                target: pbx.addr,
                tcp: false,
            })
        }
        (Some(pbx), To::Number(n)) => {
            let valid = !n.is_empty()
                && n.len() <= 32
                && n.chars()
                    .all(|c| c.is_ascii_digit() || matches!(c, '+' | '*' | '#'));
            if !valid {
                return Err(err(
                    "invalid_field",
                    "number",
                    format!("{n:?} is not a number (1 to 32 of 0-9 + * #)"),
                ));
            }
            Ok(Route {
                uri: pbx.uri(&sip_user(&n)),
                device: None,
                number: Some(n),
                target: pbx.addr,
                tcp: false,
            })
        }
        (None, To::Device(d)) => {
            let Some(binding) = gw.registry.binding(tenant, d.as_str()) else {
                return Err(err(
                    "device_unavailable",
                    "device",
                    format!("Device {d} is not registered"),
                ));
            };
            Ok(Route {
                uri: binding.contact.clone(),
                target: binding.target(),
                tcp: binding.transport == "tcp",
                device: Some(d),
                number: None,
            })
        }
        (None, To::Number(n)) => Err(err(
            "no_route",
            "number",
            format!("The SIP gateway has no route to {n:?} (no outbound trunk for this tenant)"),
        )),
    }
}

/// Takes a channel out of everything and returns the facts of its end.
fn remove(
    st: &mut State,
    tenant: &str,
    channel: &str,
    cause: HangupCause,
    at: chrono::DateTime<Utc>,
) -> Vec<Fact> {
    let Some(t) = st.tenants.get_mut(tenant) else {
        return vec![];
    };
    let Some(c) = t.channels.remove(channel) else {
        return vec![];
    };
    st.by_call_id.remove(&c.call_id);
    let mut facts = vec![Fact::Channel(ChannelEvent::ChannelHungUp {
        tenant: tenant.into(),
        channel: channel.into(),
        cause,
        at,
    })];
    if let Some(b) = c.state.bridge {
        let partners: HashSet<String> = t
            .bridges
            .get(&b)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .collect();
        facts.push(leave_bridge(t, tenant, &b, channel, at));
        Calls::refresh(t, &partners);
    }
    facts
}

/// Removes a channel (as [`remove`]), forgets it and reports it; the other leg of a phone's own
/// call ends with it (refused with the cause's SIP code if the caller was not answered yet).
async fn finish(gw: &Gateway, st: &mut State, tenant: &str, id: &str, cause: HangupCause) {
    let peer = st
        .tenants
        .get(tenant)
        .and_then(|t| t.channels.get(id))
        .and_then(|c| c.peer.clone());
    let mut facts = remove(st, tenant, id, cause, Utc::now());
    forget(gw, tenant, id).await;
    if let Some(p) = peer {
        if let Some(c) = st.tenants.get(tenant).and_then(|t| t.channels.get(&p)) {
            let sig = c.signalling.clone();
            let unanswered = c.state.direction == Direction::Inbound && c.pending_answer.is_some();
            let code = match cause {
                HangupCause::Busy => 486,
                HangupCause::Rejected => 603,
                _ => 480,
            };
            tokio::spawn(async move {
                if unanswered {
                    sig.reject(code)
                } else {
                    sig.end().await
                }
            });
            facts.extend(remove(st, tenant, &p, HangupCause::Normal, Utc::now()));
            forget(gw, tenant, &p).await;
        }
    }
    gw.reporter.publish(tenant, facts).await;
}

/// Channels (all known) join a bridge, leaving any other, in `mode` when given (else as they
/// are); the media plans follow. The facts end with the bridge's BridgeChanged.
fn join(
    t: &mut Tenant,
    tenant: &str,
    bridge: &str,
    channels: &[String],
    mode: Option<&BridgeMode>,
) -> Result<(Vec<Fact>, Vec<String>), CommandError> {
    let mut members: Vec<String> = t.bridges.get(bridge).cloned().unwrap_or_default();
    for c in channels {
        if !members.contains(c) {
            members.push(c.clone());
        }
    }
    if members.len() > MAX_BRIDGE {
        return Err(err(
            "bridge_too_large",
            "channels",
            format!(
                "A bridge of the SIP gateway joins at most {MAX_BRIDGE} channels; this would join {}",
                members.len()
            ),
        ));
    }
    let now = Utc::now();
    let mut facts = vec![];
    let mut touched: HashSet<String> = channels.iter().cloned().collect();
    for c in channels {
        if let Some(old) = t.channels[c].state.bridge.clone().filter(|b| b != bridge) {
            if let Some(m) = t.bridges.get(&old) {
                touched.extend(m.iter().cloned());
            }
            facts.push(leave_bridge(t, tenant, &old, c, now));
        }
    }
    t.bridges.insert(bridge.to_string(), members.clone());
    for c in channels {
        let ch = t.channels.get_mut(c).expect("checked");
        ch.state.bridge = Some(bridge.to_string());
        if let Some(m) = mode {
            ch.mode = m.clone();
        }
    }
    Calls::refresh(t, &touched);
    facts.push(Fact::Bridge(BridgeEvent::BridgeChanged {
        tenant: tenant.into(),
        bridge: bridge.into(),
        modes: modes_of(t, &members),
        channels: members.clone(),
        at: now,
    }));
    Ok((facts, members))
}

fn leave_bridge(
    t: &mut Tenant,
    tenant: &str,
    bridge: &str,
    channel: &str,
    at: chrono::DateTime<Utc>,
) -> Fact {
    let members = t.bridges.entry(bridge.to_string()).or_default();
    members.retain(|c| c != channel);
    let members = members.clone();
    if let Some(c) = t.channels.get_mut(channel) {
        c.state.bridge = None;
        c.mode = BridgeMode::Speak;
    }
    if members.is_empty() {
        t.bridges.remove(bridge);
        t.mixers.remove(bridge);
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
        .filter_map(|m| t.channels.get(m).map(|c| (m.clone(), c.mode.clone())))
        .filter(|(_, m)| *m != BridgeMode::Speak)
        .collect()
}

/// The persisted list of live channels (reported hung up after a restart).
async fn remember(gw: &Gateway, tenant: &str, channel: &str) {
    let r = sqlx::query(
        "insert into sip_channels (tenant, channel) values ($1, $2) on conflict do nothing",
    )
    .bind(tenant)
    .bind(channel)
    .execute(&gw.ctx.pool)
    .await;
    if let Err(e) = r {
        tracing::warn!(error = %e, "could not record a live channel");
    }
}

async fn forget(gw: &Gateway, tenant: &str, channel: &str) {
    let r = sqlx::query("delete from sip_channels where tenant = $1 and channel = $2")
        .bind(tenant)
        .bind(channel)
        .execute(&gw.ctx.pool)
        .await;
    if let Err(e) = r {
        tracing::warn!(error = %e, "could not forget a channel");
    }
}

/// After a restart: the calls the previous process had are gone (dialogs and RTP lived in its
/// memory). Each is reported hung up, so call-control ends it and no agent stays Connected.
pub async fn report_lost_channels(gw: &Gateway) -> anyhow::Result<usize> {
    let rows: Vec<(String, String)> = sqlx::query_as("select tenant, channel from sip_channels")
        .fetch_all(&gw.ctx.pool)
        .await?;
    for (tenant, channel) in &rows {
        tracing::warn!(%tenant, %channel, "channel lost with the previous gateway process: reporting it hung up");
        let e = ChannelEvent::ChannelHungUp {
            tenant: tenant.clone(),
            channel: channel.clone(),
            cause: HangupCause::Normal,
            at: Utc::now(),
        };
        gw.reporter.publish(tenant, vec![Fact::Channel(e)]).await;
        sqlx::query("delete from sip_channels where tenant = $1 and channel = $2")
            .bind(tenant)
            .bind(channel)
            .execute(&gw.ctx.pool)
            .await?;
    }
    Ok(rows.len())
}

/// Text from outside, bounded: control characters out, at most 100 characters of name and 32
/// of number (digits, `+`, `*`, `#`; anything else is shown as `anonymous`).
pub fn sanitize(p: Party) -> Party {
    let name = cc_contracts::domain::CallerName::lossy(&p.name).into_string();
    let number = p.number.trim();
    let number = if !number.is_empty()
        && number.len() <= 32
        && number
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '+' | '*' | '#'))
    {
        number.to_string()
    } else {
        "anonymous".to_string()
    };
    Party {
        number,
        name: name.trim().to_string(),
    }
}

/// A SIP user part for a caller id (the sanitized number, or `anonymous`).
fn sip_user(number: &str) -> String {
    let n = number.replace('#', "%23");
    if n.is_empty() {
        "anonymous".into()
    } else {
        n
    }
}

/// What a REFER asks for: the number its Refer-To names (`<sip:1002@domain>`, `sip:+1555…@…`,
/// `tel:…`) and, for an attended transfer, the Call-ID its `Replaces` names. Bounded and
/// checked: digits with an optional leading `+`, at most 32.
pub fn parse_refer_to(value: &str) -> Result<(String, Option<String>), &'static str> {
    if value.is_empty() {
        return Err("no Refer-To");
    }
    if value.len() > 1024 {
        return Err("Refer-To is too long");
    }
    let uri = match (value.find('<'), value.rfind('>')) {
        (Some(a), Some(b)) if a < b => &value[a + 1..b],
        _ => value.split(';').next().unwrap_or(value),
    }
    .trim();
    let (uri, headers) = uri.split_once('?').unwrap_or((uri, ""));
    let rest = uri
        .strip_prefix("sips:")
        .or_else(|| uri.strip_prefix("sip:"))
        .or_else(|| uri.strip_prefix("tel:"))
        .ok_or("Refer-To is not a sip:, sips: or tel: URI")?;
    let user = rest.split(['@', ';']).next().unwrap_or("");
    let digits = user.strip_prefix('+').unwrap_or(user);
    if digits.is_empty() || digits.len() > 32 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err("Refer-To does not name a number (digits, may start with +)");
    }
    let replaces = headers
        .split('&')
        .find_map(|h| {
            let (k, v) = h.split_once('=')?;
            k.eq_ignore_ascii_case("replaces").then_some(v)
        })
        .map(|v| {
            let v = percent_decode(v);
            v.split(';').next().unwrap_or("").trim().to_string()
        })
        .filter(|v| !v.is_empty());
    Ok((user.to_string(), replaces))
}

/// `%XX` escapes decoded (bytes that are not valid UTF-8 are replaced).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (b[i], b.get(i + 1..i + 3)) {
            (b'%', Some(h)) if h.iter().all(u8::is_ascii_hexdigit) => {
                let hex = std::str::from_utf8(h).expect("hex digits");
                out.push(u8::from_str_radix(hex, 16).expect("hex digits"));
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The caller's number and name: P-Asserted-Identity when a trunk sent it, else From.
fn caller_of(
    req: &rsipstack::sip::Request,
    from: Option<&rsipstack::sip::typed::From>,
    trusted: bool,
) -> Party {
    let pai = trusted
        .then(|| stack::header(req, "P-Asserted-Identity"))
        .flatten()
        .and_then(|v| rsipstack::sip::typed::From::parse(v.split(',').next()?.trim()).ok());
    let id = pai.as_ref().or(from);
    let number = id
        .and_then(|f| f.uri.auth.as_ref().map(|a| a.user.clone()))
        .unwrap_or_default();
    let name = id
        .and_then(|f| f.display_name.clone())
        .or_else(|| from.and_then(|f| f.display_name.clone()))
        .unwrap_or_default();
    sanitize(Party {
        number,
        name: name.trim_matches('"').to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refer_to_names_a_number_and_perhaps_the_call_it_replaces() {
        assert_eq!(
            parse_refer_to("<sip:1002@office.localhost>"),
            Ok(("1002".into(), None))
        );
        assert_eq!(
            parse_refer_to("sip:+15551234@pbx;transport=udp"),
            Ok(("+15551234".into(), None))
        );
        assert_eq!(
            parse_refer_to(
                "<sip:1002@office.localhost?Replaces=abc%40host%3Bto-tag%3D1%3Bfrom-tag%3D2>"
            ),
            Ok(("1002".into(), Some("abc@host".into())))
        );
        assert!(parse_refer_to("").is_err());
        assert!(parse_refer_to("<sip:bob@office.localhost>").is_err());
        assert!(parse_refer_to("<http://1002>").is_err());
        assert!(parse_refer_to(&format!("<sip:{}@x>", "1".repeat(33))).is_err());
    }

    #[test]
    fn caller_text_is_bounded_and_cleaned() {
        let p = sanitize(Party {
            number: "+15551234".into(),
            name: "Jane\u{0}\u{7} Doe".into(),
        });
        assert_eq!(
            p,
            Party {
                number: "+15551234".into(),
                name: "Jane Doe".into()
            }
        );
        let p = sanitize(Party {
            number: "alice".into(),
            name: "x".repeat(300),
        });
        assert_eq!(p.number, "anonymous");
        assert_eq!(p.name.chars().count(), 100);
    }
}
