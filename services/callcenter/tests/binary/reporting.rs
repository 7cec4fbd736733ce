//! The reporting read models: a realistic history (logins, pauses, answered, rejected and
//! abandoned calls, all three transfers, a restart of the services) is projected live; then
//! `callcenter rebuild` replays the whole store into fresh tables and swaps them in, and the
//! result equals the live tables row for row. The analysts' views answer from them.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::process::Callcenter;
use crate::system::System;
use crate::tenant::{Tenant, TenantSpec};

/// Every row of every reporting table, as text, in key order.
async fn snapshot(sys: &System) -> Vec<String> {
    let mut out = vec![];
    for (table, key) in [
        ("tenants", "tenant"),
        ("queues", "tenant, queue"),
        ("calls", "tenant, call"),
        ("call_segments", "tenant, call, seq"),
        ("agent_states", "tenant, agent, seq"),
        ("agent_logins", "tenant, login_id"),
    ] {
        let rows: Vec<String> = sqlx::query_scalar(&format!(
            "select t::text from reporting.{table} t order by {key}"
        ))
        .fetch_all(&sys.db.pool)
        .await
        .unwrap();
        out.extend(rows.into_iter().map(|r| format!("{table} {r}")));
    }
    out
}

/// The portal read model: every agent's view and the call details, in key order.
async fn portal_snapshot(sys: &System) -> Vec<String> {
    let mut out: Vec<String> = sqlx::query_scalar("select tenant || ' ' || agent || ' ' || version || ' ' || view::text from rm_agents order by tenant, agent").fetch_all(&sys.db.pool).await.unwrap();
    out.extend(
        sqlx::query_scalar::<_, String>("select t::text from rm_call_info t order by tenant, call")
            .fetch_all(&sys.db.pool)
            .await
            .unwrap(),
    );
    out
}

/// Waits until the portal projection has projected every stored event.
async fn portal_caught_up(sys: &System) {
    cc_testkit::eventually(
        "the portal projection caught up",
        Duration::from_secs(30),
        || async {
            let head: Option<(i64, i64)> = sqlx::query_as(
                "select xid, position from es_events order by xid desc, position desc limit 1",
            )
            .fetch_optional(&sys.db.pool)
            .await
            .unwrap();
            // Each partition's row with partitions (`portal/p3`), `portal` without.
            let at: Vec<(i64, i64)> = sqlx::query_as(
                "select xid, position from rm_checkpoints where name ~ '^portal(/p[0-9]+)?$'",
            )
            .fetch_all(&sys.db.pool)
            .await
            .unwrap_or_default();
            (head.is_some() && !at.is_empty() && at.iter().all(|a| Some(*a) == head)).then_some(())
        },
    )
    .await;
}

async fn event_count(sys: &System) -> i64 {
    sqlx::query_scalar("select count(*) from es_events")
        .fetch_one(&sys.db.pool)
        .await
        .unwrap()
}

/// Waits until no event arrived for 3 s and everything is projected; returns the event count.
async fn quiet(sys: &System) -> i64 {
    cc_testkit::eventually("no new events for 3 s", Duration::from_secs(60), || async {
        let before = event_count(sys).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        (event_count(sys).await == before).then_some(())
    })
    .await;
    caught_up(sys).await;
    event_count(sys).await
}

/// Waits until the reporting projection has projected every stored event.
async fn caught_up(sys: &System) {
    cc_testkit::eventually(
        "the reporting projection caught up",
        Duration::from_secs(30),
        || async {
            let head: Option<(i64, i64)> = sqlx::query_as(
                "select xid, position from es_events order by xid desc, position desc limit 1",
            )
            .fetch_optional(&sys.db.pool)
            .await
            .unwrap();
            // One row per partition.
            let at: Vec<(i64, i64)> =
                sqlx::query_as("select xid, position from reporting.checkpoint")
                    .fetch_all(&sys.db.pool)
                    .await
                    .unwrap_or_default();
            (head.is_some() && !at.is_empty() && at.iter().all(|a| Some(*a) == head)).then_some(())
        },
    )
    .await;
}

/// Presses a phone's button once the simulator has the device's call.
async fn press(t: &Tenant, device: &str, action: &str) {
    cc_testkit::eventually("the phone rings", Duration::from_secs(10), || async {
        let (status, _) = t
            .pbx_post(&format!("/devices/{device}/{action}"), json!({}))
            .await;
        (status == 204).then_some(())
    })
    .await;
}

