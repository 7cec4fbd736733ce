//! The portal gateway: the HTTP JSON API for agents, supervisors and admins, live updates
//! over Server-Sent Events, and the OpenAPI document (`/api/openapi.json`, browsable at
//! `/api/docs`, no network needed). Every action is a command over NATS to the service that
//! owns it; reads come from the projection's read model.

pub mod api;
pub mod error;
pub mod identity;
pub mod sse;
mod views;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::{get, patch, post, put};
use axum::Router;
use cc_runtime::Context;

use api::{admin, agent, supervisor};

pub const MIGRATIONS: &[cc_eventstore::Migration] = &[];

/// The OpenAPI document of the API.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// The web pages: the Agent Portal (`/`), the supervisor view and the admin pages.
const WEB: [cc_runtime::web::Asset; 8] = [
    cc_runtime::asset!("services/portal", "web/index.html"),
    cc_runtime::asset!("services/portal", "web/supervisor.html"),
    cc_runtime::asset!("services/portal", "web/admin.html"),
    cc_runtime::asset!("services/portal", "web/app.css"),
    cc_runtime::asset!("services/portal", "web/app.js"),
    cc_runtime::asset!("services/portal", "web/supervisor.js"),
    cc_runtime::asset!("services/portal", "web/admin.js"),
    cc_runtime::asset!("services/portal", "web/desk.js"),
];

/// The script and style of `/api/docs` (files of their own: the pages allow nothing inline).
const API_DOCS: [cc_runtime::web::Asset; 2] = [
    cc_runtime::asset!("services/portal", "assets/api-docs.js"),
    cc_runtime::asset!("services/portal", "assets/api-docs.css"),
];

/// The state every handler gets.
#[derive(Clone)]
pub struct Portal {
    /// Shared, not cloned per request: every open SSE stream holds a `Portal`.
    pub ctx: Arc<Context>,
    pub hub: Arc<sse::Hub>,
    /// Each tenant's "agents see when a supervisor is on their call", read at most every
    /// [`SETTING_TTL`].
    pub monitoring_shown:
        Arc<std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, bool)>>>,
}

/// How long the portal keeps a tenant setting before asking again.
pub const SETTING_TTL: std::time::Duration = std::time::Duration::from_secs(2);

impl Portal {
    /// Whether the tenant's agents see that a supervisor is on their call (off when unknown).
    pub async fn agents_see_monitoring(&self, tenant: &str) -> bool {
        if let Some((at, v)) = self
            .monitoring_shown
            .lock()
            .expect("setting cache")
            .get(tenant)
        {
            if at.elapsed() < SETTING_TTL {
                return *v;
            }
        }
        let ctx = cc_bus::CommandContext::new(tenant, "system:portal");
        let v = match self
            .ctx
            .bus
            .request(&ctx, &cc_contracts::session::GetAgentDefaults {})
            .await
        {
            Ok(d) => d.agents_see_monitoring,
            Err(e) => {
                tracing::warn!(tenant, error = %e, "cannot read the monitoring setting; not shown to agents");
                false
            }
        };
        self.monitoring_shown
            .lock()
            .expect("setting cache")
            .insert(tenant.to_string(), (std::time::Instant::now(), v));
        v
    }

    /// An agent's view as the agent may see it: the supervisor's monitoring only when the
    /// tenant shows it to agents.
    pub async fn shown_to_agent(&self, tenant: &str, json: String) -> String {
        if !json.contains("\"monitor\"") || self.agents_see_monitoring(tenant).await {
            return json;
        }
        match serde_json::from_str::<serde_json::Value>(&json) {
            Ok(mut v) => {
                if let Some(c) = v.get_mut("current_call").and_then(|c| c.as_object_mut()) {
                    c.remove("monitor");
                }
                v.to_string()
            }
            Err(_) => json,
        }
    }
}

