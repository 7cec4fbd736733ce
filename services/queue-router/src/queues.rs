//! Queue administration: create, assign and unassign agents, list.

use cc_bus::{CommandContext, CommandError};
use cc_contracts::auth::GetAgent;
use cc_contracts::domain::{AgentNumber, QueueNumber};
use cc_contracts::encode;
use cc_contracts::queue::*;
use cc_contracts::session::AssignedQueue;
use cc_eventstore::{ExpectedVersion, StreamName};
use cc_runtime::Context;
use sqlx::{PgPool, Row};

use crate::queue_core::{QueueCommand, QueueCore, Refusal};
use cc_core::Decider;

fn stream(tenant: &str, queue: &QueueNumber) -> StreamName {
    StreamName::new(tenant, "queue", queue.as_str()).expect("queue numbers are valid stream ids")
}

fn unknown_queue(q: &QueueNumber) -> CommandError {
    CommandError::field("unknown_queue", "queue", format!("There is no queue {q}"))
}

pub async fn get(
    pool: &PgPool,
    tenant: &str,
    queue: &QueueNumber,
) -> Result<Option<QueueInfo>, CommandError> {
    load(&mut *pool.acquire().await?, tenant, queue, false).await
}

/// The queue as stored; with `lock`, its row is locked for the rest of the transaction (the
/// queue's writers decide one after the other).
async fn load(
    conn: &mut sqlx::PgConnection,
    tenant: &str,
    queue: &QueueNumber,
    lock: bool,
) -> Result<Option<QueueInfo>, CommandError> {
    let sql = if lock {
        "select name, settings from qr_queues where tenant = $1 and queue = $2 for update"
    } else {
        "select name, settings from qr_queues where tenant = $1 and queue = $2"
    };
    let row: Option<(String, Option<serde_json::Value>)> = sqlx::query_as(sql)
        .bind(tenant)
        .bind(queue.as_str())
        .fetch_optional(&mut *conn)
        .await?;
    let Some((name, settings)) = row else {
        return Ok(None);
    };
    let settings = settings
        .and_then(|s| serde_json::from_value(s).ok())
        .unwrap_or_default();
    let rows = sqlx::query("select agent, penalty from qr_members where tenant = $1 and queue = $2 order by penalty, agent")
        .bind(tenant)
        .bind(queue.as_str())
        .fetch_all(&mut *conn)
        .await?;
    let members = rows
        .iter()
        .filter_map(|r| {
            Some(QueueMember {
                agent: AgentNumber::parse(r.get::<&str, _>(0)).ok()?,
                penalty: r.get(1),
            })
        })
        .collect();
    Ok(Some(QueueInfo {
        queue: queue.clone(),
        name,
        members,
        settings,
    }))
}

/// Decides `cmd` on the queue (locked) with its core, keeps the tables in step with the events
/// and appends them at the version decided on. Returns the queue after them.
async fn change(
    ctx: &Context,
    c: &CommandContext,
    queue: &QueueNumber,
    cmd: QueueCommand,
) -> Result<Option<QueueInfo>, CommandError> {
    let mut tx = ctx.pool.begin().await?;
    let s = stream(&c.tenant, queue);
    let mut state = load(&mut tx, &c.tenant, queue, true).await?;
    let version = ctx.store.stream_version_in(&mut tx, &s).await?;
    let events = QueueCore::decide(&state, &cmd).map_err(refused)?;
    if events.is_empty() {
        return Ok(state);
    }
    for e in &events {
        let t = &c.tenant;
        match e {
            QueueEvent::QueueCreated { queue, name } => {
                // A row does not exist to be locked: the insert is the lock, and one made by
                // a create at the same instant means the queue exists.
                let inserted = sqlx::query(
                    "insert into qr_queues (tenant, queue, name) values ($1, $2, $3) on conflict do nothing",
                )
                .bind(t)
                .bind(queue.as_str())
                .bind(name)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if inserted == 0 {
                    return Err(refused(Refusal::QueueExists {
                        queue: queue.clone(),
                    }));
                }
            }
            QueueEvent::AgentAssignedToQueue {
                queue,
                agent,
                penalty,
            } => {
                sqlx::query(
                    "insert into qr_members (tenant, queue, agent, penalty) values ($1, $2, $3, $4)
                     on conflict (tenant, queue, agent) do update set penalty = excluded.penalty",
                )
                .bind(t)
                .bind(queue.as_str())
                .bind(agent.as_str())
                .bind(penalty)
                .execute(&mut *tx)
                .await?;
            }
            QueueEvent::AgentUnassignedFromQueue { queue, agent } => {
                sqlx::query(
                    "delete from qr_members where tenant = $1 and queue = $2 and agent = $3",
                )
                .bind(t)
                .bind(queue.as_str())
                .bind(agent.as_str())
                .execute(&mut *tx)
                .await?;
            }
            QueueEvent::QueueConfigured { queue, settings } => {
                sqlx::query("update qr_queues set settings = $3 where tenant = $1 and queue = $2")
                    .bind(t)
                    .bind(queue.as_str())
                    .bind(serde_json::to_value(settings).expect("settings serialize"))
                    .execute(&mut *tx)
                    .await?;
            }
        }
        QueueCore::evolve(&mut state, e);
    }
    let encoded: Vec<_> = events.iter().map(|e| encode(e, c.metadata())).collect();
    ctx.store
        .append_in(&mut tx, &s, ExpectedVersion::Exact(version), &encoded)
        .await?;
    tx.commit().await?;
    ctx.store.notify_committed();
    Ok(state)
}

