//! One contract test suite for both implementations of the PBX contract: the simulator and the
//! SIP gateway (with real SIP phones). The same scenario drives the contract's commands over
//! NATS and checks the facts each PBX reports, so the two cannot drift apart. Only how a phone
//! or a caller acts differs (the simulator's control surface, or baresip).

use std::time::Duration;

use cc_bus::{Bus, CommandContext, RequestError, Subjects};
use cc_contracts::domain::DeviceId;
use cc_contracts::pbx::*;
use futures::StreamExt;
use serde_json::{json, Value};

use crate::phones::{Phone, PhoneSpec};
use crate::system::{System, SIP_TENANT};
use crate::tenant::TenantSpec;

/// How a test plays the phone of device 1001 and a caller, on one PBX.
enum Driver {
    Sim,
    Sip {
        phone: Box<Phone>,
        caller: Option<Box<Phone>>,
    },
}

impl Driver {
    async fn place_caller(&mut self, sys: &System, tenant: &str) {
        match self {
            Driver::Sim => {
                let r = sys
                    .http
                    .post(format!("{}/tenants/{tenant}/calls", sys.pbx))
                    .json(
                        &json!({"queue": "500", "caller_number": "5551234", "caller_name": "Jane"}),
                    )
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201);
            }
            Driver::Sip { caller, .. } => {
                let mut p = Phone::start(
                    sys.sip.unwrap(),
                    "office.localhost",
                    PhoneSpec {
                        tcp: false,
                        user: "5551234",
                        password: None,
                        tone: 1209,
                        auto_answer: false,
                        codec: "PCMA",
                        name: "Jane",
                    },
                )
                .await;
                p.command("dial", "sip:500@office.localhost").await;
                *caller = Some(Box::new(p));
            }
        }
    }

    async fn caller_hangs_up(&mut self, sys: &System, tenant: &str, channel: &str) {
        match self {
            Driver::Sim => {
                let r = sys
                    .http
                    .post(format!(
                        "{}/tenants/{tenant}/channels/{channel}/hangup",
                        sys.pbx
                    ))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 204);
            }
            Driver::Sip { caller, .. } => caller.as_mut().unwrap().command("hangup", "").await,
        }
    }

    async fn answer(&mut self, sys: &System, tenant: &str) {
        match self {
            Driver::Sim => {
                let r = sys
                    .http
                    .post(format!("{}/tenants/{tenant}/devices/1001/answer", sys.pbx))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 204);
            }
            Driver::Sip { phone, .. } => {
                phone.event("CALL_INCOMING", Duration::from_secs(20)).await;
                phone.command("accept", "").await;
            }
        }
    }
}

struct Facts {
    sub: async_nats::Subscriber,
}

impl Facts {
    /// The next fact of `kind` about `id` (channel or bridge), skipping others.
    async fn next(&mut self, id: &str, kind: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let m = tokio::time::timeout_at(deadline, self.sub.next())
                .await
                .unwrap_or_else(|_| panic!("no {kind} for {id} within 20 s"))
                .unwrap();
            let v: Value = serde_json::from_slice(&m.payload).unwrap();
            let about = v["channel"]
                .as_str()
                .or(v["bridge"].as_str())
                .or(v["device"].as_str())
                .unwrap_or("");
            if v["type"] == kind && about == id {
                return v;
            }
        }
    }

    /// The next fact matching `pred`.
    async fn find(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let m = tokio::time::timeout_at(deadline, self.sub.next())
                .await
                .unwrap_or_else(|_| panic!("no {what} within 20 s"))
                .unwrap();
            let v: Value = serde_json::from_slice(&m.payload).unwrap();
            if pred(&v) {
                return v;
            }
        }
    }
}

