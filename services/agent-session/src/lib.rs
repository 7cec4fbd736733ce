//! The agent-session service.

use cc_runtime::Context;

/// The agent-session service's tables.
pub const MIGRATIONS: &[cc_eventstore::Migration] = &[];

/// Runs the agent-session service until `ctx.cancel`.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    ctx.cancel.cancelled().await;
    Ok(())
}
