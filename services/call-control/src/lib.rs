//! The call-control service: each queue call from the answer to its end. On `CallAnswered` it
//! answers the caller's channel and bridges it with the agent's; it follows every leg and ends
//! the call when one hangs up (or the agent hangs up from the portal), holds and resumes the
//! caller, and carries out transfers (blind, attended, live; see `docs/transfers.md`). One
//! replica acts at a time (a lease); after a restart it rebuilds its calls from the store
//! ([`model::Model`]) and reconciles them with the PBX's live channels, so a leg that ended or
//! answered meanwhile is acted on once.

pub mod model;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use cc_bus::parked::Reason;
use cc_bus::{CommandContext, CommandError, CommandHandlers};
use cc_contracts::call::*;
use cc_contracts::domain::{AgentNumber, DeviceId};
use cc_contracts::pbx::{
    Answer, Bridge, BridgeMode, ChannelEvent, ChannelState, CheckRoute, Endpoint, Hangup,
    HangupCause, Hold, ListChannels, ListDevices, Originate, Party, SetBridgeMode,
};
use cc_contracts::{decode_checked, encode, Decoded};
use cc_eventstore::{
    Checkpoint, ExpectedVersion, Feed, Lease, Metadata, ReadFilter, StreamName, Subscription,
};
use cc_runtime::leading::{keep_leading, retry_until_ok};
use cc_runtime::Context;
use chrono::Utc;
use futures::StreamExt;
use tokio::sync::Mutex;
use uuid::Uuid;

use model::{Live, Model, Role};

pub const MIGRATIONS: &[cc_eventstore::Migration] = &[];

#[derive(Default)]
struct State {
    model: Model,
    /// Events this replica appended and applied already: skipped when the store returns them.
    own: HashSet<Uuid>,
    /// The store position of the last event taken in (by the follow loop or a catch-up).
    applied: Checkpoint,
}

#[derive(Clone)]
struct CallControl {
    ctx: Context,
    state: Arc<Mutex<State>>,
    /// This replica's holding of the lease: its appends are fenced with it, so once another
    /// replica took over, none of them can commit behind its back.
    fence: cc_eventstore::Fence,
}

pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let cancel = ctx.cancel.clone();
    if retry_until_ok(&cancel, "cannot create the PBX event consumer", || {
        channel_consumer(&ctx)
    })
    .await
    .is_none()
    {
        return Ok(());
    }
    keep_leading(&cancel, "call control", || lead(&ctx)).await;
    Ok(())
}

async fn channel_consumer(
    ctx: &Context,
) -> anyhow::Result<
    async_nats::jetstream::consumer::Consumer<async_nats::jetstream::consumer::pull::Config>,
> {
    cc_bus::consumer::pbx_channels(&ctx.bus, CHANNEL_CONSUMER).await
}

/// Call control's durable consumer of the PBX's channel facts.
const CHANNEL_CONSUMER: &str = "call-control-channels";

/// Call control as a consumer of the store, in `bus_parked`.
const PARKED_AS: &str = "call-control";

async fn lead(ctx: &Context) -> anyhow::Result<()> {
    let leader = ctx.metrics.leader("call_control");
    let Some(mut lease) = Lease::try_acquire(&ctx.config.database_url, "cc-call-control").await?
    else {
        return Ok(());
    };
    let _holding = leader.took();
    let cc = CallControl {
        ctx: ctx.clone(),
        state: Arc::default(),
        fence: lease.fence().clone(),
    };
    let mut sub = Subscription::new(
        ctx.store.clone(),
        ReadFilter::Category("call".into()),
        Checkpoint::START,
    )
    .await?
    .with_batch_size(2000);
    while let Some(batch) = sub.poll().await? {
        let mut st = cc.state.lock().await;
        for e in &batch {
            let absorbed = absorb(&mut st, e);
            park_undecodable(ctx, e, absorbed).await?;
        }
    }
    cc.reconcile().await?;
    let calls = cc.state.lock().await.model.calls.len();
    tracing::info!(calls, "call control lease taken");

    let term = ctx.cancel.child_token();
    let commands = CommandHandlers::new("call-control", cc.clone())
        .with_idempotency(ctx.pool.clone())
        .with_metrics(ctx.metrics.commands.clone())
        .on(|cc: CallControl, c, cmd: HangupCall| async move { cc.hangup_by_agent(&c.tenant, &cmd.agent).await })
        .on(|cc: CallControl, c, cmd: HoldCall| async move { cc.hold(&c.tenant, &cmd.agent, cmd.held).await })
        .on(|cc: CallControl, c, cmd: TransferCall| async move { cc.transfer(&c.tenant, cmd).await })
        .on(|cc: CallControl, c, cmd: CompleteTransfer| async move { cc.complete(&c.tenant, &cmd.agent).await })
        .on(|cc: CallControl, c, cmd: CancelTransfer| async move { cc.cancel(&c.tenant, &cmd.agent).await })
        .on(|cc: CallControl, c, cmd: GetAgentCall| async move { cc.on_call(&c.tenant, &cmd.agent).await })
        .on(|cc: CallControl, c, cmd: DialOutbound| async move { cc.dial(&c.tenant, cmd).await })
        .on(|cc: CallControl, c, cmd: MonitorCall| async move { cc.monitor(&c.tenant, cmd).await })
        .on(|cc: CallControl, c, cmd: SetMonitorMode| async move { cc.set_monitor_mode(&c.tenant, cmd).await })
        .on(|cc: CallControl, c, cmd: StopMonitor| async move { cc.stop_monitor(&c.tenant, &cmd.agent, &cmd.supervisor).await });
    let server = tokio::spawn(commands.serve(ctx.bus.clone(), term.clone()));
    let result = follow(&cc, sub.into_feed(4), &mut lease).await;
    term.cancel();
    let _ = server.await;
    result
}

async fn follow(cc: &CallControl, mut sub: Feed, lease: &mut Lease) -> anyhow::Result<()> {
    let ctx = &cc.ctx;
    // A fact the previous leader did not see through (its append failed, it died) comes again
    // first, in order (each handler takes a fact it already recorded as a redelivery).
    let consumer =
        cc_bus::consumer::pbx_channels_from_ack_floor(&ctx.bus, CHANNEL_CONSUMER).await?;
    let mut pbx = consumer.messages().await?;
    let mut check = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = ctx.cancel.cancelled() => return Ok(()),
            b = sub.next_batch() => {
                for e in &b? {
                    let absorbed = absorb(&mut *cc.state.lock().await, e);
                    if let Some(call) = park_undecodable(ctx, e, absorbed).await? {
                        cc.connect_aside(call);
                    }
                }
            }
            m = pbx.next() => {
                let Some(m) = m else { anyhow::bail!("the PBX event consumer ended") };
                let m = m.map_err(|e| anyhow::anyhow!("PBX events: {e}"))?;
                match serde_json::from_slice::<ChannelEvent>(&m.payload) {
                    Ok(ChannelEvent::ChannelHungUp { tenant, channel, cause, .. }) => cc.leg_gone(&tenant, &channel, cause).await?,
                    Ok(ChannelEvent::ChannelAnswered { tenant, channel, .. }) => cc.leg_answered(&tenant, &channel).await?,
                    Ok(ChannelEvent::ChannelHeld { tenant, channel, .. }) => cc.phone_hold(&tenant, &channel, true).await,
                    Ok(ChannelEvent::ChannelUnheld { tenant, channel, .. }) => cc.phone_hold(&tenant, &channel, false).await,
                    Ok(ChannelEvent::ChannelTransferRequested { tenant, channel, to, replaces, .. }) => cc.phone_transfer(&tenant, &channel, &to, replaces.as_deref()).await,
                    Ok(_) => {}
                    // Skipped, said and counted: redelivering it would hold up every call's
                    // facts behind it.
                    Err(error) => cc_bus::parked::unreadable(CHANNEL_CONSUMER, &m, &error),
                }
                let _ = m.ack().await;
            }
            _ = check.tick() => lease.check().await?,
        }
    }
}

/// Takes in one stored call event (once: events at or before `applied` were taken already, and
/// this replica's own were applied when recorded). Returns the call an agent just answered, or
/// why the event does not decode (see [`park_undecodable`]).
fn absorb(st: &mut State, e: &cc_eventstore::RecordedEvent) -> Result<Option<String>, String> {
    let cp = e.checkpoint();
    if (cp.xid, cp.position) <= (st.applied.xid, st.applied.position) {
        return Ok(None);
    }
    st.applied = cp;
    if st.own.remove(&e.event_id) {
        return Ok(None);
    }
    let c = match decode_checked::<CallEvent>(e) {
        Decoded::Event(c) => c,
        Decoded::OtherFamily => return Ok(None),
        Decoded::Undecodable(why) => return Err(why),
    };
    st.model.apply(e.tenant(), &c, e.recorded_at);
    Ok(matches!(c, CallEvent::CallAnswered { .. }).then(|| c.call().to_string()))
}

