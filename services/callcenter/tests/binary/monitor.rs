//! A supervisor listens, whispers and barges in on an agent's call from the supervisor page's
//! API, through call-control and the simulator's bridges (who hears whom is in the PBX's
//! BridgeChanged facts); the events, the report rows, the tenant setting that shows it to the
//! agent, and the permissions. The audio itself is proven with real phones in `sip.rs`.

use std::time::Duration;

use futures::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};

use crate::system::{Client, System};
use crate::tenant::{Tenant, TenantSpec, SUPERVISOR_NAME};
use crate::transfers::bob_connected;

/// The PBX's facts about a tenant's bridges and channels.
struct Facts(async_nats::Subscriber);

impl Facts {
    async fn new(sys: &System, t: &Tenant) -> Facts {
        let client = sys.operator_nats().await.unwrap();
        let sub = client
            .subscribe(format!("{}.pbx.evt.{}.>", sys.prefix, t.name))
            .await
            .unwrap();
        client.flush().await.unwrap();
        Facts(sub)
    }

    async fn find(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let m = tokio::time::timeout_at(deadline, self.0.next())
                .await
                .unwrap_or_else(|_| panic!("no {what} within 20 s"))
                .unwrap();
            let v: Value = serde_json::from_slice(&m.payload).unwrap();
            if pred(&v) {
                return v;
            }
        }
    }

    /// The next BridgeChanged of the call's bridge that has the supervisor's leg in it.
    async fn bridge_with(&mut self, call: &str, leg: &str) -> Value {
        self.find("the call's bridge with the supervisor", |v| {
            v["type"] == "BridgeChanged"
                && v["bridge"] == call
                && v["channels"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c == leg))
        })
        .await
    }
}

/// An agent's view as the supervisor page has it, once `pred` holds.
pub(crate) async fn supervised(
    sup: &Client,
    agent: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    cc_testkit::eventually(what, Duration::from_secs(30), || async {
        let all = sup.get("/api/supervisor/agents").await.ok();
        all.as_array()
            .unwrap()
            .iter()
            .find(|v| v["agent"] == agent)
            .filter(|v| pred(v))
            .cloned()
    })
    .await
}

fn monitor_path(agent: &str) -> String {
    format!("/api/supervisor/agents/{agent}/monitor")
}

