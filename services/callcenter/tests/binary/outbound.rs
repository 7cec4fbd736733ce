//! Outbound calls from the portal, end to end on the PBX simulator: the agent dials, their own
//! phone rings first, then the number; connected, the call has the usual options; it is reported
//! as an outbound call, never offered by the ACD, and the agent gets no queue call meanwhile.
//! And every way a dial can fail: bad input at the edge, the agent's phone declining, the far
//! end declining or busy, the agent hanging up while it rings, a logout while it rings.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::system::{Client, System};
use crate::tenant::{Tenant, TenantSpec};

impl Tenant {
    /// The reporting row of a call, once `pred` holds.
    async fn report_row(&self, call: &str, pred: impl Fn(&Value) -> bool) -> Value {
        cc_testkit::eventually(
            "the call's reporting row",
            Duration::from_secs(20),
            || async {
                let row: Option<Value> = sqlx::query_scalar(
                    "select row_to_json(c) from reporting.calls c where tenant = $1 and call = $2",
                )
                .bind(&self.name)
                .bind(call)
                .fetch_optional(&self.pool)
                .await
                .unwrap();
                row.filter(|r| pred(r))
            },
        )
        .await
    }

    /// The simulator's live channels on `device`.
    async fn channels_on(&self, device: &str) -> usize {
        self.device_channels(device).await.len()
    }
}

impl System {
    /// Writes every event relayed so far to target/contract-samples/<name>.ndjson, once the
    /// relay published all the store holds (scripts/check-contracts validates them).
    async fn record_all_published(&self, name: &str) {
        let stored: i64 = sqlx::query_scalar("select count(*) from es_events")
            .fetch_one(&self.db.pool)
            .await
            .unwrap();
        cc_testkit::eventually("every event relayed", Duration::from_secs(20), || async {
            let n = self
                .published_types(&format!("{}.events.>", self.prefix))
                .await
                .len() as i64;
            (n >= stored).then_some(())
        })
        .await;
        assert!(self.record_published_events(name).await as i64 >= stored);
    }
}

