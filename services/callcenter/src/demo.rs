//! Demo mode: the demo tenant a newcomer can log in to at once. Created on first start only,
//! and only when `demo` is on (never in production).

use std::time::Duration;

use cc_bus::{CommandContext, RequestError};
use cc_contracts::auth::*;
use cc_contracts::domain::{AgentNumber, QueueNumber};
use cc_contracts::queue::*;
use cc_contracts::session::*;
use cc_runtime::Context;

pub const TENANT: &str = "demo";

/// (agent, name, password, may manage own queues, queues with penalties)
type DemoAgent = (
    &'static str,
    &'static str,
    &'static str,
    bool,
    &'static [(&'static str, i32)],
);
const AGENTS: &[DemoAgent] = &[
    (
        "1001",
        "Alice Agent",
        "demo1001",
        true,
        &[("500", 0), ("501", 1)],
    ),
    ("1002", "Bob Agent", "demo1002", false, &[("500", 0)]),
    ("1003", "Carol Agent", "demo1003", false, &[("501", 0)]),
    (
        "1004",
        "Dave Agent",
        "demo1004",
        true,
        &[("500", 1), ("501", 0)],
    ),
];
const QUEUES: &[(&str, &str)] = &[("500", "Sales"), ("501", "Support")];
const USERS: &[(&str, &str, &str, Role)] = &[
    ("admin", "Demo Admin", "demo-admin", Role::Admin),
    (
        "supervisor",
        "Demo Supervisor",
        "demo-supervisor",
        Role::Supervisor,
    ),
];

/// Waits until the auth service answers, then creates the demo tenant if it is new, and a
/// tenant like it for each SIP tenant (`CC_SIP_TENANTS`, real phones through the SIP gateway).
pub async fn seed(ctx: Context) -> anyhow::Result<()> {
    seed_tenant(&ctx, TENANT, "Demo Call Center").await?;
    for t in ctx
        .config
        .sip
        .tenants
        .iter()
        .filter(|t| t.as_str() != TENANT)
    {
        seed_tenant(&ctx, t, "Demo Call Center (SIP phones)").await?;
    }
    print_banner(&ctx);
    Ok(())
}

async fn seed_tenant(ctx: &Context, tenant: &str, display: &str) -> anyhow::Result<()> {
    let c = CommandContext::new(tenant, "system:demo");
    let created = loop {
        match ctx
            .bus
            .request(
                &c,
                &CreateTenant {
                    name: display.into(),
                    demo: true,
                    time_zone: "UTC".into(),
                },
            )
            .await
        {
            Ok(created) => break created,
            Err(RequestError::NoResponders(_)) => {}
            Err(e) => return Err(e.into()),
        }
        tokio::select! { _ = ctx.cancel.cancelled() => return Ok(()), _ = tokio::time::sleep(Duration::from_millis(200)) => {} }
    };
    // Every step tolerates "already exists", so a start that was interrupted half-way completes
    // the tenant the next time.
    let complete: bool = sqlx::query_scalar(
        "select exists(select 1 from auth_agents where tenant = $1 and agent = '1004')",
    )
    .bind(tenant)
    .fetch_one(&ctx.pool)
    .await
    .unwrap_or(false);
    if created || !complete {
        // Other services may still be starting: retry each step until it answers.
        retry(ctx, || {
            ctx.bus.request(
                &c,
                &SetAgentDefaults {
                    may_manage_queues: false,
                    agents_see_monitoring: None,
                },
            )
        })
        .await?;
        for reason in ["Lunch", "Break", "Bathroom"] {
            let cmd = ChangePauseReason::Add {
                name: reason.into(),
            };
            retry(ctx, || ctx.bus.request(&c, &cmd)).await?;
        }
        for (username, name, password, role) in USERS {
            let cmd = CreateUser {
                username: (*username).into(),
                display_name: (*name).into(),
                password: (*password).into(),
                role: *role,
            };
            retry(ctx, || ctx.bus.request(&c, &cmd)).await?;
        }
        for (queue, name) in QUEUES {
            let cmd = CreateQueue {
                queue: QueueNumber::parse(queue)?,
                name: (*name).into(),
            };
            retry(ctx, || ctx.bus.request(&c, &cmd)).await?;
        }
        for (agent, name, password, may_manage, queues) in AGENTS {
            let agent = AgentNumber::parse(agent)?;
            let cmd = CreateAgent {
                agent: agent.clone(),
                display_name: (*name).into(),
                password: (*password).into(),
                may_manage_queues: Some(*may_manage),
            };
            retry(ctx, || ctx.bus.request(&c, &cmd)).await?;
            for (queue, penalty) in queues.iter() {
                let cmd = AssignAgent {
                    queue: QueueNumber::parse(queue)?,
                    agent: agent.clone(),
                    penalty: *penalty,
                };
                retry(ctx, || ctx.bus.request(&c, &cmd)).await?;
            }
        }
        tracing::info!(tenant, "demo tenant created");
    }
    Ok(())
}

