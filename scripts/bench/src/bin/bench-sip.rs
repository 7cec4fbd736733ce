//! The SIP gateway under load (issue: real phones):
//!
//! - `sip-ring-p99`: ms from a caller's INVITE taking a place in a queue at the gateway (its
//!   inbound `ChannelCreated`, stamped by the gateway) to the 180 Ringing of the chosen agent's
//!   phone reaching the gateway (the leg's `ChannelRinging`, stamped by the gateway), with
//!   1,000 registered agents (one SIPp UAS answering for all of them, RTP echo) and callers
//!   from SIPp at 100 calls/s for 60 s into 10 queues. Baseline, same run: SIPp's own INVITE
//!   -> 180 round trip against a SIPp UAS directly (`-trace_rtt`), p99.
//! - `sip-failed`: calls SIPp counts failed (must be 0). Baseline: the calls placed.
//! - `rtp-relay-p99` / `rtp-relay-lost`: the gateway's media code (cc_sip_gateway::media)
//!   relaying `CC_BENCH_RTP_CALLS` (default 500) bridged calls, 20 ms packets both ways: p99
//!   one-way latency through the relay, and packets lost. Baseline: the same packets sent
//!   through a plain UDP socket pair in the same run.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cc_bench::{env, fresh_database, parallel, percentile_ms, summary, wait_http_ok};
use cc_bus::{Bus, CommandContext, Subjects};
use cc_contracts::auth::CreateAgent;
use cc_contracts::domain::{AgentNumber, DeviceId, QueueNumber};
use cc_contracts::pbx::ChannelEvent;
use cc_contracts::queue::AssignAgent;
use cc_contracts::sip::ProvisionSipDevice;
use cc_sip_gateway::media::{Media, Plan, Ports};
use cc_sip_gateway::sdp::{Codec, Direction, RemoteMedia};
use futures::StreamExt;
use tokio::net::UdpSocket;

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("cc-bench-sip-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

const DOMAIN: &str = "bench.localhost";

fn register_xml(uas: SocketAddr) -> String {
    let req = |cseq: u32, auth: &str| {
        format!(
            "<send retrans=\"500\"><![CDATA[\nREGISTER sip:{DOMAIN} SIP/2.0\nVia: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport\n\
             From: <sip:[field0]@{DOMAIN}>;tag=[call_number]\nTo: <sip:[field0]@{DOMAIN}>\nCall-ID: [call_id]\nCSeq: {cseq} REGISTER\n\
             Contact: <sip:[field0]@{uas}>\nExpires: 3600\n{auth}Max-Forwards: 70\nContent-Length: 0\n\n]]></send>\n"
        )
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"ISO-8859-1\" ?>\n<scenario name=\"register\">\n{}<recv response=\"401\" auth=\"true\"/>\n{}<recv response=\"200\"/>\n</scenario>\n",
        req(1, ""),
        // SIPp expands an [authentication ...] keyword that comes from the injection file.
        req(2, "[field1]\n")
    )
}

/// A caller: INVITE to a queue (chosen by the injection file), answered by the queue at once,
/// RTP for the talk time, then BYE.
fn caller_xml(talk_ms: u64) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"ISO-8859-1\" ?>\n<scenario name=\"caller\">\n\
<send retrans=\"500\" start_rtd=\"1\"><![CDATA[\nINVITE sip:[field0]@{DOMAIN} SIP/2.0\nVia: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport\n\
From: \"Caller [call_number]\" <sip:7[call_number]@{DOMAIN}>;tag=[call_number]\nTo: <sip:[field0]@{DOMAIN}>\nCall-ID: [call_id]\nCSeq: 1 INVITE\n\
Contact: <sip:7[call_number]@[local_ip]:[local_port]>\nMax-Forwards: 70\nContent-Type: application/sdp\nContent-Length: [len]\n\n\
v=0\no=- 1 1 IN IP[local_ip_type] [local_ip]\ns=-\nc=IN IP[media_ip_type] [media_ip]\nt=0 0\nm=audio [media_port] RTP/AVP 8\na=rtpmap:8 PCMA/8000\n]]></send>\n\
<recv response=\"100\" optional=\"true\"/>\n<recv response=\"200\" rtd=\"1\"/>\n\
<send><![CDATA[\nACK sip:[field0]@{DOMAIN} SIP/2.0\nVia: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport\n\
From: \"Caller [call_number]\" <sip:7[call_number]@{DOMAIN}>;tag=[call_number]\nTo: <sip:[field0]@{DOMAIN}>[peer_tag_param]\nCall-ID: [call_id]\nCSeq: 1 ACK\n\
Contact: <sip:7[call_number]@[local_ip]:[local_port]>\nMax-Forwards: 70\nContent-Length: 0\n\n]]></send>\n\
<pause milliseconds=\"{talk_ms}\"/>\n\
<send retrans=\"500\"><![CDATA[\nBYE sip:[field0]@{DOMAIN} SIP/2.0\nVia: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport\n\
From: \"Caller [call_number]\" <sip:7[call_number]@{DOMAIN}>;tag=[call_number]\nTo: <sip:[field0]@{DOMAIN}>[peer_tag_param]\nCall-ID: [call_id]\nCSeq: 2 BYE\n\
Max-Forwards: 70\nContent-Length: 0\n\n]]></send>\n<recv response=\"200\"/>\n</scenario>\n"
    )
}

