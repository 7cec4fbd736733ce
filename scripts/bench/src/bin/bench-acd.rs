//! Queue calls under load (issue: queue calls end to end):
//!
//! - `acd-p99`: ms from a caller entering a queue (the PBX's inbound `ChannelCreated`) to the
//!   chosen agent's device ringing (`ChannelRinging` of the offer), with 1,000 logged-in agents
//!   across 10 queues and 100 new calls per second for 60 s (the PBX simulator's traffic
//!   generator: Poisson arrivals, phones answering after 300 ms, talk time 4 s on average).
//!   Baseline: a bare NATS request/reply round trip (p99), same run.
//! - `acd-lost`: calls that entered a queue and were neither answered and ended, abandoned nor
//!   sent away, plus agents left ringing, connected or in wrap-up, after the traffic and a
//!   drain period. Must be 0. Baseline: the calls placed.
//!
//! For `scripts/bench-acd-scale`: `CC_BENCH_TENANTS` spreads the agents and the rate over that
//! many tenants, `CC_BENCH_PARTITIONS` sets `CC_PARTITIONS`, and `CC_BENCH_ROUTERS=n` runs the
//! queue router in n processes of its own (sharing the partitions), each pinned to a core of
//! its own with taskset when `CC_BENCH_PIN=1`; `CC_BENCH_QUEUES` (10) of each tenant's queues
//! take the calls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cc_bench::{
    cpu_ticks, cpu_ticks_named, env, fresh_database, parallel, percentile_ms, summary, wait_http_ok,
};
use cc_bus::{Bus, CommandContext, Subjects};
use cc_contracts::auth::CreateAgent;
use cc_contracts::domain::{AgentNumber, DeviceId, QueueNumber};
use cc_contracts::pbx::ChannelEvent;
use cc_contracts::queue::AssignAgent;
use cc_pbx_sim::calls::PhoneMode;
use cc_pbx_sim::control::{AddDevice, SetRegistered};
use cc_pbx_sim::traffic::StartTraffic;
use futures::StreamExt;

#[derive(Default)]
struct Timing {
    entered: HashMap<String, Instant>,
    leg_caller: HashMap<String, String>,
    latencies: Vec<Duration>,
    offered_calls: std::collections::HashSet<String>,
    /// Wall-clock times of the caller's arrival and of the offer's ringing, to split the
    /// latency at the router's append (the store's `recorded_at`, the same clock).
    wall: HashMap<
        String,
        (
            chrono::DateTime<chrono::Utc>,
            Option<chrono::DateTime<chrono::Utc>>,
        ),
    >,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let admin = env(
        "CC_BENCH_ADMIN_URL",
        "postgres://postgres@127.0.0.1:5432/postgres",
    );
    let nats_url = env("CC_NATS_URL", "nats://127.0.0.1:4222");
    let agents: usize = env("CC_BENCH_AGENTS", "1000").parse()?;
    let rate: f64 = env("CC_BENCH_RATE", "100").parse()?;
    let seconds: u64 = env("CC_BENCH_SECONDS", "60").parse()?;
    let binary = env("CC_BENCH_BINARY", "target/release/callcenter");

