use std::sync::Arc;
use tracing::Instrument;

use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::{AppendResult, Checkpoint, ExpectedVersion, Metadata, NewEvent, RecordedEvent};
use crate::{StreamName, Upcasters};

/// Why an append wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("stream {stream} is at version {actual}, expected {expected:?}")]
    Conflict {
        stream: String,
        expected: ExpectedVersion,
        actual: i64,
    },
    #[error("event ids of this append are already used by other events")]
    EventIdReused,
    #[error("an append needs at least one event")]
    Empty,
    #[error("event metadata names tenant {metadata:?} but the stream belongs to {stream:?}")]
    TenantMismatch { stream: String, metadata: String },
    #[error("lease {lease} was taken over (epoch {epoch} is past): this holder may not append")]
    Fenced { lease: String, epoch: i64 },
    #[error("event store database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// Which events a catch-up read returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadFilter {
    All,
    Category(String),
    /// The events of the tenants of one partition ([`cc_core::partition`]).
    Partition(cc_core::Partition),
    /// One category's events of one partition's tenants.
    CategoryInPartition(String, cc_core::Partition),
}

impl ReadFilter {
    /// `filter` narrowed to partition `p` (the same filter when the store is not partitioned).
    pub fn in_partition(self, p: cc_core::Partition) -> ReadFilter {
        if p.count <= 1 {
            return self;
        }
        match self {
            ReadFilter::All | ReadFilter::Partition(_) => ReadFilter::Partition(p),
            ReadFilter::Category(c) | ReadFilter::CategoryInPartition(c, _) => {
                ReadFilter::CategoryInPartition(c, p)
            }
        }
    }
}

/// The event store. Cheap to clone.
#[derive(Clone)]
pub struct EventStore {
    pool: PgPool,
    upcasters: Upcasters,
    notifier: Arc<Notifier>,
    /// The reader shared by this process's caught-up subscriptions.
    pub(crate) tail: Arc<crate::tail::Tail>,
}

/// Sends the subscribers' wake-up hint after commits, coalescing a burst of appends into one
/// NOTIFY (sent from its own short transaction, so it never holds up a writer's commit).
#[derive(Default)]
struct Notifier {
    wake: tokio::sync::Notify,
    started: std::sync::OnceLock<()>,
}

impl Notifier {
    fn hint(&self, pool: &PgPool, self_arc: &Arc<Notifier>) {
        self.started.get_or_init(|| {
            let (pool, me) = (pool.clone(), self_arc.clone());
            tokio::spawn(async move {
                loop {
                    me.wake.notified().await;
                    if pool.is_closed() {
                        return;
                    }
                    if let Err(e) = sqlx::query("select pg_notify('es_events', '')").execute(&pool).await {
                        tracing::debug!(error = %e, "could not send the wake-up hint (subscribers fall back to polling)");
                    }
                    // At most one hint per 2 ms: under load many commits share one.
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                }
            });
        });
        self.wake.notify_one();
    }
}

/// One append in one statement (see sql/0003_append_statement.sql).
const APPEND: &str = "\
with cur as (select coalesce(max(version), 0) as v from es_events where stream = $1),
ins as (
    insert into es_events (event_id, tenant, stream, category, stream_id, version, event_type, schema_version, data, metadata)
    select u.id, $2, $1, $3, $4, cur.v + u.ord, u.typ, u.sv, u.d, u.m
      from cur, unnest($6::uuid[], $7::text[], $8::int4[], $9::jsonb[], $10::jsonb[]) with ordinality as u (id, typ, sv, d, m, ord)
     where $5::int8 is null or $5::int8 = cur.v
     order by u.ord
    returning position, version
)
select (select v from cur), coalesce((select array_agg(position order by version) from ins), '{}'::int8[])";

