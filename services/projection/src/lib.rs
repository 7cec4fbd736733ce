//! The projection service: read models built from the event store, each with its checkpoint
//! in the same transaction as its rows.
//!
//! The reporting read models ([`reporting`]) are for analysts: call history, agent activity,
//! queue statistics, in the schema `reporting`, rebuildable from the store at any time.
//!
//! The portal read model ([`agent_view`]) keeps one [`cc_contracts::views::AgentView`] per
//! agent; every change is also published on `<p>.views.<tenant>.agent.<agent>` after commit,
//! which is how the portal's live updates arrive.

pub mod agent_view;
pub mod portal;
pub mod reporting;

use cc_runtime::Context;

pub const MIGRATIONS: &[cc_eventstore::Migration] = &[
    cc_eventstore::Migration {
        version: 1,
        name: "portal_read_model",
        sql: include_str!("../sql/0001_portal_read_model.sql"),
    },
    cc_eventstore::Migration {
        version: 2,
        name: "call_info",
        sql: include_str!("../sql/0002_call_info.sql"),
    },
];

/// Runs the projections until `ctx.cancel`. One process projects each at a time (a lease
/// per projection); others stand by.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let (portal, reporting) = tokio::join!(portal::run(ctx.clone()), reporting::run(ctx));
    portal.and(reporting)
}
