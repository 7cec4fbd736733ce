//! Poison events: a stored event a consumer cannot apply (it does not decode, or its rows do
//! not fit the read model's tables) is parked by that consumer (a row in `bus_parked`, an error
//! log line, `cc_events_parked_total`), and a PBX fact it cannot read is skipped and counted
//! (`cc_messages_unreadable_total`); every consumer goes on with the next one.
//! (The relay, which never decodes, has its test in libs/bus.)

use std::time::Duration;

use cc_testkit::eventually;
use reqwest::Method;
use serde_json::{json, Value};

use crate::system::System;

/// Appends an event as a newer (or broken) build could have written it: the store's append
/// takes any type and data.
async fn append_raw(sys: &System, category: &str, id: &str, event_type: &str, data: Value) -> i64 {
    let store = cc_eventstore::EventStore::new(sys.db.pool.clone());
    let stream = cc_eventstore::StreamName::new("demo", category, id).unwrap();
    let e = cc_eventstore::NewEvent::new(
        event_type,
        1,
        data,
        cc_eventstore::Metadata::new("demo", "test"),
    );
    let r = store
        .append(&stream, cc_eventstore::ExpectedVersion::Any, &[e])
        .await
        .unwrap();
    r.positions[0]
}

/// Waits until `consumer` parked the event at `position` for `reason`; returns its error.
async fn parked(sys: &System, consumer: &str, position: i64, reason: &str) -> String {
    let what = format!("{consumer} parks the event at {position} ({reason})");
    eventually(&what, Duration::from_secs(30), || async {
        sqlx::query_scalar::<_, String>(
            "select error from bus_parked where consumer = $1 and position = $2 and reason = $3",
        )
        .bind(consumer)
        .bind(position)
        .bind(reason)
        .fetch_optional(&sys.db.pool)
        .await
        .unwrap()
    })
    .await
}