/// SIPp's INVITE -> 180 against a SIPp UAS: the baseline of sip-ring-p99.
fn baseline_uac_xml() -> String {
    "<?xml version=\"1.0\" encoding=\"ISO-8859-1\" ?>\n<scenario name=\"base\">\n\
<send retrans=\"500\" start_rtd=\"1\"><![CDATA[\nINVITE sip:x@[remote_ip]:[remote_port] SIP/2.0\nVia: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n\
From: <sip:b@[local_ip]:[local_port]>;tag=[call_number]\nTo: <sip:x@[remote_ip]:[remote_port]>\nCall-ID: [call_id]\nCSeq: 1 INVITE\n\
Contact: <sip:b@[local_ip]:[local_port]>\nMax-Forwards: 70\nContent-Type: application/sdp\nContent-Length: [len]\n\n\
v=0\no=- 1 1 IN IP4 [local_ip]\ns=-\nc=IN IP4 [media_ip]\nt=0 0\nm=audio [media_port] RTP/AVP 8\na=rtpmap:8 PCMA/8000\n]]></send>\n\
<recv response=\"100\" optional=\"true\"/>\n<recv response=\"180\" rtd=\"1\"/>\n<recv response=\"200\"/>\n\
<send><![CDATA[\nACK sip:x@[remote_ip]:[remote_port] SIP/2.0\nVia: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n\
From: <sip:b@[local_ip]:[local_port]>;tag=[call_number]\nTo: <sip:x@[remote_ip]:[remote_port]>[peer_tag_param]\nCall-ID: [call_id]\nCSeq: 1 ACK\nContent-Length: 0\n\n]]></send>\n\
<send retrans=\"500\"><![CDATA[\nBYE sip:x@[remote_ip]:[remote_port] SIP/2.0\nVia: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n\
From: <sip:b@[local_ip]:[local_port]>;tag=[call_number]\nTo: <sip:x@[remote_ip]:[remote_port]>[peer_tag_param]\nCall-ID: [call_id]\nCSeq: 2 BYE\nContent-Length: 0\n\n]]></send>\n\
<recv response=\"200\"/>\n</scenario>\n"
        .to_string()
}

