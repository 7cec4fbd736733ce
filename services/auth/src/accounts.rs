//! Tenants, agent accounts and admin/supervisor accounts.

use cc_bus::{CommandContext, CommandError};
use cc_contracts::auth::*;
use cc_contracts::domain::AgentNumber;
use cc_contracts::encode;
use cc_contracts::session::GetAgentDefaults;
use cc_eventstore::{ExpectedVersion, StreamName};
use cc_runtime::Context;
use sqlx::{PgPool, Row};

use crate::account::{AccountCommand, AccountCore, Refusal};
use crate::password;
use cc_core::Decider;

pub fn unknown_agent(agent: &AgentNumber) -> CommandError {
    CommandError::field(
        "unknown_agent",
        "agent",
        format!("there is no agent {agent} in this tenant"),
    )
}

fn stream(tenant: &str, category: &str, id: &str) -> Result<StreamName, CommandError> {
    StreamName::new(tenant, category, id)
        .map_err(|e| CommandError::field("invalid_field", e.field, e.to_string()))
}

fn check_display_name(name: &str) -> Result<String, CommandError> {
    cc_contracts::domain::parse_name("display_name", "a display name", name, 80)
        .map_err(|e| CommandError::field("invalid_field", e.field, e.message))
}

pub async fn create_tenant(
    ctx: &Context,
    c: &CommandContext,
    cmd: CreateTenant,
) -> Result<bool, CommandError> {
    let s = stream(&c.tenant, "tenant", &c.tenant)?;
    let known: bool =
        sqlx::query_scalar("select exists (select 1 from pg_timezone_names where name = $1)")
            .bind(&cmd.time_zone)
            .fetch_one(&ctx.pool)
            .await?;
    if !known {
        return Err(CommandError::field(
            "invalid_field",
            "time_zone",
            format!(
                "{:?} is not a time zone name (e.g. Europe/Berlin, UTC)",
                cmd.time_zone
            ),
        ));
    }
    let name = cc_contracts::domain::parse_name("name", "a tenant's name", &cmd.name, 80)
        .map_err(|e| CommandError::field("invalid_field", e.field, e.message))?;
    let mut tx = ctx.pool.begin().await?;
    let inserted = sqlx::query(
        "insert into auth_tenants (tenant, name, demo) values ($1, $2, $3) on conflict do nothing",
    )
    .bind(&c.tenant)
    .bind(&name)
    .bind(cmd.demo)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if inserted {
        let e = TenantEvent::TenantCreated {
            tenant: c.tenant.clone(),
            name,
            demo: cmd.demo,
            time_zone: cmd.time_zone,
        };
        ctx.store
            .append_in(
                &mut tx,
                &s,
                ExpectedVersion::NoStream,
                &[encode(&e, c.metadata())],
            )
            .await?;
    }
    tx.commit().await?;
    ctx.store.notify_committed();
    Ok(inserted)
}

pub async fn get_agent(
    pool: &PgPool,
    tenant: &str,
    agent: &AgentNumber,
) -> Result<Option<AgentAccount>, sqlx::Error> {
    let row = sqlx::query("select display_name, may_manage_queues, enabled from auth_agents where tenant = $1 and agent = $2")
        .bind(tenant)
        .bind(agent.as_str())
        .fetch_optional(pool)
        .await?;
    Ok(row.map(|r| AgentAccount {
        agent: agent.clone(),
        display_name: r.get(0),
        may_manage_queues: r.get(1),
        enabled: r.get(2),
    }))
}

pub async fn list_agents(pool: &PgPool, tenant: &str) -> Result<Vec<AgentAccount>, CommandError> {
    let rows = sqlx::query("select agent, display_name, may_manage_queues, enabled from auth_agents where tenant = $1 order by agent")
        .bind(tenant)
        .fetch_all(pool)
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            Some(AgentAccount {
                agent: AgentNumber::parse(r.get::<&str, _>(0)).ok()?,
                display_name: r.get(1),
                may_manage_queues: r.get(2),
                enabled: r.get(3),
            })
        })
        .collect())
}

