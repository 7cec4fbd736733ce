//! What the agent's desk shows beside the Call Details: the callers waiting in each of the
//! agent's queues (`GET /api/me/queues`) and the agent's calls today (`GET /api/me/calls`),
//! both from the reporting model (a moment behind the events) and limited to the signed-in
//! agent; and the wrap-up's disposition and note (`POST /api/call/wrap-up/disposition`).

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{not_found, ApiError, ApiResult};
use crate::identity::Authed;
use crate::route::{Body, NoContent, Route, Tag, AGENT};
use crate::Portal;

fn unavailable(what: &str, e: sqlx::Error) -> ApiError {
    ApiError(cc_bus::CommandError::new(
        "unavailable",
        format!("{what} cannot be read now: {e}"),
    ))
}

/// One of the agent's queues and its callers waiting now.
#[derive(Serialize, JsonSchema)]
pub struct QueueWaiting {
    queue: String,
    name: String,
    /// Whether the agent is logged into the queue (else only assigned to it).
    logged_in: bool,
    /// Callers waiting in the queue now.
    waiting: i64,
    /// Since when the longest-waiting caller waits (null when none waits).
    longest_waiting_since: Option<DateTime<Utc>>,
    /// The disposition codes the agent picks from in this queue's wrap-up.
    dispositions: Vec<String>,
    /// A disposition must be given before the agent is available again.
    disposition_required: bool,
}

/// `GET /api/me/queues`: the callers waiting and the longest wait in each queue the agent is
/// assigned to or logged into, and the queue of the agent's current call; no other queue.
pub async fn queues(State(p): State<Portal>, who: Authed) -> ApiResult<Json<Vec<QueueWaiting>>> {
    let agent = who.agent()?;
    let view = crate::views::agent(&p.ctx.pool, who.tenant(), agent.as_str())
        .await?
        .ok_or_else(|| not_found(format!("no view of agent {agent} yet")))?;
    let mut mine: Vec<String> = view
        .assigned_queues
        .iter()
        .chain(view.queues.iter())
        .map(|q| q.queue.clone())
        .collect();
    // The queue of the agent's call too (a call transferred from a queue they are not in):
    // its wrap-up asks for that queue's dispositions.
    if let Some(q) = view.current_call.as_ref().and_then(|c| c["queue"].as_str()) {
        mine.push(q.to_string());
    }
    mine.sort();
    mine.dedup();
    let rows: Vec<(String, String, i64, Option<DateTime<Utc>>)> = sqlx::query_as(
        "select q.queue, q.name, count(s.call), min(s.started_at)
           from rm_queue_names q
           left join reporting.call_segments s
             on s.tenant = q.tenant and s.queue = q.queue and s.kind = 'queue' and s.ended_at is null
          where q.tenant = $1 and q.queue = any($2)
          group by q.queue, q.name order by q.queue",
    )
    .bind(who.tenant())
    .bind(&mine)
    .fetch_all(&p.ctx.pool)
    .await
    .map_err(|e| unavailable("queue figures", e))?;
    let settings = p
        .ctx
        .bus
        .request(&who.context(), &cc_contracts::queue::ListQueues {})
        .await?;
    Ok(Json(
        rows.into_iter()
            .map(|(queue, name, waiting, since)| {
                let s = settings
                    .iter()
                    .find(|q| q.queue.as_str() == queue)
                    .map(|q| q.settings.clone())
                    .unwrap_or_default();
                QueueWaiting {
                    logged_in: view.queues.iter().any(|q| q.queue == queue),
                    queue,
                    name,
                    waiting,
                    longest_waiting_since: since,
                    dispositions: s.dispositions,
                    disposition_required: s.disposition_required,
                }
            })
            .collect(),
    ))
}

/// One of the agent's calls today.
#[derive(Serialize, JsonSchema)]
pub struct RecentCall {
    call: String,
    /// When the call first rang the agent's phone (or, transferred to them, connected).
    at: DateTime<Utc>,
    caller_number: String,
    caller_name: String,
    queue: String,
    queue_name: String,
    /// answered, in_progress (connected now), ringing (now), missed (rang out at least once,
    /// never answered by the agent), rejected, or withdrawn (stopped ringing before an answer:
    /// the caller hung up, another agent answered, the agent logged out); for an outbound call
    /// also dialing (now) and not_connected (busy, no answer, cancelled...).
    #[schemars(extend("enum" = ["answered", "in_progress", "ringing", "missed", "rejected", "withdrawn", "dialing", "not_connected"]))]
    outcome: String,
    /// The agent's talk time on the call, hold excluded (0 when not answered).
    talk_ms: i64,
    /// The disposition the agent gave in wrap-up, if any.
    disposition: Option<String>,
    /// inbound (a queue call) or outbound (the agent dialled it; `caller_number` is the number
    /// dialled, `queue` and `queue_name` empty).
    #[schemars(extend("enum" = ["inbound", "outbound"]))]
    direction: String,
}

