//! The PBX simulator against real NATS and PostgreSQL: the PBX contract's commands and the
//! facts it reports, and the control surface that plays phones and callers.

use std::time::Duration;

use cc_bus::{Bus, CommandContext, Subjects};
use cc_contracts::domain::DeviceId;
use cc_contracts::pbx::*;
use cc_pbx_sim::calls::{PhoneAction, PhoneMode};
use cc_pbx_sim::control::{
    AddDevice, CallerHangup, PhoneDo, PlaceCall, SetPhoneMode, SetRegistered,
};
use cc_runtime::{Config, Context};
use cc_testkit::{free_port, NatsServer, TestDb};
use futures::StreamExt;
use serde_json::Value;

struct Sim {
    _db: TestDb,
    _nats: NatsServer,
    ctx: Context,
    facts: async_nats::Subscriber,
    http: String,
}

impl Sim {
    async fn start() -> Sim {
        let db = TestDb::new().await;
        for (c, m) in [
            ("eventstore", cc_eventstore::MIGRATIONS),
            ("bus", cc_bus::MIGRATIONS),
            ("pbx-sim", cc_pbx_sim::MIGRATIONS),
        ] {
            cc_eventstore::migrate(&db.pool, c, m).await.unwrap();
        }
        let nats = NatsServer::start();
        let client = async_nats::connect(nats.url()).await.unwrap();
        let port = free_port();
        let config = Config {
            pbx_sim_addr: format!("127.0.0.1:{port}"),
            ..Config::default()
        };
        let ctx = Context {
            config,
            pool: db.pool.clone(),
            store: cc_eventstore::EventStore::new(db.pool.clone()),
            bus: Bus::new(client.clone(), Subjects::new("cc")),
            cancel: tokio_util::sync::CancellationToken::new(),
            readiness: Default::default(),
            metrics: Default::default(),
        };
        let facts = client.subscribe("cc.pbx.evt.acme.>").await.unwrap();
        client.flush().await.unwrap();
        tokio::spawn(cc_pbx_sim::run(ctx.clone()));
        let sim = Sim {
            _db: db,
            _nats: nats,
            ctx,
            facts,
            http: format!("http://127.0.0.1:{port}"),
        };
        cc_testkit::eventually("the simulator", Duration::from_secs(10), || async {
            sim.ctx.bus.request(&sim.c(), &ListChannels {}).await.ok()
        })
        .await;
        for d in ["1001", "1002"] {
            sim.ctx
                .bus
                .request(&sim.c(), &AddDevice { device: dev(d) })
                .await
                .unwrap();
            sim.ctx
                .bus
                .request(
                    &sim.c(),
                    &SetRegistered {
                        device: dev(d),
                        registered: true,
                    },
                )
                .await
                .unwrap();
        }
        sim.ctx
            .bus
            .request(
                &sim.c(),
                &AddDevice {
                    device: dev("1003"),
                },
            )
            .await
            .unwrap();
        sim
    }

    fn c(&self) -> CommandContext {
        CommandContext::new("acme", "test")
    }

    /// The next fact of a kind (`channel` or `bridge`), skipping device facts.
    async fn next(&mut self) -> (String, Value) {
        loop {
            let m = tokio::time::timeout(Duration::from_secs(5), self.facts.next())
                .await
                .expect("a PBX fact")
                .unwrap();
            if m.subject.contains(".device.") {
                continue;
            }
            let v: Value = serde_json::from_slice(&m.payload).unwrap();
            return (v["type"].as_str().unwrap().to_string(), v);
        }
    }

    async fn expect(&mut self, ty: &str) -> Value {
        let (t, v) = self.next().await;
        assert_eq!(t, ty, "{v}");
        v
    }
}

fn dev(d: &str) -> DeviceId {
    DeviceId::parse(d).unwrap()
}

fn caller() -> Party {
    Party {
        number: "5551234".into(),
        name: "Jane Caller".into(),
    }
}

