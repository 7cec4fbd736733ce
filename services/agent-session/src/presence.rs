//! Facts from outside the session: device presence from the PBX, and account changes from the
//! auth service.
//!
//! A device that unregisters while its agent is logged in takes the agent out of routing
//! (`AgentDeviceWentOffline`; the portal shows "device offline"); the session stays, and the
//! agent is back in routing when the device registers again (`AgentDeviceCameOnline`).

use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;
use cc_bus::{consumer, CommandContext};
use cc_contracts::auth::{AgentAccountEvent, GetAgent};
use cc_contracts::domain::{AgentNumber, DeviceId};
use cc_contracts::pbx::{DeviceEvent, ListDevices};
use cc_contracts::queue::QueueEvent;
use cc_contracts::session::LogoutReason;
use cc_contracts::{decode_checked, Decoded};
use cc_eventstore::{CheckpointStore, ReadFilter, Subscription};
use cc_runtime::Context;
use chrono::{DateTime, Utc};

use crate::domain::SessionCommand;
use crate::sessions;

/// Follows the PBX's device events (and reconciles with its device list every 30 s).
pub async fn follow_devices(ctx: Context) {
    let reconcile = tokio::spawn(reconcile_periodically(ctx.clone()));
    while !ctx.cancel.is_cancelled() {
        if let Err(e) = consume_devices(&ctx).await {
            tracing::warn!(error = %format!("{e:#}"), "device presence consumer stopped; restarting");
            tokio::select! { _ = ctx.cancel.cancelled() => {}, _ = tokio::time::sleep(Duration::from_secs(1)) => {} }
        }
    }
    let _ = reconcile.await;
}

async fn consume_devices(ctx: &Context) -> anyhow::Result<()> {
    ctx.bus.ensure_pbx_stream().await?;
    let filter = ctx.bus.subjects.all_pbx_device_events();
    let c = consumer::durable(
        &ctx.bus,
        &ctx.bus.subjects.pbx_stream(),
        "agent-session-devices",
        vec![filter],
        DeliverPolicy::All,
    )
    .await?;
    consumer::run(c, ctx.cancel.clone(), |msg| {
        let ctx = ctx.clone();
        async move {
            // A fact this build cannot read is skipped, said and counted (acknowledged):
            // redelivered, it would come back every half second for good.
            let event: DeviceEvent = match serde_json::from_slice(&msg.payload) {
                Ok(event) => event,
                Err(error) => {
                    cc_bus::parked::unreadable("agent-session-devices", &msg, &error);
                    return Ok(());
                }
            };
            let (tenant, device, registered, at) = match event {
                DeviceEvent::DeviceRegistered { tenant, device, at } => (tenant, device, true, at),
                DeviceEvent::DeviceUnregistered { tenant, device, at } => {
                    (tenant, device, false, at)
                }
            };
            apply_presence(&ctx, &tenant, &device, registered, at).await
        }
    })
    .await
}

/// Records a device's presence (if newer than what is known) and tells its agent's session.
async fn apply_presence(
    ctx: &Context,
    tenant: &str,
    device: &DeviceId,
    registered: bool,
    at: DateTime<Utc>,
) -> anyhow::Result<()> {
    sqlx::query(
        "insert into as_devices (tenant, device, registered, updated_at) values ($1, $2, $3, $4)
         on conflict (tenant, device) do update set registered = excluded.registered, updated_at = excluded.updated_at
         where as_devices.updated_at <= excluded.updated_at",
    )
    .bind(tenant)
    .bind(device.as_str())
    .bind(registered)
    .bind(at)
    .execute(&ctx.pool)
    .await?;
    let current: bool =
        sqlx::query_scalar("select registered from as_devices where tenant = $1 and device = $2")
            .bind(tenant)
            .bind(device.as_str())
            .fetch_one(&ctx.pool)
            .await?;
    let owner: Option<String> =
        sqlx::query_scalar("select agent from as_device_claims where tenant = $1 and device = $2")
            .bind(tenant)
            .bind(device.as_str())
            .fetch_optional(&ctx.pool)
            .await?;
    if let Some(agent) = owner.and_then(|a| AgentNumber::parse(&a).ok()) {
        let cmd = if current {
            SessionCommand::DeviceOnline {
                device: device.clone(),
            }
        } else {
            SessionCommand::DeviceOffline {
                device: device.clone(),
            }
        };
        let c = CommandContext::new(tenant, "system:pbx");
        if let Err(e) = sessions::execute(ctx, &c, &agent, cmd).await {
            anyhow::bail!("could not record device presence for agent {agent}: {e}");
        }
    }
    Ok(())
}

