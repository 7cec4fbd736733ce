//! The router's metrics: what the ACD model knows, for dashboards and alerts. The gauges are
//! set by the leading router only (every few seconds, from the model) and cleared when it stops
//! leading, so `sum` over the replicas is the truth; the counters count live decisions only
//! (never a replay of the history at a take-over).

use std::sync::atomic::AtomicU64;

use cc_contracts::call::CallEvent;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use crate::acd::{Acd, Agent};

type Labels = Vec<(&'static str, String)>;

#[derive(Clone)]
pub struct RouterMetrics {
    pub parked: Counter<u64>,
    agents: Family<Labels, Gauge>,
    waiting: Family<Labels, Gauge>,
    longest_wait: Family<Labels, Gauge<f64, AtomicU64>>,
    answered: Family<Labels, Counter<u64>>,
    abandoned: Family<Labels, Counter<u64>>,
    pub offer_seconds: Histogram,
    /// The gauge labels this holder set (a replica leading several partitions sets each
    /// partition's tenants from that partition's router, and clears only those).
    mine: std::sync::Arc<std::sync::Mutex<Mine>>,
}

#[derive(Default)]
struct Mine {
    agents: std::collections::HashSet<Labels>,
    queues: std::collections::HashSet<Labels>,
}

fn offer_buckets() -> Histogram {
    Histogram::new([
        0.002, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    ])
}

impl RouterMetrics {
    pub fn register(m: &cc_runtime::Metrics) -> Self {
        let r = RouterMetrics {
            parked: Counter::default(),
            agents: Family::default(),
            waiting: Family::default(),
            longest_wait: Family::default(),
            answered: Family::default(),
            abandoned: Family::default(),
            offer_seconds: offer_buckets(),
            mine: Default::default(),
        };
        m.register(
            "queue_router_parked",
            "PBX reports and router decisions whose events the store refused for good (parked in qr_parked and skipped)",
            r.parked.clone(),
        );
        m.register(
            "agents",
            "Agents by tenant and state (logged_out, offline, paused, idle, ringing, on_call, wrap_up), as the leading router sees them",
            r.agents.clone(),
        );
        m.register(
            "queue_calls_waiting",
            "Calls waiting for an agent, by tenant and queue",
            r.waiting.clone(),
        );
        m.register(
            "queue_longest_wait_seconds",
            "How long the longest-waiting call of each queue has waited (0 when none waits)",
            r.longest_wait.clone(),
        );
        m.register(
            "queue_calls_answered",
            "Queue calls answered, by tenant, queue and whether within the queue's service level (within_service_level true or false)",
            r.answered.clone(),
        );
        m.register(
            "queue_calls_abandoned",
            "Queue calls whose caller hung up before an agent answered, by tenant and queue",
            r.abandoned.clone(),
        );
        m.register(
            "acd_offer_seconds",
            "Seconds from the router's decision to offer a call to the PBX ringing the agent's phone (the Originate's reply)",
            r.offer_seconds.clone(),
        );
        r
    }

    /// Counts a live call event's outcome (answered, abandoned).
    pub fn count(&self, acd: &Acd, tenant: &str, e: &CallEvent) {
        match e {
            CallEvent::CallAnswered { queue, wait_ms, .. } => {
                let sl = acd.settings(tenant, queue).service_level_s;
                let within = *wait_ms <= sl * 1000;
                self.answered
                    .get_or_create(&vec![
                        ("tenant", tenant.to_string()),
                        ("queue", queue.to_string()),
                        ("within_service_level", within.to_string()),
                    ])
                    .inc();
            }
            CallEvent::CallAbandoned { queue, .. } => {
                self.abandoned
                    .get_or_create(&vec![
                        ("tenant", tenant.to_string()),
                        ("queue", queue.to_string()),
                    ])
                    .inc();
            }
            _ => {}
        }
    }

    /// The same metrics for another holder (a partition's router): its gauges its own.
    pub fn for_holder(&self) -> Self {
        Self {
            mine: Default::default(),
            ..self.clone()
        }
    }

    /// Sets the gauges from the model.
    pub fn observe(&self, acd: &Acd, now: chrono::DateTime<chrono::Utc>) {
        let mut agents: std::collections::HashMap<Labels, i64> = Default::default();
        for ((tenant, _), a) in &acd.agents {
            *agents
                .entry(vec![
                    ("tenant", tenant.clone()),
                    ("state", state(a).to_string()),
                ])
                .or_default() += 1;
        }
        let mut queues: std::collections::HashMap<Labels, (i64, f64)> = Default::default();
        for (tenant, queue) in acd.queues.keys() {
            let labels = vec![("tenant", tenant.clone()), ("queue", queue.to_string())];
            queues.insert(labels, (0, 0.0));
        }
        for c in acd.calls.values() {
            if c.done || c.answered.is_some() {
                continue;
            }
            let labels = vec![("tenant", c.tenant.clone()), ("queue", c.queue.to_string())];
            let q = queues.entry(labels).or_default();
            q.0 += 1;
            let waited = (now - c.entered_at).num_milliseconds().max(0) as f64 / 1000.0;
            q.1 = q.1.max(waited);
        }
        let mut mine = self.mine.lock().unwrap();
        for gone in mine.agents.iter().filter(|l| !agents.contains_key(*l)) {
            self.agents.remove(gone);
        }
        for gone in mine.queues.iter().filter(|l| !queues.contains_key(*l)) {
            self.waiting.remove(gone);
            self.longest_wait.remove(gone);
        }
        for (labels, n) in &agents {
            self.agents.get_or_create(labels).set(*n);
        }
        for (labels, (waiting, longest)) in &queues {
            self.waiting.get_or_create(labels).set(*waiting);
            self.longest_wait.get_or_create(labels).set(*longest);
        }
        mine.agents = agents.into_keys().collect();
        mine.queues = queues.into_keys().collect();
    }

    /// Forgets this holder's gauges (it no longer leads).
    pub fn clear(&self) {
        let mut mine = self.mine.lock().unwrap();
        for l in mine.agents.drain() {
            self.agents.remove(&l);
        }
        for l in mine.queues.drain() {
            self.waiting.remove(&l);
            self.longest_wait.remove(&l);
        }
    }
}

fn state(a: &Agent) -> &'static str {
    if !a.logged_in {
        "logged_out"
    } else if !a.device_online {
        "offline"
    } else if a.on_call.is_some() {
        "on_call"
    } else if a.ringing > 0 {
        "ringing"
    } else if a.wrap_up.is_some() || a.disposition_pending {
        "wrap_up"
    } else if a.paused {
        "paused"
    } else {
        "idle"
    }
}

/// Clears the gauges when dropped: held by a leading router.
pub struct Leading(pub RouterMetrics);

impl Drop for Leading {
    fn drop(&mut self) {
        self.0.clear();
    }
}
