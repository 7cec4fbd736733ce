//! The call-control service.

use cc_runtime::Context;

/// The call-control service's tables.
pub const MIGRATIONS: &[cc_eventstore::Migration] = &[];

/// Runs the call-control service until `ctx.cancel`.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    ctx.cancel.cancelled().await;
    Ok(())
}
