//! The wrap-up's disposition and note: the agent picks one of the queue's disposition codes
//! and may write a note; both are recorded on the call's stream (`CallDispositionRecorded`).
//! A queue that requires a disposition keeps the agent in wrap-up until one is given: End
//! wrap-up is refused (`disposition_required`) and the router's wrap-up timer waits (see
//! `Agent::disposition_pending` in the ACD).

use cc_bus::{CommandContext, CommandError};
use cc_contracts::call::{CallEvent, QueueSettings, RecordDisposition, NOTE_MAX_CHARS};
use cc_contracts::domain::{AgentNumber, QueueNumber};
use cc_contracts::encode;
use cc_eventstore::{ExpectedVersion, StreamName};
use cc_runtime::Context;
use sqlx::PgPool;

/// The call the agent is wrapping up, the version of its `WrapUpStarted` and the call stream's
/// version now (read in the same statement: the version a decision on this wrap-up is made on).
pub async fn call_in_wrap_up(
    pool: &PgPool,
    tenant: &str,
    agent: &AgentNumber,
) -> Result<Option<(String, i64, i64)>, CommandError> {
    Ok(sqlx::query_as(
        "select s.data->>'call', s.version,
                (select max(v.version) from es_events v where v.stream = s.stream)
           from es_events s
          where s.category = 'call' and s.tenant = $1 and s.event_type = 'WrapUpStarted' and s.data->>'agent' = $2
            and not exists (select 1 from es_events e where e.stream = s.stream and e.event_type = 'WrapUpEnded'
                              and e.data->>'agent' = $2 and e.version > s.version)
          order by s.xid desc, s.position desc limit 1",
    )
    .bind(tenant)
    .bind(agent.as_str())
    .fetch_optional(pool)
    .await?)
}

fn not_in_wrap_up(agent: &AgentNumber) -> CommandError {
    CommandError::new("not_in_wrap_up", format!("Agent {agent} is not in wrap-up"))
}

/// The queue whose wrap-up the agent is in for `call`: the queue they answered it from, or the
/// queue of the transfer that brought it to them.
async fn queue_of(
    pool: &PgPool,
    tenant: &str,
    call: &str,
    agent: &AgentNumber,
) -> Result<Option<QueueNumber>, CommandError> {
    let q: Option<String> = sqlx::query_scalar(
        "select data->>'queue' from es_events
          where category = 'call' and tenant = $1 and data->>'call' = $2
            and ((event_type = 'CallAnswered' and data->>'agent' = $3)
              or (event_type = 'TransferStarted' and data->>'target_agent' = $3))
            and data->>'queue' is not null
          order by version desc limit 1",
    )
    .bind(tenant)
    .bind(call)
    .bind(agent.as_str())
    .fetch_optional(pool)
    .await?;
    Ok(q.and_then(|q| QueueNumber::parse(&q).ok()))
}

async fn settings_of(
    pool: &PgPool,
    tenant: &str,
    queue: &QueueNumber,
) -> Result<QueueSettings, CommandError> {
    Ok(crate::queues::get(pool, tenant, queue)
        .await?
        .map(|q| q.settings)
        .unwrap_or_default())
}

/// Refuses to end a wrap-up whose queue requires a disposition not given yet.
pub async fn check_disposition_given(
    pool: &PgPool,
    tenant: &str,
    agent: &AgentNumber,
    call: &str,
    wrap_up_version: i64,
) -> Result<(), CommandError> {
    let Some(queue) = queue_of(pool, tenant, call, agent).await? else {
        return Ok(());
    };
    if !settings_of(pool, tenant, &queue)
        .await?
        .disposition_required
    {
        return Ok(());
    }
    let given: bool = sqlx::query_scalar(
        "select exists (select 1 from es_events where category = 'call' and tenant = $1 and data->>'call' = $2
            and event_type = 'CallDispositionRecorded' and data->>'agent' = $3 and data ? 'disposition'
            and version > $4)",
    )
    .bind(tenant)
    .bind(call)
    .bind(agent.as_str())
    .bind(wrap_up_version)
    .fetch_one(pool)
    .await?;
    if given {
        Ok(())
    } else {
        Err(CommandError::field(
            "disposition_required",
            "disposition",
            format!("Queue {queue} requires a disposition: choose one before ending the wrap-up"),
        ))
    }
}

