//! The call-control service: each queue call from the answer to its end. On `CallAnswered` it
//! answers the caller's channel and bridges it with the agent's; it follows both legs and ends
//! the call when either hangs up (or the agent hangs up from the portal), and holds and resumes
//! the caller. One replica acts at a time (a lease); after a restart it rebuilds its calls from
//! the store and reconciles them with the PBX's live channels, so a call that ended meanwhile
//! ends in the record too, once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use cc_bus::{CommandContext, CommandError, CommandHandlers};
use cc_contracts::call::{CallEvent, EndedBy, HangupCall, HoldCall};

use cc_contracts::domain::AgentNumber;
use cc_contracts::pbx::{Answer, Bridge, ChannelEvent, Hangup, HangupCause, Hold, ListChannels};
use cc_contracts::{decode, encode};
use cc_eventstore::{Checkpoint, ExpectedVersion, Lease, Metadata, ReadFilter, StreamName, Subscription};
use cc_runtime::leading::{keep_leading, retry_until_ok};
use cc_runtime::Context;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::sync::Mutex;
use uuid::Uuid;

pub const MIGRATIONS: &[cc_eventstore::Migration] = &[];

#[derive(Debug, Clone)]
struct Live {
    tenant: String,
    caller: String,
    agent: AgentNumber,
    agent_leg: String,
    answered_at: DateTime<Utc>,
    connected: bool,
    held: bool,
}

#[derive(Default)]
struct State {
    /// call -> (tenant, caller channel), from CallEnteredQueue.
    entered: HashMap<String, (String, String)>,
    calls: HashMap<String, Live>,
    own: HashSet<Uuid>,
}

#[derive(Clone)]
struct CallControl {
    ctx: Context,
    state: Arc<Mutex<State>>,
}

pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let cancel = ctx.cancel.clone();
    if retry_until_ok(&cancel, "cannot create the PBX event consumer", || channel_consumer(&ctx)).await.is_none() {
        return Ok(());
    }
    keep_leading(&cancel, "call control", || lead(&ctx)).await;
    Ok(())
}


async fn channel_consumer(ctx: &Context) -> anyhow::Result<async_nats::jetstream::consumer::Consumer<async_nats::jetstream::consumer::pull::Config>> {
    cc_bus::consumer::pbx_channels(&ctx.bus, "call-control-channels").await
}

async fn lead(ctx: &Context) -> anyhow::Result<()> {
    let Some(mut lease) = Lease::try_acquire(&ctx.config.database_url, "cc-call-control").await? else { return Ok(()) };
    let cc = CallControl { ctx: ctx.clone(), state: Arc::default() };
    let mut sub = Subscription::new(ctx.store.clone(), ReadFilter::Category("call".into()), Checkpoint::START).await?.with_batch_size(2000);
    while let Some(batch) = sub.poll().await? {
        let mut st = cc.state.lock().await;
        for e in &batch {
            if let Some(c) = decode::<CallEvent>(e) {
                apply(&mut st, e.tenant(), &c, e.recorded_at);
            }
        }
    }
    cc.reconcile().await?;
    let calls = cc.state.lock().await.calls.len();
    tracing::info!(calls, "call control lease taken");

    let term = ctx.cancel.child_token();
    let commands = CommandHandlers::new("call-control", cc.clone())
        .with_idempotency(ctx.pool.clone())
        .with_metrics(ctx.metrics.commands.clone())
        .on(|cc: CallControl, c, cmd: HangupCall| async move { cc.hangup_by_agent(&c.tenant, &cmd.agent).await })
        .on(|cc: CallControl, c, cmd: HoldCall| async move { cc.hold(&c.tenant, &cmd.agent, cmd.held).await })
        .on(|cc: CallControl, c, cmd: cc_contracts::call::GetAgentCall| async move {
            Ok(CallControl::agent_call(&*cc.state.lock().await, &c.tenant, &cmd.agent).ok())
        });
    let server = tokio::spawn(commands.serve(ctx.bus.clone(), term.clone()));
    let result = follow(&cc, &mut sub, &mut lease).await;
    term.cancel();
    let _ = server.await;
    result
}

