//! Session commands: gather the facts, decide, record the events with the snapshot.

use cc_bus::{CommandContext, CommandError};
use cc_contracts::auth::{AgentAccount, GetAgent};
use cc_contracts::domain::{AgentNumber, DeviceId, QueueNumber};
use cc_contracts::encode;
use cc_contracts::queue::GetAssignments;
use cc_contracts::session::*;
use cc_eventstore::{ExpectedVersion, StreamName};
use cc_runtime::Context;
use sqlx::Row;
use uuid::Uuid;

use crate::domain::{self, Refusal, Session, SessionCommand};

fn refusal(r: Refusal) -> CommandError {
    let field = match &r {
        Refusal::AlreadyInQueue { .. } | Refusal::NotInQueue { .. } => Some("queue"),
        Refusal::AlreadyPaused { .. } => Some("reason"),
        _ => None,
    };
    CommandError {
        error: r.code().into(),
        message: r.message(),
        field: field.map(Into::into),
    }
}

pub fn state_of(agent: &AgentNumber, s: &Session, version: i64) -> SessionState {
    SessionState {
        agent: agent.clone(),
        logged_in: s.login.is_some(),
        device: s.login.as_ref().map(|l| l.device.clone()),
        queues: s
            .login
            .as_ref()
            .map(|l| l.queues.clone())
            .unwrap_or_default(),
        paused: s.login.as_ref().and_then(|l| l.paused.clone()),
        device_online: s.login.as_ref().map(|l| l.device_online).unwrap_or(false),
        version,
    }
}

async fn account(
    ctx: &Context,
    c: &CommandContext,
    agent: &AgentNumber,
) -> Result<AgentAccount, CommandError> {
    Ok(ctx
        .bus
        .request(
            &CommandContext::new(&c.tenant, "system:agent-session"),
            &GetAgent {
                agent: agent.clone(),
            },
        )
        .await?)
}

async fn assignments(
    ctx: &Context,
    c: &CommandContext,
    agent: &AgentNumber,
) -> Result<Vec<AssignedQueue>, CommandError> {
    Ok(ctx
        .bus
        .request(
            &CommandContext::new(&c.tenant, "system:agent-session"),
            &GetAssignments {
                agent: agent.clone(),
            },
        )
        .await?)
}

/// Loads the agent's session snapshot, locked for the rest of the transaction.
async fn lock(
    tx: &mut sqlx::PgConnection,
    tenant: &str,
    agent: &AgentNumber,
) -> Result<(Session, i64), CommandError> {
    sqlx::query("insert into as_sessions (tenant, agent, state, version) values ($1, $2, '{}', 0) on conflict do nothing")
        .bind(tenant)
        .bind(agent.as_str())
        .execute(&mut *tx)
        .await?;
    let row = sqlx::query(
        "select state, version from as_sessions where tenant = $1 and agent = $2 for update",
    )
    .bind(tenant)
    .bind(agent.as_str())
    .fetch_one(&mut *tx)
    .await?;
    let state: Session = serde_json::from_value(row.get(0)).unwrap_or_default();
    Ok((state, row.get(1)))
}

pub async fn get(
    ctx: &Context,
    tenant: &str,
    agent: &AgentNumber,
) -> Result<SessionState, CommandError> {
    let row =
        sqlx::query("select state, version from as_sessions where tenant = $1 and agent = $2")
            .bind(tenant)
            .bind(agent.as_str())
            .fetch_optional(&ctx.pool)
            .await?;
    let (s, v) = match row {
        Some(r) => (
            serde_json::from_value(r.get(0)).unwrap_or_default(),
            r.get(1),
        ),
        None => (Session::default(), 0),
    };
    Ok(state_of(agent, &s, v))
}

