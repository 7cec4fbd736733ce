//! The reporting schema: its tables, the analysts' views over them (stable names, commented
//! columns), and how rows are written (COPY into a fresh schema on rebuild; COPY into a
//! temporary table and upsert when live).
//!
//! The whole schema is created by [`create`] under any name, so a rebuild fills `reporting_next`
//! while `reporting` serves, then renames the two in one transaction.

use std::fmt::Write as _;

use sqlx::PgConnection;

use super::fold::{CallRow, Dirty, LoginRow, QueueRow, SegmentRow, StateRow, TenantRow, Ts};

pub struct Table {
    pub name: &'static str,
    /// (column, SQL type, comment)
    pub columns: &'static [(&'static str, &'static str, &'static str)],
    pub key: &'static [&'static str],
    pub comment: &'static str,
}

pub const TENANTS: Table = Table {
    name: "tenants",
    columns: &[
        ("tenant", "text not null", "the tenant (its subdomain)"),
        ("name", "text not null", "its display name"),
        (
            "time_zone",
            "text not null",
            "IANA time zone of the tenant's day boundaries (the *_local columns and day)",
        ),
    ],
    key: &["tenant"],
    comment: "Tenants and the time zone their days are counted in.",
};

pub const QUEUES: Table = Table {
    name: "queues",
    columns: &[
        ("tenant", "text not null", "the tenant"),
        ("queue", "text not null", "queue number"),
        ("name", "text not null", "queue name"),
        (
            "service_level_s",
            "bigint not null",
            "answer time that counts as within service level, seconds",
        ),
    ],
    key: &["tenant", "queue"],
    comment: "Queues with the service-level threshold they are measured against.",
};

pub const CALLS: Table = Table {
    name: "calls",
    columns: &[
        ("tenant", "text not null", "the tenant"),
        ("call", "text not null", "call id (the event stream call-<call>)"),
        ("queue", "text", "the queue the caller dialled first; null for an outbound call"),
        ("caller_number", "text not null", "caller's number; for an outbound call the number or extension the agent dialled"),
        ("caller_name", "text not null", "caller's name (empty for an outbound call)"),
        ("entered_at", "timestamptz not null", "when the caller entered the first queue, or the agent dialled (UTC)"),
        ("answered_at", "timestamptz", "when an agent first answered, or the far end of an outbound call (UTC); null if never"),
        ("ended_at", "timestamptz", "when the caller's call ended (UTC); null while in progress"),
        ("wait_ms", "bigint", "time in queue before the first answer, or before abandoning / leaving"),
        ("talk_ms", "bigint", "time someone talked with the caller (agents and outside targets, overlaps counted once), hold excluded"),
        ("hold_ms", "bigint not null", "time the caller spent on hold"),
        ("outcome", "text not null", "waiting, in_progress, completed, abandoned, left_queue, transferred_out (to an extension without an agent or an outside number); outbound calls: dialing, in_progress, completed, not_connected (the dial failed: see the dial segment)"),
        ("leave_reason", "text", "for left_queue: max_wait or no_agents"),
        ("first_agent", "text", "agent who answered first"),
        ("last_agent", "text", "agent who had the call last"),
        ("transfers", "bigint not null", "transfers started on this call"),
        ("disposition", "text", "the disposition code the agent gave in wrap-up (one of the queue's codes; the last given); null if none"),
        ("disposition_note", "text", "the agent's free-text note from wrap-up (at most 1000 characters); null if none"),
        ("disposition_agent", "text", "the agent who gave the disposition or note"),
        ("direction", "text", "inbound (a queue call) or outbound (dialled by an agent from the portal)"),
    ],
    key: &["tenant", "call"],
    comment: "One row per call: from entering a queue (or an agent dialling out) to the caller's end.",
};

