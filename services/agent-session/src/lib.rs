//! The agent-session service: each agent's session as an event-sourced aggregate (login on a
//! device with queues, pause with a reason, queue membership, logout), the tenant's pause
//! reasons and agent defaults, and device presence from the PBX.
//!
//! "What happens when an agent pauses" lives in [`domain`]; [`sessions`] gathers the facts a
//! decision needs and records its events; [`presence`] follows the PBX's device events and
//! the auth service's account events.

pub mod domain;
mod presence;
mod sessions;
mod settings;

use cc_bus::CommandHandlers;
use cc_contracts::session::*;
use cc_runtime::Context;

/// The agent-session service's tables.
pub const MIGRATIONS: &[cc_eventstore::Migration] = &[
    cc_eventstore::Migration {
        version: 1,
        name: "agent_session",
        sql: include_str!("../sql/0001_agent_session.sql"),
    },
    cc_eventstore::Migration {
        version: 2,
        name: "agent_session_monitoring_setting",
        sql: include_str!("../sql/0002_monitoring_setting.sql"),
    },
];

/// The command handlers of the agent-session service.
pub fn handlers(ctx: Context) -> CommandHandlers<Context> {
    CommandHandlers::new("agent-session", ctx.clone())
        .with_idempotency(ctx.pool.clone())
        .with_metrics(ctx.metrics.commands.clone())
        .on(|ctx, c, cmd: GetLoginOptions| async move { sessions::login_options(&ctx, &c, &cmd.agent).await })
        .on(|ctx, c, cmd: LoginAgent| async move { sessions::login(&ctx, &c, cmd).await })
        .on(|ctx, c, cmd: LogoutAgent| async move { sessions::logout(&ctx, &c, cmd).await })
        .on(|ctx, c, cmd: PauseAgent| async move { sessions::pause(&ctx, &c, cmd).await })
        .on(|ctx, c, cmd: UnpauseAgent| async move {
            sessions::execute(&ctx, &c, &cmd.agent, domain::SessionCommand::Unpause).await
        })
        .on(|ctx, c, cmd: SetQueueMembership| async move { sessions::set_queue_membership(&ctx, &c, cmd).await })
        .on(|ctx, c, cmd: GetSession| async move { sessions::get(&ctx, &c.tenant, &cmd.agent).await })
        .on(|ctx, c, _: ListPauseReasons| async move { settings::list_pause_reasons(&ctx.pool, &c.tenant).await })
        .on(|ctx, c, cmd: ChangePauseReason| async move { settings::change_pause_reason(&ctx, &c, cmd).await })
        .on(|ctx, c, _: GetAgentDefaults| async move { settings::agent_defaults(&ctx.pool, &c.tenant).await })
        .on(|ctx, c, cmd: SetAgentDefaults| async move { settings::set_agent_defaults(&ctx, &c, cmd).await })
}

/// Runs the agent-session service until `ctx.cancel`.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let presence = tokio::spawn(presence::follow_devices(ctx.clone()));
    let accounts = tokio::spawn(presence::follow_accounts(ctx.clone()));
    let cancel = ctx.cancel.clone();
    let bus = ctx.bus.clone();
    handlers(ctx).serve(bus, cancel).await?;
    let _ = presence.await;
    let _ = accounts.await;
    Ok(())
}
