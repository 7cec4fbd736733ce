//! The dashboard and the alert rules against a real Prometheus (Debian's `prometheus`, which
//! scripts/test installs): it scrapes a running system with calls, loads the rules, and every
//! metric the dashboard and the rules name exists.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cc_testkit::free_port;
use serde_json::{json, Value};

use crate::system::System;
use crate::tenant::TenantSpec;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The `cc_*` metric names in a text (PromQL in rules and panels), as exported families: the
/// `_total`, `_bucket`, `_sum` and `_count` of counters and histograms belong to their family.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("cc_") {
        let start = i + at;
        let before_ok =
            start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_');
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_lowercase() || b[end] == b'_') {
            end += 1;
        }
        if before_ok && end > start + 3 {
            let mut name = &text[start..end];
            for suffix in ["_total", "_bucket", "_sum", "_count"] {
                name = name.strip_suffix(suffix).unwrap_or(name);
            }
            names.insert(name.to_string());
        }
        i = end.max(start + 3);
    }
    names
}

struct Prometheus {
    child: std::process::Child,
    url: String,
    _dir: tempdir::Dir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

mod tempdir {
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Prometheus {
    fn start(admin_port: u16) -> Prometheus {
        let dir =
            std::env::temp_dir().join(format!("cc-prometheus-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let rules = repo().join("infra/observability/alerts.yml");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: callcenter\n    static_configs:\n      - targets: ['127.0.0.1:{admin_port}']\n",
            rules.canonicalize().unwrap().display()
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let port = free_port();
        let child = std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("Debian's prometheus is installed (scripts/test installs it: apt-get install prometheus)");
        Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: tempdir::Dir(dir),
        }
    }

    async fn get(&self, http: &reqwest::Client, path: &str) -> Option<Value> {
        let r = http.get(format!("{}{path}", self.url)).send().await.ok()?;
        let v: Value = r.json().await.ok()?;
        (v["status"] == "success").then(|| v["data"].clone())
    }
}

#[tokio::test]
async fn a_real_prometheus_scrapes_every_metric_the_dashboard_and_the_alert_rules_use() {
    let sys = System::start().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    // Calls, so that the call metrics have samples: Bob answers one, a caller of queue 501
    // (nobody there) hangs up while waiting.
    let bob = t.idle_agent("1002").await;
    t.place_caller("500", "5551234", "Answered").await;
    sys.view_when(&bob, "ringing", |v| v["status"] == "ringing")
        .await;
    t.phone("1002", "answer").await;
    sys.view_when(&bob, "Connected", |v| v["status"] == "connected")
        .await;
    let gone = t.place_caller("501", "5550000", "Abandons").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = t
        .pbx_post(&format!("/channels/{gone}/hangup"), json!({}))
        .await;
    assert!(status < 300, "caller hangs up: {status} {body}");

    let prometheus = Prometheus::start(sys._app.admin_port);
    let http = reqwest::Client::new();

    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("infra/observability/grafana-dashboard.json"))
            .unwrap(),
    )
    .unwrap();
    let mut used = metric_names(
        &std::fs::read_to_string(repo().join("infra/observability/alerts.yml")).unwrap(),
    );
    for panel in dashboard["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            used.extend(metric_names(t["expr"].as_str().unwrap()));
        }
    }
    assert!(used.len() >= 14, "metrics used: {used:?}");

    // Every used family is known to Prometheus from the scrape (its HELP and TYPE), and the
    // ones a running system with calls must have carry samples.
    let must_have_samples = [
        "cc_agents",
        "cc_queue_calls_waiting",
        "cc_queue_longest_wait_seconds",
        "cc_queue_calls_answered_total",
        "cc_queue_calls_abandoned_total",
        "cc_acd_offer_seconds_bucket",
        "cc_lease_held",
        "cc_consumer_lag_seconds",
        "cc_dependency_up",
        "cc_commands_total",
        "cc_portal_sse_streams",
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let known: BTreeSet<String> = prometheus
            .get(&http, "/api/v1/metadata")
            .await
            .and_then(|d| d.as_object().map(|o| o.keys().cloned().collect()))
            .unwrap_or_default();
        let series: BTreeSet<String> = prometheus
            .get(&http, "/api/v1/label/__name__/values")
            .await
            .and_then(|d| {
                d.as_array().map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
            })
            .unwrap_or_default();
        // Undecodable, parked and unreadable events have no sample on a healthy system (their
        // labels name the event type or consumer at fault): the code exports them
        // (scripts/check-contracts checks), nothing here.
        let without_samples = [
            "cc_events_undecodable",
            "cc_events_parked",
            "cc_messages_unreadable",
        ];
        let unknown: Vec<&String> = used
            .iter()
            .filter(|m| !known.contains(*m) && !without_samples.contains(&m.as_str()))
            .collect();
        let empty: Vec<&&str> = must_have_samples
            .iter()
            .filter(|m| !series.contains(**m))
            .collect();
        if unknown.is_empty() && empty.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not exported: {unknown:?}; without samples: {empty:?}; Prometheus knows {known:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // The rules load into Prometheus and evaluate without error.
    let rules = prometheus.get(&http, "/api/v1/rules").await.unwrap();
    let rules: Vec<&Value> = rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    assert!(rules.len() >= 11, "{rules:?}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let rules = prometheus.get(&http, "/api/v1/rules").await.unwrap();
        let bad: Vec<Value> = rules["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap().clone())
            .filter(|r| r["health"] != "ok")
            .collect();
        if bad.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "rules not healthy: {bad:#?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // The system is healthy: no lease without a leader, no dependency down.
    let firing = prometheus.get(&http, "/api/v1/alerts").await.unwrap();
    let names: Vec<&str> = firing["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["labels"]["alertname"].as_str())
        .collect();
    assert!(
        !names.contains(&"CallCenterLeaseWithoutLeader")
            && !names.contains(&"CallCenterDependencyDown"),
        "alerts on a healthy system: {names:?}"
    );
}