/// A call event that does not decode is skipped, parked (`bus_parked`, consumer
/// `call-control`): call control rebuilds its calls from the store at every lease, so stopping
/// on it would stop every tenant's calls again at each start. The calls it does not name go on.
async fn park_undecodable(
    ctx: &Context,
    e: &cc_eventstore::RecordedEvent,
    absorbed: Result<Option<String>, String>,
) -> anyhow::Result<Option<String>> {
    match absorbed {
        Ok(answered) => Ok(answered),
        Err(why) => {
            cc_bus::parked::park_now(&ctx.pool, PARKED_AS, e, Reason::Undecodable, &why).await?;
            Ok(None)
        }
    }
}

/// Why a transfer's target leg ended before the transfer completed.
fn failure(cause: HangupCause, answered: bool) -> TransferFailure {
    match cause {
        _ if answered => TransferFailure::TargetHungUp,
        HangupCause::Busy => TransferFailure::Busy,
        HangupCause::Rejected => TransferFailure::Rejected,
        HangupCause::Unavailable => TransferFailure::Unavailable,
        HangupCause::Normal | HangupCause::NoAnswer | HangupCause::CallerGone => {
            TransferFailure::NoAnswer
        }
    }
}

fn err(code: &str, message: impl Into<String>) -> CommandError {
    CommandError::new(code, message)
}

/// How long a supervisor's phone may ring before the monitoring ends as not answered.
const MONITOR_RING: Duration = Duration::from_secs(30);

/// How long the agent's own phone rings for an outbound call before it fails as not answered.
const OUTBOUND_AGENT_RING: Duration = Duration::from_secs(30);

/// Why an outbound call's leg ended before the far end answered: the agent's (`agent`) or the
/// far end's.
fn outbound_failure(cause: HangupCause, agent: bool, dialed: bool) -> OutboundFailure {
    match (agent, cause) {
        // The agent hung up while the number rang.
        (true, _) if dialed => OutboundFailure::Cancelled,
        (true, HangupCause::NoAnswer) => OutboundFailure::AgentNoAnswer,
        (true, HangupCause::Unavailable) => OutboundFailure::AgentUnavailable,
        (true, _) => OutboundFailure::AgentDeclined,
        (false, HangupCause::Busy) => OutboundFailure::Busy,
        (false, HangupCause::NoAnswer | HangupCause::CallerGone) => OutboundFailure::NoAnswer,
        (false, HangupCause::Unavailable) => OutboundFailure::Unavailable,
        (false, HangupCause::Rejected | HangupCause::Normal) => OutboundFailure::Rejected,
    }
}

/// The priority a transferred call re-enters a queue with: ahead of every caller waiting.
pub const REQUEUE_PRIORITY: i32 = 100;

impl CallControl {
    fn pbx(&self, tenant: &str) -> CommandContext {
        CommandContext::new(tenant, "system:call-control")
    }

    /// Appends events of one call in one append and applies them.
    async fn record(
        &self,
        st: &mut State,
        tenant: &str,
        call: &str,
        events: Vec<CallEvent>,
    ) -> Result<(), CommandError> {
        if events.is_empty() {
            return Ok(());
        }
        // A supervisor's monitoring never outlives the monitored agent's part of the call.
        let mut events = events;
        let ended_monitor =
            st.model
                .calls
                .get(call)
                .and_then(|l| l.monitor.clone())
                .filter(|m| {
                    events.iter().any(
                        |e| matches!(e, CallEvent::CallEnded { agent, .. } if *agent == m.agent),
                    ) && !events
                        .iter()
                        .any(|e| matches!(e, CallEvent::MonitorEnded { .. }))
                });
        if let Some(m) = &ended_monitor {
            events.push(CallEvent::MonitorEnded {
                call: call.into(),
                monitor: m.id.clone(),
                agent: m.agent.clone(),
                supervisor: m.supervisor.clone(),
                reason: MonitorEndReason::CallEnded,
            });
        }
        let stream = StreamName::new(tenant, "call", call)
            .map_err(|e| CommandError::internal(e.to_string()))?;
        let encoded: Vec<_> = events
            .iter()
            .map(|e| encode(e, Metadata::new(tenant, "system:call-control")))
            .collect();
        for n in &encoded {
            st.own.insert(n.event_id);
        }
        self.ctx
            .store
            .append_fenced(&self.fence, &stream, ExpectedVersion::Any, &encoded)
            .await?;
        let now = Utc::now();
        for e in &events {
            st.model.apply(tenant, e, now);
        }
        if let Some(m) = ended_monitor {
            self.hang_up_later(tenant, vec![m.leg]).await;
        }
        Ok(())
    }

    /// A PBX action whose failure only matters as a log line (the leg may be gone already).
    async fn try_pbx<C: cc_bus::Command>(&self, tenant: &str, cmd: &C) {
        if let Err(e) = self.ctx.bus.request(&self.pbx(tenant), cmd).await {
            tracing::debug!(error = %e, command = C::NAME, "PBX action not done");
        }
    }

    /// Hangs up `legs` off the caller's path. A refusal (the leg gone already) is final; the PBX
    /// out of reach for a moment (NATS restarting) is asked again a few times, as a leg left up
    /// keeps a caller or a phone on a call that is over.
    async fn hang_up_later(&self, tenant: &str, legs: Vec<String>) {
        let (ctx, bus, stop) = (
            self.pbx(tenant),
            self.ctx.bus.clone(),
            self.ctx.cancel.clone(),
        );
        tokio::spawn(async move {
            for leg in legs {
                let cmd = Hangup {
                    channel: leg,
                    cause: HangupCause::Normal,
                };
                let _ = bus.request_retrying(&ctx, &cmd, Some(5), &stop).await;
            }
        });
    }

    /// Joins the caller and the agent who answered. The PBX is asked without holding the state,
    /// so other calls go on meanwhile; if the call ended in between, nothing is recorded.
    async fn connect(&self, call: &str) -> anyhow::Result<()> {
        self.join(call, false).await
    }

    /// Joins the agent and the far end of an outbound call once the far end answered.
    async fn join(&self, call: &str, outbound: bool) -> anyhow::Result<()> {
        let Some(l) = self.state.lock().await.model.calls.get(call).cloned() else {
            return Ok(());
        };
        // An outbound call is joined only when its far end answered (`outbound`).
        let ready = match l.dialing() {
            Some(o) => outbound && o.dialed,
            None => !outbound,
        };
        let Some(a) = l
            .agent
            .clone()
            .filter(|_| ready && !l.connected && l.transfer.is_none())
        else {
            return Ok(());
        };
        let ctx = self.pbx(&l.tenant);
        if !outbound {
            let _ = self
                .ctx
                .bus
                .request(
                    &ctx,
                    &Answer {
                        channel: l.customer.clone(),
                    },
                )
                .await;
        }
        let bridged = self
            .ctx
            .bus
            .request(
                &ctx,
                &Bridge {
                    bridge: call.to_string(),
                    channels: vec![l.customer.clone(), a.leg.clone()],
                },
            )
            .await;
        let mut st = self.state.lock().await;
        if st
            .model
            .calls
            .get(call)
            .and_then(|l| l.agent.as_ref())
            .map(|x| &x.leg)
            != Some(&a.leg)
        {
            return Ok(()); // it ended meanwhile
        }
        match bridged {
            Ok(_) => {
                self.record(
                    &mut st,
                    &l.tenant,
                    call,
                    vec![CallEvent::CallConnected {
                        call: call.into(),
                        agent: a.agent,
                        bridge: call.into(),
                    }],
                )
                .await?
            }
            Err(e) => {
                // A leg vanished between the answer and the bridge: the call is over.
                tracing::info!(error = %e, call, "could not bridge; ending the call");
                self.end(&mut st, call, EndedBy::Caller).await?;
            }
        }
        Ok(())
    }

