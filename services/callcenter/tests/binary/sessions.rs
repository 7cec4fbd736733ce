//! Agent sign-in and the session lifecycle, end to end: HTTP API -> NATS commands -> services
//! -> event store -> projection -> SSE, and the events on their NATS subjects.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::system::{Sse, System};
use crate::tenant::TenantSpec;

/// The one test of demo mode itself: the demo tenant a newcomer logs in to, as its banner
/// says (every other test makes a tenant of its own).
#[tokio::test]
async fn a_newcomer_logs_in_to_the_demo_tenant_pauses_for_lunch_and_logs_out_with_every_step_an_event(
) {
    let sys = System::start_demo().await;
    let demo = sys.demo_tenant();
    // Every account of the banner signs in with its published password.
    let alice = demo.sign_in("1001", "demo1001").await;
    for n in ["1002", "1003", "1004"] {
        demo.sign_in(n, &format!("demo{n}")).await;
    }
    let admin = demo.sign_in("admin", "demo-admin").await;
    demo.sign_in("supervisor", "demo-supervisor").await;
    let reasons = admin.get("/api/admin/pause-reasons").await.ok();
    let reasons: Vec<&str> = reasons
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["Lunch", "Break", "Bathroom"]);
    let queues = admin.get("/api/admin/queues").await.ok();
    let queues: Vec<(&str, &str)> = queues
        .as_array()
        .unwrap()
        .iter()
        .map(|q| (q["queue"].as_str().unwrap(), q["name"].as_str().unwrap()))
        .collect();
    assert_eq!(queues, [("500", "Sales"), ("501", "Support")]);

    let options = alice.get("/api/login-options").await.ok();
    assert_eq!(options["default_device"], "1001");
    assert!(
        options["devices"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["online"] == true),
        "only online devices: {options}"
    );
    assert!(
        !options["devices"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["device"] == "1007"),
        "1007 is offline"
    );
    let queues: Vec<_> = options["assigned_queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    assert_eq!(queues, ["Sales", "Support"]);

    let mut sse = Sse::open(&alice, "/api/events", None).await;
    let (_, first) = sse.until("the initial view", |_| true).await;
    assert_eq!(first["status"], "logged_out");

    let s = alice.post("/api/session", json!({})).await.ok();
    assert_eq!(
        (s["device"].as_str(), s["logged_in"].as_bool()),
        (Some("1001"), Some(true)),
        "the own extension by default"
    );
    let (_, v) = sse.until("Idle", |v| v["status"] == "idle").await;
    assert_eq!(v["device"], "1001");
    assert!(v["login_time"].is_string());
    assert_eq!(v["queues"].as_array().unwrap().len(), 2);
    assert_eq!(
        v["counts"],
        json!({"completed": 0, "missed": 0, "rejected": 0})
    );

    alice
        .post("/api/session/pause", json!({"reason": "Lunch"}))
        .await
        .ok();
    // Read-your-writes: a GET right after the command's answer shows it (no waiting loop here).
    let me = alice.get("/api/me").await.ok();
    assert_eq!(
        (me["status"].as_str(), me["pause_reason"].as_str()),
        (Some("paused"), Some("Lunch")),
        "{me}"
    );
    let (_, v) = sse.until("Paused", |v| v["status"] == "paused").await;
    assert_eq!(
        (v["status_label"].as_str(), v["pause_reason"].as_str()),
        (Some("Paused"), Some("Lunch"))
    );
    alice.post("/api/session/unpause", json!({})).await.ok();
    sse.until("Idle again", |v| {
        v["status"] == "idle" && v["pause_reason"].is_null()
    })
    .await;
    alice.call(Method::DELETE, "/api/session", None).await.ok();
    assert_eq!(alice.get("/api/me").await.ok()["status"], "logged_out");
    sse.until("Logged out", |v| v["status"] == "logged_out")
        .await;

    let types: Vec<String> = demo
        .stream_events("agent-1001")
        .await
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert_eq!(
        types,
        [
            "AgentLoggedIn",
            "AgentPaused",
            "AgentUnpaused",
            "AgentLoggedOut"
        ]
    );
    // The same facts on the documented NATS subject of the agent.
    let filter = format!("{}.events.demo.agent.1001.>", sys.prefix);
    let published = cc_testkit::eventually("events relayed", Duration::from_secs(10), || async {
        let t = sys.published_types(&filter).await;
        (t.len() == 4).then_some(t)
    })
    .await;
    assert_eq!(published, types);

    // The API documents itself, browsable without the network.
    let doc: serde_json::Value = sys
        .http
        .get(format!("{}/api/openapi.json", sys.portal))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/api/session/pause"]["post"].is_object());
    let page = sys
        .http
        .get(format!("{}/api/docs", sys.portal))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("/api/openapi.json") && !page.contains("https://"),
        "self-contained docs page"
    );

    let metrics = sys
        .http
        .get(sys._app.admin("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            r#"cc_commands_total{service="agent-session",command="LoginAgent",outcome="ok"} 1"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn bad_input_gets_a_4xx_naming_the_field_and_changes_nothing() {
    let sys = System::start().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    let anon = t.anonymous();
    let alice = t.agent("1001").await;
    let bob = t.agent("1002").await;
    let before = sys.event_count().await;

    anon.raw(Method::POST, "/api/login", Some("{not json".into()))
        .await
        .refused(400, "invalid_json");
    let r = anon
        .post("/api/login", json!({"agent_number": "1001"}))
        .await;
    assert_eq!(r.refused(400, "missing_field")["field"], "password");
    let r = anon
        .post(
            "/api/login",
            json!({"agent_number": "10a1", "password": "x"}),
        )
        .await;
    assert_eq!(r.refused(400, "invalid_field")["field"], "agent_number");
    let r = alice.post("/api/session", json!({"device": 1001})).await;
    assert_eq!(r.refused(400, "invalid_field")["field"], "device");
    let r = alice.post("/api/session", json!({"device": "1999"})).await;
    assert_eq!(r.refused(422, "unknown_device")["field"], "device");
    let r = alice.post("/api/session", json!({"device": "1007"})).await;
    assert_eq!(r.refused(422, "device_offline")["field"], "device");
    assert!(r.body["message"].as_str().unwrap().contains("1007"));
    let r = alice.post("/api/session", json!({"queues": ["502"]})).await;
    assert_eq!(r.refused(422, "queue_not_assigned")["field"], "queues");
    // Bob may not choose his queues.
    let r = bob.post("/api/session", json!({"queues": []})).await;
    assert_eq!(
        r.refused(403, "queue_change_not_allowed")["field"],
        "queues"
    );
    alice
        .post("/api/session/pause", json!({"reason": "Lunch"}))
        .await
        .refused(409, "not_logged_in");

    alice.post("/api/session", json!({})).await.ok();
    bob.post("/api/session", json!({"device": "1002"}))
        .await
        .ok();
    let after_login = sys.event_count().await;
    let r = alice
        .post("/api/session/pause", json!({"reason": "Nap"}))
        .await;
    let b = r.refused(422, "unknown_pause_reason");
    assert_eq!(b["field"], "reason");
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("Lunch, Break, Bathroom"),
        "names the valid ones: {b}"
    );
    let r = alice
        .post("/api/session/pause", json!({"why": "Lunch"}))
        .await;
    assert!(r.status.is_client_error());
    alice
        .get("/api/admin/pause-reasons")
        .await
        .refused(403, "forbidden");
    bob.call(Method::DELETE, "/api/session/queues/500", None)
        .await
        .refused(403, "queue_change_not_allowed");
    alice
        .call(Method::PUT, "/api/session/queues/502", None)
        .await
        .refused(422, "queue_not_assigned");
    alice
        .call(Method::PUT, "/api/session/queues/50x", None)
        .await
        .refused(400, "invalid_field");

    // Another agent's session and the supervisor's actions are out of reach.
    alice
        .post("/api/supervisor/agents/1002/logout", json!({}))
        .await
        .refused(403, "forbidden");
    alice
        .get("/api/admin/agents")
        .await
        .refused(403, "forbidden");
    // A token of this tenant means nothing in another tenant.
    let mut elsewhere = alice.clone();
    elsewhere.tenant = "globex".into();
    elsewhere
        .get("/api/me")
        .await
        .refused(401, "unauthenticated");
    let mut nobody = alice.clone();
    nobody.token = Some("0".repeat(64));
    nobody.get("/api/me").await.refused(401, "unauthenticated");

    assert_eq!(
        sys.event_count().await,
        after_login,
        "refusals append nothing"
    );
    assert!(after_login > before);
}

