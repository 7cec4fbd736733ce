//! The router: runs the [`Acd`] model live. One router decides at a time (a PostgreSQL
//! advisory-lock lease); a standby takes over within seconds and rebuilds the model from the
//! store, so offers, ring timeouts, wrap-ups and max waits survive a restart (their timers are
//! derived from the recorded events, not kept in a process).
//!
//! Every rule is the model's ([`Routing`], a [`Decider`]): this is its IO. The router reads the
//! store (applying its events to the model) and the PBX's channel facts, asks the model about
//! each fact, each tick of the clock and each report of its writers, applies what was decided
//! at once, and carries it out: each call's events appended by that call's writer, fenced, the
//! phones rung while the offer is recorded, the legs hung up after the commit; timed-out rings
//! the PBX is asked to end, agents agent-session is asked to pause.

use std::collections::HashSet;
use std::time::Duration;
use tracing::Instrument;

use crate::metrics::RouterMetrics;

use cc_bus::CommandContext;
use cc_contracts::call::CallEvent;
use cc_contracts::domain::AgentNumber;
use cc_contracts::pbx::{ChannelEvent, Direction, Endpoint, Hangup, HangupCause, Originate};
use cc_contracts::session::AgentSessionEvent;
use cc_contracts::{decode, encode};
use cc_eventstore::{
    Checkpoint, ExpectedVersion, Lease, Metadata, ReadFilter, RecordedEvent, Snapshots, StreamName,
    Subscription,
};
use cc_runtime::Context;
use chrono::Utc;
use futures::StreamExt;
use uuid::Uuid;

use crate::acd::routing::{self, Command, Ids, RingEnded, Routing};
use crate::acd::OFFER_PREFIX;
use crate::fold::{self, Applied, Folded};
use cc_core::{Decider, Partition};

pub async fn run(ctx: Context) {
    if !cc_runtime::partitions::pbx_channel_consumers(&ctx, CHANNEL_CONSUMER).await {
        return;
    }
    let metrics = RouterMetrics::register(&ctx.metrics);
    let lead_one = |p: Partition, stop: tokio_util::sync::CancellationToken| {
        let (ctx, metrics) = (ctx.clone(), metrics.clone());
        async move { lead(&ctx, metrics, p, stop).await }
    };
    cc_runtime::partitions::lead(&ctx, "queue router", "queue-router", LEASE, lead_one).await;
}

/// The router's lease (per partition: `cc-queue-router/p3`).
const LEASE: &str = "cc-queue-router";

/// The name of partition `p`'s durable consumer of the PBX's channel facts.
fn consumer_name(p: Partition) -> String {
    cc_runtime::partitions::consumer_name(CHANNEL_CONSUMER, p)
}

struct Router<'a> {
    ctx: &'a Context,
    /// The model and what else the store's events build ([`Folded`]).
    m: Folded,
    /// Events this router appended and already applied: skipped when the store returns them.
    own: HashSet<Uuid>,
    live: bool,
    /// What was decided and applied, not yet handed to the writers: per call, its events and
    /// the PBX actions that follow them ([`Router::flush`]).
    pending: Vec<Pending>,
    /// Where each call's share is in `pending`.
    pending_at: std::collections::HashMap<String, usize>,
    /// One writer per call: appends that call's events in order, then does the PBX actions
    /// that follow them, while the router goes on deciding (it does not wait for commits).
    writers: std::collections::HashMap<String, tokio::sync::mpsc::UnboundedSender<Job>>,
    /// Above this many writers, the ended ones are forgotten.
    writers_limit: usize,
    /// Every call writer spawned (waited for when the router stops).
    tracker: tokio_util::task::TaskTracker,
    /// Writers report here: a failed append (the router then rebuilds) or a phone that could
    /// not be rung.
    feedback: tokio::sync::mpsc::UnboundedSender<Feedback>,
    /// Stops the writers when this router stops leading.
    term: tokio_util::sync::CancellationToken,
    /// Each call's trace context (the PBX report that brought the caller): later decisions
    /// about the call (offers on a timer, an agent becoming free) join that trace.
    traces: std::collections::HashMap<String, String>,
    /// The PBX report being handled, attached to the jobs it leads to (named if they are parked).
    cause: Option<std::sync::Arc<Cause>>,
    /// The acknowledgement of that report, shared by the jobs it leads to.
    fact_ack: Option<AckWhenDone>,
    /// This router's holding of the lease: every call writer's append is fenced with it.
    fence: cc_eventstore::Fence,
    /// Offers whose timed-out ring the PBX was asked to end ([`cancel_ring`]), not answered yet.
    cancelling: HashSet<String>,
    /// How many PBX facts were still to come after the last one read (JetStream's count).
    pbx_behind: u64,
    /// Timers are held back (see [`Router::hold_timers`]) since then, until `hold_until`.
    held_since: Option<std::time::Instant>,
    hold_until: Option<std::time::Instant>,
    /// Caller channels and calls parked (see [`Parked`]): not entered, not decided on again.
    parked: Parked,
    metrics: RouterMetrics,
}

/// A PBX report, as the router got it from `CC_PBX`.
#[derive(Debug)]
struct Cause {
    subject: String,
    stream_sequence: Option<u64>,
    payload: Vec<u8>,
}

/// What the router parked (the table `qr_parked`, loaded at each start): events the store
/// refused for a reason that retrying cannot cure. Control characters of channel ids are
/// escaped (see [`printable`]).
#[derive(Default)]
struct Parked {
    channels: HashSet<String>,
    calls: HashSet<String>,
}

/// What a call's writer does: append, then act on the PBX.
struct Job {
    tenant: String,
    events: Vec<cc_eventstore::NewEvent>,
    then: Vec<Action>,
    /// The PBX report that led to it, if any.
    cause: Option<std::sync::Arc<Cause>>,
    /// The caller channel of a call's entry (when the job records it).
    channel: Option<String>,
    /// The decision's span: the append and the PBX actions are its children.
    span: tracing::Span,
    /// The PBX fact that led to it, acknowledged once every job it led to is done.
    ack: Option<AckWhenDone>,
    /// The version of the call's stream the decision was made on (`None`: the router forgot
    /// the call; the stream's version when the job is written).
    expected: Option<i64>,
}

/// A PBX fact being decided on, with the jobs it led to. JetStream is told the fact was
/// handled only once all of them are done (their events committed, their PBX actions sent):
/// a router that stops before then leaves the fact unacknowledged, and the next leader decides
/// it again ([`cc_bus::consumer::pbx_channels_from_ack_floor`]). (Acknowledged as soon as it was
/// handed to a writer, a caller whose entry then failed to commit was forgotten when the
/// router started over, if the caller had hung up meanwhile: the chaos suite's unrecorded
/// callers.)
struct FactAck {
    msg: async_nats::jetstream::Message,
    failed: std::sync::atomic::AtomicBool,
}

