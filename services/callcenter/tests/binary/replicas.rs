//! Three replicas of every service (issue 16): three processes each running every service, a
//! three-node NATS cluster, the simulator's traffic; one replica process SIGKILLed, then a
//! NATS node, then PostgreSQL restarted. Every lease is held by one live process within 5 s of
//! each fault, the highest epoch by one process at every instant, and afterwards every call
//! ended once, no agent is stuck and JetStream holds every stored event once (the chaos
//! suite's checks, chaos/rig.rs).
//!
//! The queue router, call control and the portal and reporting projections run with four
//! partitions (`CC_PARTITIONS=4`): the replicas share them (at most two of each once all three
//! run), and the killed replica is the one leading the demo tenant's router partition. The
//! relay still leads every tenant from one replica (it does not limit throughput: see
//! docs/operations.md, Scaling).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cc_bus::{Bus, CommandContext, Subjects};
use cc_pbx_sim::traffic::{StartTraffic, StopTraffic};
use cc_testkit::tls::PgServer;
use cc_testkit::{NatsSetup, NatsShape};

use crate::chaos::rig::{self, Chaos, Plan, GROUPS, QUEUE};
use crate::system::System;

const REPLICAS: [&str; 3] = ["replica-1", "replica-2", "replica-3"];
const PARTITIONS: u32 = 4;
/// The services that lead per partition, by the name of their lease gauge.
const PARTITIONED: [&str; 4] = [
    "queue_router",
    "call_control",
    "portal_projection",
    "reporting_projection",
];

/// Every lease: the relay's (one for the store) and each partition's of the others
/// (`queue_router/p2`, as the metrics name them).
static LEASES: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
    std::iter::once("relay".to_string())
        .chain(
            PARTITIONED
                .iter()
                .flat_map(|s| (0..PARTITIONS).map(move |p| format!("{s}/p{p}"))),
        )
        .collect()
});

fn all_leases() -> impl Iterator<Item = &'static str> {
    LEASES.iter().map(String::as_str)
}

/// Partition `p`'s lease of `service`.
fn lease_of(service: &str, p: u32) -> &'static str {
    all_leases()
        .find(|l| *l == format!("{service}/p{p}"))
        .expect("a partitioned service")
}

/// Every partition's lease of `service`.
fn leases_of(service: &str) -> Vec<&'static str> {
    (0..PARTITIONS).map(|p| lease_of(service, p)).collect()
}

const TAKEOVER: Duration = Duration::from_secs(5);

/// One sample of who holds what: lease -> the (replica, epoch) of every process that says it
/// holds it.
type Holders = HashMap<&'static str, Vec<(&'static str, i64)>>;

