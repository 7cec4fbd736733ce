//! Webhooks end to end: a real HTTP receiver (its answers scripted: 500, a hang, down for a
//! while, then 200), deliveries verified with the Standard Webhooks reference library (PyPI
//! `standardwebhooks`, run by Python), order and de-duplication per subscription, the
//! delivery log, the test event, redelivery of a time range, suspension and resume.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::system::{Client, System};
use crate::tenant::TenantSpec;

/// How the receiver answers the next requests (then 200).
#[derive(Clone, Copy, Debug)]
enum Answer {
    Status(u16),
    /// Holds the request longer than the sender's timeout.
    Hang,
}

/// One request: its webhook-id, webhook-timestamp and webhook-signature, and the body.
type Request = (String, String, String, String);

#[derive(Clone, Default)]
struct Received {
    requests: Arc<Mutex<Vec<Request>>>,
    script: Arc<Mutex<VecDeque<Answer>>>,
    /// Answer this to everything (until cleared).
    always: Arc<Mutex<Option<u16>>>,
}

impl Received {
    fn all(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// The bodies of the distinct ids, in the order first received.
    fn distinct(&self) -> Vec<Value> {
        let mut seen = std::collections::HashSet::new();
        self.all()
            .into_iter()
            .filter(|(id, ..)| seen.insert(id.clone()))
            .map(|(.., body)| serde_json::from_str(&body).unwrap())
            .collect()
    }
}

/// A receiver on a free loopback port; `stop` and `start` again on the same port make it "down
/// for a while".
struct Receiver {
    addr: SocketAddr,
    got: Received,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let port = cc_testkit::free_port();
        let mut r = Receiver {
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            got: Received::default(),
            server: None,
        };
        r.up().await;
        r
    }

    async fn up(&mut self) {
        use axum::http::{HeaderMap, StatusCode};
        let got = self.got.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let got = got.clone();
                async move {
                    let h = |k: &str| {
                        headers
                            .get(k)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string()
                    };
                    got.requests.lock().unwrap().push((
                        h("webhook-id"),
                        h("webhook-timestamp"),
                        h("webhook-signature"),
                        body,
                    ));
                    if let Some(code) = *got.always.lock().unwrap() {
                        return StatusCode::from_u16(code).unwrap();
                    }
                    let next = got.script.lock().unwrap().pop_front();
                    match next {
                        Some(Answer::Status(code)) => StatusCode::from_u16(code).unwrap(),
                        Some(Answer::Hang) => {
                            tokio::time::sleep(Duration::from_secs(4)).await;
                            StatusCode::OK
                        }
                        None => StatusCode::OK,
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.server = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
    }

    fn down(&mut self) {
        if let Some(s) = self.server.take() {
            s.abort();
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }
}

/// Every request verified with the Standard Webhooks reference library.
fn verify_with_the_reference_library(secret: &str, got: &[Request]) {
    let path = std::env::var("CC_STANDARDWEBHOOKS_PYTHONPATH").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../.tools/pip-standardwebhooks-1.0.0"
        )
        .into()
    });
    let requests: Vec<Value> = got
        .iter()
        .map(|(id, ts, sig, body)| {
            json!({"headers": {"webhook-id": id, "webhook-timestamp": ts, "webhook-signature": sig}, "body": body})
        })
        .collect();
    let script = r#"
import json, sys
from standardwebhooks.webhooks import Webhook
secret, requests = sys.argv[1], json.load(sys.stdin)
wh = Webhook(secret)
for r in requests:
    wh.verify(r["body"], r["headers"])
# A body changed on the way is refused.
r = requests[0]
try:
    wh.verify(r["body"] + " ", r["headers"])
    sys.exit("a tampered body was accepted")
except Exception:
    pass
print(len(requests))
"#;
    let mut child = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(secret)
        .env("PYTHONPATH", &path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&requests).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Standard Webhooks library (PYTHONPATH {path}; scripts/test installs it) refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        got.len().to_string()
    );
}

