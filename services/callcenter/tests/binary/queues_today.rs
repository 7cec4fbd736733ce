//! The supervisors' queue figures of today (service level, answered, abandoned, average wait),
//! read once (`GET /api/supervisor/queues`) and then pushed on their event stream
//! (`event: queues`) as calls come and go, within a moment and without polling; an agent's
//! outbound call is not in them.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::system::{Sse, System};
use crate::tenant::TenantSpec;

/// The figures of `queue` in one `queues` event (or reply).
fn of<'a>(figures: &'a Value, queue: &str) -> &'a Value {
    figures
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == queue)
        .unwrap_or_else(|| panic!("queue {queue} in {figures}"))
}

/// Reads the stream until a `queues` event satisfies `pred`, within 10 s (the periodic refresh
/// is every 60 s: what arrives sooner was pushed by a change).
async fn pushed(sse: &mut Sse, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some((event, _, data)) = sse.next(Duration::from_secs(1)).await {
            if event == "queues" && pred(&data) {
                return data;
            }
        }
    }
    panic!("no queues event with {what} within 10 s");
}

#[tokio::test]
async fn todays_queue_figures_are_pushed_to_supervisors_as_calls_are_answered_and_abandoned() {
    let sys = System::start().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    let sup = t.supervisor().await;
    let bob = t.idle_agent("1002").await;

    let now = sup.get("/api/supervisor/queues").await.ok();
    let sales = of(&now, "500");
    let today = chrono::Utc::now().date_naive().to_string(); // the tenant's zone is UTC
    assert_eq!(
        (
            sales["day"].as_str(),
            sales["offered"].as_i64(),
            sales["answered"].as_i64(),
            sales["service_level_s"].as_i64()
        ),
        (Some(today.as_str()), Some(0), Some(0), Some(20)),
        "{now}"
    );
    assert!(sales["service_level_pct"].is_null() && sales["avg_wait_ms"].is_null());

    let mut sse = Sse::open(&sup, "/api/supervisor/events", None).await;
    pushed(&mut sse, "the first figures", |f| {
        of(f, "500")["offered"] == 0
    })
    .await;

    // A caller is answered by Bob after a moment: answered 1, within the service level.
    t.place_caller("500", "5551234", "Jane").await;
    pushed(&mut sse, "the caller waiting", |f| {
        of(f, "500")["waiting"] == 1
    })
    .await;
    sys.view_when(&bob, "Ringing", |v| v["status"] == "ringing")
        .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    t.phone("1002", "answer").await;
    let f = pushed(&mut sse, "the answer", |f| of(f, "500")["answered"] == 1).await;
    let sales = of(&f, "500");
    assert_eq!(
        (
            sales["offered"].as_i64(),
            sales["waiting"].as_i64(),
            sales["abandoned"].as_i64(),
            sales["service_level_pct"].as_f64()
        ),
        (Some(1), Some(0), Some(0), Some(100.0)),
        "{f}"
    );
    assert!(sales["avg_wait_ms"].as_i64().unwrap() >= 1000, "{f}");
    bob.post("/api/call/hangup", json!({})).await.ok();

    // A caller gives up in 501, where nobody is logged in: abandoned 1; within 5 s, so not in
    // the service level (no other wait ended there: none).
    let caller = t.place_caller("501", "5550001", "Max").await;
    pushed(&mut sse, "the second caller waiting", |f| {
        of(f, "501")["waiting"] == 1
    })
    .await;
    let r = sys
        .http
        .post(t.pbx_url(&format!("/channels/{caller}/hangup")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let f = pushed(&mut sse, "the abandon", |f| of(f, "501")["abandoned"] == 1).await;
    let support = of(&f, "501");
    assert!(support["service_level_pct"].is_null(), "{f}");
    assert_eq!(support["answered"], 0);

    // Bob's outbound call is no queue call: the figures do not move.
    sys.view_when(&bob, "Idle", |v| v["status"] == "idle").await;
    bob.post("/api/call/dial", json!({"number": "5559999"}))
        .await
        .ok();
    t.phone("1002", "answer").await;
    sys.view_when(&bob, "Connected", |v| v["status"] == "connected")
        .await;
    bob.post("/api/call/hangup", json!({})).await.ok();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let after = sup.get("/api/supervisor/queues").await.ok();
    assert_eq!(of(&after, "500")["offered"], 1, "{after}");
    assert_eq!(of(&after, "501")["offered"], 1, "{after}");
}