#[tokio::test]
async fn repeated_actions_get_a_clear_answer_and_no_duplicate_events() {
    let sys = System::start().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    let alice = t.agent("1001").await;
    alice.post("/api/session", json!({})).await.ok();
    alice
        .post("/api/session", json!({}))
        .await
        .refused(409, "already_logged_in");
    // A double click with the same idempotency key: one effect, the same answer twice.
    let first = alice
        .post_once("/api/session/pause", json!({"reason": "Lunch"}), "click-1")
        .await
        .ok();
    let again = alice
        .post_once("/api/session/pause", json!({"reason": "Lunch"}), "click-1")
        .await
        .ok();
    assert_eq!(first, again);
    alice
        .post("/api/session/pause", json!({"reason": "Lunch"}))
        .await
        .refused(409, "already_paused");
    // Changing the reason while paused is its own fact.
    let s = alice
        .post("/api/session/pause", json!({"reason": "Break"}))
        .await
        .ok();
    assert_eq!(s["paused"], "Break");
    alice.post("/api/session/unpause", json!({})).await.ok();
    alice
        .post("/api/session/unpause", json!({}))
        .await
        .refused(409, "not_paused");
    alice
        .call(Method::DELETE, "/api/session/queues/501", None)
        .await
        .ok();
    alice
        .call(Method::DELETE, "/api/session/queues/501", None)
        .await
        .refused(409, "not_in_queue");
    alice
        .call(Method::PUT, "/api/session/queues/501", None)
        .await
        .ok();
    alice.call(Method::DELETE, "/api/session", None).await.ok();
    alice
        .call(Method::DELETE, "/api/session", None)
        .await
        .refused(409, "not_logged_in");
    let types: Vec<String> = t
        .stream_events("agent-1001")
        .await
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert_eq!(
        types,
        [
            "AgentLoggedIn",
            "AgentPaused",
            "AgentPauseReasonChanged",
            "AgentUnpaused",
            "AgentLeftQueue",
            "AgentJoinedQueue",
            "AgentLoggedOut"
        ]
    );
}

