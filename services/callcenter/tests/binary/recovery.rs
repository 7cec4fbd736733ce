//! Restarts in the middle of calls: every service but the PBX is killed (SIGKILL) and started
//! again. Nothing stays stuck: state is rebuilt from events, timers are re-armed from it, and
//! what happened on the PBX meanwhile is reconciled, counted once.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::system::{Client, System};
use crate::tenant::{Tenant, TenantSpec};

async fn quick(t: &Tenant) {
    let admin = t.admin().await;
    let settings = json!({"strategy": "longest_idle", "ring_timeout_s": 5, "wrap_up_s": 2, "reject_delay_s": 1});
    admin
        .call(
            Method::PUT,
            "/api/admin/queues/500/settings",
            Some(settings),
        )
        .await
        .ok();
}

#[tokio::test]
async fn a_restart_while_ringing_still_times_the_offer_out_once() {
    let mut sys = System::start_split().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    quick(&t).await;
    let bob = t.idle_agent("1002").await;
    t.place_caller("500", "5551111", "Ringing").await;
    sys.view_when(&bob, "Ringing", |v| v["status"] == "ringing")
        .await;

    sys.restart_services().await;
    let v = cc_testkit::eventually(
        "the offer timed out after the restart",
        Duration::from_secs(30),
        || async {
            let r = bob.get("/api/me").await;
            (r.status.is_success() && r.body["counts"]["missed"] == 1).then_some(r.body)
        },
    )
    .await;
    assert_eq!(v["counts"]["missed"], 1);
    let timed_out: i64 =
        sqlx::query_scalar("select count(*) from es_events where event_type = 'OfferTimedOut'")
            .fetch_one(&sys.db.pool)
            .await
            .unwrap();
    assert!(timed_out >= 1);
    // The call is offered again (ringing), then answered: it goes on normally.
    sys.view_when(&bob, "Ringing again", |v| v["status"] == "ringing")
        .await;
    t.phone("1002", "answer").await;
    sys.view_when(&bob, "Connected", |v| v["status"] == "connected")
        .await;
}

/// A split system with a call from `number` (`name`) to queue 500 that Bob (1002) answered:
/// the system, the tenant, Bob, and the caller's channel.
async fn bob_connected(number: &str, name: &str) -> (System, Tenant, Client, String) {
    let sys = System::start_split().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    quick(&t).await;
    let bob = t.idle_agent("1002").await;
    let caller = t.place_caller("500", number, name).await;
    sys.view_when(&bob, "Ringing", |v| v["status"] == "ringing")
        .await;
    t.phone("1002", "answer").await;
    sys.view_when(&bob, "Connected", |v| v["status"] == "connected")
        .await;
    (sys, t, bob, caller)
}