pub const SEGMENTS: Table = Table {
    name: "call_segments",
    columns: &[
        ("tenant", "text not null", "the tenant"),
        ("call", "text not null", "the call (reporting.calls)"),
        ("seq", "bigint not null", "order within the call, from 1"),
        ("kind", "text not null", "queue (a wait in a queue), offer (an agent's phone rang), connected (an agent on the call), hold, transfer, outside (talk with a transfer target that is not an agent), dial (an outbound call from the dial to the far end's answer), monitor (a supervisor on an agent's call in one mode, from their phone ringing; a mode switch starts the next row)"),
        ("agent", "text", "the agent of an offer, connected span, hold or transfer; the agent monitored"),
        ("queue", "text", "the queue of a wait or an offer"),
        ("started_at", "timestamptz not null", "start (UTC)"),
        ("ended_at", "timestamptz", "end (UTC); null while open"),
        ("duration_ms", "bigint", "ended_at - started_at"),
        ("outcome", "text", "queue: answered / abandoned / left_queue; offer: answered / rejected / missed / withdrawn:<reason>; connected: how the agent's part ended (agent, agent_phone, caller, transferred, transfer_failed, transfer_cancelled); transfer: completed / cancelled / failed:<reason>; dial: connected / failed:<reason>; monitor: switched (to the next row's mode), left, supervisor_hung_up, no_answer, rejected, unavailable, call_ended"),
        ("detail", "jsonb", "transfer: method, target, target_agent; queue: priority when re-entered; connected: transferred, or outbound; dial: number, extension; monitor: supervisor (username), device, mode (listen, whisper, barge)"),
    ],
    key: &["tenant", "call", "seq"],
    comment: "Every step of every call: waits, offers, each agent's connected span, holds, transfers.",
};

pub const STATES: Table = Table {
    name: "agent_states",
    columns: &[
        ("tenant", "text not null", "the tenant"),
        ("agent", "text not null", "agent number"),
        (
            "seq",
            "bigint not null",
            "order within the agent's history, from 1",
        ),
        (
            "state",
            "text not null",
            "idle, paused, ringing, dialing (an outbound call before the far end answers), connected, on_hold, wrap_up (logged-out time has no rows)",
        ),
        ("reason", "text", "pause reason"),
        (
            "call",
            "text",
            "the call of ringing, dialing, connected, on_hold, wrap_up",
        ),
        ("started_at", "timestamptz not null", "start (UTC)"),
        ("ended_at", "timestamptz", "end (UTC); null while current"),
        ("duration_ms", "bigint", "ended_at - started_at"),
    ],
    key: &["tenant", "agent", "seq"],
    comment: "Each agent's states as intervals, while logged in.",
};

pub const LOGINS: Table = Table {
    name: "agent_logins",
    columns: &[
        ("tenant", "text not null", "the tenant"),
        ("agent", "text not null", "agent number"),
        ("login_id", "text not null", "the login"),
        ("device", "text not null", "the device (extension) chosen"),
        ("started_at", "timestamptz not null", "login (UTC)"),
        ("ended_at", "timestamptz", "logout (UTC); null while logged in"),
        ("duration_ms", "bigint", "ended_at - started_at"),
        ("logout_reason", "text", "why the session ended: the LogoutReason of AgentLoggedOut (agent, supervisor, account_disabled, ...)"),
    ],
    key: &["tenant", "login_id"],
    comment: "Each login of each agent.",
};

pub const TABLES: [&Table; 6] = [&TENANTS, &QUEUES, &CALLS, &SEGMENTS, &STATES, &LOGINS];

/// Views for analysts (stable names; see docs/reporting.md). `{s}` is the schema.
const VIEWS: &str = r#"
create view {s}.call_history as
select c.*, c.entered_at at time zone t.time_zone as entered_local, (c.entered_at at time zone t.time_zone)::date as day
  from {s}.calls c join {s}.tenants t using (tenant);
comment on view {s}.call_history is 'One row per call, with the local time and day of its entry in the tenant''s time zone.';

