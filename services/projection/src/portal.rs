//! Runs the portal read model: follows the store, applies [`crate::agent_view`], writes the
//! views, their change history and the checkpoint in one transaction, then publishes each
//! change on NATS.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cc_contracts::auth::AgentAccountEvent;
use cc_contracts::call::CallEvent;
use cc_contracts::queue::QueueEvent;
use cc_contracts::session::AgentSessionEvent;
use cc_contracts::views::AgentView;
use cc_core::Partition;
use cc_eventstore::{Checkpoint, Lease, ReadFilter, RecordedEvent, Subscription};
use cc_runtime::Context;
use sqlx::{PgPool, Row};
use tokio_util::sync::CancellationToken;

use crate::agent_view::{self, CallInfo, Fact};
use cc_bus::parked::{Parked, Reason};
use cc_contracts::Decoded;

/// The whole read model's checkpoint (each partition's beside it: `portal/p3`).
const NAME: &str = cc_contracts::views::PORTAL_CHECKPOINT;

/// How long a partition's projection lets the store move on past other partitions' events
/// before it records that it has read that far (the portal's read-your-writes waits on it).
const IDLE_PROGRESS: Duration = Duration::from_millis(50);

/// Runs the portal projection: with `CC_PARTITIONS` above 1, one leader per partition, each
/// writing its tenants' rows and a checkpoint of its own (`portal/p<k>`), the replicas sharing
/// the partitions (`cc_runtime::partitions`).
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let lead_one = |p: Partition, stop: CancellationToken| {
        let ctx = ctx.clone();
        async move { lead(&ctx, p, stop).await }
    };
    cc_runtime::partitions::lead(
        &ctx,
        "portal projection",
        "portal-projection",
        "cc-projection:portal",
        lead_one,
    )
    .await;
    Ok(())
}

async fn load_checkpoint(ctx: &Context, name: &str) -> anyhow::Result<Checkpoint> {
    let row: Option<(i64, i64)> =
        sqlx::query_as("select xid, position from rm_checkpoints where name = $1")
            .bind(name)
            .fetch_optional(&ctx.pool)
            .await?;
    Ok(row
        .map(|(xid, position)| Checkpoint { xid, position })
        .unwrap_or(Checkpoint::START))
}

async fn lead(ctx: &Context, part: Partition, stop: CancellationToken) -> anyhow::Result<()> {
    let leader = ctx.metrics.leader_named(&part.name("portal_projection"));
    let Some(mut lease) =
        Lease::try_acquire(&ctx.config.database_url, &part.name("cc-projection:portal")).await?
    else {
        return Ok(());
    };
    tracing::info!(partition = %part, "portal projection lease taken");
    let _holding = leader.took(lease.fence().epoch);
    let name = part.name(NAME);
    let name = name.as_str();
    let from = load_checkpoint(ctx, name).await?;
    leader.applied(from);
    let mut expect = from;
    // Idle progress matters to a partition's subscription only: the whole store's has every
    // event for its own.
    let mut sub = Subscription::new(ctx.store.clone(), ReadFilter::All.in_partition(part), from)
        .await?
        .with_idle_progress(IDLE_PROGRESS)
        .with_batch_size(1000);
    let mut cache = Cache::default();
    let mut last_prune = Instant::now();
    // The lease is checked without waiting for a batch too: a quiet partition's leader that
    // lost it (PostgreSQL restarted) stops within a second or two, not at its next event.
    let mut lease_tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let batch = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            b = sub.next_batch() => b?,
            _ = lease_tick.tick() => {
                lease.check().await?;
                continue;
            }
        };
        let to = sub.checkpoint();
        // A span per traced event (the trace its writer started), for the batch that applies it.
        let spans: HashMap<&str, tracing::Span> = batch
            .iter()
            .filter_map(|e| {
                let tp = e.metadata.traceparent.as_deref()?;
                let span = tracing::info_span!(
                    "portal projection update",
                    otel.kind = "consumer",
                    event_type = %e.event_type,
                    position = e.position,
                );
                Some((tp, cc_trace::following(span, Some(tp))))
            })
            .collect();
        let Some(changes) =
            project_or_park(&ctx.pool, name, &batch, expect, to, &mut cache).await?
        else {
            tracing::info!("the portal read model was rebuilt meanwhile; reloading");
            return Ok(());
        };
        expect = to;
        leader.applied(expect);
        for v in changes {
            let subject = ctx.bus.subjects.view(&v.tenant, "agent", &v.agent);
            let trace = v
                .trace
                .as_deref()
                .and_then(|t| spans.get(t))
                .and_then(cc_trace::of);
            match trace {
                // The portal's push of this change continues the trace.
                Some(t) => {
                    let mut h = async_nats::HeaderMap::new();
                    h.insert(cc_trace::TRACEPARENT, t.as_str());
                    ctx.bus
                        .client
                        .publish_with_headers(subject, h, v.json.into())
                        .await?
                }
                None => ctx.bus.client.publish(subject, v.json.into()).await?,
            }
        }
        drop(spans);
        lease.check().await?;
        // One partition's leader prunes every tenant's history.
        if part.index == 0 && last_prune.elapsed() > Duration::from_secs(60) {
            sqlx::query(
                "delete from rm_agent_updates where recorded_at < now() - interval '1 day'",
            )
            .execute(&ctx.pool)
            .await?;
            last_prune = Instant::now();
        }
    }
}

