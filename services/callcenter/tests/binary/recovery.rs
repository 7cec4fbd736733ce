//! Restarts in the middle of calls: every service but the PBX is killed (SIGKILL) and started
//! again. Nothing stays stuck: state is rebuilt from events, timers are re-armed from it, and
//! what happened on the PBX meanwhile is reconciled, counted once.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::system::System;

async fn quick(sys: &System) {
    let admin = sys.sign_in("admin", "demo-admin").await;
    let settings = json!({"strategy": "longest_idle", "ring_timeout_s": 5, "wrap_up_s": 2, "reject_delay_s": 1});
    admin.call(Method::PUT, "/api/admin/queues/500/settings", Some(settings)).await.ok();
}

#[tokio::test]
async fn a_restart_while_ringing_still_times_the_offer_out_once() {
    let mut sys = System::start_split().await;
    quick(&sys).await;
    let bob = sys.agent("1002").await;
    bob.post("/api/session", json!({})).await.ok();
    sys.view_when(&bob, "Idle", |v| v["status"] == "idle").await;
    sys.place_caller("500", "5551111", "Ringing").await;
    sys.view_when(&bob, "Ringing", |v| v["status"] == "ringing").await;

    sys.restart_services().await;
    let v = cc_testkit::eventually("the offer timed out after the restart", Duration::from_secs(30), || async {
        let r = bob.get("/api/me").await;
        (r.status.is_success() && r.body["counts"]["missed"] == 1).then_some(r.body)
    })
    .await;
    assert_eq!(v["counts"]["missed"], 1);
    let timed_out: i64 = sqlx::query_scalar("select count(*) from es_events where event_type = 'OfferTimedOut'").fetch_one(&sys.db.pool).await.unwrap();
    assert!(timed_out >= 1);
    // The call is offered again (ringing), then answered: it goes on normally.
    sys.view_when(&bob, "Ringing again", |v| v["status"] == "ringing").await;
    sys.phone("1002", "answer").await;
    sys.view_when(&bob, "Connected", |v| v["status"] == "connected").await;
}

#[tokio::test]
async fn a_restart_while_connected_keeps_the_call_and_a_hangup_meanwhile_counts_once() {
    let mut sys = System::start_split().await;
    quick(&sys).await;
    let bob = sys.agent("1002").await;
    bob.post("/api/session", json!({})).await.ok();
    sys.view_when(&bob, "Idle", |v| v["status"] == "idle").await;
    let caller = sys.place_caller("500", "5552222", "Connected").await;
    sys.view_when(&bob, "Ringing", |v| v["status"] == "ringing").await;
    sys.phone("1002", "answer").await;
    sys.view_when(&bob, "Connected", |v| v["status"] == "connected").await;

    // Killed with the call up; the caller hangs up while the services are down.
    sys._app.kill();
    let r = sys.http.post(format!("{}/tenants/demo/channels/{caller}/hangup", sys.pbx)).send().await.unwrap();
    assert_eq!(r.status(), 204);
    sys.restart_services().await;

    let v = cc_testkit::eventually("the call ended in the read model", Duration::from_secs(30), || async {
        let r = bob.get("/api/me").await;
        (r.status.is_success() && r.body["counts"]["completed"] == 1 && r.body["status"] == "idle").then_some(r.body)
    })
    .await;
    assert!(v["current_call"].is_null());
    let ended: i64 = sqlx::query_scalar("select count(*) from es_events where event_type = 'CallEnded'").fetch_one(&sys.db.pool).await.unwrap();
    assert_eq!(ended, 1, "counted once");
}

#[tokio::test]
async fn a_restart_during_wrap_up_still_ends_it() {
    let mut sys = System::start_split().await;
    quick(&sys).await;
    let bob = sys.agent("1002").await;
    bob.post("/api/session", json!({})).await.ok();
    sys.view_when(&bob, "Idle", |v| v["status"] == "idle").await;
    sys.place_caller("500", "5553333", "Wrap").await;
    sys.view_when(&bob, "Ringing", |v| v["status"] == "ringing").await;
    sys.phone("1002", "answer").await;
    sys.view_when(&bob, "Connected", |v| v["status"] == "connected").await;
    sys.phone("1002", "hangup").await;
    sys.view_when(&bob, "Wrap-up", |v| v["status"] == "wrap_up").await;
    sys.restart_services().await;
    let v = cc_testkit::eventually("Idle after the wrap-up", Duration::from_secs(30), || async {
        let r = bob.get("/api/me").await;
        (r.status.is_success() && r.body["status"] == "idle").then_some(r.body)
    })
    .await;
    assert_eq!(v["counts"]["completed"], 1);
}
