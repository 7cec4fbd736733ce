//! The per-process admin endpoints: `/healthz` (the process is alive), `/readyz` (every
//! dependency is reachable; names the missing ones) and `/metrics` (Prometheus text format).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::json;
use std::sync::atomic::AtomicU64;

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
    leaders: Arc<Mutex<Vec<cc_bus::Leader>>>,
    lease_held: Family<Vec<(&'static str, String)>, Gauge>,
    takeover_seconds: Family<Vec<(&'static str, String)>, Gauge<f64, AtomicU64>>,
    takeover_events: Family<Vec<(&'static str, String)>, Gauge>,
    lease_epoch: Family<Vec<(&'static str, String)>, Gauge>,
    lag: Family<Vec<(&'static str, String)>, Gauge<f64, AtomicU64>>,
    dependency_up: Family<Vec<(&'static str, String)>, Gauge>,
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
        let (lease_held, lag, dependency_up) =
            (Family::default(), Family::default(), Family::default());
        let (takeover_seconds, takeover_events) = (Family::default(), Family::default());
        let lease_epoch = Family::default();
        registry.register(
            "lease_epoch",
            "The epoch this process holds the lease in (raised by every new holder; its appends are fenced with it), 0 when it does not hold it",
            lease_epoch.clone(),
        );
        registry.register(
            "takeover_seconds",
            "How long this process's last take-over of the lease took, from taking it to caught up with the store (a snapshot read and the events after it replayed); queue_router and call_control",
            takeover_seconds.clone(),
        );
        registry.register(
            "takeover_events",
            "Events this process replayed at its last take-over of the lease: those after the snapshot it started from, or the whole history without one",
            takeover_events.clone(),
        );
        registry.register(
            "lease_held",
            "1 while this process holds the lease (relay, queue_router, call_control, portal_projection, reporting_projection, webhooks), else 0: summed over the replicas, each lease is 1",
            lease_held.clone(),
        );
        registry.register(
            "consumer_lag_seconds",
            "How long the oldest stored event the leading consumer has not applied yet has waited (0 when it is caught up); only the leader reports it",
            lag.clone(),
        );
        registry.register(
            "dependency_up",
            "1 when this process is connected to the dependency (postgres, nats, migrations), else 0",
            dependency_up.clone(),
        );
        Self {
            registry: Arc::new(Mutex::new(registry)),
            commands,
            leaders: Arc::default(),
            lease_held,
            takeover_seconds,
            takeover_events,
            lease_epoch,
            lag,
            dependency_up,
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

    /// The lease-holding component `name` of this process (one per name).
    pub fn leader(&self, name: &'static str) -> cc_bus::Leader {
        let mut leaders = self.leaders.lock().unwrap();
        if let Some(l) = leaders.iter().find(|l| l.name() == name) {
            return l.clone();
        }
        let label = vec![("lease", name.to_string())];
        let l = cc_bus::Leader::new(name, self.lease_held.get_or_create(&label).clone())
            .with_takeover(
                self.takeover_seconds.get_or_create(&label).clone(),
                self.takeover_events.get_or_create(&label).clone(),
            )
            .with_epoch(self.lease_epoch.get_or_create(&label).clone());
        leaders.push(l.clone());
        l
    }

    /// [`Metrics::leader`] for a name made at run time (a partition's: `queue_router/p3`);
    /// each name is made once per process.
    pub fn leader_named(&self, name: &str) -> cc_bus::Leader {
        if let Some(l) = self
            .leaders
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.name() == name)
        {
            return l.clone();
        }
        self.leader(Box::leak(name.to_string().into_boxed_str()))
    }

    /// Every 5 s until `cancel`, sets each leading consumer's lag from the store: the age of
    /// the oldest event after its position.
    pub async fn watch_lag(self, pool: sqlx::PgPool, cancel: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let leaders = self.leaders.lock().unwrap().clone();
            for l in leaders {
                let labels = vec![("consumer", l.name().to_string())];
                let Some(cp) = l.position() else {
                    self.lag.remove(&labels);
                    continue;
                };
                let age: Result<Option<f64>, _> = sqlx::query_scalar(
                    "select extract(epoch from clock_timestamp() - recorded_at)::float8 from es_events
                      where (xid, position) > ($1, $2) order by xid, position limit 1",
                )
                .bind(cp.xid)
                .bind(cp.position)
                .fetch_optional(&pool)
                .await;
                if let Ok(age) = age {
                    self.lag
                        .get_or_create(&labels)
                        .set(age.unwrap_or(0.0).max(0.0));
                }
            }
        }
    }

    fn observe_readiness(&self, readiness: &Readiness) {
        for (name, state) in readiness.deps.lock().unwrap().iter() {
            self.dependency_up
                .get_or_create(&vec![("dependency", name.clone())])
                .set(i64::from(state.is_ok()));
        }
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
    s.metrics.observe_readiness(&s.readiness);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}
