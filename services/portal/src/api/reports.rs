//! Reports for supervisors and admins, from the reporting views (see `docs/reporting.md`):
//! `GET /api/reports/{calls,agents,pauses,queues}` with `from` / `to` (days in the tenant's
//! time zone, inclusive), `queue`, `agent`, and `format=csv`.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use cc_bus::CommandError;
use cc_contracts::domain::{AgentNumber, QueueNumber};
use chrono::NaiveDate;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};

use crate::error::{ApiError, ApiResult};
use crate::identity::Authed;
use crate::route::{schema_of, Output, QueryParams, Reply, Route, Shape, Tag, SUPERVISORS};
use crate::Portal;

/// At most this many rows per report.
pub const MAX_ROWS: i64 = 100_000;

/// A day, `YYYY-MM-DD`.
#[derive(Clone, Copy, JsonSchema)]
pub struct Day(NaiveDate);

impl<'de> Deserialize<'de> for Day {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        NaiveDate::parse_from_str(&s, "%Y-%m-%d")
            .map(Day)
            .map_err(|_| serde::de::Error::custom(format!("a date like 2026-11-25, not {s:?}")))
    }
}

/// How the rows come.
#[derive(Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// A JSON array of objects (the default).
    #[default]
    Json,
    /// CSV with a header row, as a download.
    Csv,
}

/// What a report's query may filter by; each report takes the fields it has.
struct Filter {
    from: Option<Day>,
    to: Option<Day>,
    queue: Option<QueueNumber>,
    agent: Option<AgentNumber>,
    format: Option<Format>,
}

/// The query of the calls report.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CallsQuery {
    /// First day (YYYY-MM-DD, in the tenant's time zone), inclusive.
    from: Option<Day>,
    /// Last day (YYYY-MM-DD), inclusive.
    to: Option<Day>,
    /// Only this queue.
    queue: Option<QueueNumber>,
    /// Only the calls this agent was connected to.
    agent: Option<AgentNumber>,
    /// json (default) or csv.
    format: Option<Format>,
}

/// The query of the agents report.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentsQuery {
    /// First day (YYYY-MM-DD, in the tenant's time zone), inclusive.
    from: Option<Day>,
    /// Last day (YYYY-MM-DD), inclusive.
    to: Option<Day>,
    /// Only this agent.
    agent: Option<AgentNumber>,
    /// json (default) or csv.
    format: Option<Format>,
}

/// The query of the queues report.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueuesQuery {
    /// First day (YYYY-MM-DD, in the tenant's time zone), inclusive.
    from: Option<Day>,
    /// Last day (YYYY-MM-DD), inclusive.
    to: Option<Day>,
    /// Only this queue.
    queue: Option<QueueNumber>,
    /// json (default) or csv.
    format: Option<Format>,
}

impl From<CallsQuery> for Filter {
    fn from(q: CallsQuery) -> Self {
        let CallsQuery {
            from,
            to,
            queue,
            agent,
            format,
        } = q;
        Filter {
            from,
            to,
            queue,
            agent,
            format,
        }
    }
}

impl From<AgentsQuery> for Filter {
    fn from(q: AgentsQuery) -> Self {
        let AgentsQuery {
            from,
            to,
            agent,
            format,
        } = q;
        Filter {
            from,
            to,
            queue: None,
            agent,
            format,
        }
    }
}

impl From<QueuesQuery> for Filter {
    fn from(q: QueuesQuery) -> Self {
        let QueuesQuery {
            from,
            to,
            queue,
            format,
        } = q;
        Filter {
            from,
            to,
            queue,
            agent: None,
            format,
        }
    }
}

