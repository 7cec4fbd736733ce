//! The queue-router service: queues and the agents assigned to them (with a penalty: lower is
//! asked first by linear routing). Routing calls (the ACD) arrives with the calls issue.

mod queues;

use cc_bus::CommandHandlers;
use cc_contracts::queue::*;
use cc_runtime::Context;

/// The queue-router's tables.
pub const MIGRATIONS: &[cc_eventstore::Migration] =
    &[cc_eventstore::Migration { version: 1, name: "queues", sql: include_str!("../sql/0001_queues.sql") }];

pub fn handlers(ctx: Context) -> CommandHandlers<Context> {
    CommandHandlers::new("queue-router", ctx.clone())
        .with_idempotency(ctx.pool.clone())
        .with_metrics(ctx.metrics.commands.clone())
        .on(|ctx, c, cmd: CreateQueue| async move { queues::create(&ctx, &c, cmd).await })
        .on(|ctx, c, cmd: AssignAgent| async move { queues::assign(&ctx, &c, cmd).await })
        .on(|ctx, c, cmd: UnassignAgent| async move { queues::unassign(&ctx, &c, cmd).await })
        .on(|ctx, c, _: ListQueues| async move { queues::list(&ctx.pool, &c.tenant).await })
        .on(|ctx, c, cmd: GetAssignments| async move { queues::assignments(&ctx.pool, &c.tenant, &cmd.agent).await })
}

/// Runs the queue-router until `ctx.cancel`.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let cancel = ctx.cancel.clone();
    let bus = ctx.bus.clone();
    handlers(ctx).serve(bus, cancel).await?;
    Ok(())
}