#[tokio::test]
async fn races_have_one_winner_and_a_clear_error_for_the_other() {
    let sys = System::start().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    let alice = t.agent("1001").await;
    let alice_tab2 = t.agent("1001").await;
    let bob = t.agent("1002").await;

    // Two logins of the same agent at once.
    let (a, b) = tokio::join!(
        alice.post("/api/session", json!({})),
        alice_tab2.post("/api/session", json!({"device": "1005"}))
    );
    let results = [a.status.as_u16(), b.status.as_u16()];
    assert!(
        results.contains(&200) && results.contains(&409),
        "{results:?} {} {}",
        a.body,
        b.body
    );
    let loser = if a.status == 409 { &a } else { &b };
    assert_eq!(loser.body["error"], "already_logged_in");
    let logins = t.stream_events("agent-1001").await.len();
    assert_eq!(logins, 1);

    // Two agents completing login on the same device at once.
    let carol = t.agent("1003").await;
    let (b1, c1) = tokio::join!(
        bob.post("/api/session", json!({"device": "1006"})),
        carol.post("/api/session", json!({"device": "1006"}))
    );
    let codes = [b1.status.as_u16(), c1.status.as_u16()];
    assert!(codes.contains(&200) && codes.contains(&409), "{codes:?}");
    let loser = if b1.status == 409 { &b1 } else { &c1 };
    assert_eq!(
        (loser.body["error"].as_str(), loser.body["field"].as_str()),
        (Some("device_in_use"), Some("device"))
    );

    // Both tabs follow the same session live.
    let mut tab1 = Sse::open(&alice, "/api/events", None).await;
    let mut tab2 = Sse::open(&alice_tab2, "/api/events", None).await;
    // A pause and a logout at the same instant: both are decided in some order, never mixed.
    let (p, l) = tokio::join!(
        alice.post("/api/session/pause", json!({"reason": "Lunch"})),
        alice_tab2.call(Method::DELETE, "/api/session", None)
    );
    assert_eq!(l.status, 200, "the logout always succeeds: {}", l.body);
    assert!(
        p.status == 200 || p.body["error"] == "not_logged_in",
        "{}",
        p.body
    );
    for tab in [&mut tab1, &mut tab2] {
        let (_, v) = tab
            .until("logged out", |v| v["status"] == "logged_out")
            .await;
        assert!(v["pause_reason"].is_null());
    }
    let types: Vec<String> = t
        .stream_events("agent-1001")
        .await
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert_eq!(types.last().map(String::as_str), Some("AgentLoggedOut"));
    assert!(
        types == ["AgentLoggedIn", "AgentLoggedOut"]
            || types == ["AgentLoggedIn", "AgentPaused", "AgentLoggedOut"],
        "{types:?}"
    );
}

