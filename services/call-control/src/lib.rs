//! The call-control service: each queue call from the answer to its end. On `CallAnswered` it
//! answers the caller's channel and bridges it with the agent's; it follows every leg and ends
//! the call when one hangs up (or the agent hangs up from the portal), holds and resumes the
//! caller, and carries out transfers (blind, attended, live; see `docs/transfers.md`). One
//! replica acts at a time (a lease); after a restart it rebuilds its calls from the store
//! ([`model::Model`]) and reconciles them with the PBX's live channels, so a leg that ended or
//! answered meanwhile is acted on once.

pub mod model;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use cc_bus::parked::Reason;
use cc_bus::{CommandContext, CommandError, CommandHandlers, RequestError};
use cc_contracts::call::*;
use cc_contracts::domain::AgentNumber;
use cc_contracts::pbx::{
    Answer, Bridge, ChannelEvent, ChannelState, CheckRoute, Endpoint, Hangup, HangupCause, Hold,
    ListChannels, ListDevices, Originate, SetBridgeMode,
};
use cc_contracts::{decode_checked, encode, Decoded};
use cc_eventstore::{
    Checkpoint, ExpectedVersion, Feed, Lease, Metadata, ReadFilter, Snapshots, StreamName,
    Subscription,
};
use cc_runtime::Context;
use chrono::Utc;
use futures::StreamExt;
use tokio::sync::Mutex;
use uuid::Uuid;

use cc_core::{Decider, Partition};
use desk::{Ask, CallCore, Pbx, Step, What};
use model::{Live, Model, Role};

mod desk;

pub const MIGRATIONS: &[cc_eventstore::Migration] = &[];

/// What the call events build, and what a snapshot of it holds (`es_snapshots`, name
/// `call-control`): the calls, the store position they cover, the calls' versions. A snapshot is
/// a cache: one missing, of another [`SNAPSHOT_FORMAT`] or that does not decode means a full
/// replay of the call events.
#[derive(Default, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct State {
    model: Model,
    /// Events this replica appended and applied already: skipped when the store returns them.
    #[serde(skip)]
    own: HashSet<Uuid>,
    /// The store position of the last event taken in (by the follow loop or a catch-up).
    applied: Checkpoint,
    /// The version of each call's stream the model stands on, for the calls it holds (live or
    /// waiting). Each append names it: when another writer (the router, a wrap-up command)
    /// appended to the call first, the append is a conflict, the model catches up with the
    /// store and the decision is made again ([`again_on_conflict`], and the command handlers'
    /// own retry).
    versions: HashMap<String, i64>,
    /// The legs of the calls that left the model last: a new leader hangs up those the PBX
    /// still has ([`CallControl::reconcile`]). An ending recorded whose hangups never went out
    /// (the leader stopped in between, an append reported failed that had committed) would
    /// otherwise leave a caller or a phone on a call that is over, as nobody looks at an ended
    /// call again.
    #[serde(default)]
    ended: VecDeque<Ended>,
}

/// A call that left the model: its tenant, when, and its legs then.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Ended {
    tenant: String,
    at: chrono::DateTime<Utc>,
    legs: Vec<String>,
}

/// How many ended calls [`State::ended`] keeps, and for how long a new leader looks at them.
const ENDED_KEPT: usize = 1000;
const ENDED_LOOKED_AT: chrono::TimeDelta = chrono::TimeDelta::minutes(10);

impl State {
    /// Applies a call event to the model, keeping the legs of a call it ends.
    fn apply(&mut self, tenant: &str, e: &CallEvent, at: chrono::DateTime<Utc>) {
        let call = e.call();
        let legs = self.model.calls.get(call).map(|l| l.legs());
        self.model.apply(tenant, e, at);
        let over = !self.model.calls.contains_key(call) && !self.model.waiting.contains_key(call);
        if let Some(legs) = legs.filter(|_| over) {
            if self.ended.len() == ENDED_KEPT {
                self.ended.pop_front();
            }
            self.ended.push_back(Ended {
                tenant: tenant.to_string(),
                at,
                legs: legs.into_iter().map(|(leg, _)| leg).collect(),
            });
        }
    }

    /// Forgets the version of a call the model no longer holds.
    fn forget_if_over(&mut self, call: &str) {
        if !self.model.calls.contains_key(call) && !self.model.waiting.contains_key(call) {
            self.versions.remove(call);
        }
    }
}

