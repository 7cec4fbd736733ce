//! Portal sessions: sign-in with throttling, token authentication, sign-out, revocation.

use cc_bus::{CommandContext, CommandError};
use cc_contracts::auth::*;
use cc_contracts::domain::AgentNumber;
use cc_contracts::encode;
use cc_eventstore::{ExpectedVersion, StreamName};
use cc_runtime::Context;
use chrono::{Duration, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::Row;
use uuid::Uuid;

use crate::{password, throttle, unauthenticated};

/// How long a portal session lasts (an agent's shift, with margin).
pub const SESSION_HOURS: i64 = 12;

fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn invalid_credentials(kind: LoginKind) -> CommandError {
    let what = match kind {
        LoginKind::Agent => "agent number or password",
        LoginKind::User => "username or password",
    };
    CommandError::new("invalid_credentials", format!("The {what} is not correct"))
}

fn role_from(s: &str) -> Role {
    serde_json::from_value(serde_json::Value::String(s.to_string())).unwrap_or(Role::Agent)
}

fn role_str(r: Role) -> &'static str {
    match r {
        Role::Agent => "agent",
        Role::Supervisor => "supervisor",
        Role::Admin => "admin",
    }
}

pub async fn sign_in(
    ctx: &Context,
    c: &CommandContext,
    cmd: SignIn,
) -> Result<SignedIn, CommandError> {
    let tenant_known: bool =
        sqlx::query_scalar("select exists(select 1 from auth_tenants where tenant = $1)")
            .bind(&c.tenant)
            .fetch_one(&ctx.pool)
            .await?;
    if !tenant_known {
        return Err(CommandError::new(
            "unknown_tenant",
            format!("there is no call center {:?} here", c.tenant),
        ));
    }
    let login = match cmd.kind {
        LoginKind::Agent => AgentNumber::parse(&cmd.login)
            .map_err(|e| CommandError::field("invalid_field", "agent_number", e.message))?
            .to_string(),
        LoginKind::User => cmd.login.trim().to_lowercase(),
    };
    if cmd.password.is_empty() {
        return Err(CommandError::field(
            "missing_field",
            "password",
            "password is required",
        ));
    }
    let kind = if cmd.kind == LoginKind::Agent {
        "agent"
    } else {
        "user"
    };
    let attempt = throttle::Attempt::new(&c.tenant, kind, &login, &cmd.client);
    let counts = throttle::begin(&ctx.pool, &attempt).await?;
    if let throttle::Verdict::Refuse { until } = throttle::decide(&counts) {
        throttle::refused(&ctx.pool, &attempt).await?;
        let secs = (until - Utc::now()).num_seconds().max(1);
        return Err(CommandError::new(
            "too_many_attempts",
            format!(
                "Too many failed sign-in attempts. Sign-in is locked; try again in {secs} seconds."
            ),
        ));
    }

    // (display name, role, enabled, hash)
    let found: Option<(String, Role, bool, String)> = match cmd.kind {
        LoginKind::Agent => sqlx::query("select display_name, enabled, password_hash from auth_agents where tenant = $1 and agent = $2")
            .bind(&c.tenant)
            .bind(&login)
            .fetch_optional(&ctx.pool)
            .await?
            .map(|r| (r.get(0), Role::Agent, r.get(1), r.get(2))),
        LoginKind::User => sqlx::query("select display_name, role, password_hash from auth_users where tenant = $1 and username = $2")
            .bind(&c.tenant)
            .bind(&login)
            .fetch_optional(&ctx.pool)
            .await?
            .map(|r| (r.get(0), role_from(r.get(1)), true, r.get(2))),
    };
    let ok = password::verify(cmd.password, found.as_ref().map(|f| f.3.clone())).await;
    let Some((display_name, role, enabled, _)) = found.filter(|_| ok) else {
        let delay = throttle::failed(&ctx.pool, &attempt, &counts).await?;
        tokio::time::sleep(delay).await;
        return Err(invalid_credentials(cmd.kind));
    };
    throttle::succeeded(&ctx.pool, &attempt).await?;
    if !enabled {
        return Err(CommandError::new(
            "account_disabled",
            "This account is disabled; ask your administrator",
        ));
    }

    let token = new_token();
    let session_id = Uuid::now_v7();
    let expires_at = Utc::now() + Duration::hours(SESSION_HOURS);
    let mut tx = ctx.pool.begin().await?;
    sqlx::query(
        "insert into auth_sessions (token_hash, session_id, tenant, principal, role, display_name, expires_at)
         values ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(token_hash(&token))
    .bind(session_id)
    .bind(&c.tenant)
    .bind(&login)
    .bind(role_str(role))
    .bind(&display_name)
    .bind(expires_at)
    .execute(&mut *tx)
    .await?;
    let s = StreamName::new(
        &c.tenant,
        "portal_session",
        &session_id.simple().to_string(),
    )
    .expect("valid name");
    let e = PortalSessionEvent::SignedIn {
        session_id,
        principal: login.clone(),
        role,
        expires_at,
    };
    let actor = format!("{kind}:{login}");
    ctx.store
        .append_in(
            &mut tx,
            &s,
            ExpectedVersion::NoStream,
            &[encode(&e, c.metadata_as(&actor))],
        )
        .await?;
    tx.commit().await?;
    ctx.store.notify_committed();
    Ok(SignedIn {
        token,
        principal: Principal {
            tenant: c.tenant.clone(),
            session_id,
            principal: login,
            role,
            display_name,
            expires_at,
        },
    })
}

pub async fn authenticate(
    ctx: &Context,
    tenant: &str,
    token: &str,
) -> Result<Principal, CommandError> {
    let row = sqlx::query(
        "select session_id, principal, role, display_name, expires_at from auth_sessions
          where token_hash = $1 and tenant = $2 and revoked_at is null and expires_at > now()",
    )
    .bind(token_hash(token))
    .bind(tenant)
    .fetch_optional(&ctx.pool)
    .await?
    .ok_or_else(unauthenticated)?;
    Ok(Principal {
        tenant: tenant.to_string(),
        session_id: row.get(0),
        principal: row.get(1),
        role: role_from(row.get(2)),
        display_name: row.get(3),
        expires_at: row.get(4),
    })
}

pub async fn sign_out(ctx: &Context, c: &CommandContext, token: &str) -> Result<(), CommandError> {
    let mut tx = ctx.pool.begin().await?;
    let row = sqlx::query(
        "update auth_sessions set revoked_at = now() where token_hash = $1 and tenant = $2 and revoked_at is null
         returning session_id, principal",
    )
    .bind(token_hash(token))
    .bind(&c.tenant)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(r) = row {
        let session_id: Uuid = r.get(0);
        let principal: String = r.get(1);
        append_signed_out(ctx, &mut tx, c, session_id, principal, "signed_out").await?;
    }
    tx.commit().await?;
    ctx.store.notify_committed();
    Ok(())
}

/// Ends every portal session of an agent (inside the caller's transaction).
pub async fn revoke_all_in(
    ctx: &Context,
    tx: &mut sqlx::PgConnection,
    c: &CommandContext,
    agent: &str,
    reason: &str,
) -> Result<(), CommandError> {
    let rows = sqlx::query(
        "update auth_sessions set revoked_at = now() where tenant = $1 and principal = $2 and role = 'agent' and revoked_at is null
         returning session_id",
    )
    .bind(&c.tenant)
    .bind(agent)
    .fetch_all(&mut *tx)
    .await?;
    for r in rows {
        append_signed_out(ctx, tx, c, r.get(0), agent.to_string(), reason).await?;
    }
    Ok(())
}

async fn append_signed_out(
    ctx: &Context,
    tx: &mut sqlx::PgConnection,
    c: &CommandContext,
    session_id: Uuid,
    principal: String,
    reason: &str,
) -> Result<(), CommandError> {
    let s = StreamName::new(
        &c.tenant,
        "portal_session",
        &session_id.simple().to_string(),
    )
    .expect("valid name");
    let e = PortalSessionEvent::SignedOut {
        session_id,
        principal,
        reason: reason.into(),
    };
    // The caller holds the session's row: no other sign-out of it decides meanwhile.
    let version = ctx.store.stream_version_in(tx, &s).await?;
    ctx.store
        .append_in(
            tx,
            &s,
            ExpectedVersion::Exact(version),
            &[encode(&e, c.metadata())],
        )
        .await?;
    Ok(())
}