/// A report's rows: a JSON array of objects, or CSV.
pub enum Rows {
    Json(Vec<serde_json::Map<String, serde_json::Value>>),
    Csv { view: &'static str, text: String },
}

impl IntoResponse for Rows {
    fn into_response(self) -> Response {
        match self {
            Rows::Json(rows) => Json(rows).into_response(),
            Rows::Csv { view, text } => (
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                    (
                        header::CONTENT_DISPOSITION,
                        format!("attachment; filename=\"{view}.csv\""),
                    ),
                ],
                text,
            )
                .into_response(),
        }
    }
}

impl Output for Rows {
    fn describe(s: &mut Shape) {
        s.replies.push(Reply {
            status: 200,
            description: "The rows (at most 100,000)",
            content: vec![
                (
                    "application/json",
                    schema_of::<Vec<serde_json::Map<String, serde_json::Value>>>,
                ),
                ("text/csv", schema_of::<String>),
            ],
            headers: vec![],
        });
    }
}

struct Report {
    view: &'static str,
    /// The local day of a row.
    day: &'static str,
    queue: Option<&'static str>,
    agent: Option<&'static str>,
    order: &'static str,
}

const CALLS: Report = Report {
    view: "call_history",
    day: "v.day",
    queue: Some("v.queue = $4"),
    agent: Some("exists (select 1 from reporting.call_segments s where s.tenant = v.tenant and s.call = v.call and s.kind = 'connected' and s.agent = $5)"),
    order: "v.entered_at",
};
const AGENTS: Report = Report {
    view: "agent_daily",
    day: "v.day",
    queue: None,
    agent: Some("v.agent = $5"),
    order: "v.day, v.agent",
};
const PAUSES: Report = Report {
    view: "agent_pause_daily",
    day: "v.day",
    queue: None,
    agent: Some("v.agent = $5"),
    order: "v.day, v.agent, v.reason",
};
const QUEUES: Report = Report {
    view: "queue_intervals",
    day: "(v.interval_start at time zone t.time_zone)::date",
    queue: Some("v.queue = $4"),
    agent: None,
    order: "v.interval_start, v.queue",
};

fn bad(field: &str, message: String) -> ApiError {
    ApiError(CommandError::field("invalid_field", field, message))
}

