//! The targets of the binary and how each one runs.

use cc_runtime::Context;
use clap::ValueEnum;
use sqlx::PgPool;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    All,
    Relay,
    Auth,
    AgentSession,
    QueueRouter,
    CallControl,
    Projection,
    Portal,
    PbxSim,
    SipGateway,
    Webhooks,
}

impl Target {
    pub const ALL: [Target; 11] = [
        Target::All,
        Target::Relay,
        Target::Auth,
        Target::AgentSession,
        Target::QueueRouter,
        Target::CallControl,
        Target::Projection,
        Target::Portal,
        Target::PbxSim,
        Target::SipGateway,
        Target::Webhooks,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Target::All => "all",
            Target::Relay => "relay",
            Target::Auth => "auth",
            Target::AgentSession => "agent-session",
            Target::QueueRouter => "queue-router",
            Target::CallControl => "call-control",
            Target::Projection => "projection",
            Target::Portal => "portal",
            Target::PbxSim => "pbx-sim",
            Target::SipGateway => "sip-gateway",
            Target::Webhooks => "webhooks",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Target::All => "every target below, in one process",
            Target::Relay => "the outbox: committed events to JetStream, in store order (one active at a time)",
            Target::Auth => "credentials, portal sessions, roles, login throttling",
            Target::AgentSession => "agents' sessions: login, device, queues, pause",
            Target::QueueRouter => "queues, waiting calls, the choice of agent (ACD), offers",
            Target::CallControl => "calls from answer to end: hold, hangup, transfers",
            Target::Projection => "read models for the portal and reporting",
            Target::Portal => "the web UI and HTTP API for agents and admins, live updates",
            Target::PbxSim => "the PBX simulator: devices, callers, phones, traffic generator",
            Target::SipGateway => "the SIP gateway: registrar and B2BUA for real phones and trunks (tenants in CC_SIP_TENANTS)",
            Target::Webhooks => "webhooks: the tenants' events over HTTP, signed, in order, retried",
        }
    }

    /// `all` expanded into every concrete target, without duplicates.
    pub fn expand(targets: &[Target]) -> Vec<Target> {
        let mut out: Vec<Target> = Vec::new();
        for t in targets {
            let list: Vec<Target> = if *t == Target::All {
                Target::ALL[1..].to_vec()
            } else {
                vec![*t]
            };
            for t in list {
                if !out.contains(&t) {
                    out.push(t);
                }
            }
        }
        out
    }

    pub async fn run(self, ctx: Context) -> anyhow::Result<()> {
        match self {
            Target::All => unreachable!("expanded before running"),
            Target::Relay => {
                let relay = cc_bus::relay::Relay::new(
                    ctx.store.clone(),
                    ctx.bus.clone(),
                    ctx.config.database_url.clone(),
                    Default::default(),
                )
                .with_leader(ctx.metrics.leader("relay"));
                relay.run(ctx.cancel.clone()).await;
                Ok(())
            }
            Target::Auth => cc_auth::run(ctx).await,
            Target::AgentSession => cc_agent_session::run(ctx).await,
            Target::QueueRouter => cc_queue_router::run(ctx).await,
            Target::CallControl => cc_call_control::run(ctx).await,
            Target::Projection => cc_projection::run(ctx).await,
            Target::Portal => cc_portal::run(ctx).await,
            Target::PbxSim => cc_pbx_sim::run(ctx).await,
            Target::SipGateway => cc_sip_gateway::run(ctx).await,
            Target::Webhooks => cc_webhooks::run(ctx).await,
        }
    }
}

/// Applies every component's migrations (idempotent; safe from several processes at once).
pub async fn migrate_all(pool: &PgPool) -> anyhow::Result<()> {
    let components: &[(&str, &[cc_eventstore::Migration])] = &[
        ("eventstore", cc_eventstore::MIGRATIONS),
        ("bus", cc_bus::MIGRATIONS),
        ("auth", cc_auth::MIGRATIONS),
        ("agent-session", cc_agent_session::MIGRATIONS),
        ("queue-router", cc_queue_router::MIGRATIONS),
        ("call-control", cc_call_control::MIGRATIONS),
        ("projection", cc_projection::MIGRATIONS),
        ("portal", cc_portal::MIGRATIONS),
        ("pbx-sim", cc_pbx_sim::MIGRATIONS),
        ("sip-gateway", cc_sip_gateway::MIGRATIONS),
        ("webhooks", cc_webhooks::MIGRATIONS),
    ];
    for (name, migrations) in components {
        let n = cc_eventstore::migrate(pool, name, migrations).await?;
        if n > 0 {
            tracing::info!(component = name, applied = n, "migrations applied");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_expands_to_every_service_once() {
        let t = Target::expand(&[Target::Portal, Target::All]);
        assert_eq!(t.len(), 10);
        assert_eq!(t[0], Target::Portal);
        assert_eq!(Target::QueueRouter.name(), "queue-router");
    }
}
