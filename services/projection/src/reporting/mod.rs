//! The reporting read models for analysts (schema `reporting`, see `docs/reporting.md`):
//! call history with every segment, agent state intervals and logins, and the views over them
//! (daily agent summaries, queue statistics per 15 minutes).
//!
//! Live: one replica (a lease) folds the store's events ([`fold::Reporter`]) and upserts the
//! rows each batch changed, with its checkpoint, in one transaction. Its in-memory state (open
//! calls, agents' current states) is saved as a snapshot now and then (every 50,000 events or
//! 60 s, between batches) and rebuilt on start from the newest snapshot plus the events after
//! it up to the checkpoint (or from the first event without a usable snapshot), without
//! writing.
//!
//! Rebuild ([`rebuild`]): folds the whole store into a fresh schema `reporting_next` while
//! `reporting` keeps serving, then, holding the live writer's checkpoint row, catches up and
//! renames the schemas in one transaction. The live projection sees a new `generation` and
//! reloads.

pub mod fold;
pub mod tables;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cc_core::Partition;
use cc_eventstore::{
    Checkpoint, EventStore, Lease, ReadFilter, RecordedEvent, Snapshots, Subscription,
};
use cc_runtime::Context;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use cc_bus::parked::{Parked, Reason};
use fold::{Dirty, Reporter};

pub const SCHEMA: &str = "reporting";
/// The live fold's snapshots in `es_snapshots` (a cache: see [`cc_eventstore::Snapshots`]).
const SNAPSHOT_NAME: &str = "reporting";
/// The fold's state format; the tables' generation is added to it, so that a rebuild (new
/// tables, perhaps of a new fold) never resumes from a snapshot of the old ones. A build that
/// changes what [`Reporter`] means names a new one.
const SNAPSHOT_FORMAT: &str = "reporting/1";
const NEXT: &str = "reporting_next";
const BATCH: i64 = 5000;

/// How long a partition's fold lets the store move on past other partitions' events before it
/// records that it has read that far.
const IDLE_PROGRESS: Duration = Duration::from_millis(50);

/// Runs the reporting projection: with `CC_PARTITIONS` above 1, one leader per partition, each
/// folding its tenants' events and writing their rows with a checkpoint row of its own
/// (`checkpoint.id` = the partition + 1), the replicas sharing the partitions.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let lead_one = |p: Partition, stop: CancellationToken| {
        let ctx = ctx.clone();
        async move { lead(&ctx, p, stop).await }
    };
    cc_runtime::partitions::lead(
        &ctx,
        "reporting projection",
        "reporting-projection",
        "cc-projection:reporting",
        lead_one,
    )
    .await;
    Ok(())
}

/// Partition `p`'s row of the `checkpoint` table (1 for the whole store).
fn row_of(p: Partition) -> i32 {
    p.index as i32 + 1
}

/// The schema's checkpoint row `row`: (generation, checkpoint), creating the schema when there
/// is none, and the row (at the first event, of the tables' generation) when a partition's is
/// missing.
async fn checkpoint(pool: &PgPool, row: i32) -> anyhow::Result<(i64, Checkpoint)> {
    let mut conn = pool.acquire().await?;
    sqlx::query("select pg_advisory_lock(hashtext('cc-reporting-schema'))")
        .execute(&mut *conn)
        .await?;
    let exists: bool =
        sqlx::query_scalar("select exists (select 1 from pg_namespace where nspname = $1)")
            .bind(SCHEMA)
            .fetch_one(&mut *conn)
            .await?;
    if !exists {
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        tables::create(&mut tx, SCHEMA).await?;
        sqlx::query(&format!(
            "insert into {SCHEMA}.checkpoint values (1, 1, 0, 0)"
        ))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    } else {
        tables::add_new_columns(&mut conn, SCHEMA).await?;
    }
    sqlx::query(&format!(
        "insert into {SCHEMA}.checkpoint (id, generation, xid, position)
         select $1, max(generation), 0, 0 from {SCHEMA}.checkpoint on conflict (id) do nothing"
    ))
    .bind(row)
    .execute(&mut *conn)
    .await?;
    sqlx::query("select pg_advisory_unlock(hashtext('cc-reporting-schema'))")
        .execute(&mut *conn)
        .await?;
    let (g, xid, position): (i64, i64, i64) = sqlx::query_as(&format!(
        "select generation, xid, position from {SCHEMA}.checkpoint where id = $1"
    ))
    .bind(row)
    .fetch_one(&mut *conn)
    .await?;
    Ok((g, Checkpoint { xid, position }))
}

