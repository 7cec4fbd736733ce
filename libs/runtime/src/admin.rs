//! The per-process admin endpoints: `/healthz` (the process is alive), `/readyz` (every
//! dependency is reachable; names the missing ones) and `/metrics` (Prometheus text format).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::registry::Registry;
use serde_json::json;

/// The state of each dependency of the process, as shown by `/readyz`.
#[derive(Clone, Default)]
pub struct Readiness {
    deps: Arc<Mutex<BTreeMap<String, Result<(), String>>>>,
}

impl Readiness {
    /// Declares a dependency, not ready until [`Readiness::ready`] is called.
    pub fn expect(&self, name: &str) {
        self.deps
            .lock()
            .unwrap()
            .entry(name.to_string())
            .or_insert_with(|| Err("not connected yet".into()));
    }
    pub fn ready(&self, name: &str) {
        self.deps.lock().unwrap().insert(name.to_string(), Ok(()));
    }
    pub fn down(&self, name: &str, reason: impl Into<String>) {
        self.deps
            .lock()
            .unwrap()
            .insert(name.to_string(), Err(reason.into()));
    }
    pub fn is_ready(&self) -> bool {
        self.deps.lock().unwrap().values().all(|s| s.is_ok())
    }
    /// Names and reasons of the dependencies that are not ready.
    pub fn missing(&self) -> Vec<(String, String)> {
        self.deps
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(k, v)| v.as_ref().err().map(|e| (k.clone(), e.clone())))
            .collect()
    }
}

/// The process's Prometheus registry, with the metrics every service shares.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    /// `cc_commands_total{service, command, outcome}`.
    pub commands: cc_bus::CommandCounter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("cc");
        let commands = cc_bus::CommandCounter::default();
        registry.register(
            "commands",
            "Commands handled, by service, command and outcome (ok or the error code)",
            commands.clone(),
        );
        Self {
            registry: Arc::new(Mutex::new(registry)),
            commands,
        }
    }
}

impl Metrics {
    /// Registers a metric (a counter, gauge, histogram or family of them).
    pub fn register(
        &self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        self.registry.lock().unwrap().register(name, help, metric);
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry.lock().unwrap())
            .expect("metrics encode");
        out
    }
}

#[derive(Clone)]
struct AdminState {
    readiness: Readiness,
    metrics: Metrics,
    targets: Vec<String>,
}

/// The admin router: `/healthz`, `/readyz`, `/metrics`.
pub fn router(readiness: Readiness, metrics: Metrics, targets: Vec<String>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AdminState {
            readiness,
            metrics,
            targets,
        })
}

async fn healthz(State(s): State<AdminState>) -> impl IntoResponse {
    Json(json!({ "status": "alive", "targets": s.targets }))
}

async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    let missing = s.readiness.missing();
    if missing.is_empty() {
        (StatusCode::OK, Json(json!({ "status": "ready" })))
    } else {
        let missing: BTreeMap<_, _> = missing.into_iter().collect();
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not ready", "missing": missing })),
        )
    }
}

async fn metrics_text(State(s): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}