/// Whether `e` is a conflict: a decision made on a call that another writer changed meanwhile.
fn is_conflict(e: &anyhow::Error) -> bool {
    e.downcast_ref::<CommandError>()
        .is_some_and(|e| e.error == cc_bus::CONFLICT)
}

/// Runs a decision on a PBX fact again (on the caught-up state) while it meets a conflict, a
/// few times; then the conflict stops this leader, and the next one decides on the store.
async fn again_on_conflict<F, Fut>(mut decide: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut attempt = 1;
    loop {
        match decide().await {
            Err(e) if is_conflict(&e) && attempt < cc_bus::DECIDE_ATTEMPTS => {
                tracing::debug!(attempt, "deciding on a PBX fact again after a conflict");
                tokio::time::sleep(cc_bus::conflict_backoff(attempt)).await;
                attempt += 1;
            }
            r => return r,
        }
    }
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
    if !cc_runtime::partitions::pbx_channel_consumers(&ctx, CHANNEL_CONSUMER).await {
        return Ok(());
    }
    let lead_one = |p: Partition, stop: tokio_util::sync::CancellationToken| {
        let ctx = ctx.clone();
        async move { lead(&ctx, p, stop).await }
    };
    cc_runtime::partitions::lead(&ctx, "call control", "call-control", LEASE, lead_one).await;
    Ok(())
}

/// Call control's lease (per partition: `cc-call-control/p3`).
const LEASE: &str = "cc-call-control";

/// The name of partition `p`'s durable consumer of the PBX's channel facts.
fn consumer_name(p: Partition) -> String {
    cc_runtime::partitions::consumer_name(CHANNEL_CONSUMER, p)
}

/// Call control's durable consumer of the PBX's channel facts.
const CHANNEL_CONSUMER: &str = "call-control-channels";

/// The snapshots' name in `es_snapshots`.
const SNAPSHOT_NAME: &str = "call-control";
/// The snapshots' state format: a build that changes what [`State`] means (same shape, other
/// meaning) names a new one; a change of shape is caught by decoding.
const SNAPSHOT_FORMAT: &str = "call-control/1";

/// Call control as a consumer of the store, in `bus_parked`.
const PARKED_AS: &str = "call-control";

/// How many times a leg of an ended call is asked to hang up while the PBX cannot be reached
/// (100 ms doubling to 2 s in between: over a minute).
const HANGUP_PATIENCE: u32 = 40;

/// Leads partition `part` (every tenant when the store is not partitioned) while this
/// replica holds its lease, until `stop`.
async fn lead(
    ctx: &Context,
    part: Partition,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let leader = ctx.metrics.leader_named(&part.name("call_control"));
    let Some(mut lease) = Lease::try_acquire(&ctx.config.database_url, &part.name(LEASE)).await?
    else {
        return Ok(());
    };
    let _holding = leader.took(lease.fence().epoch);
    let taking_over = std::time::Instant::now();
    // The newest snapshot this build can use, then the call events after it.
    let snapshots = Snapshots::new(ctx.pool.clone(), &part.name(SNAPSHOT_NAME), SNAPSHOT_FORMAT)
        .every(
            ctx.config.snapshot_every_events,
            Duration::from_secs(ctx.config.snapshot_every_secs),
        );
    let (state, from_snapshot) = match snapshots.load::<State>().await {
        Ok(Some(s)) => (s.state, Some(s.events)),
        Ok(None) => (State::default(), None),
        Err(error) => {
            tracing::warn!(%error, "cannot read call control's snapshot; replaying the store");
            (State::default(), None)
        }
    };
    let from = state.applied;
    let cc = CallControl {
        ctx: ctx.clone(),
        state: Arc::new(tokio::sync::Mutex::new(state)),
        fence: lease.fence().clone(),
    };
    let calls_only = ReadFilter::Category("call".into()).in_partition(part);
    let mut sub = Subscription::new(ctx.store.clone(), calls_only.clone(), from)
        .await?
        .with_batch_size(2000);
    let mut replayed = 0i64;
    while let Some(batch) = sub.poll().await? {
        let mut st = cc.state.lock().await;
        for e in &batch {
            let absorbed = absorb(&mut st, e);
            park_undecodable(ctx, e, absorbed).await?;
        }
        replayed += batch.len() as i64;
    }
    // Here the state is what the stored call events fold to: the snapshots start from it.
    let keeper = stop.child_token();
    let _stop_keeper = keeper.clone().drop_guard();
    let copy = cc.state.lock().await.clone();
    tokio::spawn(snapshots.keep(
        ctx.store.clone(),
        calls_only,
        copy,
        sub.checkpoint(),
        from_snapshot.unwrap_or(0) + replayed,
        replayed > 0,
        |st: &mut State, e| {
            let _ = absorb(st, e);
        },
        keeper.cancelled_owned(),
    ));
    leader.caught_up(replayed, taking_over.elapsed());
    cc.reconcile().await?;
    let calls = cc.state.lock().await.model.calls.len();
    tracing::info!(
        calls,
        replayed,
        from_snapshot = ?from_snapshot,
        took_ms = taking_over.elapsed().as_millis() as u64,
        "call control lease taken"
    );

    let term = stop.child_token();
    let commands = CommandHandlers::new("call-control", cc.clone())
        .with_tenants(cc_bus::TenantScope::Partition(part))
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
    // A lease found gone stops the leader at once, even in the middle of a decision (an
    // append waiting for PostgreSQL): its writes are fenced, but it must not go on reading
    // facts or saying it leads. A fact it took and did not ack comes again to the next leader.
    let lost = lease.lost();
    let result = tokio::select! {
        r = follow(&cc, sub.into_feed(4), &mut lease, part, &stop) => r,
        _ = lost.cancelled() => Err(anyhow::anyhow!("the lease's connection is gone")),
    };
    term.cancel();
    let _ = server.await;
    result
}

