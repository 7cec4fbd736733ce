//! Writers racing on one stream: every append names the version its decision was made on, so
//! of two decisions on one state only one is recorded; the other is made again on the new
//! state (and then answered as that state says), never recorded on top of a stale one.

use futures::future::join_all;
use futures::FutureExt;
use reqwest::Method;
use serde_json::json;

use crate::system::System;
use crate::tenant::TenantSpec;

#[tokio::test]
async fn two_writers_racing_on_one_call_record_one_wrap_up_end() {
    let sys = System::start().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    let admin = t.admin().await;
    // A wrap-up long enough that only the agent ends it.
    admin
        .call(
            Method::PUT,
            "/api/admin/queues/500/settings",
            Some(json!({"wrap_up_s": 120})),
        )
        .await
        .ok();
    let bob = t.idle_agent("1002").await;
    t.place_caller("500", "5551234", "Jane Caller").await;
    let v = sys
        .view_when(&bob, "Ringing", |v| v["status"] == "ringing")
        .await;
    let call = v["current_call"]["call"].as_str().unwrap().to_string();
    t.phone("1002", "answer").await;
    t.view_when(&bob, "Connected", |v| v["status"] == "connected")
        .await;
    bob.post("/api/call/hangup", json!({})).await.ok();
    t.view_when(&bob, "Wrap-up", |v| v["status"] == "wrap_up")
        .await;

    // Eight "End wrap-up" at the same instant: eight writers deciding on one state.
    let replies = join_all((0..8).map(|_| bob.post("/api/call/wrap-up/end", json!({})))).await;
    let ok = replies.iter().filter(|r| r.status.is_success()).count();
    for r in replies.iter().filter(|r| !r.status.is_success()) {
        // Decided again on the state the first one left: not in wrap-up any more.
        r.refused(409, "not_in_wrap_up");
    }
    assert_eq!(ok, 1, "one end of the wrap-up is accepted");
    let ends = t
        .call_events(&call)
        .await
        .iter()
        .filter(|t| *t == "WrapUpEnded")
        .count();
    assert_eq!(ends, 1, "the call's wrap-up ends once in the store");
    t.view_when(&bob, "Idle again", |v| v["status"] == "idle")
        .await;
}

#[tokio::test]
async fn changes_of_one_queue_at_the_same_instant_are_each_decided_on_the_state_before_them() {
    let sys = System::start().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    let admin = t.admin().await;
    // Admins' changes to queue 500 at once, each a decision on the queue's stream: an agent
    // assigned, two unassigned, the settings changed three times. Each is recorded once, at a
    // version of its own; one that lost the race is decided again, not refused.
    let put = |path: String, body: serde_json::Value| {
        let admin = &admin;
        async move { admin.call(Method::PUT, &path, Some(body)).await }
    };
    let delete = |path: String| {
        let admin = &admin;
        async move { admin.call(Method::DELETE, &path, None).await }
    };
    let changes = join_all(
        [
            put(
                "/api/admin/queues/500/agents/1003".into(),
                json!({"penalty": 3}),
            ),
            put(
                "/api/admin/queues/500/settings".into(),
                json!({"ring_timeout_s": 10}),
            ),
            put(
                "/api/admin/queues/500/settings".into(),
                json!({"ring_timeout_s": 11}),
            ),
            put(
                "/api/admin/queues/500/settings".into(),
                json!({"ring_timeout_s": 12}),
            ),
        ]
        .into_iter()
        .map(FutureExt::boxed)
        .chain(
            ["1001", "1002"].map(|a| delete(format!("/api/admin/queues/500/agents/{a}")).boxed()),
        ),
    )
    .await;
    for r in changes {
        r.ok();
    }
    let stored: Vec<(i64, String)> = sqlx::query_as(
        "select version, event_type from es_events where stream = $1 order by version",
    )
    .bind(format!("{}/queue-500", t.name))
    .fetch_all(&t.pool)
    .await
    .unwrap();
    let versions: Vec<i64> = stored.iter().map(|s| s.0).collect();
    assert_eq!(
        versions,
        (1..=stored.len() as i64).collect::<Vec<_>>(),
        "one version after the other"
    );
    let last: Vec<&str> = stored.iter().rev().take(6).map(|s| s.1.as_str()).collect();
    let count = |t: &str| last.iter().filter(|l| **l == t).count();
    assert_eq!(count("AgentAssignedToQueue"), 1, "{last:?}");
    assert_eq!(count("AgentUnassignedFromQueue"), 2, "{last:?}");
    assert_eq!(count("QueueConfigured"), 3, "{last:?}");
    let q = admin.get("/api/admin/queues").await.ok();
    let q500 = q
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == "500")
        .unwrap()
        .clone();
    let members: Vec<&str> = q500["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["agent"].as_str().unwrap())
        .collect();
    assert!(members.contains(&"1003"), "{q500}");
    assert!(
        !members.contains(&"1001") && !members.contains(&"1002"),
        "{q500}"
    );
}

/// Every append of a service names the version its decision was made on: `Any` is for tests
/// and tools that write history, never for a decision.
#[test]
fn no_service_appends_at_any_version() {
    fn walk(dir: &std::path::Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for (n, line) in text.lines().enumerate() {
                    if line.contains("ExpectedVersion::Any") {
                        found.push(format!("{}:{}", path.display(), n + 1));
                    }
                }
            }
        }
    }
    let services = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut found = vec![];
    for service in std::fs::read_dir(&services).unwrap() {
        let src = service.unwrap().path().join("src");
        if src.is_dir() {
            walk(&src, &mut found);
        }
    }
    assert!(found.is_empty(), "appends at any version: {found:?}");
}