/// The note as recorded: trimmed, None when empty; refused when too long or with control
/// characters other than line breaks.
pub fn parse_note(note: Option<String>) -> Result<Option<String>, CommandError> {
    let Some(note) = note else { return Ok(None) };
    let note = note.trim().replace("\r\n", "\n");
    if note.is_empty() {
        return Ok(None);
    }
    if note.chars().count() > NOTE_MAX_CHARS {
        return Err(CommandError::field(
            "invalid_field",
            "note",
            format!("The note is at most {NOTE_MAX_CHARS} characters"),
        ));
    }
    if note.chars().any(|c| c.is_control() && c != '\n') {
        return Err(CommandError::field(
            "invalid_field",
            "note",
            "The note may not contain control characters (line breaks are fine)",
        ));
    }
    Ok(Some(note))
}

/// Records the disposition and/or note of the call the agent is wrapping up.
pub async fn record_disposition(
    ctx: &Context,
    c: &CommandContext,
    cmd: RecordDisposition,
) -> Result<(), CommandError> {
    let note = parse_note(cmd.note)?;
    let disposition = cmd
        .disposition
        .map(|d| d.trim().to_string())
        .filter(|d| !d.is_empty());
    if disposition.is_none() && note.is_none() {
        return Err(CommandError::field(
            "missing_field",
            "disposition",
            "Give a disposition, a note or both",
        ));
    }
    let Some((call, _, version)) = call_in_wrap_up(&ctx.pool, &c.tenant, &cmd.agent).await? else {
        return Err(not_in_wrap_up(&cmd.agent));
    };
    let Some(queue) = queue_of(&ctx.pool, &c.tenant, &call, &cmd.agent).await? else {
        return Err(not_in_wrap_up(&cmd.agent));
    };
    let settings = settings_of(&ctx.pool, &c.tenant, &queue).await?;
    if let Some(d) = &disposition {
        if !settings.dispositions.contains(d) {
            let valid = if settings.dispositions.is_empty() {
                "it has none".to_string()
            } else {
                settings.dispositions.join(", ")
            };
            return Err(CommandError::field(
                "unknown_disposition",
                "disposition",
                format!("\"{d}\" is not a disposition of queue {queue} ({valid})"),
            ));
        }
    }
    let e = CallEvent::CallDispositionRecorded {
        call: call.clone(),
        agent: cmd.agent,
        queue,
        disposition,
        note,
    };
    let s = StreamName::new(&c.tenant, "call", &call)
        .map_err(|e| CommandError::internal(e.to_string()))?;
    let meta = c.metadata();
    ctx.store
        .append(&s, ExpectedVersion::Exact(version), &[encode(&e, meta)])
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_note;

    #[test]
    fn a_note_is_trimmed_bounded_and_free_of_control_characters() {
        assert_eq!(parse_note(None).unwrap(), None);
        assert_eq!(parse_note(Some("  \n ".into())).unwrap(), None);
        assert_eq!(
            parse_note(Some(" Call back\r\nat 5 ".into()))
                .unwrap()
                .as_deref(),
            Some("Call back\nat 5")
        );
        let e = parse_note(Some("bell\u{7}".into())).unwrap_err();
        assert_eq!(
            (e.error.as_str(), e.field.as_deref()),
            ("invalid_field", Some("note"))
        );
        assert!(parse_note(Some("x".repeat(1000))).is_ok());
        let e = parse_note(Some("x".repeat(1001))).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("note"));
    }
}
