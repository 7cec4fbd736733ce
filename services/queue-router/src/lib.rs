//! The queue-router service.

use cc_runtime::Context;

/// The queue-router service's tables.
pub const MIGRATIONS: &[cc_eventstore::Migration] = &[];

/// Runs the queue-router service until `ctx.cancel`.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    ctx.cancel.cancelled().await;
    Ok(())
}