#[tokio::test]
async fn a_restart_while_connected_keeps_the_call_and_a_hangup_meanwhile_counts_once() {
    let (mut sys, t, bob, caller) = bob_connected("5552222", "Connected").await;

    // Killed with the call up; the caller hangs up while the services are down.
    sys._app.kill();
    let r = sys
        .http
        .post(t.pbx_url(&format!("/channels/{caller}/hangup")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    sys.restart_services().await;

    let v = cc_testkit::eventually(
        "the call ended in the read model",
        Duration::from_secs(30),
        || async {
            let r = bob.get("/api/me").await;
            (r.status.is_success()
                && r.body["counts"]["completed"] == 1
                && r.body["status"] == "idle")
                .then_some(r.body)
        },
    )
    .await;
    assert!(v["current_call"].is_null());
    let ended: i64 =
        sqlx::query_scalar("select count(*) from es_events where event_type = 'CallEnded'")
            .fetch_one(&sys.db.pool)
            .await
            .unwrap();
    assert_eq!(ended, 1, "counted once");
}

#[tokio::test]
async fn an_ending_recorded_whose_hangups_never_went_out_is_hung_up_after_the_restart() {
    let (mut sys, t, bob, caller) = bob_connected("5554444", "Left up").await;
    let (stream, call, _, version) = first_of(&sys, "CallConnected").await;

    // The crash window: call control recorded the ending (the agent hung up in the portal),
    // then died before hanging up the caller's and the phone's legs. (Written here the way
    // call control writes it.)
    sys._app.kill();
    write_as(
        &sys,
        &t,
        &stream,
        version + 1,
        "CallEnded",
        json!({"call": call, "agent": "1002", "by": "agent", "talk_ms": 1000}),
        "system:call-control",
    )
    .await;
    let up = t.channels().await;
    assert_eq!(up.len(), 2, "the caller and the phone, still up: {up:?}");
    assert!(up.iter().any(|c| c["channel"] == caller.as_str()), "{up:?}");
    sys.restart_services().await;

    // The new leader hangs up both legs of the call that is over.
    cc_testkit::eventually(
        "the ended call's legs hung up",
        Duration::from_secs(30),
        || async { t.channels().await.is_empty().then_some(()) },
    )
    .await;
    let v = sys
        .view_when(&bob, "Idle after the wrap-up", |v| {
            v["status"] == "idle" && v["counts"]["completed"] == 1
        })
        .await;
    assert!(v["current_call"].is_null(), "{v}");
}

#[tokio::test]
async fn a_restart_during_wrap_up_still_ends_it() {
    let mut sys = System::start_split().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    quick(&t).await;
    let bob = t.idle_agent("1002").await;
    t.place_caller("500", "5553333", "Wrap").await;
    sys.view_when(&bob, "Ringing", |v| v["status"] == "ringing")
        .await;
    t.phone("1002", "answer").await;
    sys.view_when(&bob, "Connected", |v| v["status"] == "connected")
        .await;
    t.phone("1002", "hangup").await;
    sys.view_when(&bob, "Wrap-up", |v| v["status"] == "wrap_up")
        .await;
    sys.restart_services().await;
    let v = cc_testkit::eventually(
        "Idle after the wrap-up",
        Duration::from_secs(30),
        || async {
            let r = bob.get("/api/me").await;
            (r.status.is_success() && r.body["status"] == "idle").then_some(r.body)
        },
    )
    .await;
    assert_eq!(v["counts"]["completed"], 1);
}

#[tokio::test]
async fn a_hangup_lost_with_a_crashed_router_is_done_after_the_restart() {
    let mut sys = System::start_split().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    let admin = t.admin().await;
    let settings = json!({"strategy": "longest_idle", "ring_timeout_s": 120, "wrap_up_s": 1, "reject_delay_s": 1});
    admin
        .call(
            Method::PUT,
            "/api/admin/queues/500/settings",
            Some(settings),
        )
        .await
        .ok();
    let bob = t.idle_agent("1002").await;
    t.place_caller("500", "5553333", "Lost hangup").await;
    sys.view_when(&bob, "Ringing", |v| v["status"] == "ringing")
        .await;
    let (stream, call, data, version) = first_of(&sys, "CallOffered").await;
    let offer = data["offer"].as_str().unwrap().to_string();

    // The crash window: the router recorded that the offer rang out, then died before hanging
    // the phone up. (Written here the way the router writes it.)
    sys._app.kill();
    write_as(
        &sys,
        &t,
        &stream,
        version + 1,
        "OfferTimedOut",
        json!({"call": call, "agent": "1002", "offer": offer}),
        "system:queue-router",
    )
    .await;
    sys.restart_services().await;

    // The phone stops ringing for the ended offer, and the next offer to Bob rings normally
    // (not refused as busy by the leftover leg).
    cc_testkit::eventually(
        "the leftover leg hung up",
        Duration::from_secs(30),
        || async {
            let chans: Vec<serde_json::Value> = t.channels().await;
            (!chans.iter().any(|c| c["channel"] == offer.as_str())).then_some(())
        },
    )
    .await;
    sys.view_when(&bob, "Ringing again", |v| {
        v["status"] == "ringing" && v["counts"]["missed"] == 1
    })
    .await;
    cc_testkit::eventually("the new offer rings", Duration::from_secs(10), || async {
        let (status, _) = t.pbx_post("/devices/1002/answer", json!({})).await;
        (status == 204).then_some(())
    })
    .await;
    let v = sys
        .view_when(&bob, "Connected", |v| v["status"] == "connected")
        .await;
    assert_eq!(v["counts"]["rejected"], 0, "no offer refused as busy");
}

#[tokio::test]
async fn a_ring_and_an_arrival_not_recorded_before_a_crash_are_reconciled_after_the_restart() {
    use futures::StreamExt;
    let mut sys = System::start_split().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    quick(&t).await;
    let bob = t.idle_agent("1002").await;
    sys._app.kill();

    // The crash windows: the router rang Bob's phone for an offer it had not recorded yet (phones
    // ring while the offer is written), and it had taken a caller's arrival from the PBX's event
    // stream without recording the entry. (Both done here the way the router does them.)
    let client = sys.operator_nats().await.unwrap();
    let bus = cc_bus::Bus::new(client.clone(), cc_bus::Subjects::new(&sys.prefix));
    let orphan = format!(
        "{}{}",
        cc_queue_router::OFFER_PREFIX,
        uuid::Uuid::now_v7().simple()
    );
    let originate = cc_contracts::pbx::Originate {
        channel: Some(orphan.clone()),
        endpoint: cc_contracts::pbx::Endpoint::Device(
            cc_contracts::domain::DeviceId::parse("1002").unwrap(),
        ),
        caller: cc_contracts::pbx::Party {
            number: "5550000".into(),
            name: "Never recorded".into(),
        },
    };
    bus.request(&cc_bus::CommandContext::new(&t.name, "test"), &originate)
        .await
        .unwrap();
    let caller = t.place_caller("500", "5554444", "Unrecorded arrival").await;
    let js = async_nats::jetstream::new(client);
    let consumer: async_nats::jetstream::consumer::PullConsumer = js
        .get_consumer_from_stream("queue-router-channels", bus.subjects.pbx_stream())
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let m = messages.next().await.unwrap().unwrap();
            m.ack().await.unwrap();
            if String::from_utf8_lossy(&m.payload).contains(&caller) {
                break;
            }
        }
    })
    .await
    .expect("the caller's arrival taken from the router's consumer");
    drop(messages);
    sys.restart_services().await;

    // The leg nobody recorded stops ringing; the caller enters the queue and rings Bob, whose
    // phone is free again (no offer refused as busy).
    cc_testkit::eventually(
        "the unrecorded leg hung up",
        Duration::from_secs(30),
        || async {
            let chans: Vec<serde_json::Value> = t.channels().await;
            (!chans.iter().any(|c| c["channel"] == orphan.as_str())).then_some(())
        },
    )
    .await;
    let v = sys
        .view_when(&bob, "Ringing with the caller", |v| {
            v["status"] == "ringing"
        })
        .await;
    assert_eq!(v["current_call"]["caller_number"], "5554444", "{v}");
    t.phone("1002", "answer").await;
    let v = sys
        .view_when(&bob, "Connected", |v| v["status"] == "connected")
        .await;
    assert_eq!(v["counts"]["rejected"], 0, "no offer refused as busy");
    let entered: i64 = sqlx::query_scalar("select count(*) from es_events where event_type = 'CallEnteredQueue' and data->>'channel' = $1")
        .bind(&caller)
        .fetch_one(&sys.db.pool)
        .await
        .unwrap();
    assert_eq!(entered, 1, "the caller entered once");
}