/// The fact an event is for the agent views: `Ok(None)` for one they do not show, `Err(why)`
/// for one of their categories that does not decode (parked, see [`project`]).
fn fact_of(e: &RecordedEvent) -> Result<Option<Fact>, String> {
    fn of<E: cc_contracts::EventFamily>(
        e: &RecordedEvent,
        fact: impl FnOnce(E) -> Fact,
    ) -> Result<Option<Fact>, String> {
        match cc_contracts::decode_checked::<E>(e) {
            Decoded::Event(event) => Ok(Some(fact(event))),
            Decoded::OtherFamily => Ok(None),
            Decoded::Undecodable(why) => Err(why),
        }
    }
    match e.stream.category() {
        "agent_account" => of::<AgentAccountEvent>(e, Fact::Account),
        "agent" => of::<AgentSessionEvent>(e, Fact::Session),
        "queue" => of::<QueueEvent>(e, Fact::Queue),
        "call" => of::<CallEvent>(e, |c| Fact::Call(c, None)),
        _ => Ok(None),
    }
}

/// The portal projection as a consumer, in `bus_parked`.
const PARKED_AS: &str = "portal-projection";

/// As [`project`], parking an event whose application fails for a reason in its data (a
/// constraint, a value out of range): the batch is applied again one event per transaction, and
/// the event at fault is parked with the checkpoint moved past it. Retrying it would stop every
/// tenant's agent views behind it. Any other failure is returned (the projection starts over
/// from its checkpoint).
async fn project_or_park(
    pool: &PgPool,
    name: &str,
    batch: &[RecordedEvent],
    expect: Checkpoint,
    to: Checkpoint,
    cache: &mut Cache,
) -> anyhow::Result<Option<Vec<Change>>> {
    match project(pool, name, batch, Some(expect), to, cache).await {
        Err(e) if cc_bus::parked::is_data_error(&e) => {
            tracing::warn!(error = %format!("{e:#}"), "a batch of the portal projection does not fit its tables; applying it event by event to park the one at fault");
        }
        other => return other,
    }
    let mut changes = Vec::new();
    let mut at = expect;
    for e in batch {
        let one = std::slice::from_ref(e);
        match project(pool, name, one, Some(at), e.checkpoint(), cache).await {
            Ok(Some(c)) => changes.extend(c),
            Ok(None) => return Ok(None),
            Err(err) if cc_bus::parked::is_data_error(&err) => {
                let mut tx = cc_eventstore::begin_read_model(pool).await?;
                if lock_checkpoint(&mut tx, name).await? != at {
                    return Ok(None);
                }
                let parked = cc_bus::parked::park(
                    &mut *tx,
                    PARKED_AS,
                    e,
                    Reason::Refused,
                    &format!("{err:#}"),
                )
                .await?;
                save_checkpoint(&mut tx, name, e.checkpoint()).await?;
                tx.commit().await?;
                parked.into_iter().for_each(Parked::committed);
            }
            Err(err) => return Err(err),
        }
        at = e.checkpoint();
    }
    // Past the batch's last event, as far as the subscription read.
    if at != to
        && project(pool, name, &[], Some(at), to, cache)
            .await?
            .is_none()
    {
        return Ok(None);
    }
    Ok(Some(changes))
}

