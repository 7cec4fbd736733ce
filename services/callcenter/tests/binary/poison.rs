//! Poison events: a stored event a consumer cannot apply (it does not decode, or its rows do
//! not fit the read model's tables) is parked by that consumer (a row in `bus_parked`, an error
//! log line, `cc_events_parked_total`), and a PBX fact it cannot read is skipped and counted
//! (`cc_messages_unreadable_total`); every consumer goes on with the next one. An operator
//! lists and clears the parked events with `callcenter parked`.
//! (The relay, which never decodes, has its test in libs/bus.)

use std::time::Duration;

use cc_testkit::eventually;
use reqwest::Method;
use serde_json::{json, Value};

use crate::process::Callcenter;
use crate::system::System;
use crate::tenant::{Tenant, TenantSpec};

/// Appends an event as a newer (or broken) build could have written it: the store's append
/// takes any type and data.
async fn append_raw(t: &Tenant, category: &str, id: &str, event_type: &str, data: Value) -> i64 {
    let store = cc_eventstore::EventStore::new(t.pool.clone());
    let stream = cc_eventstore::StreamName::new(&t.name, category, id).unwrap();
    let e = cc_eventstore::NewEvent::new(
        event_type,
        1,
        data,
        cc_eventstore::Metadata::new(&t.name, "test"),
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
        let m = sys._app.metrics(&sys.http).await?;
        m.contains(line).then_some(())
    })
    .await
}