pub async fn create_agent(
    ctx: &Context,
    c: &CommandContext,
    cmd: CreateAgent,
) -> Result<AgentAccount, CommandError> {
    let display_name = check_display_name(&cmd.display_name)?;
    password::check_policy(&cmd.password)?;
    let may_manage_queues = match cmd.may_manage_queues {
        Some(v) => v,
        None => {
            ctx.bus
                .request(
                    &CommandContext::new(&c.tenant, &c.actor),
                    &GetAgentDefaults {},
                )
                .await?
                .may_manage_queues
        }
    };
    let hash = password::hash(cmd.password).await?;
    let s = stream(&c.tenant, "agent_account", cmd.agent.as_str())?;
    let mut tx = ctx.pool.begin().await?;
    let inserted = sqlx::query(
        "insert into auth_agents (tenant, agent, display_name, may_manage_queues, enabled, password_hash)
         values ($1, $2, $3, $4, true, $5) on conflict do nothing",
    )
    .bind(&c.tenant)
    .bind(cmd.agent.as_str())
    .bind(&display_name)
    .bind(may_manage_queues)
    .bind(&hash)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    // The insert is the account's lock: a row there already is an account that exists.
    let before = (inserted == 0).then(|| AgentAccount {
        agent: cmd.agent.clone(),
        display_name: String::new(),
        may_manage_queues: false,
        enabled: true,
    });
    let events = AccountCore::decide(
        &before,
        &AccountCommand::Create {
            agent: cmd.agent.clone(),
            display_name: display_name.clone(),
            may_manage_queues,
        },
    )
    .map_err(refused)?;
    append(ctx, &mut tx, c, &s, 0, &events).await?;
    tx.commit().await?;
    ctx.store.notify_committed();
    Ok(AgentAccount {
        agent: cmd.agent,
        display_name,
        may_manage_queues,
        enabled: true,
    })
}

/// Locks the agent's row for the rest of the transaction.
async fn lock_agent(
    tx: &mut sqlx::PgConnection,
    tenant: &str,
    agent: &AgentNumber,
) -> Result<AgentAccount, CommandError> {
    let r = sqlx::query(
        "select display_name, may_manage_queues, enabled from auth_agents where tenant = $1 and agent = $2 for update",
    )
    .bind(tenant)
    .bind(agent.as_str())
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| unknown_agent(agent))?;
    Ok(AgentAccount {
        agent: agent.clone(),
        display_name: r.get(0),
        may_manage_queues: r.get(1),
        enabled: r.get(2),
    })
}

pub async fn update_agent(
    ctx: &Context,
    c: &CommandContext,
    cmd: UpdateAgent,
) -> Result<AgentAccount, CommandError> {
    let display_name = cmd
        .display_name
        .as_deref()
        .map(check_display_name)
        .transpose()?;
    let mut tx = ctx.pool.begin().await?;
    let mut account = Some(lock_agent(&mut tx, &c.tenant, &cmd.agent).await?);
    let s = stream(&c.tenant, "agent_account", cmd.agent.as_str())?;
    let version = ctx.store.stream_version_in(&mut tx, &s).await?;
    let events = AccountCore::decide(
        &account,
        &AccountCommand::Update {
            agent: cmd.agent.clone(),
            display_name,
            may_manage_queues: cmd.may_manage_queues,
        },
    )
    .map_err(refused)?;
    for e in &events {
        AccountCore::evolve(&mut account, e);
    }
    let account = account.expect("an updated account exists");
    if events.is_empty() {
        return Ok(account);
    }
    sqlx::query("update auth_agents set display_name = $3, may_manage_queues = $4 where tenant = $1 and agent = $2")
        .bind(&c.tenant)
        .bind(cmd.agent.as_str())
        .bind(&account.display_name)
        .bind(account.may_manage_queues)
        .execute(&mut *tx)
        .await?;
    append(ctx, &mut tx, c, &s, version, &events).await?;
    tx.commit().await?;
    ctx.store.notify_committed();
    Ok(account)
}

/// Appends an account's events at the version they were decided on.
async fn append(
    ctx: &Context,
    tx: &mut sqlx::PgConnection,
    c: &CommandContext,
    s: &StreamName,
    version: i64,
    events: &[AgentAccountEvent],
) -> Result<(), CommandError> {
    let encoded: Vec<_> = events.iter().map(|e| encode(e, c.metadata())).collect();
    ctx.store
        .append_in(tx, s, ExpectedVersion::Exact(version), &encoded)
        .await?;
    Ok(())
}

/// A refusal of the account's core as the API answers it.
fn refused(r: Refusal) -> CommandError {
    match r {
        Refusal::UnknownAgent { agent } => unknown_agent(&agent),
        Refusal::AgentExists { agent } => CommandError::field(
            "agent_exists",
            "agent",
            format!("agent {agent} already exists"),
        ),
    }
}