async fn follow(cc: &CallControl, sub: &mut Subscription, lease: &mut Lease) -> anyhow::Result<()> {
    let ctx = &cc.ctx;
    let consumer = channel_consumer(ctx).await?;
    let mut pbx = consumer.messages().await?;
    let mut check = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = ctx.cancel.cancelled() => return Ok(()),
            b = sub.next_batch() => {
                for e in &b? {
                    let Some(c) = decode::<CallEvent>(e) else { continue };
                    let answered = {
                        let mut st = cc.state.lock().await;
                        if st.own.remove(&e.event_id) { continue }
                        apply(&mut st, e.tenant(), &c, e.recorded_at);
                        matches!(c, CallEvent::CallAnswered { .. })
                    };
                    if answered {
                        // Bridging waits on the PBX: done aside, so the next calls are not held up.
                        let (cc, call) = (cc.clone(), c.call().to_string());
                        tokio::spawn(async move {
                            if let Err(e) = cc.connect(&call).await {
                                tracing::warn!(error = %format!("{e:#}"), call, "could not connect the call");
                            }
                        });
                    }
                }
            }
            m = pbx.next() => {
                let Some(m) = m else { anyhow::bail!("the PBX event consumer ended") };
                let m = m.map_err(|e| anyhow::anyhow!("PBX events: {e}"))?;
                if let Ok(ChannelEvent::ChannelHungUp { tenant, channel, .. }) = serde_json::from_slice::<ChannelEvent>(&m.payload) {
                    cc.leg_gone(&tenant, &channel).await?;
                }
                let _ = m.ack().await;
            }
            _ = check.tick() => lease.check().await?,
        }
    }
}

fn apply(st: &mut State, tenant: &str, e: &CallEvent, at: DateTime<Utc>) {
    match e {
        CallEvent::CallEnteredQueue { call, channel, .. } => {
            st.entered.insert(call.clone(), (tenant.to_string(), channel.clone()));
        }
        CallEvent::CallAnswered { call, agent, offer, .. } => {
            if let Some((tenant, caller)) = st.entered.remove(call) {
                st.calls.insert(
                    call.clone(),
                    Live { tenant, caller, agent: agent.clone(), agent_leg: offer.clone(), answered_at: at, connected: false, held: false },
                );
            }
        }
        CallEvent::CallConnected { call, .. } => {
            if let Some(l) = st.calls.get_mut(call) {
                l.connected = true;
            }
        }
        CallEvent::CallHeld { call, .. } | CallEvent::CallResumed { call, .. } => {
            if let Some(l) = st.calls.get_mut(call) {
                l.held = matches!(e, CallEvent::CallHeld { .. });
            }
        }
        CallEvent::CallEnded { call, .. } => {
            st.calls.remove(call);
        }
        CallEvent::CallAbandoned { call, .. } | CallEvent::CallLeftQueue { call, .. } => {
            st.entered.remove(call);
        }
        _ => {}
    }
}

impl CallControl {
    fn pbx(&self, tenant: &str) -> CommandContext {
        CommandContext::new(tenant, "system:call-control")
    }

    async fn record(&self, st: &mut State, tenant: &str, call: &str, e: CallEvent) -> Result<(), CommandError> {
        let n = encode(&e, Metadata::new(tenant, "system:call-control"));
        let stream = StreamName::new(tenant, "call", call).map_err(|e| CommandError::internal(e.to_string()))?;
        st.own.insert(n.event_id);
        self.ctx.store.append(&stream, ExpectedVersion::Any, &[n]).await?;
        apply(st, tenant, &e, Utc::now());
        Ok(())
    }

    /// Joins the caller and the agent who answered. The PBX is asked without holding the state,
    /// so other calls go on meanwhile; if the call ended in between, nothing is recorded.
    async fn connect(&self, call: &str) -> anyhow::Result<()> {
        let Some(l) = self.state.lock().await.calls.get(call).cloned() else { return Ok(()) };
        if l.connected {
            return Ok(());
        }
        let ctx = self.pbx(&l.tenant);
        let _ = self.ctx.bus.request(&ctx, &Answer { channel: l.caller.clone() }).await;
        let bridged = self.ctx.bus.request(&ctx, &Bridge { bridge: call.to_string(), channels: vec![l.caller.clone(), l.agent_leg.clone()] }).await;
        let mut st = self.state.lock().await;
        if !st.calls.contains_key(call) {
            return Ok(()); // it ended meanwhile
        }
        match bridged {
            Ok(_) => self.record(&mut st, &l.tenant, call, CallEvent::CallConnected { call: call.into(), agent: l.agent.clone(), bridge: call.into() }).await?,
            Err(e) => {
                // A leg vanished between the answer and the bridge: the call is over.
                tracing::info!(error = %e, call, "could not bridge; ending the call");
                self.end(&mut st, call, EndedBy::Caller).await?;
            }
        }
        Ok(())
    }

