//! The portal gateway: the HTTP JSON API for agents, supervisors and admins, live updates
//! over Server-Sent Events, and the OpenAPI document (`/api/openapi.json`, browsable at
//! `/api/docs`, no network needed). Every action is a command over NATS to the service that
//! owns it; reads come from the projection's read model.

pub mod api;
pub mod error;
pub mod extract;
pub mod identity;
pub mod openapi;
pub mod reply;
pub mod route;
pub mod sse;
mod views;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Extension, Router};
use cc_runtime::Context;

pub const MIGRATIONS: &[cc_eventstore::Migration] = &[];

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

/// Every route of the API as (method in lowercase, path), from the route table.
pub fn routes() -> Vec<(&'static str, &'static str)> {
    api::routes()
        .iter()
        .map(|r| {
            let method = match r.method.as_str() {
                "GET" => "get",
                "POST" => "post",
                "PUT" => "put",
                "PATCH" => "patch",
                "DELETE" => "delete",
                other => panic!("a method the table does not use: {other}"),
            };
            (method, r.path)
        })
        .collect()
}

pub fn router(portal: Portal) -> Router {
    let mut app = Router::new();
    // Each route with its access rule, which the session extractor enforces.
    for r in api::routes() {
        app = app.route(r.path, r.service.route_layer(Extension(r.access)));
    }
    app.route(
        "/api/openapi.json",
        get(|| async {
            (
                [(header::CONTENT_TYPE, "application/json")],
                openapi::OPENAPI.as_str(),
            )
        }),
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
    /// The router serves every route of the table (and so of the document), the document
    /// has every route of the table, once.
    #[test]
    fn every_route_is_documented_and_every_documented_route_exists() {
        let doc = super::openapi::document();
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
        let mut routes: Vec<(String, String)> = super::routes()
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        documented.sort();
        routes.sort();
        let n = routes.len();
        routes.dedup();
        assert_eq!(n, routes.len(), "a route is in the table twice");
        assert_eq!(documented, routes);
        assert!(routes.len() > 60, "{}", routes.len());
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
