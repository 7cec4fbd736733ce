//! What agents expect from a desk, through the API: the ring deadline and hold figures in the
//! view, the callers waiting in the agent's own queues, the wrap-up's disposition and note
//! (validated, recorded on the call's stream and in reporting.calls; a required one holds the
//! wrap-up), and the agent's calls today.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::system::System;
use crate::tenant::TenantSpec;

/// Seconds from one RFC 3339 time to another (PostgreSQL does the arithmetic).
async fn seconds_between(sys: &System, from: &Value, to: &Value) -> f64 {
    sqlx::query_scalar(
        "select extract(epoch from ($2::text::timestamptz - $1::text::timestamptz))::float8",
    )
    .bind(from.as_str().unwrap())
    .bind(to.as_str().unwrap())
    .fetch_one(&sys.db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn dispositions_are_checked_recorded_on_the_call_and_a_required_one_holds_the_wrap_up() {
    let sys = System::start().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    let admin = t.admin().await;
    let put = |settings: Value| {
        let admin = &admin;
        async move {
            admin
                .call(
                    Method::PUT,
                    "/api/admin/queues/500/settings",
                    Some(settings),
                )
                .await
        }
    };
    // The admin's codes are checked, naming the field.
    let r = put(json!({"dispositions": ["Sale", "Sa\u{7}le"]})).await;
    assert_eq!(
        r.refused(400, "invalid_field")["field"],
        "settings.dispositions[1]"
    );
    let r = put(json!({"dispositions": ["Sale", "Sale"]})).await;
    assert_eq!(
        r.refused(400, "invalid_field")["field"],
        "settings.dispositions[1]"
    );
    let r = put(json!({"disposition_required": true})).await;
    assert_eq!(
        r.refused(400, "invalid_field")["field"],
        "settings.disposition_required"
    );
    put(json!({"ring_timeout_s": 7, "wrap_up_s": 1, "dispositions": ["Sale", "No sale"], "disposition_required": true}))
        .await
        .ok();

    let bob = t.idle_agent("1002").await;
    // Bob's queues only (he is assigned to 500, not to 501), with their codes.
    let queues = bob.get("/api/me/queues").await.ok();
    let names: Vec<&str> = queues
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["queue"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["500"], "{queues}");
    assert_eq!(queues[0]["dispositions"], json!(["Sale", "No sale"]));
    assert_eq!(queues[0]["disposition_required"], true);
    assert_eq!(queues[0]["waiting"], 0);
    admin.get("/api/me/queues").await.refused(403, "forbidden");

    t.place_caller("500", "5551234", "Jane Caller").await;
    let v = sys
        .view_when(&bob, "Ringing", |v| v["status"] == "ringing")
        .await;
    let c = &v["current_call"];
    assert_eq!(
        seconds_between(&sys, &c["offered_at"], &c["ring_until"]).await,
        7.0,
        "the ring deadline is the queue's ring timeout after the offer: {c}"
    );
    let call = c["call"].as_str().unwrap().to_string();
    cc_testkit::eventually("1 waiting in 500", Duration::from_secs(10), || async {
        let q = bob.get("/api/me/queues").await.ok();
        (q[0]["waiting"] == 1 && q[0]["longest_waiting_since"].is_string()).then_some(())
    })
    .await;

    t.phone("1002", "answer").await;
    sys.view_when(&bob, "Connected", |v| v["status"] == "connected")
        .await;
    bob.post(
        "/api/call/wrap-up/disposition",
        json!({"disposition": "Sale"}),
    )
    .await
    .refused(409, "not_in_wrap_up");
    bob.post("/api/call/hold", json!({"held": true})).await.ok();
    let v = sys
        .view_when(&bob, "On hold", |v| v["status"] == "on_hold")
        .await;
    assert_eq!(v["current_call"]["hold_count"], 1);
    assert!(v["current_call"]["held_since"].is_string());
    bob.post("/api/call/hold", json!({"held": false}))
        .await
        .ok();
    let v = sys
        .view_when(&bob, "Connected again", |v| v["status"] == "connected")
        .await;
    assert!(v["current_call"]["held_since"].is_null());
    assert!(v["current_call"]["hold_ms"].as_i64().unwrap() >= 0);
    bob.post("/api/call/hangup", json!({})).await.ok();
    sys.view_when(&bob, "Wrap-up", |v| v["status"] == "wrap_up")
        .await;

    // A required disposition: End wrap-up is refused, naming the field.
    let r = bob.post("/api/call/wrap-up/end", json!({})).await;
    assert_eq!(
        r.refused(409, "disposition_required")["field"],
        "disposition"
    );
    // Bad input names its field, and nothing is appended.
    let before = t.call_events(&call).await.len();
    let r = bob
        .post(
            "/api/call/wrap-up/disposition",
            json!({"disposition": "Maybe"}),
        )
        .await;
    let body = r.refused(422, "unknown_disposition");
    assert_eq!(body["field"], "disposition");
    assert!(
        body["message"].as_str().unwrap().contains("Sale, No sale"),
        "{body}"
    );
    let r = bob
        .post(
            "/api/call/wrap-up/disposition",
            json!({"note": "ring\u{7}bell"}),
        )
        .await;
    assert_eq!(r.refused(400, "invalid_field")["field"], "note");
    let r = bob
        .post(
            "/api/call/wrap-up/disposition",
            json!({"note": "x".repeat(1001)}),
        )
        .await;
    assert_eq!(r.refused(400, "invalid_field")["field"], "note");
    let r = bob.post("/api/call/wrap-up/disposition", json!({})).await;
    assert_eq!(r.refused(400, "missing_field")["field"], "disposition");
    bob.post(
        "/api/call/wrap-up/disposition",
        json!({"disposition": "Sale", "notes": "typo"}),
    )
    .await
    .refused(400, "invalid_field");
    assert_eq!(t.call_events(&call).await.len(), before);

    // The 1 s wrap-up is long over: the timer waits for the disposition.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(bob.get("/api/me").await.ok()["status"], "wrap_up");
    // A note alone does not release the agent.
    bob.post(
        "/api/call/wrap-up/disposition",
        json!({"note": "Wants a brochure"}),
    )
    .await
    .ok();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(bob.get("/api/me").await.ok()["status"], "wrap_up");
    bob.post(
        "/api/call/wrap-up/disposition",
        json!({"disposition": "Sale", "note": " Line one\r\nline two "}),
    )
    .await
    .ok();
    sys.view_when(&bob, "Idle once the disposition is given", |v| {
        v["status"] == "idle"
    })
    .await;

    let events = t.stream_events(&format!("call-{call}")).await;
    let recorded: Vec<&Value> = events
        .iter()
        .filter(|(t, _)| t == "CallDispositionRecorded")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(recorded.len(), 2);
    assert_eq!(recorded[0]["note"], "Wants a brochure");
    assert!(recorded[0].get("disposition").is_none());
    assert_eq!(
        (
            &recorded[1]["disposition"],
            &recorded[1]["note"],
            &recorded[1]["queue"],
            &recorded[1]["agent"]
        ),
        (
            &json!("Sale"),
            &json!("Line one\nline two"),
            &json!("500"),
            &json!("1002")
        )
    );
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(types.last(), Some(&"WrapUpEnded"), "{types:?}");

    // In the reports and in the agent's calls today.
    let row: (Option<String>, Option<String>, Option<String>) = cc_testkit::eventually(
        "the disposition in reporting.calls",
        Duration::from_secs(10),
        || async {
            let r: (Option<String>, Option<String>, Option<String>) = sqlx::query_as(
                "select disposition, disposition_note, disposition_agent from reporting.calls where call = $1",
            )
            .bind(&call)
            .fetch_optional(&sys.db.pool)
            .await
            .ok()??;
            r.0.is_some().then_some(r)
        },
    )
    .await;
    assert_eq!(
        row,
        (
            Some("Sale".into()),
            Some("Line one\nline two".into()),
            Some("1002".into())
        )
    );
    let today = bob.get("/api/me/calls").await.ok();
    let mine = &today[0];
    assert_eq!(
        (
            &mine["call"],
            &mine["outcome"],
            &mine["disposition"],
            &mine["caller_name"],
            &mine["queue_name"]
        ),
        (
            &json!(call),
            &json!("answered"),
            &json!("Sale"),
            &json!("Jane Caller"),
            &json!("Sales")
        ),
        "{today}"
    );
    assert!(mine["talk_ms"].as_i64().unwrap() >= 0);
    // Alice had no call: her list is empty.
    let alice = t.agent("1001").await;
    assert_eq!(alice.get("/api/me/calls").await.ok(), json!([]));
}