pub async fn set_password(
    ctx: &Context,
    c: &CommandContext,
    cmd: SetAgentPassword,
) -> Result<(), CommandError> {
    password::check_policy(&cmd.password)?;
    let hash = password::hash(cmd.password).await?;
    let mut tx = ctx.pool.begin().await?;
    let account = Some(lock_agent(&mut tx, &c.tenant, &cmd.agent).await?);
    let s = stream(&c.tenant, "agent_account", cmd.agent.as_str())?;
    let version = ctx.store.stream_version_in(&mut tx, &s).await?;
    let events = AccountCore::decide(
        &account,
        &AccountCommand::ChangePassword {
            agent: cmd.agent.clone(),
        },
    )
    .map_err(refused)?;
    sqlx::query("update auth_agents set password_hash = $3 where tenant = $1 and agent = $2")
        .bind(&c.tenant)
        .bind(cmd.agent.as_str())
        .bind(&hash)
        .execute(&mut *tx)
        .await?;
    append(ctx, &mut tx, c, &s, version, &events).await?;
    tx.commit().await?;
    ctx.store.notify_committed();
    Ok(())
}

/// Enables or disables an agent. Disabling also ends the agent's portal sessions (here) and
/// the agent's session (the agent-session service reacts to `AgentAccountDisabled`).
pub async fn set_enabled(
    ctx: &Context,
    c: &CommandContext,
    cmd: SetAgentEnabled,
) -> Result<AgentAccount, CommandError> {
    let mut tx = ctx.pool.begin().await?;
    let mut account = Some(lock_agent(&mut tx, &c.tenant, &cmd.agent).await?);
    let s = stream(&c.tenant, "agent_account", cmd.agent.as_str())?;
    let version = ctx.store.stream_version_in(&mut tx, &s).await?;
    let events = AccountCore::decide(
        &account,
        &AccountCommand::SetEnabled {
            agent: cmd.agent.clone(),
            enabled: cmd.enabled,
        },
    )
    .map_err(refused)?;
    for e in &events {
        AccountCore::evolve(&mut account, e);
    }
    let account = account.expect("the account exists");
    if events.is_empty() {
        return Ok(account);
    }
    sqlx::query("update auth_agents set enabled = $3 where tenant = $1 and agent = $2")
        .bind(&c.tenant)
        .bind(cmd.agent.as_str())
        .bind(cmd.enabled)
        .execute(&mut *tx)
        .await?;
    append(ctx, &mut tx, c, &s, version, &events).await?;
    if !cmd.enabled {
        crate::sessions::revoke_all_in(ctx, &mut tx, c, cmd.agent.as_str(), "account_disabled")
            .await?;
    }
    tx.commit().await?;
    ctx.store.notify_committed();
    Ok(account)
}

pub async fn create_user(
    ctx: &Context,
    c: &CommandContext,
    cmd: CreateUser,
) -> Result<User, CommandError> {
    let username = cmd.username.trim().to_lowercase();
    if username.is_empty()
        || username.len() > 40
        || !username
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
    {
        return Err(CommandError::field(
            "invalid_field",
            "username",
            "a username is 1 to 40 of a-z, 0-9, '-' and '_'",
        ));
    }
    if cmd.role == Role::Agent {
        return Err(CommandError::field(
            "invalid_field",
            "role",
            "users are admins or supervisors; agents are created as agents",
        ));
    }
    let display_name = check_display_name(&cmd.display_name)?;
    password::check_policy(&cmd.password)?;
    let hash = password::hash(cmd.password).await?;
    let role = serde_json::to_value(cmd.role)
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    let mut tx = ctx.pool.begin().await?;
    let inserted = sqlx::query(
        "insert into auth_users (tenant, username, display_name, role, password_hash) values ($1, $2, $3, $4, $5) on conflict do nothing",
    )
    .bind(&c.tenant)
    .bind(&username)
    .bind(&display_name)
    .bind(&role)
    .bind(&hash)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Err(CommandError::field(
            "user_exists",
            "username",
            format!("user {username} already exists"),
        ));
    }
    let e = UserEvent::UserCreated {
        username: username.clone(),
        display_name: display_name.clone(),
        role: cmd.role,
    };
    let s = stream(&c.tenant, "user", &username)?;
    ctx.store
        .append_in(
            &mut tx,
            &s,
            ExpectedVersion::NoStream,
            &[encode(&e, c.metadata())],
        )
        .await?;
    tx.commit().await?;
    ctx.store.notify_committed();
    Ok(User {
        username,
        display_name,
        role: cmd.role,
    })
}