/// Every route of the API as (method, path): kept equal to `openapi.json` by a test.
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/api/login"),
    ("post", "/api/signout"),
    ("get", "/api/login-options"),
    ("post", "/api/session"),
    ("delete", "/api/session"),
    ("post", "/api/session/pause"),
    ("post", "/api/session/unpause"),
    ("put", "/api/session/queues/{queue}"),
    ("delete", "/api/session/queues/{queue}"),
    ("get", "/api/me"),
    ("get", "/api/pause-reasons"),
    ("get", "/api/events"),
    ("get", "/api/supervisor/agents"),
    ("post", "/api/supervisor/agents/{agent}/logout"),
    ("get", "/api/supervisor/events"),
    ("get", "/api/admin/agents"),
    ("post", "/api/admin/agents"),
    ("patch", "/api/admin/agents/{agent}"),
    ("post", "/api/admin/agents/{agent}/password"),
    ("post", "/api/admin/agents/{agent}/disable"),
    ("post", "/api/admin/agents/{agent}/enable"),
    ("get", "/api/admin/queues"),
    ("post", "/api/admin/queues"),
    ("put", "/api/admin/queues/{queue}/agents/{agent}"),
    ("delete", "/api/admin/queues/{queue}/agents/{agent}"),
    ("get", "/api/admin/pause-reasons"),
    ("post", "/api/admin/pause-reasons"),
    ("patch", "/api/admin/pause-reasons/{name}"),
    ("delete", "/api/admin/pause-reasons/{name}"),
    ("get", "/api/admin/agent-defaults"),
    ("put", "/api/admin/agent-defaults"),
    ("post", "/api/admin/users"),
    ("get", "/api/admin/devices"),
    ("post", "/api/admin/devices"),
    ("post", "/api/admin/devices/{device}/password"),
    ("delete", "/api/admin/devices/{device}"),
    ("put", "/api/admin/queues/{queue}/settings"),
    ("post", "/api/call/hangup"),
    ("post", "/api/call/hold"),
    ("post", "/api/call/dial"),
    ("post", "/api/call/wrap-up/end"),
    ("post", "/api/call/transfer"),
    ("post", "/api/call/transfer/complete"),
    ("post", "/api/call/transfer/cancel"),
    ("get", "/api/transfer-targets"),
    ("get", "/api/whoami"),
    ("get", "/api/supervisor/queues"),
    ("get", "/api/supervisor/devices"),
    ("get", "/api/admin/webhooks"),
    ("post", "/api/admin/webhooks"),
    ("delete", "/api/admin/webhooks/{id}"),
    ("post", "/api/admin/webhooks/{id}/test"),
    ("get", "/api/admin/webhooks/{id}/deliveries"),
    ("post", "/api/admin/webhooks/{id}/redeliver"),
    ("post", "/api/admin/webhooks/{id}/resume"),
    ("post", "/api/supervisor/agents/{agent}/monitor"),
    ("patch", "/api/supervisor/agents/{agent}/monitor"),
    ("delete", "/api/supervisor/agents/{agent}/monitor"),
    ("get", "/api/reports/calls"),
    ("get", "/api/reports/agents"),
    ("get", "/api/reports/pauses"),
    ("get", "/api/reports/queues"),
    ("get", "/api/me/queues"),
    ("get", "/api/me/calls"),
    ("post", "/api/call/wrap-up/disposition"),
];

