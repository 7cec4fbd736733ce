//! Transfers end to end through the portal API and the simulator's phones: blind, attended
//! and live, to an agent, an extension, a queue and an outside number, with every failure
//! path the agents are told about, the counts and the recorded events.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::system::{Client, System};
use crate::tenant::{Tenant, TenantSpec};

/// Queue 500 on short timers; Bob (1002, queue 500) connected with a caller; Carol (1003,
/// queue 501) logged in and Idle. Returns the call id and the caller's channel.
pub(crate) async fn bob_connected(t: &Tenant) -> (Client, Client, String, String) {
    let admin = t.admin().await;
    for q in ["500", "501"] {
        let settings = json!({"strategy": "longest_idle", "ring_timeout_s": 15, "wrap_up_s": 1, "reject_delay_s": 1});
        admin
            .call(
                Method::PUT,
                &format!("/api/admin/queues/{q}/settings"),
                Some(settings),
            )
            .await
            .ok();
    }
    let bob = t.agent("1002").await;
    bob.post("/api/session", json!({})).await.ok();
    let carol = t.agent("1003").await;
    carol.post("/api/session", json!({})).await.ok();
    t.view_when(&bob, "Bob Idle", |v| v["status"] == "idle")
        .await;
    t.view_when(&carol, "Carol Idle", |v| v["status"] == "idle")
        .await;
    let caller = t.place_caller("500", "5551234", "Jane Caller").await;
    let v = t
        .view_when(&bob, "Bob ringing", |v| v["status"] == "ringing")
        .await;
    let call = v["current_call"]["call"].as_str().unwrap().to_string();
    t.phone("1002", "answer").await;
    t.view_when(&bob, "Bob connected", |v| v["status"] == "connected")
        .await;
    // Bridged too (the view says Connected from the answer; the bridge is recorded after it).
    cc_testkit::eventually("the call bridged", Duration::from_secs(30), || async {
        t.stream_events(&format!("call-{call}"))
            .await
            .iter()
            .any(|(t, _)| t == "CallConnected")
            .then_some(())
    })
    .await;
    (bob, carol, call, caller)
}

async fn transfer(agent: &Client, method: &str, target: Value) -> crate::system::Reply {
    agent
        .post(
            "/api/call/transfer",
            json!({"method": method, "target": target}),
        )
        .await
}

impl Tenant {
    /// The call's events once one of type `last` is recorded.
    pub(crate) async fn call_events_until(&self, call: &str, last: &str) -> Vec<(String, Value)> {
        cc_testkit::eventually(last, Duration::from_secs(15), || async {
            let e = self.stream_events(&format!("call-{call}")).await;
            e.iter().any(|(t, _)| t == last).then_some(e)
        })
        .await
    }
}

fn types(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(t, _)| t.as_str()).collect()
}

/// The events of a call from its first transfer on.
fn from_transfer(events: &[(String, Value)]) -> Vec<&str> {
    let i = events
        .iter()
        .position(|(t, _)| t == "TransferStarted")
        .expect("a transfer");
    types(&events[i..])
}

#[tokio::test]
async fn blind_transfer_to_an_agent_credits_each_agent_with_their_own_part() {
    let sys = System::start().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    let (bob, carol, call, caller) = bob_connected(&t).await;

    let r = transfer(&bob, "blind", json!({"agent": "1003"})).await;
    assert_eq!(r.status, 204, "{}", r.body);
    // Bob is off the call at once: Completed 1, wrap-up, then Idle for the next call.
    let v = sys
        .view_when(&bob, "Bob in wrap-up", |v| v["status"] == "wrap_up")
        .await;
    assert_eq!(v["counts"]["completed"], 1);
    assert_eq!(v["current_call"]["ended_by"], "transferred");
    // Carol's phone rings with the transferred call and its details.
    let v = sys
        .view_when(&carol, "Carol ringing", |v| v["status"] == "ringing")
        .await;
    let c = &v["current_call"];
    assert_eq!(
        (
            c["caller_number"].as_str(),
            c["transferred_from"].as_str(),
            c["queue"].as_str()
        ),
        (Some("5551234"), Some("1002"), Some("500"))
    );
    sys.view_when(&bob, "Bob Idle", |v| v["status"] == "idle")
        .await;

    t.phone("1003", "answer").await;
    let v = sys
        .view_when(&carol, "Carol connected", |v| v["status"] == "connected")
        .await;
    assert!(v["current_call"]["answered_at"].is_string());
    // Carol talks to the caller: the simulator bridged them.
    let chans = t.channels().await;
    let bridge_of = |pred: &dyn Fn(&Value) -> bool| {
        chans
            .iter()
            .find(|c| pred(c))
            .and_then(|c| c["bridge"].as_str().map(String::from))
    };
    assert_eq!(
        bridge_of(&|c| c["channel"] == caller.as_str()),
        bridge_of(&|c| c["device"] == "1003")
    );
    assert!(
        !chans.iter().any(|c| c["device"] == "1002"),
        "Bob's leg is gone"
    );

    carol.post("/api/call/hangup", json!({})).await.ok();
    let v = sys
        .view_when(&carol, "Carol in wrap-up", |v| v["status"] == "wrap_up")
        .await;
    assert_eq!(
        v["counts"],
        json!({"completed": 1, "missed": 0, "rejected": 0})
    );
    let v = bob.get("/api/me").await.body;
    assert_eq!(
        v["counts"],
        json!({"completed": 1, "missed": 0, "rejected": 0}),
        "Bob counted once"
    );

    let events = cc_testkit::eventually("both wrap-ups", Duration::from_secs(15), || async {
        let e = t.stream_events(&format!("call-{call}")).await;
        (e.iter().filter(|(t, _)| t == "WrapUpEnded").count() == 2).then_some(e)
    })
    .await;
    let path: Vec<&str> = from_transfer(&events)
        .into_iter()
        .filter(|t| !t.starts_with("WrapUp"))
        .collect();
    assert_eq!(
        path,
        [
            "TransferStarted",
            "CallEnded",
            "TransferAnswered",
            "TransferCompleted",
            "CallConnected",
            "CallEnded"
        ]
    );
    let ended: Vec<&Value> = events
        .iter()
        .filter(|(t, _)| t == "CallEnded")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(
        (ended[0]["agent"].as_str(), ended[0]["by"].as_str()),
        (Some("1002"), Some("transferred"))
    );
    assert_eq!(
        (ended[1]["agent"].as_str(), ended[1]["by"].as_str()),
        (Some("1003"), Some("agent"))
    );
    let started = &events
        .iter()
        .find(|(t, _)| t == "TransferStarted")
        .unwrap()
        .1;
    assert_eq!(
        (started["method"].as_str(), started["target_agent"].as_str()),
        (Some("blind"), Some("1003"))
    );
}