#[tokio::test]
async fn a_caller_reaches_a_queue_and_an_agent_phone_answers_in_a_bridge() {
    let mut sim = Sim::start().await;
    let c = sim.c();
    let inbound = sim
        .ctx
        .bus
        .request(
            &c,
            &PlaceCall {
                queue: "500".into(),
                caller_number: "5551234".into(),
                caller_name: "Jane".into(),
            },
        )
        .await
        .unwrap();
    let created = sim.expect("ChannelCreated").await;
    assert_eq!(
        (created["direction"].as_str(), created["dialed"].as_str()),
        (Some("inbound"), Some("500"))
    );
    assert_eq!(created["caller"]["name"], "Jane");

    let leg = sim
        .ctx
        .bus
        .request(
            &c,
            &Originate {
                channel: Some("offer1".into()),
                endpoint: Endpoint::Device(dev("1001")),
                caller: caller(),
            },
        )
        .await
        .unwrap();
    assert_eq!(leg.channel, "offer1");
    let created = sim.expect("ChannelCreated").await;
    assert_eq!(
        (created["channel"].as_str(), created["device"].as_str()),
        (Some("offer1"), Some("1001"))
    );
    sim.expect("ChannelRinging").await;

    sim.ctx
        .bus
        .request(
            &c,
            &PhoneDo {
                device: dev("1001"),
                action: PhoneAction::Answer,
            },
        )
        .await
        .unwrap();
    sim.expect("ChannelAnswered").await;
    sim.ctx
        .bus
        .request(
            &c,
            &Answer {
                channel: inbound.channel.clone(),
            },
        )
        .await
        .unwrap();
    sim.expect("ChannelAnswered").await;
    let members = sim
        .ctx
        .bus
        .request(
            &c,
            &Bridge {
                bridge: "b1".into(),
                channels: vec![inbound.channel.clone(), "offer1".into()],
            },
        )
        .await
        .unwrap();
    assert_eq!(members.len(), 2);
    let b = sim.expect("BridgeChanged").await;
    assert_eq!(b["channels"].as_array().unwrap().len(), 2);

    sim.ctx
        .bus
        .request(
            &c,
            &Hold {
                channel: inbound.channel.clone(),
                held: true,
            },
        )
        .await
        .unwrap();
    sim.expect("ChannelHeld").await;
    sim.ctx
        .bus
        .request(
            &c,
            &Hold {
                channel: inbound.channel.clone(),
                held: false,
            },
        )
        .await
        .unwrap();
    sim.expect("ChannelUnheld").await;

    // The agent's phone hangs up: its leg ends normally and leaves the bridge.
    sim.ctx
        .bus
        .request(
            &c,
            &PhoneDo {
                device: dev("1001"),
                action: PhoneAction::Hangup,
            },
        )
        .await
        .unwrap();
    let h = sim.expect("ChannelHungUp").await;
    assert_eq!(
        (h["channel"].as_str(), h["cause"].as_str()),
        (Some("offer1"), Some("normal"))
    );
    let b = sim.expect("BridgeChanged").await;
    assert_eq!(b["channels"], serde_json::json!([inbound.channel]));
    sim.ctx
        .bus
        .request(
            &c,
            &Hangup {
                channel: inbound.channel.clone(),
                cause: HangupCause::Normal,
            },
        )
        .await
        .unwrap();
    sim.expect("ChannelHungUp").await;
    sim.expect("BridgeDestroyed").await;
    assert!(sim
        .ctx
        .bus
        .request(&c, &ListChannels {})
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn phones_reject_ignore_or_answer_by_themselves_and_callers_abandon() {
    let mut sim = Sim::start().await;
    let c = sim.c();
    // Rejected by the user.
    sim.ctx
        .bus
        .request(
            &c,
            &Originate {
                channel: None,
                endpoint: Endpoint::Device(dev("1001")),
                caller: caller(),
            },
        )
        .await
        .unwrap();
    sim.expect("ChannelCreated").await;
    sim.expect("ChannelRinging").await;
    sim.ctx
        .bus
        .request(
            &c,
            &PhoneDo {
                device: dev("1001"),
                action: PhoneAction::Reject,
            },
        )
        .await
        .unwrap();
    assert_eq!(sim.expect("ChannelHungUp").await["cause"], "rejected");

    // Rings until the application stops it: no answer.
    let leg = sim
        .ctx
        .bus
        .request(
            &c,
            &Originate {
                channel: None,
                endpoint: Endpoint::Device(dev("1002")),
                caller: caller(),
            },
        )
        .await
        .unwrap();
    sim.expect("ChannelCreated").await;
    sim.expect("ChannelRinging").await;
    // A second call to a phone that is ringing: busy.
    sim.ctx
        .bus
        .request(
            &c,
            &Originate {
                channel: None,
                endpoint: Endpoint::Device(dev("1002")),
                caller: caller(),
            },
        )
        .await
        .unwrap();
    sim.expect("ChannelCreated").await;
    assert_eq!(sim.expect("ChannelHungUp").await["cause"], "busy");
    sim.ctx
        .bus
        .request(
            &c,
            &Hangup {
                channel: leg.channel,
                cause: HangupCause::Normal,
            },
        )
        .await
        .unwrap();
    assert_eq!(sim.expect("ChannelHungUp").await["cause"], "no_answer");

    // Auto-answer after a delay.
    sim.ctx
        .bus
        .request(
            &c,
            &SetPhoneMode {
                device: dev("1001"),
                mode: PhoneMode::AutoAnswer { after_ms: 50 },
            },
        )
        .await
        .unwrap();
    sim.ctx
        .bus
        .request(
            &c,
            &Originate {
                channel: None,
                endpoint: Endpoint::Device(dev("1001")),
                caller: caller(),
            },
        )
        .await
        .unwrap();
    sim.expect("ChannelCreated").await;
    sim.expect("ChannelRinging").await;
    sim.expect("ChannelAnswered").await;

    // A caller who hangs up before an answer is gone.
    let inbound = sim
        .ctx
        .bus
        .request(
            &c,
            &PlaceCall {
                queue: "500".into(),
                caller_number: "5550000".into(),
                caller_name: String::new(),
            },
        )
        .await
        .unwrap();
    sim.expect("ChannelCreated").await;
    sim.ctx
        .bus
        .request(
            &c,
            &CallerHangup {
                channel: inbound.channel,
            },
        )
        .await
        .unwrap();
    assert_eq!(sim.expect("ChannelHungUp").await["cause"], "caller_gone");
}

#[tokio::test]
async fn bad_commands_are_refused_with_the_field_named() {
    let sim = Sim::start().await;
    let c = sim.c();
    let e = sim
        .ctx
        .bus
        .request(
            &c,
            &Originate {
                channel: None,
                endpoint: Endpoint::Device(dev("1003")),
                caller: caller(),
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, cc_bus::RequestError::Rejected(r) if r.error == "device_unavailable" && r.field.as_deref() == Some("device")),
        "{e}"
    );
    let e = sim
        .ctx
        .bus
        .request(
            &c,
            &Originate {
                channel: None,
                endpoint: Endpoint::Device(dev("1999")),
                caller: caller(),
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, cc_bus::RequestError::Rejected(r) if r.error == "unknown_device"),
        "{e}"
    );
    let e = sim
        .ctx
        .bus
        .request(
            &c,
            &Answer {
                channel: "nope".into(),
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, cc_bus::RequestError::Rejected(r) if r.error == "unknown_channel" && r.field.as_deref() == Some("channel")),
        "{e}"
    );
    let e = sim
        .ctx
        .bus
        .request(
            &c,
            &PhoneDo {
                device: dev("1001"),
                action: PhoneAction::Answer,
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, cc_bus::RequestError::Rejected(r) if r.error == "no_call"),
        "{e}"
    );
    let e = sim
        .ctx
        .bus
        .request(
            &c,
            &Originate {
                channel: None,
                endpoint: Endpoint::Number("12ab".into()),
                caller: caller(),
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, cc_bus::RequestError::Rejected(r) if r.field.as_deref() == Some("number")),
        "{e}"
    );

    // The HTTP control surface: a caller into a queue, then the caller's hangup.
    let http = reqwest_like_post(
        &format!("{}/tenants/acme/calls", sim.http),
        r#"{"queue":"500","caller_number":"5557777","caller_name":"Sam"}"#,
    )
    .await;
    assert!(http.starts_with("HTTP/1.1 201"), "{http}");
    let http = reqwest_like_post(
        &format!("{}/tenants/acme/calls", sim.http),
        r#"{"queue":"500"}"#,
    )
    .await;
    assert!(
        http.starts_with("HTTP/1.1 400") && http.contains("caller_number"),
        "{http}"
    );
    // Text from outside is checked at this edge: a NUL is removed, a bad number or an
    // overlong name is refused naming the field, a bad queue number too.
    let http = reqwest_like_post(
        &format!("{}/tenants/acme/calls", sim.http),
        r#"{"queue":"500","caller_number":"5557778","caller_name":"a\u0000b"}"#,
    )
    .await;
    assert!(
        http.starts_with("HTTP/1.1 201") && http.contains(r#""name":"ab""#),
        "{http}"
    );
    let http = reqwest_like_post(
        &format!("{}/tenants/acme/calls", sim.http),
        r#"{"queue":"500","caller_number":"555-1234"}"#,
    )
    .await;
    assert!(
        http.starts_with("HTTP/1.1 400") && http.contains(r#""field":"caller_number""#),
        "{http}"
    );
    let long = format!(
        r#"{{"queue":"500","caller_number":"5557779","caller_name":"{}"}}"#,
        "x".repeat(101)
    );
    let http = reqwest_like_post(&format!("{}/tenants/acme/calls", sim.http), &long).await;
    assert!(
        http.starts_with("HTTP/1.1 400") && http.contains(r#""field":"caller_name""#),
        "{http}"
    );
    let http = reqwest_like_post(
        &format!("{}/tenants/acme/calls", sim.http),
        r#"{"queue":"-5","caller_number":"5557779"}"#,
    )
    .await;
    assert!(
        http.starts_with("HTTP/1.1 400") && http.contains(r#""field":"queue""#),
        "{http}"
    );
}

/// A tiny HTTP POST over a raw socket (the simulator's control surface is plain HTTP/JSON).
async fn reqwest_like_post(url: &str, body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    let req = format!(
        "POST /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}
