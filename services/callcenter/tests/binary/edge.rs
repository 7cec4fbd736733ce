//! Text from outside: what people type is refused naming the field when it cannot be a name
//! (control characters such as NUL, which PostgreSQL cannot even store), what a PBX reports is
//! made safe to record, and a report the store still refuses is parked, not retried forever.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::system::System;
use crate::tenant::TenantSpec;

#[tokio::test]
async fn names_with_a_nul_typed_in_the_admin_api_get_a_400_naming_the_field() {
    let sys = System::start().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    let admin = t.admin().await;
    let before = sys.event_count().await;

    let r = admin.post("/api/admin/agents", json!({"agent": "1099", "display_name": "Eve\u{0}", "password": "a-long-enough-password"})).await;
    assert_eq!(r.refused(400, "invalid_field")["field"], "display_name");
    let r = admin
        .call(
            Method::PATCH,
            "/api/admin/agents/1001",
            Some(json!({"display_name": "Ali\u{0}ce"})),
        )
        .await;
    assert_eq!(r.refused(400, "invalid_field")["field"], "display_name");
    let r = admin
        .post(
            "/api/admin/queues",
            json!({"queue": "599", "name": "Night\u{0}"}),
        )
        .await;
    assert_eq!(r.refused(400, "invalid_field")["field"], "name");
    let r = admin
        .post("/api/admin/pause-reasons", json!({"name": "Lun\u{0}ch"}))
        .await;
    assert_eq!(r.refused(400, "invalid_field")["field"], "name");
    let r = admin
        .call(
            Method::PATCH,
            "/api/admin/pause-reasons/Lunch",
            Some(json!({"name": "Din\u{0}ner"})),
        )
        .await;
    assert_eq!(r.refused(400, "invalid_field")["field"], "to");
    let r = admin.post("/api/admin/users", json!({"username": "eve", "display_name": "Eve\nline", "password": "a-long-enough-password", "role": "supervisor"})).await;
    assert_eq!(r.refused(400, "invalid_field")["field"], "display_name");

    assert_eq!(sys.event_count().await, before, "nothing was recorded");
    // A clean name still works.
    admin
        .post(
            "/api/admin/queues",
            json!({"queue": "599", "name": "Night"}),
        )
        .await
        .ok();
}

#[tokio::test]
async fn a_body_is_a_json_object_of_known_fields_each_of_its_type_or_refused_naming_the_field() {
    let sys = System::start().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    let alice = t.agent("1001").await;
    let before = sys.event_count().await;
    // An array is not taken as the fields in order (it used to log in).
    let r = alice
        .raw(Method::POST, "/api/session", Some(r#"["1001"]"#.into()))
        .await;
    r.refused(400, "invalid_json");
    let r = alice
        .raw(Method::POST, "/api/session", Some("{not json".into()))
        .await;
    r.refused(400, "invalid_json");
    // A field of the wrong type in valid JSON names the field.
    let r = alice.post("/api/session", json!({"device": 1001})).await;
    assert_eq!(r.refused(400, "invalid_field")["field"], "device");
    // A field the route does not know (a typo) is refused, naming it.
    let r = alice.post("/api/session", json!({"devise": "1001"})).await;
    assert_eq!(r.refused(400, "invalid_field")["field"], "devise");
    assert_eq!(sys.event_count().await, before, "nothing was recorded");
    let me = alice.get("/api/me").await.ok();
    assert_eq!(me["status"], "logged_out");
    // The right body still works.
    alice
        .post("/api/session", json!({"device": "1001"}))
        .await
        .ok();
}

#[tokio::test]
async fn the_simulators_controls_refuse_what_cannot_be_acted_out_naming_the_field() {
    let sys = System::start().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    let (status, body) = t
        .pbx_put_mode(
            "1001",
            json!({"mode": "agent", "after_ms": 100, "probability": 2.0, "talk_ms": 1000}),
        )
        .await;
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("probability")),
        "{body}"
    );
    let (status, body) = t
        .pbx_put_mode("1001", json!({"mode": "auto_answer", "after_ms": -5}))
        .await;
    assert_eq!(status, 400, "{body}");
    for (traffic, field) in [
        (
            json!({"queues": ["-5"], "calls_per_second": 1.0, "duration_s": 10}),
            "queues",
        ),
        (
            json!({"queues": ["500"], "calls_per_second": -1.0, "duration_s": 10}),
            "calls_per_second",
        ),
        (
            json!({"queues": ["500"], "calls_per_second": 1.0, "duration_s": 0}),
            "duration_s",
        ),
        (
            json!({"queues": ["500"], "calls_per_second": 1.0, "duration_s": 10, "phones": {"mode": "agent", "after_ms": 10, "probability": -0.5, "talk_ms": 10}}),
            "probability",
        ),
    ] {
        let (status, body) = t.pbx_post("/traffic", traffic.clone()).await;
        assert_eq!(
            (status, body["field"].as_str()),
            (400, Some(field)),
            "{traffic}: {body}"
        );
    }
}