    /// The agent's call ends for everyone (no transfer going on).
    async fn end(&self, st: &mut State, call: &str, by: EndedBy) -> Result<(), CommandError> {
        let Some(l) = st.model.calls.get(call).cloned() else {
            return Ok(());
        };
        let Some(a) = l.agent.clone() else {
            return Ok(());
        };
        let talk_ms = (Utc::now() - a.answered_at).num_milliseconds().max(0);
        self.record(
            st,
            &l.tenant,
            call,
            vec![CallEvent::CallEnded {
                call: call.into(),
                agent: a.agent,
                by,
                talk_ms,
            }],
        )
        .await?;
        // Hang up the legs aside (the one already gone refuses, harmlessly).
        self.hang_up_later(
            &l.tenant,
            l.legs().into_iter().map(|(leg, _)| leg).collect(),
        )
        .await;
        Ok(())
    }

    /// Bridges an answered call aside: bridging waits on the PBX, the next calls must not.
    fn connect_aside(&self, call: String) {
        let cc = self.clone();
        tokio::spawn(async move {
            if let Err(e) = cc.connect(&call).await {
                tracing::warn!(error = %format!("{e:#}"), call, "could not connect the call");
            }
        });
    }

    /// Takes in the call events the store holds beyond what this replica applied (it follows
    /// the store a few milliseconds behind, more on a loaded machine).
    async fn catch_up(&self, st: &mut State) -> Result<(), CommandError> {
        loop {
            let batch = self
                .ctx
                .store
                .read_all(&ReadFilter::Category("call".into()), st.applied, 500)
                .await?;
            if batch.is_empty() {
                return Ok(());
            }
            for e in &batch {
                match absorb(st, e) {
                    Ok(Some(call)) => self.connect_aside(call),
                    Ok(None) => {}
                    Err(why) => {
                        cc_bus::parked::park_now(
                            &self.ctx.pool,
                            PARKED_AS,
                            e,
                            Reason::Undecodable,
                            &why,
                        )
                        .await?;
                    }
                }
            }
        }
    }

    /// The agent's call; when this replica knows none, after catching up with the store, so an
    /// action right after the answer the agent saw finds the call.
    async fn find(
        &self,
        st: &mut State,
        tenant: &str,
        agent: &AgentNumber,
    ) -> Result<(String, Live), CommandError> {
        match Self::agent_call(st, tenant, agent) {
            Ok(found) => Ok(found),
            Err(_) => {
                self.catch_up(st).await?;
                Self::agent_call(st, tenant, agent)
                    .map_err(|e| Self::as_target(st, tenant, agent, e))
            }
        }
    }

    /// A refusal for an agent who is not on a call of their own: when they are the answered
    /// target of another agent's transfer, it says so and what they can do.
    fn as_target(st: &State, tenant: &str, agent: &AgentNumber, e: CommandError) -> CommandError {
        let Some(l) = st
            .model
            .target_call(tenant, agent)
            .and_then(|c| st.model.calls.get(&c))
        else {
            return e;
        };
        let (from, method) = match &l.transfer {
            Some(t) => (t.agent.clone(), t.method),
            None => return e,
        };
        let what = if method == TransferMethod::Live {
            "a 3-way call"
        } else {
            "a consultation"
        };
        err(
            "transfer_target",
            format!(
                "You are in {what} for agent {from}'s transfer: you can leave it (Hangup); the call is yours once agent {from} completes the transfer"
            ),
        )
    }

    /// The call the agent is on (a logout is refused while there is one).
    async fn on_call(
        &self,
        tenant: &str,
        agent: &AgentNumber,
    ) -> Result<Option<String>, CommandError> {
        let mut st = self.state.lock().await;
        let own = self.find(&mut st, tenant, agent).await.ok().map(|(c, _)| c);
        Ok(own.or_else(|| st.model.target_call(tenant, agent)))
    }

    fn agent_call(
        st: &State,
        tenant: &str,
        agent: &AgentNumber,
    ) -> Result<(String, Live), CommandError> {
        st.model
            .agent_call(tenant, agent)
            .map(|c| (c.clone(), st.model.calls[&c].clone()))
            .ok_or_else(|| err("no_call", format!("Agent {agent} is not on a call")))
    }

    /// The agent hangs up from the portal. During a transfer this is the agent leaving it: the
    /// transfer goes on without them (as when their phone hangs up).
    async fn hangup_by_agent(&self, tenant: &str, agent: &AgentNumber) -> Result<(), CommandError> {
        let mut st = self.state.lock().await;
        let (call, l) = match self.find(&mut st, tenant, agent).await {
            Ok(found) => found,
            Err(e) => {
                // The target of a transfer leaves the consultation or the 3-way call: as when
                // their phone hangs up, the customer stays with the transferring agent.
                let Some(call) = st.model.target_call(tenant, agent) else {
                    return Err(e);
                };
                return self.target_leaves(&mut st, &call).await;
            }
        };
        if l.dialing().is_some() {
            self.outbound_failed(&mut st, &call, OutboundFailure::Cancelled)
                .await
        } else if l.transfer.is_some() {
            self.agent_leaves(&mut st, &call).await
        } else {
            self.end(&mut st, &call, EndedBy::Agent).await
        }
    }

    /// The agent dials a number or an extension: refusals first (the agent on a call, their
    /// device offline, the far end unknown, offline or without a route), then the agent's
    /// device rings; on its answer the far end does ([`Self::dial_far_end`]).
    async fn dial(&self, tenant: &str, cmd: DialOutbound) -> Result<String, CommandError> {
        let mut st = self.state.lock().await;
        if self.find(&mut st, tenant, &cmd.agent).await.is_ok()
            || st.model.target_call(tenant, &cmd.agent).is_some()
        {
            return Err(err(
                "on_call",
                "You are on a call: end it before you dial another",
            ));
        }
        if cmd.number.as_str() == cmd.device.as_str() {
            return Err(CommandError::field(
                "own_device",
                "number",
                format!("Extension {} is your own device", cmd.device),
            ));
        }
        let devices = self
            .ctx
            .bus
            .request(&self.pbx(tenant), &ListDevices {})
            .await?;
        let own = devices.iter().find(|d| d.device == cmd.device);
        if !own.is_some_and(|d| d.registered) {
            return Err(CommandError::field(
                "device_offline",
                "device",
                format!(
                    "Your device {} is not registered: register your phone, then dial",
                    cmd.device
                ),
            ));
        }
        let extension = devices
            .iter()
            .find(|d| d.device.as_str() == cmd.number.as_str())
            .map(|d| d.device.clone());
        let far = match &extension {
            Some(d) => Endpoint::Device(d.clone()),
            None => Endpoint::Number(cmd.number.to_string()),
        };
        if let Err(e) = self
            .ctx
            .bus
            .request(
                &self.pbx(tenant),
                &CheckRoute {
                    endpoint: far.clone(),
                },
            )
            .await
        {
            let mut e = CommandError::from(e);
            if e.field.is_some() {
                e.field = Some("number".into());
            }
            return Err(e);
        }
        let call = Uuid::now_v7().simple().to_string();
        let leg = Uuid::now_v7().simple().to_string();
        let far_leg = Uuid::now_v7().simple().to_string();
        self.record(
            &mut st,
            tenant,
            &call,
            vec![CallEvent::OutboundCallStarted {
                call: call.clone(),
                agent: cmd.agent.clone(),
                device: cmd.device.clone(),
                number: cmd.number.clone(),
                extension: extension.is_some(),
                leg: leg.clone(),
                far_leg,
                ring_timeout_s: cmd.ring_timeout_s.clamp(1, 600),
            }],
        )
        .await?;
        let originate = Originate {
            channel: Some(leg),
            endpoint: Endpoint::Device(cmd.device.clone()),
            // The agent's phone shows whom it is about to call.
            caller: Party {
                number: cmd.number.to_string(),
                name: format!("Call {}", cmd.number),
            },
        };
        if let Err(e) = self.ctx.bus.request(&self.pbx(tenant), &originate).await {
            tracing::info!(error = %e, call, "the agent's device could not be rung");
            self.outbound_failed(&mut st, &call, OutboundFailure::AgentUnavailable)
                .await?;
            let mut e = CommandError::from(e);
            e.field = Some("device".into());
            return Err(e);
        }
        self.outbound_ring_timeout(tenant, &call, None);
        Ok(call)
    }

    /// Stops the ringing of an outbound call's leg (the agent's, or with `far` the number's,
    /// after that time) if it still rings after its time; its hangup then fails the call.
    fn outbound_ring_timeout(&self, tenant: &str, call: &str, far: Option<Duration>) {
        let after = far.unwrap_or(OUTBOUND_AGENT_RING);
        let far = far.is_some();
        self.hang_up_unanswered(tenant, call, after, move |l| {
            let o = l.dialing()?;
            match (far, o.dialed) {
                (false, false) => l.agent.as_ref().map(|a| a.leg.clone()),
                (true, true) => Some(l.customer.clone()),
                _ => None,
            }
        });
    }