/// A refusal of the queue's core as the API answers it.
fn refused(r: Refusal) -> CommandError {
    match r {
        Refusal::QueueExists { queue } => CommandError::field(
            "queue_exists",
            "queue",
            format!("Queue {queue} already exists"),
        ),
        Refusal::UnknownQueue { queue } => unknown_queue(&queue),
        Refusal::NotAssigned { queue, agent } => CommandError::field(
            "not_assigned",
            "agent",
            format!("Agent {agent} is not assigned to queue {queue}"),
        ),
    }
}

pub async fn list(pool: &PgPool, tenant: &str) -> Result<Vec<QueueInfo>, CommandError> {
    let queues: Vec<String> =
        sqlx::query_scalar("select queue from qr_queues where tenant = $1 order by queue")
            .bind(tenant)
            .fetch_all(pool)
            .await?;
    let mut out = Vec::new();
    for q in queues {
        if let Ok(q) = QueueNumber::parse(&q) {
            out.extend(get(pool, tenant, &q).await?);
        }
    }
    Ok(out)
}

pub async fn assignments(
    pool: &PgPool,
    tenant: &str,
    agent: &AgentNumber,
) -> Result<Vec<AssignedQueue>, CommandError> {
    let rows = sqlx::query(
        "select m.queue, q.name, m.penalty from qr_members m join qr_queues q on q.tenant = m.tenant and q.queue = m.queue
          where m.tenant = $1 and m.agent = $2 order by m.penalty, m.queue",
    )
    .bind(tenant)
    .bind(agent.as_str())
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            Some(AssignedQueue {
                queue: QueueNumber::parse(r.get::<&str, _>(0)).ok()?,
                name: r.get(1),
                penalty: r.get(2),
            })
        })
        .collect())
}

pub async fn create(
    ctx: &Context,
    c: &CommandContext,
    cmd: CreateQueue,
) -> Result<QueueInfo, CommandError> {
    let name = cc_contracts::domain::parse_name("name", "a queue name", &cmd.name, 80)
        .map_err(|e| CommandError::field("invalid_field", e.field, e.message))?;
    change(
        ctx,
        c,
        &cmd.queue,
        QueueCommand::Create {
            queue: cmd.queue.clone(),
            name,
        },
    )
    .await?
    .ok_or_else(|| unknown_queue(&cmd.queue))
}

pub async fn assign(
    ctx: &Context,
    c: &CommandContext,
    cmd: AssignAgent,
) -> Result<QueueInfo, CommandError> {
    if !(0..=1000).contains(&cmd.penalty) {
        return Err(CommandError::field(
            "invalid_field",
            "penalty",
            "a penalty is between 0 and 1000",
        ));
    }
    // The agent must exist in this tenant.
    ctx.bus
        .request(
            &CommandContext::new(&c.tenant, "system:queue-router"),
            &GetAgent {
                agent: cmd.agent.clone(),
            },
        )
        .await?;
    change(
        ctx,
        c,
        &cmd.queue,
        QueueCommand::Assign {
            queue: cmd.queue.clone(),
            agent: cmd.agent.clone(),
            penalty: cmd.penalty,
        },
    )
    .await?
    .ok_or_else(|| unknown_queue(&cmd.queue))
}