fn after(e: &RecordedEvent, cp: Checkpoint) -> bool {
    (e.xid, e.position) > (cp.xid, cp.position)
}

/// Folds the events up to `upto` (all of them when `None`), calling `each` after every batch.
async fn fold_until(
    store: &EventStore,
    filter: &ReadFilter,
    r: &mut Reporter,
    from: Checkpoint,
    upto: Option<Checkpoint>,
    each: &mut (dyn FnMut(&mut Reporter, usize) + Send),
) -> anyhow::Result<Checkpoint> {
    let mut cur = from;
    loop {
        let batch = store.read_all(filter, cur, BATCH).await?;
        let Some(last) = batch.last() else {
            return Ok(cur);
        };
        let next = last.checkpoint();
        let mut n = 0;
        for e in &batch {
            if upto.is_some_and(|u| after(e, u)) {
                let done = upto.expect("checked");
                each(r, n);
                return Ok(done);
            }
            r.apply(e);
            n += 1;
        }
        each(r, n);
        cur = next;
        if (batch.len() as i64) < BATCH && upto.is_none() {
            return Ok(cur);
        }
    }
}

async fn lead(ctx: &Context, part: Partition, stop: CancellationToken) -> anyhow::Result<()> {
    // Known (at 0) to the metrics before the lease is: a lease nobody holds is visible.
    let leader = ctx.metrics.leader_named(&part.name("reporting_projection"));
    let Some(mut lease) = Lease::try_acquire(
        &ctx.config.database_url,
        &part.name("cc-projection:reporting"),
    )
    .await?
    else {
        return Ok(());
    };
    let _holding = leader.took(lease.fence().epoch);
    let (row, filter) = (row_of(part), ReadFilter::All.in_partition(part));
    let (generation, cp) = checkpoint(&ctx.pool, row).await?;
    leader.applied(cp);
    let started = Instant::now();
    // The newest snapshot of the fold this build can use (of these tables' generation, not
    // ahead of them), then the events after it up to the tables' checkpoint.
    let snapshots = Snapshots::new(
        ctx.pool.clone(),
        &part.name(SNAPSHOT_NAME),
        &format!("{SNAPSHOT_FORMAT}/g{generation}"),
    )
    .every(
        ctx.config.snapshot_every_events,
        Duration::from_secs(ctx.config.snapshot_every_secs),
    );
    let (mut r, from, mut events) = match snapshots.load::<Reporter>().await {
        Ok(Some(s)) if s.checkpoint <= cp => (s.state, s.checkpoint, s.events),
        Ok(_) => (Reporter::default(), Checkpoint::START, 0),
        Err(error) => {
            tracing::warn!(%error, "cannot read the reporting fold's snapshot; replaying the store");
            (Reporter::default(), Checkpoint::START, 0)
        }
    };
    let mut replayed = 0i64;
    fold_until(
        &ctx.store,
        &filter,
        &mut r,
        from,
        Some(cp),
        &mut |r: &mut Reporter, n| {
            replayed += n as i64;
            drop(r.take_dirty())
        },
    )
    .await?;
    events += replayed;
    leader.caught_up(replayed, started.elapsed());
    if replayed > 0 {
        if let Err(error) = snapshots.save(&r, cp, events).await {
            tracing::warn!(%error, "cannot save the reporting fold's snapshot");
        }
    }
    let mut last_snapshot = (Instant::now(), 0u64);
    let mut snapshot_tick = tokio::time::interval(Duration::from_secs(1));
    tracing::info!(generation, partition = %part, checkpoint = %cp, replayed, open_calls = r.open_calls(), ms = started.elapsed().as_millis() as u64, "reporting projection lease taken");
    // Reports need not be up to the millisecond: a batch at most every 200 ms.
    let mut r_checkpoint = cp;
    let mut sub = Subscription::new(ctx.store.clone(), filter.clone(), cp)
        .await?
        .with_batch_size(2000)
        .with_min_interval(std::time::Duration::from_millis(200))
        // A partition's only: the whole store's has every event for its own.
        .with_idle_progress(IDLE_PROGRESS);
    loop {
        let batch = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            b = sub.next_batch() => b?,
            // No batch for a while: the last ones folded are saved once their time is up.
            // The lease is checked then too: a quiet partition's leader that lost it stops.
            _ = snapshot_tick.tick() => {
                snapshot_if_due(&snapshots, &r, r_checkpoint, events, &mut last_snapshot).await;
                lease.check().await?;
                continue;
            }
        };
        // As far as the subscription read (past other partitions' events too).
        let to = sub.checkpoint();
        if batch.is_empty() {
            if to > r_checkpoint {
                if !write(&ctx.pool, generation, row, &Dirty::default(), to).await? {
                    tracing::info!(old = generation, "reporting tables were rebuilt; reloading");
                    return Ok(());
                }
                r_checkpoint = to;
                leader.applied(to);
            }
            continue;
        }
        let before = r_checkpoint;
        for e in &batch {
            r.apply(e);
        }
        let dirty = r.take_dirty();
        let written = match write(&ctx.pool, generation, row, &dirty, to).await {
            Err(e) if cc_bus::parked::is_data_error(&e) => {
                tracing::warn!(error = %format!("{e:#}"), "a batch of the reporting projection does not fit its tables; applying it event by event to park the one at fault");
                // The fold took in the whole batch: fold again up to what is written, then
                // one event per transaction.
                r = Reporter::default();
                fold_until(
                    &ctx.store,
                    &filter,
                    &mut r,
                    Checkpoint::START,
                    Some(before),
                    &mut |r: &mut Reporter, _| drop(r.take_dirty()),
                )
                .await?;
                let mut written = Some(vec![]);
                for e in &batch {
                    r.apply(e);
                    let one = r.take_dirty();
                    match write(&ctx.pool, generation, row, &one, e.checkpoint()).await {
                        Ok(true) => written.as_mut().expect("not rebuilt").push(one),
                        Ok(false) => {
                            written = None;
                            break;
                        }
                        Err(err) if cc_bus::parked::is_data_error(&err) => {
                            if !park_refused(&ctx.pool, generation, row, e, &format!("{err:#}"))
                                .await?
                            {
                                written = None;
                                break;
                            }
                        }
                        Err(err) => return Err(err),
                    }
                }
                // Past the batch's last event, as far as the subscription read.
                let last = batch.last().expect("not empty").checkpoint();
                if written.is_some()
                    && to != last
                    && !write(&ctx.pool, generation, row, &Dirty::default(), to).await?
                {
                    written = None;
                }
                written
            }
            Ok(true) => Some(vec![dirty]),
            Ok(false) => None,
            Err(e) => return Err(e),
        };
        let Some(written) = written else {
            // Rebuilt meanwhile: start again from the new tables' checkpoint.
            tracing::info!(old = generation, "reporting tables were rebuilt; reloading");
            return Ok(());
        };
        r_checkpoint = to;
        leader.applied(r_checkpoint);
        // The fold now stands exactly on what is written: a snapshot of it, now and then.
        events += batch.len() as i64;
        last_snapshot.1 += batch.len() as u64;
        snapshot_if_due(&snapshots, &r, r_checkpoint, events, &mut last_snapshot).await;
        // The supervisors' queue figures of today changed: tell the portals (core NATS, no
        // payload; they read the figures again from the rows just written).
        let tenants: std::collections::BTreeSet<String> =
            written.iter().flat_map(queue_figures_changed).collect();
        for tenant in tenants {
            let subject = ctx.bus.subjects.view(&tenant, "queues", "today");
            ctx.bus.client.publish(subject, "".into()).await?;
        }
        lease.check().await?;
    }
}