impl Client {
    /// Dials out (`POST /api/call/dial`), which must be accepted; the call's id.
    pub async fn dial(&self, body: Value) -> String {
        self.post("/api/call/dial", body).await.ok()["call"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

#[tokio::test]
async fn an_outbound_call_rings_the_agent_then_the_number_connects_and_is_reported_outbound() {
    let sys = System::start().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    let bob = t.idle_agent("1002").await;

    // The dialled text is checked at the edge, naming the field; nothing is recorded.
    let before = sys.event_count().await;
    for bad in [
        json!({"number": "555-CALL"}),
        json!({"number": "1".repeat(33)}),
        json!({"number": ""}),
    ] {
        let r = bob.post("/api/call/dial", bad.clone()).await;
        assert_eq!(r.refused(400, "invalid_field")["field"], "number", "{bad}");
    }
    bob.post("/api/call/dial", json!({}))
        .await
        .refused(400, "missing_field");
    let own = bob.post("/api/call/dial", json!({"number": "1002"})).await;
    assert_eq!(own.refused(422, "own_device")["field"], "number");
    let offline = bob.post("/api/call/dial", json!({"number": "1007"})).await;
    assert_eq!(
        offline.refused(422, "device_unavailable")["field"],
        "number"
    );
    assert_eq!(
        sys.event_count().await,
        before,
        "a refused dial records nothing"
    );

    let r = bob
        .post("/api/call/dial", json!({"number": "+49 (30) 555-1234"}))
        .await
        .ok();
    let call = r["call"].as_str().unwrap().to_string();
    let v = sys
        .view_when(&bob, "Dialing", |v| v["status"] == "dialing")
        .await;
    let c = &v["current_call"];
    assert_eq!(
        (
            c["direction"].as_str(),
            c["number"].as_str(),
            c["dial_state"].as_str(),
            v["status_label"].as_str()
        ),
        (
            Some("outbound"),
            Some("+49305551234"),
            Some("agent_ringing"),
            Some("Dialing")
        ),
        "{v}"
    );
    assert_eq!(c["options"], json!(["hangup"]));
    // A caller enters Bob's queue now: Bob dials out, so it is not offered to him.
    t.place_caller("500", "5550001", "Waiting").await;
    // Dialing is being on a call: no logout, no second dial.
    bob.call(Method::DELETE, "/api/session", None)
        .await
        .refused(409, "on_call");
    bob.post("/api/call/dial", json!({"number": "5550002"}))
        .await
        .refused(409, "on_call");

    // Bob's phone answers: the number rings (the simulator's outside numbers answer after a
    // moment), then the call is connected with the usual options.
    t.phone("1002", "answer").await;
    let v = sys
        .view_when(&bob, "Connected", |v| v["status"] == "connected")
        .await;
    let c = &v["current_call"];
    assert!(c["answered_at"].is_string(), "{v}");
    assert_eq!(
        c["options"],
        json!([
            "hangup",
            "hold",
            "blind_transfer",
            "attended_transfer",
            "live_transfer"
        ])
    );
    bob.post("/api/call/hold", json!({"held": true})).await.ok();
    sys.view_when(&bob, "On hold", |v| v["status"] == "on_hold")
        .await;
    bob.post("/api/call/hold", json!({"held": false}))
        .await
        .ok();
    sys.view_when(&bob, "Connected again", |v| v["status"] == "connected")
        .await;

    // All this time the queue's caller waited: never offered to Bob.
    let offered: i64 = sqlx::query_scalar(
        "select count(*) from es_events where event_type = 'CallOffered' and data->>'agent' = '1002'",
    )
    .fetch_one(&sys.db.pool)
    .await
    .unwrap();
    assert_eq!(
        offered, 0,
        "no queue call offered to an agent on an outbound call"
    );

    // Hangup: no wrap-up for an outbound call, and the counts say Completed 1. Then (free
    // again) Bob is offered the waiting caller.
    bob.post("/api/call/hangup", json!({})).await.ok();
    let v = sys
        .view_when(&bob, "the waiting caller rings Bob", |v| {
            v["status"] == "ringing"
        })
        .await;
    assert_eq!(v["current_call"]["caller_number"], "5550001", "{v}");
    assert_eq!(v["counts"]["completed"], 1);

    assert_eq!(
        t.call_events(&call).await,
        [
            "OutboundCallStarted",
            "OutboundCallDialed",
            "CallConnected",
            "CallHeld",
            "CallResumed",
            "CallEnded"
        ]
    );
    let (_, started) = t
        .stream_events(&format!("call-{call}"))
        .await
        .into_iter()
        .next()
        .unwrap();
    assert_eq!(
        (started["device"].as_str(), started["extension"].as_bool()),
        (Some("1002"), Some(false))
    );

    // Reported as an outbound call: no queue, the number dialled, Bob's, talk without hold.
    let row = t.report_row(&call, |r| r["outcome"] == "completed").await;
    assert_eq!(
        (
            row["direction"].as_str(),
            row["queue"].as_str(),
            row["caller_number"].as_str(),
            row["first_agent"].as_str(),
            row["wait_ms"].as_i64()
        ),
        (
            Some("outbound"),
            None,
            Some("+49305551234"),
            Some("1002"),
            None
        ),
        "{row}"
    );
    assert!(
        row["talk_ms"].as_i64().is_some() && row["answered_at"].is_string(),
        "{row}"
    );
    let kinds: Vec<(String, Option<String>)> = sqlx::query_as(
        "select kind, outcome from reporting.call_segments where tenant = $2 and call = $1 order by seq",
    )
    .bind(&call)
    .bind(&t.name)
    .fetch_all(&sys.db.pool)
    .await
    .unwrap();
    assert_eq!(
        kinds,
        [
            ("dial".to_string(), Some("connected".to_string())),
            ("connected".to_string(), Some("agent".to_string())),
            ("hold".to_string(), Some("resumed".to_string())),
        ]
    );
    // The agent's states: dialing, then connected, and no wrap-up.
    let states: Vec<String> = sqlx::query_scalar(
        "select state from reporting.agent_states where tenant = $2 and agent = '1002' and call = $1 order by seq",
    )
    .bind(&call)
    .bind(&t.name)
    .fetch_all(&sys.db.pool)
    .await
    .unwrap();
    assert_eq!(states, ["dialing", "connected", "on_hold", "connected"]);
    // Not in the queue figures.
    let in_queue: i64 = sqlx::query_scalar(
        "select count(*) from reporting.call_segments where tenant = $2 and call = $1 and kind in ('queue', 'offer')",
    )
    .bind(&call)
    .bind(&t.name)
    .fetch_one(&sys.db.pool)
    .await
    .unwrap();
    assert_eq!(in_queue, 0);
    // And in the agent's calls today.
    let mine = bob.get("/api/me/calls").await.ok();
    let row = mine
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["call"] == call.as_str())
        .cloned()
        .expect("the outbound call in /api/me/calls");
    assert_eq!(
        (
            row["direction"].as_str(),
            row["outcome"].as_str(),
            row["queue"].as_str()
        ),
        (Some("outbound"), Some("answered"), Some(""))
    );
    sys.record_all_published("outbound-connected").await;
}

#[tokio::test]
async fn a_dial_that_does_not_connect_says_why_hangs_up_both_phones_and_frees_the_agent() {
    let sys = System::start().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    let bob = t.idle_agent("1002").await;
    let alice = t.idle_agent("1001").await;

    // Bob's own phone declines: agent_declined.
    let call = bob.dial(json!({"number": "5551234"})).await;
    sys.view_when(&bob, "Dialing", |v| v["status"] == "dialing")
        .await;
    t.phone("1002", "reject").await;
    let v = sys
        .view_when(&bob, "Idle with the reason", |v| {
            v["status"] == "idle" && v["dial_failure"].is_object()
        })
        .await;
    assert_eq!(
        (
            v["dial_failure"]["reason"].as_str(),
            v["dial_failure"]["number"].as_str(),
            v["dial_failure"]["call"].as_str()
        ),
        (Some("agent_declined"), Some("5551234"), Some(call.as_str()))
    );
    assert!(v["current_call"].is_null());
    assert_eq!(
        t.call_events(&call).await,
        ["OutboundCallStarted", "OutboundCallFailed"]
    );

    // Bob hangs up in the portal while his phone rings: cancelled, his phone stops ringing, and
    // then he can log out.
    bob.post("/api/call/dial", json!({"number": "5551234"}))
        .await
        .ok();
    sys.view_when(&bob, "Dialing", |v| v["status"] == "dialing")
        .await;
    assert_eq!(t.channels_on("1002").await, 1, "Bob's phone rings");
    bob.call(Method::DELETE, "/api/session", None)
        .await
        .refused(409, "on_call");
    bob.post("/api/call/hangup", json!({})).await.ok();
    let v = sys
        .view_when(&bob, "cancelled", |v| {
            v["dial_failure"]["reason"] == "cancelled" && v["status"] == "idle"
        })
        .await;
    assert_eq!(v["dial_failure"]["label"], "Cancelled");
    cc_testkit::eventually(
        "Bob's phone stops ringing",
        Duration::from_secs(10),
        || async { (t.channels_on("1002").await == 0).then_some(()) },
    )
    .await;

    // The far end declines: Bob dials extension 1003 and Carol's phone declines.
    let call = bob.dial(json!({"number": "1003"})).await;
    sys.view_when(&bob, "Dialing", |v| v["status"] == "dialing")
        .await;
    t.phone("1002", "answer").await;
    sys.view_when(&bob, "the extension rings", |v| {
        v["current_call"]["dial_state"] == "number_ringing"
    })
    .await;
    assert_eq!(t.channels_on("1003").await, 1, "extension 1003 rings");
    // Meanwhile Alice dials the same extension: it is busy.
    let busy = alice.dial(json!({"number": "1003"})).await;
    t.phone("1001", "answer").await;
    let va = sys
        .view_when(&alice, "busy", |v| v["dial_failure"].is_object())
        .await;
    assert_eq!(va["dial_failure"]["reason"], "busy", "{va}");
    assert_eq!(va["status"], "idle");
    t.phone("1003", "reject").await;
    let v = sys
        .view_when(&bob, "declined", |v| v["dial_failure"].is_object())
        .await;
    assert_eq!(
        (v["dial_failure"]["reason"].as_str(), v["status"].as_str()),
        (Some("rejected"), Some("idle")),
        "{v}"
    );
    assert_eq!(
        t.call_events(&call).await,
        [
            "OutboundCallStarted",
            "OutboundCallDialed",
            "OutboundCallFailed"
        ]
    );
    // Both of Bob's legs are gone.
    cc_testkit::eventually("the phones are free", Duration::from_secs(10), || async {
        (t.channels_on("1002").await == 0 && t.channels_on("1001").await == 0).then_some(())
    })
    .await;
    let row = t
        .report_row(&busy, |r| r["outcome"] == "not_connected")
        .await;
    assert_eq!(row["direction"], "outbound");
    assert!(
        row["answered_at"].is_null() && row["talk_ms"].is_null(),
        "{row}"
    );
    let dial: String = sqlx::query_scalar(
        "select outcome from reporting.call_segments where tenant = $2 and call = $1 and kind = 'dial'",
    )
    .bind(&busy)
    .bind(&t.name)
    .fetch_one(&sys.db.pool)
    .await
    .unwrap();
    assert_eq!(dial, "failed:busy");
    // A failed dial is no Completed call.
    assert_eq!(v["counts"]["completed"], 0);
    // The number rings out: Bob dials extension 1003 (nobody answers it) with a 2 s ring time.
    let r = bob
        .post(
            "/api/call/dial",
            json!({"number": "1003", "ring_timeout_s": 0}),
        )
        .await;
    assert_eq!(r.refused(400, "invalid_field")["field"], "ring_timeout_s");
    let call = bob
        .dial(json!({"number": "1003", "ring_timeout_s": 2}))
        .await;
    sys.view_when(&bob, "Dialing", |v| v["status"] == "dialing")
        .await;
    t.phone("1002", "answer").await;
    let v = sys
        .view_when(&bob, "no answer", |v| {
            v["dial_failure"]["call"] == call.as_str()
        })
        .await;
    assert_eq!(
        (v["dial_failure"]["reason"].as_str(), v["status"].as_str()),
        (Some("no_answer"), Some("idle")),
        "{v}"
    );
    cc_testkit::eventually("both phones stop", Duration::from_secs(10), || async {
        (t.channels_on("1002").await == 0 && t.channels_on("1003").await == 0).then_some(())
    })
    .await;

    // Free again: Bob logs out.
    bob.call(Method::DELETE, "/api/session", None).await.ok();
    sys.record_all_published("outbound-failed").await;
}

#[tokio::test]
async fn an_outbound_call_is_transferred_like_a_queue_call_and_nobody_gets_a_wrap_up() {
    let sys = System::start().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    let bob = t.idle_agent("1002").await;
    let alice = t.idle_agent("1001").await;

    let call = bob.dial(json!({"number": "5554321"})).await;
    sys.view_when(&bob, "Dialing", |v| v["status"] == "dialing")
        .await;
    t.phone("1002", "answer").await;
    sys.view_when(&bob, "Connected", |v| v["status"] == "connected")
        .await;

    // Blind transfer to Alice: Bob is free at once (no wrap-up), Alice rings with the number.
    bob.post(
        "/api/call/transfer",
        json!({"method": "blind", "target": {"agent": "1001"}}),
    )
    .await
    .ok();
    let v = sys
        .view_when(&bob, "Bob Idle", |v| v["status"] == "idle")
        .await;
    assert!(v["current_call"].is_null(), "{v}");
    assert_eq!(v["counts"]["completed"], 1);
    let v = sys
        .view_when(&alice, "Alice ringing", |v| v["status"] == "ringing")
        .await;
    assert_eq!(v["current_call"]["caller_number"], "5554321", "{v}");
    assert!(v["current_call"]["queue"].is_null(), "{v}");
    t.phone("1001", "answer").await;
    sys.view_when(&alice, "Alice connected", |v| v["status"] == "connected")
        .await;
    alice.post("/api/call/hangup", json!({})).await.ok();
    // No queue, no wrap-up: Alice is Idle at once.
    let v = sys
        .view_when(&alice, "Alice Idle", |v| v["status"] == "idle")
        .await;
    assert!(v["current_call"].is_null(), "{v}");

    let events = t.stream_events(&format!("call-{call}")).await;
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        [
            "OutboundCallStarted",
            "OutboundCallDialed",
            "CallConnected",
            "TransferStarted",
            "CallEnded",
            "TransferAnswered",
            "TransferCompleted",
            "CallConnected",
            "CallEnded"
        ]
    );
    let (_, started) = events.iter().find(|(t, _)| t == "TransferStarted").unwrap();
    assert!(
        started.get("queue").is_none(),
        "no queue, not null: {started}"
    );
    let row = t.report_row(&call, |r| r["outcome"] == "completed").await;
    assert_eq!(
        (
            row["direction"].as_str(),
            row["first_agent"].as_str(),
            row["last_agent"].as_str(),
            row["transfers"].as_i64()
        ),
        (Some("outbound"), Some("1002"), Some("1001"), Some(1)),
        "{row}"
    );
    // Neither agent has a wrap-up state for it in the reports.
    let wrap_ups: i64 = sqlx::query_scalar(
        "select count(*) from reporting.agent_states where tenant = $2 and call = $1 and state = 'wrap_up'",
    )
    .bind(&call)
    .bind(&t.name)
    .fetch_one(&sys.db.pool)
    .await
    .unwrap();
    assert_eq!(wrap_ups, 0);
}