#[tokio::test]
async fn an_outbound_call_survives_a_restart_with_the_agents_answer_during_it() {
    let mut sys = System::start_split().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    let bob = t.idle_agent("1002").await;
    let call = bob.dial(json!({"number": "5556666"})).await;
    sys.view_when(&bob, "Dialing", |v| v["status"] == "dialing")
        .await;

    // Bob's phone answers as every service but the PBX starts again (killed, not ready yet): the
    // number is rung, answers, and the call is connected; it then ends normally, once.
    sys.restart_services().await;
    t.phone("1002", "answer").await;
    sys.view_when(&bob, "Connected after the restart", |v| {
        v["status"] == "connected"
    })
    .await;
    bob.post("/api/call/hangup", json!({})).await.ok();
    sys.view_when(&bob, "Idle", |v| v["status"] == "idle").await;
    let types = t.call_events(&call).await;
    assert_eq!(
        types,
        [
            "OutboundCallStarted",
            "OutboundCallDialed",
            "CallConnected",
            "CallEnded"
        ]
    );
}

/// Appends one event to a call's stream the way `actor` writes it (a service's write that a
/// crash interrupted before its PBX actions), at `version`.
async fn write_as(
    sys: &System,
    t: &Tenant,
    stream: &str,
    version: i64,
    event_type: &str,
    data: serde_json::Value,
    actor: &str,
) {
    let call = stream.rsplit("call-").next().unwrap();
    sqlx::query(
        "insert into es_events (event_id, tenant, stream, category, stream_id, version, event_type, schema_version, data, metadata)
         values ($1, $2, $3, 'call', $4, $5, $6, 1, $7, $8)",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(&t.name)
    .bind(stream)
    .bind(call)
    .bind(version)
    .bind(event_type)
    .bind(data)
    .bind(json!({"tenant": t.name, "correlation_id": uuid::Uuid::now_v7(), "actor": actor}))
    .execute(&sys.db.pool)
    .await
    .unwrap();
}

/// The stream (and call) of the first `event_type` event once it is recorded, its data, and
/// the stream's version now.
async fn first_of(sys: &System, event_type: &str) -> (String, String, serde_json::Value, i64) {
    let (stream, data, version): (String, String, i64) = cc_testkit::eventually(
        &format!("a {event_type} recorded"),
        Duration::from_secs(10),
        || async {
            sqlx::query_as(
                "select stream, data::text, (select max(version) from es_events x where x.stream = e.stream)
                 from es_events e where event_type = $1 order by position limit 1",
            )
            .bind(event_type)
            .fetch_optional(&sys.db.pool)
            .await
            .unwrap()
        },
    )
    .await;
    let call = stream.rsplit("call-").next().unwrap().to_string();
    (stream, call, serde_json::from_str(&data).unwrap(), version)
}
