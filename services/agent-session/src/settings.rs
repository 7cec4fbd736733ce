//! Pause reasons and agent defaults of a tenant.

use cc_bus::{CommandContext, CommandError};
use cc_contracts::domain::parse_reason_name;
use cc_contracts::encode;
use cc_contracts::session::*;
use cc_eventstore::{ExpectedVersion, StreamName};
use cc_runtime::Context;
use sqlx::PgPool;

pub async fn list_pause_reasons(
    pool: &PgPool,
    tenant: &str,
) -> Result<Vec<PauseReason>, CommandError> {
    let names: Vec<String> = sqlx::query_scalar(
        "select name from as_pause_reasons where tenant = $1 and active order by position",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await?;
    Ok(names.into_iter().map(|name| PauseReason { name }).collect())
}

pub async fn change_pause_reason(
    ctx: &Context,
    c: &CommandContext,
    cmd: ChangePauseReason,
) -> Result<Vec<PauseReason>, CommandError> {
    let mut tx = ctx.pool.begin().await?;
    // Serialise changes of one tenant's reasons.
    sqlx::query("select pg_advisory_xact_lock(hashtext('pause_reasons:' || $1))")
        .bind(&c.tenant)
        .execute(&mut *tx)
        .await?;
    let stream = StreamName::new(&c.tenant, "settings", "pause_reasons").expect("valid");
    let version = ctx.store.stream_version_in(&mut tx, &stream).await?;
    let active: Vec<String> =
        sqlx::query_scalar("select name from as_pause_reasons where tenant = $1 and active")
            .bind(&c.tenant)
            .fetch_all(&mut *tx)
            .await?;
    let find = |n: &str| active.iter().find(|a| a.eq_ignore_ascii_case(n)).cloned();
    let bad = |field: &str, e: cc_contracts::domain::Invalid| {
        CommandError::field("invalid_field", field, e.message)
    };
    let event = match cmd {
        ChangePauseReason::Add { name } => {
            let name = parse_reason_name(&name).map_err(|e| bad("name", e))?;
            if find(&name).is_some() {
                return Err(CommandError::field(
                    "pause_reason_exists",
                    "name",
                    format!("{name:?} is already a pause reason"),
                ));
            }
            sqlx::query(
                "insert into as_pause_reasons (tenant, name, active) values ($1, $2, true)
                 on conflict (tenant, name) do update set active = true",
            )
            .bind(&c.tenant)
            .bind(&name)
            .execute(&mut *tx)
            .await?;
            SettingsEvent::PauseReasonAdded { name }
        }
        ChangePauseReason::Rename { from, to } => {
            let to = parse_reason_name(&to).map_err(|e| bad("to", e))?;
            let from = find(&from).ok_or_else(|| {
                CommandError::field(
                    "unknown_pause_reason",
                    "from",
                    format!("{from:?} is not a pause reason"),
                )
            })?;
            if find(&to).is_some_and(|t| t != from) {
                return Err(CommandError::field(
                    "pause_reason_exists",
                    "to",
                    format!("{to:?} is already a pause reason"),
                ));
            }
            sqlx::query(
                "delete from as_pause_reasons where tenant = $1 and name = $2 and not active",
            )
            .bind(&c.tenant)
            .bind(&to)
            .execute(&mut *tx)
            .await?;
            sqlx::query("update as_pause_reasons set name = $3 where tenant = $1 and name = $2")
                .bind(&c.tenant)
                .bind(&from)
                .bind(&to)
                .execute(&mut *tx)
                .await?;
            SettingsEvent::PauseReasonRenamed { from, to }
        }
        ChangePauseReason::Retire { name } => {
            let name = find(&name).ok_or_else(|| {
                CommandError::field(
                    "unknown_pause_reason",
                    "name",
                    format!("{name:?} is not a pause reason"),
                )
            })?;
            sqlx::query(
                "update as_pause_reasons set active = false where tenant = $1 and name = $2",
            )
            .bind(&c.tenant)
            .bind(&name)
            .execute(&mut *tx)
            .await?;
            SettingsEvent::PauseReasonRetired { name }
        }
    };
    ctx.store
        .append_in(
            &mut tx,
            &stream,
            ExpectedVersion::Exact(version),
            &[encode(&event, c.metadata())],
        )
        .await?;
    tx.commit().await?;
    ctx.store.notify_committed();
    list_pause_reasons(&ctx.pool, &c.tenant).await
}

pub async fn agent_defaults(pool: &PgPool, tenant: &str) -> Result<AgentDefaults, CommandError> {
    let v: Option<(bool, bool)> = sqlx::query_as(
        "select may_manage_queues, agents_see_monitoring from as_agent_defaults where tenant = $1",
    )
    .bind(tenant)
    .fetch_optional(pool)
    .await?;
    let (may_manage_queues, agents_see_monitoring) = v.unwrap_or((false, false));
    Ok(AgentDefaults {
        may_manage_queues,
        agents_see_monitoring,
    })
}

pub async fn set_agent_defaults(
    ctx: &Context,
    c: &CommandContext,
    cmd: SetAgentDefaults,
) -> Result<AgentDefaults, CommandError> {
    let mut tx = ctx.pool.begin().await?;
    sqlx::query("select pg_advisory_xact_lock(hashtext('agent_defaults:' || $1))")
        .bind(&c.tenant)
        .execute(&mut *tx)
        .await?;
    let stream = StreamName::new(&c.tenant, "settings", "agent_defaults").expect("valid");
    let version = ctx.store.stream_version_in(&mut tx, &stream).await?;
    let current: Option<(bool, bool)> = sqlx::query_as(
        "select may_manage_queues, agents_see_monitoring from as_agent_defaults where tenant = $1",
    )
    .bind(&c.tenant)
    .fetch_optional(&mut *tx)
    .await?;
    let next = AgentDefaults {
        may_manage_queues: cmd.may_manage_queues,
        agents_see_monitoring: cmd
            .agents_see_monitoring
            .unwrap_or(current.is_some_and(|(_, see)| see)),
    };
    if current == Some((next.may_manage_queues, next.agents_see_monitoring)) {
        return Ok(next);
    }
    sqlx::query(
        "insert into as_agent_defaults (tenant, may_manage_queues, agents_see_monitoring) values ($1, $2, $3)
         on conflict (tenant) do update set may_manage_queues = excluded.may_manage_queues,
                                            agents_see_monitoring = excluded.agents_see_monitoring",
    )
    .bind(&c.tenant)
    .bind(next.may_manage_queues)
    .bind(next.agents_see_monitoring)
    .execute(&mut *tx)
    .await?;
    let e = SettingsEvent::AgentDefaultsChanged {
        may_manage_queues: next.may_manage_queues,
        agents_see_monitoring: next.agents_see_monitoring,
    };
    ctx.store
        .append_in(
            &mut tx,
            &stream,
            ExpectedVersion::Exact(version),
            &[encode(&e, c.metadata())],
        )
        .await?;
    tx.commit().await?;
    ctx.store.notify_committed();
    Ok(next)
}