    /// The agent's phone answered an outbound call: the number is rung now.
    async fn dial_far_end(
        &self,
        st: &mut State,
        tenant: &str,
        call: &str,
    ) -> Result<(), CommandError> {
        let Some(l) = st.model.calls.get(call).cloned() else {
            return Ok(());
        };
        let (Some(o), Some(a)) = (l.dialing().cloned(), l.agent.clone()) else {
            return Ok(());
        };
        if o.dialed {
            return Ok(()); // a redelivery
        }
        self.record(
            st,
            tenant,
            call,
            vec![CallEvent::OutboundCallDialed {
                call: call.into(),
                agent: a.agent.clone(),
            }],
        )
        .await?;
        let endpoint = match DeviceId::parse(o.number.as_str()) {
            Ok(d) if o.extension => Endpoint::Device(d),
            _ => Endpoint::Number(o.number.to_string()),
        };
        let originate = Originate {
            channel: Some(l.customer.clone()),
            endpoint,
            // The far end sees the agent's extension (a trunk presents the tenant's number).
            caller: Party {
                number: a.device.as_ref().map(|d| d.to_string()).unwrap_or_default(),
                name: String::new(),
            },
        };
        if let Err(e) = self.ctx.bus.request(&self.pbx(tenant), &originate).await {
            tracing::info!(error = %e, call, "the number dialled could not be rung");
            return self
                .outbound_failed(st, call, OutboundFailure::Unavailable)
                .await;
        }
        self.outbound_ring_timeout(tenant, call, Some(far_ring(&o)));
        Ok(())
    }

    /// An outbound call ends before it connected: recorded, then both legs are hung up.
    async fn outbound_failed(
        &self,
        st: &mut State,
        call: &str,
        reason: OutboundFailure,
    ) -> Result<(), CommandError> {
        let Some(l) = st.model.calls.get(call).cloned() else {
            return Ok(());
        };
        let Some(a) = l.agent.clone().filter(|_| l.dialing().is_some()) else {
            return Ok(());
        };
        self.record(
            st,
            &l.tenant,
            call,
            vec![CallEvent::OutboundCallFailed {
                call: call.into(),
                agent: a.agent,
                reason,
            }],
        )
        .await?;
        self.hang_up_later(
            &l.tenant,
            l.legs().into_iter().map(|(leg, _)| leg).collect(),
        )
        .await;
        Ok(())
    }

    /// The answered target of a transfer leaves it from the portal: recorded as the target
    /// hanging up (`TransferFailed` `target_hung_up`), then their leg is hung up.
    async fn target_leaves(&self, st: &mut State, call: &str) -> Result<(), CommandError> {
        let leg = st
            .model
            .calls
            .get(call)
            .and_then(|l| l.transfer.as_ref())
            .and_then(|t| t.leg.clone());
        self.target_failed(st, call, TransferFailure::TargetHungUp)
            .await?;
        if let Some(leg) = leg {
            let tenant = st.model.calls.get(call).map(|l| l.tenant.clone());
            if let Some(tenant) = tenant {
                self.hang_up_later(&tenant, vec![leg]).await;
            }
        }
        Ok(())
    }

    /// Puts the customer on hold or takes them off it. In an attended transfer the agent talks
    /// with one side at a time: resuming the customer holds the target, and holding the
    /// customer goes back to the target.
    async fn hold(
        &self,
        tenant: &str,
        agent: &AgentNumber,
        held: bool,
    ) -> Result<(), CommandError> {
        let mut st = self.state.lock().await;
        let (call, l) = self.find(&mut st, tenant, agent).await?;
        if !l.connected {
            return Err(err("not_connected", "The call is not connected yet"));
        }
        if l.held == held {
            return Err(if held {
                err("already_on_hold", "The caller is already on hold")
            } else {
                err("not_on_hold", "The caller is not on hold")
            });
        }
        let a = l.agent.clone().expect("the agent's call");
        let e = if held {
            CallEvent::CallHeld {
                call: call.clone(),
                agent: agent.clone(),
            }
        } else {
            CallEvent::CallResumed {
                call: call.clone(),
                agent: agent.clone(),
            }
        };
        self.ctx
            .bus
            .request(
                &self.pbx(tenant),
                &Hold {
                    channel: l.customer.clone(),
                    held,
                },
            )
            .await?;
        self.record(&mut st, tenant, &call, vec![e]).await?;
        if let Some(t) = l
            .transfer
            .as_ref()
            .filter(|t| t.method == TransferMethod::Attended && t.answered_at.is_some())
        {
            let leg = t.leg.clone().expect("an answered target has a leg");
            if held {
                self.try_pbx(
                    tenant,
                    &Bridge {
                        bridge: format!("{call}-consult"),
                        channels: vec![a.leg.clone(), leg.clone()],
                    },
                )
                .await;
                self.try_pbx(
                    tenant,
                    &Hold {
                        channel: leg,
                        held: false,
                    },
                )
                .await;
            } else {
                self.try_pbx(
                    tenant,
                    &Hold {
                        channel: leg,
                        held: true,
                    },
                )
                .await;
                self.try_pbx(
                    tenant,
                    &Bridge {
                        bridge: call.clone(),
                        channels: vec![l.customer.clone(), a.leg.clone()],
                    },
                )
                .await;
            }
        }
        Ok(())
    }

    /// Starts a transfer of the agent's connected call (see `docs/transfers.md`).
    async fn transfer(&self, tenant: &str, cmd: TransferCall) -> Result<(), CommandError> {
        let mut st = self.state.lock().await;
        let (call, l) = self.find(&mut st, tenant, &cmd.agent).await?;
        let a = l.agent.clone().expect("the agent's call");
        if !l.connected {
            return Err(err(
                "not_connected",
                "The call is not connected yet: transfer it once it is",
            ));
        }
        if l.transfer.is_some() {
            return Err(err(
                "transfer_in_progress",
                "A transfer of this call is going on: complete or cancel it first",
            ));
        }
        // The target, checked before anything is touched.
        let endpoint = match &cmd.target {
            TransferTarget::Queue(_) if cmd.method != TransferMethod::Blind => {
                return Err(CommandError::field(
                    "invalid_field",
                    "method",
                    "a call goes to a queue by blind transfer only",
                ));
            }
            TransferTarget::Queue(_) => None,
            TransferTarget::Number(n) => {
                if n.is_empty()
                    || n.len() > 32
                    || !n
                        .chars()
                        .enumerate()
                        .all(|(i, c)| c.is_ascii_digit() || (i == 0 && c == '+'))
                {
                    return Err(CommandError::field(
                        "invalid_field",
                        "target",
                        format!("{n:?} is not a phone number (digits, may start with +)"),
                    ));
                }
                Some(Endpoint::Number(n.clone()))
            }
            TransferTarget::Extension(_) | TransferTarget::Agent(_) => {
                let Some(device) = cmd.device.clone() else {
                    return Err(CommandError::field(
                        "missing_field",
                        "device",
                        "the device to ring is required",
                    ));
                };
                if a.device.as_ref() == Some(&device) {
                    return Err(CommandError::field(
                        "own_device",
                        "target",
                        format!("Extension {device} is your own device"),
                    ));
                }
                if cmd.target_agent.as_ref() == Some(&cmd.agent) {
                    return Err(CommandError::field(
                        "own_device",
                        "target",
                        "you cannot transfer a call to yourself",
                    ));
                }
                self.online_device(tenant, &device, "target").await?;
                Some(Endpoint::Device(device))
            }
        };
        let transfer = Uuid::now_v7().simple().to_string();
        let leg = endpoint
            .as_ref()
            .map(|_| Uuid::now_v7().simple().to_string());
        let started = CallEvent::TransferStarted {
            call: call.clone(),
            transfer: transfer.clone(),
            agent: cmd.agent.clone(),
            method: cmd.method,
            target: cmd.target.clone(),
            leg: leg.clone(),
            target_agent: cmd.target_agent.clone(),
            queue: l.queue.clone(),
        };
        let talk_ms = (Utc::now() - a.answered_at).num_milliseconds().max(0);
        let dropped = CallEvent::CallEnded {
            call: call.clone(),
            agent: cmd.agent.clone(),
            by: EndedBy::Transferred,
            talk_ms,
        };
        let mut events = vec![started];
        match (&cmd.method, &cmd.target) {
            (TransferMethod::Blind, TransferTarget::Queue(q)) => {
                events.push(dropped);
                events.push(CallEvent::TransferCompleted {
                    call: call.clone(),
                    transfer: transfer.clone(),
                    agent: cmd.agent.clone(),
                    target_agent: None,
                });
                events.push(CallEvent::CallEnteredQueue {
                    call: call.clone(),
                    queue: q.clone(),
                    caller: l.caller.clone(),
                    channel: l.customer.clone(),
                    priority: REQUEUE_PRIORITY,
                });
            }
            (TransferMethod::Blind, _) => events.push(dropped),
            (TransferMethod::Attended, _) if !l.held => events.push(CallEvent::CallHeld {
                call: call.clone(),
                agent: cmd.agent.clone(),
            }),
            _ => {}
        }
        self.record(&mut st, tenant, &call, events).await?;
        // Then the PBX: the customer waits (on hold for an attended transfer), the target rings.
        match cmd.method {
            TransferMethod::Blind => self.hang_up_later(tenant, vec![a.leg.clone()]).await,
            TransferMethod::Attended => {
                self.try_pbx(
                    tenant,
                    &Hold {
                        channel: l.customer.clone(),
                        held: true,
                    },
                )
                .await
            }
            TransferMethod::Live => {}
        }
        if let (Some(endpoint), Some(leg)) = (endpoint, leg) {
            let originate = Originate {
                channel: Some(leg.clone()),
                endpoint,
                caller: l.caller.clone(),
            };
            if let Err(e) = self.ctx.bus.request(&self.pbx(tenant), &originate).await {
                tracing::info!(error = %e, call, "the transfer target could not be rung");
                self.target_failed(&mut st, &call, TransferFailure::Unavailable)
                    .await?;
                return Ok(());
            }
            self.ring_timeout(
                tenant,
                &call,
                &transfer,
                Duration::from_secs(cmd.ring_timeout_s.clamp(1, 600) as u64),
            );
        }
        Ok(())
    }

