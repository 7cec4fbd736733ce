//! The router: runs the [`Acd`] model live. One router decides at a time (a PostgreSQL
//! advisory-lock lease); a standby takes over within seconds and rebuilds the model from the
//! store, so offers, ring timeouts, wrap-ups and max waits survive a restart (their timers are
//! derived from the recorded events, not kept in a process).

use std::collections::HashSet;
use std::time::Duration;
use tracing::Instrument;

use crate::metrics::RouterMetrics;

use cc_bus::CommandContext;
use cc_contracts::call::{CallEvent, LeaveReason, WithdrawReason};
use cc_contracts::domain::AgentNumber;
use cc_contracts::pbx::{ChannelEvent, Direction, Endpoint, Hangup, HangupCause, Originate};
use cc_contracts::queue::QueueEvent;
use cc_contracts::session::AgentSessionEvent;
use cc_contracts::{decode, decode_checked, encode, Decoded};
use cc_eventstore::{
    Checkpoint, ExpectedVersion, Lease, Metadata, ReadFilter, RecordedEvent, StreamName,
    Subscription,
};
use cc_runtime::leading::{keep_leading, retry_until_ok};
use cc_runtime::Context;
use chrono::Utc;
use futures::StreamExt;
use uuid::Uuid;

use crate::acd::{Acd, Decision};

/// The ids the router gives the legs it originates to agents' phones (offers) start with this,
/// so that after a crash it can tell its own legs from the PBX's other calls: a phone is rung
/// while the offer is being recorded, and a leg whose offer never made it to the store is hung
/// up at the next start (see [`Router::reconcile`]).
pub const OFFER_PREFIX: &str = "ccq-";

pub async fn run(ctx: Context) {
    let cancel = ctx.cancel.clone();
    if retry_until_ok(&cancel, "cannot create the PBX event consumer", || {
        channel_consumer(&ctx)
    })
    .await
    .is_none()
    {
        return;
    }
    let metrics = RouterMetrics::register(&ctx.metrics);
    keep_leading(&cancel, "queue router", || lead(&ctx, metrics.clone())).await;
}

struct Router<'a> {
    ctx: &'a Context,
    acd: Acd,
    /// Events this router appended and already applied: skipped when the store returns them.
    own: HashSet<Uuid>,
    /// Agents whose call ended but whose wrap-up was not started yet: (tenant, call, agent).
    ended: HashSet<(String, String, AgentNumber)>,
    /// Caller channels already taken into a queue (recent ones): a redelivered PBX event does
    /// not enter the same caller twice.
    seen_callers: (HashSet<String>, std::collections::VecDeque<String>),
    live: bool,
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
    /// The version of each agent's session stream applied to the model: the router reads an
    /// agent's newest session events ahead of the store's order before connecting a caller
    /// to them, and skips those events when the store brings them.
    sessions: std::collections::HashMap<(String, AgentNumber), i64>,
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