async fn ring_and_answer(t: &Tenant, bob: &crate::system::Client) {
    t.view_when(bob, "ringing", |v| v["status"] == "ringing")
        .await;
    press(t, "1002", "answer").await;
    t.view_when(bob, "connected", |v| v["status"] == "connected")
        .await;
}

#[tokio::test]
async fn a_rebuilt_reporting_model_equals_the_live_one_and_the_views_answer() {
    let mut sys = System::start_split().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    let admin = t.admin().await;
    for q in ["500", "501"] {
        let settings = json!({"strategy": "longest_idle", "ring_timeout_s": 20, "wrap_up_s": 1, "reject_delay_s": 1, "service_level_s": 30});
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
    bob.post("/api/session/pause", json!({"reason": "Lunch"}))
        .await
        .ok();
    sys.view_when(&bob, "Bob paused", |v| v["status"] == "paused")
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    bob.post("/api/session/unpause", json!({})).await.ok();
    sys.view_when(&bob, "Bob idle", |v| v["status"] == "idle")
        .await;

    // 1. Rejected once, then answered and hung up by Bob.
    t.place_caller("500", "5550001", "One").await;
    sys.view_when(&bob, "ringing", |v| v["status"] == "ringing")
        .await;
    press(&t, "1002", "reject").await;
    ring_and_answer(&t, &bob).await;
    bob.post("/api/call/hold", json!({"held": true})).await.ok();
    sys.view_when(&bob, "on hold", |v| v["status"] == "on_hold")
        .await;
    bob.post("/api/call/hold", json!({"held": false}))
        .await
        .ok();
    bob.post("/api/call/hangup", json!({})).await.ok();
    sys.view_when(&bob, "Bob idle", |v| v["status"] == "idle")
        .await;

    // 2. Abandoned while waiting (Bob paused, nobody else in 500).
    bob.post("/api/session/pause", json!({"reason": "Break"}))
        .await
        .ok();
    sys.view_when(&bob, "Bob paused", |v| v["status"] == "paused")
        .await;
    let gone = t.place_caller("500", "5550002", "Two").await;
    let sup = t.supervisor().await;
    assert_eq!(sup.get("/api/whoami").await.ok()["role"], "supervisor");
    let q = cc_testkit::eventually(
        "a caller waiting in 500",
        Duration::from_secs(10),
        || async {
            let q = sup.get("/api/supervisor/queues").await.body;
            (q[0]["waiting"] == 1).then_some(q)
        },
    )
    .await;
    assert_eq!(
        (q[0]["queue"].as_str(), q[1]["waiting"].as_i64()),
        (Some("500"), Some(0))
    );
    assert!(q[0]["longest_waiting_since"].is_string());
    let r = sys
        .http
        .post(t.pbx_url(&format!("/channels/{gone}/hangup")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    bob.post("/api/session/unpause", json!({})).await.ok();
    sys.view_when(&bob, "Bob idle", |v| v["status"] == "idle")
        .await;

    // 3. Attended transfer to Carol, completed; the caller hangs up on Carol.
    let caller = t.place_caller("500", "5550003", "Three").await;
    ring_and_answer(&t, &bob).await;
    bob.post(
        "/api/call/transfer",
        json!({"method": "attended", "target": {"agent": "1003"}}),
    )
    .await
    .ok();
    sys.view_when(&carol, "Carol ringing", |v| v["status"] == "ringing")
        .await;
    press(&t, "1003", "answer").await;
    sys.view_when(&bob, "consulting", |v| {
        v["current_call"]["transfer"]["state"] == "answered"
    })
    .await;
    bob.post("/api/call/transfer/complete", json!({}))
        .await
        .ok();
    sys.view_when(&carol, "Carol has the call", |v| {
        v["status"] == "connected" && v["current_call"]["transfer"].is_null()
    })
    .await;
    let r = sys
        .http
        .post(t.pbx_url(&format!("/channels/{caller}/hangup")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    sys.view_when(&bob, "Bob idle", |v| v["status"] == "idle")
        .await;
    sys.view_when(&carol, "Carol idle", |v| v["status"] == "idle")
        .await;

    // The services restart in the middle of the history.
    sys.restart_services().await;
    cc_testkit::eventually("the portal back", Duration::from_secs(60), || async {
        bob.get("/api/me").await.status.is_success().then_some(())
    })
    .await;

    // 4. Blind transfer to an extension, the target hangs up after talking.
    t.place_caller("500", "5550004", "Four").await;
    ring_and_answer(&t, &bob).await;
    bob.post(
        "/api/call/transfer",
        json!({"method": "blind", "target": {"extension": "1005"}}),
    )
    .await
    .ok();
    cc_testkit::eventually("1005 rings", Duration::from_secs(10), || async {
        let chans: Vec<Value> = t.channels().await;
        chans.iter().any(|c| c["device"] == "1005").then_some(())
    })
    .await;
    t.phone("1005", "answer").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    t.phone("1005", "hangup").await;
    sys.view_when(&bob, "Bob idle", |v| v["status"] == "idle")
        .await;

    // 5. Live transfer to an outside number, completed; the caller hangs up.
    let caller = t.place_caller("500", "5550005", "Five").await;
    ring_and_answer(&t, &bob).await;
    bob.post(
        "/api/call/transfer",
        json!({"method": "live", "target": {"number": "5559999"}}),
    )
    .await
    .ok();
    sys.view_when(&bob, "conference", |v| {
        v["current_call"]["transfer"]["state"] == "conference"
    })
    .await;
    bob.post("/api/call/transfer/complete", json!({}))
        .await
        .ok();
    sys.view_when(&bob, "Bob idle", |v| v["status"] == "idle")
        .await;
    let r = sys
        .http
        .post(t.pbx_url(&format!("/channels/{caller}/hangup")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    carol.call(Method::DELETE, "/api/session", None).await.ok();

    let events = quiet(&sys).await;
    portal_caught_up(&sys).await;
    let live = snapshot(&sys).await;
    let live_portal = portal_snapshot(&sys).await;
    let outcomes: Vec<(String, String)> =
        sqlx::query_as("select caller_name, outcome from reporting.calls order by entered_at")
            .fetch_all(&sys.db.pool)
            .await
            .unwrap();
    let outcomes: Vec<(&str, &str)> = outcomes
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("One", "completed"),
            ("Two", "abandoned"),
            ("Three", "completed"),
            ("Four", "transferred_out"),
            ("Five", "transferred_out")
        ]
    );

    // Rebuild with the services running; the swapped-in tables equal the live ones.
    let out = Callcenter::output(
        &sys.db.url,
        &sys.nats.url(),
        &["rebuild", "--projection", "all"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("swapped in"), "{stderr}");
    let generation: i64 = sqlx::query_scalar("select generation from reporting.checkpoint")
        .fetch_one(&sys.db.pool)
        .await
        .unwrap();
    assert_eq!(generation, 2);
    assert_eq!(
        event_count(&sys).await,
        events,
        "nothing happened between the two snapshots"
    );
    let rebuilt = snapshot(&sys).await;
    assert_eq!(rebuilt.len(), live.len());
    for (a, b) in live.iter().zip(&rebuilt) {
        assert_eq!(a, b);
    }
    let rebuilt_portal = portal_snapshot(&sys).await;
    assert_eq!(rebuilt_portal.len(), live_portal.len());
    for (a, b) in live_portal.iter().zip(&rebuilt_portal) {
        assert_eq!(a, b);
    }
    assert!(stderr.contains("portal: rebuilt from"), "{stderr}");

    // The live projection goes on after the swap, on the new tables.
    t.place_caller("500", "5550006", "Six").await;
    ring_and_answer(&t, &bob).await;
    bob.post("/api/call/hangup", json!({})).await.ok();
    caught_up(&sys).await;
    let six: String =
        sqlx::query_scalar("select outcome from reporting.calls where caller_name = 'Six'")
            .fetch_one(&sys.db.pool)
            .await
            .unwrap();
    assert_eq!(six, "completed");

    // The analysts' views.
    let (completed, missed, rejected, pause_ms): (i64, i64, i64, i64) = sqlx::query_as(
        "select completed, missed, rejected, pause_ms from reporting.agent_daily where tenant = $1 and agent = '1002'",
    )
    .bind(&t.name)
    .fetch_one(&sys.db.pool)
    .await
    .unwrap();
    assert_eq!(
        (completed, rejected),
        (5, 1),
        "Bob: five calls of his own (three transferred on), one reject"
    );
    assert!(missed >= 0 && pause_ms >= 300);
    let lunch: i64 = sqlx::query_scalar("select pause_ms from reporting.agent_pause_daily where agent = '1002' and reason = 'Lunch'").fetch_one(&sys.db.pool).await.unwrap();
    assert!(lunch >= 300, "{lunch}");
    let (offered, answered, abandoned): (i64, i64, i64) =
        sqlx::query_as("select sum(offered)::bigint, sum(answered)::bigint, sum(abandoned)::bigint from reporting.queue_intervals where queue = '500'").fetch_one(&sys.db.pool).await.unwrap();
    assert_eq!((offered, answered, abandoned), (6, 5, 1));
    // The same figures over HTTP, as JSON and CSV, with filters.
    assert_eq!(
        sup.get("/api/supervisor/queues").await.ok()[0]["waiting"],
        0
    );
    let calls = sup.get("/api/reports/calls?agent=1003").await.ok();
    assert_eq!(
        calls
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["caller_name"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["Three"]
    );
    let r = sup
        .http
        .get(format!(
            "{}/api/reports/queues?queue=500&format=csv",
            sup.base
        ))
        .header("X-Tenant", &t.name)
        .bearer_auth(sup.token.as_ref().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "text/csv; charset=utf-8");
    let csv = r.text().await.unwrap();
    assert!(
        csv.starts_with("tenant,queue,interval_start,offered,answered,abandoned,"),
        "{csv}"
    );
    let offered_csv: i64 = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(3).unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(offered_csv, 6);
    let today: String = sqlx::query_scalar("select (now() at time zone 'UTC')::date::text")
        .fetch_one(&sys.db.pool)
        .await
        .unwrap();
    let pauses = sup
        .get(&format!(
            "/api/reports/pauses?from={today}&to={today}&agent=1002"
        ))
        .await
        .ok();
    assert!(
        pauses
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["reason"] == "Lunch"),
        "{pauses}"
    );
    assert_eq!(
        sup.get("/api/reports/agents?from=yesterday")
            .await
            .refused(400, "invalid_field")["field"],
        "from"
    );
    assert_eq!(
        sup.get("/api/reports/agents?queue=500")
            .await
            .refused(400, "invalid_field")["field"],
        "queue"
    );
    bob.get("/api/reports/calls")
        .await
        .refused(403, "forbidden");

    // Every event published during this history, for the schema check of scripts/check-contracts.
    caught_up(&sys).await;
    let stored: i64 = sqlx::query_scalar("select count(*) from es_events")
        .fetch_one(&sys.db.pool)
        .await
        .unwrap();
    let published =
        cc_testkit::eventually("every event relayed", Duration::from_secs(20), || async {
            let n = sys
                .published_types(&format!("{}.events.>", sys.prefix))
                .await
                .len() as i64;
            (n == stored).then_some(n)
        })
        .await;
    assert_eq!(
        sys.record_published_events("reporting").await as i64,
        published
    );

    // Carol is credited with her part of call Three only.
    let carol_spans: Vec<(String, i64)> = sqlx::query_as(
        "select outcome, duration_ms from reporting.call_segments where kind = 'connected' and agent = '1003'",
    )
    .fetch_all(&sys.db.pool)
    .await
    .unwrap();
    assert_eq!(carol_spans.len(), 1);
    assert_eq!(carol_spans[0].0, "caller");
    // A rebuild while calls come and go: afterwards the live projection goes on on the new
    // tables, and once traffic stops they equal yet another rebuild, row for row.
    let (status, body) = t
        .pbx_post(
            "/traffic",
            json!({"queues": ["500"], "calls_per_second": 4.0, "duration_s": 6, "patience_ms": 3000,
                   "phones": {"mode": "agent", "after_ms": 100, "probability": 0.8, "talk_ms": 500}}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let out = Callcenter::output(&sys.db.url, &sys.nats.url(), &["rebuild"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tokio::time::sleep(Duration::from_secs(8)).await;
    cc_testkit::eventually("every call over", Duration::from_secs(60), || async {
        let open: i64 =
            sqlx::query_scalar("select count(*) from reporting.calls where ended_at is null")
                .fetch_one(&sys.db.pool)
                .await
                .ok()?;
        caught_up(&sys).await;
        (open == 0).then_some(())
    })
    .await;
    let events = quiet(&sys).await;
    let live = snapshot(&sys).await;
    let out = Callcenter::output(&sys.db.url, &sys.nats.url(), &["rebuild"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rebuilt = snapshot(&sys).await;
    assert_eq!(
        event_count(&sys).await,
        events,
        "nothing happened between the two snapshots"
    );
    assert_eq!(rebuilt.len(), live.len());
    for (a, b) in live.iter().zip(&rebuilt) {
        assert_eq!(a, b);
    }
    let generation: i64 = sqlx::query_scalar("select generation from reporting.checkpoint")
        .fetch_one(&sys.db.pool)
        .await
        .unwrap();
    assert_eq!(generation, 4, "two more rebuilds");
}

/// With partitions (`CC_PARTITIONS=4`) each partition's portal and reporting projection keeps
/// its tenants' rows and a checkpoint of its own; the quiet partitions' checkpoints reach the
/// store's head too (so the portal's read-your-writes never waits on them); a rebuild hands
/// every partition's leader on from where it stopped, and they go on.
#[tokio::test]
async fn partitioned_projections_keep_every_tenants_rows_and_go_on_after_a_rebuild() {
    let sys = System::start_with_env(&[("CC_PARTITIONS", "4")]).await;
    // Two tenants in two partitions.
    let first = sys.tenant(TenantSpec::call_center()).await;
    let p = |t: &Tenant| cc_core::partition::of(&t.name, 4);
    let mut second = sys.tenant(TenantSpec::call_center()).await;
    while p(&second) == p(&first) {
        second = sys.tenant(TenantSpec::call_center()).await;
    }
    for t in [&first, &second] {
        let bob = t.agent("1002").await;
        bob.post("/api/session", json!({})).await.ok();
        bob.post("/api/session/pause", json!({"reason": "Lunch"}))
            .await
            .ok();
        // Read-your-writes: the view shows the pause as soon as it was answered.
        assert_eq!(
            bob.get("/api/me").await.ok()["status"],
            "paused",
            "{}",
            t.name
        );
    }
    quiet(&sys).await;
    portal_caught_up(&sys).await;
    let names: Vec<String> = sqlx::query_scalar(
        "select name from rm_checkpoints where name like 'portal%' order by name",
    )
    .fetch_all(&sys.db.pool)
    .await
    .unwrap();
    // Every partition writes a row of its own (the quiet ones as they read past the others'
    // events); no row of the whole store.
    assert_eq!(names, ["portal/p0", "portal/p1", "portal/p2", "portal/p3"]);
    let rows: Vec<i32> = sqlx::query_scalar("select id from reporting.checkpoint order by id")
        .fetch_all(&sys.db.pool)
        .await
        .unwrap();
    assert_eq!(rows, vec![1, 2, 3, 4], "a reporting row per partition");
    let live = snapshot(&sys).await;
    for t in [&first, &second] {
        assert!(
            live.iter()
                .any(|r| r.starts_with("agent_logins") && r.contains(&t.name)),
            "{} has its rows",
            t.name
        );
    }

    let out = Callcenter::output(
        &sys.db.url,
        &sys.nats.url(),
        &["rebuild", "--projection", "all"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        snapshot(&sys).await,
        live,
        "the rebuild equals the partitions' rows"
    );
    let generations: Vec<i64> =
        sqlx::query_scalar("select generation from reporting.checkpoint order by id")
            .fetch_all(&sys.db.pool)
            .await
            .unwrap();
    assert_eq!(generations, vec![2, 2, 2, 2]);
    let names: Vec<String> = sqlx::query_scalar(
        "select name from rm_checkpoints where name like 'portal%' order by name",
    )
    .fetch_all(&sys.db.pool)
    .await
    .unwrap();
    assert_eq!(
        names,
        ["portal/p0", "portal/p1", "portal/p2", "portal/p3"],
        "a rebuild hands every partition on, and writes no whole row"
    );
    // The partitions' leaders go on on the new tables.
    for t in [&first, &second] {
        let bob = t.agent("1002").await;
        bob.post("/api/session/unpause", json!({})).await.ok();
        sys.view_when(&bob, "Bob idle after the rebuild", |v| {
            v["status"] == "idle"
        })
        .await;
    }
    quiet(&sys).await;
    portal_caught_up(&sys).await;
    let idle: i64 = sqlx::query_scalar(
        "select count(*) from reporting.agent_states where state = 'idle' and ended_at is null and tenant in ($1, $2)",
    )
    .bind(&first.name)
    .bind(&second.name)
    .fetch_one(&sys.db.pool)
    .await
    .unwrap();
    assert_eq!(idle, 2, "both tenants' agents idle in the reports");
}