pub fn router(portal: Portal) -> Router {
    Router::new()
        .route("/api/login", post(agent::login))
        .route("/api/signout", post(agent::signout))
        .route("/api/login-options", get(agent::login_options))
        .route(
            "/api/session",
            post(agent::complete_login).delete(agent::logout),
        )
        .route("/api/session/pause", post(agent::pause))
        .route("/api/session/unpause", post(agent::unpause))
        .route(
            "/api/session/queues/{queue}",
            put(agent::join_queue).delete(agent::leave_queue),
        )
        .route("/api/me", get(agent::me))
        .route("/api/pause-reasons", get(agent::pause_reasons))
        .route("/api/events", get(sse::agent_events))
        .route("/api/supervisor/agents", get(supervisor::agents))
        .route(
            "/api/supervisor/agents/{agent}/logout",
            post(supervisor::force_logout),
        )
        .route("/api/supervisor/events", get(sse::supervisor_events))
        .route("/api/supervisor/devices", get(supervisor::devices))
        .route(
            "/api/admin/webhooks",
            get(api::webhooks::list).post(api::webhooks::create),
        )
        .route(
            "/api/admin/webhooks/{id}",
            axum::routing::delete(api::webhooks::delete),
        )
        .route("/api/admin/webhooks/{id}/test", post(api::webhooks::test))
        .route(
            "/api/admin/webhooks/{id}/deliveries",
            get(api::webhooks::deliveries),
        )
        .route(
            "/api/admin/webhooks/{id}/redeliver",
            post(api::webhooks::redeliver),
        )
        .route(
            "/api/admin/webhooks/{id}/resume",
            post(api::webhooks::resume),
        )
        .route(
            "/api/supervisor/agents/{agent}/monitor",
            post(supervisor::monitor)
                .patch(supervisor::set_monitor_mode)
                .delete(supervisor::stop_monitor),
        )
        .route(
            "/api/admin/agents",
            get(admin::list_agents).post(admin::create_agent),
        )
        .route("/api/admin/agents/{agent}", patch(admin::update_agent))
        .route(
            "/api/admin/agents/{agent}/password",
            post(admin::reset_password),
        )
        .route(
            "/api/admin/agents/{agent}/disable",
            post(admin::disable_agent),
        )
        .route(
            "/api/admin/agents/{agent}/enable",
            post(admin::enable_agent),
        )
        .route(
            "/api/admin/queues",
            get(admin::list_queues).post(admin::create_queue),
        )
        .route(
            "/api/admin/queues/{queue}/agents/{agent}",
            put(admin::assign).delete(admin::unassign),
        )
        .route(
            "/api/admin/pause-reasons",
            get(admin::list_pause_reasons).post(admin::add_pause_reason),
        )
        .route(
            "/api/admin/pause-reasons/{name}",
            patch(admin::rename_pause_reason).delete(admin::retire_pause_reason),
        )
        .route(
            "/api/admin/agent-defaults",
            get(admin::get_agent_defaults).put(admin::set_agent_defaults),
        )
        .route("/api/admin/users", post(admin::create_user))
        .route(
            "/api/admin/devices",
            get(api::devices::list).post(api::devices::create),
        )
        .route(
            "/api/admin/devices/{device}/password",
            post(api::devices::new_password),
        )
        .route(
            "/api/admin/devices/{device}",
            axum::routing::delete(api::devices::remove),
        )
        .route(
            "/api/admin/queues/{queue}/settings",
            put(admin::configure_queue),
        )
        .route("/api/call/hangup", post(agent::hangup))
        .route("/api/call/hold", post(agent::hold))
        .route("/api/call/dial", post(agent::dial))
        .route("/api/call/wrap-up/end", post(agent::end_wrap_up))
        .route("/api/call/transfer", post(agent::transfer))
        .route(
            "/api/call/transfer/complete",
            post(agent::complete_transfer),
        )
        .route("/api/call/transfer/cancel", post(agent::cancel_transfer))
        .route("/api/transfer-targets", get(agent::transfer_targets))
        .route("/api/whoami", get(supervisor::whoami))
        .route("/api/supervisor/queues", get(supervisor::queues))
        .route("/api/reports/calls", get(api::reports::calls))
        .route("/api/reports/agents", get(api::reports::agents))
        .route("/api/reports/pauses", get(api::reports::pauses))
        .route("/api/reports/queues", get(api::reports::queues))
        .route("/api/me/queues", get(api::desk::queues))
        .route("/api/me/calls", get(api::desk::calls))
        .route(
            "/api/call/wrap-up/disposition",
            post(api::desk::disposition),
        )
        .route(
            "/api/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }),
        )
        .route(
            "/api/docs",
            get(|| async { Html(include_str!("../assets/api-docs.html")) }),
        )
        .route("/", get(|| async { WEB[0] }))
        .route("/supervisor", get(|| async { WEB[1] }))
        .route("/admin", get(|| async { WEB[2] }))
        .route("/app.css", get(|| async { WEB[3] }))
        .route("/app.js", get(|| async { WEB[4] }))
        .route("/supervisor.js", get(|| async { WEB[5] }))
        .route("/admin.js", get(|| async { WEB[6] }))
        .route("/api/docs.js", get(|| async { API_DOCS[0] }))
        .route("/api/docs.css", get(|| async { API_DOCS[1] }))
        .route("/desk.js", get(|| async { WEB[7] }))
        .fallback(|| async {
            error::ApiError(cc_bus::CommandError::new(
                "not_found",
                "no such page or API route; see /api/docs",
            ))
            .into_response()
        })
        .layer(axum::middleware::map_response(cc_runtime::web::harden))
        .layer(axum::middleware::from_fn(cc_runtime::web::trace))
        .with_state(portal)
}

