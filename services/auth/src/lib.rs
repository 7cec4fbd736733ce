//! The auth service: tenants, agent and admin/supervisor accounts, argon2id credentials,
//! portal sessions (256-bit tokens, only their hash stored) and sign-in throttling.
//!
//! Every change updates the service's own tables and appends the event that records it in one
//! transaction. Secrets never enter events.

mod account;
mod accounts;
mod password;
mod pruning;
mod sessions;
mod throttle;

use cc_bus::{CommandError, CommandHandlers};
use cc_contracts::auth::*;
use cc_runtime::Context;

pub use sessions::SESSION_HOURS;

/// The auth service's tables.
pub const MIGRATIONS: &[cc_eventstore::Migration] = &[
    cc_eventstore::Migration {
        version: 1,
        name: "auth",
        sql: include_str!("../sql/0001_auth.sql"),
    },
    cc_eventstore::Migration {
        version: 2,
        name: "throttle_and_pruning",
        sql: include_str!("../sql/0002_throttle_and_pruning.sql"),
    },
];

/// The command handlers of the auth service.
pub fn handlers(ctx: Context) -> CommandHandlers<Context> {
    CommandHandlers::new("auth", ctx.clone())
        .with_idempotency(ctx.pool.clone())
        .with_metrics(ctx.metrics.commands.clone())
        .on(|ctx, c, cmd: SignIn| async move { sessions::sign_in(&ctx, &c, cmd).await })
        .on(|ctx, c, cmd: Authenticate| async move { sessions::authenticate(&ctx, &c.tenant, &cmd.token).await })
        .on(|ctx, c, cmd: SignOut| async move { sessions::sign_out(&ctx, &c, &cmd.token).await })
        .on(|ctx, c, cmd: CreateTenant| async move { accounts::create_tenant(&ctx, &c, cmd).await })
        .on(|ctx, c, cmd: CreateAgent| async move { accounts::create_agent(&ctx, &c, cmd).await })
        .on(|ctx, c, cmd: UpdateAgent| async move { accounts::update_agent(&ctx, &c, cmd).await })
        .on(|ctx, c, cmd: SetAgentPassword| async move { accounts::set_password(&ctx, &c, cmd).await })
        .on(|ctx, c, cmd: SetAgentEnabled| async move { accounts::set_enabled(&ctx, &c, cmd).await })
        .on(|ctx, c, cmd: GetAgent| async move {
            accounts::get_agent(&ctx.pool, &c.tenant, &cmd.agent)
                .await?
                .ok_or_else(|| accounts::unknown_agent(&cmd.agent))
        })
        .on(|ctx, c, _: ListAgents| async move { accounts::list_agents(&ctx.pool, &c.tenant).await })
        .on(|ctx, c, cmd: CreateUser| async move { accounts::create_user(&ctx, &c, cmd).await })
}

/// Runs the auth service until `ctx.cancel`: the command handlers and the pruning of expired
/// sessions and old throttle rows (every `CC_AUTH_PRUNE_SECS`).
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let cancel = ctx.cancel.clone();
    let bus = ctx.bus.clone();
    let stop_pruning = cancel.child_token();
    let pruning = tokio::spawn(pruning::run(
        ctx.pool.clone(),
        std::time::Duration::from_secs(ctx.config.auth_prune_secs),
        stop_pruning.clone(),
    ));
    let served = handlers(ctx).serve(bus, cancel).await;
    stop_pruning.cancel();
    pruning.await?;
    served?;
    Ok(())
}

fn unauthenticated() -> CommandError {
    CommandError::new(
        "unauthenticated",
        "the session has expired or was ended; please log in again",
    )
}
