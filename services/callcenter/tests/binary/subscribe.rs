//! Another system subscribes to one agent's events with the documented subject filter and a
//! durable consumer (`callcenter events --durable`): it replays from the start, sees the login,
//! the pause and the call, and a second run goes on where the first stopped. It does so with the
//! tenant's read-only integrator credentials (`callcenter tenant credentials`).

use serde_json::json;

use crate::process::Callcenter;
use crate::system::{Custom, System};
use crate::tenant::{unique_slug, TenantSpec};

fn subscribe(sys: &System, tenant: &str, filter: &str, count: usize) -> Vec<String> {
    let integrator = cc_bus::permissions::integrator_user(tenant);
    let out = Callcenter::command(
        &sys.db.url,
        &sys.nats.url(),
        &[
            "events",
            "--durable",
            &cc_bus::permissions::integrator_durable(tenant),
            "--subject",
            filter,
            "--count",
            &count.to_string(),
        ],
    )
    .env("CC_SUBJECT_PREFIX", &sys.prefix)
    .env("CC_NATS_USER", &integrator)
    .env("CC_NATS_PASSWORD", sys.nats_password(&integrator))
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `<time> <subject> <ce-type> <data>`: the subjects.
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split(' ').nth(1).unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn an_integrator_follows_one_agents_events_by_subject_with_a_durable_consumer() {
    // The nats-server knows the tenant's integrator from its start: the name is chosen first.
    let name = unique_slug("acme");
    let sys = System::start_custom(Custom {
        integrators: vec![name.clone()],
        ..Custom::default()
    })
    .await;
    let t = sys.tenant(TenantSpec::call_center().named(&name)).await;
    let bob = t.agent("1002").await;
    bob.post("/api/session", json!({})).await.ok();
    bob.post("/api/session/pause", json!({"reason": "Lunch"}))
        .await
        .ok();
    bob.post("/api/session/unpause", json!({})).await.ok();
    sys.view_when(&bob, "Idle", |v| v["status"] == "idle").await;
    t.place_caller("500", "5551234", "Jane").await;
    sys.view_when(&bob, "Ringing", |v| v["status"] == "ringing")
        .await;

    // Everything about agent 1002 in the tenant: its session and the calls offered to it.
    let filter = format!("{}.events.{}.*.*.*.1002.*", sys.prefix, t.name);
    let first = subscribe(&sys, &t.name, &filter, 4);
    let types: Vec<&str> = first.iter().map(|s| s.split('.').nth(5).unwrap()).collect();
    assert_eq!(
        types,
        [
            "AgentAccountCreated",
            "AgentAssignedToQueue",
            "AgentLoggedIn",
            "AgentPaused"
        ],
        "{first:?}"
    );
    // The durable consumer remembers: the next run starts after the pause.
    let next = subscribe(&sys, &t.name, &filter, 2);
    let types: Vec<&str> = next.iter().map(|s| s.split('.').nth(5).unwrap()).collect();
    assert_eq!(types, ["AgentUnpaused", "CallOffered"], "{next:?}");
    assert!(
        next[1].ends_with(".1002.500"),
        "the call's subject names agent and queue: {}",
        next[1]
    );

    // By queue alone: the caller entering queue 500.
    let by_queue = Callcenter::command(
        &sys.db.url,
        &sys.nats.url(),
        &[
            "events",
            "--from-start",
            "--subject",
            &format!("{}.events.{}.call.*.*.*.500", sys.prefix, t.name),
            "--count",
            "1",
        ],
    )
    .envs(sys.operator_env())
    .output()
    .unwrap();
    assert!(
        String::from_utf8_lossy(&by_queue.stdout).contains(".CallEnteredQueue._.500 "),
        "{}",
        String::from_utf8_lossy(&by_queue.stdout)
    );
}
