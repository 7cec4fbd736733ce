//! The SIP gateway with real SIP software nobody here wrote: baresip phones (auto-answering
//! agents, callers on the trunk, each sending its own tone and recording what it hears) and
//! SIPp. Audio is proven with a Goertzel filter over the recordings, not assumed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::phones::{
    assert_hears, assert_hears_from_the_switch, goertzel, music, raw_sip, sipp, wav, window,
    Linphone, Phone, PhoneSpec,
};
use crate::system::{Client, System, SIP_TENANT};

const DOMAIN: &str = "office.localhost";
const AGENT_TONE: f64 = 697.0;
const CALLER_TONE: f64 = 1209.0;
const TARGET_TONE: f64 = 941.0;
const WAIT: Duration = Duration::from_secs(20);

impl System {
    fn gateway(&self) -> SocketAddr {
        self.sip.expect("start_sip")
    }

    /// An agent of the SIP tenant, signed in (not logged in).
    pub(crate) async fn office_agent(&self, n: &str) -> Client {
        let mut c = self.tenant_client(SIP_TENANT);
        let r = c
            .post(
                "/api/login",
                json!({"agent_number": n, "password": format!("demo{n}")}),
            )
            .await
            .ok();
        c.token = Some(r["token"].as_str().unwrap().to_string());
        c
    }

    pub(crate) async fn office_admin(&self) -> Client {
        self.office_user("admin", "demo-admin").await
    }

    /// An admin or supervisor of the SIP tenant, signed in.
    async fn office_user(&self, username: &str, password: &str) -> Client {
        let mut c = self.tenant_client(SIP_TENANT);
        let r = c
            .post(
                "/api/login",
                json!({"username": username, "password": password}),
            )
            .await
            .ok();
        c.token = Some(r["token"].as_str().unwrap().to_string());
        c
    }

    pub(crate) async fn device_online(&self, agent: &Client, device: &str) -> bool {
        let r = agent.get("/api/login-options").await.ok();
        r["devices"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["device"] == device && d["online"] == true)
    }

    pub(crate) async fn wait_device(&self, agent: &Client, device: &str, online: bool) {
        cc_testkit::eventually(
            &format!("device {device} online = {online}"),
            WAIT,
            || async { (self.device_online(agent, device).await == online).then_some(()) },
        )
        .await;
    }

    /// A registered agent phone that answers by itself.
    async fn agent_phone(&self, device: &str, tone: u32) -> Phone {
        let pw = format!("sip{device}");
        let p = Phone::start(
            self.gateway(),
            DOMAIN,
            PhoneSpec {
                tcp: false,
                user: device,
                password: Some(&pw),
                tone,
                auto_answer: true,
                codec: "PCMU",
                name: "",
            },
        )
        .await;
        p.registration("200 OK").await;
        p
    }

    /// A caller on the tenant's trunk (127.0.0.1), not registered, speaking PCMA.
    async fn caller(&self, number: &str, name: &str) -> Phone {
        Phone::start(
            self.gateway(),
            DOMAIN,
            PhoneSpec {
                tcp: false,
                user: number,
                password: None,
                tone: CALLER_TONE as u32,
                auto_answer: false,
                codec: "PCMA",
                name,
            },
        )
        .await
    }
}

pub(crate) async fn idle(sys: &System, agent: &Client) {
    agent.post("/api/session", json!({})).await.ok();
    sys.view_when(agent, "Idle", |v| v["status"] == "idle")
        .await;
}

/// Seconds since `t0`.
pub(crate) fn since(t0: Instant) -> f64 {
    t0.elapsed().as_secs_f64()
}

#[tokio::test]
async fn a_queue_call_with_real_phones_is_heard_both_ways_held_with_music_and_hung_up_from_the_portal(
) {
    let sys = System::start_sip(false).await;
    let _agent_phone = sys.agent_phone("1001", AGENT_TONE as u32).await;
    let mut agent_phone = _agent_phone;
    let alice = sys.office_agent("1001").await;
    sys.wait_device(&alice, "1001", true).await;
    idle(&sys, &alice).await;

    let mut caller = sys.caller("5551234", "Jane").await;
    caller.command("dial", &format!("sip:500@{DOMAIN}")).await;
    // The queue answers at once (music while waiting); the agent's phone rings and answers.
    caller.event("CALL_ESTABLISHED", WAIT).await;
    let t_caller = Instant::now();
    agent_phone.event("CALL_ESTABLISHED", WAIT).await;
    let t_agent = Instant::now();
    let v = sys
        .view_when(&alice, "Connected", |v| v["status"] == "connected")
        .await;
    assert_eq!(v["current_call"]["caller_number"], "5551234", "{v}");
    assert_eq!(v["current_call"]["caller_name"], "Jane", "{v}");
    let connected_at = since(t_caller);

    tokio::time::sleep(Duration::from_secs(3)).await;
    alice
        .post("/api/call/hold", json!({"held": true}))
        .await
        .ok();
    sys.view_when(&alice, "On hold", |v| v["status"] == "on_hold")
        .await;
    // The window starts once the hold is seen (a loaded machine may take a moment).
    let hold_at = since(t_caller);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let unhold_at = since(t_caller);
    alice
        .post("/api/call/hold", json!({"held": false}))
        .await
        .ok();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // A key the caller presses (RFC 4733 telephone-event) reaches the agent's phone.
    caller.command("sndcode", "5").await;
    let dtmf = agent_phone.event("CALL_DTMF_START", WAIT).await;
    assert_eq!(dtmf["param"], "5", "{dtmf}");

    // Hangup from the portal: BYE to both phones.
    alice.post("/api/call/hangup", json!({})).await.ok();
    caller.event("CALL_CLOSED", WAIT).await;
    agent_phone.event("CALL_CLOSED", WAIT).await;
    let v = sys
        .view_when(&alice, "counted", |v| v["counts"]["completed"] == 1)
        .await;
    assert_eq!(
        v["counts"],
        json!({"completed": 1, "missed": 0, "rejected": 0})
    );

    // What each side heard.
    let (c, rate) = wav(caller.heard().last().expect("the caller's recording"));
    let (a, arate) = wav(agent_phone.heard().last().expect("the agent's recording"));
    let agent_start = t_agent.duration_since(t_caller).as_secs_f64();
    assert_hears(
        "the caller, while connected",
        window(&c, rate, connected_at + 0.8, hold_at - 0.2),
        rate,
        AGENT_TONE,
        CALLER_TONE,
    );
    assert_hears(
        "the agent, while connected",
        window(&a, arate, 0.8, hold_at - agent_start - 0.2),
        arate,
        CALLER_TONE,
        AGENT_TONE,
    );
    // On hold the caller hears the music, not the agent.
    let held = window(&c, rate, hold_at + 0.8, unhold_at - 0.2);
    let (m, agent) = (music(held, rate), goertzel(held, rate, AGENT_TONE));
    assert!(
        m > 100.0 * agent.max(1.0),
        "on hold: music {m:.0} should be far above the agent's tone {agent:.0}"
    );
    // And back: the agent again.
    assert_hears(
        "the caller, after hold",
        window(&c, rate, unhold_at + 0.8, unhold_at + 1.8),
        rate,
        AGENT_TONE,
        CALLER_TONE,
    );
}