async fn report(p: &Portal, who: &Authed, r: &Report, f: Filter) -> ApiResult<Rows> {
    let (from, to) = (f.from.map(|d| d.0), f.to.map(|d| d.0));
    if let (Some(a), Some(b)) = (from, to) {
        if a > b {
            return Err(bad("to", "to is before from".into()));
        }
    }
    let queue = f.queue.map(|q| q.to_string());
    let agent = f.agent.map(|a| a.to_string());
    let csv = f.format.unwrap_or_default() == Format::Csv;
    let sql = format!(
        "select row_to_json(v)::text from reporting.{view} v join reporting.tenants t on t.tenant = v.tenant
          where v.tenant = $1 and ($2::date is null or {day} >= $2) and ($3::date is null or {day} <= $3)
            and ($4::text is null or {q}) and ($5::text is null or {a})
          order by {order} limit {MAX_ROWS}",
        view = r.view,
        day = r.day,
        q = r.queue.unwrap_or("true"),
        a = r.agent.unwrap_or("true"),
        order = r.order,
    );
    let rows: Vec<String> = sqlx::query_scalar(&sql)
        .bind(who.tenant())
        .bind(from)
        .bind(to)
        .bind(&queue)
        .bind(&agent)
        .fetch_all(&p.ctx.pool)
        .await
        .map_err(|e| {
            ApiError(CommandError::new(
                "unavailable",
                format!("the reporting tables cannot be read now: {e}"),
            ))
        })?;
    let rows: Vec<serde_json::Map<String, serde_json::Value>> = rows
        .iter()
        .filter_map(|r| serde_json::from_str(r).ok())
        .collect();
    if !csv {
        return Ok(Rows::Json(rows));
    }
    let columns: Vec<String> = sqlx::query_scalar("select column_name::text from information_schema.columns where table_schema = 'reporting' and table_name = $1 order by ordinal_position")
        .bind(r.view)
        .fetch_all(&p.ctx.pool)
        .await
        .map_err(|e| ApiError(CommandError::internal(e.to_string())))?;
    let mut out = columns
        .iter()
        .map(|c| csv_field(c))
        .collect::<Vec<_>>()
        .join(",");
    out.push('\n');
    for row in &rows {
        let fields: Vec<String> = columns
            .iter()
            .map(|c| match &row[c.as_str()] {
                serde_json::Value::Null => String::new(),
                serde_json::Value::String(s) => csv_field(s),
                v => csv_field(&v.to_string()),
            })
            .collect();
        out.push_str(&fields.join(","));
        out.push('\n');
    }
    Ok(Rows::Csv {
        view: r.view,
        text: out,
    })
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// `GET /api/reports/calls`: one row per call (the view `reporting.call_history`).
pub async fn calls(
    State(p): State<Portal>,
    who: Authed,
    QueryParams(q): QueryParams<CallsQuery>,
) -> ApiResult<Rows> {
    report(&p, &who, &CALLS, q.into()).await
}

/// `GET /api/reports/agents`: per agent and day (`reporting.agent_daily`).
pub async fn agents(
    State(p): State<Portal>,
    who: Authed,
    QueryParams(q): QueryParams<AgentsQuery>,
) -> ApiResult<Rows> {
    report(&p, &who, &AGENTS, q.into()).await
}

/// `GET /api/reports/pauses`: pause time per agent, day and reason (`reporting.agent_pause_daily`).
pub async fn pauses(
    State(p): State<Portal>,
    who: Authed,
    QueryParams(q): QueryParams<AgentsQuery>,
) -> ApiResult<Rows> {
    report(&p, &who, &PAUSES, q.into()).await
}

/// `GET /api/reports/queues`: per queue and 15 minutes (`reporting.queue_intervals`).
pub async fn queues(
    State(p): State<Portal>,
    who: Authed,
    QueryParams(q): QueryParams<QueuesQuery>,
) -> ApiResult<Rows> {
    report(&p, &who, &QUEUES, q.into()).await
}

pub(crate) fn routes() -> Vec<Route> {
    const UNAVAILABLE: (u16, &str) = (503, "The reporting tables cannot be read now");
    vec![
        Route::get("/api/reports/calls", calls)
            .tag(Tag::Reports)
            .roles(SUPERVISORS)
            .summary("Call history")
            .description("One row per call (the view reporting.call_history), by entry time. Supervisors and admins. At most 100,000 rows. See docs/reporting.md.")
            .refuses(&["unavailable"])
            .notes(&[UNAVAILABLE]),
        Route::get("/api/reports/agents", agents)
            .tag(Tag::Reports)
            .roles(SUPERVISORS)
            .summary("Agent daily summary")
            .description("Per agent and day (reporting.agent_daily): time in each state, Completed / Missed / Rejected, average handle time, occupancy. Supervisors and admins. At most 100,000 rows. See docs/reporting.md.")
            .refuses(&["unavailable"])
            .notes(&[UNAVAILABLE]),
        Route::get("/api/reports/pauses", pauses)
            .tag(Tag::Reports)
            .roles(SUPERVISORS)
            .summary("Pause time")
            .description("Per agent, day and pause reason (reporting.agent_pause_daily). Supervisors and admins. At most 100,000 rows. See docs/reporting.md.")
            .refuses(&["unavailable"])
            .notes(&[UNAVAILABLE]),
        Route::get("/api/reports/queues", queues)
            .tag(Tag::Reports)
            .roles(SUPERVISORS)
            .summary("Queue statistics")
            .description("Per queue and 15-minute interval (reporting.queue_intervals): offered, answered, abandoned, service level, average speed of answer, longest wait, average handle time. Supervisors and admins. At most 100,000 rows. See docs/reporting.md.")
            .refuses(&["unavailable"])
            .notes(&[UNAVAILABLE]),
    ]
}
