//! The pbx-sim service.

use cc_runtime::Context;

/// The pbx-sim service's tables.
pub const MIGRATIONS: &[cc_eventstore::Migration] = &[];

/// Runs the pbx-sim service until `ctx.cancel`.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    ctx.cancel.cancelled().await;
    Ok(())
}