async fn holders(http: &reqwest::Client, admins: &[(&'static str, String)]) -> Holders {
    let mut out: Holders = all_leases().map(|l| (l, vec![])).collect();
    for (replica, url) in admins {
        let Ok(r) = http
            .get(url)
            .timeout(Duration::from_millis(500))
            .send()
            .await
        else {
            continue; // killed, or not up yet
        };
        let Ok(text) = r.text().await else { continue };
        for lease in all_leases() {
            let gauge = |name: &str| {
                let prefix = format!("{name}{{lease=\"{lease}\"}} ");
                text.lines()
                    .find_map(|l| l.strip_prefix(&prefix)?.parse::<i64>().ok())
            };
            if gauge("cc_lease_held") == Some(1) {
                let epoch = gauge("cc_lease_epoch").unwrap_or(0);
                out.get_mut(lease).unwrap().push((*replica, epoch));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_lose_a_process_a_nats_node_and_postgresql_and_no_call() {
    let started = Instant::now();
    let pg = PgServer::start_plain();
    let mut sys =
        System::unstarted_in(Some(&pg.url()), NatsSetup::default(), NatsShape::Cluster3).await;
    sys.env = vec![
        ("CC_DATABASE_MAX_CONNECTIONS".into(), "6".into()),
        ("CC_PARTITIONS".into(), PARTITIONS.to_string()),
        // CC_CHAOS_LOG=<file> CC_CHAOS_LOG_FILTER=<filter>: the services' log lines, as in chaos.
        (
            "CC_LOG".into(),
            std::env::var("CC_CHAOS_LOG_FILTER").unwrap_or_else(|_| "info".into()),
        ),
    ];
    // The services' log goes to a file (shown when the system does not come up).
    sys.log = Some(std::env::var_os("CC_CHAOS_LOG").map_or_else(
        || std::env::temp_dir().join(format!("cc-replicas-{}.log", sys.prefix)),
        Into::into,
    ));
    let mut procs = BTreeMap::new();
    procs.insert("pbx-sim", sys.spawn_services("pbx-sim"));
    // The first replica takes every lease; the others stand by.
    procs.insert(REPLICAS[0], sys.spawn_services(&GROUPS.join(",")));
    sys.wait_ready("demo").await;
    // Each with a portal of its own (behind a load balancer in production).
    let env = sys.env.clone();
    for r in &REPLICAS[1..] {
        let portal = format!("127.0.0.1:{}", cc_testkit::free_port());
        sys.env = env.clone();
        sys.env.push(("CC_PORTAL_ADDR".into(), portal));
        procs.insert(*r, sys.spawn_services(&GROUPS.join(",")));
    }
    sys.env = env;
    let admins: Vec<(&'static str, String)> = REPLICAS
        .iter()
        .map(|r| (*r, procs[r].admin("/metrics")))
        .collect();
    let bus = Bus::new(
        sys.operator_nats().await.unwrap(),
        Subjects::new(&sys.prefix),
    );
    let mut chaos = Chaos {
        sys,
        pg,
        procs,
        bus,
        ctx: CommandContext::new("demo", "replicas"),
    };
    let plan = Plan {
        name: "replicas",
        agents: 40,
        rate: 20.0,
        outage: Duration::from_secs(3),
        stop: Duration::ZERO,
        full: Duration::ZERO,
        lock: Duration::ZERO,
        steady: Duration::from_secs(3),
        talk_ms: 1500,
    };
    let agents = chaos.setup(&plan).await;

    // Who holds what, every 100 ms, for the whole run.
    let http = reqwest::Client::new();
    let samples: Arc<Mutex<Vec<(Instant, Holders)>>> = Arc::default();
    let watch = tokio::spawn({
        let (samples, admins, http) = (samples.clone(), admins.clone(), http.clone());
        async move {
            loop {
                let h = holders(&http, &admins).await;
                samples.lock().unwrap().push((Instant::now(), h));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    // Every lease held once, by one live replica, within `within`: its holder per lease.
    let settled = |within: Duration| {
        let (http, admins) = (http.clone(), admins.clone());
        async move {
            let t = Instant::now();
            loop {
                let h = holders(&http, &admins).await;
                if all_leases().all(|l| h[l].len() == 1) {
                    return Ok((t.elapsed(), h));
                }
                if t.elapsed() > within {
                    return Err(format!("after {within:?}: {h:?}"));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let mut problems: Vec<String> = vec![];
    let mut report: Vec<String> = vec![];
    let (_, before) = settled(Duration::from_secs(30))
        .await
        .expect("every lease held");
    report.push(format!("leases at the start: {before:?}"));
    // The router's and call control's partitions are shared: once all three replicas run, none
    // leads more than its fair share (2 of 4) of either, each partition by one.
    let share = PARTITIONS.div_ceil(REPLICAS.len() as u32) as usize;
    for what in PARTITIONED {
        let leases = leases_of(what);
        let t = Instant::now();
        let spread = loop {
            let h = holders(&http, &admins).await;
            let mut per: HashMap<&str, usize> = HashMap::new();
            for l in &leases {
                for (r, _) in &h[l] {
                    *per.entry(r).or_default() += 1;
                }
            }
            if leases.iter().all(|l| h[l].len() == 1) && per.values().all(|n| *n <= share) {
                break Some((t.elapsed(), per));
            }
            if t.elapsed() > Duration::from_secs(20) {
                problems.push(format!(
                    "the {what}'s partitions not shared within 20 s: {h:?}"
                ));
                break None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        report.push(format!("{what} partitions shared: {spread:?}"));
    }

    chaos
        .request(&StartTraffic {
            queues: vec![QUEUE.into()],
            calls_per_second: plan.rate,
            duration_s: 3600,
            patience_ms: 8000,
            phones: None,
            caller_prefix: "555".into(),
        })
        .await;
    tokio::time::sleep(plan.steady).await;

    // 1. The replica leading the demo tenant's router partition is SIGKILLed: the others take
    // its leases within 5 s.
    let demo_router = lease_of("queue_router", cc_core::partition::of("demo", PARTITIONS));
    let victim = holders(&http, &admins).await[demo_router][0].0;
    chaos.procs.get_mut(victim).unwrap().kill();
    match settled(TAKEOVER).await {
        Ok((took, after)) => {
            report.push(format!(
                "killed {victim}: every lease held again after {:.2} s: {after:?}",
                took.as_secs_f64()
            ));
            for l in all_leases() {
                if after[l][0].0 == victim {
                    problems.push(format!("{l} still held by the killed {victim}"));
                }
            }
        }
        Err(e) => problems.push(format!(
            "the leases of the killed {victim} not taken over: {e}"
        )),
    }
    let recovery = chaos.recovery().await;
    report.push(format!("first offer after the kill: {recovery:?} s"));
    tokio::time::sleep(plan.steady).await;

    // 2. A NATS node lost for good (the one leading the PBX stream).
    let leader = {
        let js = chaos.bus.jetstream.clone();
        let mut s = js
            .get_stream(Subjects::new(&chaos.sys.prefix).pbx_stream())
            .await
            .unwrap();
        s.info()
            .await
            .unwrap()
            .cluster
            .clone()
            .unwrap()
            .leader
            .unwrap()
    };
    chaos.sys.nats.node(&leader).stop();
    let recovery = chaos.recovery().await;
    report.push(format!(
        "killed NATS node {leader}: first offer after {recovery:?} s"
    ));
    if !recovery.is_some_and(|r| r < rig::NATS_ELECTION.as_secs_f64()) {
        problems.push(format!(
            "no call routed within {:?} of losing NATS node {leader}",
            rig::NATS_ELECTION
        ));
    }
    tokio::time::sleep(plan.steady).await;

    // 3. PostgreSQL restarted: every lease connection is cut, the leases are taken again.
    chaos.pg.stop();
    tokio::time::sleep(plan.outage).await;
    chaos.pg.restart();
    match settled(Duration::from_secs(30)).await {
        Ok((took, after)) => report.push(format!(
            "PostgreSQL restarted: every lease held again {:.2} s after it was back: {after:?}",
            took.as_secs_f64()
        )),
        Err(e) => problems.push(format!(
            "leases not held again after PostgreSQL's restart: {e}"
        )),
    }
    let recovery = chaos.recovery().await;
    report.push(format!(
        "first offer after PostgreSQL's restart: {recovery:?} s"
    ));
    tokio::time::sleep(plan.steady).await;

    chaos.request(&StopTraffic {}).await;
    let settled_calls = chaos.settle(Duration::from_secs(30)).await;
    watch.abort();
    if let Err(still) = settled_calls {
        problems.push(format!("the system did not settle within 30 s: {still}"));
    }

    // The highest epoch of each lease is held by one process at every instant, and it never
    // goes down: at most one holder that can write.
    let samples = std::mem::take(&mut *samples.lock().unwrap());
    let mut highest: HashMap<&str, i64> = HashMap::new();
    let mut changes = 0;
    for (_, h) in &samples {
        for l in all_leases() {
            let top = h[l].iter().map(|(_, e)| *e).max();
            let Some(top) = top else { continue };
            let at_top = h[l].iter().filter(|(_, e)| *e == top).count();
            if at_top > 1 {
                problems.push(format!("{l}: two processes in epoch {top}: {:?}", h[l]));
            }
            let prev = highest.entry(l).or_insert(top);
            if top < *prev {
                problems.push(format!("{l}: epoch {top} seen after {prev}"));
            }
            if top > *prev {
                changes += 1;
                *prev = top;
            }
        }
    }
    report.push(format!(
        "{} samples of the leases, {changes} changes of holder",
        samples.len()
    ));

    for (group, p) in chaos.procs.iter_mut() {
        if *group != victim && p.exited() {
            problems.push(format!("the {group} process exited"));
        }
    }
    let tally = chaos.tally().await;
    let ends = chaos.store_call_ends().await;
    let lost = chaos.calls_not_ended_once(&tally, &ends).await;
    problems.extend(lost.iter().take(10).map(|(_, what)| what.clone()));
    problems.extend(rig::calls_never_placed(&tally, &ends));
    let views = chaos.agent_views().await;
    if views.len() != agents.len() {
        problems.push(format!("{} agent views of {}", views.len(), agents.len()));
    }
    let stuck = rig::stuck_agents(&views);
    problems.extend(stuck.iter().take(10).map(|(_, what)| what.clone()));
    let (published, duplicated, missing) = chaos.jetstream_against_store(&mut problems).await;
    let summary = format!(
        "replicas: {} calls placed, {} not ended once, {} agents stuck; JetStream {published} \
         events, {duplicated} duplicated, {missing} missing; {:.0} s in all\n{}",
        tally.inbound.len(),
        lost.len(),
        stuck.len(),
        started.elapsed().as_secs_f64(),
        report.join("\n")
    );
    eprintln!("{summary}");
    assert!(
        tally.inbound.len() > 100,
        "too few calls placed to tell: {summary}"
    );
    assert!(problems.is_empty(), "{summary}\n{}", problems.join("\n"));
    if std::env::var_os("CC_CHAOS_LOG").is_none() {
        if let Some(log) = &chaos.sys.log {
            let _ = std::fs::remove_file(log);
        }
    }
}