/// Decides `cmd` on the agent's session and records the events (with the device claim and the
/// snapshot) in one transaction.
pub async fn execute(
    ctx: &Context,
    c: &CommandContext,
    agent: &AgentNumber,
    cmd: SessionCommand,
) -> Result<SessionState, CommandError> {
    let mut tx = ctx.pool.begin().await?;
    let (session, version) = lock(&mut tx, &c.tenant, agent).await?;
    let events = domain::decide(agent, &session, cmd).map_err(refusal)?;
    if events.is_empty() {
        return Ok(state_of(agent, &session, version));
    }
    for e in &events {
        match e {
            AgentSessionEvent::AgentLoggedIn { device, .. } => {
                // Read the device's presence under a share lock: an unregistration arriving now
                // waits for this login to commit, then finds the claim and takes the agent out
                // of routing (no agent logged in on a device that went offline unnoticed).
                let registered: Option<bool> = sqlx::query_scalar(
                    "select registered from as_devices where tenant = $1 and device = $2 for share",
                )
                .bind(&c.tenant)
                .bind(device.as_str())
                .fetch_optional(&mut *tx)
                .await?;
                if registered != Some(true) {
                    return Err(CommandError::field(
                        "device_offline",
                        "device",
                        format!("Device {device} is not registered; make sure the phone is online, then try again"),
                    ));
                }
                let claimed = sqlx::query("insert into as_device_claims (tenant, device, agent) values ($1, $2, $3) on conflict do nothing")
                    .bind(&c.tenant)
                    .bind(device.as_str())
                    .bind(agent.as_str())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    == 1;
                if !claimed {
                    let owner: Option<String> = sqlx::query_scalar(
                        "select agent from as_device_claims where tenant = $1 and device = $2",
                    )
                    .bind(&c.tenant)
                    .bind(device.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
                    return Err(CommandError::field(
                        "device_in_use",
                        "device",
                        format!(
                            "Device {device} is in use by agent {}",
                            owner.unwrap_or_else(|| "?".into())
                        ),
                    ));
                }
            }
            AgentSessionEvent::AgentLoggedOut { .. } => {
                sqlx::query("delete from as_device_claims where tenant = $1 and agent = $2")
                    .bind(&c.tenant)
                    .bind(agent.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
            _ => {}
        }
    }
    let meta = c.metadata();
    let encoded: Vec<_> = events.iter().map(|e| encode(e, meta.clone())).collect();
    let stream = StreamName::new(&c.tenant, "agent", agent.as_str())
        .expect("agent numbers are valid stream ids");
    let r = ctx
        .store
        .append_in(&mut tx, &stream, ExpectedVersion::Exact(version), &encoded)
        .await?;
    let now = chrono::Utc::now();
    let mut next = events.iter().fold(session, domain::evolve);
    domain::stamp_login(&mut next, &events, now);
    sqlx::query("update as_sessions set state = $3, version = $4 where tenant = $1 and agent = $2")
        .bind(&c.tenant)
        .bind(agent.as_str())
        .bind(serde_json::to_value(&next).expect("state serializes"))
        .bind(r.stream_version)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    ctx.store.notify_committed();
    Ok(state_of(agent, &next, r.stream_version))
}

/// A device's presence as the PBX reported it: (known, registered).
async fn device_presence(
    ctx: &Context,
    tenant: &str,
    device: &DeviceId,
) -> Result<Option<bool>, CommandError> {
    Ok(
        sqlx::query_scalar("select registered from as_devices where tenant = $1 and device = $2")
            .bind(tenant)
            .bind(device.as_str())
            .fetch_optional(&ctx.pool)
            .await?,
    )
}

pub async fn login_options(
    ctx: &Context,
    c: &CommandContext,
    agent: &AgentNumber,
) -> Result<LoginOptions, CommandError> {
    let account = account(ctx, c, agent).await?;
    let assigned = assignments(ctx, c, agent).await?;
    let rows = sqlx::query(
        "select d.device, d.registered, cl.agent from as_devices d
           left join as_device_claims cl on cl.tenant = d.tenant and cl.device = d.device
          where d.tenant = $1 and d.registered order by d.device",
    )
    .bind(&c.tenant)
    .fetch_all(&ctx.pool)
    .await?;
    let devices = rows
        .iter()
        .filter_map(|r| {
            let in_use_by: Option<String> = r.get(2);
            Some(DeviceOption {
                device: DeviceId::parse(r.get::<&str, _>(0)).ok()?,
                online: r.get(1),
                in_use_by: in_use_by
                    .filter(|a| a != agent.as_str())
                    .and_then(|a| AgentNumber::parse(&a).ok()),
            })
        })
        .collect();
    Ok(LoginOptions {
        agent: agent.clone(),
        default_device: DeviceId::parse(agent.as_str())
            .expect("an agent number is a valid extension"),
        devices,
        assigned_queues: assigned,
        may_manage_queues: account.may_manage_queues,
    })
}

/// "Complete Login".
pub async fn login(
    ctx: &Context,
    c: &CommandContext,
    cmd: LoginAgent,
) -> Result<SessionState, CommandError> {
    let account = account(ctx, c, &cmd.agent).await?;
    if !account.enabled {
        return Err(CommandError::new(
            "account_disabled",
            "This account is disabled; ask your administrator",
        ));
    }
    let device = cmd.device.unwrap_or_else(|| {
        DeviceId::parse(cmd.agent.as_str()).expect("agent numbers are extensions")
    });
    match device_presence(ctx, &c.tenant, &device).await? {
        None => {
            return Err(CommandError::field(
                "unknown_device",
                "device",
                format!("There is no device {device} on this PBX"),
            ))
        }
        Some(false) => {
            return Err(CommandError::field(
                "device_offline",
                "device",
                format!(
                "Device {device} is not registered; make sure the phone is online, then try again"
            ),
            ))
        }
        Some(true) => {}
    }
    let assigned: Vec<QueueNumber> = assignments(ctx, c, &cmd.agent)
        .await?
        .into_iter()
        .map(|a| a.queue)
        .collect();
    let queues = match cmd.queues {
        None => assigned.clone(),
        Some(mut chosen) => {
            chosen.sort();
            chosen.dedup();
            if let Some(q) = chosen.iter().find(|q| !assigned.contains(q)) {
                return Err(CommandError::field(
                    "queue_not_assigned",
                    "queues",
                    format!("Agent {} is not assigned to queue {q}", cmd.agent),
                ));
            }
            let mut all = assigned.clone();
            all.sort();
            if chosen != all && !account.may_manage_queues {
                return Err(CommandError::field(
                    "queue_change_not_allowed",
                    "queues",
                    "This agent may not choose their queues; they log into every assigned queue",
                ));
            }
            chosen
        }
    };
    execute(
        ctx,
        c,
        &cmd.agent,
        SessionCommand::Login {
            device,
            queues,
            login_id: Uuid::now_v7(),
        },
    )
    .await
}

pub async fn logout(
    ctx: &Context,
    c: &CommandContext,
    cmd: LogoutAgent,
) -> Result<SessionState, CommandError> {
    account(ctx, c, &cmd.agent).await?; // an agent of another tenant, or none: unknown_agent
                                        // Not in the middle of a call (an account being disabled still ends the session).
    if cmd.reason != LogoutReason::AccountDisabled {
        let on_call = ctx
            .bus
            .request(
                &CommandContext::new(&c.tenant, "system:agent-session"),
                &cc_contracts::call::GetAgentCall {
                    agent: cmd.agent.clone(),
                },
            )
            .await;
        if let Ok(Some(_)) = on_call {
            return Err(CommandError::new(
                "on_call",
                if cmd.reason == LogoutReason::Supervisor {
                    format!(
                        "Agent {} is on a call: they can be logged out once the call has ended",
                        cmd.agent
                    )
                } else {
                    "The agent is on a call; hang up first, then log out".to_string()
                },
            ));
        }
    }
    execute(
        ctx,
        c,
        &cmd.agent,
        SessionCommand::Logout { reason: cmd.reason },
    )
    .await
}

pub async fn pause(
    ctx: &Context,
    c: &CommandContext,
    cmd: PauseAgent,
) -> Result<SessionState, CommandError> {
    if cmd.auto {
        return execute(
            ctx,
            c,
            &cmd.agent,
            SessionCommand::Pause { reason: cmd.reason },
        )
        .await;
    }
    let reasons = crate::settings::list_pause_reasons(&ctx.pool, &c.tenant).await?;
    let Some(reason) = reasons
        .iter()
        .find(|r| r.name.eq_ignore_ascii_case(cmd.reason.trim()))
    else {
        let valid: Vec<_> = reasons.iter().map(|r| r.name.as_str()).collect();
        return Err(CommandError::field(
            "unknown_pause_reason",
            "reason",
            format!(
                "{:?} is not a pause reason; valid reasons: {}",
                cmd.reason,
                valid.join(", ")
            ),
        ));
    };
    execute(
        ctx,
        c,
        &cmd.agent,
        SessionCommand::Pause {
            reason: reason.name.clone(),
        },
    )
    .await
}

pub async fn set_queue_membership(
    ctx: &Context,
    c: &CommandContext,
    cmd: SetQueueMembership,
) -> Result<SessionState, CommandError> {
    let account = account(ctx, c, &cmd.agent).await?;
    if !account.may_manage_queues {
        return Err(CommandError::field(
            "queue_change_not_allowed",
            "queue",
            "This agent may not add or remove themselves from queues; ask your administrator",
        ));
    }
    let assigned = assignments(ctx, c, &cmd.agent).await?;
    // Leaving a queue one is in is always allowed, even after being unassigned from it.
    let in_it = !cmd.member
        && get(ctx, &c.tenant, &cmd.agent)
            .await?
            .queues
            .contains(&cmd.queue);
    if !in_it && !assigned.iter().any(|a| a.queue == cmd.queue) {
        return Err(CommandError::field(
            "queue_not_assigned",
            "queue",
            format!("Agent {} is not assigned to queue {}", cmd.agent, cmd.queue),
        ));
    }
    let command = if cmd.member {
        SessionCommand::JoinQueue { queue: cmd.queue }
    } else {
        SessionCommand::LeaveQueue { queue: cmd.queue }
    };
    execute(ctx, c, &cmd.agent, command).await
}