/// `GET /api/me/calls`: the agent's calls today (the tenant's day, in its time zone), newest
/// first, at most 100.
pub async fn calls(State(p): State<Portal>, who: Authed) -> ApiResult<Json<Vec<RecentCall>>> {
    let agent = who.agent()?;
    type Row = (
        String,
        DateTime<Utc>,
        String,
        String,
        String,
        String,
        String,
        i64,
        Option<String>,
        String,
    );
    let rows: Vec<Row> = sqlx::query_as(include_str!("../../sql/recent_calls.sql"))
        .bind(who.tenant())
        .bind(agent.as_str())
        .fetch_all(&p.ctx.pool)
        .await
        .map_err(|e| unavailable("your calls today", e))?;
    Ok(Json(
        rows.into_iter()
            .map(
                |(
                    call,
                    at,
                    caller_number,
                    caller_name,
                    queue,
                    queue_name,
                    outcome,
                    talk_ms,
                    disposition,
                    direction,
                )| {
                    RecentCall {
                        call,
                        at,
                        caller_number,
                        caller_name,
                        queue,
                        queue_name,
                        outcome,
                        talk_ms,
                        disposition,
                        direction,
                    }
                },
            )
            .collect(),
    ))
}

/// A disposition, a note or both (a blank one counts as not given); the note may have line
/// breaks but no other control characters.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("anyOf" = [
    { "required": ["disposition"], "properties": { "disposition": { "type": "string", "pattern": "\\S" } } },
    { "required": ["note"], "properties": { "note": { "type": "string", "pattern": "\\S" } } }
]))]
pub struct DispositionBody {
    /// One of the queue's disposition codes (GET /api/me/queues).
    #[serde(default)]
    #[schemars(example = &"Sale")]
    disposition: Option<String>,
    /// A free-text note: trimmed, at most 1000 characters.
    #[serde(default)]
    #[schemars(
        length(max = 1000),
        pattern(r"^[^\u0000-\u0009\u000b-\u001f\u007f-\u009f]*$"),
        example = &"Wants a call back on Monday"
    )]
    note: Option<String>,
}

/// `POST /api/call/wrap-up/disposition`: in wrap-up, the call's disposition (one of the
/// queue's codes) and/or a note. Sent again, the last one counts.
pub async fn disposition(
    State(p): State<Portal>,
    who: Authed,
    Body(b): Body<DispositionBody>,
) -> ApiResult<NoContent> {
    let agent = who.agent()?;
    p.ctx
        .bus
        .request(
            &who.context(),
            &cc_contracts::call::RecordDisposition {
                agent,
                disposition: b.disposition,
                note: b.note,
            },
        )
        .await?;
    Ok(NoContent)
}

pub(crate) fn routes() -> Vec<Route> {
    vec![
        Route::get("/api/me/queues", queues)
            .tag(Tag::Agent)
            .roles(AGENT)
            .summary("The callers waiting in each of the agent's queues")
            .description("Each queue the signed-in agent is assigned to or logged into, and the queue of their current call (a call transferred to them from another queue: its wrap-up uses that queue's dispositions); no other queue of the tenant; with its callers waiting now and since when the longest-waiting one waits. From the reporting model, a moment behind the events. The Agent Portal asks every 3 seconds while the page is visible. Agents only.")
            .commands(&["not_found", "unavailable"])
            .notes(&[(404, "No view of the agent yet")]),
        Route::get("/api/me/calls", calls)
            .tag(Tag::Agent)
            .roles(AGENT)
            .summary("The agent's calls today")
            .description("The signed-in agent's calls since the start of the tenant's day (in the tenant's time zone), newest first, at most 100: each call that rang the agent's phone, was transferred to them or that they dialled (an outbound call). From the reporting model (reporting.calls and reporting.call_segments), a moment behind the events. Agents only.")
            .refuses(&["unavailable"]),
        Route::post("/api/call/wrap-up/disposition", disposition)
            .tag(Tag::Agent)
            .roles(AGENT)
            .summary("In wrap-up: the call's disposition and/or a note")
            .description("Records the disposition (one of the queue's codes, see GET /api/me/queues) and/or a free-text note of the call the agent is wrapping up, as a CallDispositionRecorded event on the call's stream and in reporting.calls (disposition, disposition_note, disposition_agent). Sent again during the wrap-up, the last one counts. The note is trimmed, at most 1000 characters, and may hold line breaks but no other control characters. A queue with disposition_required keeps the agent in wrap-up until a disposition is given.")
            .commands(&["not_in_wrap_up", "unknown_disposition"])
            .notes(&[
                (400, "A field is malformed (note too long or with control characters), or neither disposition nor note given"),
                (422, "Not one of the queue's codes (the message lists them)"),
            ]),
    ]
}
