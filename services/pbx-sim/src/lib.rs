//! The PBX simulator. It implements the PBX contract ([`cc_contracts::pbx`]) the way a real
//! PBX adapter would, and adds a control surface (HTTP, and NATS commands used by the CLI) to
//! play the phones: register and unregister devices. Calls (callers, ringing phones, the
//! traffic generator) arrive with the calls issue.

pub mod control;
mod devices;
mod http;

use cc_bus::CommandHandlers;
use cc_contracts::pbx::ListDevices;
use cc_runtime::Context;

pub use devices::DEMO_DEVICES;

pub const MIGRATIONS: &[cc_eventstore::Migration] =
    &[cc_eventstore::Migration { version: 1, name: "pbx_sim", sql: include_str!("../sql/0001_pbx_sim.sql") }];

/// Runs the simulator until `ctx.cancel`: the PBX contract's commands, the control commands,
/// the HTTP control surface, and in demo mode the demo tenant's devices.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    ctx.bus.ensure_pbx_stream().await?;
    if ctx.config.demo {
        devices::seed_demo(&ctx).await?;
    }
    let pbx = CommandHandlers::new("pbx", ctx.clone())
        .on(|ctx, c, _: ListDevices| async move { devices::list(&ctx.pool, &c.tenant).await });
    let sim = control::handlers(ctx.clone());
    let listener = tokio::net::TcpListener::bind(&ctx.config.pbx_sim_addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on pbx_sim_addr {} (CC_PBX_SIM_ADDR): {e}", ctx.config.pbx_sim_addr))?;
    tracing::info!(addr = %ctx.config.pbx_sim_addr, "PBX simulator control surface");
    let app = http::router(ctx.clone());
    let cancel = ctx.cancel.clone();
    let server = tokio::spawn(async move { axum::serve(listener, app).with_graceful_shutdown(cancel.cancelled_owned()).await });
    let (a, b) = tokio::join!(pbx.serve(ctx.bus.clone(), ctx.cancel.clone()), sim.serve(ctx.bus.clone(), ctx.cancel.clone()));
    a?;
    b?;
    server.await??;
    Ok(())
}