pub async fn unassign(
    ctx: &Context,
    c: &CommandContext,
    cmd: UnassignAgent,
) -> Result<QueueInfo, CommandError> {
    change(
        ctx,
        c,
        &cmd.queue,
        QueueCommand::Unassign {
            queue: cmd.queue.clone(),
            agent: cmd.agent.clone(),
        },
    )
    .await?
    .ok_or_else(|| unknown_queue(&cmd.queue))
}

fn check_settings(s: &cc_contracts::call::QueueSettings) -> Result<(), CommandError> {
    let range = |field: &str, v: i64, lo: i64, hi: i64| {
        if (lo..=hi).contains(&v) {
            Ok(())
        } else {
            Err(CommandError::field(
                "invalid_field",
                format!("settings.{field}"),
                format!("{field} is between {lo} and {hi}"),
            ))
        }
    };
    range("ring_timeout_s", s.ring_timeout_s, 1, 600)?;
    range("wrap_up_s", s.wrap_up_s, 0, 3600)?;
    range("max_wait_s", s.max_wait_s, 0, 86_400)?;
    range("reject_delay_s", s.reject_delay_s, 0, 3600)?;
    range("auto_pause_after", s.auto_pause_after, 0, 100)?;
    range("service_level_s", s.service_level_s, 1, 3600)?;
    check_dispositions(s)
}

/// The longest disposition code, and the most a queue may have.
const DISPOSITION_MAX_CHARS: usize = 40;
const DISPOSITIONS_MAX: usize = 50;

fn check_dispositions(s: &cc_contracts::call::QueueSettings) -> Result<(), CommandError> {
    let bad = |field: &str, why: String| {
        Err(CommandError::field(
            "invalid_field",
            format!("settings.{field}"),
            why,
        ))
    };
    if s.dispositions.len() > DISPOSITIONS_MAX {
        return bad(
            "dispositions",
            format!("a queue has at most {DISPOSITIONS_MAX} dispositions"),
        );
    }
    for (i, d) in s.dispositions.iter().enumerate() {
        if d.trim().is_empty() || d.trim() != d {
            return bad(
                &format!("dispositions[{i}]"),
                "a disposition is a non-empty name without leading or trailing spaces".into(),
            );
        }
        if d.chars().count() > DISPOSITION_MAX_CHARS {
            return bad(
                &format!("dispositions[{i}]"),
                format!("a disposition is at most {DISPOSITION_MAX_CHARS} characters"),
            );
        }
        if d.chars().any(char::is_control) {
            return bad(
                &format!("dispositions[{i}]"),
                "a disposition may not contain control characters".into(),
            );
        }
        if s.dispositions[..i].contains(d) {
            return bad(
                &format!("dispositions[{i}]"),
                format!("\"{d}\" is listed twice"),
            );
        }
    }
    if s.disposition_required && s.dispositions.is_empty() {
        return bad(
            "disposition_required",
            "a required disposition needs at least one disposition code".into(),
        );
    }
    Ok(())
}

/// Sets a queue's routing settings.
pub async fn configure(
    ctx: &Context,
    c: &CommandContext,
    cmd: cc_contracts::call::ConfigureQueue,
) -> Result<cc_contracts::call::QueueSettings, CommandError> {
    check_settings(&cmd.settings)?;
    change(
        ctx,
        c,
        &cmd.queue,
        QueueCommand::Configure {
            queue: cmd.queue.clone(),
            settings: cmd.settings.clone(),
        },
    )
    .await?;
    Ok(cmd.settings)
}

/// Ends the agent's wrap-up now (the agent is ready for the next call).
pub async fn end_wrap_up(
    ctx: &Context,
    c: &CommandContext,
    cmd: cc_contracts::call::EndWrapUp,
) -> Result<(), CommandError> {
    let call = crate::wrap_up::call_in_wrap_up(&ctx.pool, &c.tenant, &cmd.agent).await?;
    let Some((call, version, current)) = call else {
        return Err(CommandError::new(
            "not_in_wrap_up",
            format!("Agent {} is not in wrap-up", cmd.agent),
        ));
    };
    crate::wrap_up::check_disposition_given(&ctx.pool, &c.tenant, &cmd.agent, &call, version)
        .await?;
    let e = cc_contracts::call::CallEvent::WrapUpEnded {
        call: call.clone(),
        agent: cmd.agent,
        early: true,
    };
    let s = StreamName::new(&c.tenant, "call", &call)
        .map_err(|e| CommandError::internal(e.to_string()))?;
    ctx.store
        .append(
            &s,
            ExpectedVersion::Exact(current),
            &[encode(&e, c.metadata())],
        )
        .await?;
    Ok(())
}
