//! Reports for supervisors and admins, from the reporting views (see `docs/reporting.md`):
//! `GET /api/reports/{calls,agents,pauses,queues}` with `from` / `to` (days in the tenant's
//! time zone, inclusive), `queue`, `agent`, and `format=csv`.

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use cc_bus::CommandError;
use cc_contracts::domain::{AgentNumber, QueueNumber};
use chrono::NaiveDate;
use serde::Deserialize;

use crate::error::{ApiError, ApiResult};
use crate::identity::Authed;
use crate::Portal;

/// At most this many rows per report.
pub const MAX_ROWS: i64 = 100_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    from: Option<String>,
    to: Option<String>,
    queue: Option<String>,
    agent: Option<String>,
    format: Option<String>,
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

fn date(field: &str, v: &Option<String>) -> ApiResult<Option<NaiveDate>> {
    v.as_deref()
        .map(|s| {
            NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| {
                bad(
                    field,
                    format!("{field} must be a date like 2026-11-25, not {s:?}"),
                )
            })
        })
        .transpose()
}

async fn report(p: &Portal, who: &Authed, r: &Report, f: Filter) -> ApiResult<Response> {
    who.require(crate::api::supervisor::ROLES)?;
    let (from, to) = (date("from", &f.from)?, date("to", &f.to)?);
    if let (Some(a), Some(b)) = (from, to) {
        if a > b {
            return Err(bad("to", "to is before from".into()));
        }
    }
    let queue = match (&f.queue, r.queue) {
        (None, _) => None,
        (Some(_), None) => return Err(bad("queue", "this report has no queue filter".to_string())),
        (Some(q), Some(_)) => Some(
            QueueNumber::parse(q)
                .map_err(|e| bad("queue", e.message))?
                .to_string(),
        ),
    };
    let agent = match (&f.agent, r.agent) {
        (None, _) => None,
        (Some(_), None) => return Err(bad("agent", "this report has no agent filter".to_string())),
        (Some(a), Some(_)) => Some(
            AgentNumber::parse(a)
                .map_err(|e| bad("agent", e.message))?
                .to_string(),
        ),
    };
    let csv = match f.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(bad(
                "format",
                format!("format is json or csv, not {other:?}"),
            ))
        }
    };
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
    let rows: Vec<serde_json::Value> = rows
        .iter()
        .filter_map(|r| serde_json::from_str(r).ok())
        .collect();
    if !csv {
        return Ok(Json(rows).into_response());
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
    let name = format!("attachment; filename=\"{}.csv\"", r.view);
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, name),
        ],
        out,
    )
        .into_response())
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn query(q: Result<Query<Filter>, axum::extract::rejection::QueryRejection>) -> ApiResult<Filter> {
    q.map(|Query(f)| f).map_err(|e| bad("query", e.body_text()))
}

/// `GET /api/reports/calls`: one row per call (the view `reporting.call_history`).
pub async fn calls(
    State(p): State<Portal>,
    who: Authed,
    q: Result<Query<Filter>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    report(&p, &who, &CALLS, query(q)?).await
}

/// `GET /api/reports/agents`: per agent and day (`reporting.agent_daily`).
pub async fn agents(
    State(p): State<Portal>,
    who: Authed,
    q: Result<Query<Filter>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    report(&p, &who, &AGENTS, query(q)?).await
}

/// `GET /api/reports/pauses`: pause time per agent, day and reason (`reporting.agent_pause_daily`).
pub async fn pauses(
    State(p): State<Portal>,
    who: Authed,
    q: Result<Query<Filter>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    report(&p, &who, &PAUSES, query(q)?).await
}

/// `GET /api/reports/queues`: per queue and 15 minutes (`reporting.queue_intervals`).
pub async fn queues(
    State(p): State<Portal>,
    who: Authed,
    q: Result<Query<Filter>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    report(&p, &who, &QUEUES, query(q)?).await
}