fn sipp(args: &[&str], dir: &std::path::Path) -> tokio::process::Command {
    let mut c = tokio::process::Command::new("sipp");
    c.current_dir(dir)
        .args(args)
        .args(["-nostdin"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true);
    c
}

/// The p99 of SIPp's -trace_rtt file (response times in ms).
fn rtt_p99(dir: &std::path::Path) -> f64 {
    let mut v: Vec<Duration> = vec![];
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.ends_with("_rtt.csv") {
            for line in std::fs::read_to_string(e.path())
                .unwrap_or_default()
                .lines()
                .skip(1)
            {
                // Date_ms;response_time_ms;rtd_no (SIPp 3.6 writes whole milliseconds)
                if let Some(ms) = line
                    .split(';')
                    .nth(1)
                    .and_then(|x| x.trim().parse::<f64>().ok())
                {
                    v.push(Duration::from_secs_f64(ms / 1000.0));
                }
            }
        }
    }
    percentile_ms(&mut v, 99.0)
}

/// Failed calls in a SIPp -trace_stat file's last line.
fn sipp_counts(dir: &std::path::Path, scenario: &str) -> (u64, u64) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with(scenario) && name.ends_with(".csv") && !name.contains("_rtt") {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            let mut lines = text.lines();
            let header: Vec<&str> = lines.next().unwrap_or("").split(';').collect();
            let last: Vec<&str> = text.lines().last().unwrap_or("").split(';').collect();
            let get = |n: &str| {
                header
                    .iter()
                    .position(|h| *h == n)
                    .and_then(|i| last.get(i))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            };
            return (get("TotalCallCreated"), get("FailedCall(C)"));
        }
    }
    (0, 0)
}

