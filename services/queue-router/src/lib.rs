//! The queue-router service: queues, the agents assigned to them (with a penalty: lower is
//! asked first by linear routing), the queues' routing settings, and the ACD: waiting calls,
//! the choice of agent ([`acd`]), offers, ring timeouts, rejects, abandons, wrap-up.

pub mod acd;
mod fold;
mod metrics;
mod queue_core;
mod queues;
mod router;
mod wrap_up;

pub use acd::OFFER_PREFIX;

use cc_bus::CommandHandlers;
use cc_contracts::queue::*;
use cc_runtime::Context;

/// The queue-router's tables.
pub const MIGRATIONS: &[cc_eventstore::Migration] = &[
    cc_eventstore::Migration {
        version: 1,
        name: "queues",
        sql: include_str!("../sql/0001_queues.sql"),
    },
    cc_eventstore::Migration {
        version: 2,
        name: "queue_settings",
        sql: include_str!("../sql/0002_queue_settings.sql"),
    },
    cc_eventstore::Migration {
        version: 3,
        name: "parked",
        sql: include_str!("../sql/0003_parked.sql"),
    },
];

pub fn handlers(ctx: Context) -> CommandHandlers<Context> {
    CommandHandlers::new("queue-router", ctx.clone())
        .with_idempotency(ctx.pool.clone())
        .with_metrics(ctx.metrics.commands.clone())
        .on(|ctx, c, cmd: CreateQueue| async move { queues::create(&ctx, &c, cmd).await })
        .on(|ctx, c, cmd: AssignAgent| async move { queues::assign(&ctx, &c, cmd).await })
        .on(|ctx, c, cmd: UnassignAgent| async move { queues::unassign(&ctx, &c, cmd).await })
        .on(|ctx, c, _: ListQueues| async move { queues::list(&ctx.pool, &c.tenant).await })
        .on(|ctx, c, cmd: GetAssignments| async move {
            queues::assignments(&ctx.pool, &c.tenant, &cmd.agent).await
        })
        .on(
            |ctx, c, cmd: cc_contracts::call::ConfigureQueue| async move {
                queues::configure(&ctx, &c, cmd).await
            },
        )
        .on(|ctx, c, cmd: cc_contracts::call::EndWrapUp| async move {
            queues::end_wrap_up(&ctx, &c, cmd).await
        })
        .on(
            |ctx, c, cmd: cc_contracts::call::RecordDisposition| async move {
                wrap_up::record_disposition(&ctx, &c, cmd).await
            },
        )
}

/// Runs the queue-router until `ctx.cancel`: the queue administration commands (any replica)
/// and the router that distributes calls (one replica at a time).
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let router = tokio::spawn(router::run(ctx.clone()));
    let cancel = ctx.cancel.clone();
    let bus = ctx.bus.clone();
    handlers(ctx).serve(bus, cancel).await?;
    let _ = router.await;
    Ok(())
}