    /// Refuses a device the PBX does not know (`unknown_extension`) or that is offline
    /// (`device_offline`), naming `field`.
    async fn online_device(
        &self,
        tenant: &str,
        device: &cc_contracts::domain::DeviceId,
        field: &str,
    ) -> Result<(), CommandError> {
        let devices = self
            .ctx
            .bus
            .request(&self.pbx(tenant), &ListDevices {})
            .await?;
        match devices.iter().find(|d| &d.device == device) {
            None => Err(CommandError::field(
                "unknown_extension",
                field,
                format!("There is no extension {device}"),
            )),
            Some(d) if !d.registered => Err(CommandError::field(
                "device_offline",
                field,
                format!("Extension {device} is offline"),
            )),
            Some(_) => Ok(()),
        }
    }

    /// Stops the target's phone ringing after `after`; its hangup then fails the transfer.
    fn ring_timeout(&self, tenant: &str, call: &str, transfer: &str, after: Duration) {
        let transfer = transfer.to_string();
        self.hang_up_unanswered(tenant, call, after, move |l| {
            l.transfer
                .as_ref()
                .filter(|t| t.id == transfer && t.answered_at.is_none())
                .and_then(|t| t.leg.clone())
        });
    }

    /// After `after`, hangs up (as not answered) the leg of `call` that `ringing` still names:
    /// a ring timeout that changes nothing once the leg answered or the call moved on.
    fn hang_up_unanswered(
        &self,
        tenant: &str,
        call: &str,
        after: Duration,
        ringing: impl Fn(&Live) -> Option<String> + Send + 'static,
    ) {
        let (me, tenant, call) = (self.clone(), tenant.to_string(), call.to_string());
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let leg = {
                let st = me.state.lock().await;
                st.model.calls.get(&call).and_then(&ringing)
            };
            if let Some(leg) = leg {
                me.try_pbx(
                    &tenant,
                    &Hangup {
                        channel: leg,
                        cause: HangupCause::NoAnswer,
                    },
                )
                .await;
            }
        });
    }

    /// The target did not take the call: with the agent still on it, the customer is back with
    /// them; else the customer goes back to the head of the call's queue.
    async fn target_failed(
        &self,
        st: &mut State,
        call: &str,
        reason: TransferFailure,
    ) -> Result<(), CommandError> {
        let Some(l) = st.model.calls.get(call).cloned() else {
            return Ok(());
        };
        let Some(t) = l.transfer.clone() else {
            return Ok(());
        };
        let tenant = l.tenant.clone();
        let mut events = vec![CallEvent::TransferFailed {
            call: call.into(),
            transfer: t.id.clone(),
            agent: t.agent.clone(),
            reason,
            target_agent: t.target_agent.clone(),
        }];
        match &l.agent {
            Some(a) => {
                let back = t.method == TransferMethod::Attended && l.held;
                if back {
                    events.push(CallEvent::CallResumed {
                        call: call.into(),
                        agent: a.agent.clone(),
                    });
                }
                self.record(st, &tenant, call, events).await?;
                if t.method == TransferMethod::Attended {
                    self.try_pbx(
                        &tenant,
                        &Bridge {
                            bridge: call.into(),
                            channels: vec![l.customer.clone(), a.leg.clone()],
                        },
                    )
                    .await;
                }
                if back {
                    self.try_pbx(
                        &tenant,
                        &Hold {
                            channel: l.customer.clone(),
                            held: false,
                        },
                    )
                    .await;
                }
            }
            None => match &l.queue {
                Some(queue) => {
                    events.push(CallEvent::CallEnteredQueue {
                        call: call.into(),
                        queue: queue.clone(),
                        caller: l.caller.clone(),
                        channel: l.customer.clone(),
                        priority: REQUEUE_PRIORITY,
                    });
                    self.record(st, &tenant, call, events).await?;
                }
                // An outbound call has no queue to go back to: it ends.
                None => {
                    events.push(CallEvent::TransferredCallEnded {
                        call: call.into(),
                        by: Side::Target,
                        talk_ms: 0,
                    });
                    self.record(st, &tenant, call, events).await?;
                    self.hang_up_later(&tenant, vec![l.customer.clone()]).await;
                }
            },
        }
        Ok(())
    }

    /// The transferring agent leaves the call (Complete, or they hung up): the customer is
    /// joined with the target if it answered, else waits for it as in a blind transfer.
    async fn agent_leaves(&self, st: &mut State, call: &str) -> Result<(), CommandError> {
        let Some(l) = st.model.calls.get(call).cloned() else {
            return Ok(());
        };
        let (Some(a), Some(t)) = (l.agent.clone(), l.transfer.clone()) else {
            return Ok(());
        };
        let tenant = l.tenant.clone();
        let talk_ms = (Utc::now() - a.answered_at).num_milliseconds().max(0);
        let mut events = vec![CallEvent::CallEnded {
            call: call.into(),
            agent: a.agent.clone(),
            by: EndedBy::Transferred,
            talk_ms,
        }];
        let answered = t.answered_at.is_some();
        if answered {
            events.extend(self.joined(call, &t));
        }
        self.record(st, &tenant, call, events).await?;
        if let (true, Some(leg)) = (answered, t.leg.clone()) {
            self.try_pbx(
                &tenant,
                &Bridge {
                    bridge: call.into(),
                    channels: vec![l.customer.clone(), leg.clone()],
                },
            )
            .await;
            self.try_pbx(
                &tenant,
                &Hold {
                    channel: leg,
                    held: false,
                },
            )
            .await;
        }
        if l.held {
            self.try_pbx(
                &tenant,
                &Hold {
                    channel: l.customer.clone(),
                    held: false,
                },
            )
            .await;
        }
        self.hang_up_later(&tenant, vec![a.leg]).await;
        Ok(())
    }

    /// The events of the customer joined with the transfer's target.
    fn joined(&self, call: &str, t: &model::Transfer) -> Vec<CallEvent> {
        let mut v = vec![CallEvent::TransferCompleted {
            call: call.into(),
            transfer: t.id.clone(),
            agent: t.agent.clone(),
            target_agent: t.target_agent.clone(),
        }];
        if let Some(b) = &t.target_agent {
            v.push(CallEvent::CallConnected {
                call: call.into(),
                agent: b.clone(),
                bridge: call.into(),
            });
        }
        v
    }

    async fn complete(&self, tenant: &str, agent: &AgentNumber) -> Result<(), CommandError> {
        let mut st = self.state.lock().await;
        let (call, l) = self.find(&mut st, tenant, agent).await?;
        if l.transfer.is_none() {
            return Err(err(
                "no_transfer",
                "There is no transfer to complete: start an attended or live transfer first",
            ));
        }
        self.agent_leaves(&mut st, &call).await
    }

    async fn cancel(&self, tenant: &str, agent: &AgentNumber) -> Result<(), CommandError> {
        let mut st = self.state.lock().await;
        let (call, l) = self.find(&mut st, tenant, agent).await?;
        let Some(t) = l.transfer.clone() else {
            return Err(err("no_transfer", "There is no transfer to cancel"));
        };
        let a = l.agent.clone().expect("the agent's call");
        let back = t.method == TransferMethod::Attended && l.held;
        let mut events = vec![CallEvent::TransferCancelled {
            call: call.clone(),
            transfer: t.id.clone(),
            agent: agent.clone(),
            target_agent: t.target_agent.clone(),
        }];
        if back {
            events.push(CallEvent::CallResumed {
                call: call.clone(),
                agent: agent.clone(),
            });
        }
        self.record(&mut st, tenant, &call, events).await?;
        if let Some(leg) = t.leg {
            self.hang_up_later(tenant, vec![leg]).await;
        }
        if t.method == TransferMethod::Attended {
            self.try_pbx(
                tenant,
                &Bridge {
                    bridge: call.clone(),
                    channels: vec![l.customer.clone(), a.leg.clone()],
                },
            )
            .await;
        }
        if back {
            self.try_pbx(
                tenant,
                &Hold {
                    channel: l.customer.clone(),
                    held: false,
                },
            )
            .await;
        }
        Ok(())
    }

    /// A leg of a call answered: only a transfer's target matters here.
    /// The agent's phone put the call on hold itself (or resumed it): the same hold as the
    /// portal's button (CallHeld / CallResumed, the customer hears the music). Reports about
    /// other legs (the customer held on command) and holds during a transfer change nothing.
    async fn phone_hold(&self, tenant: &str, channel: &str, held: bool) {
        let agent = {
            let st = self.state.lock().await;
            match st.model.leg(tenant, channel) {
                Some((call, Role::Agent)) => {
                    let l = &st.model.calls[&call];
                    (l.connected && l.held != held && l.transfer.is_none())
                        .then(|| l.agent.as_ref().map(|a| a.agent.clone()))
                        .flatten()
                }
                _ => None,
            }
        };
        if let Some(agent) = agent {
            if let Err(e) = self.hold(tenant, &agent, held).await {
                tracing::info!(%tenant, %channel, error = %e.message, "a hold from the agent's phone was not taken");
            }
        }
    }

    /// The agent's phone asked to transfer the call (its transfer button, SIP REFER): the same
    /// transfer as the portal's, with the same events and counts. Blind to `to` (an extension,
    /// the agent logged in on it, a queue, or an outside number); with `replaces`, attended: the
    /// phone consulted the target on a call of its own, whose target leg is joined with the
    /// customer. A request call-control refuses (not the agent's connected call, a transfer
    /// going on) is logged and leaves the call as it is.
    async fn phone_transfer(&self, tenant: &str, channel: &str, to: &str, replaces: Option<&str>) {
        let agent = {
            let st = self.state.lock().await;
            match st.model.leg(tenant, channel) {
                Some((call, Role::Agent)) => st.model.calls[&call]
                    .agent
                    .as_ref()
                    .map(|a| a.agent.clone()),
                _ => None,
            }
        };
        let Some(agent) = agent else {
            tracing::info!(%tenant, %channel, "a phone's transfer of a leg that is no agent's call: ignored");
            return;
        };
        let result = match replaces {
            None => match self.phone_target(tenant, &agent, to).await {
                Ok(cmd) => self.transfer(tenant, cmd).await,
                Err(e) => Err(e),
            },
            Some(leg) => self.phone_attended(tenant, &agent, leg).await,
        };
        if let Err(e) = result {
            tracing::info!(%tenant, %channel, %agent, to, error = %e.message, "a transfer from the agent's phone was not taken");
        }
    }

    /// What a number dialled on the phone's transfer means: a queue of the tenant, an extension
    /// (credited to the agent logged in on it, if any), else an outside number.
    async fn phone_target(
        &self,
        tenant: &str,
        agent: &AgentNumber,
        to: &str,
    ) -> Result<TransferCall, CommandError> {
        let ctx = self.pbx(tenant);
        let queues = self
            .ctx
            .bus
            .request(&ctx, &cc_contracts::queue::ListQueues {})
            .await?;
        let blind = |target, device, target_agent| TransferCall {
            agent: agent.clone(),
            method: TransferMethod::Blind,
            target,
            device,
            target_agent,
            ring_timeout_s: 30,
        };
        if let Some(q) = queues.iter().find(|q| q.queue.as_str() == to) {
            return Ok(blind(TransferTarget::Queue(q.queue.clone()), None, None));
        }
        let options = self
            .ctx
            .bus
            .request(
                &ctx,
                &cc_contracts::session::GetLoginOptions {
                    agent: agent.clone(),
                },
            )
            .await?;
        match cc_contracts::domain::DeviceId::parse(to) {
            Ok(device) => {
                let on = options
                    .devices
                    .iter()
                    .find(|d| d.device == device)
                    .and_then(|d| d.in_use_by.clone());
                let target = match &on {
                    Some(b) => TransferTarget::Agent(b.clone()),
                    None => TransferTarget::Extension(device.clone()),
                };
                let known = self
                    .ctx
                    .bus
                    .request(&ctx, &ListDevices {})
                    .await?
                    .iter()
                    .any(|d| d.device == device);
                if known {
                    return Ok(blind(target, Some(device), on));
                }
                Ok(blind(TransferTarget::Number(to.to_string()), None, None))
            }
            Err(_) => Ok(blind(TransferTarget::Number(to.to_string()), None, None)),
        }
    }

    /// An attended transfer the phone made itself: it called the target on a call of its own
    /// (the PBX's channel `leg` is the target's side of it), then pressed transfer. Recorded as
    /// an attended transfer that was answered and completed at once: the customer is joined
    /// with the target, the agent's leg is hung up (the PBX ends the phone's own call).
    async fn phone_attended(
        &self,
        tenant: &str,
        agent: &AgentNumber,
        leg: &str,
    ) -> Result<(), CommandError> {
        let mut st = self.state.lock().await;
        let (call, l) = self.find(&mut st, tenant, agent).await?;
        if !l.connected || l.transfer.is_some() {
            return Err(err(
                "transfer_in_progress",
                "The call is not connected, or a transfer is going on",
            ));
        }
        let channels = self
            .ctx
            .bus
            .request(&self.pbx(tenant), &ListChannels {})
            .await?;
        let Some(target) = channels.iter().find(|c| c.channel == leg) else {
            return Err(err("unknown_channel", format!("There is no channel {leg}")));
        };
        let Some(device) = target.device.clone() else {
            return Err(err(
                "invalid_field",
                "the consultation call's target is not an extension",
            ));
        };
        let options = self
            .ctx
            .bus
            .request(
                &self.pbx(tenant),
                &cc_contracts::session::GetLoginOptions {
                    agent: agent.clone(),
                },
            )
            .await?;
        let target_agent = options
            .devices
            .iter()
            .find(|d| d.device == device)
            .and_then(|d| d.in_use_by.clone());
        let transfer = Uuid::now_v7().simple().to_string();
        let started = CallEvent::TransferStarted {
            call: call.clone(),
            transfer: transfer.clone(),
            agent: agent.clone(),
            method: TransferMethod::Attended,
            target: match &target_agent {
                Some(b) => TransferTarget::Agent(b.clone()),
                None => TransferTarget::Extension(device.clone()),
            },
            leg: Some(leg.to_string()),
            target_agent: target_agent.clone(),
            queue: l.queue.clone(),
        };
        let answered = CallEvent::TransferAnswered {
            call: call.clone(),
            transfer,
            agent: agent.clone(),
            target_agent,
        };
        self.record(&mut st, tenant, &call, vec![started, answered])
            .await?;
        self.agent_leaves(&mut st, &call).await
    }

    async fn leg_answered(&self, tenant: &str, channel: &str) -> anyhow::Result<()> {
        let mut st = self.state.lock().await;
        let (call, role) = match st.model.leg(tenant, channel) {
            Some((call, Role::Monitor)) => return Ok(self.monitor_joined(&mut st, &call).await?),
            Some(found) => found,
            None => return Ok(()),
        };
        if let Some(o) = st.model.calls[&call].dialing().cloned() {
            match role {
                Role::Agent if !o.dialed => {
                    return Ok(self.dial_far_end(&mut st, tenant, &call).await?)
                }
                Role::Customer if o.dialed => {
                    drop(st);
                    return self.join(&call, true).await;
                }
                _ => return Ok(()),
            }
        }
        if role != Role::Target {
            return Ok(());
        }
        let l = st.model.calls[&call].clone();
        let t = l
            .transfer
            .clone()
            .expect("a target leg belongs to a transfer");
        if t.answered_at.is_some() {
            return Ok(()); // a redelivery
        }
        let answered = CallEvent::TransferAnswered {
            call: call.clone(),
            transfer: t.id.clone(),
            agent: t.agent.clone(),
            target_agent: t.target_agent.clone(),
        };
        match &l.agent {
            // Blind, or the agent left already: the customer is joined with the target.
            None => {
                let mut events = vec![answered];
                events.extend(self.joined(&call, &t));
                self.record(&mut st, tenant, &call, events).await?;
                self.try_pbx(
                    tenant,
                    &Bridge {
                        bridge: call.clone(),
                        channels: vec![l.customer.clone(), channel.to_string()],
                    },
                )
                .await;
            }
            Some(a) if t.method == TransferMethod::Live => {
                let conference = CallEvent::ConferenceFormed {
                    call: call.clone(),
                    transfer: t.id.clone(),
                    agent: a.agent.clone(),
                    target_agent: t.target_agent.clone(),
                };
                self.record(&mut st, tenant, &call, vec![answered, conference])
                    .await?;
                self.try_pbx(
                    tenant,
                    &Bridge {
                        bridge: call.clone(),
                        channels: vec![l.customer.clone(), a.leg.clone(), channel.to_string()],
                    },
                )
                .await;
            }
            // Attended: the consultation; the agent talks with the target while the customer is
            // on hold (if the agent went back to the customer meanwhile, the target waits).
            Some(a) => {
                self.record(&mut st, tenant, &call, vec![answered]).await?;
                if l.held {
                    self.try_pbx(
                        tenant,
                        &Bridge {
                            bridge: format!("{call}-consult"),
                            channels: vec![a.leg.clone(), channel.to_string()],
                        },
                    )
                    .await;
                } else {
                    self.try_pbx(
                        tenant,
                        &Hold {
                            channel: channel.to_string(),
                            held: true,
                        },
                    )
                    .await;
                }
            }
        }
        Ok(())
    }

    /// A leg of a call hung up.
    async fn leg_gone(
        &self,
        tenant: &str,
        channel: &str,
        cause: HangupCause,
    ) -> anyhow::Result<()> {
        let mut st = self.state.lock().await;
        let Some((call, role)) = st.model.leg(tenant, channel) else {
            return Ok(());
        };
        let l = st.model.calls[&call].clone();
        if let Some(o) = l.dialing().cloned() {
            let reason = match role {
                Role::Agent => outbound_failure(cause, true, o.dialed),
                // The far leg is placed only once the agent answered.
                Role::Customer if o.dialed => outbound_failure(cause, false, true),
                _ => return Ok(()),
            };
            return Ok(self.outbound_failed(&mut st, &call, reason).await?);
        }
        match role {
            Role::Customer => {
                let mut events = vec![];
                if let Some(t) = &l.transfer {
                    events.push(CallEvent::TransferFailed {
                        call: call.clone(),
                        transfer: t.id.clone(),
                        agent: t.agent.clone(),
                        reason: TransferFailure::CallerGone,
                        target_agent: t.target_agent.clone(),
                    });
                }
                match (&l.agent, &l.outside) {
                    (Some(a), _) => {
                        let talk_ms = (Utc::now() - a.answered_at).num_milliseconds().max(0);
                        events.push(CallEvent::CallEnded {
                            call: call.clone(),
                            agent: a.agent.clone(),
                            by: EndedBy::Caller,
                            talk_ms,
                        });
                    }
                    (None, Some((_, since))) => {
                        let talk_ms = (Utc::now() - *since).num_milliseconds().max(0);
                        events.push(CallEvent::TransferredCallEnded {
                            call: call.clone(),
                            by: Side::Caller,
                            talk_ms,
                        });
                    }
                    (None, None) => events.push(CallEvent::TransferredCallEnded {
                        call: call.clone(),
                        by: Side::Caller,
                        talk_ms: 0,
                    }),
                }
                self.record(&mut st, tenant, &call, events).await?;
                self.hang_up_later(
                    tenant,
                    l.legs()
                        .into_iter()
                        .map(|(leg, _)| leg)
                        .filter(|leg| leg != channel)
                        .collect(),
                )
                .await;
            }
            Role::Agent if l.transfer.is_some() => self.agent_leaves(&mut st, &call).await?,
            Role::Agent => self.end(&mut st, &call, EndedBy::AgentPhone).await?,
            Role::Target => {
                let answered = l.transfer.as_ref().is_some_and(|t| t.answered_at.is_some());
                self.target_failed(&mut st, &call, failure(cause, answered))
                    .await?;
            }
            Role::Monitor => {
                let m = l
                    .monitor
                    .clone()
                    .expect("a monitor leg belongs to a monitor");
                let reason = match cause {
                    _ if m.joined => MonitorEndReason::SupervisorHungUp,
                    HangupCause::Busy | HangupCause::Rejected => MonitorEndReason::Rejected,
                    HangupCause::Unavailable => MonitorEndReason::Unavailable,
                    _ => MonitorEndReason::NoAnswer,
                };
                self.record(
                    &mut st,
                    tenant,
                    &call,
                    vec![CallEvent::MonitorEnded {
                        call: call.clone(),
                        monitor: m.id,
                        agent: m.agent,
                        supervisor: m.supervisor,
                        reason,
                    }],
                )
                .await?;
            }
            Role::Outside => {
                let since = l.outside.as_ref().map(|(_, s)| *s).unwrap_or_else(Utc::now);
                let talk_ms = (Utc::now() - since).num_milliseconds().max(0);
                self.record(
                    &mut st,
                    tenant,
                    &call,
                    vec![CallEvent::TransferredCallEnded {
                        call: call.clone(),
                        by: Side::Target,
                        talk_ms,
                    }],
                )
                .await?;
                self.hang_up_later(tenant, vec![l.customer.clone()]).await;
            }
        }
        Ok(())
    }

    /// A supervisor starts monitoring the agent's connected call: their device rings; on its
    /// answer they join the call's bridge in their mode ([`Self::monitor_joined`]).
    async fn monitor(&self, tenant: &str, cmd: MonitorCall) -> Result<(), CommandError> {
        let mut st = self.state.lock().await;
        let (call, l) = self.find(&mut st, tenant, &cmd.agent).await?;
        if !l.connected {
            return Err(err(
                "not_connected",
                format!("Agent {}'s call is not connected yet", cmd.agent),
            ));
        }
        if let Some(m) = &l.monitor {
            return Err(err(
                "monitor_in_progress",
                format!("{} is already on agent {}'s call", m.supervisor, cmd.agent),
            ));
        }
        let agent_device = l.agent.as_ref().and_then(|a| a.device.clone());
        if agent_device.as_ref() == Some(&cmd.device) {
            return Err(CommandError::field(
                "own_device",
                "device",
                format!("Extension {} is the agent's own device", cmd.device),
            ));
        }
        self.online_device(tenant, &cmd.device, "device").await?;
        let monitor = Uuid::now_v7().simple().to_string();
        let leg = Uuid::now_v7().simple().to_string();
        self.record(
            &mut st,
            tenant,
            &call,
            vec![CallEvent::MonitorStarted {
                call: call.clone(),
                monitor: monitor.clone(),
                agent: cmd.agent.clone(),
                supervisor: cmd.supervisor.clone(),
                supervisor_name: cmd.supervisor_name.clone(),
                device: cmd.device.clone(),
                leg: leg.clone(),
                mode: cmd.mode,
            }],
        )
        .await?;
        let originate = Originate {
            channel: Some(leg),
            endpoint: Endpoint::Device(cmd.device),
            caller: l.caller.clone(),
        };
        if let Err(e) = self.ctx.bus.request(&self.pbx(tenant), &originate).await {
            tracing::info!(error = %e, call, "the supervisor's device could not be rung");
            self.record(
                &mut st,
                tenant,
                &call,
                vec![CallEvent::MonitorEnded {
                    call: call.clone(),
                    monitor,
                    agent: cmd.agent,
                    supervisor: cmd.supervisor,
                    reason: MonitorEndReason::Unavailable,
                }],
            )
            .await?;
            return Err(CommandError::field(
                "device_offline",
                "device",
                "the supervisor's device could not be rung",
            ));
        }
        self.monitor_ring_timeout(tenant, &call, &monitor);
        Ok(())
    }

    /// The supervisor's phone stops ringing after 30 seconds unanswered.
    fn monitor_ring_timeout(&self, tenant: &str, call: &str, monitor: &str) {
        let monitor = monitor.to_string();
        self.hang_up_unanswered(tenant, call, MONITOR_RING, move |l| {
            l.monitor
                .as_ref()
                .filter(|m| m.id == monitor && !m.joined)
                .map(|m| m.leg.clone())
        });
    }

    /// How the PBX is told a monitor mode: a listener is heard by nobody, a whisper by the
    /// agent's leg only, a barge by everyone.
    fn bridge_mode(l: &Live, mode: MonitorMode) -> BridgeMode {
        match (mode, l.agent.as_ref()) {
            (MonitorMode::Listen, _) | (MonitorMode::Whisper, None) => BridgeMode::Listen,
            (MonitorMode::Whisper, Some(a)) => BridgeMode::Whisper { to: a.leg.clone() },
            (MonitorMode::Barge, _) => BridgeMode::Speak,
        }
    }

    /// The supervisor's phone answered: they join the call's bridge in their mode, in one step
    /// (never heard, even for a moment, as an ordinary party).
    async fn monitor_joined(&self, st: &mut State, call: &str) -> Result<(), CommandError> {
        let Some(l) = st.model.calls.get(call).cloned() else {
            return Ok(());
        };
        let Some(m) = l.monitor.clone().filter(|m| !m.joined) else {
            return Ok(()); // a redelivery
        };
        self.record(
            st,
            &l.tenant,
            call,
            vec![CallEvent::MonitorJoined {
                call: call.into(),
                monitor: m.id.clone(),
                agent: m.agent.clone(),
                supervisor: m.supervisor.clone(),
            }],
        )
        .await?;
        let _ = self
            .ctx
            .bus
            .request(
                &self.pbx(&l.tenant),
                &Answer {
                    channel: m.leg.clone(),
                },
            )
            .await;
        self.try_pbx(
            &l.tenant,
            &SetBridgeMode {
                channel: m.leg.clone(),
                mode: Self::bridge_mode(&l, m.mode),
                bridge: Some(call.into()),
            },
        )
        .await;
        Ok(())
    }

    /// The monitoring supervisor's own monitor of the agent's call, or why there is none.
    fn own_monitor(
        l: &Live,
        agent: &AgentNumber,
        supervisor: &str,
    ) -> Result<model::Monitor, CommandError> {
        match &l.monitor {
            None => Err(err(
                "no_monitor",
                format!("No supervisor is on agent {agent}'s call"),
            )),
            Some(m) if m.supervisor != supervisor => Err(err(
                "forbidden",
                format!(
                    "{} is on agent {agent}'s call; only they can switch or leave",
                    m.supervisor
                ),
            )),
            Some(m) => Ok(m.clone()),
        }
    }

    /// The supervisor switches between Listen, Whisper and Barge on the same call.
    async fn set_monitor_mode(
        &self,
        tenant: &str,
        cmd: SetMonitorMode,
    ) -> Result<(), CommandError> {
        let mut st = self.state.lock().await;
        let (call, l) = self.find(&mut st, tenant, &cmd.agent).await?;
        let m = Self::own_monitor(&l, &cmd.agent, &cmd.supervisor)?;
        if m.mode == cmd.mode {
            return Ok(());
        }
        self.record(
            &mut st,
            tenant,
            &call,
            vec![CallEvent::MonitorModeChanged {
                call: call.clone(),
                monitor: m.id.clone(),
                agent: m.agent.clone(),
                supervisor: m.supervisor.clone(),
                mode: cmd.mode,
            }],
        )
        .await?;
        if m.joined {
            self.try_pbx(
                tenant,
                &SetBridgeMode {
                    channel: m.leg,
                    mode: Self::bridge_mode(&l, cmd.mode),
                    bridge: None,
                },
            )
            .await;
        }
        Ok(())
    }

    /// The supervisor leaves the agent's call (Leave): their leg is hung up.
    async fn stop_monitor(
        &self,
        tenant: &str,
        agent: &AgentNumber,
        supervisor: &str,
    ) -> Result<(), CommandError> {
        let mut st = self.state.lock().await;
        let (call, l) = self.find(&mut st, tenant, agent).await?;
        let m = Self::own_monitor(&l, agent, supervisor)?;
        self.record(
            &mut st,
            tenant,
            &call,
            vec![CallEvent::MonitorEnded {
                call: call.clone(),
                monitor: m.id,
                agent: m.agent,
                supervisor: m.supervisor,
                reason: MonitorEndReason::Left,
            }],
        )
        .await?;
        self.hang_up_later(tenant, vec![m.leg]).await;
        Ok(())
    }

    /// After a restart: legs the PBX no longer has end now, a target that answered meanwhile is
    /// acted on, answered calls not yet bridged are bridged, and ringing targets get their ring
    /// timeout again.
    async fn reconcile(&self) -> anyhow::Result<()> {
        let calls: Vec<(String, Live)> = self
            .state
            .lock()
            .await
            .model
            .calls
            .iter()
            .map(|(c, l)| (c.clone(), l.clone()))
            .collect();
        let mut live: HashMap<String, HashMap<String, ChannelState>> = HashMap::new();
        for (call, l) in calls {
            if !live.contains_key(&l.tenant) {
                let list = self
                    .ctx
                    .bus
                    .request(&self.pbx(&l.tenant), &ListChannels {})
                    .await?;
                live.insert(
                    l.tenant.clone(),
                    list.into_iter().map(|c| (c.channel.clone(), c)).collect(),
                );
            }
            let chans = &live[&l.tenant];
            if let (Some(o), Some(a)) = (l.dialing(), l.agent.as_ref()) {
                self.reconcile_dialing(&l.tenant, &call, o, &a.leg, &l.customer, chans)
                    .await?;
                continue;
            }
            for (leg, role) in l.legs() {
                let now = self.state.lock().await.model.calls.get(&call).cloned();
                let Some(now) = now.filter(|n| n.role_of(&leg) == Some(role)) else {
                    continue;
                };
                match chans.get(&leg) {
                    None => {
                        let cause = if role == Role::Target
                            && now
                                .transfer
                                .as_ref()
                                .is_some_and(|t| t.answered_at.is_none())
                        {
                            HangupCause::NoAnswer
                        } else {
                            HangupCause::Normal
                        };
                        self.leg_gone(&l.tenant, &leg, cause).await?;
                    }
                    Some(c) if matches!(role, Role::Target | Role::Monitor) && c.answered => {
                        self.leg_answered(&l.tenant, &leg).await?
                    }
                    Some(_) if role == Role::Monitor => {
                        let m = now.monitor.expect("a monitor leg belongs to a monitor");
                        self.monitor_ring_timeout(&l.tenant, &call, &m.id);
                    }
                    Some(_) if role == Role::Target => {
                        let t = now.transfer.expect("a target leg belongs to a transfer");
                        self.ring_timeout(&l.tenant, &call, &t.id, Duration::from_secs(30));
                    }
                    Some(_) => {}
                }
            }
            self.connect(&call).await?;
        }
        Ok(())
    }

    /// After a restart, an outbound call that had not connected: a leg gone ends it, a leg
    /// answered meanwhile is acted on, a ringing leg gets its ring timeout again.
    async fn reconcile_dialing(
        &self,
        tenant: &str,
        call: &str,
        o: &model::Outbound,
        agent_leg: &str,
        far_leg: &str,
        chans: &HashMap<String, ChannelState>,
    ) -> anyhow::Result<()> {
        let dialed = o.dialed;
        match chans.get(agent_leg) {
            None => return self.leg_gone(tenant, agent_leg, HangupCause::Normal).await,
            Some(c) if !dialed && c.answered => return self.leg_answered(tenant, agent_leg).await,
            Some(_) if !dialed => {
                self.outbound_ring_timeout(tenant, call, None);
                return Ok(());
            }
            Some(_) => {}
        }
        match chans.get(far_leg) {
            None => self.leg_gone(tenant, far_leg, HangupCause::NoAnswer).await,
            Some(c) if c.answered => self.leg_answered(tenant, far_leg).await,
            Some(_) => {
                self.outbound_ring_timeout(tenant, call, Some(far_ring(o)));
                Ok(())
            }
        }
    }
}

/// How long an outbound call's number rings.
fn far_ring(o: &model::Outbound) -> Duration {
    Duration::from_secs(o.ring_timeout_s.clamp(1, 600) as u64)
}