create view {s}.agent_daily as
with st as (
  select s.tenant, s.agent, (s.started_at at time zone t.time_zone)::date as day, s.state, s.reason,
         coalesce(s.duration_ms, (extract(epoch from now() - s.started_at) * 1000)::bigint) as ms
    from {s}.agent_states s join {s}.tenants t using (tenant)
), sums as (
  select tenant, agent, day,
         sum(ms)::bigint as logged_in_ms,
         coalesce(sum(ms) filter (where state = 'idle'), 0)::bigint as idle_ms,
         coalesce(sum(ms) filter (where state = 'ringing'), 0)::bigint as ringing_ms,
         coalesce(sum(ms) filter (where state = 'dialing'), 0)::bigint as dialing_ms,
         coalesce(sum(ms) filter (where state = 'connected'), 0)::bigint as talk_ms,
         coalesce(sum(ms) filter (where state = 'on_hold'), 0)::bigint as hold_ms,
         coalesce(sum(ms) filter (where state = 'wrap_up'), 0)::bigint as wrap_up_ms,
         coalesce(sum(ms) filter (where state = 'paused'), 0)::bigint as pause_ms
    from st group by tenant, agent, day
), counts as (
  select g.tenant, g.agent, (g.started_at at time zone t.time_zone)::date as day,
         count(*) filter (where g.kind = 'connected' and g.ended_at is not null and g.outcome not in ('transfer_failed', 'transfer_cancelled')) as completed,
         count(*) filter (where g.kind = 'offer' and g.outcome = 'missed') as missed,
         count(*) filter (where g.kind = 'offer' and g.outcome = 'rejected') as rejected
    from {s}.call_segments g join {s}.tenants t using (tenant)
   where g.agent is not null group by 1, 2, 3
)
select s.*, coalesce(c.completed, 0) as completed, coalesce(c.missed, 0) as missed, coalesce(c.rejected, 0) as rejected,
       case when coalesce(c.completed, 0) > 0 then (s.talk_ms + s.hold_ms + s.wrap_up_ms) / c.completed end as avg_handle_ms,
       round(100.0 * (s.talk_ms + s.hold_ms + s.wrap_up_ms + s.dialing_ms) / nullif(s.talk_ms + s.hold_ms + s.wrap_up_ms + s.dialing_ms + s.idle_ms + s.ringing_ms, 0), 1) as occupancy_pct
  from sums s left join counts c using (tenant, agent, day);
comment on view {s}.agent_daily is 'Per agent and local day: time logged in and in each state, Completed / Missed / Rejected (Completed: queue calls and outbound calls that connected), average handle time (talk + hold + wrap-up per completed call), occupancy (handling time, dialing out included, over handling + idle + ringing time). An interval counts on the day it started.';

create view {s}.agent_pause_daily as
select s.tenant, s.agent, (s.started_at at time zone t.time_zone)::date as day, s.reason,
       count(*) as pauses, sum(coalesce(s.duration_ms, (extract(epoch from now() - s.started_at) * 1000)::bigint))::bigint as pause_ms
  from {s}.agent_states s join {s}.tenants t using (tenant)
 where s.state = 'paused' group by 1, 2, 3, 4;
comment on view {s}.agent_pause_daily is 'Pause time per agent, local day and reason.';

create view {s}.queue_intervals as
with waits as (
  -- A call counts once per queue: its first wait there (a caller transferred back into the
  -- same queue is the same contact).
  select g.*, row_number() over (partition by g.tenant, g.call, g.queue order by g.seq) as nth
    from {s}.call_segments g where g.kind = 'queue'
)
select w.tenant, w.queue, date_bin('15 minutes', w.started_at, timestamptz '2000-01-01') as interval_start,
       count(*) as offered,
       count(*) filter (where w.outcome = 'answered') as answered,
       count(*) filter (where w.outcome = 'abandoned') as abandoned,
       count(*) filter (where w.outcome = 'abandoned' and w.duration_ms < 5000) as abandoned_short,
       count(*) filter (where w.outcome = 'left_queue') as left_queue,
       count(*) filter (where w.outcome = 'answered' and w.duration_ms <= q.service_level_s * 1000) as answered_in_sl,
       round(100.0 * count(*) filter (where w.outcome = 'answered' and w.duration_ms <= q.service_level_s * 1000)
             / nullif(count(*) filter (where w.ended_at is not null) - count(*) filter (where w.outcome = 'abandoned' and w.duration_ms < 5000), 0), 1) as service_level_pct,
       round(avg(w.duration_ms) filter (where w.outcome = 'answered'))::bigint as avg_speed_of_answer_ms,
       max(w.duration_ms) as longest_wait_ms,
       round(avg(c.talk_ms + c.hold_ms) filter (where w.outcome = 'answered' and c.talk_ms is not null))::bigint as avg_handle_ms
  from waits w
  join {s}.queues q on q.tenant = w.tenant and q.queue = w.queue
  join {s}.calls c on c.tenant = w.tenant and c.call = w.call
 where w.nth = 1
 group by w.tenant, w.queue, 3;
