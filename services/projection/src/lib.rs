//! The projection service.

use cc_runtime::Context;

/// The projection service's tables.
pub const MIGRATIONS: &[cc_eventstore::Migration] = &[];

/// Runs the projection service until `ctx.cancel`.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    ctx.cancel.cancelled().await;
    Ok(())
}
