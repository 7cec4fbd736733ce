//! Trunk mode with a real PBX: Kamailio (Debian's package) runs the example configuration of
//! infra/kamailio/kamailio.cfg, the very file operators start from, with this test's addresses
//! given as defines. baresip phones register on Kamailio, never on the gateway; the gateway
//! follows the registrations through the reg event package, takes queue calls that Kamailio
//! routes to it, and sends agent legs through Kamailio to the phones. Audio is proven by tones.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::phones::{assert_hears, raw_sip, wav, window, Phone, PhoneSpec};
use crate::sip::{idle, since};
use crate::system::{Client, System};

const DOMAIN: &str = "office.localhost";
/// Kamailio listens here: another loopback address than the phones' and the gateway's
/// 127.0.0.1, so the gateway can tell calls through the PBX from calls straight to it.
const PBX_IP: &str = "127.0.0.2";
const AGENT_TONE: f64 = 697.0;
const CALLER_TONE: f64 = 1209.0;
const WAIT: Duration = Duration::from_secs(30);

/// A Kamailio process (in a process group of its own: its workers go with it).
struct Kamailio {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
}

impl Kamailio {
    /// Starts Kamailio on `addr` with infra/kamailio/kamailio.cfg, its calls for queue numbers
    /// going to the gateway at `gateway`.
    async fn start(addr: SocketAddr, gateway: SocketAddr) -> Kamailio {
        use std::os::unix::process::CommandExt;
        let found = Command::new("sh")
            .args(["-c", "command -v kamailio"])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            found,
            "kamailio is not installed: scripts/test installs it (apt-get install kamailio kamailio-presence-modules)"
        );
        let dir =
            std::env::temp_dir().join(format!("cc-kamailio-{}", uuid::Uuid::new_v4().simple()));
        let db = dir.join("db");
        std::fs::create_dir_all(&db).unwrap();
        // db_text only needs the definitions of the tables presence and pua use.
        let tables = std::path::Path::new("/usr/share/kamailio/dbtext/kamailio");
        for t in [
            "version",
            "presentity",
            "active_watchers",
            "watchers",
            "pua",
        ] {
            std::fs::copy(tables.join(t), db.join(t))
                .unwrap_or_else(|e| panic!("{}: {e} (package kamailio)", tables.join(t).display()));
        }
        let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../infra/kamailio/kamailio.cfg");
        let log = std::fs::File::create(dir.join("kamailio.log")).unwrap();
        let child = Command::new("kamailio")
            .args(["-DD", "-E", "-m", "32", "-M", "8", "-f"])
            .arg(&config)
            .arg("-A")
            .arg(format!("LISTEN=udp:{addr}"))
            .arg("-A")
            .arg(format!("PBX_URI=\"sip:{addr}\""))
            .arg("-A")
            .arg(format!("DOMAIN=\"{DOMAIN}\""))
            .arg("-A")
            .arg(format!("GATEWAY=\"sip:{gateway}\""))
            .arg("-A")
            .arg(format!("GATEWAY_IP=\"{}\"", gateway.ip()))
            .arg("-A")
            .arg(format!("DBURL=\"text://{}\"", db.display()))
            .arg("-Y")
            .arg(&dir)
            .arg("-w")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap();
        let k = Kamailio { child, dir, addr };
        let options = format!(
            "OPTIONS sip:{addr} SIP/2.0\r\nVia: SIP/2.0/UDP {{src}}:{{port}};branch=z9hG4bK-o{};rport\r\n\
             From: <sip:probe@{{src}}>;tag=p\r\nTo: <sip:{addr}>\r\nCall-ID: {}@probe\r\nCSeq: 1 OPTIONS\r\n\
             Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let deadline = Instant::now() + WAIT;
        while raw_sip(addr, "127.0.0.1", &options).await != Some(200) {
            assert!(
                Instant::now() < deadline,
                "Kamailio did not answer OPTIONS on {addr}: {}",
                k.log()
            );
        }
        k
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("kamailio.log")).unwrap_or_default()
    }

    /// SIGTERM to the whole group (SIGKILL after 5 s), and waits for it.
    fn stop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free UDP port on `ip`.
fn free_udp(ip: &str) -> SocketAddr {
    UdpSocket::bind((ip, 0)).unwrap().local_addr().unwrap()
}

/// The gateway's address (chosen first: Kamailio's configuration names it) and Kamailio.
async fn kamailio() -> (SocketAddr, Kamailio) {
    let gateway: SocketAddr = format!("127.0.0.1:{}", cc_testkit::free_port())
        .parse()
        .unwrap();
    (gateway, Kamailio::start(free_udp(PBX_IP), gateway).await)
}