comment on view {s}.queue_intervals is 'Per queue and 15-minute interval (UTC start) of arrival, each call counted once per queue (its first wait there): offered, answered, abandoned (abandoned_short: within 5 s, left out of the service level), service level against the queue''s threshold, average speed of answer, longest wait, average handle time (talk + hold).';
"#;

/// Adds to the existing schema `s` the nullable columns a newer version has and it lacks
/// (their rows read null: nothing was recorded then), with their comments, and then creates
/// the views again (`c.*` is expanded when a view is created), so an upgrade needs no rebuild.
pub async fn add_new_columns(conn: &mut PgConnection, s: &str) -> Result<(), sqlx::Error> {
    let have: Vec<(String, String)> = sqlx::query_as(
        "select table_name::text, column_name::text from information_schema.columns where table_schema = $1",
    )
    .bind(s)
    .fetch_all(&mut *conn)
    .await?;
    // Tables of a build before partitions had one checkpoint row (`check (id = 1)`); each
    // partition's leader has its own now.
    let one_row: bool = sqlx::query_scalar(
        "select exists (select 1 from pg_constraint c join pg_namespace n on n.oid = c.connamespace
         where n.nspname = $1 and c.conname = 'checkpoint_id_check' and pg_get_constraintdef(c.oid) like '%= 1)%')",
    )
    .bind(s)
    .fetch_one(&mut *conn)
    .await?;
    if one_row {
        sqlx::Executor::execute(
            &mut *conn,
            format!("alter table {s}.checkpoint drop constraint checkpoint_id_check, add constraint checkpoint_id_check check (id >= 1)").as_str(),
        )
        .await?;
    }
    let mut sql = String::new();
    for t in TABLES {
        for (c, ty, comment) in t.columns {
            if ty.contains("not null") || have.iter().any(|(tn, cn)| tn == t.name && cn == c) {
                continue;
            }
            let _ = writeln!(sql, "alter table {s}.{} add column {c} {ty};", t.name);
            let _ = writeln!(
                sql,
                "comment on column {s}.{}.{c} is '{}';",
                t.name,
                comment.replace('\'', "''")
            );
        }
    }
    if sql.is_empty() {
        return Ok(());
    }
    // Outbound calls (with `direction`) have no queue; every call before them was inbound.
    let _ = writeln!(
        sql,
        "alter table {s}.calls alter column queue drop not null; update {s}.calls set direction = 'inbound' where direction is null;"
    );
    let _ = writeln!(
        sql,
        "drop view if exists {s}.call_history, {s}.agent_daily, {s}.agent_pause_daily, {s}.queue_intervals;"
    );
    sql.push_str(&VIEWS.replace("{s}", s));
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    sqlx::Executor::execute(&mut *tx, sql.as_str()).await?;
    tx.commit().await
}

/// Creates the schema `s` with every table and view (dropping an older one of that name).
pub async fn create(conn: &mut PgConnection, s: &str) -> Result<(), sqlx::Error> {
    let mut sql = format!("drop schema if exists {s} cascade; create schema {s};\n");
    for t in TABLES {
        let cols: Vec<String> = t
            .columns
            .iter()
            .map(|(c, ty, _)| format!("{c} {ty}"))
            .collect();
        let _ = writeln!(
            sql,
            "create table {s}.{} ({}, primary key ({}));",
            t.name,
            cols.join(", "),
            t.key.join(", ")
        );
        let _ = writeln!(
            sql,
            "comment on table {s}.{} is '{}';",
            t.name,
            t.comment.replace('\'', "''")
        );
        for (c, _, comment) in t.columns {
            let _ = writeln!(
                sql,
                "comment on column {s}.{}.{c} is '{}';",
                t.name,
                comment.replace('\'', "''")
            );
        }
    }
    sql.push_str(&format!(
        "create index on {s}.calls (tenant, entered_at);\n"
    ));
    sql.push_str(&format!(
        "create index on {s}.call_segments (tenant, kind, started_at);\n"
    ));
    sql.push_str(&format!(
        "create index on {s}.agent_states (tenant, agent, started_at);\n"
    ));
    sql.push_str(&format!(
        "create table {s}.checkpoint (id int primary key check (id >= 1), generation bigint not null, xid bigint not null, position bigint not null);\n\
         comment on table {s}.checkpoint is 'Where the projection is in the event store, and which build (generation) wrote it.';\n"
    ));
    sql.push_str(&VIEWS.replace("{s}", s));
    sqlx::Executor::execute(&mut *conn, sql.as_str()).await?;
    Ok(())
}

