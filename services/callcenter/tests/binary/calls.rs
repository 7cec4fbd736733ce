//! Queue calls end to end: a caller enters a queue on the simulated PBX, the ACD offers the call,
//! the agent's simulated phone answers, call-control bridges it, the agent holds and hangs up
//! from the portal, wrap-up, Idle; rejected and missed offers move their counts.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::system::{Client, System};
use crate::tenant::{Tenant, TenantSpec};

/// A call center with queue 500 on short timers and Bob (1002, queue 500 only) logged in and
/// Idle.
async fn bob_on_a_quick_queue() -> (System, Tenant, Client) {
    let sys = System::start().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    let admin = t.admin().await;
    let settings = json!({"strategy": "longest_idle", "ring_timeout_s": 4, "wrap_up_s": 1, "reject_delay_s": 1});
    admin
        .call(
            Method::PUT,
            "/api/admin/queues/500/settings",
            Some(settings),
        )
        .await
        .ok();
    let bob = t.idle_agent("1002").await;
    (sys, t, bob)
}

#[tokio::test]
async fn a_call_rings_is_answered_held_hung_up_and_counted_once() {
    let (sys, t, bob) = bob_on_a_quick_queue().await;

    t.place_caller("500", "5551234", "Jane Caller").await;
    let v = sys
        .view_when(&bob, "Ringing", |v| v["status"] == "ringing")
        .await;
    let call = v["current_call"].clone();
    assert_eq!(
        (call["caller_number"].as_str(), call["caller_name"].as_str()),
        (Some("5551234"), Some("Jane Caller"))
    );
    assert_eq!(
        (call["queue"].as_str(), call["queue_name"].as_str()),
        (Some("500"), Some("Sales"))
    );
    let call_id = call["call"].as_str().unwrap().to_string();

    t.phone("1002", "answer").await;
    let v = sys
        .view_when(&bob, "Connected", |v| v["status"] == "connected")
        .await;
    assert!(v["current_call"]["answered_at"].is_string());
    assert!(v["current_call"]["wait_ms"].as_i64().unwrap() >= 0);

    bob.post("/api/call/hold", json!({"held": true})).await.ok();
    sys.view_when(&bob, "On hold", |v| v["status"] == "on_hold")
        .await;
    bob.post("/api/call/hold", json!({"held": true}))
        .await
        .refused(409, "already_on_hold");
    bob.post("/api/call/hold", json!({"held": false}))
        .await
        .ok();
    sys.view_when(&bob, "Connected again", |v| v["status"] == "connected")
        .await;

    // Pausing during a call takes effect when the call ends.
    bob.post("/api/session/pause", json!({"reason": "Break"}))
        .await
        .ok();
    let v = sys
        .view_when(&bob, "still Connected", |v| v["pause_reason"] == "Break")
        .await;
    assert_eq!(v["status"], "connected");

    let hung = bob.post("/api/call/hangup", json!({})).await;
    assert_eq!(hung.status, 204, "{}", hung.body);
    let v = sys
        .view_when(&bob, "Wrap-up", |v| v["status"] == "wrap_up")
        .await;
    assert_eq!(
        v["counts"],
        json!({"completed": 1, "missed": 0, "rejected": 0})
    );
    let v = sys
        .view_when(&bob, "Paused after wrap-up", |v| v["status"] == "paused")
        .await;
    assert!(v["current_call"].is_null());
    bob.post("/api/call/hangup", json!({}))
        .await
        .refused(409, "no_call");

    let types = t.call_events(&call_id).await;
    assert_eq!(
        types,
        [
            "CallEnteredQueue",
            "CallOffered",
            "CallAnswered",
            "CallConnected",
            "CallHeld",
            "CallResumed",
            "CallEnded",
            "WrapUpStarted",
            "WrapUpEnded"
        ]
    );
    let (_, ended) = t
        .stream_events(&format!("call-{call_id}"))
        .await
        .into_iter()
        .find(|(t, _)| t == "CallEnded")
        .unwrap();
    assert_eq!(ended["by"], "agent");
}