/// Runs the portal until `ctx.cancel`.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let portal = Portal {
        ctx: Arc::new(ctx.clone()),
        hub: Arc::default(),
        monitoring_shown: Arc::default(),
    };
    let listener = tokio::net::TcpListener::bind(&ctx.config.portal_addr)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on portal_addr {} (CC_PORTAL_ADDR): {e}",
                ctx.config.portal_addr
            )
        })?;
    let addr = listener.local_addr()?;
    tracing::info!(portal = %format!("http://{addr}/"), base_domain = %ctx.config.base_domain, "Agent Portal listening");
    let feed = tokio::spawn(sse::feed(portal.clone()));
    let streams = prometheus_client::metrics::gauge::Gauge::<i64>::default();
    ctx.metrics.register(
        "portal_sse_streams",
        "Open live-update (SSE) streams",
        streams.clone(),
    );
    let (hub, cancel_gauge) = (portal.hub.clone(), ctx.cancel.clone());
    tokio::spawn(async move {
        while !cancel_gauge.is_cancelled() {
            streams.set(hub.listeners() as i64);
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        }
    });
    let cancel = ctx.cancel.clone();
    axum::serve(
        listener,
        router(portal).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(cancel.cancelled_owned())
    .await?;
    feed.await??;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_route_is_documented_and_every_documented_route_exists() {
        let doc: serde_json::Value = serde_json::from_str(super::OPENAPI).unwrap();
        let mut documented: Vec<(String, String)> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(p, ops)| {
                ops.as_object()
                    .unwrap()
                    .keys()
                    .map(move |m| (m.clone(), p.clone()))
            })
            .collect();
        let mut routes: Vec<(String, String)> = super::ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        documented.sort();
        routes.sort();
        assert_eq!(documented, routes);
    }

    /// The error codes the services send, the one table of codes and the error table of
    /// docs/getting-started.md: the same codes, each under the status its kind gives it.
    #[test]
    fn every_error_code_sent_is_in_the_table_and_in_the_docs_under_its_status() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut sent = std::collections::BTreeSet::new();
        let mut files = vec![];
        for dir in ["services", "libs"] {
            let mut stack = vec![root.join(dir)];
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(&d).unwrap().flatten() {
                    let p = e.path();
                    if p.is_dir() && !p.ends_with("tests") && !p.ends_with("target") {
                        stack.push(p);
                    } else if p.extension().is_some_and(|x| x == "rs") {
                        files.push(p);
                    }
                }
            }
        }
        // CommandError::new / ::field and the services' own helpers (`err`, `target_error`)
        // take the code first; agent-session's Refusal maps each variant to its code.
        let call = regex_lite(r#"(CommandError::new|CommandError::field|err|target_error)("#);
        for f in &files {
            let text = std::fs::read_to_string(f).unwrap();
            for code in call(&text) {
                sent.insert(code);
            }
            if f.ends_with("agent-session/src/domain.rs") {
                for line in text.lines() {
                    if let Some((_, rest)) = line.split_once("=> \"") {
                        let code = rest.split('"').next().unwrap();
                        if code.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                            sent.insert(code.to_string());
                        }
                    }
                }
            }
        }
        let known: std::collections::BTreeSet<String> = cc_bus::codes::CODES
            .iter()
            .map(|(c, _)| c.to_string())
            .collect();
        let missing: Vec<_> = sent.difference(&known).collect();
        assert!(
            missing.is_empty(),
            "codes sent but not in cc_bus::codes::CODES: {missing:?}"
        );
        assert!(sent.len() > 40, "the scan found the codes ({})", sent.len());
        // The docs: each code in backticks on the row of its status.
        let docs = std::fs::read_to_string(root.join("docs/getting-started.md")).unwrap();
        let table = docs
            .split("| status | error codes |")
            .nth(1)
            .expect("the error table")
            .split("\n\n")
            .next()
            .unwrap();
        for (code, kind) in cc_bus::codes::CODES {
            let row = table
                .lines()
                .find(|l| l.contains(&format!("`{code}`")))
                .unwrap_or_else(|| {
                    panic!("`{code}` is not in docs/getting-started.md's error table")
                });
            assert!(
                row.starts_with(&format!("| {} |", kind.status())),
                "`{code}` is listed under the wrong status: {row}"
            );
        }
    }

    /// The first string argument of each call of one of `names` (a code: lowercase and _).
    fn regex_lite(names: &str) -> impl Fn(&str) -> Vec<String> {
        let names: Vec<String> = names
            .trim_start_matches('(')
            .split(')')
            .next()
            .unwrap()
            .split('|')
            .map(|n| format!("{n}("))
            .collect();
        move |text: &str| {
            let mut out = vec![];
            for n in &names {
                for (i, _) in text.match_indices(n.as_str()) {
                    // A whole name: not the tail of a longer identifier.
                    let before = text[..i].chars().next_back();
                    if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                        continue;
                    }
                    let rest = text[i + n.len()..].trim_start();
                    let Some(rest) = rest.strip_prefix('"') else {
                        continue;
                    };
                    let code: String = rest.chars().take_while(|c| *c != '"').collect();
                    if !code.is_empty() && code.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    {
                        out.push(code);
                    }
                }
            }
            out
        }
    }
}