async fn retry<T, F, Fut>(ctx: &Context, mut f: F) -> anyhow::Result<Option<T>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, RequestError>>,
{
    for _ in 0..150 {
        match f().await {
            Ok(v) => return Ok(Some(v)),
            Err(RequestError::NoResponders(_)) => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(RequestError::Rejected(e)) if e.error.ends_with("_exists") => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        if ctx.cancel.is_cancelled() {
            anyhow::bail!("stopped");
        }
    }
    anyhow::bail!("a service did not answer within 30 s while creating the demo tenant")
}

fn print_banner(ctx: &Context) {
    let port = ctx.config.portal_addr.rsplit(':').next().unwrap_or("8080");
    let mut s = String::new();
    s.push_str("\n================ Demo call center ================\n");
    s.push_str(&format!("Agent Portal: http://{TENANT}.{}:{port}/   (API: add -H 'X-Tenant: {TENANT}' when using another host name)\n", ctx.config.base_domain));
    s.push_str(&format!(
        "API docs:     http://{TENANT}.{}:{port}/api/docs\n",
        ctx.config.base_domain
    ));
    s.push_str("Agents (number / password):\n");
    for (agent, name, password, may_manage, _) in AGENTS {
        s.push_str(&format!(
            "  {agent} / {password}   {name}{}\n",
            if *may_manage {
                " (may choose queues)"
            } else {
                ""
            }
        ));
    }
    for (u, _, p, role) in USERS {
        s.push_str(&format!("{:<13} {u} / {p}\n", format!("{role:?}:")));
    }
    s.push_str("Queues: 500 Sales, 501 Support. Pause reasons: Lunch, Break, Bathroom.\n");
    s.push_str(&format!(
        "Devices 1001-1006 online, 1007 offline (PBX simulator on http://{}/)\n",
        ctx.config.pbx_sim_addr
    ));
    for t in &ctx.config.sip.tenants {
        let domain = format!("{t}.{}", ctx.config.base_domain);
        s.push_str(&format!(
            "\n---- Tenant {t}: real SIP phones through the SIP gateway ----\n"
        ));
        s.push_str(&format!("Agent Portal: http://{domain}:{port}/   (same agents, passwords and queues as above)\n"));
        s.push_str(&format!(
            "SIP domain:   {domain}   registrar / proxy: {} (UDP and TCP)\n",
            ctx.config.sip.addr
        ));
        s.push_str("SIP devices (user / password): ");
        s.push_str(
            &cc_sip_gateway::DEMO_DEVICES
                .iter()
                .map(|d| format!("{d} / {}", cc_sip_gateway::demo_password(d)))
                .collect::<Vec<_>>()
                .join(", "),
        );
        s.push_str(&format!(
            "\nCall queue 500 (Sales) or 501 (Support): sip:500@{domain}\n"
        ));
    }
    s.push_str("===================================================\n");
    println!("{s}");
}