/// The stored checkpoint, locked for this transaction (the first thing each one touches).
async fn lock_checkpoint(
    tx: &mut sqlx::PgConnection,
    name: &str,
) -> Result<Checkpoint, sqlx::Error> {
    let stored: Option<(i64, i64)> =
        sqlx::query_as("select xid, position from rm_checkpoints where name = $1 for update")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
    Ok(stored
        .map(|(xid, position)| Checkpoint { xid, position })
        .unwrap_or(Checkpoint::START))
}

async fn save_checkpoint(
    tx: &mut sqlx::PgConnection,
    name: &str,
    cp: Checkpoint,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into rm_checkpoints (name, xid, position) values ($1, $2, $3)
         on conflict (name) do update set xid = excluded.xid, position = excluded.position",
    )
    .bind(name)
    .bind(cp.xid)
    .bind(cp.position)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// What this writer knows the tables hold (it is their only writer while it holds the lease):
/// views, queue names and recent calls' details are read from the database once, not once per
/// batch. Dropped with the writer: a new lease, a failed transaction or a rebuild start afresh.
#[derive(Default)]
pub struct Cache {
    views: HashMap<(String, String), AgentView>,
    names: HashMap<String, HashMap<String, String>>,
    calls: HashMap<(String, String), CallInfo>,
}

impl Cache {
    /// Takes in what a committed transaction wrote.
    fn committed(
        &mut self,
        views: HashMap<(String, String), AgentView>,
        names: HashMap<String, HashMap<String, String>>,
        calls: HashMap<(String, String), CallInfo>,
    ) {
        self.views.extend(views);
        self.names.extend(names);
        // Details of calls are needed while they ring agents; keep the recent ones only.
        if self.calls.len() > 50_000 {
            self.calls.clear();
        }
        self.calls.extend(calls);
    }
}

/// One change of an agent's view, serialized once (for the tables and for NATS).
pub struct Change {
    pub tenant: String,
    pub agent: String,
    pub version: i64,
    pub json: String,
    /// The trace context of the event that made the change.
    pub trace: Option<String>,
}