/// Saves the fold (standing on `at`, `events` folded) when `last` (the last save's time, the
/// events folded since) says it is due. A failed save is logged and tried again later.
async fn snapshot_if_due(
    snapshots: &Snapshots,
    r: &Reporter,
    at: Checkpoint,
    events: i64,
    last: &mut (Instant, u64),
) {
    if !snapshots.due(last.1, last.0.elapsed()) {
        return;
    }
    match snapshots.save(r, at, events).await {
        Ok(_) => *last = (Instant::now(), 0),
        Err(error) => {
            tracing::warn!(%error, "cannot save the reporting fold's snapshot");
            last.0 = Instant::now();
        }
    }
}

/// The live projection as a consumer, in `bus_parked`.
const PARKED_AS: &str = "reporting-projection";

/// Writes a batch's rows, the events of it that do not decode (parked) and the checkpoint
/// after it in one transaction. `false`: the tables were rebuilt meanwhile, nothing written.
async fn write(
    pool: &PgPool,
    generation: i64,
    row: i32,
    dirty: &Dirty,
    cp: Checkpoint,
) -> anyhow::Result<bool> {
    let mut tx = cc_eventstore::begin_read_model(pool).await?;
    if !same_generation(&mut tx, generation, row).await? {
        return Ok(false);
    }
    tables::write_dirty(&mut tx, SCHEMA, dirty).await?;
    let mut parked = Vec::new();
    for (e, why) in &dirty.undecodable {
        parked.extend(park(&mut tx, e, Reason::Undecodable, why).await?);
    }
    set_checkpoint(&mut tx, row, cp).await?;
    tx.commit().await?;
    parked.into_iter().for_each(Parked::committed);
    Ok(true)
}