/// The contract, the same for every PBX.
async fn pbx_contract(sys: &System, tenant: &str, mut driver: Driver) {
    let client = sys.operator_nats().await.unwrap();
    let bus = Bus::new(client.clone(), Subjects::new(&sys.prefix));
    let c = CommandContext::new(tenant, "test:contract");
    let mut facts = Facts {
        sub: client
            .subscribe(format!("{}.pbx.evt.{tenant}.>", sys.prefix))
            .await
            .unwrap(),
    };
    client.flush().await.unwrap();
    let d1001 = DeviceId::parse("1001").unwrap();

    // Devices: 1001 registered, 1007 (sim) or any unprovisioned device offline or absent.
    let devices = bus.request(&c, &ListDevices {}).await.unwrap();
    assert!(
        devices.iter().any(|d| d.device == d1001 && d.registered),
        "{devices:?}"
    );
    let e = bus
        .request(
            &c,
            &Originate {
                channel: None,
                endpoint: Endpoint::Device(DeviceId::parse("1999").unwrap()),
                caller: party(),
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, RequestError::Rejected(r) if r.error == "unknown_device"),
        "{e}"
    );
    // CheckRoute gives the refusals of Originate without placing anything.
    let e = bus
        .request(
            &c,
            &CheckRoute {
                endpoint: Endpoint::Device(DeviceId::parse("1999").unwrap()),
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, RequestError::Rejected(r) if r.error == "unknown_device" && r.field.as_deref() == Some("device")),
        "{e}"
    );
    bus.request(
        &c,
        &CheckRoute {
            endpoint: Endpoint::Device(d1001.clone()),
        },
    )
    .await
    .expect("a registered device has a route");
    let e = bus
        .request(
            &c,
            &CheckRoute {
                endpoint: Endpoint::Number("55a1".into()),
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, RequestError::Rejected(r) if r.field.as_deref() == Some("number")),
        "{e}"
    );
    assert!(
        bus.request(&c, &ListChannels {}).await.unwrap().is_empty(),
        "CheckRoute places no channel"
    );

    // A caller dials a queue number: an inbound channel, not answered in the contract.
    driver.place_caller(sys, tenant).await;
    let created = facts
        .find("the caller's ChannelCreated", |v| {
            v["type"] == "ChannelCreated" && v["direction"] == "inbound"
        })
        .await;
    assert_eq!(
        (
            created["dialed"].as_str(),
            created["caller"]["number"].as_str(),
            created["caller"]["name"].as_str()
        ),
        (Some("500"), Some("5551234"), Some("Jane"))
    );
    let caller = created["channel"].as_str().unwrap().to_string();
    let listed = bus.request(&c, &ListChannels {}).await.unwrap();
    let mine = listed
        .iter()
        .find(|ch| ch.channel == caller)
        .expect("ListChannels has the caller");
    assert!(!mine.answered && mine.direction == Direction::Inbound);

    // Originate to 1001: created, ringing; answered when the phone answers.
    let leg = format!("ct-{}", uuid::Uuid::new_v4().simple());
    let st = bus
        .request(
            &c,
            &Originate {
                channel: Some(leg.clone()),
                endpoint: Endpoint::Device(d1001.clone()),
                caller: party(),
            },
        )
        .await
        .unwrap();
    assert_eq!(st.channel, leg);
    let created = facts.next(&leg, "ChannelCreated").await;
    assert_eq!(
        (created["direction"].as_str(), created["device"].as_str()),
        (Some("outbound"), Some("1001"))
    );
    facts.next(&leg, "ChannelRinging").await;
    // The phone has a call: another Originate to it is busy at once.
    let busy = format!("ct-{}", uuid::Uuid::new_v4().simple());
    bus.request(
        &c,
        &Originate {
            channel: Some(busy.clone()),
            endpoint: Endpoint::Device(d1001.clone()),
            caller: party(),
        },
    )
    .await
    .unwrap();
    assert_eq!(facts.next(&busy, "ChannelHungUp").await["cause"], "busy");
    driver.answer(sys, tenant).await;
    facts.next(&leg, "ChannelAnswered").await;
    // A ring timeout arriving after the answer does not end it: the answer stands.
    let e = bus
        .request(
            &c,
            &CancelRing {
                channel: leg.clone(),
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, RequestError::Rejected(r) if r.error == "already_answered"),
        "{e}"
    );

    // Bridge, hold and unhold, unbridge.
    let bridge = format!("b-{}", uuid::Uuid::new_v4().simple());
    let members = bus
        .request(
            &c,
            &Bridge {
                bridge: bridge.clone(),
                channels: vec![caller.clone(), leg.clone()],
            },
        )
        .await
        .unwrap();
    assert_eq!(members, vec![caller.clone(), leg.clone()]);
    let changed = facts.next(&bridge, "BridgeChanged").await;
    assert_eq!(changed["channels"], json!([caller, leg]));
    // Who hears whom: a channel may listen only, or whisper to one other; back to speak.
    let modes = bus
        .request(
            &c,
            &SetBridgeMode {
                channel: leg.clone(),
                mode: BridgeMode::Listen,
                bridge: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(modes.get(&leg), Some(&BridgeMode::Listen));
    assert_eq!(
        facts.next(&bridge, "BridgeChanged").await["modes"],
        json!({ leg.clone(): {"mode": "listen"} })
    );
    let whisper = BridgeMode::Whisper { to: caller.clone() };
    bus.request(
        &c,
        &SetBridgeMode {
            channel: leg.clone(),
            mode: whisper,
            bridge: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        facts.next(&bridge, "BridgeChanged").await["modes"],
        json!({ leg.clone(): {"mode": "whisper", "to": caller.clone()} })
    );
    let e = bus
        .request(
            &c,
            &SetBridgeMode {
                channel: leg.clone(),
                mode: BridgeMode::Whisper {
                    to: "nobody".into(),
                },
                bridge: None,
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, RequestError::Rejected(r) if r.field.as_deref() == Some("to")),
        "{e}"
    );
    let modes = bus
        .request(
            &c,
            &SetBridgeMode {
                channel: leg.clone(),
                mode: BridgeMode::Speak,
                bridge: None,
            },
        )
        .await
        .unwrap();
    assert!(modes.is_empty(), "{modes:?}");
    assert!(
        facts
            .next(&bridge, "BridgeChanged")
            .await
            .get("modes")
            .is_none(),
        "no modes listed once all speak"
    );
    // Joining a bridge in a mode is one step: the leg is never an ordinary party on the way in.
    bus.request(
        &c,
        &Unbridge {
            channel: leg.clone(),
        },
    )
    .await
    .unwrap();
    facts.next(&bridge, "BridgeChanged").await;
    let modes = bus
        .request(
            &c,
            &SetBridgeMode {
                channel: leg.clone(),
                mode: BridgeMode::Listen,
                bridge: Some(bridge.clone()),
            },
        )
        .await
        .unwrap();
    assert_eq!(modes.get(&leg), Some(&BridgeMode::Listen));
    let joined = facts.next(&bridge, "BridgeChanged").await;
    assert_eq!(
        (&joined["channels"], &joined["modes"]),
        (
            &json!([caller.clone(), leg.clone()]),
            &json!({ leg.clone(): {"mode": "listen"} })
        ),
        "joined in its mode in one fact"
    );
    bus.request(
        &c,
        &SetBridgeMode {
            channel: leg.clone(),
            mode: BridgeMode::Speak,
            bridge: None,
        },
    )
    .await
    .unwrap();
    facts.next(&bridge, "BridgeChanged").await;
    let held = bus
        .request(
            &c,
            &Hold {
                channel: caller.clone(),
                held: true,
            },
        )
        .await
        .unwrap();
    assert!(held.held);
    facts.next(&caller, "ChannelHeld").await;
    bus.request(
        &c,
        &Hold {
            channel: caller.clone(),
            held: false,
        },
    )
    .await
    .unwrap();
    facts.next(&caller, "ChannelUnheld").await;
    bus.request(
        &c,
        &Unbridge {
            channel: leg.clone(),
        },
    )
    .await
    .unwrap();
    assert_eq!(
        facts.next(&bridge, "BridgeChanged").await["channels"],
        json!([caller])
    );

    // Hangup of an answered leg is normal; the caller hanging up unanswered is caller_gone.
    bus.request(
        &c,
        &Hangup {
            channel: leg.clone(),
            cause: HangupCause::Normal,
        },
    )
    .await
    .unwrap();
    assert_eq!(facts.next(&leg, "ChannelHungUp").await["cause"], "normal");
    driver.caller_hangs_up(sys, tenant, &caller).await;
    assert_eq!(
        facts.next(&caller, "ChannelHungUp").await["cause"],
        "caller_gone"
    );
    facts.next(&bridge, "BridgeDestroyed").await;

    // A ring stopped before the answer is no_answer.
    let unanswered = format!("ct-{}", uuid::Uuid::new_v4().simple());
    bus.request(
        &c,
        &Originate {
            channel: Some(unanswered.clone()),
            endpoint: Endpoint::Device(d1001.clone()),
            caller: party(),
        },
    )
    .await
    .unwrap();
    facts.next(&unanswered, "ChannelRinging").await;
    bus.request(
        &c,
        &Hangup {
            channel: unanswered.clone(),
            cause: HangupCause::Normal,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        facts.next(&unanswered, "ChannelHungUp").await["cause"],
        "no_answer"
    );

    // CancelRing ends a ring as rung out; then the leg is gone.
    let timed_out = format!("ct-{}", uuid::Uuid::new_v4().simple());
    bus.request(
        &c,
        &Originate {
            channel: Some(timed_out.clone()),
            endpoint: Endpoint::Device(d1001.clone()),
            caller: party(),
        },
    )
    .await
    .unwrap();
    facts.next(&timed_out, "ChannelRinging").await;
    bus.request(
        &c,
        &CancelRing {
            channel: timed_out.clone(),
        },
    )
    .await
    .unwrap();
    assert_eq!(
        facts.next(&timed_out, "ChannelHungUp").await["cause"],
        "no_answer"
    );
    let e = bus
        .request(&c, &CancelRing { channel: timed_out })
        .await
        .unwrap_err();
    assert!(
        matches!(&e, RequestError::Rejected(r) if r.error == "unknown_channel"),
        "{e}"
    );

    // Unknown channels are refused naming the field.
    let e = bus
        .request(
            &c,
            &Hold {
                channel: "nope".into(),
                held: true,
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, RequestError::Rejected(r) if r.error == "unknown_channel" && r.field.as_deref() == Some("channel")),
        "{e}"
    );
    let left = bus.request(&c, &ListChannels {}).await.unwrap();
    assert!(
        left.iter()
            .all(|ch| ch.channel != caller && ch.channel != leg && ch.channel != unanswered),
        "{left:?}"
    );
}

fn party() -> Party {
    Party {
        number: "5551234".into(),
        name: "Jane".into(),
    }
}

#[tokio::test]
async fn the_pbx_simulator_keeps_the_pbx_contract() {
    let sys = System::start().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    pbx_contract(&sys, &t.name, Driver::Sim).await;
}

#[tokio::test]
async fn the_sip_gateway_keeps_the_pbx_contract_with_real_phones() {
    let sys = System::start_sip(false).await;
    let phone = Phone::start(
        sys.sip.unwrap(),
        "office.localhost",
        PhoneSpec {
            tcp: false,
            user: "1001",
            password: Some("sip1001"),
            tone: 697,
            auto_answer: false,
            codec: "PCMU",
            name: "",
        },
    )
    .await;
    phone.registration("200 OK").await;
    let agent = sys.tenant_client(SIP_TENANT);
    let _ = agent;
    cc_testkit::eventually(
        "1001 registered at the gateway",
        Duration::from_secs(20),
        || async {
            let client = sys.operator_nats().await.ok()?;
            let bus = Bus::new(client, Subjects::new(&sys.prefix));
            let d = bus
                .request(&CommandContext::new(SIP_TENANT, "test"), &ListDevices {})
                .await
                .ok()?;
            d.iter()
                .any(|d| d.device.as_str() == "1001" && d.registered)
                .then_some(())
        },
    )
    .await;
    pbx_contract(
        &sys,
        SIP_TENANT,
        Driver::Sip {
            phone: Box::new(phone),
            caller: None,
        },
    )
    .await;
}