/// Applies a batch in one transaction, recording checkpoint `to` (at or past the batch's last
/// event; an empty batch only moves it); returns every view change in order. With `expect`,
/// first checks that the stored checkpoint is still the one this writer left (else the read
/// model was rebuilt meanwhile: `None`, nothing written). The checkpoint row is the first thing
/// each transaction touches, which is what lets [`rebuild`] take the tables without deadlock.
async fn project(
    pool: &PgPool,
    name: &str,
    batch: &[RecordedEvent],
    expect: Option<Checkpoint>,
    to: Checkpoint,
    cache: &mut Cache,
) -> anyhow::Result<Option<Vec<Change>>> {
    let mut tx = cc_eventstore::begin_read_model(pool).await?;
    let stored = lock_checkpoint(&mut tx, name).await?;
    if expect.is_some_and(|e| e != stored) {
        return Ok(None);
    }
    // This transaction's views, names and calls (into the cache once committed).
    let mut views: HashMap<(String, String), AgentView> = HashMap::new();
    let mut names: HashMap<String, HashMap<String, String>> = HashMap::new();
    let mut calls: HashMap<(String, String), CallInfo> = HashMap::new();
    let mut changes = Vec::new();
    let mut parked = Vec::new();
    for e in batch {
        let mut fact = match fact_of(e) {
            Ok(Some(fact)) => fact,
            Ok(None) => continue,
            // Parked with the rows this batch writes and the checkpoint past it.
            Err(why) => {
                parked.extend(
                    cc_bus::parked::park(&mut *tx, PARKED_AS, e, Reason::Undecodable, &why).await?,
                );
                continue;
            }
        };
        let tenant = e.tenant().to_string();
        if let Fact::Call(call_event, info) = &mut fact {
            if let CallEvent::CallEnteredQueue {
                call,
                queue,
                caller,
                ..
            } = call_event
            {
                sqlx::query(
                    "insert into rm_call_info (tenant, call, queue, caller_number, caller_name, entered_at)
                     values ($1, $2, $3, $4, $5, $6) on conflict (tenant, call) do update set queue = excluded.queue",
                )
                .bind(&tenant)
                .bind(call.as_str())
                .bind(queue.as_str())
                .bind(&caller.number)
                .bind(&caller.name)
                .bind(e.recorded_at)
                .execute(&mut *tx)
                .await?;
                let info = CallInfo {
                    queue: queue.to_string(),
                    caller_number: caller.number.clone(),
                    caller_name: caller.name.clone(),
                    entered_at: e.recorded_at,
                    transferred_by_name: None,
                };
                calls.insert((tenant.clone(), call.clone()), info);
            } else if let CallEvent::OutboundCallStarted { call, number, .. } = call_event {
                // What a transfer of the outbound call shows the receiving agent: the number
                // dialled (an outbound call has no queue: '').
                sqlx::query(
                    "insert into rm_call_info (tenant, call, queue, caller_number, caller_name, entered_at)
                     values ($1, $2, '', $3, '', $4) on conflict (tenant, call) do nothing",
                )
                .bind(&tenant)
                .bind(call.as_str())
                .bind(number.as_str())
                .bind(e.recorded_at)
                .execute(&mut *tx)
                .await?;
                let info = CallInfo {
                    queue: String::new(),
                    caller_number: number.to_string(),
                    caller_name: String::new(),
                    entered_at: e.recorded_at,
                    transferred_by_name: None,
                };
                calls.insert((tenant.clone(), call.clone()), info);
            } else if let CallEvent::CallOffered { call, .. }
            | CallEvent::TransferStarted { call, .. } = call_event
            {
                let key = (tenant.clone(), call.clone());
                *info = match calls.get(&key).or_else(|| cache.calls.get(&key)) {
                    Some(known) => Some(known.clone()),
                    None => sqlx::query_as::<_, (String, String, String, chrono::DateTime<chrono::Utc>)>(
                        "select queue, caller_number, caller_name, entered_at from rm_call_info where tenant = $1 and call = $2",
                    )
                    .bind(&tenant)
                    .bind(call.as_str())
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(|(queue, caller_number, caller_name, entered_at)| CallInfo { queue, caller_number, caller_name, entered_at, transferred_by_name: None }),
                };
                // The receiving agent is told who transfers the call, by name.
                if let (CallEvent::TransferStarted { agent, .. }, Some(info)) =
                    (&*call_event, info.as_mut())
                {
                    let key = (tenant.clone(), agent.to_string());
                    info.transferred_by_name = match views.get(&key).or_else(|| cache.views.get(&key)) {
                        Some(v) => Some(v.display_name.clone()),
                        None => sqlx::query_scalar::<_, String>(
                            "select view->>'display_name' from rm_agents where tenant = $1 and agent = $2",
                        )
                        .bind(&tenant)
                        .bind(agent.as_str())
                        .fetch_optional(&mut *tx)
                        .await?,
                    };
                }
            }
        }
        if !names.contains_key(&tenant) {
            let known = match cache.names.get(&tenant) {
                Some(known) => known.clone(),
                None => {
                    let rows =
                        sqlx::query("select queue, name from rm_queue_names where tenant = $1")
                            .bind(&tenant)
                            .fetch_all(&mut *tx)
                            .await?;
                    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
                }
            };
            names.insert(tenant.clone(), known);
        }
        let agents: Vec<String> = match &fact {
            Fact::Account(AgentAccountEvent::AgentAccountCreated { agent, .. })
            | Fact::Account(AgentAccountEvent::AgentAccountUpdated { agent, .. })
            | Fact::Account(AgentAccountEvent::AgentAccountDisabled { agent })
            | Fact::Account(AgentAccountEvent::AgentAccountEnabled { agent }) => {
                vec![agent.to_string()]
            }
            Fact::Account(AgentAccountEvent::AgentPasswordChanged { .. }) => vec![],
            Fact::Session(s) => vec![session_agent(s).to_string()],
            Fact::Call(c, _) => c.agents().into_iter().map(|a| a.to_string()).collect(),
            Fact::Queue(QueueEvent::QueueConfigured { .. }) => vec![],
            Fact::Queue(QueueEvent::AgentAssignedToQueue { agent, .. })
            | Fact::Queue(QueueEvent::AgentUnassignedFromQueue { agent, .. }) => {
                vec![agent.to_string()]
            }
            Fact::Queue(QueueEvent::QueueCreated { queue, name }) => {
                sqlx::query(
                    "insert into rm_queue_names (tenant, queue, name) values ($1, $2, $3)
                     on conflict (tenant, queue) do update set name = excluded.name",
                )
                .bind(&tenant)
                .bind(queue.as_str())
                .bind(name)
                .execute(&mut *tx)
                .await?;
                names
                    .get_mut(&tenant)
                    .unwrap()
                    .insert(queue.to_string(), name.clone());
                let needle = serde_json::json!([{ "queue": queue.as_str() }]);
                let mut affected: Vec<String> = sqlx::query_scalar(
                    "select agent from rm_agents where tenant = $1 and (view->'assigned_queues' @> $2 or view->'queues' @> $2)",
                )
                .bind(&tenant)
                .bind(&needle)
                .fetch_all(&mut *tx)
                .await?;
                affected.extend(
                    views
                        .iter()
                        .filter(|((t, _), v)| {
                            *t == tenant
                                && v.assigned_queues.iter().any(|q| q.queue == queue.as_str())
                        })
                        .map(|((_, a), _)| a.clone()),
                );
                affected.sort();
                affected.dedup();
                affected
            }
        };
        for agent in agents {
            let key = (tenant.clone(), agent.clone());
            if !views.contains_key(&key) {
                let view = match cache.views.get(&key) {
                    Some(known) => known.clone(),
                    None => {
                        let stored: Option<serde_json::Value> = sqlx::query_scalar(
                            "select view from rm_agents where tenant = $1 and agent = $2",
                        )
                        .bind(&tenant)
                        .bind(&agent)
                        .fetch_optional(&mut *tx)
                        .await?;
                        stored
                            .and_then(|v| serde_json::from_value(v).ok())
                            .unwrap_or_else(|| agent_view::empty(&tenant, &agent, e.recorded_at))
                    }
                };
                views.insert(key.clone(), view);
            }
            let tenant_names = &names[&tenant];
            let view = views.get_mut(&key).unwrap();
            agent_view::apply(view, &fact, e.recorded_at, &|q| {
                tenant_names
                    .get(q)
                    .cloned()
                    .unwrap_or_else(|| q.to_string())
            });
            changes.push(Change {
                tenant: view.tenant.clone(),
                agent: view.agent.clone(),
                version: view.version,
                json: serde_json::to_string(view).expect("views serialize"),
                trace: e.metadata.traceparent.clone(),
            });
        }
    }
    if !changes.is_empty() {
        write_views(&mut tx, "insert into rm_agent_updates (tenant, agent, version, view)
             select t, a, v, j::jsonb from unnest($1::text[], $2::text[], $3::bigint[], $4::text[]) as u (t, a, v, j)
             on conflict do nothing", changes.iter()).await?;
        // Each agent's latest view: their last change in this batch.
        let mut latest: HashMap<(&str, &str), &Change> = HashMap::new();
        for c in &changes {
            latest.insert((c.tenant.as_str(), c.agent.as_str()), c);
        }
        write_views(&mut tx, "insert into rm_agents (tenant, agent, version, view)
             select t, a, v, j::jsonb from unnest($1::text[], $2::text[], $3::bigint[], $4::text[]) as u (t, a, v, j)
             on conflict (tenant, agent) do update set view = excluded.view, version = excluded.version", latest.into_values()).await?;
    }
    if to != stored {
        save_checkpoint(&mut tx, name, to).await?;
    }
    tx.commit().await?;
    parked.into_iter().for_each(Parked::committed);
    cache.committed(views, names, calls);
    Ok(Some(changes))
}

/// Writes views in one statement (`sql` takes tenants, agents, versions and views as arrays).
async fn write_views<'a>(
    tx: &mut sqlx::PgConnection,
    sql: &str,
    views: impl Iterator<Item = &'a Change>,
) -> Result<(), sqlx::Error> {
    let (mut t, mut a, mut v, mut j) = (vec![], vec![], vec![], vec![]);
    for c in views {
        t.push(c.tenant.as_str());
        a.push(c.agent.as_str());
        v.push(c.version);
        j.push(c.json.as_str());
    }
    sqlx::query(sql)
        .bind(&t)
        .bind(&a)
        .bind(&v)
        .bind(&j)
        .execute(tx)
        .await?;
    Ok(())
}

fn session_agent(e: &AgentSessionEvent) -> &cc_contracts::domain::AgentNumber {
    match e {
        AgentSessionEvent::AgentLoggedIn { agent, .. }
        | AgentSessionEvent::AgentLoggedOut { agent, .. }
        | AgentSessionEvent::AgentPaused { agent, .. }
        | AgentSessionEvent::AgentPauseReasonChanged { agent, .. }
        | AgentSessionEvent::AgentUnpaused { agent, .. }
        | AgentSessionEvent::AgentJoinedQueue { agent, .. }
        | AgentSessionEvent::AgentLeftQueue { agent, .. }
        | AgentSessionEvent::AgentDeviceWentOffline { agent, .. }
        | AgentSessionEvent::AgentDeviceCameOnline { agent, .. } => agent,
    }
}

/// The portal read model's tables (all in the default schema).
const TABLES: [&str; 5] = [
    "rm_checkpoints",
    "rm_agents",
    "rm_agent_updates",
    "rm_queue_names",
    "rm_call_info",
];

/// Rebuilds the portal read model from the whole store into fresh tables (schema
/// `portal_next`, filled by the same [`project`] as the live projection) while the old ones
/// serve, then takes the old tables exclusively, catches up, and swaps them in one transaction.
/// The live projection finds another checkpoint than the one it left and reloads. Each agent's
/// change history (for SSE resumption) keeps its last 100 changes.
pub async fn rebuild(
    pool: &PgPool,
    database_url: &str,
    store: &cc_eventstore::EventStore,
    mut progress: impl FnMut(crate::reporting::Progress) + Send,
) -> anyhow::Result<crate::reporting::Rebuilt> {
    use sqlx::Executor;
    let started = Instant::now();
    let mut ddl =
        "drop schema if exists portal_next cascade; create schema portal_next;".to_string();
    for t in TABLES {
        ddl.push_str(&format!(
            " create table portal_next.{t} (like public.{t} including all);"
        ));
    }
    pool.execute(ddl.as_str()).await?;
    let next = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .after_connect(|c, _| {
            Box::pin(async move {
                c.execute("set search_path to portal_next, public")
                    .await
                    .map(|_| ())
            })
        })
        .connect(database_url)
        .await?;
    let total = store.count(&ReadFilter::All).await? as u64;
    let mut cp = Checkpoint::START;
    let mut done = 0u64;
    let cache = tokio::sync::Mutex::new(Cache::default());
    let mut last_report = Instant::now();
    let catch_up = |cp: Checkpoint| {
        let next = next.clone();
        let cache = &cache;
        async move {
            let mut cp = cp;
            let mut n = 0u64;
            loop {
                let batch = store.read_all(&ReadFilter::All, cp, 1000).await?;
                let Some(last) = batch.last() else {
                    return anyhow::Ok((cp, n));
                };
                let to = last.checkpoint();
                project(&next, NAME, &batch, None, to, &mut *cache.lock().await).await?;
                n += batch.len() as u64;
                cp = last.checkpoint();
            }
        }
    };
    loop {
        let batch = store.read_all(&ReadFilter::All, cp, 1000).await?;
        let Some(last) = batch.last() else { break };
        let to = last.checkpoint();
        project(&next, NAME, &batch, None, to, &mut *cache.lock().await).await?;
        done += batch.len() as u64;
        cp = last.checkpoint();
        if last_report.elapsed() >= Duration::from_secs(1) {
            progress(crate::reporting::Progress {
                done,
                total,
                elapsed: started.elapsed(),
            });
            last_report = Instant::now();
        }
    }
    let mut tx = pool.begin().await?;
    let lock = TABLES
        .iter()
        .map(|t| format!("public.{t}"))
        .collect::<Vec<_>>()
        .join(", ");
    tx.execute(format!("lock table {lock} in access exclusive mode").as_str())
        .await?;
    let (cp, caught) = catch_up(cp).await?;
    done += caught;
    // Every partition's leader goes on from where the rebuild stopped.
    let partitions: i32 =
        sqlx::query_scalar("select coalesce(max(partitions), 1) from es_partitioning")
            .fetch_one(pool)
            .await?;
    if partitions > 1 {
        sqlx::query(
            "insert into portal_next.rm_checkpoints (name, xid, position)
             select $1 || '/p' || i, $2, $3 from generate_series(0, $4 - 1) i
             on conflict (name) do update set xid = excluded.xid, position = excluded.position",
        )
        .bind(NAME)
        .bind(cp.xid)
        .bind(cp.position)
        .bind(partitions)
        .execute(&next)
        .await?;
        // The whole store's row is nobody's with partitions.
        sqlx::query("delete from portal_next.rm_checkpoints where name = $1")
            .bind(NAME)
            .execute(&next)
            .await?;
    }
    next.execute("delete from portal_next.rm_agent_updates u using portal_next.rm_agents a where u.tenant = a.tenant and u.agent = a.agent and u.version <= a.version - 100").await?;
    next.close().await;
    let mut swap = "create schema portal_old;".to_string();
    for t in TABLES {
        swap.push_str(&format!(" alter table public.{t} set schema portal_old; alter table portal_next.{t} set schema public;"));
    }
    swap.push_str(" drop schema portal_old cascade; drop schema portal_next cascade;");
    tx.execute(swap.as_str()).await?;
    tx.commit().await?;
    let rows: i64 = sqlx::query_scalar("select count(*) from rm_agents")
        .fetch_one(pool)
        .await?;
    progress(crate::reporting::Progress {
        done,
        total: total.max(done),
        elapsed: started.elapsed(),
    });
    Ok(crate::reporting::Rebuilt {
        events: done,
        rows: rows as usize,
        elapsed: started.elapsed(),
        generation: 0,
    })
}