/// [`APPEND`] for the holder of a lease, in one statement: the lease's epoch row is locked
/// `FOR SHARE` (until the statement's own commit) and the events go in only while it is `$12`.
/// A new holder raising the epoch waits for the lock, so it reads the store after this append;
/// or it raised it first, and then the lock returns the new epoch (read committed follows the
/// update) and nothing goes in. Returns the epoch found third (null: no such lease).
const APPEND_FENCED: &str = "\
with fence as (select epoch from es_lease_epochs where name = $11 for share),
cur as (select coalesce(max(version), 0) as v from es_events where stream = $1),
ins as (
    insert into es_events (event_id, tenant, stream, category, stream_id, version, event_type, schema_version, data, metadata)
    select u.id, $2, $1, $3, $4, cur.v + u.ord, u.typ, u.sv, u.d, u.m
      from cur, unnest($6::uuid[], $7::text[], $8::int4[], $9::jsonb[], $10::jsonb[]) with ordinality as u (id, typ, sv, d, m, ord)
     where ($5::int8 is null or $5::int8 = cur.v)
       and exists (select 1 from fence where epoch = $12::int8)
     order by u.ord
    returning position, version
)
select (select v from cur), coalesce((select array_agg(position order by version) from ins), '{}'::int8[]),
       (select epoch from fence)";

/// A row of partition `$4` of `$5` (PostgreSQL's reading of `cc_core::partition::of`).
const IN_PARTITION: &str = "cc_partition(tenant, $5) = $4";

const COLUMNS: &str = "position, xid, event_id, tenant, category, stream_id, version, event_type, \
                       schema_version, data, metadata, recorded_at";