/// Parks an event whose rows the tables refuse (a constraint, a value out of range) and moves
/// the checkpoint past it, in one transaction: retrying it would stop reporting for every
/// tenant. `false`: the tables were rebuilt meanwhile.
async fn park_refused(
    pool: &PgPool,
    generation: i64,
    row: i32,
    e: &RecordedEvent,
    error: &str,
) -> anyhow::Result<bool> {
    let mut tx = cc_eventstore::begin_read_model(pool).await?;
    if !same_generation(&mut tx, generation, row).await? {
        return Ok(false);
    }
    let parked = park(&mut tx, e, Reason::Refused, error).await?;
    set_checkpoint(&mut tx, row, e.checkpoint()).await?;
    tx.commit().await?;
    parked.into_iter().for_each(Parked::committed);
    Ok(true)
}

async fn park(
    conn: &mut PgConnection,
    e: &RecordedEvent,
    reason: Reason,
    error: &str,
) -> Result<Option<Parked>, sqlx::Error> {
    cc_bus::parked::park(conn, PARKED_AS, e, reason, error).await
}

/// Locks checkpoint row `row` and says whether the tables are still of `generation`.
async fn same_generation(
    conn: &mut PgConnection,
    generation: i64,
    row: i32,
) -> Result<bool, sqlx::Error> {
    let now: Option<i64> = sqlx::query_scalar(&format!(
        "select generation from {SCHEMA}.checkpoint where id = $1 for update"
    ))
    .bind(row)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(now == Some(generation))
}

async fn set_checkpoint(
    conn: &mut PgConnection,
    row: i32,
    cp: Checkpoint,
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "update {SCHEMA}.checkpoint set xid = $1, position = $2 where id = $3"
    ))
    .bind(cp.xid)
    .bind(cp.position)
    .bind(row)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The tenants whose queue figures (waits in a queue, a queue's service-level threshold) a
/// batch changed.
fn queue_figures_changed(d: &Dirty) -> std::collections::BTreeSet<String> {
    d.segments
        .iter()
        .filter(|s| s.kind == "queue")
        .map(|s| s.tenant.clone())
        .chain(d.queues.iter().map(|q| q.tenant.clone()))
        .collect()
}

/// Rows by key: the last version of each row a fold produced.
#[derive(Default)]
struct Rows {
    tenants: HashMap<String, fold::TenantRow>,
    queues: HashMap<(String, String), fold::QueueRow>,
    calls: HashMap<(String, String), fold::CallRow>,
    segments: HashMap<(String, String, i64), fold::SegmentRow>,
    states: HashMap<(String, String, i64), fold::StateRow>,
    logins: HashMap<(String, String), fold::LoginRow>,
    undecodable: Vec<(RecordedEvent, String)>,
}

impl Rows {
    fn add(&mut self, d: Dirty) {
        self.undecodable.extend(d.undecodable);
        for r in d.tenants {
            self.tenants.insert(r.tenant.clone(), r);
        }
        for r in d.queues {
            self.queues.insert((r.tenant.clone(), r.queue.clone()), r);
        }
        for r in d.calls {
            self.calls.insert((r.tenant.clone(), r.call.clone()), r);
        }
        for r in d.segments {
            self.segments
                .insert((r.tenant.clone(), r.call.clone(), r.seq), r);
        }
        for r in d.states {
            self.states
                .insert((r.tenant.clone(), r.agent.clone(), r.seq), r);
        }
        for r in d.logins {
            self.logins
                .insert((r.tenant.clone(), r.login_id.clone()), r);
        }
    }

    fn into_dirty(self) -> Dirty {
        Dirty {
            tenants: self.tenants.into_values().collect(),
            queues: self.queues.into_values().collect(),
            calls: self.calls.into_values().collect(),
            segments: self.segments.into_values().collect(),
            states: self.states.into_values().collect(),
            logins: self.logins.into_values().collect(),
            undecodable: self.undecodable,
        }
    }

    async fn insert(self, conn: &mut PgConnection, schema: &str) -> Result<usize, sqlx::Error> {
        let d = self.into_dirty();
        tables::insert(conn, schema, &d.tenants).await?;
        tables::insert(conn, schema, &d.queues).await?;
        tables::insert(conn, schema, &d.calls).await?;
        tables::insert(conn, schema, &d.segments).await?;
        tables::insert(conn, schema, &d.states).await?;
        tables::insert(conn, schema, &d.logins).await?;
        // Not in a transaction: each row is written at once.
        for (e, why) in &d.undecodable {
            let parked = park(conn, e, Reason::Undecodable, why).await?;
            parked.into_iter().for_each(Parked::committed);
        }
        Ok(d.rows())
    }
}

/// How far a rebuild is.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
    pub elapsed: Duration,
}