#[tokio::test]
async fn registration_needs_the_right_password_expires_unregisters_and_survives_a_gateway_restart()
{
    let mut sys = System::start_sip(true).await;
    let gw = sys.gateway();
    let bob = sys.office_agent("1002").await;
    let admin = sys.office_admin().await;
    admin
        .call(
            Method::PUT,
            "/api/admin/queues/500/settings",
            Some(json!({"wrap_up_s": 1})),
        )
        .await
        .ok();

    // Right password: online.
    let _p1 = sys.agent_phone("1001", 697).await;
    sys.wait_device(&bob, "1001", true).await;

    // Wrong password: refused, nothing registered.
    let wrong = Phone::start(
        gw,
        DOMAIN,
        PhoneSpec {
            tcp: false,
            user: "1002",
            password: Some("not-it"),
            tone: 697,
            auto_answer: true,
            codec: "PCMU",
            name: "",
        },
    )
    .await;
    wrong.registration("403 Forbidden").await;
    assert!(!sys.device_online(&bob, "1002").await);

    // A short registration (SIPp, 2 s) comes online and goes offline when it expires.
    sipp_register(gw, "1003", "sip1003", 2);
    sys.wait_device(&bob, "1003", true).await;
    sys.wait_device(&bob, "1003", false).await;

    // Expires: 0 unregisters at once.
    sipp_register(gw, "1004", "sip1004", 600);
    sys.wait_device(&bob, "1004", true).await;
    sipp_register(gw, "1004", "sip1004", 0);
    sys.wait_device(&bob, "1004", false).await;

    // Another tenant's domain (the simulator's demo tenant) is none of the gateway's.
    let msg = "REGISTER sip:demo.localhost SIP/2.0\r\nVia: SIP/2.0/UDP {src}:{port};branch=z9hG4bK-x1;rport\r\nFrom: <sip:1001@demo.localhost>;tag=a\r\n\
               To: <sip:1001@demo.localhost>\r\nCall-ID: reg-other@x\r\nCSeq: 1 REGISTER\r\nContact: <sip:1001@{src}:{port}>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(raw_sip(gw, "127.0.0.1", msg).await, Some(404));

    // A call in progress when the gateway dies (SIGKILL): its channels are reported hung up
    // by the next gateway process, so the agent is not left Connected.
    let alice = sys.office_agent("1001").await;
    idle(&sys, &alice).await;
    let mut p1 = _p1;
    let mut first = sys.caller("5558888", "Lost").await;
    first.command("dial", &format!("sip:500@{DOMAIN}")).await;
    p1.event("CALL_ESTABLISHED", WAIT).await;
    sys.view_when(&alice, "Connected before the restart", |v| {
        v["status"] == "connected"
    })
    .await;
    // A gateway restart (SIGKILL): 1001 stays online and still takes calls.
    sys.restart_gateway();
    cc_testkit::eventually("the gateway back", WAIT, || async {
        raw_sip(gw, "127.0.0.1", &options())
            .await
            .filter(|c| *c == 200)
    })
    .await;
    assert!(
        sys.device_online(&bob, "1001").await,
        "a registered device stays online across a restart"
    );
    let v = sys
        .view_when(&alice, "the lost call ended", |v| {
            v["status"] != "connected" && v["counts"]["completed"] == 1
        })
        .await;
    assert!(
        v["current_call"].is_null() || v["status"] == "wrap_up",
        "{v}"
    );
    sys.view_when(&alice, "Idle again", |v| v["status"] == "idle")
        .await;
    // The phones still think they are on the lost call: they hang up.
    p1.command("hangup", "").await;
    p1.event("CALL_CLOSED", WAIT).await;
    drop(first);
    let mut caller = sys.caller("5559999", "Max").await;
    caller.command("dial", &format!("sip:500@{DOMAIN}")).await;
    p1.event("CALL_ESTABLISHED", WAIT).await;
    sys.view_when(&alice, "Connected after the restart", |v| {
        v["status"] == "connected"
    })
    .await;
}