#[tokio::test]
async fn rejected_and_missed_offers_move_their_counts_and_the_call_goes_on_until_abandoned() {
    let (sys, t, bob) = bob_on_a_quick_queue().await;

    let caller = t.place_caller("500", "5550000", "Impatient").await;
    sys.view_when(&bob, "Ringing", |v| v["status"] == "ringing")
        .await;
    t.phone("1002", "reject").await;
    sys.view_when(&bob, "Rejected = 1", |v| v["counts"]["rejected"] == 1)
        .await;
    // After the reject delay the same call is offered again; this time it rings out.
    sys.view_when(&bob, "Ringing again", |v| v["status"] == "ringing")
        .await;
    let v = cc_testkit::eventually("Missed = 1", Duration::from_secs(10), || async {
        let r = bob.get("/api/me").await;
        (r.body["counts"]["missed"] == 1).then_some(r.body)
    })
    .await;
    assert_eq!(v["counts"]["rejected"], 1);

    // The caller gives up while waiting (or ringing): abandoned, and no count for the agent.
    let r = sys
        .http
        .post(t.pbx_url(&format!("/channels/{caller}/hangup")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let abandoned: i64 =
        cc_testkit::eventually("the call abandoned", Duration::from_secs(10), || async {
            let n: i64 = sqlx::query_scalar(
                "select count(*) from es_events where event_type = 'CallAbandoned'",
            )
            .fetch_one(&sys.db.pool)
            .await
            .unwrap();
            (n == 1).then_some(n)
        })
        .await;
    assert_eq!(abandoned, 1);
    let v = sys
        .view_when(&bob, "Idle, no call", |v| {
            v["current_call"].is_null() && v["status"] == "idle"
        })
        .await;
    // The call may have rung out once more before the caller gave up (a loaded machine):
    // each count moves exactly once per recorded fact.
    let timed_out: i64 =
        sqlx::query_scalar("select count(*) from es_events where event_type = 'OfferTimedOut'")
            .fetch_one(&sys.db.pool)
            .await
            .unwrap();
    assert!(timed_out >= 1);
    assert_eq!(
        v["counts"],
        json!({"completed": 0, "missed": timed_out, "rejected": 1})
    );
}

#[tokio::test]
async fn ring_all_rings_every_free_agent_and_the_first_answer_wins() {
    let sys = System::start().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    let admin = t.admin().await;
    let settings = json!({"strategy": "ring_all", "ring_timeout_s": 20, "wrap_up_s": 0});
    admin
        .call(
            Method::PUT,
            "/api/admin/queues/500/settings",
            Some(settings),
        )
        .await
        .ok();
    let bob = t.agent("1002").await;
    let dave = t.agent("1004").await;
    bob.post("/api/session", json!({})).await.ok();
    dave.post("/api/session", json!({})).await.ok();
    sys.view_when(&dave, "Idle", |v| v["status"] == "idle")
        .await;
    sys.view_when(&bob, "Idle", |v| v["status"] == "idle").await;

    t.place_caller("500", "5552222", "Both").await;
    sys.view_when(&bob, "Bob ringing", |v| v["status"] == "ringing")
        .await;
    sys.view_when(&dave, "Dave ringing", |v| v["status"] == "ringing")
        .await;
    t.phone("1004", "answer").await;
    sys.view_when(&dave, "Dave connected", |v| v["status"] == "connected")
        .await;
    let v = sys
        .view_when(&bob, "Bob back to Idle", |v| v["status"] == "idle")
        .await;
    assert_eq!(
        v["counts"],
        json!({"completed": 0, "missed": 0, "rejected": 0}),
        "a withdrawn offer counts nothing"
    );
    // Dave's phone hangs up: the call ends, Completed = 1, straight to Idle (no wrap-up time).
    t.phone("1004", "hangup").await;
    let v = sys
        .view_when(&dave, "Dave idle", |v| {
            v["status"] == "idle" && v["counts"]["completed"] == 1
        })
        .await;
    assert!(v["current_call"].is_null());
}

#[tokio::test]
async fn logout_is_refused_while_connected_and_missed_offers_can_auto_pause() {
    let sys = System::start().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    let admin = t.admin().await;
    let settings = json!({"strategy": "longest_idle", "ring_timeout_s": 3, "wrap_up_s": 0, "auto_pause_after": 1});
    admin
        .call(
            Method::PUT,
            "/api/admin/queues/500/settings",
            Some(settings),
        )
        .await
        .ok();
    let r = admin
        .call(
            Method::PUT,
            "/api/admin/queues/500/settings",
            Some(json!({"ring_timeout_s": 0})),
        )
        .await;
    assert_eq!(
        r.refused(400, "invalid_field")["field"],
        "settings.ring_timeout_s"
    );
    let r = admin
        .call(
            Method::PUT,
            "/api/admin/queues/500/settings",
            Some(json!({"strategy": "fastest"})),
        )
        .await;
    assert_eq!(r.refused(400, "invalid_field")["field"], "strategy");
    let bob = t.idle_agent("1002").await;

    t.place_caller("500", "5553333", "No answer").await;
    let v = sys
        .view_when(&bob, "auto-paused", |v| v["status"] == "paused")
        .await;
    assert_eq!(
        (v["counts"]["missed"].as_i64(), v["pause_reason"].as_str()),
        (Some(1), Some("Missed 1 calls"))
    );
    bob.post("/api/session/unpause", json!({})).await.ok();
    sys.view_when(&bob, "Ringing again", |v| v["status"] == "ringing")
        .await;
    t.phone("1002", "answer").await;
    sys.view_when(&bob, "Connected", |v| v["status"] == "connected")
        .await;
    bob.call(Method::DELETE, "/api/session", None)
        .await
        .refused(409, "on_call");
    bob.post("/api/call/hangup", json!({})).await;
    sys.view_when(&bob, "Idle", |v| v["status"] == "idle").await;
    bob.call(Method::DELETE, "/api/session", None).await.ok();
}

#[tokio::test]
async fn callers_leave_after_the_max_wait_or_at_once_when_nobody_is_logged_in() {
    let sys = System::start().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    let admin = t.admin().await;
    admin
        .call(
            Method::PUT,
            "/api/admin/queues/500/settings",
            Some(json!({"max_wait_s": 1})),
        )
        .await
        .ok();
    admin
        .call(
            Method::PUT,
            "/api/admin/queues/501/settings",
            Some(json!({"leave_when_no_agents": true})),
        )
        .await
        .ok();
    t.place_caller("500", "5554444", "Waits").await;
    t.place_caller("501", "5555555", "Nobody").await;
    let left: Vec<(String, Value)> = cc_testkit::eventually("two callers left", Duration::from_secs(10), || async {
        let rows: Vec<(String, Value)> = sqlx::query_as("select event_type, data from es_events where event_type = 'CallLeftQueue' order by data->>'queue'")
            .fetch_all(&sys.db.pool)
            .await
            .unwrap();
        (rows.len() == 2).then_some(rows)
    })
    .await;
    assert_eq!(
        (left[0].1["queue"].as_str(), left[0].1["reason"].as_str()),
        (Some("500"), Some("max_wait"))
    );
    assert_eq!(
        (left[1].1["queue"].as_str(), left[1].1["reason"].as_str()),
        (Some("501"), Some("no_agents"))
    );
    // The simulated callers were hung up (right after the events were recorded).
    cc_testkit::eventually("the callers hung up", Duration::from_secs(10), || async {
        let channels: Vec<Value> = t.channels().await;
        channels.is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_traffic_generator_drives_calls_that_all_finish() {
    let sys = System::start().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    let admin = t.admin().await;
    for q in ["500", "501"] {
        admin
            .call(
                Method::PUT,
                &format!("/api/admin/queues/{q}/settings"),
                Some(json!({"wrap_up_s": 0, "ring_timeout_s": 5})),
            )
            .await
            .ok();
    }
    for n in ["1001", "1002", "1003", "1004"] {
        t.agent(n).await.post("/api/session", json!({})).await.ok();
    }
    let traffic = json!({"queues": ["500", "501"], "calls_per_second": 5, "duration_s": 2, "patience_ms": 0,
        "phones": {"mode": "agent", "after_ms": 50, "probability": 1.0, "talk_ms": 200}});
    let (status, body) = t.pbx_post("/traffic", traffic).await;
    assert_eq!(status, 202, "{body}");
    let (entered, ended) = cc_testkit::eventually(
        "every generated call to finish",
        Duration::from_secs(30),
        || async {
            let count = |t: &'static str| {
                let pool = sys.db.pool.clone();
                async move {
                    sqlx::query_scalar::<_, i64>(
                        "select count(*) from es_events where event_type = $1",
                    )
                    .bind(t)
                    .fetch_one(&pool)
                    .await
                    .unwrap()
                }
            };
            let (entered, ended, abandoned) = (
                count("CallEnteredQueue").await,
                count("CallEnded").await,
                count("CallAbandoned").await,
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
            (entered > 0
                && entered == ended + abandoned
                && count("CallEnteredQueue").await == entered)
                .then_some((entered, ended))
        },
    )
    .await;
    assert!(ended > 0 && ended <= entered, "{ended} of {entered}");
    let (status, body) = t
        .pbx_post(
            "/traffic",
            json!({"queues": [], "calls_per_second": 1, "duration_s": 1}),
        )
        .await;
    assert_eq!((status, body["field"].as_str()), (400, Some("queues")));
}

/// Defect 4: Completed, Missed and Rejected are the counts of this login, as the Agent Portal
/// shows them beside the Login Time: a new login starts them at 0, in the agent's view and in
/// the supervisor's alike.
#[tokio::test]
async fn completed_missed_and_rejected_count_the_calls_of_this_login() {
    let (sys, t, bob) = bob_on_a_quick_queue().await;
    // One completed, one rejected, one missed.
    t.place_caller("500", "5550001", "First").await;
    sys.view_when(&bob, "ringing", |v| v["status"] == "ringing")
        .await;
    t.phone("1002", "answer").await;
    sys.view_when(&bob, "connected", |v| v["status"] == "connected")
        .await;
    bob.post("/api/call/hangup", json!({})).await.ok();
    sys.view_when(&bob, "Idle after the wrap-up", |v| v["status"] == "idle")
        .await;
    t.place_caller("500", "5550002", "Second").await;
    sys.view_when(&bob, "ringing", |v| v["status"] == "ringing")
        .await;
    t.phone("1002", "reject").await;
    // The caller is offered again after the reject delay: let it ring out (4 s).
    let v = sys
        .view_when(&bob, "rejected and missed", |v| {
            v["counts"]["rejected"] == 1 && v["counts"]["missed"] == 1
        })
        .await;
    assert_eq!(
        v["counts"],
        json!({"completed": 1, "missed": 1, "rejected": 1})
    );
    let first_login = v["login_time"].clone();
    // The caller gives up meanwhile: nothing left ringing for the next login.
    bob.post("/api/session/pause", json!({"reason": "Lunch"}))
        .await
        .ok();
    let channels: Vec<Value> = t.channels().await;
    for c in channels {
        let ch = c["channel"].as_str().unwrap();
        t.pbx_post(&format!("/channels/{ch}/hangup"), json!({}))
            .await;
    }
    sys.view_when(&bob, "paused, no call", |v| {
        v["status"] == "paused" && v["current_call"].is_null()
    })
    .await;

    bob.call(Method::DELETE, "/api/session", None).await.ok();
    let v = sys
        .view_when(&bob, "logged out", |v| v["status"] == "logged_out")
        .await;
    assert_eq!(
        v["counts"],
        json!({"completed": 1, "missed": 1, "rejected": 1}),
        "the last login's counts until the next one"
    );
    bob.post("/api/session", json!({})).await.ok();
    let v = sys
        .view_when(&bob, "logged in again", |v| v["status"] == "idle")
        .await;
    assert_ne!(v["login_time"], first_login);
    assert_eq!(
        v["counts"],
        json!({"completed": 0, "missed": 0, "rejected": 0}),
        "a new login starts the counts at 0"
    );
    let supervisor = t.supervisor().await;
    let agents = supervisor.get("/api/supervisor/agents").await.ok();
    let b = agents
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent"] == "1002")
        .unwrap()
        .clone();
    assert_eq!(
        b["counts"],
        json!({"completed": 0, "missed": 0, "rejected": 0})
    );
}