/// Waits until the metrics show `line` (a sample with its value).
async fn metric(sys: &System, line: &str) {
    eventually(line, Duration::from_secs(15), || async {
        let m = sys
            .http
            .get(sys._app.admin("/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        m.contains(line).then_some(())
    })
    .await
}

#[tokio::test]
async fn the_router_and_call_control_park_call_events_they_cannot_decode_and_route_and_connect_the_next_call(
) {
    let sys = System::start().await;
    let bob = sys.idle_agent("1002").await;
    // A known type whose data fits nothing, and a type no build knows, in call streams.
    let misfit = append_raw(
        &sys,
        "call",
        "poison-1",
        "CallEnteredQueue",
        json!({"nonsense": true}),
    )
    .await;
    let unknown = append_raw(
        &sys,
        "call",
        "poison-2",
        "CallTeleported",
        json!({"call": "poison-2"}),
    )
    .await;
    for consumer in ["queue-router", "call-control"] {
        parked(&sys, consumer, misfit, "undecodable").await;
        parked(&sys, consumer, unknown, "undecodable").await;
    }

    // The next caller is routed (router), answered and connected, and hung up from the portal
    // (call control knows the call).
    sys.place_caller("500", "5551234", "After").await;
    sys.view_when(&bob, "Ringing", |v| v["status"] == "ringing")
        .await;
    sys.phone("1002", "answer").await;
    sys.view_when(&bob, "Connected", |v| v["status"] == "connected")
        .await;
    bob.post("/api/call/hangup", json!({})).await.ok();
    sys.view_when(&bob, "the call ended", |v| v["status"] != "connected")
        .await;

    metric(
        &sys,
        r#"cc_events_parked_total{consumer="queue-router",reason="undecodable"} 2"#,
    )
    .await;
    metric(
        &sys,
        r#"cc_events_parked_total{consumer="call-control",reason="undecodable"} 2"#,
    )
    .await;
}

#[tokio::test]
async fn the_projections_park_what_does_not_decode_or_does_not_fit_their_tables_and_go_on() {
    let sys = System::start().await;
    let admin = sys.sign_in("admin", "demo-admin").await;
    let pool = &sys.db.pool;
    eventually("the reporting tables", Duration::from_secs(30), || async {
        sqlx::query_scalar::<_, bool>("select to_regclass('reporting.queues') is not null")
            .fetch_one(pool)
            .await
            .unwrap()
            .then_some(())
    })
    .await;
    // A rule the read models' tables hold that an event breaks: its rows cannot be written.
    for table in ["rm_queue_names", "reporting.queues"] {
        sqlx::raw_sql(&format!(
            "alter table {table} add constraint poison_test check (name <> 'Refused')"
        ))
        .execute(pool)
        .await
        .unwrap();
    }
    let undecodable = append_raw(
        &sys,
        "agent",
        "1099",
        "AgentPaused",
        json!({"nonsense": true}),
    )
    .await;
    admin
        .post(
            "/api/admin/queues",
            json!({"queue": "598", "name": "Refused"}),
        )
        .await
        .ok();
    let refused: i64 = sqlx::query_scalar(
        "select position from es_events where stream = 'demo/queue-598' and event_type = 'QueueCreated'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    // What comes after is applied: a queue, and an agent's login.
    admin
        .post(
            "/api/admin/queues",
            json!({"queue": "599", "name": "Night"}),
        )
        .await
        .ok();
    let alice = sys.idle_agent("1001").await;

    for consumer in ["portal-projection", "reporting-projection"] {
        let error = parked(&sys, consumer, undecodable, "undecodable").await;
        assert!(
            error.contains("nonsense") || error.contains("missing field"),
            "{error}"
        );
        let error = parked(&sys, consumer, refused, "refused").await;
        assert!(
            error.contains("poison_test"),
            "names the constraint: {error}"
        );
    }
    let names: Vec<String> =
        sqlx::query_scalar("select name from rm_queue_names where queue in ('598', '599')")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(names, ["Night"]);
    eventually("queue 599 reported", Duration::from_secs(15), || async {
        sqlx::query_scalar::<_, String>("select name from reporting.queues where queue = '599'")
            .fetch_optional(pool)
            .await
            .unwrap()
    })
    .await;
    assert_eq!(alice.get("/api/me").await.ok()["status"], "idle");
    for (consumer, reason) in [
        ("portal-projection", "undecodable"),
        ("portal-projection", "refused"),
        ("reporting-projection", "undecodable"),
        ("reporting-projection", "refused"),
    ] {
        // Once each (the refused queue's later events may be refused too: counted as such).
        let count = if reason == "undecodable" { " 1" } else { " " };
        metric(
            &sys,
            &format!(r#"cc_events_parked_total{{consumer="{consumer}",reason="{reason}"}}{count}"#),
        )
        .await;
    }
}

#[tokio::test]
async fn pbx_facts_no_consumer_can_read_and_directory_events_that_do_not_decode_are_skipped_counted_and_the_next_ones_applied(
) {
    let sys = System::start().await;
    let admin = sys.sign_in("admin", "demo-admin").await;
    let alice = sys.idle_agent("1001").await;
    // The agent-session followers: a queue event that does not decode (parked), and PBX facts
    // that no consumer can read, for the device follower and the router's and call control's
    // channel consumers.
    let undecodable = append_raw(
        &sys,
        "queue",
        "500",
        "AgentUnassignedFromQueue",
        json!({"nonsense": true}),
    )
    .await;
    parked(&sys, "agent-session:accounts", undecodable, "undecodable").await;
    let nats = sys.operator_nats().await.unwrap();
    let js = async_nats::jetstream::new(nats);
    let p = &sys.prefix;
    for subject in [
        format!("{p}.pbx.evt.demo.device.1001.DeviceTeleported"),
        format!("{p}.pbx.evt.demo.channel.poison.ChannelTeleported"),
    ] {
        js.publish(subject, "{\"nonsense\": true}".into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    for consumer in [
        "agent-session-devices",
        "queue-router-channels",
        "call-control-channels",
    ] {
        metric(
            &sys,
            &format!(r#"cc_messages_unreadable_total{{consumer="{consumer}"}} 1"#),
        )
        .await;
    }

    // The next facts and events are applied: the device goes offline and the agent is told;
    // an unassignment takes the agent out of the queue.
    sys.set_registered("1001", false).await;
    sys.view_when(&alice, "device offline", |v| v["device_online"] == false)
        .await;
    sys.set_registered("1001", true).await;
    admin
        .call(Method::DELETE, "/api/admin/queues/500/agents/1001", None)
        .await
        .ok();
    sys.view_when(&alice, "out of queue 500", |v| {
        v["queues"]
            .as_array()
            .is_some_and(|q| q.iter().all(|q| q["queue"] != "500"))
    })
    .await;
    metric(
        &sys,
        r#"cc_events_parked_total{consumer="agent-session:accounts",reason="undecodable"} 1"#,
    )
    .await;
}
