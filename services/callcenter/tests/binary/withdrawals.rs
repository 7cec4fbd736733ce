//! An agent who goes away while their phone rings: a logout (their own, a supervisor's, a
//! disabled account) or their device going offline withdraws the offer at once, the phone stops
//! ringing, the call goes on to the next agent, and nothing counts against the agent.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::system::{Client, System};
use crate::tenant::{Tenant, TenantSpec};

impl Tenant {
    /// The `OfferWithdrawn` events of a call: (agent, reason).
    pub async fn withdrawals(&self, call: &str) -> Vec<(String, String)> {
        self.stream_events(&format!("call-{call}"))
            .await
            .into_iter()
            .filter(|(t, _)| t == "OfferWithdrawn")
            .map(|(_, d)| {
                (
                    d["agent"].as_str().unwrap_or("").to_string(),
                    d["reason"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    /// Waits until the call's events hold a withdrawal of `agent`'s offer (well within the ring
    /// timeout of 30 s: not the ring-out).
    async fn withdrawn(&self, call: &str, agent: &str) -> String {
        cc_testkit::eventually(
            &format!("the offer to {agent} withdrawn"),
            Duration::from_secs(10),
            || async {
                self.withdrawals(call)
                    .await
                    .into_iter()
                    .find(|(a, _)| a == agent)
                    .map(|(_, reason)| reason)
            },
        )
        .await
    }
}

/// Queue 500 with a long ring timeout (a withdrawal is told from a ring-out), and Bob (1002)
/// ringing with a caller; returns the call id.
async fn bob_ringing() -> (System, Tenant, Client, String) {
    let sys = System::start().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    let admin = t.admin().await;
    let settings = json!({"strategy": "longest_idle", "ring_timeout_s": 30, "wrap_up_s": 0, "reject_delay_s": 0});
    admin
        .call(
            Method::PUT,
            "/api/admin/queues/500/settings",
            Some(settings),
        )
        .await
        .ok();
    let bob = t.idle_agent("1002").await;
    t.place_caller("500", "5551234", "Jane Caller").await;
    let v = sys
        .view_when(&bob, "Bob ringing", |v| v["status"] == "ringing")
        .await;
    let call = v["current_call"]["call"].as_str().unwrap().to_string();
    (sys, t, bob, call)
}

/// The call rings `agent` next.
async fn rings(sys: &System, agent: &Client, call: &str) {
    sys.view_when(agent, "the call rings the next agent", |v| {
        v["status"] == "ringing" && v["current_call"]["call"] == call
    })
    .await;
}

async fn counts_nothing(sys: &System, agent: &Client) {
    let me = sys
        .view_when(agent, "logged out", |v| v["status"] == "logged_out")
        .await;
    assert_eq!(
        me["counts"],
        json!({"completed": 0, "missed": 0, "rejected": 0}),
        "{me}"
    );
}

#[tokio::test]
async fn a_logout_a_forced_logout_and_a_disabled_account_withdraw_the_ringing_offer_at_once() {
    let (sys, t, bob, call) = bob_ringing().await;
    let dave = t.idle_agent("1004").await;

    // Bob logs out while his phone rings: the offer is withdrawn, his phone stops ringing, the
    // call rings Dave.
    bob.call(Method::DELETE, "/api/session", None).await.ok();
    assert_eq!(t.withdrawn(&call, "1002").await, "agent_logged_out");
    cc_testkit::eventually(
        "Bob's phone stops ringing",
        Duration::from_secs(10),
        || async { t.device_channels("1002").await.is_empty().then_some(()) },
    )
    .await;
    rings(&sys, &dave, &call).await;
    counts_nothing(&sys, &bob).await;

    // A supervisor logs Dave out while it rings him.
    let supervisor = t.supervisor().await;
    supervisor
        .post("/api/supervisor/agents/1004/logout", json!({}))
        .await
        .ok();
    assert_eq!(t.withdrawn(&call, "1004").await, "agent_logged_out");
    cc_testkit::eventually(
        "Dave's phone stops ringing",
        Duration::from_secs(10),
        || async { t.device_channels("1004").await.is_empty().then_some(()) },
    )
    .await;
    counts_nothing(&sys, &dave).await;

    // Alice (in queue 500 too) logs in and gets the call; her account is disabled meanwhile.
    let alice = t.agent("1001").await;
    alice.post("/api/session", json!({})).await.ok();
    rings(&sys, &alice, &call).await;
    let admin = t.admin().await;
    admin
        .post("/api/admin/agents/1001/disable", json!({}))
        .await
        .ok();
    assert_eq!(t.withdrawn(&call, "1001").await, "agent_logged_out");
    cc_testkit::eventually(
        "Alice's phone stops ringing",
        Duration::from_secs(10),
        || async { t.device_channels("1001").await.is_empty().then_some(()) },
    )
    .await;

    let types = t.call_events(&call).await;
    assert!(
        !types
            .iter()
            .any(|t| t == "OfferTimedOut" || t == "OfferRejected" || t == "CallAnswered"),
        "{types:?}"
    );
    let types: Vec<String> = t
        .stream_events("agent-1001")
        .await
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert_eq!(types.last().map(String::as_str), Some("AgentLoggedOut"));
}

#[tokio::test]
async fn a_leg_answered_after_the_logout_was_recorded_does_not_connect_the_caller() {
    let (sys, t, bob, call) = bob_ringing().await;
    let dave = t.idle_agent("1004").await;

    // The router has not seen the logout yet when the phone answers: an open transaction holds
    // back every catch-up reader (the router's among them) while both happen.
    let mut holdback = sys.db.pool.begin().await.unwrap();
    sqlx::query("select pg_current_xact_id()")
        .execute(&mut *holdback)
        .await
        .unwrap();
    bob.call(Method::DELETE, "/api/session", None).await.ok();
    t.phone("1002", "answer").await;
    let outcome = cc_testkit::eventually(
        "the router to decide on the answer",
        Duration::from_secs(10),
        || async {
            let types: Vec<String> = sqlx::query_scalar(
                "select event_type from es_events where stream = $1 order by version",
            )
            .bind(t.stream(&format!("call-{call}")))
            .fetch_all(&sys.db.pool)
            .await
            .unwrap();
            types
                .into_iter()
                .find(|t| t == "CallAnswered" || t == "OfferWithdrawn")
        },
    )
    .await;
    holdback.rollback().await.unwrap();
    assert_eq!(
        outcome, "OfferWithdrawn",
        "the caller must not be connected to an agent who logged out"
    );
    assert_eq!(
        t.withdrawals(&call).await,
        [("1002".to_string(), "agent_logged_out".to_string())]
    );
    cc_testkit::eventually(
        "Bob's answered leg hung up",
        Duration::from_secs(10),
        || async { t.device_channels("1002").await.is_empty().then_some(()) },
    )
    .await;
    rings(&sys, &dave, &call).await;
    counts_nothing(&sys, &bob).await;
}

#[tokio::test]
async fn a_device_going_offline_while_it_rings_withdraws_the_offer_and_counts_no_missed_call() {
    let (sys, t, bob, call) = bob_ringing().await;
    let dave = t.idle_agent("1004").await;

    t.set_registered("1002", false).await;
    assert_eq!(t.withdrawn(&call, "1002").await, "device_offline");
    cc_testkit::eventually(
        "Bob's phone stops ringing",
        Duration::from_secs(10),
        || async { t.device_channels("1002").await.is_empty().then_some(()) },
    )
    .await;
    rings(&sys, &dave, &call).await;
    let me = sys
        .view_when(&bob, "Bob offline, no call", |v| {
            v["device_online"] == false && v["current_call"].is_null()
        })
        .await;
    assert_eq!(
        me["counts"],
        json!({"completed": 0, "missed": 0, "rejected": 0}),
        "{me}"
    );
    let types = t.call_events(&call).await;
    assert!(
        !types
            .iter()
            .any(|t| t == "OfferTimedOut" || t == "OfferRejected"),
        "{types:?}"
    );
}