#[tokio::test]
async fn a_supervisor_listens_whispers_barges_and_leaves_recorded_reported_and_shown_only_if_the_tenant_says(
) {
    let sys = System::start().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    let mut facts = Facts::new(&sys, &t).await;
    let (bob, _carol, call, customer) = bob_connected(&t).await;
    let sup = t.supervisor().await;
    let admin = t.admin().await;

    // Agents may not listen in; bad input names the field.
    bob.post(
        &monitor_path("1002"),
        json!({"device": "1005", "mode": "listen"}),
    )
    .await
    .refused(403, "forbidden");
    let r = sup
        .post(
            &monitor_path("1002"),
            json!({"device": "1005", "mode": "loud"}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = sup
        .post(
            &monitor_path("1002"),
            json!({"device": "1002", "mode": "listen"}),
        )
        .await;
    assert_eq!(r.body["field"], "device", "{}", r.body);
    assert_eq!(r.body["error"], "own_device", "{}", r.body);
    sup.post(
        &monitor_path("1003"),
        json!({"device": "1005", "mode": "listen"}),
    )
    .await
    .refused(409, "no_call");
    let devices = sup.get("/api/supervisor/devices").await.ok();
    assert!(
        devices
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["device"] == "1005" && d["online"] == true),
        "{devices}"
    );

    // Listen: the supervisor's phone rings; on its answer the supervisor's leg joins the
    // call's bridge heard by nobody, in one step.
    let r = sup
        .post(
            &monitor_path("1002"),
            json!({"device": "1005", "mode": "listen"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    sup.post(
        &monitor_path("1002"),
        json!({"device": "1006", "mode": "barge"}),
    )
    .await
    .refused(409, "monitor_in_progress");
    let v = supervised(&sup, "1002", "the supervisor's phone ringing", |v| {
        v["current_call"]["monitor"]["state"] == "ringing"
    })
    .await;
    assert_eq!(v["current_call"]["monitor"]["mode"], "listen");
    let events = t.call_events_until(&call, "MonitorStarted").await;
    let started = &events
        .iter()
        .find(|(t, _)| t == "MonitorStarted")
        .unwrap()
        .1;
    assert_eq!(
        (
            &started["supervisor"],
            &started["supervisor_name"],
            &started["device"]
        ),
        (
            &json!("supervisor"),
            &json!(SUPERVISOR_NAME),
            &json!("1005")
        )
    );
    let leg = started["leg"].as_str().unwrap().to_string();
    t.phone("1005", "answer").await;
    let joined = facts.bridge_with(&call, &leg).await;
    assert_eq!(joined["modes"], json!({ leg.clone(): {"mode": "listen"} }));
    assert!(
        joined["channels"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == customer.as_str()),
        "{joined}"
    );
    let agent_leg = joined["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| **c != customer.as_str() && **c != leg.as_str())
        .and_then(|c| c.as_str())
        .unwrap()
        .to_string();
    supervised(&sup, "1002", "the supervisor on the call", |v| {
        v["current_call"]["monitor"]["state"] == "on_call"
    })
    .await;
    // The tenant setting is off: the agent is not told.
    let me = bob.get("/api/me").await.ok();
    assert!(me["current_call"].get("monitor").is_none(), "{me}");

    // Whisper: only the agent hears the supervisor. Only the supervisor on the call switches.
    admin
        .call(
            Method::PATCH,
            &monitor_path("1002"),
            Some(json!({"mode": "barge"})),
        )
        .await
        .refused(403, "forbidden");
    let r = sup
        .call(
            Method::PATCH,
            &monitor_path("1002"),
            Some(json!({"mode": "whisper"})),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let whisper = facts.bridge_with(&call, &leg).await;
    assert_eq!(
        whisper["modes"],
        json!({ leg.clone(): {"mode": "whisper", "to": agent_leg} })
    );
    // With the setting on, the agent's page says who is on the call and how.
    let r = admin
        .call(
            Method::PUT,
            "/api/admin/agent-defaults",
            Some(json!({"may_manage_queues": false, "agents_see_monitoring": true})),
        )
        .await
        .ok();
    assert_eq!(r["agents_see_monitoring"], true);
    let me = cc_testkit::eventually("the agent told", Duration::from_secs(10), || async {
        let me = bob.get("/api/me").await.ok();
        me["current_call"].get("monitor").is_some().then_some(me)
    })
    .await;
    assert_eq!(
        (
            &me["current_call"]["monitor"]["mode"],
            &me["current_call"]["monitor"]["supervisor_name"]
        ),
        (&json!("whisper"), &json!(SUPERVISOR_NAME))
    );

    // Barge: everyone hears everyone (no mode listed for the supervisor).
    let r = sup
        .call(
            Method::PATCH,
            &monitor_path("1002"),
            Some(json!({"mode": "barge"})),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let barge = facts.bridge_with(&call, &leg).await;
    assert!(barge.get("modes").is_none(), "{barge}");

    // The agent's hold still works with the supervisor on the call.
    let r = bob.post("/api/call/hold", json!({"held": true})).await;
    assert_eq!(r.status, 204, "{}", r.body);
    let r = bob.post("/api/call/hold", json!({"held": false})).await;
    assert_eq!(r.status, 204, "{}", r.body);

    // Leave: the supervisor's leg is hung up, the call goes on.
    let r = sup.call(Method::DELETE, &monitor_path("1002"), None).await;
    assert_eq!(r.status, 204, "{}", r.body);
    facts
        .find("the supervisor's leg hung up", |v| {
            v["type"] == "ChannelHungUp" && v["channel"] == leg.as_str()
        })
        .await;
    sup.call(Method::DELETE, &monitor_path("1002"), None)
        .await
        .refused(409, "no_monitor");
    let v = sys
        .view_when(&bob, "the monitor gone from the view", |v| {
            v["status"] == "connected" && v["current_call"].get("monitor").is_none()
        })
        .await;
    assert_eq!(v["current_call"]["call"], call.as_str());
    let events = t.call_events_until(&call, "MonitorEnded").await;
    let monitor: Vec<(&str, Value)> = events
        .iter()
        .filter(|(t, _)| t.starts_with("Monitor"))
        .map(|(t, e)| {
            (
                t.as_str(),
                e.get("mode")
                    .or(e.get("reason"))
                    .cloned()
                    .unwrap_or(Value::Null),
            )
        })
        .collect();
    assert_eq!(
        monitor,
        vec![
            ("MonitorStarted", json!("listen")),
            ("MonitorJoined", Value::Null),
            ("MonitorModeChanged", json!("whisper")),
            ("MonitorModeChanged", json!("barge")),
            ("MonitorEnded", json!("left")),
        ]
    );

    // The call history: one monitor row per mode.
    let rows = cc_testkit::eventually("the monitor rows", Duration::from_secs(20), || async {
        let rows: Vec<(String, String, Option<String>, Value)> = sqlx::query_as(
            "select agent, detail->>'mode', outcome, detail from reporting.call_segments
              where call = $1 and kind = 'monitor' order by seq",
        )
        .bind(&call)
        .fetch_all(&sys.db.pool)
        .await
        .unwrap();
        (rows.len() == 3 && rows[2].2.is_some()).then_some(rows)
    })
    .await;
    let got: Vec<(&str, &str, Option<&str>)> = rows
        .iter()
        .map(|(a, m, o, _)| (a.as_str(), m.as_str(), o.as_deref()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("1002", "listen", Some("switched")),
            ("1002", "whisper", Some("switched")),
            ("1002", "barge", Some("left")),
        ]
    );
    assert_eq!(rows[0].3["supervisor"], "supervisor");
}

#[tokio::test]
async fn the_supervisors_leg_ends_with_the_agents_call_and_a_declined_phone_ends_the_monitoring() {
    let sys = System::start().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    let mut facts = Facts::new(&sys, &t).await;
    let (bob, _carol, call, _customer) = bob_connected(&t).await;
    let sup = t.supervisor().await;

    // The supervisor's phone declines: the monitoring ends, the call goes on.
    let r = sup
        .post(
            &monitor_path("1002"),
            json!({"device": "1005", "mode": "listen"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    t.call_events_until(&call, "MonitorStarted").await;
    t.phone("1005", "reject").await;
    let events = t.call_events_until(&call, "MonitorEnded").await;
    assert_eq!(events.last().unwrap().1["reason"], "rejected");

    // Again, answered; then the agent hangs up: the supervisor's leg ends with the call.
    let r = sup
        .post(
            &monitor_path("1002"),
            json!({"device": "1005", "mode": "barge"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let started = cc_testkit::eventually(
        "the second MonitorStarted",
        Duration::from_secs(15),
        || async {
            let e = t.stream_events(&format!("call-{call}")).await;
            let s: Vec<Value> = e
                .into_iter()
                .filter(|(t, _)| t == "MonitorStarted")
                .map(|(_, v)| v)
                .collect();
            (s.len() == 2).then(|| s[1].clone())
        },
    )
    .await;
    let leg = started["leg"].as_str().unwrap().to_string();
    t.phone("1005", "answer").await;
    let joined = facts.bridge_with(&call, &leg).await;
    assert!(joined.get("modes").is_none(), "a barge speaks: {joined}");
    supervised(&sup, "1002", "the supervisor on the call", |v| {
        v["current_call"]["monitor"]["state"] == "on_call"
    })
    .await;
    let r = bob.post("/api/call/hangup", json!({})).await;
    assert_eq!(r.status, 204, "{}", r.body);
    facts
        .find("the supervisor's leg hung up", |v| {
            v["type"] == "ChannelHungUp" && v["channel"] == leg.as_str()
        })
        .await;
    let events = t.call_events_until(&call, "CallEnded").await;
    let i = events.iter().position(|(t, _)| t == "CallEnded").unwrap();
    assert_eq!(events[i + 1].0, "MonitorEnded", "{events:?}");
    assert_eq!(events[i + 1].1["reason"], "call_ended");
    let v = supervised(&sup, "1002", "Bob in wrap-up", |v| v["status"] == "wrap_up").await;
    assert!(v["current_call"].get("monitor").is_none(), "{v}");
}