    async fn end(&self, st: &mut State, call: &str, by: EndedBy) -> Result<(), CommandError> {
        let Some(l) = st.calls.get(call).cloned() else { return Ok(()) };
        let talk_ms = (Utc::now() - l.answered_at).num_milliseconds().max(0);
        self.record(st, &l.tenant, call, CallEvent::CallEnded { call: call.into(), agent: l.agent.clone(), by, talk_ms }).await?;
        // Hang up both legs aside (the one already gone refuses, harmlessly).
        let (ctx, bus) = (self.pbx(&l.tenant), self.ctx.bus.clone());
        tokio::spawn(async move {
            for leg in [&l.caller, &l.agent_leg] {
                let _ = bus.request(&ctx, &Hangup { channel: leg.clone(), cause: HangupCause::Normal }).await;
            }
        });
        Ok(())
    }

    /// One leg of a call hung up: the call ends and the other leg is hung up.
    async fn leg_gone(&self, tenant: &str, channel: &str) -> anyhow::Result<()> {
        let mut st = self.state.lock().await;
        let found = st.calls.iter().find(|(_, l)| l.tenant == tenant && (l.caller == channel || l.agent_leg == channel)).map(|(c, l)| (c.clone(), l.caller == channel));
        if let Some((call, by_caller)) = found {
            self.end(&mut st, &call, if by_caller { EndedBy::Caller } else { EndedBy::AgentPhone }).await?;
        }
        Ok(())
    }

    fn agent_call(st: &State, tenant: &str, agent: &AgentNumber) -> Result<String, CommandError> {
        st.calls
            .iter()
            .find(|(_, l)| l.tenant == tenant && &l.agent == agent)
            .map(|(c, _)| c.clone())
            .ok_or_else(|| CommandError::new("no_call", format!("Agent {agent} is not on a call")))
    }

    async fn hangup_by_agent(&self, tenant: &str, agent: &AgentNumber) -> Result<(), CommandError> {
        let mut st = self.state.lock().await;
        let call = Self::agent_call(&st, tenant, agent)?;
        self.end(&mut st, &call, EndedBy::Agent).await
    }

    async fn hold(&self, tenant: &str, agent: &AgentNumber, held: bool) -> Result<(), CommandError> {
        let mut st = self.state.lock().await;
        let call = Self::agent_call(&st, tenant, agent)?;
        let l = st.calls[&call].clone();
        if !l.connected {
            return Err(CommandError::new("not_connected", "The call is not connected yet"));
        }
        if l.held == held {
            return Err(CommandError::new(if held { "already_on_hold" } else { "not_on_hold" }, if held { "The caller is already on hold" } else { "The caller is not on hold" }));
        }
        self.ctx.bus.request(&self.pbx(tenant), &Hold { channel: l.caller.clone(), held }).await?;
        let e = if held { CallEvent::CallHeld { call: call.clone(), agent: agent.clone() } } else { CallEvent::CallResumed { call: call.clone(), agent: agent.clone() } };
        self.record(&mut st, tenant, &call, e).await
    }

    /// After a restart: calls whose legs the PBX no longer has end now; answered calls not yet
    /// bridged are bridged.
    async fn reconcile(&self) -> anyhow::Result<()> {
        let calls: Vec<(String, Live)> = self.state.lock().await.calls.iter().map(|(c, l)| (c.clone(), l.clone())).collect();
        let mut live_channels: HashMap<String, HashSet<String>> = HashMap::new();
        for (call, l) in calls {
            if !live_channels.contains_key(&l.tenant) {
                let list = self.ctx.bus.request(&self.pbx(&l.tenant), &ListChannels {}).await?;
                live_channels.insert(l.tenant.clone(), list.into_iter().map(|c| c.channel).collect());
            }
            let chans = &live_channels[&l.tenant];
            let mut st = self.state.lock().await;
            match (chans.contains(&l.caller), chans.contains(&l.agent_leg)) {
                (true, true) => {
                    drop(st);
                    if !l.connected {
                        self.connect(&call).await?;
                    }
                }
                (false, _) => self.end(&mut st, &call, EndedBy::Caller).await?,
                (true, false) => self.end(&mut st, &call, EndedBy::AgentPhone).await?,
            }
        }
        Ok(())
    }
}