async fn create(admin: &Client, body: Value) -> Value {
    let r = admin.post("/api/admin/webhooks", body).await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.body
}

#[tokio::test]
async fn webhooks_arrive_signed_in_order_once_each_through_errors_a_hang_and_a_receiver_down() {
    let sys = System::start().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    let admin = t.admin().await;
    let mut rx = Receiver::start().await;

    // Bad subscriptions are refused, naming the field.
    let r = admin
        .post("/api/admin/webhooks", json!({"url": rx.url()}))
        .await;
    assert_eq!(
        r.refused(400, "invalid_field")["field"],
        "url",
        "http needs allow_http"
    );
    let r = admin
        .post(
            "/api/admin/webhooks",
            json!({"url": rx.url(), "allow_http": true, "event_types": ["AgentDanced"]}),
        )
        .await;
    assert_eq!(r.refused(400, "invalid_field")["field"], "event_types");
    let r = admin
        .post(
            "/api/admin/webhooks",
            json!({"url": rx.url(), "allow_http": true, "colour": "red"}),
        )
        .await;
    assert_eq!(r.refused(400, "invalid_field")["field"], "colour");
    let agent = t.agent("1001").await;
    agent
        .get("/api/admin/webhooks")
        .await
        .refused(403, "forbidden");

    let hook = create(
        &admin,
        json!({"url": rx.url(), "allow_http": true, "event_types": ["AgentPaused", "AgentUnpaused"], "agents": ["1001"], "description": "CRM"}),
    )
    .await;
    let secret = hook["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    let id = hook["id"].as_str().unwrap().to_string();
    let listed = admin.get("/api/admin/webhooks").await.ok();
    assert_eq!(listed[0]["id"], id.as_str());
    assert!(
        listed[0].get("secret").is_none(),
        "the secret is shown once"
    );

    // The receiver: a 500, then a hang (longer than the timeout), then fine.
    rx.got
        .script
        .lock()
        .unwrap()
        .extend([Answer::Status(500), Answer::Hang]);
    let from = chrono::Utc::now();
    agent.post("/api/session", json!({})).await.ok();
    let bob = t.agent("1002").await;
    bob.post("/api/session", json!({})).await.ok();
    bob.post("/api/session/pause", json!({"reason": "Lunch"}))
        .await
        .ok();
    for (i, reason) in ["Lunch", "Break", "Bathroom"].iter().enumerate() {
        agent
            .post("/api/session/pause", json!({"reason": reason}))
            .await
            .ok();
        agent.post("/api/session/unpause", json!({})).await.ok();
        if i == 1 {
            // Down for a while, then back on the same address.
            rx.down();
            tokio::time::sleep(Duration::from_secs(2)).await;
            rx.up().await;
        }
    }
    let got = cc_testkit::eventually("six events delivered", Duration::from_secs(60), || async {
        let d = rx.got.distinct();
        (d.len() >= 6).then_some(d)
    })
    .await;
    let to = chrono::Utc::now();
    // In order, only Alice's pauses, each once (retries carry the same id).
    let kinds: Vec<(String, String)> = got
        .iter()
        .map(|b| {
            (
                b["type"].as_str().unwrap().to_string(),
                b["data"]["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("callcenter.AgentPaused.v1".to_string(), "Lunch".to_string()),
            ("callcenter.AgentUnpaused.v1".into(), "Lunch".into()),
            ("callcenter.AgentPaused.v1".into(), "Break".into()),
            ("callcenter.AgentUnpaused.v1".into(), "Break".into()),
            ("callcenter.AgentPaused.v1".into(), "Bathroom".into()),
            ("callcenter.AgentUnpaused.v1".into(), "Bathroom".into()),
        ]
    );
    assert!(got.iter().all(|b| b["data"]["agent"] == "1001"));
    assert_eq!(got[0]["specversion"], "1.0");
    assert_eq!(got[0]["tenant"], t.name.as_str());
    let all = rx.got.all();
    assert!(
        all.len() > 6,
        "the failures were retried ({} requests)",
        all.len()
    );
    verify_with_the_reference_library(&secret, &all);

    // The delivery log says what happened.
    let log = admin
        .get(&format!("/api/admin/webhooks/{id}/deliveries"))
        .await
        .ok();
    let outcomes: Vec<(&str, Option<i64>)> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["outcome"].as_str().unwrap(), d["status_code"].as_i64()))
        .collect();
    assert!(outcomes.contains(&("failed", Some(500))), "{outcomes:?}");
    assert!(outcomes.iter().filter(|(o, _)| *o == "delivered").count() >= 6);

    // The test button.
    let t = admin
        .post(&format!("/api/admin/webhooks/{id}/test"), json!({}))
        .await
        .ok();
    assert_eq!(
        (t["outcome"].as_str(), t["status_code"].as_i64()),
        (Some("test"), Some(200))
    );
    let last = rx.got.all().last().unwrap().3.clone();
    assert!(last.contains("callcenter.webhook.test.v1"), "{last}");

    // Redelivery of the time range: the same six, in order, with their own ids.
    let before = rx.got.all().len();
    let r = admin
        .post(
            &format!("/api/admin/webhooks/{id}/redeliver"),
            json!({"from": from, "to": to}),
        )
        .await
        .ok();
    assert_eq!(
        (r["matched"].as_i64(), r["delivered"].as_i64()),
        (Some(6), Some(6)),
        "{r}"
    );
    let again: Vec<String> = rx.got.all()[before..]
        .iter()
        .map(|(id, ..)| id.clone())
        .collect();
    let first: Vec<String> = got
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(again, first);

    let r = admin
        .call(Method::DELETE, &format!("/api/admin/webhooks/{id}"), None)
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(admin.get("/api/admin/webhooks").await.ok(), json!([]));
}

#[tokio::test]
async fn a_webhook_failing_past_the_limit_is_suspended_with_the_reason_and_resumes_where_it_stopped(
) {
    let sys = System::start().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    let admin = t.admin().await;
    let rx = Receiver::start().await;
    *rx.got.always.lock().unwrap() = Some(503);
    let hook = create(
        &admin,
        json!({"url": rx.url(), "allow_http": true, "event_types": ["AgentPaused"]}),
    )
    .await;
    let id = hook["id"].as_str().unwrap().to_string();
    let agent = t.agent("1001").await;
    agent.post("/api/session", json!({})).await.ok();
    agent
        .post("/api/session/pause", json!({"reason": "Lunch"}))
        .await
        .ok();
    // The tests' limit is a few seconds (CC_WEBHOOK_SUSPEND_AFTER_SECS); 24 h by default.
    let w = cc_testkit::eventually("suspended", Duration::from_secs(40), || async {
        let l = admin.get("/api/admin/webhooks").await.ok();
        (l[0]["status"] == "suspended").then(|| l[0].clone())
    })
    .await;
    assert!(
        w["suspended_reason"].as_str().unwrap().contains("503"),
        "{w}"
    );
    let tries = rx.got.all().len();
    assert!(tries >= 2, "retried before suspending ({tries})");
    // While suspended nothing is sent.
    agent.post("/api/session/unpause", json!({})).await.ok();
    agent
        .post("/api/session/pause", json!({"reason": "Break"}))
        .await
        .ok();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(rx.got.all().len(), tries);
    // The receiver is fixed; resume: the pause it stopped at, then the next, in order.
    *rx.got.always.lock().unwrap() = None;
    let r = admin
        .post(&format!("/api/admin/webhooks/{id}/resume"), json!({}))
        .await
        .ok();
    assert_eq!(r["status"], "active");
    let got = cc_testkit::eventually("both pauses", Duration::from_secs(30), || async {
        let d = rx.got.distinct();
        (d.len() >= 2).then_some(d)
    })
    .await;
    let reasons: Vec<&str> = got
        .iter()
        .map(|b| b["data"]["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, vec!["Lunch", "Break"]);
}