    let (pool, url) = fresh_database(&admin, "cc_bench_acd", 8).await?;
    let prefix = format!("bacd{}", uuid::Uuid::now_v7().simple());
    // How the services are laid out in processes: "pbx-apart" (the default: the services in
    // one process, the PBX simulator in another, as a PBX is a system of its own), "one"
    // (the simulator too in the same process, as `scripts/run` does) or "each" (one process
    // per service, as on Kubernetes).
    let layout = env("CC_BENCH_LAYOUT", "pbx-apart");
    let groups: Vec<&str> = match layout.as_str() {
        "one" => vec!["all"],
        "pbx-apart" => vec![
            "relay,auth,agent-session,queue-router,call-control,projection,portal",
            "pbx-sim",
        ],
        "each" => vec![
            "relay",
            "auth",
            "agent-session",
            "queue-router",
            "call-control",
            "projection",
            "portal",
            "pbx-sim",
        ],
        other => anyhow::bail!("CC_BENCH_LAYOUT: {other:?} is not one of one, pbx-apart, each"),
    };
    let tenants: usize = env("CC_BENCH_TENANTS", "1").parse()?;
    let partitions = env("CC_BENCH_PARTITIONS", "1");
    let routers: usize = env("CC_BENCH_ROUTERS", "0").parse()?;
    let pin = env("CC_BENCH_PIN", "0") == "1";
    let mut groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
    if routers > 0 {
        // The router in processes of its own; the others keep the rest.
        for g in &mut groups {
            let rest: Vec<&str> = g.split(',').filter(|t| *t != "queue-router").collect();
            *g = rest.join(",");
        }
        groups.retain(|g| !g.is_empty() && g != "all");
        if layout == "one" {
            groups.insert(
                0,
                "relay,auth,agent-session,call-control,projection,portal,pbx-sim".into(),
            );
        }
        groups.extend((0..routers).map(|_| "queue-router".to_string()));
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let connections = if groups.len() > 2 { "10" } else { "40" };
    let mut children = vec![];
    let mut router_index = 0;
    for (i, targets) in groups.iter().enumerate() {
        let admin_addr = format!("127.0.0.1:{}", 18481 + 10 * i);
        let mut cmd = if pin && targets == "queue-router" {
            let mut c = tokio::process::Command::new("taskset");
            c.args(["-c", &(router_index % cores).to_string(), &binary]);
            router_index += 1;
            c
        } else {
            tokio::process::Command::new(&binary)
        };
        let child = cmd
            .args(["run", "--target", targets])
            .env("CC_DATABASE_URL", &url)
            .env("CC_NATS_URL", &nats_url)
            .env("CC_SUBJECT_PREFIX", &prefix)
            .env("CC_PORTAL_ADDR", "127.0.0.1:18480")
            .env("CC_PBX_SIM_ADDR", "127.0.0.1:18482")
            .env("CC_ADMIN_ADDR", &admin_addr)
            .env("CC_DATABASE_MAX_CONNECTIONS", connections)
            .env("CC_PARTITIONS", &partitions)
            .env("CC_LOG", env("CC_BENCH_LOG", "warn"))
            .kill_on_drop(true)
            .spawn()?;
        children.push(child);
        wait_http_ok(&admin_addr, "/readyz", Duration::from_secs(60)).await?;
    }
    eprintln!(
        "layout {layout}: {} process(es): {groups:?}; {tenants} tenant(s), {partitions} partition(s){}",
        children.len(),
        if pin { ", routers pinned" } else { "" }
    );
    let client = async_nats::connect(&nats_url).await?;
    let bus = Bus::new(client.clone(), Subjects::new(&prefix));
    let setup = Instant::now();
    let contexts: Vec<CommandContext> = (0..tenants)
        .map(|t| {
            let id = if tenants == 1 {
                "bench".to_string()
            } else {
                format!("bench{t}")
            };
            CommandContext::new(&id, "bench")
        })
        .collect();
    let mut queues = vec![];
    for c in &contexts {
        queues = cc_bench::bench_tenant(&bus, c).await?;
    }
    // CC_BENCH_QUEUES: how many of each tenant's queues take calls (fewer, larger queues keep
    // the agents per queue of the standard run when the agents are spread over tenants).
    let used: usize = env("CC_BENCH_QUEUES", "10").parse()?;
    queues.truncate(used.clamp(1, queues.len()));
    let per_tenant = agents.div_ceil(tenants);
    let number = |i: usize| format!("{}", 20000 + i);
    parallel(agents, 8, |i| {
        let (bus, c, queues) = (
            bus.clone(),
            contexts[i / per_tenant].clone(),
            queues.clone(),
        );
        let i = i % per_tenant;
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
            bus.request(&c, &AddDevice { device: d.clone() }).await?;
            bus.request(
                &c,
                &SetRegistered {
                    device: d,
                    registered: true,
                },
            )
            .await?;
            Ok(())
        }
    })
    .await?;
    for (t, c) in contexts.iter().enumerate() {
        let mine =
            (t * per_tenant..((t + 1) * per_tenant).min(agents)).map(|i| number(i % per_tenant));
        cc_bench::log_in_agents(&bus, c, mine.collect()).await?;
    }
    eprintln!(
        "{agents} agents logged in across {} tenant(s) of {} queues in {:.0} s",
        contexts.len(),
        queues.len(),
        setup.elapsed().as_secs_f64()
    );