#[tokio::test]
async fn sse_resumes_after_a_reconnect_without_losing_a_change() {
    let sys = System::start().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    let alice = t.agent("1001").await;
    alice.post("/api/session", json!({})).await.ok();
    let mut sse = Sse::open(&alice, "/api/events", None).await;
    let (id, _) = sse.until("idle", |v| v["status"] == "idle").await;
    let id = id.expect("events carry ids");
    drop(sse); // the connection drops

    alice
        .post("/api/session/pause", json!({"reason": "Lunch"}))
        .await
        .ok();
    alice
        .post("/api/session/pause", json!({"reason": "Break"}))
        .await
        .ok();
    alice.post("/api/session/unpause", json!({})).await.ok();
    sys.view_when(&alice, "the read model caught up", |v| {
        v["status"] == "idle" && v["version"].as_i64() > Some(id + 2)
    })
    .await;

    let mut resumed = Sse::open(&alice, "/api/events", Some(id)).await;
    let mut seen = vec![];
    for _ in 0..3 {
        let (_, eid, v) = resumed
            .next(Duration::from_secs(10))
            .await
            .expect("a missed change");
        seen.push((
            eid.unwrap(),
            v["pause_reason"].clone(),
            v["status"].as_str().unwrap().to_string(),
        ));
    }
    assert_eq!(
        seen.iter().map(|s| s.0).collect::<Vec<_>>(),
        [id + 1, id + 2, id + 3]
    );
    assert_eq!(seen[0].1, "Lunch");
    assert_eq!(seen[1].1, "Break");
    assert_eq!(seen[2].2, "idle");
}

#[tokio::test]
async fn sse_with_a_last_event_id_ahead_of_the_view_gets_the_current_view_and_goes_on() {
    let sys = System::start().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    let alice = t.agent("1001").await;
    alice.post("/api/session", json!({})).await.ok();
    let me = sys
        .view_when(&alice, "Idle", |v| v["status"] == "idle")
        .await;
    let version = me["version"].as_i64().unwrap();

    // An id from before a rebuild of the read model, or from another installation: ahead of
    // what the view has reached.
    let mut sse = Sse::open(&alice, "/api/events", Some(version + 100)).await;
    let (_, id, v) = sse
        .next(Duration::from_secs(5))
        .await
        .expect("the current view, not silence");
    assert_eq!((id, v["status"].as_str()), (Some(version), Some("idle")));
    alice
        .post("/api/session/pause", json!({"reason": "Lunch"}))
        .await
        .ok();
    let (_, id, v) = sse
        .next(Duration::from_secs(10))
        .await
        .expect("the next change");
    assert_eq!(
        (id, v["status"].as_str()),
        (Some(version + 1), Some("paused"))
    );
}