impl EventStore {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            upcasters: Upcasters::default(),
            notifier: Arc::default(),
            tail: Arc::default(),
        }
    }

    /// Wakes subscriptions (of every process) to read new events. Appends do it themselves;
    /// call it after committing a transaction that used [`EventStore::append_in`].
    pub fn notify_committed(&self) {
        self.notifier.hint(&self.pool, &self.notifier);
    }

    /// The store with these upcasters applied on every read.
    pub fn with_upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = upcasters;
        // Its events read differently: a shared reader of its own.
        self.tail = Arc::default();
        self
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Appends `events` to `stream` atomically if the stream is at `expected`.
    pub async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<AppendResult, AppendError> {
        let span = append_span(stream, events);
        async {
            let traced = traced(events);
            let events = traced.as_deref().unwrap_or(events);
            let r = self.append_with(None, stream, expected, events).await?;
            if !r.duplicate {
                self.notify_committed();
            }
            Ok(r)
        }
        .instrument(span)
        .await
    }

    /// As [`EventStore::append`], for the holder of a lease: commits only while `fence` is the
    /// lease's epoch, else [`AppendError::Fenced`] (a new holder took the lease). See
    /// [`crate::Lease`].
    pub async fn append_fenced(
        &self,
        fence: &crate::Fence,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<AppendResult, AppendError> {
        let span = append_span(stream, events);
        async {
            let traced = traced(events);
            let events = traced.as_deref().unwrap_or(events);
            // One statement, one round trip: the fence and the append commit together.
            let r = self
                .append_with(Some(fence), stream, expected, events)
                .await?;
            if !r.duplicate {
                self.notify_committed();
            }
            Ok(r)
        }
        .instrument(span)
        .await
    }

    /// As [`EventStore::append`], inside the caller's transaction: a service can update its
    /// own state tables and append the events that record the change, all or nothing.
    /// Call [`EventStore::notify_committed`] after the commit.
    pub async fn append_in(
        &self,
        tx: &mut sqlx::PgConnection,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<AppendResult, AppendError> {
        let span = append_span(stream, events);
        let traced = span.in_scope(|| traced(events));
        let events = traced.as_deref().unwrap_or(events);
        // A unique violation aborts the caller's transaction: report it, never retry.
        match self
            .try_append(true, None, tx, stream, expected, events)
            .instrument(span)
            .await
        {
            Ok(r) if r.duplicate => Err(AppendError::EventIdReused),
            Err(AppendError::Database(sqlx::Error::Database(db)))
                if db.code().as_deref() == Some("23505")
                    && db.constraint() == Some("es_events_event_id_key") =>
            {
                Err(AppendError::EventIdReused)
            }
            Err(AppendError::Database(sqlx::Error::Database(db)))
                if db.code().as_deref() == Some("23505") =>
            {
                let actual = self.stream_version(stream).await?;
                Err(AppendError::Conflict {
                    stream: stream.key(),
                    expected,
                    actual,
                })
            }
            other => other,
        }
    }

    async fn append_with(
        &self,
        fence: Option<&crate::Fence>,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<AppendResult, AppendError> {
        let mut attempt = 0;
        loop {
            match self
                .try_append(false, fence, &self.pool, stream, expected, events)
                .await
            {
                Err(AppendError::Database(sqlx::Error::Database(db)))
                    if db.code().as_deref() == Some("23505") =>
                {
                    // Another writer took the same version (or, for a retried append, the same
                    // event ids) a moment earlier and has committed now.
                    attempt += 1;
                    if (expected == ExpectedVersion::Any
                        || db.constraint() == Some("es_events_event_id_key"))
                        && attempt < 10
                    {
                        continue;
                    }
                    let actual = self.stream_version(stream).await?;
                    return Err(AppendError::Conflict {
                        stream: stream.key(),
                        expected,
                        actual,
                    });
                }
                other => return other,
            }
        }
    }

    async fn try_append<'e, E: sqlx::PgExecutor<'e>>(
        &self,
        in_transaction: bool,
        fence: Option<&crate::Fence>,
        executor: E,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<AppendResult, AppendError> {
        if events.is_empty() {
            return Err(AppendError::Empty);
        }
        if let Some(e) = events.iter().find(|e| e.metadata.tenant != stream.tenant()) {
            return Err(AppendError::TenantMismatch {
                stream: stream.key(),
                metadata: e.metadata.tenant.clone(),
            });
        }
        let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
        let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        let versions: Vec<i32> = events.iter().map(|e| e.schema_version).collect();
        let data: Vec<Json<&Value>> = events.iter().map(|e| Json(&e.data)).collect();
        let metadata: Vec<Json<&Metadata>> = events.iter().map(|e| Json(&e.metadata)).collect();
        let row = sqlx::query(if fence.is_some() {
            APPEND_FENCED
        } else {
            APPEND
        })
        .bind(stream.key())
        .bind(stream.tenant())
        .bind(stream.category())
        .bind(stream.id())
        .bind(expected.as_sql())
        .bind(&ids)
        .bind(&types)
        .bind(&versions)
        .bind(&data)
        .bind(&metadata);
        let row = match fence {
            Some(f) => row.bind(&f.name).bind(f.epoch),
            None => row,
        }
        .fetch_one(executor)
        .await;
        let row = match row {
            Ok(row) => row,
            Err(sqlx::Error::Database(db))
                if db.code().as_deref() == Some("23505")
                    && db.constraint() == Some("es_events_event_id_key") =>
            {
                if in_transaction {
                    return Err(AppendError::Database(sqlx::Error::Database(db)));
                }
                return self.previous_append(stream, &ids).await;
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(f) = fence {
            let epoch: Option<i64> = row.get(2);
            if epoch != Some(f.epoch) {
                return Err(AppendError::Fenced {
                    lease: f.name.clone(),
                    epoch: f.epoch,
                });
            }
        }
        let current: i64 = row.get(0);
        let positions: Vec<i64> = row.get(1);
        if positions.is_empty() {
            // A retry of an append that succeeded carries an expected version that is now
            // stale: answer it with the original result.
            let known: i64 =
                sqlx::query_scalar("select count(*) from es_events where event_id = any($1)")
                    .bind(&ids)
                    .fetch_one(&self.pool)
                    .await?;
            if known > 0 && !in_transaction {
                return self.previous_append(stream, &ids).await;
            }
            return Err(AppendError::Conflict {
                stream: stream.key(),
                expected,
                actual: current,
            });
        }
        Ok(AppendResult {
            stream_version: current + positions.len() as i64,
            positions,
            duplicate: false,
        })
    }

    /// The result of an earlier append with the same event ids (a retry), or `EventIdReused`.
    async fn previous_append(
        &self,
        stream: &StreamName,
        ids: &[Uuid],
    ) -> Result<AppendResult, AppendError> {
        let rows: Vec<(String, i64, i64)> =
            sqlx::query_as("select stream, version, position from es_events where event_id = any($1) order by version")
                .bind(ids)
                .fetch_all(&self.pool)
                .await?;
        if rows.len() != ids.len() || rows.iter().any(|r| r.0 != stream.key()) {
            return Err(AppendError::EventIdReused);
        }
        Ok(AppendResult {
            stream_version: rows.last().map(|r| r.1).unwrap_or(0),
            positions: rows.iter().map(|r| r.2).collect(),
            duplicate: true,
        })
    }

    /// The current version of a stream (0 when it has no events).
    pub async fn stream_version(&self, stream: &StreamName) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("select coalesce(max(version), 0) from es_events where stream = $1")
            .bind(stream.key())
            .fetch_one(&self.pool)
            .await
    }

    /// As [`EventStore::stream_version`], inside the caller's transaction: the version a
    /// decision made in that transaction is made on (named in its append as
    /// [`ExpectedVersion::Exact`]; a writer that appended meanwhile makes it a conflict).
    pub async fn stream_version_in(
        &self,
        tx: &mut sqlx::PgConnection,
        stream: &StreamName,
    ) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("select coalesce(max(version), 0) from es_events where stream = $1")
            .bind(stream.key())
            .fetch_one(tx)
            .await
    }

    /// Reads up to `limit` events of one stream, from version `from` (1 = the first event).
    pub async fn read_stream(
        &self,
        stream: &StreamName,
        from: i64,
        limit: i64,
    ) -> Result<Vec<RecordedEvent>, sqlx::Error> {
        let rows = sqlx::query(&format!(
            "select {COLUMNS} from es_events where stream = $1 and version >= $2 order by version limit $3"
        ))
        .bind(stream.key())
        .bind(from)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| self.decode(r)).collect())
    }

    /// Reads a whole stream.
    pub async fn read_stream_all(
        &self,
        stream: &StreamName,
    ) -> Result<Vec<RecordedEvent>, sqlx::Error> {
        let mut out = Vec::new();
        loop {
            let batch = self.read_stream(stream, out.len() as i64 + 1, 1000).await?;
            let done = batch.len() < 1000;
            out.extend(batch);
            if done {
                return Ok(out);
            }
        }
    }

    /// Reads up to `limit` events after `after` in the global order, only from transactions that
    /// have finished: an event can never appear later *before* the returned checkpoint.
    pub async fn read_all(
        &self,
        filter: &ReadFilter,
        after: Checkpoint,
        limit: i64,
    ) -> Result<Vec<RecordedEvent>, sqlx::Error> {
        let safe = "xid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint";
        let rows = match filter {
            ReadFilter::All => {
                sqlx::query(&format!(
                    "select {COLUMNS} from es_events where (xid, position) > ($1, $2) and {safe} \
                     order by xid, position limit $3"
                ))
                .bind(after.xid)
                .bind(after.position)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
            ReadFilter::Category(category) => {
                sqlx::query(&format!(
                    "select {COLUMNS} from es_events where category = $4 and (xid, position) > ($1, $2) and {safe} \
                     order by xid, position limit $3"
                ))
                .bind(after.xid)
                .bind(after.position)
                .bind(limit)
                .bind(category)
                .fetch_all(&self.pool)
                .await?
            }
            ReadFilter::CategoryInPartition(_, p) | ReadFilter::Partition(p) => {
                let category = match filter {
                    ReadFilter::CategoryInPartition(c, _) => Some(c.as_str()),
                    _ => None,
                };
                sqlx::query(&format!(
                    "select {COLUMNS} from es_events where {IN_PARTITION} and ($6::text is null or category = $6) \
                     and (xid, position) > ($1, $2) and {safe} order by xid, position limit $3"
                ))
                .bind(after.xid)
                .bind(after.position)
                .bind(limit)
                .bind(p.index as i64)
                .bind(p.count.max(1) as i64)
                .bind(category)
                .fetch_all(&self.pool)
                .await?
            }
        };
        Ok(rows.iter().map(|r| self.decode(r)).collect())
    }

    /// Up to `limit` events of one tenant recorded in `[from, to)`, in the global order (for a
    /// webhook's redelivery of a time range).
    pub async fn read_tenant_between(
        &self,
        tenant: &str,
        from: chrono::DateTime<chrono::Utc>,
        to: chrono::DateTime<chrono::Utc>,
        limit: i64,
    ) -> Result<Vec<RecordedEvent>, sqlx::Error> {
        let rows = sqlx::query(&format!(
            "select {COLUMNS} from es_events where tenant = $1 and recorded_at >= $2 and recorded_at < $3 \
             order by xid, position limit $4"
        ))
        .bind(tenant)
        .bind(from)
        .bind(to)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| self.decode(r)).collect())
    }

    /// The number of stored events (for progress reports).
    pub async fn count(&self, filter: &ReadFilter) -> Result<i64, sqlx::Error> {
        match filter {
            ReadFilter::All => {
                sqlx::query_scalar("select count(*) from es_events")
                    .fetch_one(&self.pool)
                    .await
            }
            ReadFilter::Category(c) => {
                sqlx::query_scalar("select count(*) from es_events where category = $1")
                    .bind(c)
                    .fetch_one(&self.pool)
                    .await
            }
            ReadFilter::CategoryInPartition(_, p) | ReadFilter::Partition(p) => {
                let category = match filter {
                    ReadFilter::CategoryInPartition(c, _) => Some(c.as_str()),
                    _ => None,
                };
                sqlx::query_scalar(&format!(
                    "select count(*) from es_events where {} and ($3::text is null or category = $3)",
                    IN_PARTITION.replace("$5", "$2").replace("$4", "$1")
                ))
                .bind(p.index as i64)
                .bind(p.count.max(1) as i64)
                .bind(category)
                .fetch_one(&self.pool)
                .await
            }
        }
    }

    /// Whether an event id is stored.
    pub async fn contains(&self, event_id: Uuid) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar("select exists(select 1 from es_events where event_id = $1)")
            .bind(event_id)
            .fetch_one(&self.pool)
            .await
    }

    fn decode(&self, r: &PgRow) -> RecordedEvent {
        let metadata: Value = r.get("metadata");
        let tenant: String = r.get("tenant");
        let metadata: Metadata = serde_json::from_value(metadata).unwrap_or_else(|_| Metadata {
            tenant: tenant.clone(),
            correlation_id: Uuid::nil(),
            causation_id: None,
            actor: None,
            traceparent: None,
        });
        let mut event = RecordedEvent {
            position: r.get("position"),
            xid: r.get("xid"),
            event_id: r.get("event_id"),
            stream: StreamName::from_parts_unchecked(tenant, r.get("category"), r.get("stream_id")),
            version: r.get("version"),
            event_type: r.get("event_type"),
            schema_version: r.get("schema_version"),
            data: r.get("data"),
            metadata,
            recorded_at: r.get("recorded_at"),
        };
        self.upcasters.apply(&mut event);
        event
    }
}

/// The span of one append (a child of the writer's span: the decision that led to it).
fn append_span(stream: &StreamName, events: &[NewEvent]) -> tracing::Span {
    tracing::info_span!(
        "eventstore append",
        stream = %stream.key(),
        events = events.len(),
        otel.kind = "client"
    )
}

/// `events` with the current trace context in their metadata, so that their readers continue
/// the trace; `None` when nothing is traced (the events are stored as they are).
fn traced(events: &[NewEvent]) -> Option<Vec<NewEvent>> {
    let tp = cc_trace::current()?;
    Some(
        events
            .iter()
            .cloned()
            .map(|mut e| {
                e.metadata.traceparent.get_or_insert_with(|| tp.clone());
                e
            })
            .collect(),
    )
}