impl Progress {
    pub fn rate(&self) -> f64 {
        self.done as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rate = self.rate();
        let left = if rate > 0.0 {
            self.total.saturating_sub(self.done) as f64 / rate
        } else {
            0.0
        };
        write!(
            f,
            "{}/{} events, {:.0} events/s, {:.0} s left",
            self.done, self.total, rate, left
        )
    }
}

/// What a rebuild did.
#[derive(Debug, Clone, Copy)]
pub struct Rebuilt {
    pub events: u64,
    pub rows: usize,
    pub elapsed: Duration,
    pub generation: i64,
}

/// Rebuilds the reporting tables from the whole store into a fresh schema, then swaps it in
/// (see the module docs). `progress` is called about once a second.
pub async fn rebuild(
    pool: &PgPool,
    store: &EventStore,
    mut progress: impl FnMut(Progress) + Send,
) -> anyhow::Result<Rebuilt> {
    let started = Instant::now();
    checkpoint(pool, 1).await?; // the live schema exists (the swap locks its checkpoint)
    let total = store.count(&ReadFilter::All).await? as u64;
    let mut r = Reporter::default();
    let mut rows = Rows::default();
    let mut done = 0u64;
    let mut last_report = Instant::now();
    let cp = fold_until(
        store,
        &ReadFilter::All,
        &mut r,
        Checkpoint::START,
        None,
        &mut |r: &mut Reporter, n| {
            rows.add(r.take_dirty());
            done += n as u64;
            if last_report.elapsed() >= Duration::from_secs(1) {
                progress(Progress {
                    done,
                    total,
                    elapsed: started.elapsed(),
                });
                last_report = Instant::now();
            }
        },
    )
    .await?;
    let mut conn = pool.acquire().await?;
    tables::create(&mut conn, NEXT).await?;
    let mut written = rows.insert(&mut conn, NEXT).await?;
    progress(Progress {
        done,
        total: total.max(done),
        elapsed: started.elapsed(),
    });

    // The swap: hold the live writer, catch up with what was appended meanwhile, rename.
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    // The live writer locks the checkpoint first in each of its transactions: taking the table
    // exclusively here waits for the one in flight and holds the next before it touches
    // anything (a row lock would deadlock with the schema swap below).
    sqlx::query(&format!(
        "lock table {SCHEMA}.checkpoint in access exclusive mode"
    ))
    .execute(&mut *tx)
    .await?;
    let (old_generation,): (i64,) =
        sqlx::query_as(&format!("select max(generation) from {SCHEMA}.checkpoint"))
            .fetch_one(&mut *tx)
            .await?;
    let mut tail = Rows::default();
    let mut caught_up = 0u64;
    let cp = fold_until(
        store,
        &ReadFilter::All,
        &mut r,
        cp,
        None,
        &mut |r: &mut Reporter, n| {
            tail.add(r.take_dirty());
            caught_up += n as u64;
        },
    )
    .await?;
    let d = tail.into_dirty();
    written += d.rows();
    tables::write_dirty(&mut tx, NEXT, &d).await?;
    let generation = old_generation + 1;
    // A row for every partition's leader (one for the whole store), each going on from here.
    let partitions: i32 =
        sqlx::query_scalar("select coalesce(max(partitions), 1) from es_partitioning")
            .fetch_one(&mut *tx)
            .await?;
    sqlx::query(&format!(
        "insert into {NEXT}.checkpoint select i, $1, $2, $3 from generate_series(1, $4) i"
    ))
    .bind(generation)
    .bind(cp.xid)
    .bind(cp.position)
    .bind(partitions)
    .execute(&mut *tx)
    .await?;
    let swap = format!("alter schema {SCHEMA} rename to reporting_old; alter schema {NEXT} rename to {SCHEMA}; drop schema reporting_old cascade;");
    sqlx::Executor::execute(&mut *tx, swap.as_str()).await?;
    tx.commit().await?;
    Ok(Rebuilt {
        events: done + caught_up,
        rows: written,
        elapsed: started.elapsed(),
        generation,
    })
}
