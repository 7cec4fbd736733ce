//! The auth service.

use cc_runtime::Context;

/// The auth service's tables.
pub const MIGRATIONS: &[cc_eventstore::Migration] = &[];

/// Runs the auth service until `ctx.cancel`.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    ctx.cancel.cancelled().await;
    Ok(())
}