/// A COPY text-format field.
fn field(out: &mut String, v: Option<&str>) {
    match v {
        None => out.push_str("\\N"),
        Some(s) => {
            for ch in s.chars() {
                match ch {
                    '\\' => out.push_str("\\\\"),
                    '\t' => out.push_str("\\t"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    c => out.push(c),
                }
            }
        }
    }
}

fn ts(t: &Ts) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Appends one COPY line.
fn line(out: &mut String, fields: &[Option<String>]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push('\t');
        }
        field(out, f.as_deref());
    }
    out.push('\n');
}

fn o<T: ToString>(v: &Option<T>) -> Option<String> {
    v.as_ref().map(|v| v.to_string())
}

pub trait Row {
    const TABLE: &'static Table;
    fn copy_line(&self, out: &mut String);
}

impl Row for TenantRow {
    const TABLE: &'static Table = &TENANTS;
    fn copy_line(&self, out: &mut String) {
        line(
            out,
            &[
                Some(self.tenant.clone()),
                Some(self.name.clone()),
                Some(self.time_zone.clone()),
            ],
        );
    }
}
impl Row for QueueRow {
    const TABLE: &'static Table = &QUEUES;
    fn copy_line(&self, out: &mut String) {
        line(
            out,
            &[
                Some(self.tenant.clone()),
                Some(self.queue.clone()),
                Some(self.name.clone()),
                Some(self.service_level_s.to_string()),
            ],
        );
    }
}
impl Row for CallRow {
    const TABLE: &'static Table = &CALLS;
    fn copy_line(&self, out: &mut String) {
        line(
            out,
            &[
                Some(self.tenant.clone()),
                Some(self.call.clone()),
                self.queue.clone(),
                Some(self.caller_number.clone()),
                Some(self.caller_name.clone()),
                Some(ts(&self.entered_at)),
                self.answered_at.as_ref().map(ts),
                self.ended_at.as_ref().map(ts),
                o(&self.wait_ms),
                o(&self.talk_ms),
                Some(self.hold_ms.to_string()),
                Some(self.outcome.clone()),
                self.leave_reason.clone(),
                self.first_agent.clone(),
                self.last_agent.clone(),
                Some(self.transfers.to_string()),
                self.disposition.clone(),
                self.disposition_note.clone(),
                self.disposition_agent.clone(),
                Some(self.direction.to_string()),
            ],
        );
    }
}
impl Row for SegmentRow {
    const TABLE: &'static Table = &SEGMENTS;
    fn copy_line(&self, out: &mut String) {
        line(
            out,
            &[
                Some(self.tenant.clone()),
                Some(self.call.clone()),
                Some(self.seq.to_string()),
                Some(self.kind.to_string()),
                self.agent.clone(),
                self.queue.clone(),
                Some(ts(&self.started_at)),
                self.ended_at.as_ref().map(ts),
                o(&self.duration_ms),
                self.outcome.clone(),
                self.detail.clone(),
            ],
        );
    }
}
impl Row for StateRow {
    const TABLE: &'static Table = &STATES;
    fn copy_line(&self, out: &mut String) {
        line(
            out,
            &[
                Some(self.tenant.clone()),
                Some(self.agent.clone()),
                Some(self.seq.to_string()),
                Some(self.state.to_string()),
                self.reason.clone(),
                self.call.clone(),
                Some(ts(&self.started_at)),
                self.ended_at.as_ref().map(ts),
                o(&self.duration_ms),
            ],
        );
    }
}
impl Row for LoginRow {
    const TABLE: &'static Table = &LOGINS;
    fn copy_line(&self, out: &mut String) {
        line(
            out,
            &[
                Some(self.tenant.clone()),
                Some(self.agent.clone()),
                Some(self.login_id.clone()),
                Some(self.device.clone()),
                Some(ts(&self.started_at)),
                self.ended_at.as_ref().map(ts),
                o(&self.duration_ms),
                self.logout_reason.clone(),
            ],
        );
    }
}