    // Baseline: bare NATS request/reply.
    let echo_subject = format!("{prefix}.echo");
    let mut echo = client.subscribe(echo_subject.clone()).await?;
    let responder = client.clone();
    tokio::spawn(async move {
        while let Some(m) = echo.next().await {
            if let Some(r) = m.reply {
                let _ = responder.publish(r, m.payload).await;
            }
        }
    });
    client.flush().await?;
    let mut baseline = Vec::new();
    for _ in 0..3000 {
        let t = Instant::now();
        client.request(echo_subject.clone(), "ping".into()).await?;
        baseline.push(t.elapsed());
    }

    // Entered -> ringing, measured from the PBX's facts.
    let timing: Arc<Mutex<Timing>> = Arc::default();
    let mut facts = client
        .subscribe(format!("{prefix}.pbx.evt.*.channel.>"))
        .await?;
    client.flush().await?;
    let t2 = timing.clone();
    tokio::spawn(async move {
        while let Some(m) = facts.next().await {
            let now = Instant::now();
            let wall = chrono::Utc::now();
            let Ok(e) = serde_json::from_slice::<ChannelEvent>(&m.payload) else {
                continue;
            };
            let mut t = t2.lock().unwrap();
            match e {
                ChannelEvent::ChannelCreated {
                    tenant,
                    caller,
                    dialed: Some(_),
                    ..
                } => {
                    let key = format!("{tenant}/{}", caller.number);
                    t.wall.insert(key.clone(), (wall, None));
                    t.entered.insert(key, now);
                }
                ChannelEvent::ChannelCreated {
                    tenant,
                    channel,
                    caller,
                    device: Some(_),
                    ..
                } => {
                    t.leg_caller
                        .insert(channel, format!("{tenant}/{}", caller.number));
                }
                ChannelEvent::ChannelRinging { channel, .. } => {
                    if let Some(caller) = t.leg_caller.get(&channel).cloned() {
                        if t.offered_calls.insert(caller.clone()) {
                            if let Some(start) = t.entered.get(&caller).copied() {
                                t.latencies.push(now - start);
                            }
                            if let Some(w) = t.wall.get_mut(&caller) {
                                w.1 = Some(wall);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    });

    let phones = PhoneMode::Agent {
        after_ms: 300,
        probability: 1.0,
        // CC_BENCH_TALK_MS: the mean talk time (exponential); a few ms makes every caller
        // hang up right after the answer, the race of a hangup with the connect.
        talk_ms: env("CC_BENCH_TALK_MS", "4000").parse()?,
    };
    for c in &contexts {
        bus.request(
            c,
            &StartTraffic {
                queues: queues.clone(),
                calls_per_second: rate / tenants as f64,
                duration_s: seconds,
                patience_ms: 0,
                phones: Some(phones),
                caller_prefix: "7".into(),
            },
        )
        .await?;
    }
    // The CPU the load costs, by process, over the seconds of traffic.
    let pids: Vec<u32> = children.iter().filter_map(|c| c.id()).collect();
    let cpu = || {
        [
            cpu_ticks_named("postgres"),
            cpu_ticks_named("nats-server"),
            pids.iter().map(|p| cpu_ticks(*p)).sum(),
        ]
    };
    let cpu_before = cpu();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let cpu_used: Vec<f64> = cpu()
        .iter()
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before) as f64 / 100.0)
        .collect();
    // Drain: talk times are exponential (mean 4 s), then 1 s of wrap-up.
    tokio::time::sleep(Duration::from_secs(40)).await;

    let placed = { timing.lock().unwrap().entered.len() };
    let unfinished: i64 = sqlx::query_scalar(
        "select count(*) from es_events e where e.event_type = 'CallEnteredQueue' and not exists (
           select 1 from es_events t where t.stream = e.stream and t.event_type in ('CallEnded', 'CallAbandoned', 'CallLeftQueue'))",
    )
    .fetch_one(&pool)
    .await?;
    let stuck: i64 = sqlx::query_scalar("select count(*) from rm_agents where view->>'status' in ('ringing', 'connected', 'on_hold', 'wrap_up')")
        .fetch_one(&pool)
        .await?;
    // (The lock is taken in a statement of its own: never held across an await.)
    let mut l: Vec<Duration> = timing.lock().unwrap().latencies.clone();
    let ended: i64 =
        sqlx::query_scalar("select count(*) from es_events where event_type = 'CallEnded'")
            .fetch_one(&pool)
            .await?;
    eprintln!(
        "{placed} calls placed in {seconds} s, {} offered, {ended} answered and ended; unfinished {unfinished}, agents stuck {stuck}; \
         entered->ringing p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; NATS request/reply p50 {:.2} ms",
        l.len(),
        percentile_ms(&mut l, 50.0),
        percentile_ms(&mut l, 99.0),
        percentile_ms(&mut l, 100.0),
        percentile_ms(&mut baseline, 50.0)
    );
    // Where the time goes: arrival -> the router's append (CallEnteredQueue and CallOffered
    // commit together), and that append -> the offer ringing (call control and the PBX).
    let appended: Vec<(String, String, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "select metadata->>'tenant', data->'caller'->>'number', recorded_at from es_events
          where event_type = 'CallEnteredQueue'",
    )
    .fetch_all(&pool)
    .await?;
    {
        let t = timing.lock().unwrap();
        let (mut to_router, mut to_ringing) = (vec![], vec![]);
        for (tenant, number, at) in appended {
            if let Some((entered, Some(ringing))) = t.wall.get(&format!("{tenant}/{number}")) {
                to_router.push((at - *entered).to_std().unwrap_or_default());
                to_ringing.push((*ringing - at).to_std().unwrap_or_default());
            }
        }
        eprintln!(
            "stages of {} calls: entered->router's append p50 {:.2} ms, p99 {:.2} ms; append->ringing p50 {:.2} ms, p99 {:.2} ms",
            to_router.len(),
            percentile_ms(&mut to_router, 50.0),
            percentile_ms(&mut to_router, 99.0),
            percentile_ms(&mut to_ringing, 50.0),
            percentile_ms(&mut to_ringing, 99.0),
        );
    }
    eprintln!(
        "CPU over the {seconds} s of traffic: PostgreSQL {:.2} s, nats-server {:.2} s, the {} process(es) started here {:.2} s; {:.1} ms a call in all",
        cpu_used[0],
        cpu_used[1],
        pids.len(),
        cpu_used[2],
        cpu_used.iter().sum::<f64>() * 1000.0 / placed.max(1) as f64
    );
    summary(
        "acd-p99",
        percentile_ms(&mut l, 99.0),
        "ms",
        percentile_ms(&mut baseline, 99.0),
    );
    summary(
        "acd-lost",
        (unfinished + stuck) as f64,
        "calls",
        placed as f64,
    );
    for mut child in children {
        child.kill().await?;
    }
    cc_bench::drop_streams(&client, &prefix).await?;
    Ok(())
}