#[tokio::test]
async fn a_declined_call_counts_rejected_and_an_unanswered_one_missed() {
    let sys = System::start_sip(false).await;
    let gw = sys.gateway();
    let admin = sys.office_admin().await;
    admin
        .call(
            Method::PUT,
            "/api/admin/queues/501/settings",
            Some(json!({"ring_timeout_s": 3, "reject_delay_s": 1, "wrap_up_s": 1})),
        )
        .await
        .ok();

    // Carol (1003, queue 501) on a SIPp phone that declines (603).
    let uas_port = cc_testkit::free_port();
    let mut decliner = crate::phones::sipp_spawn(&decline_xml(), uas_port);
    let out = sipp(
        &register_xml_contact("1003", "sip1003", 600, uas_port),
        gw,
        "127.0.0.1",
        &[],
    );
    assert!(
        out.status.success(),
        "sipp: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let carol = sys.office_agent("1003").await;
    sys.wait_device(&carol, "1003", true).await;
    idle(&sys, &carol).await;
    let mut caller = sys.caller("5550001", "Rex").await;
    caller.command("dial", &format!("sip:501@{DOMAIN}")).await;
    let v = sys
        .view_when(&carol, "a Rejected call", |v| v["counts"]["rejected"] == 1)
        .await;
    assert_eq!(v["counts"]["missed"], 0);
    let status = decliner.wait().unwrap();
    assert!(
        status.success(),
        "the SIPp phone saw INVITE, sent 603, got ACK"
    );
    caller.command("hangup", "").await;
    caller.event("CALL_CLOSED", WAIT).await;
    carol.call(Method::DELETE, "/api/session", None).await.ok();

    // Dave (1004, queues 500 and 501) on a baresip phone nobody answers: Missed after 3 s.
    let pw = "sip1004".to_string();
    let mut dave_phone = Phone::start(
        gw,
        DOMAIN,
        PhoneSpec {
            tcp: false,
            user: "1004",
            password: Some(&pw),
            tone: 697,
            auto_answer: false,
            codec: "PCMU",
            name: "",
        },
    )
    .await;
    dave_phone.registration("200 OK").await;
    let dave = sys.office_agent("1004").await;
    sys.wait_device(&dave, "1004", true).await;
    idle(&sys, &dave).await;
    let mut caller = sys.caller("5550002", "Sam").await;
    caller.command("dial", &format!("sip:501@{DOMAIN}")).await;
    dave_phone.event("CALL_INCOMING", WAIT).await;
    // The ring timeout CANCELs the INVITE: the phone stops ringing.
    dave_phone.event("CALL_CLOSED", WAIT).await;
    let v = sys
        .view_when(&dave, "a Missed call", |v| v["counts"]["missed"] == 1)
        .await;
    assert_eq!(v["counts"]["rejected"], 0);
}

#[tokio::test]
async fn bad_sip_gets_a_sip_error_and_records_nothing() {
    let sys = System::start_sip(false).await;
    let gw = sys.gateway();
    let before = sys.event_count().await;
    let invite = |from_ip: &str, ruri: &str, sdp: &str| {
        format!(
            "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {from_ip}:{{port}};branch=z9hG4bK-{b};rport\r\nFrom: \"Eve\" <sip:5550666@{DOMAIN}>;tag=e1\r\n\
             To: <{ruri}>\r\nCall-ID: {b}@x\r\nCSeq: 1 INVITE\r\nContact: <sip:5550666@{from_ip}:{{port}}>\r\nMax-Forwards: 70\r\n\
             Content-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n{sdp}",
            b = uuid::Uuid::new_v4().simple(),
            len = sdp.len()
        )
    };
    let good_sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    // Garbage and a truncated request: no answer, no crash.
    assert_eq!(
        raw_sip(gw, "127.0.0.1", "\u{1}\u{2}not sip at all\r\n\r\n").await,
        None
    );
    assert_eq!(
        raw_sip(
            gw,
            "127.0.0.1",
            "INVITE sip:500@office.localhost SIP/2.0\r\nVia: broken\r\n\r\n"
        )
        .await,
        None
    );
    // Not from the trunk nor a device: 403.
    assert_eq!(
        raw_sip(
            gw,
            "127.0.0.2",
            &invite("127.0.0.2", &format!("sip:500@{DOMAIN}"), good_sdp)
        )
        .await,
        Some(403)
    );
    // No such queue: 404. No such domain: 404.
    assert_eq!(
        raw_sip(
            gw,
            "127.0.0.1",
            &invite("127.0.0.1", &format!("sip:599@{DOMAIN}"), good_sdp)
        )
        .await,
        Some(404)
    );
    assert_eq!(
        raw_sip(
            gw,
            "127.0.0.1",
            &invite("127.0.0.1", "sip:500@nowhere.example", good_sdp)
        )
        .await,
        Some(404)
    );
    // A broken SDP: 400; only an unknown codec: 488.
    assert_eq!(
        raw_sip(
            gw,
            "127.0.0.1",
            &invite(
                "127.0.0.1",
                &format!("sip:500@{DOMAIN}"),
                "v=0\r\nm=what\r\n"
            )
        )
        .await,
        Some(400)
    );
    let g729 = good_sdp
        .replace("RTP/AVP 0", "RTP/AVP 18")
        .replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:18 G729/8000");
    assert_eq!(
        raw_sip(
            gw,
            "127.0.0.1",
            &invite("127.0.0.1", &format!("sip:500@{DOMAIN}"), &g729)
        )
        .await,
        Some(488)
    );
    // A REGISTER flood from one address is throttled (503) once past the per-minute limit.
    let register = "REGISTER sip:office.localhost SIP/2.0\r\nVia: SIP/2.0/UDP {src}:{port};branch=z9hG4bK-f{n};rport\r\nFrom: <sip:1001@office.localhost>;tag=f\r\n\
                    To: <sip:1001@office.localhost>\r\nCall-ID: flood{n}@x\r\nCSeq: 1 REGISTER\r\nContact: <sip:1001@{src}:{port}>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
    let mut codes = vec![];
    for n in 0..125 {
        codes.push(raw_sip(gw, "127.0.0.3", &register.replace("{n}", &n.to_string())).await);
    }
    assert_eq!(codes[0], Some(401), "challenged first");
    assert_eq!(
        codes.last().copied().flatten(),
        Some(503),
        "throttled after 120 a minute"
    );
    // Another address is not throttled.
    assert_eq!(
        raw_sip(gw, "127.0.0.4", &register.replace("{n}", "x")).await,
        Some(401)
    );
    // Still alive and nothing recorded.
    assert_eq!(raw_sip(gw, "127.0.0.1", &options()).await, Some(200));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let calls: i64 =
        sqlx::query_scalar("select count(*) from es_events where stream like 'office/call-%'")
            .fetch_one(&sys.db.pool)
            .await
            .unwrap();
    assert_eq!(calls, 0, "no call was recorded");
    assert!(sys.event_count().await >= before);
}

/// Alice (1001) connected over real phones with a caller; returns the phones, Alice, and when
/// the caller's recording began.
async fn alice_connected(sys: &System) -> (Phone, Phone, Client, Instant) {
    let admin = sys.office_admin().await;
    admin
        .call(
            Method::PUT,
            "/api/admin/queues/500/settings",
            Some(json!({"wrap_up_s": 1})),
        )
        .await
        .ok();
    let alice_phone = sys.agent_phone("1001", AGENT_TONE as u32).await;
    let alice = sys.office_agent("1001").await;
    sys.wait_device(&alice, "1001", true).await;
    idle(sys, &alice).await;
    let mut caller = sys.caller("5551234", "Jane").await;
    caller.command("dial", &format!("sip:500@{DOMAIN}")).await;
    caller.event("CALL_ESTABLISHED", WAIT).await;
    let t0 = Instant::now();
    sys.view_when(&alice, "Connected", |v| v["status"] == "connected")
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    (alice_phone, caller, alice, t0)
}

#[tokio::test]
async fn after_a_blind_transfer_the_caller_hears_the_target_and_no_longer_the_first_agent() {
    let sys = System::start_sip(false).await;
    let (mut alice_phone, mut caller, alice, t0) = alice_connected(&sys).await;
    let mut target = sys.agent_phone("1002", TARGET_TONE as u32).await;
    let before = since(t0);
    alice
        .post(
            "/api/call/transfer",
            json!({"method": "blind", "target": {"extension": "1002"}}),
        )
        .await
        .ok();
    alice_phone.event("CALL_CLOSED", WAIT).await;
    target.event("CALL_ESTABLISHED", WAIT).await;
    let answered = since(t0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let end = since(t0);
    caller.command("hangup", "").await;
    target.event("CALL_CLOSED", WAIT).await;
    let (c, rate) = wav(caller.heard().last().unwrap());
    assert_hears(
        "the caller, with Alice",
        window(&c, rate, before - 1.5, before - 0.2),
        rate,
        AGENT_TONE,
        TARGET_TONE,
    );
    assert_hears_from_the_switch(
        "the caller, after the blind transfer",
        &c,
        rate,
        TARGET_TONE,
        AGENT_TONE,
        (end - answered) / 2.0,
    );
    let (t, trate) = wav(target.heard().last().unwrap());
    assert_hears(
        "the target",
        window(&t, trate, 0.8, end - answered - 0.2),
        trate,
        CALLER_TONE,
        AGENT_TONE,
    );
    sys.view_when(&alice, "Alice's call counted", |v| {
        v["counts"]["completed"] == 1
    })
    .await;
}

#[tokio::test]
async fn the_agents_phone_transfer_button_is_the_portals_blind_transfer_to_the_agent_on_that_extension(
) {
    let sys = System::start_sip(false).await;
    let (mut alice_phone, mut caller, alice, t0) = alice_connected(&sys).await;
    let mut bob_phone = sys.agent_phone("1002", TARGET_TONE as u32).await;
    let bob = sys.office_agent("1002").await;
    sys.wait_device(&bob, "1002", true).await;
    idle(&sys, &bob).await;
    // baresip's transfer command sends REFER (Refer-To: sip:1002@office.localhost).
    alice_phone
        .command("transfer", &format!("sip:1002@{DOMAIN}"))
        .await;
    alice_phone.event("CALL_CLOSED", WAIT).await;
    bob_phone.event("CALL_ESTABLISHED", WAIT).await;
    let answered = since(t0);
    let v = sys
        .view_when(&bob, "Bob connected with the transferred call", |v| {
            v["status"] == "connected" && v["current_call"]["received_transfer"].is_null()
        })
        .await;
    assert_eq!(v["current_call"]["transferred_from"], "1001", "{v}");
    let call = v["current_call"]["call"].as_str().unwrap().to_string();
    let v = sys
        .view_when(&alice, "Alice's call counted", |v| {
            v["counts"]["completed"] == 1
        })
        .await;
    assert_eq!(v["current_call"]["ended_by"], "transferred", "{v}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let end = since(t0);
    caller.command("hangup", "").await;
    bob_phone.event("CALL_CLOSED", WAIT).await;
    let (c, rate) = wav(caller.heard().last().unwrap());
    assert_hears_from_the_switch(
        "the caller, after the phone's transfer",
        &c,
        rate,
        TARGET_TONE,
        AGENT_TONE,
        (end - answered) / 2.0,
    );
    // The same events as the portal's blind transfer to an agent.
    let events = cc_testkit::eventually("the transfer recorded", WAIT, || async {
        let e = sys
            .stream_events(&format!("{SIP_TENANT}/call-{call}"))
            .await;
        e.iter().any(|(t, _)| t == "TransferCompleted").then_some(e)
    })
    .await;
    let started = &events
        .iter()
        .find(|(t, _)| t == "TransferStarted")
        .unwrap()
        .1;
    assert_eq!(
        (
            &started["method"],
            &started["target"],
            &started["target_agent"]
        ),
        (&json!("blind"), &json!({"agent": "1002"}), &json!("1002"))
    );
}

#[tokio::test]
async fn an_attended_transfer_from_linphone_consults_the_target_on_its_own_call_then_joins_the_caller(
) {
    let sys = System::start_sip(false).await;
    let admin = sys.office_admin().await;
    admin
        .call(
            Method::PUT,
            "/api/admin/queues/500/settings",
            Some(json!({"wrap_up_s": 1})),
        )
        .await
        .ok();
    // Alice's phone is linphonec (answers by itself); Bob's a baresip phone with its tone.
    let mut alice_phone = Linphone::start(sys.gateway(), DOMAIN, "1001", "sip1001").await;
    let alice = sys.office_agent("1001").await;
    sys.wait_device(&alice, "1001", true).await;
    idle(&sys, &alice).await;
    let mut bob_phone = sys.agent_phone("1002", TARGET_TONE as u32).await;
    let bob = sys.office_agent("1002").await;
    sys.wait_device(&bob, "1002", true).await;
    idle(&sys, &bob).await;
    let mut caller = sys.caller("5551234", "Jane").await;
    caller.command("dial", &format!("sip:500@{DOMAIN}")).await;
    caller.event("CALL_ESTABLISHED", WAIT).await;
    let t0 = Instant::now();
    let v = sys
        .view_when(&alice, "Alice connected", |v| v["status"] == "connected")
        .await;
    let call = v["current_call"]["call"].as_str().unwrap().to_string();
    // Alice consults Bob on a call of her phone's own: linphone holds the customer (the
    // portal shows On hold), the gateway rings extension 1002 and bridges the two.
    alice_phone.send("pause 1").await;
    sys.view_when(&alice, "the customer on hold by the phone", |v| {
        v["status"] == "on_hold"
    })
    .await;
    alice_phone.send(&format!("call sip:1002@{DOMAIN}")).await;
    bob_phone.event("CALL_ESTABLISHED", WAIT).await;
    let held = since(t0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let consulted = since(t0);
    // Then the phone's transfer: REFER with Replaces naming the consultation call.
    alice_phone.send("transfer 1 --to-call 2").await;
    let v = sys
        .view_when(&bob, "Bob has the customer", |v| {
            v["status"] == "connected" && v["current_call"]["received_transfer"].is_null()
        })
        .await;
    assert_eq!(v["current_call"]["call"], call.as_str(), "{v}");
    let joined = since(t0);
    sys.view_when(&alice, "Alice off the call, counted", |v| {
        v["counts"]["completed"] == 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let end = since(t0);
    caller.command("hangup", "").await;
    bob_phone.event("CALL_CLOSED", WAIT).await;
    let (c, rate) = wav(caller.heard().last().unwrap());
    // Held by the phone during the consultation: music, not Bob.
    let w = window(&c, rate, held + 0.5, consulted - 0.2);
    let (m, bob_tone) = (music(w, rate), goertzel(w, rate, TARGET_TONE));
    assert!(
        m > 100.0 * bob_tone.max(1.0),
        "the held customer hears music {m:.0}, far above the consultation {bob_tone:.0}"
    );
    assert_hears(
        "the caller, after the phone's attended transfer",
        window(&c, rate, joined + 0.8, end - 0.2),
        rate,
        TARGET_TONE,
        AGENT_TONE,
    );
    let events = cc_testkit::eventually("the transfer recorded", WAIT, || async {
        let e = sys
            .stream_events(&format!("{SIP_TENANT}/call-{call}"))
            .await;
        e.iter().any(|(t, _)| t == "TransferCompleted").then_some(e)
    })
    .await;
    let kinds: Vec<&str> = events
        .iter()
        .map(|(t, _)| t.as_str())
        .skip_while(|t| *t != "TransferStarted")
        .take(5)
        .collect();
    assert_eq!(
        kinds,
        vec![
            "TransferStarted",
            "TransferAnswered",
            "CallEnded",
            "TransferCompleted",
            "CallConnected"
        ]
    );
    let started = &events
        .iter()
        .find(|(t, _)| t == "TransferStarted")
        .unwrap()
        .1;
    assert_eq!(
        (&started["method"], &started["target_agent"]),
        (&json!("attended"), &json!("1002"))
    );
    drop(alice_phone);
}

#[tokio::test]
async fn during_an_attended_transfer_the_caller_hears_music_and_after_complete_the_target() {
    let sys = System::start_sip(false).await;
    let (mut alice_phone, mut caller, alice, t0) = alice_connected(&sys).await;
    let mut carol_phone = sys.agent_phone("1003", TARGET_TONE as u32).await;
    let carol = sys.office_agent("1003").await;
    sys.wait_device(&carol, "1003", true).await;
    idle(&sys, &carol).await;
    alice
        .post(
            "/api/call/transfer",
            json!({"method": "attended", "target": {"agent": "1003"}}),
        )
        .await
        .ok();
    carol_phone.event("CALL_ESTABLISHED", WAIT).await;
    let consult = since(t0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let complete = since(t0);
    alice
        .post("/api/call/transfer/complete", json!({}))
        .await
        .ok();
    alice_phone.event("CALL_CLOSED", WAIT).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let end = since(t0);
    caller.command("hangup", "").await;
    carol_phone.event("CALL_CLOSED", WAIT).await;

    let (c, rate) = wav(caller.heard().last().unwrap());
    let held = window(&c, rate, consult + 0.8, complete - 0.2);
    let (m, a, t) = (
        music(held, rate),
        goertzel(held, rate, AGENT_TONE),
        goertzel(held, rate, TARGET_TONE),
    );
    assert!(
        m > 100.0 * a.max(t).max(1.0),
        "held during the consultation: music {m:.0}, Alice {a:.0}, Carol {t:.0}"
    );
    assert_hears(
        "the caller, after Complete",
        window(&c, rate, complete + 1.0, end - 0.2),
        rate,
        TARGET_TONE,
        AGENT_TONE,
    );
    // Alice and Carol heard each other during the consultation.
    let (a_rec, arate) = wav(alice_phone.heard().last().unwrap());
    let a_consult = window(&a_rec, arate, 0.0, a_rec.len() as f64 / arate as f64);
    assert!(
        goertzel(a_consult, arate, TARGET_TONE) > 10.0,
        "Alice heard Carol at some point"
    );
}

#[tokio::test]
async fn an_admin_creates_a_sip_device_whose_password_is_shown_once_and_a_phone_registers_with_it()
{
    let sys = System::start_sip(false).await;
    let admin = sys.office_admin().await;
    let created = admin
        .post("/api/admin/devices", json!({"device": "1008"}))
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let c = created.body;
    assert_eq!(
        (c["username"].as_str(), c["domain"].as_str()),
        (Some("1008"), Some(DOMAIN))
    );
    let password = c["password"].as_str().unwrap().to_string();
    assert!(password.len() >= 12, "a strong generated password");
    // Never shown again, and never stored: the list has no password, the table only HA1.
    let list = admin.get("/api/admin/devices").await.ok();
    assert!(!list.to_string().contains(&password));
    let stored: String =
        sqlx::query_scalar("select ha1 || realm from sip_devices where device = '1008'")
            .fetch_one(&sys.db.pool)
            .await
            .unwrap();
    assert!(!stored.contains(&password));
    // Bad input names the field; the simulator's tenant has no SIP devices.
    admin
        .post("/api/admin/devices", json!({"device": "10x8"}))
        .await
        .refused(400, "invalid_field");
    let demo_admin = sys.demo_tenant().admin().await;
    demo_admin
        .get("/api/admin/devices")
        .await
        .refused(409, "not_sip_tenant");

    let agent = sys.office_agent("1001").await;
    let phone = Phone::start(
        sys.gateway(),
        DOMAIN,
        PhoneSpec {
            tcp: false,
            user: "1008",
            password: Some(&password),
            tone: 697,
            auto_answer: true,
            codec: "PCMU",
            name: "",
        },
    )
    .await;
    phone.registration("200 OK").await;
    sys.wait_device(&agent, "1008", true).await;
    let list = admin.get("/api/admin/devices").await.ok();
    let d = list
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device"] == "1008")
        .unwrap()
        .clone();
    assert_eq!(d["registered"], true, "{d}");
    drop(phone);

    // A new password: the old one no longer registers. Removing the device takes it offline.
    let renewed = admin
        .post("/api/admin/devices/1008/password", json!({}))
        .await
        .ok();
    assert_ne!(renewed["password"], json!(password));
    let old = Phone::start(
        sys.gateway(),
        DOMAIN,
        PhoneSpec {
            tcp: false,
            user: "1008",
            password: Some(&password),
            tone: 697,
            auto_answer: true,
            codec: "PCMU",
            name: "",
        },
    )
    .await;
    old.registration("403 Forbidden").await;
    let r = admin
        .call(Method::DELETE, "/api/admin/devices/1008", None)
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    sys.wait_device(&agent, "1008", false).await;
}

#[tokio::test]
async fn a_phone_that_holds_the_call_itself_is_reported_held_and_the_caller_hears_music() {
    let sys = System::start_sip(false).await;
    let client = sys.operator_nats().await.unwrap();
    let mut facts = client
        .subscribe(format!("{}.pbx.evt.{SIP_TENANT}.channel.>", sys.prefix))
        .await
        .unwrap();
    client.flush().await.unwrap();
    let (mut alice_phone, mut caller, alice, t0) = alice_connected(&sys).await;
    // The agent presses Hold on the phone: a re-INVITE with sendonly, answered recvonly.
    alice_phone.command("hold", "").await;
    let kind = |v: &Value| v["type"].as_str().unwrap_or("").to_string();
    let held = next_fact(&mut facts, |v| kind(v) == "ChannelHeld").await;
    let leg = held["channel"].as_str().unwrap().to_string();
    // The portal shows the phone's hold as a hold (the same CallHeld as its button).
    sys.view_when(&alice, "On hold from the phone", |v| {
        v["status"] == "on_hold"
    })
    .await;
    let hold_at = since(t0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let resume_at = since(t0);
    alice_phone.command("resume", "").await;
    sys.view_when(&alice, "Connected again from the phone", |v| {
        v["status"] == "connected"
    })
    .await;
    let unheld = next_fact(&mut facts, |v| kind(v) == "ChannelUnheld").await;
    assert_eq!(
        unheld["channel"],
        json!(leg),
        "the same leg is taken off hold"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let end = since(t0);
    caller.command("hangup", "").await;
    alice_phone.event("CALL_CLOSED", WAIT).await;
    let (c, rate) = wav(caller.heard().last().unwrap());
    let held = window(&c, rate, hold_at + 0.8, resume_at - 0.2);
    let (m, a) = (music(held, rate), goertzel(held, rate, AGENT_TONE));
    assert!(
        m > 100.0 * a.max(1.0),
        "while the phone holds: music {m:.0}, agent {a:.0}"
    );
    assert_hears(
        "the caller, after the phone resumed",
        window(&c, rate, resume_at + 0.8, end - 0.2),
        rate,
        AGENT_TONE,
        CALLER_TONE,
    );
}

async fn next_fact(sub: &mut async_nats::Subscriber, pred: impl Fn(&Value) -> bool) -> Value {
    use futures::StreamExt;
    loop {
        let m = tokio::time::timeout(WAIT, sub.next())
            .await
            .expect("a PBX fact within 20 s")
            .unwrap();
        let v: Value = serde_json::from_slice(&m.payload).unwrap();
        if pred(&v) {
            return v;
        }
    }
}

#[tokio::test]
async fn a_registered_phone_off_the_trunk_calls_a_queue_after_a_digest_challenge() {
    let sys = System::start_sip(false).await;
    let alice_phone = sys.agent_phone("1001", AGENT_TONE as u32).await;
    let alice = sys.office_agent("1001").await;
    sys.wait_device(&alice, "1001", true).await;
    idle(&sys, &alice).await;
    // Bob's desk phone on 127.0.0.2 (not the trunk): registered, it may call with its password.
    let pw = "sip1002".to_string();
    let mut bob = Phone::start_on(
        "127.0.0.2",
        sys.gateway(),
        DOMAIN,
        PhoneSpec {
            tcp: false,
            user: "1002",
            password: Some(&pw),
            tone: 941,
            auto_answer: false,
            codec: "PCMU",
            name: "Bob",
        },
    )
    .await;
    bob.registration("200 OK").await;
    bob.command("dial", &format!("sip:500@{DOMAIN}")).await;
    bob.event("CALL_ESTABLISHED", WAIT).await;
    let v = sys
        .view_when(&alice, "Connected with Bob's desk phone", |v| {
            v["status"] == "connected"
        })
        .await;
    assert_eq!(v["current_call"]["caller_number"], "1002", "{v}");
    drop(alice_phone);
    // A phone off the trunk with a wrong password gets no call in.
    let wrong = "nope".to_string();
    let mut eve = Phone::start_on(
        "127.0.0.2",
        sys.gateway(),
        DOMAIN,
        PhoneSpec {
            tcp: false,
            user: "1003",
            password: Some(&wrong),
            tone: 941,
            auto_answer: false,
            codec: "PCMU",
            name: "Eve",
        },
    )
    .await;
    eve.command("dial", &format!("sip:500@{DOMAIN}")).await;
    eve.event("CALL_CLOSED", WAIT).await;
}

#[tokio::test]
async fn in_a_live_transfer_each_of_three_phones_hears_the_other_two_then_the_held_customer_hears_music(
) {
    let sys = System::start_sip(false).await;
    let (mut alice_phone, mut caller, alice, t0) = alice_connected(&sys).await;
    let mut carol_phone = sys.agent_phone("1003", TARGET_TONE as u32).await;
    let carol = sys.office_agent("1003").await;
    sys.wait_device(&carol, "1003", true).await;
    idle(&sys, &carol).await;
    alice
        .post(
            "/api/call/transfer",
            json!({"method": "live", "target": {"agent": "1003"}}),
        )
        .await
        .ok();
    carol_phone.event("CALL_ESTABLISHED", WAIT).await;
    let carol_start = since(t0);
    sys.view_when(&alice, "conference", |v| {
        v["current_call"]["transfer"]["state"] == "conference"
    })
    .await;
    let three = since(t0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let three_end = since(t0);
    alice
        .post("/api/call/hold", json!({"held": true}))
        .await
        .ok();
    sys.view_when(&alice, "customer held", |v| {
        v["current_call"]["transfer"]["customer_held"] == true
    })
    .await;
    let hold = since(t0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let resume = since(t0);
    alice
        .post("/api/call/hold", json!({"held": false}))
        .await
        .ok();
    sys.view_when(&alice, "customer back", |v| v["status"] == "connected")
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let complete = since(t0);
    alice
        .post("/api/call/transfer/complete", json!({}))
        .await
        .ok();
    alice_phone.event("CALL_CLOSED", WAIT).await;
    let alice_end = since(t0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let end = since(t0);
    caller.command("hangup", "").await;
    carol_phone.event("CALL_CLOSED", WAIT).await;

    let (c, rate) = wav(caller.heard().last().unwrap());
    let (a, arate) = wav(alice_phone.heard().last().unwrap());
    let (t, trate) = wav(carol_phone.heard().last().unwrap());
    // Alice's recording ends when her call closed: her windows are counted from its end.
    let alice_at = |x: f64| a.len() as f64 / arate as f64 - (alice_end - x);
    let level = |s: &[f64], r: u32, f: f64| goertzel(s, r, f);
    // Three parties: each hears the other two, never itself.
    let w = window(&c, rate, three + 0.8, three_end - 0.2);
    assert!(
        level(w, rate, AGENT_TONE) > 100.0 * level(w, rate, CALLER_TONE).max(1.0)
            && level(w, rate, TARGET_TONE) > 100.0 * level(w, rate, CALLER_TONE).max(1.0),
        "the customer hears Alice and Carol, not itself"
    );
    let w = window(&a, arate, alice_at(three + 0.8), alice_at(three_end - 0.2));
    assert!(
        level(w, arate, CALLER_TONE) > 100.0 * level(w, arate, AGENT_TONE).max(1.0)
            && level(w, arate, TARGET_TONE) > 100.0 * level(w, arate, AGENT_TONE).max(1.0),
        "Alice hears the customer and Carol, not herself"
    );
    let w = window(
        &t,
        trate,
        three - carol_start + 0.8,
        three_end - carol_start - 0.2,
    );
    assert!(
        level(w, trate, CALLER_TONE) > 100.0 * level(w, trate, TARGET_TONE).max(1.0)
            && level(w, trate, AGENT_TONE) > 100.0 * level(w, trate, TARGET_TONE).max(1.0),
        "Carol hears the customer and Alice, not herself"
    );
    // The customer on temporary hold hears the music; Alice and Carol hear each other only.
    let w = window(&c, rate, hold + 0.8, resume - 0.2);
    assert!(
        music(w, rate)
            > 100.0
                * level(w, rate, AGENT_TONE)
                    .max(level(w, rate, TARGET_TONE))
                    .max(1.0),
        "the held customer hears music"
    );
    assert_hears(
        "Alice while the customer is held",
        window(&a, arate, alice_at(hold + 0.8), alice_at(resume - 0.2)),
        arate,
        TARGET_TONE,
        CALLER_TONE,
    );
    assert_hears(
        "Carol while the customer is held",
        window(
            &t,
            trate,
            hold - carol_start + 0.8,
            resume - carol_start - 0.2,
        ),
        trate,
        AGENT_TONE,
        CALLER_TONE,
    );
    // After Complete: customer and Carol, Alice gone.
    assert_hears(
        "the customer after Complete",
        window(&c, rate, complete + 1.0, end - 0.2),
        rate,
        TARGET_TONE,
        AGENT_TONE,
    );
    assert_hears(
        "Carol after Complete",
        window(
            &t,
            trate,
            complete - carol_start + 1.0,
            end - carol_start - 0.2,
        ),
        trate,
        CALLER_TONE,
        AGENT_TONE,
    );
}

/// One matrix serves a supervisor: Listen (hears both, heard by none), Whisper (heard by the
/// agent only), Barge (heard by both). Driven through the PBX contract with three real phones.
#[tokio::test]
async fn from_the_supervisor_page_a_listener_is_heard_by_no_one_a_whisper_by_the_agent_only_a_barge_by_both(
) {
    const SUPERVISOR_TONE: f64 = 852.0;
    let sys = System::start_sip(false).await;
    let (mut alice_phone, mut caller, _alice, t0) = alice_connected(&sys).await;
    let mut sup_phone = sys.agent_phone("1005", SUPERVISOR_TONE as u32).await;
    let sup = sys.office_user("supervisor", "demo-supervisor").await;
    let path = "/api/supervisor/agents/1001/monitor";
    let r = sup
        .post(path, json!({"device": "1005", "mode": "listen"}))
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    sup_phone.event("CALL_ESTABLISHED", WAIT).await;
    crate::monitor::supervised(&sup, "1001", "the supervisor on the call", |v| {
        v["current_call"]["monitor"]["state"] == "on_call"
    })
    .await;
    let listen = since(t0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let switch = |mode: &str| {
        let (sup, mode) = (&sup, mode.to_string());
        async move {
            let r = sup
                .call(Method::PATCH, path, Some(json!({ "mode": mode })))
                .await;
            assert_eq!(r.status, 204, "{}", r.body);
        }
    };
    switch("whisper").await;
    let whisper = since(t0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    switch("barge").await;
    let barge = since(t0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let end = since(t0);
    // The caller hangs up: the agent's and the supervisor's phones are hung up with the call.
    caller.command("hangup", "").await;
    alice_phone.event("CALL_CLOSED", WAIT).await;
    let alice_end = since(t0);
    sup_phone.event("CALL_CLOSED", WAIT).await;
    let sup_end = since(t0);

    let (cu, r) = wav(caller.heard().last().unwrap());
    let (ag, ar) = wav(alice_phone.heard().last().unwrap());
    let (su, sr) = wav(sup_phone.heard().last().unwrap());
    // The phones' recordings end when their calls closed: their windows count from there.
    let at = |len: usize, rate: u32, closed: f64, x: f64| len as f64 / rate as f64 - (closed - x);
    let cw = |a: f64, b: f64| window(&cu, r, a + 0.8, b - 0.2).to_vec();
    let aw = |a: f64, b: f64| {
        window(
            &ag,
            ar,
            at(ag.len(), ar, alice_end, a) + 0.8,
            at(ag.len(), ar, alice_end, b) - 0.2,
        )
        .to_vec()
    };
    let sw = |a: f64, b: f64| {
        window(
            &su,
            sr,
            at(su.len(), sr, sup_end, a) + 0.8,
            at(su.len(), sr, sup_end, b) - 0.2,
        )
        .to_vec()
    };
    // Listen: the supervisor hears both, nobody hears the supervisor.
    assert_hears(
        "the customer, supervisor listening",
        &cw(listen, whisper),
        r,
        AGENT_TONE,
        SUPERVISOR_TONE,
    );
    assert_hears(
        "the agent, supervisor listening",
        &aw(listen, whisper),
        ar,
        CALLER_TONE,
        SUPERVISOR_TONE,
    );
    assert_hears(
        "the supervisor hears the customer",
        &sw(listen, whisper),
        sr,
        CALLER_TONE,
        SUPERVISOR_TONE,
    );
    assert_hears(
        "the supervisor hears the agent",
        &sw(listen, whisper),
        sr,
        AGENT_TONE,
        SUPERVISOR_TONE,
    );
    // Whisper: the agent hears the supervisor, the customer does not.
    assert_hears(
        "the agent, supervisor whispering",
        &aw(whisper, barge),
        ar,
        SUPERVISOR_TONE,
        AGENT_TONE,
    );
    assert_hears(
        "the customer, supervisor whispering",
        &cw(whisper, barge),
        r,
        AGENT_TONE,
        SUPERVISOR_TONE,
    );
    // Barge: both hear the supervisor.
    assert_hears(
        "the customer, supervisor barging",
        &cw(barge, end),
        r,
        SUPERVISOR_TONE,
        CALLER_TONE,
    );
    assert_hears(
        "the agent, supervisor barging",
        &aw(barge, end),
        ar,
        SUPERVISOR_TONE,
        AGENT_TONE,
    );
}

#[tokio::test]
async fn a_phone_registered_over_tcp_takes_a_queue_call() {
    let sys = System::start_sip(false).await;
    let pw = "sip1001".to_string();
    let mut phone = Phone::start(
        sys.gateway(),
        DOMAIN,
        PhoneSpec {
            tcp: true,
            user: "1001",
            password: Some(&pw),
            tone: AGENT_TONE as u32,
            auto_answer: true,
            codec: "PCMU",
            name: "",
        },
    )
    .await;
    phone.registration("200 OK").await;
    let alice = sys.office_agent("1001").await;
    sys.wait_device(&alice, "1001", true).await;
    let devices = sys
        .office_admin()
        .await
        .get("/api/admin/devices")
        .await
        .ok();
    let d = devices
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device"] == "1001")
        .unwrap()
        .clone();
    assert!(
        d["source"].as_str().unwrap_or("").starts_with("tcp:"),
        "registered over TCP: {d}"
    );
    idle(&sys, &alice).await;
    let mut caller = sys.caller("5551234", "Jane").await;
    caller.command("dial", &format!("sip:500@{DOMAIN}")).await;
    phone.event("CALL_ESTABLISHED", WAIT).await;
    sys.view_when(&alice, "Connected over TCP", |v| v["status"] == "connected")
        .await;
    alice.post("/api/call/hangup", json!({})).await.ok();
    phone.event("CALL_CLOSED", WAIT).await;
    caller.event("CALL_CLOSED", WAIT).await;
}

fn options() -> String {
    format!(
        "OPTIONS sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {{src}}:{{port}};branch=z9hG4bK-{b};rport\r\nFrom: <sip:probe@{DOMAIN}>;tag=p\r\n\
         To: <sip:{DOMAIN}>\r\nCall-ID: {b}@x\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        b = uuid::Uuid::new_v4().simple()
    )
}

/// Registers a device with SIPp (digest) for `expires` seconds (0: unregisters it).
fn sipp_register(gw: SocketAddr, user: &str, password: &str, expires: u32) {
    let out = sipp(&register_xml(user, password, expires), gw, "127.0.0.1", &[]);
    assert!(
        out.status.success(),
        "sipp: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A SIPp REGISTER answering the digest challenge, for `expires` seconds.
fn register_xml(user: &str, password: &str, expires: u32) -> String {
    register_xml_with(user, password, expires, "[local_ip]:[local_port]")
}

/// The same, registering a Contact on another port (where another SIPp answers calls).
fn register_xml_contact(user: &str, password: &str, expires: u32, port: u16) -> String {
    register_xml_with(user, password, expires, &format!("127.0.0.1:{port}"))
}

fn register_xml_with(user: &str, password: &str, expires: u32, contact: &str) -> String {
    let request = |cseq: u32, auth: &str| {
        format!(
            "<send retrans=\"500\"><![CDATA[\nREGISTER sip:{DOMAIN} SIP/2.0\nVia: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport\n\
             From: <sip:{user}@{DOMAIN}>;tag=[call_number]\nTo: <sip:{user}@{DOMAIN}>\nCall-ID: [call_id]\nCSeq: {cseq} REGISTER\n\
             Contact: <sip:{user}@{contact}>\nExpires: {expires}\n{auth}Max-Forwards: 70\nContent-Length: 0\n\n]]></send>\n"
        )
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"ISO-8859-1\" ?>\n<scenario name=\"register\">\n{}<recv response=\"401\" auth=\"true\"/>\n{}<recv response=\"200\"/>\n</scenario>\n",
        request(1, ""),
        request(2, &format!("[authentication username={user} password={password}]\n"))
    )
}

/// A SIPp phone that rings, then declines the call (603).
fn decline_xml() -> String {
    let response = |code: &str| {
        format!(
            "<send><![CDATA[\nSIP/2.0 {code}\n[last_Via:]\n[last_From:]\n[last_To:];tag=[pid]SIPpTag01[call_number]\n[last_Call-ID:]\n[last_CSeq:]\n\
             Contact: <sip:[local_ip]:[local_port];transport=[transport]>\nContent-Length: 0\n\n]]></send>\n"
        )
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"ISO-8859-1\" ?>\n<scenario name=\"decline\">\n<recv request=\"INVITE\"/>\n{}<pause milliseconds=\"500\"/>\n{}<recv request=\"ACK\"/>\n</scenario>\n",
        response("180 Ringing"),
        response("603 Decline")
    )
}

#[tokio::test]
async fn an_outbound_call_from_the_portal_rings_the_agents_phone_then_the_extension_and_both_hear_each_other(
) {
    let sys = System::start_sip(false).await;
    let mut alice_phone = sys.agent_phone("1001", AGENT_TONE as u32).await;
    let mut bob_phone = sys.agent_phone("1002", TARGET_TONE as u32).await;
    let alice = sys.office_agent("1001").await;
    sys.wait_device(&alice, "1001", true).await;
    sys.wait_device(&alice, "1002", true).await;
    idle(&sys, &alice).await;

    // Without a trunk (no CC_SIP_PBX for this tenant) an outside number has no route: refused
    // before any phone rings, naming the field.
    let r = alice
        .post("/api/call/dial", json!({"number": "+4930555123"}))
        .await;
    assert_eq!(r.refused(422, "no_route")["field"], "number");
    // An extension that is not registered: refused too.
    let r = alice
        .post("/api/call/dial", json!({"number": "1003"}))
        .await;
    assert_eq!(r.refused(422, "device_unavailable")["field"], "number");

    // Alice dials extension 1002: her own phone rings first and answers, then 1002's.
    let r = alice
        .post("/api/call/dial", json!({"number": "1002"}))
        .await
        .ok();
    let call = r["call"].as_str().unwrap().to_string();
    alice_phone.event("CALL_ESTABLISHED", WAIT).await;
    let t_alice = Instant::now();
    bob_phone.event("CALL_ESTABLISHED", WAIT).await;
    let t_bob = Instant::now();
    let v = sys
        .view_when(&alice, "Connected", |v| v["status"] == "connected")
        .await;
    assert_eq!(v["current_call"]["direction"], "outbound", "{v}");
    assert_eq!(v["current_call"]["number"], "1002", "{v}");
    let connected_at = since(t_alice);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let talked_until = since(t_alice);

    // Hangup from the portal: BYE to both phones; Alice is Idle at once (no wrap-up).
    alice.post("/api/call/hangup", json!({})).await.ok();
    alice_phone.event("CALL_CLOSED", WAIT).await;
    bob_phone.event("CALL_CLOSED", WAIT).await;
    let v = sys
        .view_when(&alice, "Idle, counted", |v| {
            v["status"] == "idle" && v["counts"]["completed"] == 1
        })
        .await;
    assert!(v["current_call"].is_null(), "{v}");
    let types: Vec<String> = sys
        .stream_events(&format!("{SIP_TENANT}/call-{call}"))
        .await
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert_eq!(
        types,
        [
            "OutboundCallStarted",
            "OutboundCallDialed",
            "CallConnected",
            "CallEnded"
        ]
    );

    // Each phone heard the other, through the gateway's media anchor.
    let (a, arate) = wav(alice_phone.heard().last().expect("Alice's recording"));
    let (b, brate) = wav(bob_phone.heard().last().expect("1002's recording"));
    let bob_start = t_bob.duration_since(t_alice).as_secs_f64();
    assert_hears(
        "Alice, connected",
        window(&a, arate, connected_at + 0.8, talked_until - 0.2),
        arate,
        TARGET_TONE,
        AGENT_TONE,
    );
    assert_hears(
        "extension 1002, connected",
        window(&b, brate, 0.8, talked_until - bob_start - 0.2),
        brate,
        AGENT_TONE,
        TARGET_TONE,
    );
}