type Fut<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), sqlx::Error>> + Send + 'a>>;

/// COPYs rows into `schema.table` (or a temporary table). (Boxed: a plain generic `async fn`
/// here trips the compiler's `Send` inference for the callers' futures.)
fn copy<'a, R: Row + Sync>(conn: &'a mut PgConnection, target: &'a str, rows: &'a [R]) -> Fut<'a> {
    Box::pin(copy_rows(conn, target, rows))
}

async fn copy_rows<R: Row + Sync>(
    conn: &mut PgConnection,
    target: &str,
    rows: &[R],
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let cols: Vec<&str> = R::TABLE.columns.iter().map(|(c, _, _)| *c).collect();
    let mut copy = conn
        .copy_in_raw(&format!("copy {target} ({}) from stdin", cols.join(", ")))
        .await?;
    let mut buf = String::with_capacity(1 << 20);
    for r in rows {
        r.copy_line(&mut buf);
        if buf.len() > (1 << 20) {
            copy.send(std::mem::take(&mut buf).into_bytes()).await?;
        }
    }
    if !buf.is_empty() {
        copy.send(buf.into_bytes()).await?;
    }
    copy.finish().await?;
    Ok(())
}

/// Inserts rows into an empty table of a fresh schema.
pub async fn insert<R: Row + Sync>(
    conn: &mut PgConnection,
    schema: &str,
    rows: &[R],
) -> Result<(), sqlx::Error> {
    let target = format!("{schema}.{}", R::TABLE.name);
    copy(conn, &target, rows).await
}

/// Inserts or replaces rows by their key (in the caller's transaction).
pub fn upsert<'a, R: Row + Sync>(
    conn: &'a mut PgConnection,
    schema: &'a str,
    rows: &'a [R],
) -> Fut<'a> {
    Box::pin(upsert_rows(conn, schema, rows))
}

async fn upsert_rows<R: Row + Sync>(
    conn: &mut PgConnection,
    schema: &str,
    rows: &[R],
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let t = R::TABLE;
    let tmp = format!("tmp_reporting_{}", t.name);
    sqlx::Executor::execute(
        &mut *conn,
        format!(
            "create temp table if not exists {tmp} (like {schema}.{}) on commit delete rows",
            t.name
        )
        .as_str(),
    )
    .await?;
    copy(&mut *conn, &tmp, rows).await?;
    let cols: Vec<&str> = t.columns.iter().map(|(c, _, _)| *c).collect();
    let sets: Vec<String> = cols
        .iter()
        .filter(|c| !t.key.contains(c))
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    let sql = format!(
        "insert into {schema}.{} ({cols}) select {cols} from {tmp} on conflict ({key}) do update set {sets}",
        t.name,
        cols = cols.join(", "),
        key = t.key.join(", "),
        sets = sets.join(", ")
    );
    sqlx::Executor::execute(&mut *conn, sql.as_str()).await?;
    Ok(())
}

/// Writes a batch of changed rows (upserts).
pub async fn write_dirty(
    conn: &mut PgConnection,
    schema: &str,
    d: &Dirty,
) -> Result<(), sqlx::Error> {
    upsert(&mut *conn, schema, &d.tenants).await?;
    upsert(&mut *conn, schema, &d.queues).await?;
    upsert(&mut *conn, schema, &d.calls).await?;
    upsert(&mut *conn, schema, &d.segments).await?;
    upsert(&mut *conn, schema, &d.states).await?;
    upsert(&mut *conn, schema, &d.logins).await?;
    Ok(())
}