async fn reconcile_periodically(ctx: Context) {
    loop {
        if let Err(e) = reconcile(&ctx).await {
            tracing::debug!(error = %format!("{e:#}"), "device reconciliation skipped");
        }
        tokio::select! { _ = ctx.cancel.cancelled() => return, _ = tokio::time::sleep(Duration::from_secs(30)) => {} }
    }
}

/// Asks the PBX for every tenant's devices and applies what differs (events missed while down).
async fn reconcile(ctx: &Context) -> anyhow::Result<()> {
    let tenants: Vec<String> =
        sqlx::query_scalar("select tenant from as_devices union select tenant from as_sessions")
            .fetch_all(&ctx.pool)
            .await?;
    for tenant in tenants {
        let list = ctx
            .bus
            .request(
                &CommandContext::new(&tenant, "system:agent-session"),
                &ListDevices {},
            )
            .await?;
        let now = Utc::now();
        for d in list {
            let known: Option<bool> = sqlx::query_scalar(
                "select registered from as_devices where tenant = $1 and device = $2",
            )
            .bind(&tenant)
            .bind(d.device.as_str())
            .fetch_optional(&ctx.pool)
            .await?;
            if known != Some(d.registered) {
                apply_presence(ctx, &tenant, &d.device, d.registered, now).await?;
            }
        }
    }
    Ok(())
}

/// Follows the directory: logs out agents whose account is disabled, and takes agents out of
/// a queue they are unassigned from. Replays are harmless: the current account state is
/// checked before acting, and leaving a queue one is not in changes nothing.
pub async fn follow_accounts(ctx: Context) {
    while !ctx.cancel.is_cancelled() {
        if let Err(e) = follow_accounts_once(&ctx).await {
            tracing::warn!(error = %format!("{e:#}"), "account follower stopped; restarting");
            tokio::select! { _ = ctx.cancel.cancelled() => {}, _ = tokio::time::sleep(Duration::from_secs(1)) => {} }
        }
    }
}

async fn follow_accounts_once(ctx: &Context) -> anyhow::Result<()> {
    const NAME: &str = "agent-session:accounts";
    let checkpoints = CheckpointStore::new(ctx.pool.clone());
    let from = checkpoints.load(NAME).await?;
    let mut sub = Subscription::new(ctx.store.clone(), ReadFilter::All, from)
        .await?
        .with_min_interval(std::time::Duration::from_millis(200));
    loop {
        let batch = tokio::select! {
            _ = ctx.cancel.cancelled() => return Ok(()),
            b = sub.next_batch() => b?,
        };
        for e in &batch {
            // What does not decode is parked and skipped: this follower acts on the current
            // state of an account or queue, so the next event of it is acted on as usual.
            let (queue_event, account_event) = (
                decode_checked::<QueueEvent>(e),
                decode_checked::<AgentAccountEvent>(e),
            );
            if let (Decoded::Undecodable(why), _) | (_, Decoded::Undecodable(why)) =
                (&queue_event, &account_event)
            {
                cc_bus::parked::park_now(
                    &ctx.pool,
                    NAME,
                    e,
                    cc_bus::parked::Reason::Undecodable,
                    why,
                )
                .await?;
            }
            if let Decoded::Event(QueueEvent::AgentUnassignedFromQueue { agent, queue }) =
                queue_event
            {
                let c = CommandContext::new(e.tenant(), "system:queue-router");
                if let Err(err) =
                    sessions::execute(ctx, &c, &agent, SessionCommand::LeaveQueue { queue }).await
                {
                    if err.error != "not_in_queue" && err.error != "not_logged_in" {
                        anyhow::bail!(
                            "could not take agent {agent} out of an unassigned queue: {err}"
                        );
                    }
                }
            }
            if let Decoded::Event(AgentAccountEvent::AgentAccountDisabled { agent }) = account_event
            {
                let c = CommandContext::new(e.tenant(), "system:auth");
                let account = ctx
                    .bus
                    .request(
                        &c,
                        &GetAgent {
                            agent: agent.clone(),
                        },
                    )
                    .await?;
                if !account.enabled {
                    let r = sessions::execute(
                        ctx,
                        &c,
                        &agent,
                        SessionCommand::Logout {
                            reason: LogoutReason::AccountDisabled,
                        },
                    )
                    .await;
                    if let Err(err) = r {
                        if err.error != "not_logged_in" {
                            anyhow::bail!("could not log out disabled agent {agent}: {err}");
                        }
                    }
                }
            }
        }
        checkpoints.save(NAME, sub.checkpoint()).await?;
    }
}
