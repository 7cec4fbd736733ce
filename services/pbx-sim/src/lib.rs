//! The PBX simulator. It implements the PBX contract ([`cc_contracts::pbx`]) the way a real
//! PBX adapter would, and adds a control surface (HTTP, and NATS commands used by the CLI) to
//! play the phones and the callers: register and unregister devices, put a caller into a
//! queue, make a phone answer, reject or hang up, make a caller hang up. (The traffic
//! generator and the ACD that uses all this arrive with the rest of the calls work.)

pub mod calls;
pub mod control;
mod devices;
mod http;
pub mod traffic;

use cc_bus::CommandHandlers;
use cc_contracts::pbx::*;
use cc_runtime::Context;

/// What the simulator's handlers share.
#[derive(Clone)]
pub struct Sim {
    pub ctx: Context,
    pub calls: calls::Calls,
    /// The running traffic generator of each tenant.
    pub traffic: std::sync::Arc<
        tokio::sync::Mutex<std::collections::HashMap<String, tokio_util::sync::CancellationToken>>,
    >,
}

pub use devices::DEMO_DEVICES;

pub const MIGRATIONS: &[cc_eventstore::Migration] = &[cc_eventstore::Migration {
    version: 1,
    name: "pbx_sim",
    sql: include_str!("../sql/0001_pbx_sim.sql"),
}];

/// Runs the simulator until `ctx.cancel`: the PBX contract's commands, the control commands,
/// the HTTP control surface, and in demo mode the demo tenant's devices.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    ctx.bus.ensure_pbx_stream().await?;
    let sim_state = Sim {
        ctx: ctx.clone(),
        calls: calls::Calls::new(ctx.clone()),
        traffic: Default::default(),
    };
    // The tenants whose PBX is the SIP gateway are not the simulator's.
    let scope = cc_bus::TenantScope::Except(ctx.config.sip.tenants.clone());
    if ctx.config.demo && scope.serves("demo") {
        devices::seed_demo(&ctx, &sim_state.calls.registry).await?;
    }
    let pbx = CommandHandlers::new("pbx", sim_state.clone())
        .with_metrics(ctx.metrics.commands.clone())
        .with_tenants(scope)
        .on(|s: Sim, c, _: ListDevices| async move { devices::list(&s.ctx.pool, &c.tenant).await })
        .on(|s: Sim, c, cmd: Originate| async move { s.calls.originate(&c.tenant, cmd).await })
        .on(|s: Sim, c, cmd: CheckRoute| async move { s.calls.check_route(&c.tenant, &cmd.endpoint).await })
        .on(|s: Sim, c, cmd: Answer| async move { s.calls.answer(&c.tenant, &cmd.channel).await })
        .on(|s: Sim, c, cmd: Bridge| async move { s.calls.bridge(&c.tenant, &cmd.bridge, &cmd.channels).await })
        .on(|s: Sim, c, cmd: Unbridge| async move { s.calls.unbridge(&c.tenant, &cmd.channel).await })
        .on(|s: Sim, c, cmd: Hold| async move { s.calls.hold(&c.tenant, &cmd.channel, cmd.held).await })
        .on(|s: Sim, c, cmd: Hangup| async move { s.calls.hangup(&c.tenant, &cmd.channel, cmd.cause).await })
        .on(|s: Sim, c, cmd: CancelRing| async move { s.calls.cancel_ring(&c.tenant, &cmd.channel).await })
        .on(|s: Sim, c, _: ListChannels| async move { Ok(s.calls.list(&c.tenant).await) })
        .on(|s: Sim, c, cmd: SetBridgeMode| async move { s.calls.set_bridge_mode(&c.tenant, &cmd.channel, cmd.mode, cmd.bridge.as_deref()).await });
    let sim = control::handlers(sim_state.clone());
    let listener = tokio::net::TcpListener::bind(&ctx.config.pbx_sim_addr)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on pbx_sim_addr {} (CC_PBX_SIM_ADDR): {e}",
                ctx.config.pbx_sim_addr
            )
        })?;
    tracing::info!(addr = %ctx.config.pbx_sim_addr, "PBX simulator control surface");
    let facts = sim_state.calls.facts.clone();
    let app = http::router(sim_state);
    let cancel = ctx.cancel.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(cancel.cancelled_owned())
            .await
    });
    let (a, b) = tokio::join!(
        pbx.serve(ctx.bus.clone(), ctx.cancel.clone()),
        sim.serve(ctx.bus.clone(), ctx.cancel.clone())
    );
    a?;
    b?;
    server.await??;
    // What the phones did last is reported before the process ends, when JetStream takes it.
    if !facts.drained(std::time::Duration::from_secs(5)).await {
        tracing::warn!(
            waiting = facts.waiting(),
            "stopping with PBX facts JetStream has not taken"
        );
    }
    Ok(())
}