#[tokio::test]
async fn a_device_that_goes_offline_takes_the_agent_out_of_routing_until_it_is_back() {
    let sys = System::start().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    let bob = t.agent("1002").await;
    bob.post("/api/session", json!({})).await.ok();
    t.set_registered("1002", false).await;
    let v = sys
        .view_when(&bob, "device offline", |v| {
            v["device"] == "1002" && v["device_online"] == false
        })
        .await;
    assert_eq!(
        v["status"], "idle",
        "still logged in, shown as device offline"
    );
    t.set_registered("1002", true).await;
    sys.view_when(&bob, "device online", |v| v["device_online"] == true)
        .await;
    let types: Vec<String> = t
        .stream_events("agent-1002")
        .await
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert_eq!(
        types,
        [
            "AgentLoggedIn",
            "AgentDeviceWentOffline",
            "AgentDeviceCameOnline"
        ]
    );
    // An offline device cannot be picked; once registered it can.
    let carol = t.agent("1003").await;
    carol
        .post("/api/session", json!({"device": "1007"}))
        .await
        .refused(422, "device_offline");
    t.set_registered("1007", true).await;
    cc_testkit::eventually("1007 online for login", Duration::from_secs(10), || async {
        carol
            .post("/api/session", json!({"device": "1007"}))
            .await
            .status
            .is_success()
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn sign_in_failures_are_generic_then_throttled() {
    let sys = System::start().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    let anon = t.anonymous();
    let unknown = anon
        .post(
            "/api/login",
            json!({"agent_number": "4242", "password": "whatever"}),
        )
        .await;
    let wrong = anon
        .post(
            "/api/login",
            json!({"agent_number": "1003", "password": "whatever"}),
        )
        .await;
    unknown.refused(401, "invalid_credentials");
    wrong.refused(401, "invalid_credentials");
    assert_eq!(
        unknown.body, wrong.body,
        "the same answer whether the number exists or not"
    );
    // Five failures in the window lock the agent number (the 3rd on are slowed down).
    for _ in 0..4 {
        anon.post(
            "/api/login",
            json!({"agent_number": "1003", "password": "whatever"}),
        )
        .await
        .refused(401, "invalid_credentials");
    }
    let locked = anon
        .post(
            "/api/login",
            json!({"agent_number": "1003", "password": &t.password("1003")}),
        )
        .await;
    locked.refused(429, "too_many_attempts");
    assert!(locked.body["message"]
        .as_str()
        .unwrap()
        .contains("try again in"));
    // Other agents are not locked out by one agent's failures.
    anon.post(
        "/api/login",
        json!({"agent_number": "1002", "password": &t.password("1002")}),
    )
    .await
    .ok();
    // The session cookie is HttpOnly and SameSite.
    let r = sys
        .http
        .post(format!("{}/api/login", sys.portal))
        .header("X-Tenant", &t.name)
        .json(&json!({"agent_number": "1004", "password": &t.password("1004")}))
        .send()
        .await
        .unwrap();
    let cookie = r
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        cookie.starts_with("cc_session=")
            && cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
}

#[tokio::test]
async fn admins_manage_the_directory_and_disabling_an_agent_ends_their_session() {
    let sys = System::start().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    let admin = t.admin().await;
    let supervisor = t.supervisor().await;

    let r = admin
        .post(
            "/api/admin/agents",
            json!({"agent": "10x5", "display_name": "Eve", "password": "secret-1"}),
        )
        .await;
    assert_eq!(r.refused(400, "invalid_field")["field"], "agent");
    let r = admin
        .post(
            "/api/admin/agents",
            json!({"agent": "1005", "display_name": "Eve", "password": "123"}),
        )
        .await;
    assert_eq!(r.refused(400, "invalid_field")["field"], "password");
    let eve = admin
        .post(
            "/api/admin/agents",
            json!({"agent": "1005", "display_name": "Eve Example", "password": "secret-1"}),
        )
        .await
        .ok();
    assert_eq!(eve["may_manage_queues"], false, "the tenant's default");
    admin
        .post(
            "/api/admin/agents",
            json!({"agent": "1005", "display_name": "Eve", "password": "secret-1"}),
        )
        .await
        .refused(409, "agent_exists");
    admin
        .call(
            Method::PUT,
            "/api/admin/queues/500/agents/1005",
            Some(json!({"penalty": 2})),
        )
        .await
        .ok();
    admin
        .call(
            Method::PUT,
            "/api/admin/queues/599/agents/1005",
            Some(json!({})),
        )
        .await
        .refused(404, "unknown_queue");
    // Unassigning takes a logged-in agent out of the queue.
    let dave = t.agent("1004").await;
    dave.post("/api/session", json!({"device": "1004"}))
        .await
        .ok();
    admin
        .call(Method::DELETE, "/api/admin/queues/501/agents/1004", None)
        .await
        .ok();
    let v = sys
        .view_when(&dave, "Dave out of Support", |v| {
            v["queues"].as_array().is_some_and(|q| q.len() == 1)
        })
        .await;
    assert_eq!(v["queues"][0]["queue"], "500");
    admin
        .post("/api/admin/pause-reasons", json!({"name": "Training"}))
        .await
        .ok();
    admin
        .call(
            Method::PATCH,
            "/api/admin/pause-reasons/Training",
            Some(json!({"name": "Coaching"})),
        )
        .await
        .ok();
    let reasons = admin
        .call(Method::DELETE, "/api/admin/pause-reasons/Bathroom", None)
        .await
        .ok();
    let names: Vec<_> = reasons
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Lunch", "Break", "Coaching"]);
    supervisor
        .post(
            "/api/admin/agents",
            json!({"agent": "1006", "display_name": "X", "password": "secret-1"}),
        )
        .await
        .refused(403, "forbidden");

    let eve = t.sign_in("1005", "secret-1").await;
    let opts = eve.get("/api/login-options").await.ok();
    assert_eq!(opts["assigned_queues"][0]["queue"], "500");
    eve.post("/api/session", json!({"device": "1005"}))
        .await
        .ok();
    eve.post("/api/session/pause", json!({"reason": "Coaching"}))
        .await
        .ok();
    let listed = supervisor.get("/api/supervisor/agents").await.ok();
    assert!(listed
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["agent"] == "1005"));

    admin
        .post("/api/admin/agents/1005/disable", json!({}))
        .await
        .ok();
    eve.get("/api/me").await.refused(401, "unauthenticated");
    t.anonymous()
        .post(
            "/api/login",
            json!({"agent_number": "1005", "password": "secret-1"}),
        )
        .await
        .refused(403, "account_disabled");
    let view = cc_testkit::eventually("Eve logged out", Duration::from_secs(10), || async {
        let all = supervisor.get("/api/supervisor/agents").await.ok();
        all.as_array()
            .unwrap()
            .iter()
            .find(|a| a["agent"] == "1005" && a["status"] == "logged_out" && a["enabled"] == false)
            .cloned()
    })
    .await;
    assert_eq!(view["enabled"], false);
    let last = t.stream_events("agent-1005").await.pop().unwrap();
    assert_eq!(
        (last.0.as_str(), last.1["reason"].as_str()),
        ("AgentLoggedOut", Some("account_disabled"))
    );

    // A supervisor forces a logout.
    let bob = t.agent("1002").await;
    bob.post("/api/session", json!({})).await.ok();
    supervisor
        .post("/api/supervisor/agents/1002/logout", json!({}))
        .await
        .ok();
    let last = t.stream_events("agent-1002").await.pop().unwrap();
    assert_eq!(last.1["reason"], "supervisor");
}

#[tokio::test]
async fn two_copies_of_a_command_at_the_same_instant_have_one_effect_and_one_answer() {
    let sys = System::start().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    let alice = t.agent("1001").await;
    alice.post("/api/session", json!({})).await.ok();
    // Two copies at the same instant: the key is claimed before the command runs, so the second
    // waits for the first and gets its answer (not already_not_paused / a second event).
    let before = sys.event_count().await;
    for round in 0..5 {
        let key = format!("race-{round}");
        let (a, b) = tokio::join!(
            alice.post_once("/api/session/pause", json!({"reason": "Break"}), &key),
            alice.post_once("/api/session/pause", json!({"reason": "Break"}), &key)
        );
        assert_eq!((a.status, &a.body), (b.status, &b.body), "round {round}");
        assert_eq!(a.status, 200, "{}", a.body);
        alice.post("/api/session/unpause", json!({})).await.ok();
    }
    assert_eq!(
        sys.event_count().await - before,
        10,
        "five pauses and five unpauses, no second effect"
    );
    // A key reused for another action is refused, naming the key.
    let r = alice
        .post_once("/api/session/unpause", json!({}), "race-0")
        .await;
    assert_eq!(
        (r.status.as_u16(), r.body["field"].as_str()),
        (409, Some("Idempotency-Key")),
        "{}",
        r.body
    );
}