enum RingEnded {
    /// Ended as rung out: the offer is missed.
    Cancelled,
    /// The phone had answered: its `ChannelAnswered` decides.
    Answered,
    /// The PBX has no such leg, and no report of its end came meanwhile: it never rang.
    Gone,
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

async fn channel_consumer(
    ctx: &Context,
) -> anyhow::Result<
    async_nats::jetstream::consumer::Consumer<async_nats::jetstream::consumer::pull::Config>,
> {
    cc_bus::consumer::pbx_channels(&ctx.bus, CHANNEL_CONSUMER).await
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

async fn lead(ctx: &Context, metrics: RouterMetrics) -> anyhow::Result<()> {
    let leader = ctx.metrics.leader("queue_router");
    let Some(mut lease) = Lease::try_acquire(&ctx.config.database_url, "cc-queue-router").await?
    else {
        return Ok(());
    };
    let _holding = leader.took();
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
    let term = ctx.cancel.child_token();
    let _stop_writers = term.clone().drop_guard();
    let mut r = Router {
        ctx,
        acd: Acd::default(),
        own: HashSet::new(),
        ended: HashSet::new(),
        seen_callers: Default::default(),
        live: false,
        writers: Default::default(),
        writers_limit: 1024,
        tracker: tokio_util::task::TaskTracker::new(),
        feedback,
        term,
        sessions: Default::default(),
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
    let result: anyhow::Result<()> = async {
        let _gauges = crate::metrics::Leading(metrics);
        let mut sub = Subscription::new(ctx.store.clone(), ReadFilter::All, Checkpoint::START)
            .await?
            .with_batch_size(2000);
        while let Some(batch) = sub.poll().await? {
            for e in &batch {
                r.apply(e).await?;
            }
            if let Some(last) = batch.last() {
                leader.applied(last.checkpoint());
            }
        }
        r.live = true;
        for (tenant, call, agent) in std::mem::take(&mut r.ended) {
            r.start_wrap_up(&tenant, &call, agent).await?;
        }
        // Offers still ringing agents who logged out or went offline while no router led.
        r.withdraw_offers_of_unavailable(None);
        r.reconcile().await?;
        let mut sub = sub.into_feed(4);
        tracing::info!(
            calls = r.acd.calls.len(),
            agents = r.acd.agents.len(),
            "queue router lease taken; routing"
        );

        // Every fact the previous leader did not see through comes again first, in order.
        let consumer =
            cc_bus::consumer::pbx_channels_from_ack_floor(&ctx.bus, CHANNEL_CONSUMER).await?;
        let mut pbx = consumer.messages().await?;
        let mut observe = tokio::time::interval(Duration::from_secs(2));
        loop {
            r.dispatch().await?;
            let mut sleep = match r.acd.next_deadline() {
                Some(t) => (t - Utc::now()).to_std().unwrap_or(Duration::ZERO),
                None => Duration::from_secs(3600),
            };
            if let Some(h) = r.hold_until {
                sleep = sleep.max(h.saturating_duration_since(std::time::Instant::now()));
            }
            tokio::select! {
                _ = ctx.cancel.cancelled() => return Ok(()),
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
                    r.pbx_behind = m.info().map_or(0, |i| i.pending);
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
                        for d in r.acd.due(now) {
                            r.on_due(d).await?;
                        }
                    }
                }
                _ = observe.tick() => r.metrics.observe(&r.acd, Utc::now()),
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
                        let w = CallEvent::OfferWithdrawn { call: call.clone(), agent, offer, reason: WithdrawReason::DeviceUnavailable };
                        r.record(&tenant, &call, vec![w]).await?;
                    }
                    None => {}
                },
            }
            lease.check().await?;
        }
    }
    .await;
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
        match e.stream.category() {
            "agent" => match decode_checked::<AgentSessionEvent>(e) {
                Decoded::Event(s) => self.apply_session(tenant, &s, e.version, e.recorded_at),
                Decoded::Undecodable(why) => self.park_undecodable(e, &why).await?,
                Decoded::OtherFamily => {}
            },
            "queue" => match decode_checked::<QueueEvent>(e) {
                Decoded::Event(q) => self.acd.apply_queue(tenant, &q),
                Decoded::Undecodable(why) => self.park_undecodable(e, &why).await?,
                Decoded::OtherFamily => {}
            },
            "call" => {
                let c = match decode_checked::<CallEvent>(e) {
                    Decoded::Event(c) => Some(c),
                    Decoded::Undecodable(why) => {
                        self.park_undecodable(e, &why).await?;
                        None
                    }
                    Decoded::OtherFamily => None,
                };
                if let Some(c) = c {
                    if let CallEvent::CallEnteredQueue { channel, .. } = &c {
                        self.remember_caller(channel);
                    }
                    self.acd.apply_call(tenant, &c, e.recorded_at);
                    if self.live {
                        self.metrics.count(&self.acd, tenant, &c);
                    }
                    match &c {
                        CallEvent::CallEnded { call, agent, .. } => {
                            if self.live {
                                self.start_wrap_up(tenant, call, agent.clone()).await?;
                            } else {
                                self.ended.insert((
                                    tenant.to_string(),
                                    call.clone(),
                                    agent.clone(),
                                ));
                            }
                        }
                        CallEvent::WrapUpStarted { call, agent, .. } => {
                            self.ended
                                .remove(&(tenant.to_string(), call.clone(), agent.clone()));
                        }
                        // An agent who dials out while a queue offer rings them (the two crossed):
                        // the offer goes on to the next agent.
                        CallEvent::OutboundCallStarted { agent, .. } if self.live => {
                            self.withdraw_offers_of_unavailable(Some((tenant, agent)));
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
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

    /// Applies an agent's session event (once: `version` in the agent's stream). Live, an agent
    /// who logged out or whose device went offline has their ringing offers withdrawn at once.
    fn apply_session(
        &mut self,
        tenant: &str,
        s: &AgentSessionEvent,
        version: i64,
        at: chrono::DateTime<Utc>,
    ) {
        let seen = self
            .sessions
            .entry((tenant.to_string(), s.agent().clone()))
            .or_insert(0);
        if version <= *seen {
            return; // read ahead already (see `catch_up_session`)
        }
        *seen = version;
        self.acd.apply_session(tenant, s, at);
        if self.live
            && matches!(
                s,
                AgentSessionEvent::AgentLoggedOut { .. }
                    | AgentSessionEvent::AgentDeviceWentOffline { .. }
            )
        {
            self.withdraw_offers_of_unavailable(Some((tenant, s.agent())));
        }
    }

    /// Takes in the agent's session events that the store holds beyond what the router applied
    /// (its catch-up read lags behind the commits, the PBX's reports do not): a logout
    /// recorded a moment ago is known before a caller is connected to the agent.
    async fn catch_up_session(&mut self, tenant: &str, agent: &AgentNumber) -> anyhow::Result<()> {
        let seen = self
            .sessions
            .get(&(tenant.to_string(), agent.clone()))
            .copied()
            .unwrap_or(0);
        let stream = StreamName::new(tenant, "agent", agent.as_str())?;
        for e in self.ctx.store.read_stream(&stream, seen + 1, 100).await? {
            if let Some(s) = decode::<AgentSessionEvent>(&e) {
                self.apply_session(tenant, &s, e.version, e.recorded_at);
            }
        }
        Ok(())
    }

    /// Withdraws the offers ringing agents who can no longer take them (`only` this agent's,
    /// else every agent's) and hangs up their legs: the calls go on to the next agents, and
    /// nothing counts against these agents.
    fn withdraw_offers_of_unavailable(&mut self, only: Option<(&str, &AgentNumber)>) {
        for (tenant, call, agent, offer, reason) in self.acd.offers_to_withdraw(only) {
            tracing::info!(%call, %agent, ?reason, "withdrawing an offer from an agent who can no longer take it");
            let w = CallEvent::OfferWithdrawn {
                call: call.clone(),
                agent,
                offer: offer.clone(),
                reason,
            };
            self.record_then(
                &tenant,
                &call,
                vec![],
                vec![w],
                vec![Action::Hangup {
                    channel: offer,
                    cause: HangupCause::Normal,
                }],
            );
        }
    }

    /// Appends call events (recording them as our own) and applies them at once.
    async fn record(
        &mut self,
        tenant: &str,
        call: &str,
        events: Vec<CallEvent>,
    ) -> anyhow::Result<()> {
        self.record_after(tenant, call, vec![], events).await
    }

    /// Appends `applied` (already applied to the model) and `events` in one append, then
    /// applies `events`.
    async fn record_after(
        &mut self,
        tenant: &str,
        call: &str,
        applied: Vec<CallEvent>,
        events: Vec<CallEvent>,
    ) -> anyhow::Result<()> {
        self.record_then(tenant, call, applied, events, vec![]);
        Ok(())
    }

    /// As [`Router::record_after`], then the PBX actions `then` (in the same job: no second
    /// hand-over between the commit and the phones).
    fn record_then(
        &mut self,
        tenant: &str,
        call: &str,
        applied: Vec<CallEvent>,
        events: Vec<CallEvent>,
        then: Vec<Action>,
    ) {
        if self.parked.calls.contains(call) {
            tracing::debug!(%call, "no decision for a parked call");
            return;
        }
        let channel = applied.iter().chain(&events).find_map(|e| match e {
            CallEvent::CallEnteredQueue { channel, .. } => Some(channel.clone()),
            _ => None,
        });
        let meta = Metadata::new(tenant, "system:queue-router");
        let encoded: Vec<_> = applied
            .iter()
            .chain(&events)
            .map(|e| encode(e, meta.clone()))
            .collect();
        if encoded.is_empty() && then.is_empty() {
            return;
        }
        let now = Utc::now();
        for n in &encoded {
            self.own.insert(n.event_id);
        }
        for e in &events {
            self.acd.apply_call(tenant, e, now);
            if self.live {
                self.metrics.count(&self.acd, tenant, e);
            }
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

    /// PBX actions that must follow what was recorded for the call so far.
    fn act(&mut self, tenant: &str, call: &str, then: Vec<Action>) {
        let span = self.job_span(call);
        self.submit(
            call,
            Job {
                tenant: tenant.to_string(),
                events: vec![],
                then,
                cause: None,
                channel: None,
                span,
                ack: self.fact_ack.as_ref().map(AckWhenDone::share),
            },
        );
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

    fn hang_up(&mut self, tenant: &str, call: &str, channel: &str, cause: HangupCause) {
        self.act(
            tenant,
            call,
            vec![Action::Hangup {
                channel: channel.into(),
                cause,
            }],
        );
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
        for (t, c, cause) in &self.acd.to_hang_up {
            due.entry(t.clone()).or_default().insert(c.clone(), *cause);
        }
        let tenants: std::collections::BTreeSet<String> = self
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
                    && !self.acd.offers.contains_key(&ch.channel);
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
                    && !self.acd.channels.contains_key(&ch.channel)
                    && !self.seen_callers.0.contains(&ch.channel);
                if let (true, Some(dialed)) = (waiting_caller, ch.dialed.clone()) {
                    if self.acd.has_queue(&tenant, &dialed).is_some() {
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

    /// The agent's wrap-up after their part of a call, for the time of the call's queue.
    async fn start_wrap_up(
        &mut self,
        tenant: &str,
        call: &str,
        agent: AgentNumber,
    ) -> anyhow::Result<()> {
        // The agent's record names the call it handled, with its queue.
        let queue = self
            .acd
            .agents
            .get(&(tenant.to_string(), agent.clone()))
            .and_then(|a| a.last_call.clone())
            .filter(|(c, _)| c == call)
            .map(|(_, q)| q);
        let Some(queue) = queue else { return Ok(()) };
        let seconds = self.acd.settings(tenant, &queue).wrap_up_s;
        self.record(
            tenant,
            call,
            vec![CallEvent::WrapUpStarted {
                call: call.into(),
                agent,
                seconds,
            }],
        )
        .await
    }

    async fn dispatch(&mut self) -> anyhow::Result<()> {
        for d in self.acd.dispatch(Utc::now()) {
            let Decision::Offer { call, agents } = d else {
                continue;
            };
            self.offer(&call, agents, vec![]).await?;
        }
        Ok(())
    }

    /// Records the offers of a call (after `first`, events already applied to the model: the
    /// call's entry, when the first offer is decided at once) and rings the agents' phones.
    async fn offer(
        &mut self,
        call: &str,
        agents: Vec<(AgentNumber, cc_contracts::domain::DeviceId)>,
        first: Vec<CallEvent>,
    ) -> anyhow::Result<()> {
        let Some(c) = self.acd.calls.get(call).cloned() else {
            return Ok(());
        };
        let offers: Vec<(String, AgentNumber, cc_contracts::domain::DeviceId)> = agents
            .into_iter()
            .map(|(a, d)| (format!("{OFFER_PREFIX}{}", Uuid::now_v7().simple()), a, d))
            .collect();
        let ring_timeout_s = self.acd.settings(&c.tenant, &c.queue).ring_timeout_s;
        let events = offers
            .iter()
            .map(|(offer, agent, device)| CallEvent::CallOffered {
                call: call.to_string(),
                queue: c.queue.clone(),
                agent: agent.clone(),
                device: device.clone(),
                offer: offer.clone(),
                ring_timeout_s: Some(ring_timeout_s),
            })
            .collect();
        let rings = offers
            .into_iter()
            .map(|(offer, agent, device)| Action::Ring {
                offer,
                agent,
                device,
                caller: c.caller.clone(),
            })
            .collect();
        self.record_then(&c.tenant, call, first, events, rings);
        Ok(())
    }

    async fn on_due(&mut self, d: Decision) -> anyhow::Result<()> {
        match d.clone() {
            Decision::OfferTimedOut { call, agent, offer } => {
                let Some(tenant) = self.acd.calls.get(&call).map(|c| c.tenant.clone()) else {
                    return Ok(());
                };
                // The PBX ends the ring, unless the phone answered first: only then is the
                // offer missed (see `CancelRing`). Meanwhile the timer is moved on, and the
                // ring is asked to end once.
                self.acd
                    .postpone_offer(&call, &offer, Utc::now() + chrono::Duration::seconds(1));
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
            Decision::MaxWait { call } | Decision::NoAgents { call } => {
                let reason = if matches!(d, Decision::MaxWait { .. }) {
                    LeaveReason::MaxWait
                } else {
                    LeaveReason::NoAgents
                };
                let Some(c) = self.acd.calls.get(&call).cloned() else {
                    return Ok(());
                };
                let mut events = self.withdraw_all(&call, WithdrawReason::CallerGone);
                let wait_ms = (Utc::now() - c.entered_at).num_milliseconds();
                events.push(CallEvent::CallLeftQueue {
                    call: call.clone(),
                    queue: c.queue.clone(),
                    reason,
                    wait_ms,
                });
                self.record(&c.tenant, &call, events).await?;
                for o in &c.offers {
                    self.hang_up(&c.tenant, &call, &o.offer, HangupCause::Normal);
                }
                self.hang_up(&c.tenant, &call, &c.channel, HangupCause::Normal);
            }
            Decision::WrapUpOver {
                call,
                tenant,
                agent,
            } => {
                self.record(
                    &tenant,
                    &call,
                    vec![CallEvent::WrapUpEnded {
                        call: call.clone(),
                        agent,
                        early: false,
                    }],
                )
                .await?;
            }
            Decision::Offer { .. } => {}
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
        // Already decided by the PBX's report of the leg (answered, rejected, rung out).
        if !self.acd.offer_open(&call, &offer) {
            return Ok(());
        }
        match how {
            RingEnded::Cancelled => {
                let queue = self.acd.calls.get(&call).map(|c| c.queue.clone());
                let e = CallEvent::OfferTimedOut {
                    call: call.clone(),
                    agent: agent.clone(),
                    offer,
                };
                self.record(&tenant, &call, vec![e]).await?;
                if let Some(queue) = queue {
                    self.maybe_auto_pause(&tenant, &queue, &agent).await;
                }
            }
            // The answer's report comes and decides; the timer asks again meanwhile.
            RingEnded::Answered => {}
            RingEnded::Gone => {
                tracing::info!(%call, %agent, %offer, "a timed-out ring the PBX never had: withdrawn");
                let w = CallEvent::OfferWithdrawn {
                    call: call.clone(),
                    agent,
                    offer,
                    reason: WithdrawReason::DeviceUnavailable,
                };
                self.record(&tenant, &call, vec![w]).await?;
            }
        }
        Ok(())
    }

    /// Remembers a caller channel (the last 100,000); false when it was seen already.
    fn remember_caller(&mut self, channel: &str) -> bool {
        let (set, order) = &mut self.seen_callers;
        if !set.insert(channel.to_string()) {
            return false;
        }
        order.push_back(channel.to_string());
        if order.len() > 100_000 {
            if let Some(old) = order.pop_front() {
                set.remove(&old);
            }
        }
        true
    }

    /// Pauses an agent who missed the queue's limit of offers in a row (when configured).
    async fn maybe_auto_pause(
        &mut self,
        tenant: &str,
        queue: &cc_contracts::domain::QueueNumber,
        agent: &AgentNumber,
    ) {
        let limit = self.acd.settings(tenant, queue).auto_pause_after;
        let missed = self
            .acd
            .agents
            .get(&(tenant.to_string(), agent.clone()))
            .map(|a| a.missed_in_row)
            .unwrap_or(0);
        if limit > 0 && missed >= limit {
            let cmd = cc_contracts::session::PauseAgent {
                agent: agent.clone(),
                reason: format!("Missed {missed} calls"),
                auto: true,
            };
            match self.ctx.bus.request(&self.pbx(tenant), &cmd).await {
                // Known now, before the store brings the event back: no new offer meanwhile.
                Ok(_) => {
                    if let Some(a) = self
                        .acd
                        .agents
                        .get_mut(&(tenant.to_string(), agent.clone()))
                    {
                        a.paused = true;
                    }
                }
                Err(e) => tracing::info!(error = %e, %agent, "could not auto-pause the agent"),
            }
        }
    }

    fn withdraw_all(&self, call: &str, reason: WithdrawReason) -> Vec<CallEvent> {
        self.acd.calls.get(call).map_or(vec![], |c| {
            c.offers
                .iter()
                .map(|o| CallEvent::OfferWithdrawn {
                    call: call.into(),
                    agent: o.agent.clone(),
                    offer: o.offer.clone(),
                    reason,
                })
                .collect()
        })
    }

    async fn on_channel(&mut self, e: ChannelEvent) -> anyhow::Result<()> {
        match e {
            ChannelEvent::ChannelCreated {
                tenant,
                channel,
                direction: Direction::Inbound,
                caller,
                dialed: Some(dialed),
                at,
                ..
            } => {
                tracing::debug!(%channel, since_created_ms = (Utc::now() - at).num_microseconds().unwrap_or(0) as f64 / 1000.0, "caller arrived");
                let Some(queue) = self.acd.has_queue(&tenant, &dialed) else {
                    return Ok(());
                };
                if self.parked.channels.contains(&printable(&channel)) {
                    return Ok(()); // parked: its entry could not be recorded
                }
                if self.acd.channels.contains_key(&channel) || !self.remember_caller(&channel) {
                    return Ok(()); // a redelivery
                }
                let call = Uuid::now_v7().simple().to_string();
                // The PBX's text as it can be recorded (no control characters, bounded lengths).
                let caller = caller.cleaned();
                let entered = CallEvent::CallEnteredQueue {
                    call: call.clone(),
                    queue: queue.clone(),
                    caller,
                    channel: channel.clone(),
                    priority: 0,
                };
                let leave = self.acd.settings(&tenant, &queue).leave_when_no_agents
                    && !self.acd.anyone_logged_in(&tenant, &queue);
                if leave {
                    let left = CallEvent::CallLeftQueue {
                        call: call.clone(),
                        queue,
                        reason: LeaveReason::NoAgents,
                        wait_ms: 0,
                    };
                    self.record(&tenant, &call, vec![entered, left]).await?;
                    self.hang_up(&tenant, &call, &channel, HangupCause::Normal);
                    return Ok(());
                }
                // Decide the first offer right away and record it with the entry: one commit on
                // the way from the caller's arrival to the agent's phone ringing.
                let now = Utc::now();
                self.acd.apply_call(&tenant, &entered, now);
                let mut entry = Some(entered);
                for d in self.acd.dispatch(now) {
                    let Decision::Offer { call: c, agents } = d else {
                        continue;
                    };
                    let first = if c == call {
                        entry.take().into_iter().collect()
                    } else {
                        vec![]
                    };
                    self.offer(&c, agents, first).await?;
                }
                if let Some(entered) = entry {
                    self.record_after(&tenant, &call, vec![entered], vec![])
                        .await?;
                }
            }
            ChannelEvent::ChannelAnswered {
                tenant, channel, ..
            } => {
                let Some(call) = self.acd.offers.get(&channel).cloned() else {
                    return Ok(());
                };
                let Some(agent) = self
                    .acd
                    .calls
                    .get(&call)
                    .and_then(|c| c.offers.iter().find(|o| o.offer == channel))
                    .map(|o| o.agent.clone())
                else {
                    return Ok(());
                };
                // Answered after a logout (or the device going offline) that the store holds
                // but the router has not read yet: the offer is withdrawn, its leg hung up and
                // the call offered again; the caller is never connected to that agent.
                self.catch_up_session(&tenant, &agent).await?;
                let Some(c) = self.acd.calls.get(&call).cloned() else {
                    return Ok(());
                };
                let Some(offer) = c.offers.iter().find(|o| o.offer == channel).cloned() else {
                    return Ok(());
                };
                if c.answered.is_some() || c.done {
                    // A second answer: the first one won.
                    let w = CallEvent::OfferWithdrawn {
                        call: call.clone(),
                        agent: offer.agent,
                        offer: channel.clone(),
                        reason: WithdrawReason::AnsweredElsewhere,
                    };
                    self.record(&tenant, &call, vec![w]).await?;
                    self.hang_up(&tenant, &call, &channel, HangupCause::Normal);
                    return Ok(());
                }
                let others: Vec<_> = c
                    .offers
                    .iter()
                    .filter(|o| o.offer != channel)
                    .cloned()
                    .collect();
                let mut events: Vec<CallEvent> = others
                    .iter()
                    .map(|o| CallEvent::OfferWithdrawn {
                        call: call.clone(),
                        agent: o.agent.clone(),
                        offer: o.offer.clone(),
                        reason: WithdrawReason::AnsweredElsewhere,
                    })
                    .collect();
                let wait_ms = (Utc::now() - c.entered_at).num_milliseconds();
                events.push(CallEvent::CallAnswered {
                    call: call.clone(),
                    queue: c.queue.clone(),
                    agent: offer.agent,
                    offer: channel,
                    wait_ms,
                });
                self.record(&tenant, &call, events).await?;
                for o in others {
                    self.hang_up(&tenant, &call, &o.offer, HangupCause::Normal);
                }
            }
            ChannelEvent::ChannelHungUp {
                tenant,
                channel,
                cause,
                ..
            } => {
                self.acd.channel_gone(&channel);
                if let Some(call) = self.acd.offers.get(&channel).cloned() {
                    let Some(c) = self.acd.calls.get(&call) else {
                        return Ok(());
                    };
                    let Some(o) = c.offers.iter().find(|o| o.offer == channel).cloned() else {
                        return Ok(());
                    };
                    let queue = c.queue.clone();
                    let missed = cause == HangupCause::NoAnswer;
                    let e = if missed {
                        CallEvent::OfferTimedOut {
                            call: call.clone(),
                            agent: o.agent.clone(),
                            offer: channel,
                        }
                    } else {
                        CallEvent::OfferRejected {
                            call: call.clone(),
                            agent: o.agent.clone(),
                            offer: channel,
                        }
                    };
                    self.record(&tenant, &call, vec![e]).await?;
                    if missed {
                        self.maybe_auto_pause(&tenant, &queue, &o.agent).await;
                    }
                } else if let Some(call) = self.acd.channels.get(&channel).cloned() {
                    let Some(c) = self.acd.calls.get(&call).cloned() else {
                        return Ok(());
                    };
                    if c.answered.is_none() && !c.done {
                        let mut events = self.withdraw_all(&call, WithdrawReason::CallerGone);
                        let wait_ms = (Utc::now() - c.entered_at).num_milliseconds();
                        events.push(CallEvent::CallAbandoned {
                            call: call.clone(),
                            queue: c.queue.clone(),
                            wait_ms,
                            position: self.acd.position(&call),
                        });
                        self.record(&tenant, &call, events).await?;
                        for o in c.offers {
                            self.hang_up(&tenant, &call, &o.offer, HangupCause::Normal);
                        }
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
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
            // stops), so the new leader's read of the store misses nothing recorded here.
            ctx.store
                .append_fenced(&fence, &stream, ExpectedVersion::Any, &job.events)
                .await
                .map_err(Unrecorded::from)?;
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