#[tokio::test]
async fn the_router_and_call_control_park_call_events_they_cannot_decode_and_route_and_connect_the_next_call(
) {
    let sys = System::start().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    let bob = t.idle_agent("1002").await;
    // A known type whose data fits nothing, and a type no build knows, in call streams.
    let misfit = append_raw(
        &t,
        "call",
        "poison-1",
        "CallEnteredQueue",
        json!({"nonsense": true}),
    )
    .await;
    let unknown = append_raw(
        &t,
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
    t.place_caller("500", "5551234", "After").await;
    sys.view_when(&bob, "Ringing", |v| v["status"] == "ringing")
        .await;
    t.phone("1002", "answer").await;
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
    let t = sys.tenant(TenantSpec::call_center()).await;
    let admin = t.admin().await;
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
        &t,
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
        "select position from es_events where stream = $1 and event_type = 'QueueCreated'",
    )
    .bind(t.stream("queue-598"))
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
    let alice = t.idle_agent("1001").await;

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
    let t = sys.tenant(TenantSpec::call_center()).await;
    let admin = t.admin().await;
    let alice = t.idle_agent("1001").await;
    // The agent-session followers: a queue event that does not decode (parked), and PBX facts
    // that no consumer can read, for the device follower and the router's and call control's
    // channel consumers.
    let undecodable = append_raw(
        &t,
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
        format!("{p}.pbx.evt.{}.device.1001.DeviceTeleported", t.name),
        format!("{p}.pbx.evt.{}.channel.poison.ChannelTeleported", t.name),
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
    t.set_registered("1001", false).await;
    sys.view_when(&alice, "device offline", |v| v["device_online"] == false)
        .await;
    t.set_registered("1001", true).await;
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

/// `callcenter parked ...` against the system's database: (success, stdout, stderr).
fn parked_cli(sys: &System, args: &[&str]) -> (bool, String, String) {
    let args: Vec<&str> = std::iter::once("parked")
        .chain(args.iter().copied())
        .collect();
    let out = Callcenter::output(&sys.db.url, "nats://unused", &args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The parked rows of a consumer, as (position, tenant).
async fn parked_rows(sys: &System, consumer: &str) -> Vec<(i64, String)> {
    sqlx::query_as("select position, tenant from bus_parked where consumer = $1 order by position")
        .bind(consumer)
        .fetch_all(&sys.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_operator_lists_parked_events_by_consumer_and_tenant_and_clears_one_or_all_of_a_consumers(
) {
    let sys = System::start().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    let other = sys.tenant(TenantSpec::empty().prefix("globex")).await;
    // Parked by every consumer of call events: the router, call control, the projections.
    let misfit = append_raw(
        &t,
        "call",
        "poison-1",
        "CallEnteredQueue",
        json!({"nonsense": true}),
    )
    .await;
    let unknown = append_raw(
        &other,
        "call",
        "poison-2",
        "CallTeleported",
        json!({"call": "poison-2"}),
    )
    .await;
    for consumer in [
        "queue-router",
        "call-control",
        "portal-projection",
        "reporting-projection",
    ] {
        parked(&sys, consumer, misfit, "undecodable").await;
        parked(&sys, consumer, unknown, "undecodable").await;
    }

    // A table, oldest position first, with a consumer's and a tenant's filter.
    let (ok, table, err) = parked_cli(&sys, &["list", "--consumer", "queue-router"]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "a header and two rows: {table}");
    for h in [
        "POSITION", "CONSUMER", "TENANT", "STREAM", "TYPE", "REASON", "ERROR",
    ] {
        assert!(lines[0].contains(h), "{h} in {table}");
    }
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        (row[0], row[1], row[2], row[5], row[6]),
        (
            misfit.to_string().as_str(),
            "queue-router",
            t.name.as_str(),
            "CallEnteredQueue",
            "undecodable"
        ),
        "{table}"
    );
    assert!(lines[2].starts_with(&unknown.to_string()), "{table}");
    let (ok, table, err) = parked_cli(
        &sys,
        &[
            "list",
            "--consumer",
            "queue-router",
            "--tenant",
            &other.name,
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(table.lines().count(), 2, "{table}");
    assert!(table.contains("CallTeleported") && !table.contains("CallEnteredQueue"));
    let (ok, all, _) = parked_cli(&sys, &["list"]);
    assert!(
        ok && all.contains("call-control") && all.contains("queue-router"),
        "{all}"
    );
    let (ok, none, _) = parked_cli(&sys, &["list", "--tenant", "initech"]);
    assert!(ok && none.trim() == "no parked events", "{none}");

    // JSON: every field, the whole error.
    let (ok, json, err) = parked_cli(&sys, &["list", "--json", "--consumer", "call-control"]);
    assert!(ok, "{err}");
    let rows: Value = serde_json::from_str(&json).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{json}");
    assert_eq!(
        (
            rows[0]["position"].as_i64(),
            rows[0]["tenant"].as_str(),
            rows[0]["stream"].as_str(),
            rows[0]["event_type"].as_str(),
            rows[0]["reason"].as_str()
        ),
        (
            Some(misfit),
            Some(t.name.as_str()),
            Some(t.stream("call-poison-1").as_str()),
            Some("CallEnteredQueue"),
            Some("undecodable")
        ),
        "{json}"
    );
    let error: String = sqlx::query_scalar(
        "select error from bus_parked where consumer = 'call-control' and position = $1",
    )
    .bind(misfit)
    .fetch_one(&sys.db.pool)
    .await
    .unwrap();
    assert_eq!(rows[0]["error"], error.as_str());
    assert!(rows[0]["parked_at"].is_string() && rows[0]["event_id"].is_string());

    // Clearing one event of one consumer, then all of another's; the rest stays.
    let others_before: i64 = sqlx::query_scalar(
        "select count(*) from bus_parked where consumer not in ('queue-router', 'call-control')",
    )
    .fetch_one(&sys.db.pool)
    .await
    .unwrap();
    let position = misfit.to_string();
    let (ok, said, err) = parked_cli(
        &sys,
        &[
            "clear",
            "--consumer",
            "queue-router",
            "--position",
            &position,
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(said.trim(), "cleared 1 parked event of queue-router");
    assert_eq!(
        parked_rows(&sys, "queue-router").await,
        [(unknown, other.name.clone())]
    );
    let (ok, _, err) = parked_cli(
        &sys,
        &[
            "clear",
            "--consumer",
            "queue-router",
            "--position",
            &position,
        ],
    );
    assert!(
        !ok && err.contains(&format!("no event parked at position {misfit}")),
        "{err}"
    );
    let (ok, said, err) = parked_cli(&sys, &["clear", "--consumer", "call-control", "--all"]);
    assert!(ok, "{err}");
    assert_eq!(said.trim(), "cleared 2 parked events of call-control");
    assert!(parked_rows(&sys, "call-control").await.is_empty());
    assert_eq!(parked_rows(&sys, "queue-router").await.len(), 1);
    let others_after: i64 = sqlx::query_scalar(
        "select count(*) from bus_parked where consumer not in ('queue-router', 'call-control')",
    )
    .fetch_one(&sys.db.pool)
    .await
    .unwrap();
    assert_eq!(others_after, others_before);

    // Bad input: refused, saying why, and nothing cleared.
    for (args, why) in [
        (
            &["clear", "--consumer", "queue-routr", "--all"][..],
            "consumers with parked events: portal-projection, queue-router, reporting-projection",
        ),
        (&["clear", "--consumer", "queue-router"][..], "--position"),
        (
            &[
                "clear",
                "--consumer",
                "queue-router",
                "--all",
                "--position",
                "3",
            ][..],
            "cannot be used with",
        ),
        (
            &["clear", "--consumer", "queue-router", "--position", "0"][..],
            "a position is 1 or more",
        ),
        (
            &["clear", "--consumer", "queue-router", "--position", "x"][..],
            "invalid value",
        ),
        (&["clear", "--all"][..], "--consumer"),
        (&["list", "--tenant", "Not A Slug"][..], "a tenant's slug"),
    ] {
        let (ok, _, err) = parked_cli(&sys, args);
        assert!(!ok && err.contains(why), "{args:?}: {err}");
    }
    assert_eq!(parked_rows(&sys, "queue-router").await.len(), 1);

    // A database the product never migrated: says so.
    let empty = cc_testkit::TestDb::new().await;
    let out = Callcenter::output(&empty.url, "nats://unused", &["parked", "list"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("callcenter migrate"),
        "{err}"
    );
}