#[tokio::test]
async fn a_pbx_report_the_store_refuses_is_parked_and_other_callers_are_still_routed() {
    let sys = System::start().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    let admin = t.admin().await;
    let settings = json!({"strategy": "longest_idle", "ring_timeout_s": 30, "wrap_up_s": 0});
    admin
        .call(
            Method::PUT,
            "/api/admin/queues/500/settings",
            Some(settings),
        )
        .await
        .ok();
    let bob = t.idle_agent("1002").await;
    let dave = t.idle_agent("1004").await;

    let client = sys.operator_nats().await.unwrap();
    let js = async_nats::jetstream::new(client);
    let report = |subject_id: &str, channel: &str, name: &str| {
        let subject = format!(
            "{}.pbx.evt.{}.channel.{subject_id}.ChannelCreated",
            sys.prefix, t.name
        );
        let body = json!({"type": "ChannelCreated", "tenant": t.name, "channel": channel, "direction": "inbound",
            "caller": {"number": "5550100", "name": name}, "dialed": "500", "at": "2026-01-01T00:00:00Z"});
        (subject, body.to_string())
    };

    // A report whose channel id holds a NUL: no call event can hold it (jsonb refuses \u0000).
    let (subject, body) = report("poison1", "poison\u{0}1", "Poison");
    js.publish(subject.clone(), body.into())
        .await
        .unwrap()
        .await
        .unwrap();
    let (parked_subject, sequence, channel, error): (String, i64, String, String) =
        cc_testkit::eventually("the report parked", Duration::from_secs(15), || async {
            sqlx::query_as("select subject, stream_sequence, channel, error from qr_parked")
                .fetch_optional(&sys.db.pool)
                .await
                .ok()
                .flatten()
        })
        .await;
    assert_eq!(parked_subject, subject);
    assert!(sequence > 0);
    assert_eq!(channel, "poison\\u{0}1");
    assert!(error.contains("Unicode"), "{error}");

    // A caller whose name holds a NUL is entered with the NUL removed; a caller after it too.
    let (subject, body) = report("nulname1", "nulname1", "a\u{0}b");
    js.publish(subject, body.into())
        .await
        .unwrap()
        .await
        .unwrap();
    t.place_caller("500", "5551234", "Jane Caller").await;
    let entered: Vec<Value> = cc_testkit::eventually("both callers entered and offered", Duration::from_secs(20), || async {
        let rows: Vec<(String, Value)> =
            sqlx::query_as("select event_type, data from es_events where event_type in ('CallEnteredQueue', 'CallOffered') order by position")
                .fetch_all(&sys.db.pool)
                .await
                .unwrap();
        let entered: Vec<Value> = rows.iter().filter(|(t, _)| t == "CallEnteredQueue").map(|(_, d)| d.clone()).collect();
        (entered.len() == 2 && rows.iter().filter(|(t, _)| t == "CallOffered").count() == 2).then_some(entered)
    })
    .await;
    let mut names: Vec<&str> = entered
        .iter()
        .map(|d| d["caller"]["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["Jane Caller", "ab"]);
    for agent in [&bob, &dave] {
        sys.view_when(agent, "ringing", |v| v["status"] == "ringing")
            .await;
    }

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
        metrics.contains("cc_queue_router_parked_total 1"),
        "{metrics}"
    );
    let parked: i64 = sqlx::query_scalar("select count(*) from qr_parked")
        .fetch_one(&sys.db.pool)
        .await
        .unwrap();
    assert_eq!(parked, 1, "parked once, not retried");
}

#[tokio::test]
async fn a_stored_event_that_does_not_decode_is_counted_and_skipped() {
    let sys = System::start().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    // An event of a type this build does not know, in an agent stream (as a newer version of
    // the product could have written it; not the stream of an agent the test logs in, whose
    // session would then be at another version than agent-session's snapshot).
    let store = cc_eventstore::EventStore::new(sys.db.pool.clone());
    let stream = cc_eventstore::StreamName::new(&t.name, "agent", "1099").unwrap();
    let e = cc_eventstore::NewEvent::new(
        "AgentTeleported",
        1,
        json!({"agent": "1099"}),
        cc_eventstore::Metadata::new(&t.name, "test"),
    );
    store
        .append(&stream, cc_eventstore::ExpectedVersion::Any, &[e])
        .await
        .unwrap();

    let line = r#"cc_events_undecodable_total{category="agent",event_type="AgentTeleported"}"#;
    let metrics = cc_testkit::eventually(
        "the undecodable event counted",
        Duration::from_secs(15),
        || async {
            let m = sys._app.metrics(&sys.http).await?;
            m.contains(line).then_some(m)
        },
    )
    .await;
    assert!(
        metrics.contains("# HELP cc_events_undecodable"),
        "{metrics}"
    );
    // Skipped, not fatal: the readers go on (the agent logs in and is Idle).
    t.idle_agent("1003").await;
}