/// An extension's phone registered on Kamailio (no password: the example registers anyone),
/// answering by itself.
async fn extension(pbx: SocketAddr, device: &str, tone: u32) -> Phone {
    let p = Phone::start(
        pbx,
        DOMAIN,
        PhoneSpec {
            tcp: false,
            user: device,
            password: Some("unused"),
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

impl System {
    async fn wait_online(&self, agent: &Client, device: &str, online: bool, within: Duration) {
        cc_testkit::eventually(
            &format!("device {device} online = {online} (presence from Kamailio)"),
            within,
            || async { (self.device_online(agent, device).await == online).then_some(()) },
        )
        .await;
    }
}

fn invite(ruri: &str) -> String {
    format!(
        "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {{src}}:{{port}};branch=z9hG4bK-{b};rport\r\nFrom: \"Eve\" <sip:5550666@{DOMAIN}>;tag=e1\r\n\
         To: <{ruri}>\r\nCall-ID: {b}@x\r\nCSeq: 1 INVITE\r\nContact: <sip:5550666@{{src}}:{{port}}>\r\nMax-Forwards: 70\r\n\
         Content-Type: application/sdp\r\nContent-Length: 0\r\n\r\n",
        b = uuid::Uuid::new_v4().simple()
    )
}

#[tokio::test]
async fn a_tenant_on_a_kamailio_trunk_follows_its_registrations_and_takes_a_queue_call_through_it()
{
    let (gw, kam) = kamailio().await;
    let sys = System::start_trunk(false, gw, kam.addr).await;
    let alice = sys.office_agent("1001").await;
    sys.wait_online(&alice, "1001", false, WAIT).await;

    // 1001 registers on Kamailio: online for the portal.
    let phone = extension(kam.addr, "1001", AGENT_TONE as u32).await;
    sys.wait_online(&alice, "1001", true, WAIT).await;
    assert!(
        !sys.device_online(&alice, "1002").await,
        "1002 has not registered"
    );

    // An admin adding an extension is told its phone registers on the PBX (no SIP password).
    let admin = sys.office_admin().await;
    let r = admin
        .post("/api/admin/devices", serde_json::json!({"device": "1007"}))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["on_pbx"], true, "{}", r.body);
    assert_eq!(
        r.body["registrar"].as_str(),
        Some(kam.addr.to_string().as_str()),
        "{}",
        r.body
    );

    // The tenant's phones belong on the PBX: the gateway's registrar refuses them, and a call
    // straight to the gateway (not through the PBX) is refused.
    let register = format!(
        "REGISTER sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {{src}}:{{port}};branch=z9hG4bK-r1;rport\r\nFrom: <sip:1002@{DOMAIN}>;tag=a\r\n\
         To: <sip:1002@{DOMAIN}>\r\nCall-ID: reg-direct@x\r\nCSeq: 1 REGISTER\r\nContact: <sip:1002@{{src}}:{{port}}>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    assert_eq!(raw_sip(gw, "127.0.0.1", &register).await, Some(403));
    assert_eq!(
        raw_sip(gw, "127.0.0.1", &invite(&format!("sip:500@{DOMAIN}"))).await,
        Some(403)
    );

    // It unregisters (the UA is deleted: REGISTER Expires 0): offline; it registers again.
    let mut phone = phone;
    phone.command("uadel", &format!("sip:1001@{DOMAIN}")).await;
    sys.wait_online(&alice, "1001", false, WAIT).await;
    drop(phone);
    let mut phone = extension(kam.addr, "1001", AGENT_TONE as u32).await;
    sys.wait_online(&alice, "1001", true, WAIT).await;

    // A caller on the PBX dials queue 500: Kamailio sends it to the gateway, the agent's leg
    // goes out through Kamailio to the phone.
    idle(&sys, &alice).await;
    let mut caller = Phone::start(
        kam.addr,
        DOMAIN,
        PhoneSpec {
            tcp: false,
            user: "5551234",
            password: None,
            tone: CALLER_TONE as u32,
            auto_answer: false,
            codec: "PCMA",
            name: "Jane",
        },
    )
    .await;
    caller.command("dial", &format!("sip:500@{DOMAIN}")).await;
    caller.event("CALL_ESTABLISHED", WAIT).await;
    let t_caller = Instant::now();
    phone.event("CALL_ESTABLISHED", WAIT).await;
    let t_agent = Instant::now();
    let v = sys
        .view_when(&alice, "Connected", |v| v["status"] == "connected")
        .await;
    assert_eq!(v["current_call"]["caller_number"], "5551234", "{v}");
    assert_eq!(v["current_call"]["caller_name"], "Jane", "{v}");
    assert_eq!(v["device"], "1001", "{v}");
    let connected_at = since(t_caller);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let talked_until = since(t_caller);

    // Hangup from the portal: BYE to both, through Kamailio.
    alice.post("/api/call/hangup", json!({})).await.ok();
    caller.event("CALL_CLOSED", WAIT).await;
    phone.event("CALL_CLOSED", WAIT).await;
    sys.view_when(&alice, "counted", |v| v["counts"]["completed"] == 1)
        .await;
    let log = kam.log();
    assert!(
        log.contains("queue call 500 from 5551234 to the call center"),
        "the queue call went through Kamailio: {log}"
    );

    // Audio both ways, anchored at the gateway.
    let (c, rate) = wav(caller.heard().last().expect("the caller's recording"));
    let (a, arate) = wav(phone.heard().last().expect("the agent's recording"));
    let agent_start = t_agent.duration_since(t_caller).as_secs_f64();
    assert_hears(
        "the caller",
        window(&c, rate, connected_at + 0.8, talked_until - 0.2),
        rate,
        AGENT_TONE,
        CALLER_TONE,
    );
    assert_hears(
        "the agent",
        window(&a, arate, 0.8, talked_until - agent_start - 0.2),
        arate,
        CALLER_TONE,
        AGENT_TONE,
    );
}

#[tokio::test]
async fn presence_from_kamailio_survives_a_gateway_restart_and_follows_a_kamailio_restart() {
    let (gw, mut kam) = kamailio().await;
    let mut sys = System::start_trunk(true, gw, kam.addr).await;
    let bob = sys.office_agent("1002").await;
    let _phone = extension(kam.addr, "1001", AGENT_TONE as u32).await;
    sys.wait_online(&bob, "1001", true, WAIT).await;

    // A gateway restart (SIGKILL): its new subscriptions learn that 1001 is still registered.
    sys.restart_gateway();
    tokio::time::sleep(Duration::from_secs(1)).await;
    sys.wait_online(&bob, "1001", true, WAIT).await;
    assert!(!sys.device_online(&bob, "1002").await);

    // Kamailio restarts and forgets its registrations (and the subscriptions): the next
    // refresh (every 10 s) gets 481, the new subscription says 1001 is not registered.
    let addr = kam.addr;
    kam.stop();
    kam = Kamailio::start(addr, gw).await;
    sys.wait_online(&bob, "1001", false, Duration::from_secs(60))
        .await;
    // The phone registers again: online.
    let _phone = extension(kam.addr, "1001", AGENT_TONE as u32).await;
    sys.wait_online(&bob, "1001", true, WAIT).await;
}

#[tokio::test]
async fn an_agents_outbound_call_to_a_number_goes_out_through_the_tenants_pbx() {
    let (gw, kam) = kamailio().await;
    let sys = System::start_trunk(false, gw, kam.addr).await;
    let alice = sys.office_agent("1001").await;
    let mut phone = extension(kam.addr, "1001", AGENT_TONE as u32).await;
    sys.wait_online(&alice, "1001", true, WAIT).await;
    // The outside party: a phone on the PBX under a number that is no extension of the tenant
    // (the PBX routes it, as it would to its outside lines), answering by itself.
    let mut outside = extension(kam.addr, "5550123", CALLER_TONE as u32).await;
    idle(&sys, &alice).await;

    let r = alice
        .post("/api/call/dial", json!({"number": "555 0123"}))
        .await
        .ok();
    let call = r["call"].as_str().unwrap().to_string();
    // Alice's phone rings first (through Kamailio) and answers; then the number does.
    phone.event("CALL_ESTABLISHED", WAIT).await;
    let t_agent = Instant::now();
    outside.event("CALL_ESTABLISHED", WAIT).await;
    let t_outside = Instant::now();
    let v = sys
        .view_when(&alice, "Connected", |v| v["status"] == "connected")
        .await;
    assert_eq!(
        (
            v["current_call"]["direction"].as_str(),
            v["current_call"]["number"].as_str(),
            v["current_call"]["extension"].as_bool()
        ),
        (Some("outbound"), Some("5550123"), Some(false)),
        "{v}"
    );
    let connected_at = since(t_agent);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let talked_until = since(t_agent);
    alice.post("/api/call/hangup", json!({})).await.ok();
    phone.event("CALL_CLOSED", WAIT).await;
    outside.event("CALL_CLOSED", WAIT).await;
    let types: Vec<String> = sys
        .stream_events(&format!("{}/call-{call}", crate::system::SIP_TENANT))
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

    // Both ways, anchored at the gateway.
    let (a, arate) = wav(phone.heard().last().expect("the agent's recording"));
    let (o, orate) = wav(outside
        .heard()
        .last()
        .expect("the outside party's recording"));
    let outside_start = t_outside.duration_since(t_agent).as_secs_f64();
    assert_hears(
        "the agent",
        window(&a, arate, connected_at + 0.8, talked_until - 0.2),
        arate,
        CALLER_TONE,
        AGENT_TONE,
    );
    assert_hears(
        "the outside party",
        window(&o, orate, 0.8, talked_until - outside_start - 0.2),
        orate,
        AGENT_TONE,
        CALLER_TONE,
    );
}