/// One holder's share of a [`FactAck`]; dropped without [`AckWhenDone::done`], the fact is not
/// acknowledged by anyone.
struct AckWhenDone(Option<std::sync::Arc<FactAck>>);

impl AckWhenDone {
    fn new(msg: async_nats::jetstream::Message) -> Self {
        Self(Some(std::sync::Arc::new(FactAck {
            msg,
            failed: Default::default(),
        })))
    }

    fn share(&self) -> Self {
        Self(self.0.clone())
    }

    /// This holder's part is done; the last one acknowledges the fact (unless a part failed).
    async fn done(mut self) {
        let Some(a) = self.0.take().and_then(std::sync::Arc::into_inner) else {
            return;
        };
        if !a.failed.load(std::sync::atomic::Ordering::SeqCst) {
            if let Err(e) = a.msg.ack().await {
                tracing::debug!(error = %e, "could not acknowledge a PBX fact (it comes again)");
            }
        }
    }
}

impl Drop for AckWhenDone {
    fn drop(&mut self) {
        if let Some(a) = &self.0 {
            a.failed.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// A call's share of a decision, for its writer.
struct Pending {
    tenant: String,
    call: String,
    events: Vec<CallEvent>,
    then: Vec<Action>,
}

enum Action {
    Ring {
        offer: String,
        agent: AgentNumber,
        device: cc_contracts::domain::DeviceId,
        caller: cc_contracts::pbx::Party,
    },
    Hangup {
        channel: String,
        cause: HangupCause,
    },
}

enum Feedback {
    Failed(anyhow::Error),
    /// The store refused a call's events for good: parked, not retried.
    Refused {
        tenant: String,
        call: String,
        channel: Option<String>,
        event_types: Vec<String>,
        error: String,
        cause: Option<std::sync::Arc<Cause>>,
    },
    NotRung {
        tenant: String,
        call: String,
        agent: AgentNumber,
        offer: String,
    },
    /// What the PBX said to a timed-out ring's `CancelRing`.
    RingEnd(RingEnd),
}

struct RingEnd {
    tenant: String,
    call: String,
    agent: AgentNumber,
    offer: String,
    how: RingEnded,
}

/// How long a ring the PBX no longer has waits for the report of its end.
const GONE_LEG_REPORT_WAIT: Duration = Duration::from_secs(2);

/// Asks the PBX to end a timed-out ring (`CancelRing`) until it answers, and reports what it
/// said. NATS unreachable: asked again (the phone rings on meanwhile; nothing is decided
/// without the PBX).
async fn cancel_ring(
    bus: cc_bus::Bus,
    pbx: CommandContext,
    mut end: RingEnd,
    feedback: tokio::sync::mpsc::UnboundedSender<Feedback>,
    term: tokio_util::sync::CancellationToken,
) {
    let cmd = cc_contracts::pbx::CancelRing {
        channel: end.offer.clone(),
    };
    end.how = match bus.request_retrying(&pbx, &cmd, None, &term).await {
        Ok(()) => RingEnded::Cancelled,
        Err(cc_bus::RequestError::Rejected(e)) if e.error == "already_answered" => {
            RingEnded::Answered
        }
        Err(cc_bus::RequestError::Rejected(e)) if e.error == "unknown_channel" => {
            // Ended at the phone (a reject, a hangup) as it timed out: its report is on its
            // way and decides. Or the ring never reached the PBX.
            tokio::select! {
                _ = term.cancelled() => return,
                _ = tokio::time::sleep(GONE_LEG_REPORT_WAIT) => {}
            }
            RingEnded::Gone
        }
        Err(cc_bus::RequestError::Rejected(e)) => {
            // A PBX without CancelRing (an older adapter): hung up as before, the timeout
            // judged by the router's clock alone.
            tracing::info!(error = %e, channel = cmd.channel, "CancelRing refused; hanging up the ring");
            let hangup = Hangup {
                channel: cmd.channel.clone(),
                cause: HangupCause::NoAnswer,
            };
            let _ = bus.request_retrying(&pbx, &hangup, Some(5), &term).await;
            RingEnded::Cancelled
        }
        // Stopped leading before the PBX could be asked.
        Err(_) => return,
    };
    let _ = feedback.send(Feedback::RingEnd(end));
}

/// The router's durable consumer of the PBX's channel facts.
const CHANNEL_CONSUMER: &str = "queue-router-channels";

/// The router as a consumer of the store, in `bus_parked`.
const PARKED_AS: &str = "queue-router";

/// Timers found due later than this: the router was held up ([`Router::hold_timers`]).
const STALL: Duration = Duration::from_millis(250);
/// How long such timers wait for the facts of the stall to be read.
const STALL_HOLD: Duration = Duration::from_millis(300);
/// How long they wait at most while JetStream still has facts to deliver.
const MAX_HOLD: Duration = Duration::from_secs(2);

/// How long a stopping router waits for its call writers' appends in flight.
const WRITERS_GRACE: Duration = Duration::from_secs(30);

/// Leads partition `part` (every tenant when the store is not partitioned) while this
/// replica holds its lease, until `stop`.
async fn lead(
    ctx: &Context,
    metrics: RouterMetrics,
    part: Partition,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let leader = ctx.metrics.leader_named(&part.name("queue_router"));
    let Some(mut lease) = Lease::try_acquire(&ctx.config.database_url, &part.name(LEASE)).await?
    else {
        return Ok(());
    };
    let metrics = metrics.for_holder();
    let filter = ReadFilter::All.in_partition(part);
    let consumer = consumer_name(part);
    let _holding = leader.took(lease.fence().epoch);
    let mut parked = Parked::default();
    for (channel, call) in
        sqlx::query_as::<_, (Option<String>, String)>("select channel, call from qr_parked")
            .fetch_all(&ctx.pool)
            .await?
    {
        parked.channels.extend(channel);
        parked.calls.insert(call);
    }
    let (feedback, mut feedback_rx) = tokio::sync::mpsc::unbounded_channel();
    let term = stop.child_token();
    let _stop_writers = term.clone().drop_guard();
    let mut r = Router {
        ctx,
        m: Folded::default(),
        own: HashSet::new(),
        live: false,
        pending: vec![],
        pending_at: Default::default(),
        writers: Default::default(),
        writers_limit: 1024,
        tracker: tokio_util::task::TaskTracker::new(),
        feedback,
        term,
        traces: Default::default(),
        cause: None,
        fact_ack: None,
        fence: lease.fence().clone(),
        cancelling: HashSet::new(),
        pbx_behind: 0,
        held_since: None,
        hold_until: None,
        parked,
        metrics: metrics.clone(),
    };
    // Every writer this router spawned is waited for before the lease goes: an append still
    // in flight (waiting for a connection while PostgreSQL restarts) would otherwise commit
    // after the next leader read the store, which then decided that call again (an offer
    // ended twice, found by the chaos suite).
    let writers = r.tracker.clone();
    // A lease found gone stops the router at once, even in the middle of a decision.
    let lost = lease.lost();
    let work = async {
        let _gauges = crate::metrics::Leading(metrics);
        // The newest snapshot, if this build can use one, then the events after it.
        let taking_over = std::time::Instant::now();
        let snapshots = Snapshots::new(
            ctx.pool.clone(),
            &part.name(fold::SNAPSHOT_NAME),
            fold::FORMAT,
        )
        .every(
            ctx.config.snapshot_every_events,
            Duration::from_secs(ctx.config.snapshot_every_secs),
        );
        let mut from = Checkpoint::START;
        let mut from_snapshot = None;
        match snapshots.load::<Folded>().await {
            Ok(Some(s)) => {
                from = s.checkpoint;
                from_snapshot = Some(s.events);
                r.m = s.state;
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(%error, "cannot read the router's snapshot; replaying the store")
            }
        }
        let mut sub = Subscription::new(ctx.store.clone(), filter.clone(), from)
            .await?
            .with_batch_size(2000);
        let mut replayed = 0u64;
        while let Some(batch) = sub.poll().await? {
            for e in &batch {
                r.apply(e).await?;
            }
            replayed += batch.len() as u64;
            if let Some(last) = batch.last() {
                leader.applied(last.checkpoint());
            }
        }
        // Here the state is what the store folds to, up to the subscription's checkpoint: the
        // snapshots start from it.
        let keeper = r.term.child_token();
        tokio::spawn(snapshots.keep(
            ctx.store.clone(),
            filter,
            r.m.clone(),
            sub.checkpoint(),
            from_snapshot.unwrap_or(0) + replayed as i64,
            replayed > 0,
            |m: &mut Folded, e| {
                m.apply(e, false);
            },
            keeper.clone().cancelled_owned(),
        ));
        let _stop_keeper = keeper.drop_guard();
        leader.caught_up(replayed as i64, taking_over.elapsed());
        tracing::info!(
            replayed,
            from_snapshot = ?from_snapshot,
            took_ms = taking_over.elapsed().as_millis() as u64,
            "queue router caught up with the store"
        );
        r.live = true;
        for (tenant, call, agent) in std::mem::take(&mut r.m.ended) {
            r.decide(Command::StartWrapUp {
                tenant,
                call,
                agent,
                now: Utc::now(),
            })
            .await?;
        }
        // Offers still ringing agents who logged out or went offline while no router led.
        r.withdraw_offers_of_unavailable(None).await?;
        r.reconcile().await?;
        let mut sub = sub.into_feed(4);
        tracing::info!(
            calls = r.m.acd.calls.len(),
            agents = r.m.acd.agents.len(),
            partition = %part,
            "queue router lease taken; routing"
        );

        // Every fact the previous leader did not see through comes again first, in order.
        let consumer =
            cc_runtime::leading::pbx_channels_for(&ctx.bus, &mut lease, &consumer, part).await?;
        let mut pbx = consumer.messages().await?;
        let mut observe = tokio::time::interval(Duration::from_secs(2));
        // Whether the model is asked to dispatch before the next wait (not after a fact of
        // another partition's tenant, which changed nothing here).
        let mut dispatch = true;
        loop {
            if dispatch {
                r.decide(Command::Dispatch {
                    now: Utc::now(),
                    ids: fresh_ids(),
                })
                .await?;
            }
            dispatch = true;
            let mut sleep = match r.m.acd.next_deadline() {
                Some(t) => (t - Utc::now()).to_std().unwrap_or(Duration::ZERO),
                None => Duration::from_secs(3600),
            };
            if let Some(h) = r.hold_until {
                sleep = sleep.max(h.saturating_duration_since(std::time::Instant::now()));
            }
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                b = sub.next_batch() => {
                    let b = b?;
                    for e in &b {
                        r.apply(e).await?;
                    }
                    if let Some(last) = b.last() {
                        leader.applied(last.checkpoint());
                    }
                }
                m = pbx.next() => {
                    let Some(m) = m else { anyhow::bail!("the PBX event consumer ended") };
                    let m = m.map_err(|e| anyhow::anyhow!("PBX events: {e}"))?;
                    // The facts still to come (this partition's: the stream files each under
                    // its tenant's partition).
                    r.pbx_behind = m.info().map_or(0, |i| i.pending);
                    // Another partition's tenant (a fact filed before the stream partitioned
                    // them): its own leader decides.
                    if part.count > 1
                        && ctx.bus.subjects.pbx_event_tenant(&m.subject).is_some_and(|t| !part.contains(t))
                    {
                        let _ = m.ack().await;
                        dispatch = false;
                        continue;
                    }
                    let ack = AckWhenDone::new(m.clone());
                    match serde_json::from_slice::<ChannelEvent>(&m.payload) {
                        Ok(e) => {
                            let stream_sequence = m.info().ok().map(|i| i.stream_sequence);
                            r.cause = Some(std::sync::Arc::new(Cause { subject: m.subject.to_string(), stream_sequence, payload: m.payload.to_vec() }));
                            // Shared with the jobs the fact leads to; acknowledged by the last.
                            r.fact_ack = Some(ack);
                            let span = cc_trace::following(
                                tracing::info_span!("queue-router decide", otel.kind = "consumer", report = e.type_name(), channel = e.channel()),
                                cc_bus::header(m.headers.as_ref(), cc_trace::TRACEPARENT).as_deref(),
                            );
                            let handled = r.on_channel(e).instrument(span).await;
                            r.cause = None;
                            let ack = r.fact_ack.take();
                            handled?;
                            if let Some(a) = ack {
                                a.done().await;
                            }
                        }
                        // A fact this build cannot read (another kind of channel fact, or
                        // broken) is skipped, said and counted: redelivering it would stop every
                        // tenant's routing behind it.
                        Err(error) => {
                            cc_bus::parked::unreadable(CHANNEL_CONSUMER, &m, &error);
                            ack.done().await;
                        }
                    }
                }
                _ = tokio::time::sleep(sleep) => {
                    let now = Utc::now();
                    if !r.hold_timers(now) {
                        r.decide(Command::Due { now }).await?;
                    }
                }
                _ = observe.tick() => r.metrics.observe(&r.m.acd, Utc::now()),
                f = feedback_rx.recv() => match f {
                    Some(Feedback::Failed(e)) => return Err(e),
                    Some(Feedback::Refused { tenant, call, channel, event_types, error, cause }) => {
                        r.park(&tenant, &call, channel.as_deref(), &event_types, &error, cause.as_deref()).await?;
                        // The model applied what was not recorded, and the writers stopped: start
                        // over from the store, without the parked report.
                        return Ok(());
                    }
                    Some(Feedback::RingEnd(end)) => r.ring_ended(end).await?,
                    Some(Feedback::NotRung { tenant, call, agent, offer }) => {
                        r.decide(Command::NotRung { tenant, call, agent, offer, now: Utc::now() }).await?;
                    }
                    None => {}
                },
            }
            lease.check().await?;
        }
    };
    let result: anyhow::Result<()> = tokio::select! {
        done = work => done,
        _ = lost.cancelled() => Err(anyhow::anyhow!("the lease's connection is gone")),
    };
    r.term.cancel();
    writers.close();
    if tokio::time::timeout(WRITERS_GRACE, writers.wait())
        .await
        .is_err()
    {
        tracing::warn!("call writers still busy {WRITERS_GRACE:?} after the router stopped; giving up the lease anyway");
    }
    result
}

impl Router<'_> {
    async fn apply(&mut self, e: &RecordedEvent) -> anyhow::Result<()> {
        if self.own.remove(&e.event_id) {
            return Ok(());
        }
        let tenant = e.tenant();
        match self.m.apply(e, self.live) {
            Applied::Nothing => {}
            Applied::Undecodable(why) => self.park_undecodable(e, &why).await?,
            Applied::Session(s) => self.session_applied(tenant, &s).await?,
            Applied::Call(c) if self.live => {
                self.metrics.count(&self.m.acd, tenant, &c);
                match &c {
                    CallEvent::CallEnded { call, agent, .. } => {
                        let cmd = Command::StartWrapUp {
                            tenant: tenant.to_string(),
                            call: call.clone(),
                            agent: agent.clone(),
                            now: Utc::now(),
                        };
                        self.decide(cmd).await?;
                    }
                    // An agent who dials out while a queue offer rings them (the two crossed):
                    // the offer goes on to the next agent.
                    CallEvent::OutboundCallStarted { agent, .. } => {
                        self.withdraw_offers_of_unavailable(Some((tenant, agent)))
                            .await?;
                    }
                    _ => {}
                }
            }
            Applied::Call(_) => {}
        }
        Ok(())
    }

    /// Skips a stored event that does not decode, parked (`bus_parked`, consumer
    /// `queue-router`): the router's state is rebuilt from the store at every lease, so a
    /// stopped router would meet it again and stop again, for every tenant. What it meant is
    /// unknown to this build; the events around it still apply.
    async fn park_undecodable(&self, e: &RecordedEvent, why: &str) -> anyhow::Result<()> {
        cc_bus::parked::park_now(
            &self.ctx.pool,
            PARKED_AS,
            e,
            cc_bus::parked::Reason::Undecodable,
            why,
        )
        .await?;
        Ok(())
    }

    /// Live, an agent who logged out or whose device went offline (`s`, just applied) has
    /// their ringing offers withdrawn at once.
    async fn session_applied(&mut self, tenant: &str, s: &AgentSessionEvent) -> anyhow::Result<()> {
        if self.live
            && matches!(
                s,
                AgentSessionEvent::AgentLoggedOut { .. }
                    | AgentSessionEvent::AgentDeviceWentOffline { .. }
            )
        {
            self.withdraw_offers_of_unavailable(Some((tenant, s.agent())))
                .await?;
        }
        Ok(())
    }

    /// Takes in the agent's session events that the store holds beyond what the router applied
    /// (its catch-up read lags behind the commits, the PBX's reports do not): a logout
    /// recorded a moment ago is known before a caller is connected to the agent.
    async fn catch_up_session(&mut self, tenant: &str, agent: &AgentNumber) -> anyhow::Result<()> {
        let seen = self
            .m
            .sessions
            .get(&(tenant.to_string(), agent.clone()))
            .copied()
            .unwrap_or(0);
        let stream = StreamName::new(tenant, "agent", agent.as_str())?;
        for e in self.ctx.store.read_stream(&stream, seen + 1, 100).await? {
            if let Some(s) = decode::<AgentSessionEvent>(&e) {
                if self.m.apply_session(tenant, &s, e.version, e.recorded_at) {
                    self.session_applied(tenant, &s).await?;
                }
            }
        }
        Ok(())
    }

    /// Withdraws the offers ringing agents who can no longer take them (`only` this agent's,
    /// else every agent's) and hangs up their legs: the calls go on to the next agents, and
    /// nothing counts against these agents.
    async fn withdraw_offers_of_unavailable(
        &mut self,
        only: Option<(&str, &AgentNumber)>,
    ) -> anyhow::Result<()> {
        let cmd = Command::WithdrawUnavailable {
            only: only.map(|(t, a)| (t.to_string(), a.clone())),
            now: Utc::now(),
        };
        let decided = self.ask(&cmd);
        for d in &decided {
            if let routing::Event::Call {
                event:
                    CallEvent::OfferWithdrawn {
                        call,
                        agent,
                        reason,
                        ..
                    },
                ..
            } = d
            {
                tracing::info!(%call, %agent, ?reason, "withdrawing an offer from an agent who can no longer take it");
            }
        }
        self.carry_out(decided).await;
        Ok(())
    }

    /// What the model decides on `command`.
    fn ask(&self, command: &Command) -> Vec<routing::Event> {
        let Ok(decided) = Routing::decide(&self.m.acd, command);
        decided
    }

    /// Asks the model and carries out what it decided.
    async fn decide(&mut self, command: Command) -> anyhow::Result<()> {
        let decided = self.ask(&command);
        self.carry_out(decided).await;
        Ok(())
    }

    /// Applies a decision to the model and carries it out: each call's events and actions to
    /// its writer, then the automatic pauses asked for.
    async fn carry_out(&mut self, decided: Vec<routing::Event>) {
        let pauses = self.take(decided);
        self.flush();
        self.pause_agents(pauses).await;
    }

    /// Applies a decision to the model, the call events and the actions that follow them kept
    /// for [`Router::flush`] (nothing of a parked call's is applied, recorded or rung). A
    /// timed-out ring is asked to end here (once); the pauses asked for are returned.
    fn take(&mut self, decided: Vec<routing::Event>) -> Vec<(String, AgentNumber, String)> {
        let mut pauses = vec![];
        for d in decided {
            let parked = d.call().is_some_and(|c| self.parked.calls.contains(c));
            match d {
                routing::Event::Call { .. } | routing::Event::Act(routing::Action::Ring { .. })
                    if parked =>
                {
                    tracing::debug!(call = d.call(), "no decision for a parked call");
                }
                routing::Event::Call { .. } => {
                    Routing::evolve(&mut self.m.acd, &d);
                    let routing::Event::Call { tenant, event, .. } = d else {
                        unreachable!()
                    };
                    if self.live {
                        self.metrics.count(&self.m.acd, &tenant, &event);
                    }
                    let call = event.call().to_string();
                    self.pending_for(&tenant, &call).events.push(event);
                }
                routing::Event::Act(routing::Action::Ring {
                    tenant,
                    call,
                    offer,
                    agent,
                    device,
                    caller,
                }) => self.pending_for(&tenant, &call).then.push(Action::Ring {
                    offer,
                    agent,
                    device,
                    caller,
                }),
                routing::Event::Act(routing::Action::HangUp {
                    tenant,
                    call,
                    channel,
                    cause,
                }) => self
                    .pending_for(&tenant, &call)
                    .then
                    .push(Action::Hangup { channel, cause }),
                routing::Event::Act(routing::Action::CancelRing {
                    tenant,
                    call,
                    agent,
                    offer,
                }) => {
                    // Asked once; its timer asks again meanwhile.
                    if self.cancelling.insert(offer.clone()) {
                        self.tracker.spawn(cancel_ring(
                            self.ctx.bus.clone(),
                            self.pbx(&tenant),
                            RingEnd {
                                tenant,
                                call,
                                agent,
                                offer,
                                how: RingEnded::Cancelled,
                            },
                            self.feedback.clone(),
                            self.term.clone(),
                        ));
                    }
                }
                routing::Event::Act(routing::Action::PauseAgent {
                    tenant,
                    agent,
                    reason,
                }) => pauses.push((tenant, agent, reason)),
                routing::Event::Noted(_)
                | routing::Event::Session { .. }
                | routing::Event::Queue { .. } => Routing::evolve(&mut self.m.acd, &d),
            }
        }
        pauses
    }

    /// The call's share of the decision being taken.
    fn pending_for(&mut self, tenant: &str, call: &str) -> &mut Pending {
        let i = match self.pending_at.get(call) {
            Some(&i) => i,
            None => {
                self.pending.push(Pending {
                    tenant: tenant.to_string(),
                    call: call.to_string(),
                    events: vec![],
                    then: vec![],
                });
                self.pending_at
                    .insert(call.to_string(), self.pending.len() - 1);
                self.pending.len() - 1
            }
        };
        &mut self.pending[i]
    }

    /// Hands what was decided to the calls' writers: one job per call, its events (already
    /// applied to the model) appended in one append (recorded as our own), then its actions.
    fn flush(&mut self) {
        self.pending_at.clear();
        for p in std::mem::take(&mut self.pending) {
            self.record_then(&p.tenant, &p.call, p.events, p.then);
        }
    }

    /// Submits a job: `events` (applied to the model already) appended, then the PBX actions
    /// `then` (in the same job: no second hand-over between the commit and the phones).
    fn record_then(&mut self, tenant: &str, call: &str, events: Vec<CallEvent>, then: Vec<Action>) {
        let channel = events.iter().find_map(|e| match e {
            CallEvent::CallEnteredQueue { channel, .. } => Some(channel.clone()),
            _ => None,
        });
        let meta = Metadata::new(tenant, "system:queue-router");
        let encoded: Vec<_> = events.iter().map(|e| encode(e, meta.clone())).collect();
        if encoded.is_empty() && then.is_empty() {
            return;
        }
        for n in &encoded {
            self.own.insert(n.event_id);
        }
        // A caller's entry into a queue starts a call's stream when the router knows nothing
        // of the call yet (a caller the PBX just reported).
        let enters = events
            .iter()
            .any(|e| matches!(e, CallEvent::CallEnteredQueue { .. }));
        let expected = match self.m.versions.get(call) {
            Some(v) => Some(*v),
            None if enters => Some(0),
            None => None,
        };
        if let (Some(v), false) = (expected, encoded.is_empty()) {
            self.m
                .versions
                .insert(call.to_string(), v + encoded.len() as i64);
        }
        for e in &events {
            self.m.forget_version(e);
        }
        let span = self.job_span(call);
        self.submit(
            call,
            Job {
                tenant: tenant.to_string(),
                events: encoded,
                then,
                cause: self.cause.clone(),
                channel,
                span,
                ack: self.fact_ack.as_ref().map(AckWhenDone::share),
                expected,
            },
        );
    }

    /// Queues a job on the call's writer (starting one when there is none or it went idle).
    fn submit(&mut self, call: &str, job: Job) {
        let job = match self.writers.get(call) {
            Some(w) => match w.send(job) {
                Ok(()) => return,
                Err(e) => e.0,
            },
            None => job,
        };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let _ = tx.send(job);
        self.writers.insert(call.to_string(), tx);
        // Forget the writers that ended, now and then (not on every new call: under load
        // thousands are alive).
        if self.writers.len() >= self.writers_limit {
            self.writers.retain(|_, w| !w.is_closed());
            self.writers_limit = (2 * self.writers.len()).max(1024);
        }
        self.tracker.spawn(write_call(
            self.ctx.clone(),
            call.to_string(),
            rx,
            self.feedback.clone(),
            self.term.clone(),
            self.metrics.offer_seconds.clone(),
            self.fence.clone(),
        ));
    }

    /// The span of a job about `call`: in the current trace (a PBX report being handled), or
    /// else in the call's own.
    fn job_span(&mut self, call: &str) -> tracing::Span {
        let trace = cc_trace::current().or_else(|| self.traces.get(call).cloned());
        if let Some(t) = &trace {
            if self.traces.len() >= 100_000 {
                self.traces.clear(); // calls last minutes; forget the old ones at once
            }
            self.traces
                .entry(call.to_string())
                .or_insert_with(|| t.clone());
        }
        cc_trace::following(
            tracing::info_span!("queue-router record", %call),
            trace.as_deref(),
        )
    }

    fn pbx(&self, tenant: &str) -> CommandContext {
        CommandContext::new(tenant, "system:queue-router")
    }

    /// Parks what the store refused for good: recorded in `qr_parked` (with the PBX report that
    /// led to it), logged, counted in `cc_queue_router_parked_total`, and skipped from now on.
    async fn park(
        &mut self,
        tenant: &str,
        call: &str,
        channel: Option<&str>,
        event_types: &[String],
        error: &str,
        cause: Option<&Cause>,
    ) -> anyhow::Result<()> {
        let channel = channel.map(printable);
        tracing::error!(
            tenant = %printable(tenant),
            %call,
            channel = channel.as_deref().unwrap_or(""),
            subject = cause.map(|c| printable(&c.subject)).unwrap_or_default(),
            stream_sequence = cause.and_then(|c| c.stream_sequence).unwrap_or(0),
            ?event_types,
            %error,
            "the store refused these events for good: parked, and skipped from now on",
        );
        sqlx::query(
            "insert into qr_parked (tenant, subject, stream_sequence, payload, channel, call, event_types, error)
             values ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(printable(tenant))
        .bind(cause.map(|c| printable(&c.subject)))
        .bind(cause.and_then(|c| c.stream_sequence).map(|s| s as i64))
        .bind(cause.map(|c| c.payload.clone()))
        .bind(&channel)
        .bind(call)
        .bind(event_types)
        .bind(printable(error))
        .execute(&self.ctx.pool)
        .await?;
        self.metrics.parked.inc();
        self.parked.channels.extend(channel);
        self.parked.calls.insert(call.to_string());
        Ok(())
    }

    /// After a restart, the PBX's live channels against the rebuilt model. The previous router
    /// may have died
    /// - after recording that a leg was to be hung up, before doing it (a phone ringing on for
    ///   an offer that ended): hung up again;
    /// - after ringing a phone, before the offer was recorded (phones ring while the offer is
    ///   written): the leg (ours by its [`OFFER_PREFIX`], unknown to the store, unanswered) is
    ///   hung up;
    /// - after taking a caller's arrival from the PBX, before the entry was recorded: a caller
    ///   waiting on a queue number whom no recorded call names enters the queue now.
    ///
    /// Best effort per tenant: a PBX that does not answer is asked again at the next restart
    /// (its callers also arrive again on the PBX event stream when their report was not taken).
    async fn reconcile(&mut self) -> anyhow::Result<()> {
        let mut due: std::collections::HashMap<
            String,
            std::collections::HashMap<String, HangupCause>,
        > = std::collections::HashMap::new();
        for (t, c, cause) in &self.m.acd.to_hang_up {
            due.entry(t.clone()).or_default().insert(c.clone(), *cause);
        }
        let tenants: std::collections::BTreeSet<String> = self
            .m
            .acd
            .queues
            .keys()
            .map(|(t, _)| t.clone())
            .chain(due.keys().cloned())
            .collect();
        for tenant in tenants {
            let live = match self
                .ctx
                .bus
                .request(&self.pbx(&tenant), &cc_contracts::pbx::ListChannels {})
                .await
            {
                Ok(live) => live,
                Err(e) => {
                    tracing::info!(error = %e, %tenant, "could not list the PBX's channels to reconcile");
                    continue;
                }
            };
            // Leftover legs first, then the callers: a caller entered first would ring a phone
            // that a leftover leg still keeps busy (the PBX lists callers' channels first).
            let mut callers = vec![];
            for ch in live {
                let lost_hangup = due
                    .get(&tenant)
                    .and_then(|d| d.get(&ch.channel))
                    .filter(|_| !ch.answered)
                    .copied();
                let unrecorded_offer = ch.direction == Direction::Outbound
                    && ch.channel.starts_with(OFFER_PREFIX)
                    && !ch.answered
                    && !self.m.acd.offers.contains_key(&ch.channel);
                if lost_hangup.is_some() || unrecorded_offer {
                    tracing::info!(channel = %ch.channel, ?lost_hangup, unrecorded_offer, "hanging up a leftover leg");
                    let _ = self
                        .ctx
                        .bus
                        .request(
                            &self.pbx(&tenant),
                            &Hangup {
                                channel: ch.channel,
                                // A timed-out offer's hangup lost with the previous router: still
                                // rung out.
                                cause: lost_hangup.unwrap_or(HangupCause::Normal),
                            },
                        )
                        .await;
                    continue;
                }
                let waiting_caller = ch.direction == Direction::Inbound
                    && !self.parked.channels.contains(&printable(&ch.channel))
                    && ch.bridge.is_none()
                    && !self.m.acd.channels.contains_key(&ch.channel)
                    && !self.m.acd.caller_seen(&ch.channel);
                if let (true, Some(dialed)) = (waiting_caller, ch.dialed.clone()) {
                    if self.m.acd.has_queue(&tenant, &dialed).is_some() {
                        callers.push((ch, dialed));
                    }
                }
            }
            for (ch, dialed) in callers {
                tracing::info!(channel = %ch.channel, queue = %dialed, "a caller whose arrival was not recorded enters the queue");
                let e = ChannelEvent::ChannelCreated {
                    tenant: tenant.clone(),
                    channel: ch.channel,
                    direction: Direction::Inbound,
                    caller: ch.caller,
                    dialed: Some(dialed),
                    device: None,
                    number: None,
                    at: Utc::now(),
                };
                self.on_channel(e).await?;
            }
        }
        Ok(())
    }

    /// Whether the timers due at `now` wait a little longer. A ring timeout is the PBX's
    /// facts against a deadline: when the router itself was held up (stopped, starved of CPU)
    /// its timers come due late, and the facts of that time (an answer in time, the caller
    /// giving up) wait unread in JetStream. Judged at once, a phone that answered in time would
    /// be hung up as rung out and charged a Missed. So timers found due more than
    /// [`STALL`] late wait up to [`STALL_HOLD`] for those facts, and as long as JetStream says
    /// facts are still to come, up to [`MAX_HOLD`] in all; then they are decided whatever comes.
    fn hold_timers(&mut self, now: chrono::DateTime<Utc>) -> bool {
        let late = self
            .m
            .acd
            .next_deadline()
            .and_then(|d| (now - d).to_std().ok())
            .unwrap_or_default();
        let stalled = late > STALL;
        let behind = self.pbx_behind > 0;
        if self.held_since.is_none() && !stalled && !behind {
            self.hold_until = None;
            return false;
        }
        let since = *self.held_since.get_or_insert_with(std::time::Instant::now);
        let held = since.elapsed();
        if held < MAX_HOLD && (behind || (stalled && held < STALL_HOLD)) {
            self.hold_until = Some(std::time::Instant::now() + Duration::from_millis(20));
            return true;
        }
        if !held.is_zero() {
            tracing::info!(
                late_ms = late.as_millis() as u64,
                held_ms = held.as_millis() as u64,
                "timers decided after reading the PBX facts of a stall"
            );
        }
        self.held_since = None;
        self.hold_until = None;
        false
    }

    /// The PBX's word on a timed-out ring ([`cancel_ring`]).
    async fn ring_ended(&mut self, end: RingEnd) -> anyhow::Result<()> {
        self.cancelling.remove(&end.offer);
        let RingEnd {
            tenant,
            call,
            agent,
            offer,
            how,
        } = end;
        if how == RingEnded::Gone && self.m.acd.offer_open(&call, &offer) {
            tracing::info!(%call, %agent, %offer, "a timed-out ring the PBX never had: withdrawn");
        }
        let cmd = Command::RingEnded {
            tenant,
            call,
            agent,
            offer,
            how,
            now: Utc::now(),
        };
        self.decide(cmd).await
    }

    /// Asks agent-session to pause agents who missed their queue's limit of offers in a row.
    async fn pause_agents(&mut self, pauses: Vec<(String, AgentNumber, String)>) {
        for (tenant, agent, reason) in pauses {
            let cmd = cc_contracts::session::PauseAgent {
                agent: agent.clone(),
                reason,
                auto: true,
            };
            match self.ctx.bus.request(&self.pbx(&tenant), &cmd).await {
                Ok(_) => {
                    let noted = routing::Note::AutoPaused { tenant, agent };
                    Routing::evolve(&mut self.m.acd, &routing::Event::Noted(noted));
                }
                Err(e) => tracing::info!(error = %e, %agent, "could not auto-pause the agent"),
            }
        }
    }

    /// A PBX channel fact, decided by the model. What the router does around it: a report
    /// about a parked caller is not handed on; before an answer, the agent's newest session
    /// events are read (a logout the store holds is known before the caller is connected); and
    /// a caller who entered a queue is offered at once, the first offer recorded with the entry
    /// (one commit on the way from the caller's arrival to the agent's phone ringing).
    async fn on_channel(&mut self, e: ChannelEvent) -> anyhow::Result<()> {
        match &e {
            ChannelEvent::ChannelCreated {
                tenant,
                channel,
                direction: Direction::Inbound,
                dialed: Some(dialed),
                at,
                ..
            } => {
                tracing::debug!(%channel, since_created_ms = (Utc::now() - at).num_microseconds().unwrap_or(0) as f64 / 1000.0, "caller arrived");
                if self.m.acd.has_queue(tenant, dialed).is_none() {
                    return Ok(());
                }
                if self.parked.channels.contains(&printable(channel)) {
                    return Ok(()); // parked: its entry could not be recorded
                }
            }
            ChannelEvent::ChannelAnswered {
                tenant, channel, ..
            } => {
                // Answered after a logout (or the device going offline) that the store holds
                // but the router has not read yet: the offer is withdrawn, its leg hung up and
                // the call offered again; the caller is never connected to that agent.
                if let Some((_, agent)) = self.m.acd.offer_agent(channel) {
                    let agent = agent.clone();
                    self.catch_up_session(tenant, &agent).await?;
                }
            }
            _ => {}
        }
        let now = Utc::now();
        let decided = self.ask(&Command::Channel {
            fact: e,
            now,
            ids: fresh_ids(),
        });
        let entered = decided.iter().any(|d| {
            matches!(
                d,
                routing::Event::Call {
                    event: CallEvent::CallEnteredQueue { .. },
                    ..
                }
            )
        }) && !decided.iter().any(|d| {
            matches!(
                d,
                routing::Event::Call {
                    event: CallEvent::CallLeftQueue { .. },
                    ..
                }
            )
        });
        let mut pauses = self.take(decided);
        if entered {
            let offers = self.ask(&Command::Dispatch {
                now,
                ids: fresh_ids(),
            });
            pauses.extend(self.take(offers));
        }
        self.flush();
        self.pause_agents(pauses).await;
        Ok(())
    }
}

/// Ids for what a decision creates, from the clock and randomness the model has not.
fn fresh_ids() -> Ids {
    Ids::new(Uuid::now_v7())
}

/// Appends one call's events in order and carries out the PBX actions that follow them. Ends
/// after a minute without work, or when the router stops leading.
async fn write_call(
    ctx: Context,
    call: String,
    mut jobs: tokio::sync::mpsc::UnboundedReceiver<Job>,
    feedback: tokio::sync::mpsc::UnboundedSender<Feedback>,
    term: tokio_util::sync::CancellationToken,
    offer_seconds: prometheus_client::metrics::histogram::Histogram,
    fence: cc_eventstore::Fence,
) {
    // The events this writer appended: told apart from another writer's in a conflict.
    let mut mine: HashSet<Uuid> = HashSet::new();
    loop {
        let job = tokio::select! {
            biased;
            _ = term.cancelled() => return,
            j = tokio::time::timeout(Duration::from_secs(60), jobs.recv()) => match j {
                Ok(Some(j)) => j,
                _ => return,
            },
        };
        let started = std::time::Instant::now();
        let pbx = CommandContext::new(&job.tenant, "system:queue-router");
        // The phones of an offer ring while it is recorded (every chosen phone at once): the
        // commit's disk flush stays off the caller's way to an agent. Hangups wait for the
        // commit of what they follow.
        let mut rings = vec![];
        let mut hangups = vec![];
        for a in job.then {
            match a {
                Action::Hangup { channel, cause } => hangups.push(Hangup { channel, cause }),
                Action::Ring {
                    offer,
                    agent,
                    device,
                    caller,
                } => {
                    let cmd = Originate {
                        channel: Some(offer.clone()),
                        endpoint: Endpoint::Device(device),
                        caller,
                    };
                    let (bus, pbx) = (ctx.bus.clone(), pbx.clone());
                    rings.push(
                        async move {
                            let r = bus.request(&pbx, &cmd).await;
                            (offer, agent, r, started.elapsed())
                        }
                        .instrument(job.span.clone()),
                    );
                }
            }
        }
        let ringing = !rings.is_empty();
        let append = async {
            if job.events.is_empty() {
                return Ok(());
            }
            let stream = StreamName::new(&job.tenant, "call", &call)
                .map_err(|e| Unrecorded::Refused(e.to_string()))?;
            // Fenced: once another router took the lease, this one's appends fail (and it
            // stops), so the new leader's read of the store misses nothing recorded here. At
            // the version decided on: another writer's append meanwhile is a conflict.
            let mut expected = match job.expected {
                Some(v) => v,
                None => ctx
                    .store
                    .stream_version(&stream)
                    .await
                    .map_err(|e| Unrecorded::Failed(e.into()))?,
            };
            let mut attempt = 1;
            loop {
                match ctx
                    .store
                    .append_fenced(
                        &fence,
                        &stream,
                        ExpectedVersion::Exact(expected),
                        &job.events,
                    )
                    .await
                {
                    Ok(_) => break,
                    Err(cc_eventstore::AppendError::Conflict { actual, .. })
                        if attempt < cc_bus::DECIDE_ATTEMPTS =>
                    {
                        // Another writer appended to the call since the router decided. When
                        // none of its events is of a kind this job records (call-control's
                        // transfer, hold or connect beside the router's wrap-up start, say),
                        // the decision stands on the new state as well and is appended after
                        // them. Otherwise (the same fact decided twice: two ends of a wrap-up)
                        // the router starts over from the store and decides again.
                        let since = ctx
                            .store
                            .read_stream(&stream, expected + 1, actual - expected)
                            .await
                            .map_err(|e| Unrecorded::Failed(e.into()))?;
                        let ours: HashSet<&str> =
                            job.events.iter().map(|e| e.event_type.as_str()).collect();
                        let clash = since
                            .iter()
                            .filter(|e| !mine.contains(&e.event_id))
                            .any(|e| ours.contains(e.event_type.as_str()));
                        if clash {
                            return Err(Unrecorded::Failed(cc_eventstore::AppendError::Conflict {
                                stream: stream.key(),
                                expected: ExpectedVersion::Exact(expected),
                                actual,
                            }));
                        }
                        tracing::debug!(%call, expected, actual, "appending after another writer's events");
                        expected = actual;
                        attempt += 1;
                    }
                    Err(e) => return Err(Unrecorded::from(e)),
                }
            }
            mine.extend(job.events.iter().map(|e| e.event_id));
            Ok::<_, Unrecorded>(())
        };
        let (appended, rung) = futures::future::join(
            append.instrument(job.span.clone()),
            futures::future::join_all(rings),
        )
        .await;
        if let Err(e) = appended {
            // Not recorded. Every writer of this router stops (no later event of any call may
            // be recorded on top of a missing one), the router rebuilds from the store, and
            // the phones just rung must stop. What the store refused for good is parked first,
            // so that the rebuilt router does not try it again.
            term.cancel();
            for (offer, _, r, _) in rung {
                if r.is_ok() {
                    let _ = ctx
                        .bus
                        .request(
                            &pbx,
                            &Hangup {
                                channel: offer,
                                cause: HangupCause::Normal,
                            },
                        )
                        .await;
                }
            }
            let f = match e {
                Unrecorded::Refused(error) => Feedback::Refused {
                    tenant: job.tenant.clone(),
                    call: call.clone(),
                    channel: job.channel.clone(),
                    event_types: job.events.iter().map(|e| e.event_type.clone()).collect(),
                    error,
                    cause: job.cause.clone(),
                },
                Unrecorded::Failed(e) => {
                    Feedback::Failed(anyhow::Error::new(e).context("recording a call event"))
                }
            };
            let _ = feedback.send(f);
            return;
        }
        if ringing {
            let ring_ms = rung
                .iter()
                .map(|r| r.3)
                .max()
                .unwrap_or_default()
                .as_secs_f64()
                * 1000.0;
            tracing::debug!(%call, recorded_ms = started.elapsed().as_secs_f64() * 1000.0, ring_ms, "offer rung and recorded");
        }
        for cmd in hangups {
            // The PBX unreachable for a moment (NATS restarting): asked again a few times, as
            // a leg left ringing keeps its agent busy (and is hung up at the next take-over
            // at the latest). A refusal (the channel gone already) is final.
            let hangup = ctx
                .bus
                .request_retrying(&pbx, &cmd, Some(5), &term)
                .instrument(job.span.clone());
            if let Err(e) = hangup.await {
                tracing::debug!(error = %e, channel = cmd.channel, "hangup not done (the channel may be gone already)");
            }
        }
        for (offer, agent, r, took) in rung {
            if r.is_ok() {
                offer_seconds.observe(took.as_secs_f64());
            }
            if let Err(e) = r {
                tracing::info!(error = %e, %agent, "could not ring the agent's device");
                let _ = feedback.send(Feedback::NotRung {
                    tenant: job.tenant.clone(),
                    call: call.clone(),
                    agent,
                    offer,
                });
            }
        }
        if let Some(a) = job.ack {
            a.done().await;
        }
    }
}

/// Why a call's events were not recorded.
#[derive(Debug, thiserror::Error)]
enum Unrecorded {
    /// The store refused the events themselves (their data, their stream): the same append
    /// would fail again.
    #[error("the store refused the events: {0}")]
    Refused(String),
    /// Anything else (the database unreachable, a timeout, a conflict): worth a rebuild and a
    /// new try.
    #[error(transparent)]
    Failed(cc_eventstore::AppendError),
}

impl From<cc_eventstore::AppendError> for Unrecorded {
    fn from(e: cc_eventstore::AppendError) -> Self {
        use cc_eventstore::AppendError as E;
        match &e {
            E::EventIdReused | E::Empty | E::TenantMismatch { .. } => {
                Unrecorded::Refused(e.to_string())
            }
            E::Database(sqlx::Error::Database(db)) if refused_for_good(db.code().as_deref()) => {
                Unrecorded::Refused(e.to_string())
            }
            _ => Unrecorded::Failed(e),
        }
    }
}

/// SQLSTATEs that say the statement's data is at fault, not the moment: class 22 (data
/// exception, e.g. 22P05 "unsupported Unicode escape sequence" for a NUL in jsonb), 23
/// (integrity constraint violation) but for 23505 (a unique violation: two writers racing,
/// settled by retrying), and 54 (program limit exceeded, e.g. a value too large).
fn refused_for_good(code: Option<&str>) -> bool {
    match code {
        Some("23505") => false,
        Some(c) => c.starts_with("22") || c.starts_with("23") || c.starts_with("54"),
        None => false,
    }
}

/// `s` with its control characters escaped (`\u{0}`), as a text column can hold it.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_exceptions_are_refused_for_good_and_races_and_outages_are_not() {
        assert!(
            refused_for_good(Some("22P05")),
            "unsupported Unicode escape sequence (NUL in jsonb)"
        );
        assert!(
            refused_for_good(Some("22021")),
            "invalid byte sequence for encoding"
        );
        assert!(refused_for_good(Some("23502")));
        assert!(refused_for_good(Some("54000")));
        assert!(
            !refused_for_good(Some("23505")),
            "a unique violation is a race"
        );
        assert!(!refused_for_good(Some("40001")));
        assert!(!refused_for_good(Some("57P01")), "admin shutdown");
        assert!(!refused_for_good(Some("08006")));
        assert!(!refused_for_good(None));
        assert!(matches!(
            Unrecorded::from(cc_eventstore::AppendError::EventIdReused),
            Unrecorded::Refused(_)
        ));
        assert!(matches!(
            Unrecorded::from(cc_eventstore::AppendError::Database(
                sqlx::Error::PoolTimedOut
            )),
            Unrecorded::Failed(_)
        ));
    }

    #[test]
    fn printable_escapes_control_characters_only() {
        assert_eq!(printable("ab\u{0}c\n"), "ab\\u{0}c\\u{a}");
        assert_eq!(printable("Zoë"), "Zoë");
    }
}
