//! The projection service: read models built from the event store, each with its checkpoint
//! in the same transaction as its rows.
//!
//! The portal read model ([`agent_view`]) keeps one [`cc_contracts::views::AgentView`] per
//! agent; every change is also published on `<p>.views.<tenant>.agent.<agent>` after commit,
//! which is how the portal's live updates arrive.

pub mod agent_view;
mod portal;

use cc_runtime::Context;

pub const MIGRATIONS: &[cc_eventstore::Migration] = &[
    cc_eventstore::Migration { version: 1, name: "portal_read_model", sql: include_str!("../sql/0001_portal_read_model.sql") },
    cc_eventstore::Migration { version: 2, name: "call_info", sql: include_str!("../sql/0002_call_info.sql") },
];

/// Runs the projections until `ctx.cancel`. One process projects at a time (a lease);
/// others stand by.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    portal::run(ctx).await
}
