//! The portal service.

use cc_runtime::Context;

/// The portal service's tables.
pub const MIGRATIONS: &[cc_eventstore::Migration] = &[];

/// Runs the portal service until `ctx.cancel`.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    ctx.cancel.cancelled().await;
    Ok(())
}