async fn follow(
    cc: &CallControl,
    mut sub: Feed,
    lease: &mut Lease,
    part: Partition,
    stop: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let ctx = &cc.ctx;
    // A fact the previous leader did not see through (its append failed, it died) comes again
    // first, in order (each handler takes a fact it already recorded as a redelivery).
    let consumer =
        cc_runtime::leading::pbx_channels_for(&ctx.bus, lease, &consumer_name(part), part).await?;
    let mut pbx = consumer.messages().await?;
    let mut check = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
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
                // Another partition's tenant: its own leader decides.
                if part.count > 1
                    && ctx.bus.subjects.pbx_event_tenant(&m.subject).is_some_and(|t| !part.contains(t))
                {
                    let _ = m.ack().await;
                    continue;
                }
                match serde_json::from_slice::<ChannelEvent>(&m.payload) {
                    Ok(ChannelEvent::ChannelHungUp { tenant, channel, cause, .. }) => again_on_conflict(|| cc.leg_gone(&tenant, &channel, cause)).await?,
                    Ok(ChannelEvent::ChannelAnswered { tenant, channel, .. }) => again_on_conflict(|| cc.leg_answered(&tenant, &channel)).await?,
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
    let call = e.stream.id();
    let v = st.versions.entry(call.to_string()).or_default();
    *v = (*v).max(e.version);
    let c = match decode_checked::<CallEvent>(e) {
        Decoded::Event(c) => c,
        Decoded::OtherFamily => return Ok(None),
        Decoded::Undecodable(why) => {
            st.forget_if_over(call);
            return Err(why);
        }
    };
    st.apply(e.tenant(), &c, e.recorded_at);
    st.forget_if_over(call);
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
fn err(code: &str, message: impl Into<String>) -> CommandError {
    CommandError::new(code, message)
}

/// A refusal of the core as the API answers it.
fn refused(r: &desk::Refusal) -> CommandError {
    match r.field() {
        Some(field) => CommandError::field(r.code(), field, r.message()),
        None => err(r.code(), r.message()),
    }
}

pub use desk::REQUEUE_PRIORITY;

/// How long a supervisor's phone may ring before the monitoring ends as not answered.
const MONITOR_RING: Duration = Duration::from_secs(desk::MONITOR_RING_S);

/// How long the agent's own phone rings for an outbound call before it fails as not answered.
const OUTBOUND_AGENT_RING: Duration = Duration::from_secs(desk::OUTBOUND_AGENT_RING_S);

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
        let expected = match st.versions.get(call) {
            Some(v) => *v,
            // A call the model does not hold (over for it): at the stream's version now.
            None => self.ctx.store.stream_version(&stream).await?,
        };
        let r = match self
            .ctx
            .store
            .append_fenced(
                &self.fence,
                &stream,
                ExpectedVersion::Exact(expected),
                &encoded,
            )
            .await
        {
            Ok(r) => r,
            Err(e) => {
                for n in &encoded {
                    st.own.remove(&n.event_id);
                }
                if matches!(e, cc_eventstore::AppendError::Conflict { .. }) {
                    // Decided on a stale state: take in what the other writer recorded, so
                    // that the decision made again stands on it.
                    tracing::debug!(%call, expected, "another writer appended to the call first");
                    self.catch_up(st).await?;
                }
                return Err(e.into());
            }
        };
        st.versions.insert(call.to_string(), r.stream_version);
        let now = Utc::now();
        for e in &events {
            st.apply(tenant, e, now);
        }
        st.forget_if_over(call);
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

    /// Hangs these legs up now, once each; those the PBX could not be asked about (no answer,
    /// transport) are asked again in the background as [`Self::hang_up_later`] does.
    async fn hang_up_first(&self, tenant: &str, legs: Vec<String>) {
        let c = self.pbx(tenant);
        let mut again = vec![];
        for leg in legs {
            let cmd = Hangup {
                channel: leg.clone(),
                cause: HangupCause::Normal,
            };
            if let Err(RequestError::NoResponders(_) | RequestError::Transport(_)) =
                self.ctx.bus.request(&c, &cmd).await
            {
                again.push(leg);
            }
        }
        if !again.is_empty() {
            self.hang_up_later(tenant, again).await;
        }
    }

    /// Hangs these legs up in the background. Their call is recorded over already, and no
    /// leader looks at an ended call again: a leg left up would stay up at the PBX for good.
    /// So the PBX is asked until it answers (a refusal, the channel gone already, is an
    /// answer), for up to [`HANGUP_PATIENCE`] attempts: a NATS node's loss or the PBX's
    /// reconnection lasts seconds.
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
                if let Err(error @ (RequestError::NoResponders(_) | RequestError::Transport(_))) =
                    bus.request_retrying(&ctx, &cmd, Some(HANGUP_PATIENCE), &stop)
                        .await
                {
                    tracing::warn!(%error, channel = cmd.channel, "a leg of an ended call could not be hung up");
                }
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
        let decided = desk::ending(Utc::now(), call, &l, by);
        self.carry_out(st, &l.tenant, decided).await
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
        let found = |st: &State| {
            desk::agent_call(&st.model, tenant, agent).map(|(c, l)| (c.to_string(), l.clone()))
        };
        match found(st) {
            Ok(found) => Ok(found),
            Err(_) => {
                self.catch_up(st).await?;
                found(st).map_err(|r| refused(&r))
            }
        }
    }

    /// Decides an agent's desk command with the core ([`CallCore`]), after catching up with
    /// the store when the model may be behind it, and carries out what it decided.
    async fn desk(&self, tenant: &str, what: What) -> Result<(), CommandError> {
        let mut st = self.state.lock().await;
        // A dial is refused while the agent is on a call: one the model has not taken in yet
        // counts too.
        if matches!(what, What::Dial { .. }) {
            self.catch_up(&mut st).await?;
        }
        let ask = Ask {
            tenant: tenant.to_string(),
            now: Utc::now(),
            what,
        };
        let decided = match CallCore::decide(&st.model, &ask) {
            Err(r) if r.may_be_stale() => {
                self.catch_up(&mut st).await?;
                CallCore::decide(&st.model, &ask)
            }
            other => other,
        }
        .map_err(|r| refused(&r))?;
        self.carry_out(&mut st, tenant, decided).await
    }

    /// Carries out a decision of the core: the PBX actions it needs first (a refusal refuses
    /// it all), its events recorded, then the PBX actions that follow them.
    async fn carry_out(
        &self,
        st: &mut State,
        tenant: &str,
        decided: Vec<desk::Event>,
    ) -> Result<(), CommandError> {
        let mut events = vec![];
        let mut after = vec![];
        for d in decided {
            match d {
                desk::Event::Call { event, .. } => events.push(event),
                desk::Event::Act(Step::Before, pbx) => self.pbx_now(tenant, &pbx).await?,
                desk::Event::Act(Step::After, pbx) => after.push(pbx),
            }
        }
        let call = events.first().map(|e| e.call().to_string());
        if let Some(call) = &call {
            self.record(st, tenant, call, events).await?;
        }
        // A blind transfer hangs the agent's leg up and rings the target: the hangup goes
        // first, so the customer cannot be joined with a target that answers at once while
        // the agent's leg is still in the call.
        let ring_follows = after.iter().any(|p| matches!(p, Pbx::RingTarget { .. }));
        for pbx in after {
            match pbx {
                Pbx::HangUp { legs } if ring_follows => self.hang_up_first(tenant, legs).await,
                Pbx::HangUp { legs } => self.hang_up_later(tenant, legs).await,
                Pbx::RingTarget {
                    ref transfer,
                    ring_timeout_s,
                    ..
                } => {
                    let call = call
                        .as_deref()
                        .expect("a transfer's target rings for a call");
                    let transfer = transfer.clone();
                    if let Err(e) = self.pbx_now(tenant, &pbx).await {
                        tracing::info!(error = %e.message, call, "the transfer target could not be rung");
                        Box::pin(self.target_failed(st, call, TransferFailure::Unavailable))
                            .await?;
                        return Ok(());
                    }
                    self.ring_timeout(tenant, call, &transfer, Duration::from_secs(ring_timeout_s));
                }
                Pbx::RingDialer { .. } => {
                    let call = call.as_deref().expect("an outbound call rings for a call");
                    if let Err(e) = self.pbx_now(tenant, &pbx).await {
                        tracing::info!(error = %e.message, call, "the agent's device could not be rung");
                        Box::pin(self.outbound_failed(st, call, OutboundFailure::AgentUnavailable))
                            .await?;
                        let mut e = e;
                        e.field = Some("device".into());
                        return Err(e);
                    }
                    self.outbound_ring_timeout(tenant, call, None);
                }
                Pbx::RingFar { ring_timeout_s, .. } => {
                    let call = call.as_deref().expect("an outbound call rings for a call");
                    if let Err(e) = self.pbx_now(tenant, &pbx).await {
                        tracing::info!(error = %e.message, call, "the number dialled could not be rung");
                        return Box::pin(self.outbound_failed(
                            st,
                            call,
                            OutboundFailure::Unavailable,
                        ))
                        .await;
                    }
                    let far = Duration::from_secs(ring_timeout_s);
                    self.outbound_ring_timeout(tenant, call, Some(far));
                }
                Pbx::RingMonitor { ref monitor, .. } => {
                    let call = call
                        .as_deref()
                        .expect("a supervisor's phone rings for a call");
                    let monitor = monitor.clone();
                    if let Err(e) = self.pbx_now(tenant, &pbx).await {
                        tracing::info!(error = %e.message, call, "the supervisor's device could not be rung");
                        let failed = st
                            .model
                            .calls
                            .get(call)
                            .map(|l| desk::monitor_fails(Utc::now(), call, l, &monitor));
                        if let Some(failed) = failed {
                            Box::pin(self.carry_out(st, tenant, failed)).await?;
                        }
                        return Err(CommandError::field(
                            "device_offline",
                            "device",
                            "the supervisor's device could not be rung",
                        ));
                    }
                    self.monitor_ring_timeout(tenant, call, &monitor);
                }
                other => {
                    if let Err(e) = self.pbx_now(tenant, &other).await {
                        tracing::debug!(error = %e.message, action = ?other, "PBX action not done");
                    }
                }
            }
        }
        Ok(())
    }

    /// One PBX action of the core, now.
    async fn pbx_now(&self, tenant: &str, pbx: &Pbx) -> Result<(), CommandError> {
        let c = self.pbx(tenant);
        match pbx.clone() {
            Pbx::Hold { channel, held } => {
                self.ctx.bus.request(&c, &Hold { channel, held }).await?;
            }
            Pbx::Bridge { bridge, channels } => {
                self.ctx
                    .bus
                    .request(&c, &Bridge { bridge, channels })
                    .await?;
            }
            Pbx::SetBridgeMode { channel, mode } => {
                let cmd = SetBridgeMode {
                    channel,
                    mode,
                    bridge: None,
                };
                self.ctx.bus.request(&c, &cmd).await?;
            }
            Pbx::CheckOnline { device, field } => {
                self.online_device(tenant, &device, field).await?;
            }
            Pbx::CheckRoute { endpoint, field } => {
                if let Err(e) = self.ctx.bus.request(&c, &CheckRoute { endpoint }).await {
                    let mut e = CommandError::from(e);
                    if e.field.is_some() {
                        e.field = Some(field.into());
                    }
                    return Err(e);
                }
            }
            Pbx::Answer { channel } => {
                self.ctx.bus.request(&c, &Answer { channel }).await?;
            }
            Pbx::JoinBridge {
                channel,
                mode,
                bridge,
            } => {
                let cmd = SetBridgeMode {
                    channel,
                    mode,
                    bridge: Some(bridge),
                };
                self.ctx.bus.request(&c, &cmd).await?;
            }
            Pbx::RingDialer {
                leg,
                device: endpoint,
                caller,
            }
            | Pbx::RingMonitor {
                leg,
                device: endpoint,
                caller,
                ..
            } => {
                let originate = Originate {
                    channel: Some(leg),
                    endpoint: Endpoint::Device(endpoint),
                    caller,
                };
                self.ctx.bus.request(&c, &originate).await?;
            }
            Pbx::RingFar {
                leg,
                endpoint,
                caller,
                ..
            }
            | Pbx::RingTarget {
                leg,
                endpoint,
                caller,
                ..
            } => {
                let originate = Originate {
                    channel: Some(leg),
                    endpoint,
                    caller,
                };
                self.ctx.bus.request(&c, &originate).await?;
            }
            Pbx::HangUp { legs } => {
                self.hang_up_later(tenant, legs).await;
            }
        }
        Ok(())
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
        } else {
            drop(st);
            self.desk(
                tenant,
                What::Hangup {
                    agent: agent.clone(),
                },
            )
            .await
        }
    }

    /// The agent dials a number or an extension: refusals first (the agent on a call, their
    /// device offline, the far end unknown, offline or without a route), then the agent's
    /// device rings; on its answer the far end does ([`Self::dial_far_end`]).
    async fn dial(&self, tenant: &str, cmd: DialOutbound) -> Result<String, CommandError> {
        let devices = self
            .ctx
            .bus
            .request(&self.pbx(tenant), &ListDevices {})
            .await?
            .into_iter()
            .map(|d| (d.device, d.registered))
            .collect();
        let call = Uuid::now_v7().simple().to_string();
        let what = What::Dial {
            cmd,
            devices,
            call: call.clone(),
            leg: Uuid::now_v7().simple().to_string(),
            far_leg: Uuid::now_v7().simple().to_string(),
        };
        self.desk(tenant, what).await?;
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
        let decided = desk::dial_fails(Utc::now(), call, &l, reason);
        self.carry_out(st, &l.tenant, decided).await
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
        self.desk(
            tenant,
            What::Hold {
                agent: agent.clone(),
                held,
            },
        )
        .await
    }

    /// Starts a transfer of the agent's connected call (see `docs/transfers.md`).
    async fn transfer(&self, tenant: &str, cmd: TransferCall) -> Result<(), CommandError> {
        let what = What::Transfer {
            cmd,
            transfer: Uuid::now_v7().simple().to_string(),
            leg: Uuid::now_v7().simple().to_string(),
        };
        self.desk(tenant, what).await
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
        let decided = desk::target_fails(Utc::now(), call, &l, reason);
        self.carry_out(st, &l.tenant, decided).await
    }

    /// The transferring agent leaves the call (Complete, or they hung up): the customer is
    /// joined with the target if it answered, else waits for it as in a blind transfer.
    async fn agent_leaves(&self, st: &mut State, call: &str) -> Result<(), CommandError> {
        let Some(l) = st.model.calls.get(call).cloned() else {
            return Ok(());
        };
        let decided = desk::leaving(Utc::now(), call, &l);
        self.carry_out(st, &l.tenant, decided).await
    }

    async fn complete(&self, tenant: &str, agent: &AgentNumber) -> Result<(), CommandError> {
        self.desk(
            tenant,
            What::Complete {
                agent: agent.clone(),
            },
        )
        .await
    }

    async fn cancel(&self, tenant: &str, agent: &AgentNumber) -> Result<(), CommandError> {
        self.desk(
            tenant,
            What::Cancel {
                agent: agent.clone(),
            },
        )
        .await
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
        // The far end of an outbound call answered: joined with the agent as a queue call is.
        if let Some((call, Role::Customer)) = st.model.leg(tenant, channel) {
            if st.model.calls[&call].dialing().is_some_and(|o| o.dialed) {
                drop(st);
                return self.join(&call, true).await;
            }
        }
        let ask = Ask {
            tenant: tenant.to_string(),
            now: Utc::now(),
            what: What::LegAnswered {
                channel: channel.to_string(),
            },
        };
        let decided = CallCore::decide(&st.model, &ask).map_err(|r| refused(&r))?;
        self.carry_out(&mut st, tenant, decided).await?;
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
        let ask = Ask {
            tenant: tenant.to_string(),
            now: Utc::now(),
            what: What::LegGone {
                channel: channel.to_string(),
                cause,
            },
        };
        let decided = CallCore::decide(&st.model, &ask).map_err(|r| refused(&r))?;
        self.carry_out(&mut st, tenant, decided).await?;
        Ok(())
    }

    /// A supervisor starts monitoring the agent's connected call: their device rings; on its
    /// answer they join the call's bridge in their mode.
    async fn monitor(&self, tenant: &str, cmd: MonitorCall) -> Result<(), CommandError> {
        let what = What::Monitor {
            cmd,
            monitor: Uuid::now_v7().simple().to_string(),
            leg: Uuid::now_v7().simple().to_string(),
        };
        self.desk(tenant, what).await
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

    /// The supervisor switches between Listen, Whisper and Barge on the same call.
    async fn set_monitor_mode(
        &self,
        tenant: &str,
        cmd: SetMonitorMode,
    ) -> Result<(), CommandError> {
        let what = What::SetMonitorMode {
            agent: cmd.agent,
            supervisor: cmd.supervisor,
            mode: cmd.mode,
        };
        self.desk(tenant, what).await
    }

    /// The supervisor leaves the agent's call (Leave): their leg is hung up.
    async fn stop_monitor(
        &self,
        tenant: &str,
        agent: &AgentNumber,
        supervisor: &str,
    ) -> Result<(), CommandError> {
        let what = What::StopMonitor {
            agent: agent.clone(),
            supervisor: supervisor.to_string(),
        };
        self.desk(tenant, what).await
    }

    /// After a restart: legs the PBX no longer has end now, a target that answered meanwhile is
    /// acted on, answered calls not yet bridged are bridged, ringing targets get their ring
    /// timeout again, and the legs of calls that ended lately that the PBX still has are hung
    /// up.
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
                live.insert(l.tenant.clone(), self.pbx_channels(&l.tenant).await?);
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
        // The legs of calls that ended lately and that the PBX still has: hung up.
        let since = Utc::now() - ENDED_LOOKED_AT;
        let ended: Vec<Ended> = {
            let st = self.state.lock().await;
            st.ended.iter().filter(|e| e.at >= since).cloned().collect()
        };
        for e in ended {
            if !live.contains_key(&e.tenant) {
                // A tenant whose PBX does not answer is left alone: that is no reason to stop
                // leading every other tenant.
                let chans = self.pbx_channels(&e.tenant).await.unwrap_or_else(|error| {
                    tracing::info!(tenant = e.tenant, %error, "cannot list the PBX's channels to hang up the legs of ended calls");
                    HashMap::new()
                });
                live.insert(e.tenant.clone(), chans);
            }
            let up: Vec<String> = e
                .legs
                .into_iter()
                .filter(|leg| live[&e.tenant].contains_key(leg))
                .collect();
            if !up.is_empty() {
                tracing::info!(tenant = e.tenant, legs = ?up, "legs of an ended call still up at the PBX; hanging them up");
                self.hang_up_later(&e.tenant, up).await;
            }
        }
        Ok(())
    }

    /// The tenant's channels at the PBX, by channel.
    async fn pbx_channels(
        &self,
        tenant: &str,
    ) -> Result<HashMap<String, ChannelState>, RequestError> {
        let list = self
            .ctx
            .bus
            .request(&self.pbx(tenant), &ListChannels {})
            .await?;
        Ok(list.into_iter().map(|c| (c.channel.clone(), c)).collect())
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