async fn ring_benchmark() -> anyhow::Result<()> {
    let admin = env(
        "CC_BENCH_ADMIN_URL",
        "postgres://postgres@127.0.0.1:5432/postgres",
    );
    let nats_url = env("CC_NATS_URL", "nats://127.0.0.1:4222");
    let agents: usize = env("CC_BENCH_AGENTS", "1000").parse()?;
    let rate: u64 = env("CC_BENCH_RATE", "100").parse()?;
    let seconds: u64 = env("CC_BENCH_SECONDS", "60").parse()?;
    let binary = env("CC_BENCH_BINARY", "target/release/callcenter");
    let work = dir();
    let (pool, url) = fresh_database(&admin, "cc_bench_sip", 4).await?;
    let prefix = format!("bsip{}", uuid::Uuid::now_v7().simple());
    let sip: SocketAddr = "127.0.0.1:25060".parse()?;
    let uas: SocketAddr = "127.0.0.1:25070".parse()?;

    // The services in one process, the SIP gateway (standing in for the PBX) in another.
    let mut children = vec![];
    for (i, targets) in [
        "relay,auth,agent-session,queue-router,call-control,projection,portal",
        "sip-gateway",
    ]
    .iter()
    .enumerate()
    {
        let admin_addr = format!("127.0.0.1:{}", 18581 + 10 * i);
        let child = tokio::process::Command::new(&binary)
            .args(["run", "--target", targets])
            .env("CC_DATABASE_URL", &url)
            .env("CC_NATS_URL", &nats_url)
            .env("CC_SUBJECT_PREFIX", &prefix)
            .env("CC_PORTAL_ADDR", "127.0.0.1:18580")
            .env("CC_ADMIN_ADDR", &admin_addr)
            .env("CC_DATABASE_MAX_CONNECTIONS", "40")
            .env("CC_SIP_TENANTS", "bench")
            .env("CC_BASE_DOMAIN", "localhost")
            .env("CC_SIP_ADDR", sip.to_string())
            .env("CC_RTP_PORTS", "40000-44999")
            .env("CC_SIP_TRUNKS", "bench=127.0.0.1")
            .env("CC_SIP_REGISTER_PER_MINUTE", "1000000")
            .env("CC_LOG", env("CC_BENCH_LOG", "warn"))
            .kill_on_drop(true)
            .spawn()?;
        children.push(child);
        wait_http_ok(&admin_addr, "/readyz", Duration::from_secs(60)).await?;
    }
    let client = async_nats::connect(&nats_url).await?;
    let bus = Bus::new(client.clone(), Subjects::new(&prefix));
    let c = CommandContext::new("bench", "bench");
    let queues = cc_bench::bench_tenant(&bus, &c).await?;
    let number = |i: usize| format!("{}", 20000 + i);
    let passwords: Arc<Mutex<HashMap<usize, String>>> = Arc::default();
    parallel(agents, 8, |i| {
        let (bus, c, queues, passwords) =
            (bus.clone(), c.clone(), queues.clone(), passwords.clone());
        async move {
            let a = AgentNumber::parse(&number(i))?;
            let d = DeviceId::parse(&number(i))?;
            bus.request(
                &c,
                &CreateAgent {
                    agent: a.clone(),
                    display_name: format!("Agent {i}"),
                    password: "bench-secret".into(),
                    may_manage_queues: Some(false),
                },
            )
            .await?;
            bus.request(
                &c,
                &AssignAgent {
                    queue: QueueNumber::parse(&queues[i % queues.len()])?,
                    agent: a,
                    penalty: 0,
                },
            )
            .await?;
            let cred = bus.request(&c, &ProvisionSipDevice { device: d }).await?;
            passwords.lock().unwrap().insert(i, cred.password);
            Ok(())
        }
    })
    .await?;

    // One SIPp UAS answers for every agent's phone (180, 200, RTP echo); SIPp registers all.
    let uas_dir = work.join("uas");
    std::fs::create_dir_all(&uas_dir)?;
    let mut uas_proc = sipp(
        &[
            "-sn",
            "uas",
            "-i",
            "127.0.0.1",
            "-p",
            &uas.port().to_string(),
            "-mp",
            "26000",
            "-rtp_echo",
            "-trace_stat",
            "-fd",
            "1",
        ],
        &uas_dir,
    )
    .spawn()?;
    let mut csv = String::from("SEQUENTIAL\n");
    for i in 0..agents {
        csv.push_str(&format!(
            "{n};[authentication username={n} password={}]\n",
            passwords.lock().unwrap()[&i],
            n = number(i)
        ));
    }
    std::fs::write(work.join("users.csv"), csv)?;
    std::fs::write(work.join("register.xml"), register_xml(uas))?;
    let reg = sipp(
        &[
            &sip.to_string(),
            "-sf",
            "register.xml",
            "-inf",
            "users.csv",
            "-i",
            "127.0.0.1",
            "-p",
            "25071",
            "-m",
            &agents.to_string(),
            "-r",
            "200",
            "-timeout",
            "60s",
        ],
        &work,
    )
    .status()
    .await?;
    anyhow::ensure!(reg.success(), "SIPp could not register every device");
    cc_bench::log_in_agents(&bus, &c, (0..agents).map(number).collect()).await?;
    eprintln!(
        "{agents} SIP agents registered and logged in across {} queues",
        queues.len()
    );

    // Baseline: SIPp UAC straight against a second SIPp UAS.
    let base_dir = work.join("baseline");
    std::fs::create_dir_all(&base_dir)?;
    let _base_uas = sipp(
        &[
            "-sn",
            "uas",
            "-i",
            "127.0.0.1",
            "-p",
            "25080",
            "-mp",
            "26100",
        ],
        &base_dir,
    )
    .spawn()?;
    std::fs::write(base_dir.join("base.xml"), baseline_uac_xml())?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    sipp(
        &[
            "127.0.0.1:25080",
            "-sf",
            "base.xml",
            "-i",
            "127.0.0.1",
            "-p",
            "25081",
            "-mp",
            "26200",
            "-m",
            "3000",
            "-r",
            &rate.to_string(),
            "-trace_rtt",
            "-timeout",
            "120s",
        ],
        &base_dir,
    )
    .status()
    .await?;
    let baseline = rtt_p99(&base_dir);

    // Created -> ringing, from the gateway's own timestamps in its facts.
    #[derive(Default)]
    struct Timing {
        entered: HashMap<String, chrono::DateTime<chrono::Utc>>,
        leg_caller: HashMap<String, String>,
        latencies: Vec<Duration>,
        rung: std::collections::HashSet<String>,
    }
    let timing: Arc<Mutex<Timing>> = Arc::default();
    let mut facts = client
        .subscribe(format!("{prefix}.pbx.evt.bench.channel.>"))
        .await?;
    client.flush().await?;
    let t2 = timing.clone();
    tokio::spawn(async move {
        while let Some(m) = facts.next().await {
            let Ok(e) = serde_json::from_slice::<ChannelEvent>(&m.payload) else {
                continue;
            };
            let mut t = t2.lock().unwrap();
            match e {
                ChannelEvent::ChannelCreated {
                    caller,
                    dialed: Some(_),
                    at,
                    ..
                } => {
                    t.entered.insert(caller.number, at);
                }
                ChannelEvent::ChannelCreated {
                    channel,
                    caller,
                    device: Some(_),
                    ..
                } => {
                    t.leg_caller.insert(channel, caller.number);
                }
                ChannelEvent::ChannelRinging { channel, at, .. } => {
                    if let Some(caller) = t.leg_caller.get(&channel).cloned() {
                        if t.rung.insert(caller.clone()) {
                            if let Some(start) = t.entered.get(&caller).copied() {
                                t.latencies.push((at - start).to_std().unwrap_or_default());
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    });

    let mut qcsv = String::from("SEQUENTIAL\n");
    for i in 0..queues.len() * 10 {
        qcsv.push_str(&format!("{}\n", queues[i % queues.len()]));
    }
    std::fs::write(work.join("queues.csv"), qcsv)?;
    std::fs::write(work.join("caller.xml"), caller_xml(3000))?;
    let calls = rate * seconds;
    let caller = sipp(
        &[
            &sip.to_string(),
            "-sf",
            "caller.xml",
            "-inf",
            "queues.csv",
            "-i",
            "127.0.0.1",
            "-p",
            "25072",
            "-mp",
            "27000",
            "-m",
            &calls.to_string(),
            "-r",
            &rate.to_string(),
            "-l",
            "2000",
            "-trace_stat",
            "-fd",
            "1",
            "-timeout",
            &format!("{}s", seconds + 60),
        ],
        &work,
    )
    .status()
    .await?;
    let (created, failed) = sipp_counts(&work, "caller");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let _ = uas_proc.start_kill();
    let mut lat = std::mem::take(&mut timing.lock().unwrap().latencies);
    let rung = lat.len();
    eprintln!(
        "sipp caller exit {:?}; {created} calls placed, {failed} failed, {rung} rang an agent",
        caller.code()
    );
    summary(
        "sip-ring-p99",
        percentile_ms(&mut lat, 99.0),
        "ms",
        baseline,
    );
    summary("sip-failed", failed as f64, "calls", created as f64);
    let stuck: i64 = sqlx::query_scalar("select count(*) from sip_channels")
        .fetch_one(&pool)
        .await
        .unwrap_or(-1);
    eprintln!("channels still live at the gateway after the run: {stuck}");
    drop(children);
    let _ = cc_bench::drop_streams(&client, &prefix).await;
    Ok(())
}

/// The relay alone: `calls` bridged pairs of legs, each phone sending 20 ms packets.
async fn relay_round(
    calls: usize,
    via_gateway: bool,
    seconds: u64,
    gateway: &tokio::runtime::Handle,
) -> anyhow::Result<(Vec<Duration>, u64, u64)> {
    // Phones start at evenly spread moments of the 20 ms (real phones are not in step); the
    // relay runs on a runtime of its own (the gateway is a process of its own).
    let media = std::sync::Arc::new(Media::new(
        "127.0.0.1".parse()?,
        "127.0.0.1".parse()?,
        Ports::parse("0").map_err(anyhow::Error::msg)?,
    ));
    let start = Instant::now();
    let sent = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let mut legs = vec![];
    let mut tasks = vec![];
    for _ in 0..calls {
        let (pa, pb) = (
            Arc::new(UdpSocket::bind("127.0.0.1:0").await?),
            Arc::new(UdpSocket::bind("127.0.0.1:0").await?),
        );
        let (to_a, to_b) = if via_gateway {
            let m = media.clone();
            let (a, b) = gateway
                .spawn(async move { Ok::<_, std::io::Error>((m.open().await?, m.open().await?)) })
                .await??;
            let remote = |addr| RemoteMedia {
                addr,
                codec: Codec::Pcmu,
                telephone_event: None,
                direction: Direction::SendRecv,
            };
            a.set_remote(&remote(pa.local_addr()?));
            b.set_remote(&remote(pb.local_addr()?));
            a.set_plan(Plan {
                listeners: vec![b.output.clone()],
                music: false,
                mixer: None,
            });
            b.set_plan(Plan {
                listeners: vec![a.output.clone()],
                music: false,
                mixer: None,
            });
            let addrs = (
                SocketAddr::new("127.0.0.1".parse()?, a.port),
                SocketAddr::new("127.0.0.1".parse()?, b.port),
            );
            legs.push((a, b));
            addrs
        } else {
            (pb.local_addr()?, pa.local_addr()?) // straight to the other phone
        };
        for (me, target) in [(pa.clone(), to_a), (pb.clone(), to_b)] {
            let phase =
                Duration::from_micros(20_000 * (tasks.len() as u64 / 2) / (2 * calls as u64));
            let (sent, received, latencies) = (sent.clone(), received.clone(), latencies.clone());
            let recv_sock = me.clone();
            tasks.push(tokio::spawn(async move {
                let mut buf = [0u8; 1500];
                loop {
                    let Ok((n, _)) = recv_sock.recv_from(&mut buf).await else {
                        return;
                    };
                    if n < 12 + 8 {
                        continue;
                    }
                    let nanos = u64::from_be_bytes(buf[12..20].try_into().unwrap());
                    let now = start.elapsed().as_nanos() as u64;
                    received.fetch_add(1, Ordering::Relaxed);
                    latencies
                        .lock()
                        .unwrap()
                        .push(Duration::from_nanos(now.saturating_sub(nanos)));
                }
            }));
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval_at(
                    tokio::time::Instant::now() + phase,
                    Duration::from_millis(20),
                );
                let mut seq: u16 = 0;
                let ssrc: u32 = rand_u32();
                let end = Instant::now() + Duration::from_secs(seconds);
                let mut payload = [0x55u8; 160];
                while Instant::now() < end {
                    tick.tick().await;
                    seq = seq.wrapping_add(1);
                    payload[..8]
                        .copy_from_slice(&(start.elapsed().as_nanos() as u64).to_be_bytes());
                    let pkt = rtp_rs::RtpPacketBuilder::new()
                        .payload_type(0)
                        .ssrc(ssrc)
                        .sequence(seq.into())
                        .timestamp(seq as u32 * 160)
                        .payload(&payload)
                        .build()
                        .unwrap();
                    if me.send_to(&pkt, target).await.is_ok() {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    tokio::time::sleep(Duration::from_secs(seconds) + Duration::from_millis(500)).await;
    for t in &tasks {
        t.abort();
    }
    drop(legs);
    let l = std::mem::take(&mut *latencies.lock().unwrap());
    Ok((
        l,
        sent.load(Ordering::Relaxed),
        received.load(Ordering::Relaxed),
    ))
}

/// `conferences` three-party calls mixed by the gateway's mixer: each phone sends 20 ms frames
/// (spread over the 20 ms), each hears the mix of the other two. Returns how long frames
/// waited for their round, the mixed frames received, and the frames expected.
async fn mix_round(
    conferences: usize,
    seconds: u64,
    gateway: &tokio::runtime::Handle,
) -> anyhow::Result<(Vec<Duration>, u64, u64)> {
    use cc_sip_gateway::media::{Mixer, MIX_STATS};
    let media = std::sync::Arc::new(Media::new(
        "127.0.0.1".parse()?,
        "127.0.0.1".parse()?,
        Ports::parse("0").map_err(anyhow::Error::msg)?,
    ));
    let received = Arc::new(AtomicU64::new(0));
    let mut keep = vec![];
    let mut tasks = vec![];
    let streams = 3 * conferences as u64;
    MIX_STATS.take_waits();
    for _ in 0..conferences {
        let m = media.clone();
        let (legs, mixer) = gateway
            .spawn(async move {
                let legs = vec![m.open().await?, m.open().await?, m.open().await?];
                Ok::<_, std::io::Error>((legs, Mixer::start()))
            })
            .await??;
        let mut phones = vec![];
        for leg in &legs {
            let p = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
            leg.set_remote(&RemoteMedia {
                addr: p.local_addr()?,
                codec: Codec::Pcmu,
                telephone_event: None,
                direction: Direction::SendRecv,
            });
            phones.push(p);
        }
        let mixes = (0..3)
            .map(|i| {
                (
                    legs[i].output.clone(),
                    (0..3).filter(|j| *j != i).map(|j| legs[j].id).collect(),
                )
            })
            .collect();
        mixer.set_mixes(mixes);
        for leg in &legs {
            leg.set_plan(Plan {
                listeners: vec![],
                music: false,
                mixer: Some(mixer.clone()),
            });
        }
        for (i, p) in phones.iter().enumerate() {
            let target = SocketAddr::new("127.0.0.1".parse()?, legs[i].port);
            let phase = Duration::from_micros(20_000 * (tasks.len() as u64 / 2) / streams);
            let (recv_sock, me, received) = (p.clone(), p.clone(), received.clone());
            tasks.push(tokio::spawn(async move {
                let mut buf = [0u8; 1500];
                while recv_sock.recv_from(&mut buf).await.is_ok() {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }));
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval_at(
                    tokio::time::Instant::now() + phase,
                    Duration::from_millis(20),
                );
                let end = Instant::now() + Duration::from_secs(seconds);
                let ssrc = rand_u32();
                let mut seq: u16 = 0;
                let payload = [0x55u8; 160];
                while Instant::now() < end {
                    tick.tick().await;
                    seq = seq.wrapping_add(1);
                    let pkt = rtp_rs::RtpPacketBuilder::new()
                        .payload_type(0)
                        .ssrc(ssrc)
                        .sequence(seq.into())
                        .timestamp(seq as u32 * 160)
                        .payload(&payload)
                        .build()
                        .unwrap();
                    let _ = me.send_to(&pkt, target).await;
                }
            }));
        }
        keep.push((legs, mixer));
    }
    // Lost: frames the mixers sent that no phone received; late: rounds the mixers missed.
    MIX_STATS.record(true);
    let rounds_before = MIX_STATS.rounds.load(Ordering::Relaxed);
    let sent_before: u64 = keep
        .iter()
        .flat_map(|(l, _)| l.iter())
        .map(|l| l.output.stats.sent.load(Ordering::Relaxed))
        .sum();
    let before = received.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let rounds = MIX_STATS.rounds.load(Ordering::Relaxed) - rounds_before;
    let sent_after: u64 = keep
        .iter()
        .flat_map(|(l, _)| l.iter())
        .map(|l| l.output.stats.sent.load(Ordering::Relaxed))
        .sum();
    tokio::time::sleep(Duration::from_millis(200)).await; // the last frames in flight
    let got = received.load(Ordering::Relaxed) - before;
    MIX_STATS.record(false);
    for t in &tasks {
        t.abort();
    }
    drop(keep);
    let sent = sent_after - sent_before;
    eprintln!(
        "mix: {rounds} rounds of {} due; {sent} mixed frames sent, {got} received",
        conferences as u64 * 50 * seconds
    );
    Ok((MIX_STATS.take_waits(), got, sent.max(streams)))
}

async fn mix_benchmark() -> anyhow::Result<()> {
    use cc_sip_gateway::media::MIX_STATS;
    let conferences: usize = env("CC_BENCH_MIX_CONFERENCES", "100").parse()?;
    let seconds: u64 = env("CC_BENCH_RTP_SECONDS", "10").parse()?;
    let gateway = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    // Baseline: the two-party relay of the same number of legs, end to end, added p99.
    let legs = 3 * conferences;
    let (mut base, _, _) = relay_round(legs / 2, false, seconds, gateway.handle()).await?;
    let (mut relayed, _, _) = relay_round(legs / 2, true, seconds, gateway.handle()).await?;
    let relay_added = percentile_ms(&mut relayed, 99.0) - percentile_ms(&mut base, 99.0);
    let dropped_before = MIX_STATS.dropped.load(Ordering::Relaxed);
    let (mut waits, got, expected) = mix_round(conferences, seconds, gateway.handle()).await?;
    let dropped = MIX_STATS.dropped.load(Ordering::Relaxed) - dropped_before;
    gateway.shutdown_background();
    let p99 = percentile_ms(&mut waits, 99.0);
    eprintln!(
        "mix: {conferences} conferences ({legs} legs): {got} mixed frames received of {expected} sent, {dropped} frames dropped; wait p50 {:.2} ms, p99 {p99:.2} ms, max {:.2} ms; relay added p99 {relay_added:.2} ms",
        percentile_ms(&mut waits, 50.0),
        percentile_ms(&mut waits, 100.0)
    );
    summary("mix-3way-p99", p99, "ms", relay_added.max(0.0));
    summary(
        "mix-3way-lost",
        (dropped + expected.saturating_sub(got)) as f64,
        "frames",
        expected as f64,
    );
    Ok(())
}

fn rand_u32() -> u32 {
    (uuid::Uuid::new_v4().as_u128() & 0xffff_ffff) as u32
}

async fn relay_benchmark() -> anyhow::Result<()> {
    let calls: usize = env("CC_BENCH_RTP_CALLS", "500").parse()?;
    let seconds: u64 = env("CC_BENCH_RTP_SECONDS", "10").parse()?;
    let gateway = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let (mut base, bsent, brecv) = relay_round(calls, false, seconds, gateway.handle()).await?;
    let (mut relayed, sent, recv) = relay_round(calls, true, seconds, gateway.handle()).await?;
    gateway.shutdown_background();
    let (bp99, rp99) = (
        percentile_ms(&mut base, 99.0),
        percentile_ms(&mut relayed, 99.0),
    );
    eprintln!("relay: {calls} calls ({} streams), {sent} packets sent, {recv} received; socket pair: {bsent} sent, {brecv} received", calls * 2);
    eprintln!(
        "relay p50 {:.3} ms, baseline p50 {:.3} ms; added p99 {:.3} ms",
        percentile_ms(&mut relayed, 50.0),
        percentile_ms(&mut base, 50.0),
        rp99 - bp99
    );
    summary("rtp-relay-p99", rp99, "ms", bp99);
    summary(
        "rtp-relay-lost",
        sent.saturating_sub(recv) as f64,
        "packets",
        sent as f64,
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let which = env("CC_BENCH_SIP", "all");
    if which == "all" || which == "relay" {
        relay_benchmark().await?;
    }
    if which == "all" || which == "mix" {
        mix_benchmark().await?;
    }
    if which == "all" || which == "ring" {
        ring_benchmark().await?;
    }
    Ok(())
}