#[tokio::test]
async fn bad_targets_are_refused_and_the_call_is_not_touched() {
    let sys = System::start().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    let (bob, carol, call, _) = bob_connected(&t).await;
    let before = t.stream_events(&format!("call-{call}")).await.len();

    transfer(&bob, "blind", json!({"extension": "1002"}))
        .await
        .refused(422, "own_device");
    transfer(&bob, "blind", json!({"agent": "1002"}))
        .await
        .refused(422, "own_device");
    transfer(&bob, "attended", json!({"extension": "1007"}))
        .await
        .refused(422, "device_offline");
    transfer(&bob, "blind", json!({"extension": "1099"}))
        .await
        .refused(404, "unknown_extension");
    transfer(&bob, "blind", json!({"agent": "1004"}))
        .await
        .refused(422, "agent_not_logged_in");
    transfer(&bob, "blind", json!({"queue": "599"}))
        .await
        .refused(404, "unknown_queue");
    let r = transfer(&bob, "live", json!({"queue": "501"})).await;
    assert_eq!(
        (r.refused(400, "invalid_field")["field"].as_str()),
        Some("method")
    );
    let r = transfer(&bob, "blind", json!({"number": "call me"})).await;
    assert_eq!(
        (r.refused(400, "invalid_field")["field"].as_str()),
        Some("target")
    );
    let r = transfer(&bob, "blind", json!({"number": "1", "queue": "500"})).await;
    assert_eq!(
        (r.refused(400, "invalid_field")["field"].as_str()),
        Some("target")
    );
    let r = bob
        .post(
            "/api/call/transfer",
            json!({"method": "sideways", "target": {"queue": "501"}}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    transfer(&carol, "blind", json!({"extension": "1005"}))
        .await
        .refused(409, "no_call");
    bob.post("/api/call/transfer/complete", json!({}))
        .await
        .refused(409, "no_transfer");
    bob.post("/api/call/transfer/cancel", json!({}))
        .await
        .refused(409, "no_transfer");

    assert_eq!(
        t.stream_events(&format!("call-{call}")).await.len(),
        before,
        "nothing recorded"
    );
    let v = bob.get("/api/me").await.body;
    assert_eq!(v["status"], "connected");
    assert!(v["current_call"]["transfer"].is_null());

    // The targets the picker offers.
    let t = bob.get("/api/transfer-targets").await.ok();
    let ext = t["extensions"].as_array().unwrap();
    assert!(ext
        .iter()
        .any(|e| e["device"] == "1003" && e["online"] == true && e["agent"] == "1003"));
    assert!(ext
        .iter()
        .any(|e| e["device"] == "1007" && e["online"] == false));
    assert!(
        !t["agents"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["agent"] == "1002"),
        "not oneself"
    );
    assert_eq!(
        t["queues"],
        json!([{"queue": "500", "name": "Sales"}, {"queue": "501", "name": "Support"}])
    );
}

#[tokio::test]
async fn a_blind_transfer_nobody_takes_puts_the_caller_back_at_the_head_of_the_queue() {
    let sys = System::start().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    let (bob, _carol, call, _) = bob_connected(&t).await;
    // Another caller waits in 500 meanwhile (nobody free to take them). Bob's wrap-up lasts
    // until he ends it, so the transferred call is back in the queue when he is free.
    t.place_caller("500", "5550002", "Second Caller").await;
    let admin = t.admin().await;
    let settings = json!({"strategy": "longest_idle", "ring_timeout_s": 15, "wrap_up_s": 300});
    admin
        .call(
            Method::PUT,
            "/api/admin/queues/500/settings",
            Some(settings),
        )
        .await
        .ok();

    transfer(&bob, "blind", json!({"extension": "1005"}))
        .await
        .ok();
    cc_testkit::eventually("1005 rings", Duration::from_secs(10), || async {
        t.channels()
            .await
            .iter()
            .any(|c| c["device"] == "1005")
            .then_some(())
    })
    .await;
    t.phone("1005", "reject").await;
    let events = t.call_events_until(&call, "TransferFailed").await;
    let failed = &events
        .iter()
        .find(|(t, _)| t == "TransferFailed")
        .unwrap()
        .1;
    assert_eq!(failed["reason"], "rejected");
    let (_, again) = events
        .iter()
        .rev()
        .find(|(t, _)| t == "CallEnteredQueue")
        .unwrap();
    assert_eq!(
        (again["queue"].as_str(), again["priority"].as_i64()),
        (Some("500"), Some(100))
    );

    // After Bob's wrap-up the transferred caller is served before the one who waited.
    sys.view_when(&bob, "Bob in wrap-up", |v| {
        v["status"] == "wrap_up" && v["current_call"]["wrap_up_until"].is_string()
    })
    .await;
    bob.post("/api/call/wrap-up/end", json!({})).await.ok();
    let v = sys
        .view_when(&bob, "Bob rings with the same call", |v| {
            v["status"] == "ringing"
        })
        .await;
    assert_eq!(v["current_call"]["call"].as_str(), Some(call.as_str()));
    assert_eq!(v["current_call"]["caller_number"], "5551234");

    // Again, to a phone that rings and rings: after the ring timeout, back to the queue.
    t.phone("1002", "answer").await;
    sys.view_when(&bob, "Bob connected", |v| v["status"] == "connected")
        .await;
    let (s, b) = t.pbx_put_mode("1005", json!({"mode": "ignore"})).await;
    assert_eq!(s, 204, "{b}");
    let r = bob
        .post(
            "/api/call/transfer",
            json!({"method": "blind", "target": {"extension": "1005"}, "ring_timeout_s": 0}),
        )
        .await;
    assert_eq!(r.refused(400, "invalid_field")["field"], "ring_timeout_s");
    bob.post(
        "/api/call/transfer",
        json!({"method": "blind", "target": {"extension": "1005"}, "ring_timeout_s": 2}),
    )
    .await
    .ok();
    let events = cc_testkit::eventually(
        "a second TransferFailed",
        Duration::from_secs(15),
        || async {
            let e = t.stream_events(&format!("call-{call}")).await;
            (e.iter().filter(|(t, _)| t == "TransferFailed").count() == 2).then_some(e)
        },
    )
    .await;
    let (_, failed) = events
        .iter()
        .rev()
        .find(|(t, _)| t == "TransferFailed")
        .unwrap();
    assert_eq!(failed["reason"], "no_answer");
    sys.view_when(&bob, "Bob in wrap-up", |v| {
        v["status"] == "wrap_up" && v["current_call"]["wrap_up_until"].is_string()
    })
    .await;
    bob.post("/api/call/wrap-up/end", json!({})).await.ok();
    let v = sys
        .view_when(&bob, "Bob rings with the same call again", |v| {
            v["status"] == "ringing"
        })
        .await;
    assert_eq!(v["current_call"]["call"].as_str(), Some(call.as_str()));
    assert!(
        !t.channels().await.iter().any(|c| c["device"] == "1005"),
        "1005 stopped ringing"
    );
}

#[tokio::test]
async fn attended_transfer_consults_toggles_and_completes() {
    let sys = System::start().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    let (bob, carol, call, caller) = bob_connected(&t).await;

    transfer(&bob, "attended", json!({"extension": "1003"}))
        .await
        .ok();
    let v = sys
        .view_when(&bob, "customer on hold, target ringing", |v| {
            v["current_call"]["transfer"]["state"] == "ringing"
        })
        .await;
    assert_eq!(v["status"], "on_hold");
    assert_eq!(
        v["current_call"]["transfer"]["target_label"],
        "Extension 1003"
    );
    assert_eq!(v["current_call"]["transfer"]["customer_held"], true);
    assert_eq!(
        v["current_call"]["options"],
        json!(["complete", "cancel", "resume"])
    );
    sys.view_when(&carol, "Carol ringing", |v| {
        v["status"] == "ringing" && v["current_call"]["transferred_from"] == "1002"
    })
    .await;
    t.phone("1003", "answer").await;
    sys.view_when(&bob, "consulting", |v| {
        v["current_call"]["transfer"]["state"] == "answered"
    })
    .await;
    sys.view_when(&carol, "Carol connected (consultation)", |v| {
        v["status"] == "connected"
    })
    .await;
    let chans = t.channels().await;
    let held =
        |pred: &dyn Fn(&Value) -> bool| chans.iter().find(|c| pred(c)).map(|c| c["held"] == true);
    assert_eq!(
        held(&|c| c["channel"] == caller.as_str()),
        Some(true),
        "the customer waits on hold"
    );

    // Back to the customer (the target waits), then to the target again.
    bob.post("/api/call/hold", json!({"held": false}))
        .await
        .ok();
    let v = sys
        .view_when(&bob, "talking to the customer", |v| {
            v["status"] == "connected"
        })
        .await;
    assert_eq!(v["current_call"]["transfer"]["customer_held"], false);
    assert_eq!(
        v["current_call"]["options"],
        json!(["complete", "cancel", "hold"])
    );
    bob.post("/api/call/hold", json!({"held": true})).await.ok();
    sys.view_when(&bob, "back to the target", |v| v["status"] == "on_hold")
        .await;

    bob.post("/api/call/transfer/complete", json!({}))
        .await
        .ok();
    let v = sys
        .view_when(&bob, "Bob in wrap-up", |v| v["status"] == "wrap_up")
        .await;
    assert_eq!(v["counts"]["completed"], 1);
    assert_eq!(v["current_call"]["options"], json!(["end_wrap_up"]));
    let v = sys
        .view_when(&carol, "Carol with the customer", |v| {
            v["status"] == "connected" && v["current_call"]["transfer"].is_null()
        })
        .await;
    assert_eq!(v["current_call"]["caller_name"], "Jane Caller");
    assert_eq!(
        v["current_call"]["options"],
        json!([
            "hangup",
            "hold",
            "blind_transfer",
            "attended_transfer",
            "live_transfer"
        ])
    );
    let chans = t.channels().await;
    let c = chans
        .iter()
        .find(|c| c["channel"] == caller.as_str())
        .unwrap();
    assert_eq!(c["held"], false, "off hold once joined");
    assert_eq!(
        chans.iter().find(|c| c["device"] == "1003").unwrap()["bridge"],
        c["bridge"]
    );

    t.caller_hangs_up(&caller).await;
    let v = sys
        .view_when(&carol, "Carol in wrap-up", |v| v["status"] == "wrap_up")
        .await;
    assert_eq!(v["counts"]["completed"], 1);
    let events = cc_testkit::eventually("Carol's call ended", Duration::from_secs(10), || async {
        let e = t.stream_events(&format!("call-{call}")).await;
        (e.iter().filter(|(t, _)| t == "CallEnded").count() == 2).then_some(e)
    })
    .await;
    let path: Vec<&str> = from_transfer(&events)
        .into_iter()
        .filter(|t| !t.starts_with("WrapUp"))
        .collect();
    assert_eq!(
        path,
        [
            "TransferStarted",
            "CallHeld",
            "TransferAnswered",
            "CallResumed",
            "CallHeld",
            "CallEnded",
            "TransferCompleted",
            "CallConnected",
            "CallEnded"
        ]
    );
    assert_eq!(
        bob.get("/api/me").await.body["counts"]["completed"],
        1,
        "Bob counted once"
    );
}

#[tokio::test]
async fn attended_transfer_failures_bring_the_customer_back() {
    let sys = System::start().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    let (bob, _carol, call, caller) = bob_connected(&t).await;
    let ringing_1005 = || async {
        cc_testkit::eventually("1005 rings", Duration::from_secs(10), || async {
            t.channels()
                .await
                .iter()
                .any(|c| c["device"] == "1005" && c["answered"] == false)
                .then_some(())
        })
        .await
    };
    let back_with_bob = |what: &'static str| {
        let (bob, sys, caller, t) = (&bob, &sys, &caller, &t);
        async move {
            sys.view_when(bob, what, |v| {
                v["status"] == "connected" && v["current_call"]["transfer"].is_null()
            })
            .await;
            // The PBX acts right after the events are recorded (which the view shows).
            cc_testkit::eventually(what, Duration::from_secs(15), || async {
                let chans = t.channels().await;
                let c = chans
                    .iter()
                    .find(|c| c["channel"] == caller.as_str())?
                    .clone();
                let with_bob = chans
                    .iter()
                    .find(|x| x["device"] == "1002")
                    .is_some_and(|x| x["bridge"] == c["bridge"]);
                let target_gone = !chans.iter().any(|x| x["device"] == "1005");
                (c["held"] == false && with_bob && target_gone).then_some(())
            })
            .await;
        }
    };

    // The target rejects.
    transfer(&bob, "attended", json!({"extension": "1005"}))
        .await
        .ok();
    ringing_1005().await;
    t.phone("1005", "reject").await;
    back_with_bob("after a reject").await;

    // The agent cancels during the consultation.
    transfer(&bob, "attended", json!({"extension": "1005"}))
        .await
        .ok();
    ringing_1005().await;
    t.phone("1005", "answer").await;
    sys.view_when(&bob, "consulting", |v| {
        v["current_call"]["transfer"]["state"] == "answered"
    })
    .await;
    bob.post("/api/call/transfer/cancel", json!({})).await.ok();
    back_with_bob("after cancel").await;

    // The target hangs up during the consultation.
    transfer(&bob, "attended", json!({"extension": "1005"}))
        .await
        .ok();
    ringing_1005().await;
    t.phone("1005", "answer").await;
    sys.view_when(&bob, "consulting", |v| {
        v["current_call"]["transfer"]["state"] == "answered"
    })
    .await;
    t.phone("1005", "hangup").await;
    back_with_bob("after the target hung up").await;

    // The target does not answer: the ring timeout (30 s in the portal) would be long, so
    // the customer hanging up on hold ends it: Bob's call ends, the target stops ringing.
    transfer(&bob, "attended", json!({"extension": "1005"}))
        .await
        .ok();
    ringing_1005().await;
    t.caller_hangs_up(&caller).await;
    let v = sys
        .view_when(&bob, "Bob in wrap-up", |v| v["status"] == "wrap_up")
        .await;
    assert_eq!(v["counts"]["completed"], 1);
    cc_testkit::eventually("1005 stops ringing", Duration::from_secs(10), || async {
        (!t.channels().await.iter().any(|c| c["device"] == "1005")).then_some(())
    })
    .await;

    let events = t.call_events_until(&call, "CallEnded").await;
    let reasons: Vec<&str> = events
        .iter()
        .filter(|(t, _)| t == "TransferFailed")
        .map(|(_, d)| d["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["rejected", "target_hung_up", "caller_gone"]);
    assert_eq!(
        events
            .iter()
            .filter(|(t, _)| t == "TransferCancelled")
            .count(),
        1
    );
    let (_, ended) = events.iter().find(|(t, _)| t == "CallEnded").unwrap();
    assert_eq!(ended["by"], "caller");
}

#[tokio::test]
async fn live_transfer_conferences_holds_and_completes_to_an_outside_number() {
    let sys = System::start().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    let (bob, _carol, call, caller) = bob_connected(&t).await;

    // A target that declines: the call goes on between the customer and Bob.
    transfer(&bob, "live", json!({"extension": "1005"}))
        .await
        .ok();
    let v = sys
        .view_when(&bob, "ringing the target, still with the customer", |v| {
            v["current_call"]["transfer"]["state"] == "ringing"
        })
        .await;
    assert_eq!(v["status"], "connected");
    cc_testkit::eventually("1005 rings", Duration::from_secs(10), || async {
        t.channels()
            .await
            .iter()
            .any(|c| c["device"] == "1005")
            .then_some(())
    })
    .await;
    t.phone("1005", "reject").await;
    sys.view_when(&bob, "transfer gone", |v| {
        v["status"] == "connected" && v["current_call"]["transfer"].is_null()
    })
    .await;

    // An outside number (the simulator answers it after a moment): a 3-way call.
    transfer(&bob, "live", json!({"number": "5559999"}))
        .await
        .ok();
    sys.view_when(&bob, "conference", |v| {
        v["current_call"]["transfer"]["state"] == "conference"
    })
    .await;
    let chans = t.channels().await;
    let bridge = chans
        .iter()
        .find(|c| c["channel"] == caller.as_str())
        .unwrap()["bridge"]
        .clone();
    assert_eq!(
        chans.iter().filter(|c| c["bridge"] == bridge).count(),
        3,
        "customer, agent and target in one bridge: {chans:?}"
    );

    // A temporary hold of the customer, and off it again.
    bob.post("/api/call/hold", json!({"held": true})).await.ok();
    sys.view_when(&bob, "customer held", |v| {
        v["status"] == "on_hold" && v["current_call"]["transfer"]["customer_held"] == true
    })
    .await;
    bob.post("/api/call/hold", json!({"held": false}))
        .await
        .ok();
    sys.view_when(&bob, "customer back", |v| v["status"] == "connected")
        .await;

    bob.post("/api/call/transfer/complete", json!({}))
        .await
        .ok();
    let v = sys
        .view_when(&bob, "Bob in wrap-up", |v| v["status"] == "wrap_up")
        .await;
    assert_eq!(v["counts"]["completed"], 1);
    let chans = t.channels().await;
    assert!(!chans.iter().any(|c| c["device"] == "1002"), "Bob dropped");
    assert_eq!(
        chans.iter().filter(|c| c["bridge"] == bridge).count(),
        2,
        "the customer and the number stay"
    );

    t.caller_hangs_up(&caller).await;
    let events = t.call_events_until(&call, "TransferredCallEnded").await;
    let path: Vec<&str> = from_transfer(&events)
        .into_iter()
        .filter(|t| !t.starts_with("WrapUp"))
        .collect();
    assert_eq!(
        path,
        [
            "TransferStarted",
            "TransferFailed",
            "TransferStarted",
            "TransferAnswered",
            "ConferenceFormed",
            "CallHeld",
            "CallResumed",
            "CallEnded",
            "TransferCompleted",
            "TransferredCallEnded"
        ]
    );
    cc_testkit::eventually(
        "the number's leg hung up",
        Duration::from_secs(10),
        || async { t.channels().await.is_empty().then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn a_blind_transfer_to_a_queue_reaches_an_agent_of_that_queue() {
    let sys = System::start().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    let (bob, carol, call, _) = bob_connected(&t).await;

    transfer(&bob, "blind", json!({"queue": "501"})).await.ok();
    sys.view_when(&bob, "Bob in wrap-up", |v| v["status"] == "wrap_up")
        .await;
    let v = sys
        .view_when(&carol, "Carol offered the call", |v| {
            v["status"] == "ringing"
        })
        .await;
    assert_eq!(
        (
            v["current_call"]["call"].as_str(),
            v["current_call"]["queue"].as_str()
        ),
        (Some(call.as_str()), Some("501"))
    );
    t.phone("1003", "answer").await;
    sys.view_when(&carol, "Carol connected", |v| v["status"] == "connected")
        .await;
    carol.post("/api/call/hangup", json!({})).await.ok();
    let v = sys
        .view_when(&carol, "Carol wrap-up", |v| v["status"] == "wrap_up")
        .await;
    assert_eq!(v["counts"]["completed"], 1);
    assert_eq!(bob.get("/api/me").await.body["counts"]["completed"], 1);
}

#[tokio::test]
async fn a_restart_during_an_attended_and_a_live_transfer_leaves_nothing_stuck() {
    let mut sys = System::start_split().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    let (bob, _carol, call, caller) = bob_connected(&t).await;

    // Attended, consulting 1005 when every service but the PBX dies; Complete works after.
    transfer(&bob, "attended", json!({"extension": "1005"}))
        .await
        .ok();
    cc_testkit::eventually("1005 rings", Duration::from_secs(10), || async {
        t.channels()
            .await
            .iter()
            .any(|c| c["device"] == "1005")
            .then_some(())
    })
    .await;
    t.phone("1005", "answer").await;
    sys.view_when(&bob, "consulting", |v| {
        v["current_call"]["transfer"]["state"] == "answered"
    })
    .await;
    sys.restart_services().await;
    let r = cc_testkit::eventually("call-control back", Duration::from_secs(60), || async {
        let r = bob.post("/api/call/transfer/complete", json!({})).await;
        (r.status != 503).then_some(r)
    })
    .await;
    assert_eq!(r.status, 204, "{}", r.body);
    sys.view_when(&bob, "Bob in wrap-up", |v| v["status"] == "wrap_up")
        .await;
    // 1005 hangs up while the services are down again: the call ends once, recorded.
    sys._app.kill();
    t.phone("1005", "hangup").await;
    sys.restart_services().await;
    let events = t.call_events_until(&call, "TransferredCallEnded").await;
    assert_eq!(
        events
            .iter()
            .filter(|(t, _)| t == "TransferredCallEnded")
            .count(),
        1
    );
    cc_testkit::eventually(
        "the customer's leg hung up",
        Duration::from_secs(20),
        || async {
            (!t.channels()
                .await
                .iter()
                .any(|c| c["channel"] == caller.as_str()))
            .then_some(())
        },
    )
    .await;

    // Live: the target hangs up during an outage; after it the call goes on with Bob alone.
    let caller = t.place_caller("500", "5550003", "Second Caller").await;
    sys.view_when(&bob, "Bob ringing", |v| v["status"] == "ringing")
        .await;
    t.phone("1002", "answer").await;
    let v = sys
        .view_when(&bob, "Bob connected", |v| v["status"] == "connected")
        .await;
    let call = v["current_call"]["call"].as_str().unwrap().to_string();
    transfer(&bob, "live", json!({"extension": "1005"}))
        .await
        .ok();
    cc_testkit::eventually("1005 rings", Duration::from_secs(10), || async {
        t.channels()
            .await
            .iter()
            .any(|c| c["device"] == "1005")
            .then_some(())
    })
    .await;
    t.phone("1005", "answer").await;
    sys.view_when(&bob, "conference", |v| {
        v["current_call"]["transfer"]["state"] == "conference"
    })
    .await;
    sys._app.kill();
    t.phone("1005", "hangup").await;
    sys.restart_services().await;
    let events = t.call_events_until(&call, "TransferFailed").await;
    let (_, failed) = events.iter().find(|(t, _)| t == "TransferFailed").unwrap();
    assert_eq!(failed["reason"], "target_hung_up");
    sys.view_when(&bob, "Bob still with the customer", |v| {
        v["status"] == "connected" && v["current_call"]["transfer"].is_null()
    })
    .await;
    bob.post("/api/call/hangup", json!({})).await.ok();
    let v = sys
        .view_when(&bob, "Bob in wrap-up", |v| v["status"] == "wrap_up")
        .await;
    assert_eq!(v["counts"]["completed"], 2, "this login's second call");
    let _ = caller;
}

/// The options a view offers (none without a call).
fn options(v: &Value) -> Value {
    v["current_call"]["options"].clone()
}

/// Waits until `who` is offered exactly `expected` (`null`: no call at all).
async fn offered(who: &Client, what: &str, expected: Value) -> Value {
    let v = cc_testkit::eventually(what, Duration::from_secs(20), || async {
        let v = who.get("/api/me").await.body;
        let now = if v["current_call"].is_null() {
            Value::Null
        } else {
            options(&v)
        };
        (now == expected).then_some(v)
    })
    .await;
    v
}

/// Takes one offered option the way the portal does; every offered option must be accepted.
async fn take(who: &Client, option: &str) {
    let r = match option {
        "hangup" | "end_consultation" | "leave_conference" => {
            who.post("/api/call/hangup", json!({})).await
        }
        "hold" => who.post("/api/call/hold", json!({"held": true})).await,
        "resume" => who.post("/api/call/hold", json!({"held": false})).await,
        "complete" => who.post("/api/call/transfer/complete", json!({})).await,
        "cancel" => who.post("/api/call/transfer/cancel", json!({})).await,
        "end_wrap_up" => who.post("/api/call/wrap-up/end", json!({})).await,
        "blind_transfer" => transfer(who, "blind", json!({"extension": "1005"})).await,
        "attended_transfer" => transfer(who, "attended", json!({"extension": "1005"})).await,
        "live_transfer" => transfer(who, "live", json!({"extension": "1005"})).await,
        other => panic!("an option the test does not know: {other}"),
    };
    assert!(
        r.status.is_success(),
        "{option} was offered but refused: {} {}",
        r.status,
        r.body
    );
}

const FULL: [&str; 5] = [
    "hangup",
    "hold",
    "blind_transfer",
    "attended_transfer",
    "live_transfer",
];

/// The receiving agent owns the call: every option of a call of their own works (the hold
/// and both transfers that can be cancelled, then `last`, which ends their part).
async fn walk_full(who: &Client, name: &str, last: &str) {
    offered(who, &format!("{name}: the full call options"), json!(FULL)).await;
    take(who, "hold").await;
    offered(
        who,
        &format!("{name} on hold"),
        json!([
            "hangup",
            "resume",
            "blind_transfer",
            "attended_transfer",
            "live_transfer"
        ]),
    )
    .await;
    take(who, "resume").await;
    for method in ["attended_transfer", "live_transfer"] {
        offered(who, &format!("{name} before {method}"), json!(FULL)).await;
        take(who, method).await;
        let v = offered(
            who,
            &format!("{name} transferring ({method})"),
            if method == "attended_transfer" {
                json!(["complete", "cancel", "resume"])
            } else {
                json!(["complete", "cancel", "hold"])
            },
        )
        .await;
        assert_eq!(v["current_call"]["transfer"]["state"], "ringing");
        take(who, "cancel").await;
    }
    offered(who, &format!("{name} before {last}"), json!(FULL)).await;
    take(who, last).await;
    offered(who, &format!("{name} after {last}"), json!(["end_wrap_up"])).await;
}

/// A new queue call for Bob (Carol, in queue 501 only, is not offered it).
async fn bob_takes_a_call(t: &Tenant, bob: &Client) {
    t.place_caller("500", "5550100", "Next Caller").await;
    offered(bob, "Bob ringing", json!([])).await;
    t.phone("1002", "answer").await;
    offered(bob, "Bob connected", json!(FULL)).await;
}

/// Carol answers the transfer ringing her phone.
async fn carol_answers(t: &Tenant, carol: &Client) {
    t.view_when(carol, "Carol's phone rings the transfer", |v| {
        v["status"] == "ringing" && v["current_call"]["transferred_from"] == "1002"
    })
    .await;
    t.phone("1003", "answer").await;
}

/// Defect 3: every option either agent is offered at every step of a blind, an attended and
/// a live transfer is accepted; the receiving agent is offered only what they can do (to leave
/// a consultation or a 3-way call, the full options once the call is theirs).
#[tokio::test]
async fn every_option_offered_to_either_agent_at_every_step_of_a_transfer_is_accepted() {
    let sys = System::start().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    let (bob, carol, _call, _) = bob_connected(&t).await;
    t.pbx_put_mode("1005", json!({"mode": "manual"})).await;
    let wrap_up = || json!(["end_wrap_up"]);

    // Blind: Bob drops at once; Carol rings, then the call is hers.
    take(&bob, "blind_transfer").await; // to 1005 first, which will reject ...
    offered(&bob, "Bob in wrap-up after a blind transfer", wrap_up()).await;
    take(&bob, "end_wrap_up").await;
    // ... the caller comes back through the queue when 1005 rejects.
    cc_testkit::eventually("1005 rings", Duration::from_secs(10), || async {
        t.channels()
            .await
            .iter()
            .any(|c| c["device"] == "1005")
            .then_some(())
    })
    .await;
    t.phone("1005", "reject").await;
    offered(&bob, "Bob offered the caller again", json!([])).await;
    t.phone("1002", "answer").await;
    offered(&bob, "Bob connected again", json!(FULL)).await;
    transfer(&bob, "blind", json!({"agent": "1003"})).await.ok();
    offered(&bob, "Bob in wrap-up (blind to Carol)", wrap_up()).await;
    let v = offered(&carol, "Carol ringing (blind)", json!([])).await;
    assert_eq!(v["current_call"]["transferred_from"], "1002");
    take(&bob, "end_wrap_up").await;
    carol_answers(&t, &carol).await;
    walk_full(&carol, "Carol after a blind transfer", "hangup").await;
    take(&carol, "end_wrap_up").await;

    // Attended, step by step.
    bob_takes_a_call(&t, &bob).await;
    let ringing_bob = json!(["complete", "cancel", "resume"]);
    // 1. The target rings: Bob may switch to the customer and back, and cancel.
    transfer(&bob, "attended", json!({"agent": "1003"}))
        .await
        .ok();
    offered(&bob, "attended, ringing", ringing_bob.clone()).await;
    offered(&carol, "Carol ringing (attended)", json!([])).await;
    take(&bob, "resume").await;
    offered(
        &bob,
        "attended, ringing, with the customer",
        json!(["complete", "cancel", "hold"]),
    )
    .await;
    take(&bob, "hold").await;
    offered(
        &bob,
        "attended, ringing, customer held",
        ringing_bob.clone(),
    )
    .await;
    take(&bob, "cancel").await;
    offered(&bob, "cancelled while ringing", json!(FULL)).await;
    offered(&carol, "Carol no longer rings", Value::Null).await;
    // 2. The consultation: Bob toggles; Carol ends it.
    transfer(&bob, "attended", json!({"agent": "1003"}))
        .await
        .ok();
    carol_answers(&t, &carol).await;
    let v = offered(&carol, "Carol consulting", json!(["end_consultation"])).await;
    assert_eq!(
        v["current_call"]["received_transfer"]["state"],
        "consultation"
    );
    offered(&bob, "Bob consulting", ringing_bob.clone()).await;
    take(&bob, "resume").await;
    offered(
        &bob,
        "Bob back with the customer",
        json!(["complete", "cancel", "hold"]),
    )
    .await;
    offered(&carol, "Carol waits", json!(["end_consultation"])).await;
    take(&bob, "hold").await;
    offered(&bob, "Bob consulting again", ringing_bob.clone()).await;
    // The target cannot act on the customer's call until it is theirs: refused in words.
    carol
        .post("/api/call/hold", json!({"held": true}))
        .await
        .refused(409, "transfer_target");
    take(&carol, "end_consultation").await;
    offered(&carol, "Carol's consultation over", Value::Null).await;
    offered(&bob, "Bob back with the customer, no transfer", json!(FULL)).await;
    // 3. Bob cancels the consultation.
    transfer(&bob, "attended", json!({"agent": "1003"}))
        .await
        .ok();
    carol_answers(&t, &carol).await;
    offered(&carol, "Carol consulting (2)", json!(["end_consultation"])).await;
    take(&bob, "cancel").await;
    offered(&carol, "cancelled consultation", Value::Null).await;
    // 4. Bob completes during the consultation: the call is Carol's.
    transfer(&bob, "attended", json!({"agent": "1003"}))
        .await
        .ok();
    carol_answers(&t, &carol).await;
    offered(&carol, "Carol consulting (3)", json!(["end_consultation"])).await;
    take(&bob, "complete").await;
    offered(&bob, "Bob in wrap-up (attended)", wrap_up()).await;
    walk_full(&carol, "Carol after an attended transfer", "hangup").await;
    take(&carol, "end_wrap_up").await;
    take(&bob, "end_wrap_up").await;
    // 5. Bob completes before Carol answers: she gets the call when she does.
    bob_takes_a_call(&t, &bob).await;
    transfer(&bob, "attended", json!({"agent": "1003"}))
        .await
        .ok();
    offered(&bob, "attended, ringing (5)", ringing_bob.clone()).await;
    take(&bob, "complete").await;
    offered(&bob, "Bob in wrap-up (completed early)", wrap_up()).await;
    take(&bob, "end_wrap_up").await;
    carol_answers(&t, &carol).await;
    walk_full(&carol, "Carol after an early Complete", "blind_transfer").await;
    take(&carol, "end_wrap_up").await;
    cc_testkit::eventually(
        "1005 rings (Carol's blind transfer)",
        Duration::from_secs(10),
        || async {
            t.channels()
                .await
                .iter()
                .any(|c| c["device"] == "1005")
                .then_some(())
        },
    )
    .await;
    t.phone("1005", "reject").await; // the customer goes back to queue 500: Bob
    offered(&bob, "Bob offered the caller back", json!([])).await;
    t.phone("1002", "answer").await;
    offered(&bob, "Bob connected (live)", json!(FULL)).await;

    // Live, step by step.
    let live_bob = json!(["complete", "cancel", "hold"]);
    transfer(&bob, "live", json!({"agent": "1003"})).await.ok();
    offered(&bob, "live, ringing", live_bob.clone()).await;
    offered(&carol, "Carol ringing (live)", json!([])).await;
    take(&bob, "hold").await;
    offered(
        &bob,
        "live, ringing, customer held",
        json!(["complete", "cancel", "resume"]),
    )
    .await;
    take(&bob, "resume").await;
    offered(&bob, "live, ringing (again)", live_bob.clone()).await;
    take(&bob, "cancel").await;
    offered(&carol, "Carol no longer rings (live)", Value::Null).await;
    // The 3-way call: Bob holds and resumes the customer; Carol leaves.
    transfer(&bob, "live", json!({"agent": "1003"})).await.ok();
    carol_answers(&t, &carol).await;
    let v = offered(
        &carol,
        "Carol in the 3-way call",
        json!(["leave_conference"]),
    )
    .await;
    assert_eq!(
        v["current_call"]["received_transfer"]["state"],
        "conference"
    );
    let v = offered(&bob, "Bob in the 3-way call", live_bob.clone()).await;
    assert_eq!(v["current_call"]["transfer"]["state"], "conference");
    take(&bob, "hold").await;
    offered(
        &bob,
        "3-way, customer held",
        json!(["complete", "cancel", "resume"]),
    )
    .await;
    offered(&carol, "Carol still in it", json!(["leave_conference"])).await;
    take(&bob, "resume").await;
    offered(&bob, "3-way again", live_bob.clone()).await;
    take(&carol, "leave_conference").await;
    offered(&carol, "Carol left", Value::Null).await;
    offered(&bob, "Bob with the customer", json!(FULL)).await;
    // Bob cancels the 3-way call.
    transfer(&bob, "live", json!({"agent": "1003"})).await.ok();
    carol_answers(&t, &carol).await;
    offered(
        &carol,
        "Carol in the 3-way call (2)",
        json!(["leave_conference"]),
    )
    .await;
    take(&bob, "cancel").await;
    offered(&carol, "the 3-way call cancelled", Value::Null).await;
    // Bob completes the 3-way call: the call is Carol's.
    transfer(&bob, "live", json!({"agent": "1003"})).await.ok();
    carol_answers(&t, &carol).await;
    offered(
        &carol,
        "Carol in the 3-way call (3)",
        json!(["leave_conference"]),
    )
    .await;
    take(&bob, "complete").await;
    offered(&bob, "Bob in wrap-up (live)", wrap_up()).await;
    walk_full(&carol, "Carol after a live transfer", "hangup").await;
    take(&carol, "end_wrap_up").await;
    take(&bob, "end_wrap_up").await;
    // Bob completes a live transfer before Carol answers.
    bob_takes_a_call(&t, &bob).await;
    transfer(&bob, "live", json!({"agent": "1003"})).await.ok();
    offered(&bob, "live, ringing (early)", live_bob).await;
    take(&bob, "complete").await;
    offered(&bob, "Bob in wrap-up (live, early)", wrap_up()).await;
    carol_answers(&t, &carol).await;
    walk_full(&carol, "Carol after an early live Complete", "hangup").await;
}

/// Defect 9: one subject filter finds every event about an agent, including the transfer
/// events in which they are the receiving agent (published a second time on
/// `<p>.target_events.…` with them in the agent token), live and replayed from JetStream.
#[tokio::test]
async fn one_subject_filter_finds_every_event_about_an_agent_including_transfers_to_them() {
    use futures::StreamExt;
    let sys = System::start().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    let filter = format!("{}.*.{}.*.*.*.1003.*", sys.prefix, t.name);
    let client = sys.operator_nats().await.unwrap();
    let mut live = client.subscribe(filter.clone()).await.unwrap();
    client.flush().await.unwrap();

    let (bob, carol, call, _) = bob_connected(&t).await;
    transfer(&bob, "attended", json!({"agent": "1003"}))
        .await
        .ok();
    carol_answers(&t, &carol).await;
    offered(&carol, "Carol consulting", json!(["end_consultation"])).await;
    take(&bob, "complete").await;
    offered(&carol, "the call is Carol's", json!(FULL)).await;
    take(&carol, "hangup").await;
    t.call_events_until(&call, "WrapUpStarted").await;

    let about_carol = [
        "TransferStarted",
        "TransferAnswered",
        "TransferCompleted",
        "CallConnected",
        "CallEnded",
        "WrapUpStarted",
    ];
    // Live, on core NATS.
    let mut seen = Vec::new();
    while !about_carol
        .iter()
        .all(|t| seen.iter().any(|(s, _): &(String, String)| s == t))
    {
        let m = tokio::time::timeout(Duration::from_secs(10), live.next())
            .await
            .unwrap_or_else(|_| panic!("live: only {seen:?}"))
            .unwrap();
        let t = m
            .headers
            .as_ref()
            .unwrap()
            .get("Cc-Event-Type")
            .unwrap()
            .as_str()
            .to_string();
        seen.push((t, m.subject.to_string()));
    }
    let subject_of = |t: &str| seen.iter().find(|(x, _)| x == t).unwrap().1.clone();
    assert_eq!(
        subject_of("TransferStarted"),
        format!(
            "{}.target_events.{}.call.{call}.TransferStarted.1003.500",
            sys.prefix, t.name
        )
    );
    assert_eq!(
        subject_of("CallConnected"),
        format!(
            "{}.events.{}.call.{call}.CallConnected.1003._",
            sys.prefix, t.name
        )
    );
    // Replayed from JetStream with the same filter: the same, and Carol's session events too.
    let replay = sys.published_types(&filter).await;
    for t in about_carol.iter().chain(&["AgentLoggedIn"]) {
        assert!(replay.iter().any(|x| x == t), "{t} in {replay:?}");
    }
    // A follower of every domain event still gets each event once.
    let all = sys
        .published_types(&format!("{}.events.>", sys.prefix))
        .await;
    let started = all.iter().filter(|t| *t == "TransferStarted").count();
    assert_eq!(started, 1, "{all:?}");
}
