//! A three-node NATS cluster on loopback (libs/testkit, the product's node file
//! infra/k8s/nats-cluster.conf): the services' `CC_NATS_URL` lists the three, the streams are
//! R3, and calls keep flowing while a node is SIGKILLed: first the node leading the events
//! stream (it comes back and catches up), then the one leading the PBX stream (it stays down).
//! Afterwards, with two nodes of three: every call the simulator placed ended once at the PBX
//! and once in the store, no agent is stuck, and the events stream holds every stored event
//! once, in store order (the chaos suite's checks, chaos/rig.rs).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_nats::jetstream::stream::Info;
use cc_bus::{Bus, CommandContext, Subjects};
use cc_pbx_sim::traffic::{StartTraffic, StopTraffic};
use cc_testkit::tls::PgServer;
use cc_testkit::{eventually, NatsSetup, NatsShape};

use crate::chaos::rig::{self, Chaos, Plan, GROUPS, NATS_ELECTION, QUEUE};
use crate::system::System;

const OUTAGE: Duration = Duration::from_secs(5);
const STEADY: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_node_lost_under_traffic_loses_no_call_and_no_event() {
    let started = Instant::now();
    let pg = PgServer::start_plain();
    let mut sys =
        System::unstarted_in(Some(&pg.url()), NatsSetup::default(), NatsShape::Cluster3).await;
    assert_eq!(sys.nats.url().split(',').count(), 3, "{}", sys.nats.url());
    sys.env = vec![
        ("CC_DATABASE_MAX_CONNECTIONS".into(), "8".into()),
        ("CC_LOG".into(), "warn".into()),
    ];
    sys.log = std::env::var_os("CC_CHAOS_LOG").map(Into::into);
    // The simulator in a process of its own, every other service in another: each target
    // has its own NATS connection, spread over the three nodes.
    let mut procs = BTreeMap::new();
    procs.insert("pbx-sim", sys.spawn_services("pbx-sim"));
    procs.insert("services", sys.spawn_services(&GROUPS.join(",")));
    // Demo mode: the chaos rig (chaos/rig.rs) sets up its agents in the demo tenant.
    sys.wait_ready("demo").await;
    let bus = Bus::new(
        sys.operator_nats().await.unwrap(),
        Subjects::new(&sys.prefix),
    );
    let mut chaos = Chaos {
        sys,
        pg,
        procs,
        bus,
        ctx: CommandContext::new("demo", "nats-cluster"),
    };
    let plan = Plan {
        name: "nats-cluster",
        agents: 20,
        rate: 5.0,
        outage: OUTAGE,
        stop: Duration::ZERO,
        full: Duration::ZERO,
        lock: Duration::ZERO,
        steady: STEADY,
        talk_ms: 1500,
    };
    let agents = chaos.setup(&plan).await;

    // Both streams are replicated on the three nodes, and so are the durable consumers.
    let subjects = Subjects::new(&chaos.sys.prefix);
    let (events, pbx) = (subjects.events_stream(), subjects.pbx_stream());
    for stream in [&events, &pbx] {
        let info = eventually(
            &format!("{stream} R3 with every replica current"),
            Duration::from_secs(20),
            || async {
                let info = stream_info(&chaos, stream).await?;
                let cluster = info.cluster.as_ref()?;
                (peers(cluster) == 3
                    && cluster
                        .replicas
                        .iter()
                        .all(|r| r.current || r.name == cluster.leader.clone().unwrap_or_default()))
                .then_some(info)
            },
        )
        .await;
        assert_eq!(info.config.num_replicas, 3, "{stream}");
    }
    assert_durable_consumers_replicated(&chaos, &pbx).await;

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
    tokio::time::sleep(STEADY).await;

    let mut report = vec![];
    for (round, stream) in [&events, &pbx].into_iter().enumerate() {
        let leader = leader_of(&chaos, stream).await;
        let mut led = vec![];
        for s in [&events, &pbx] {
            if leader_of(&chaos, s).await == leader {
                led.push(s.as_str());
            }
        }
        chaos.sys.nats.node(&leader).stop();
        let t = Instant::now();
        // Calls are still routed while the node is down: an offer recorded after the kill.
        let recovery = chaos.recovery().await;
        report.push(format!(
            "killed {leader} (leader of {}): first offer after {recovery:?} s",
            led.join(", ")
        ));
        assert!(
            recovery.is_some_and(|r| r < NATS_ELECTION.as_secs_f64()),
            "no call routed within {NATS_ELECTION:?} of losing NATS node {leader}: {report:?}"
        );
        for s in [&events, &pbx] {
            let l = eventually(
                &format!("a new leader of {s}"),
                Duration::from_secs(20),
                || async {
                    let info = stream_info(&chaos, s).await?;
                    info.cluster?.leader.filter(|l| *l != leader)
                },
            )
            .await;
            report.push(format!("{s} led by {l}"));
        }
        tokio::time::sleep(OUTAGE.saturating_sub(t.elapsed())).await;
        if round == 0 {
            // It comes back, catches up, and the next loss may be any node.
            chaos.sys.nats.node(&leader).restart();
            let nats = &chaos.sys.nats;
            tokio::task::block_in_place(|| nats.wait_healthy(Duration::from_secs(30)));
        }
        tokio::time::sleep(STEADY).await;
    }

    chaos.request(&StopTraffic {}).await;
    let settled = chaos.settle(Duration::from_secs(30)).await;
    let mut problems: Vec<String> = vec![];
    if let Err(still) = settled {
        problems.push(format!("the system did not settle within 30 s: {still}"));
    }
    for (group, p) in chaos.procs.iter_mut() {
        if p.exited() {
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
    // Read from the two nodes left.
    let (published, duplicated, missing) = chaos.jetstream_against_store(&mut problems).await;
    let summary = format!(
        "nats cluster: {} calls placed, {} not ended once, {} agents stuck, {} facts the simulator \
         could not report; JetStream {published} events, {duplicated} duplicated, {missing} \
         missing; {:.0} s in all\n{}",
        tally.inbound.len(),
        lost.len(),
        stuck.len(),
        tally.unreported,
        started.elapsed().as_secs_f64(),
        report.join("\n")
    );
    eprintln!("{summary}");
    assert!(tally.inbound.len() > 20, "too few calls placed to tell");
    assert!(problems.is_empty(), "{summary}\n{}", problems.join("\n"));
}

/// How many servers hold the stream or consumer: its leader and its other replicas.
fn peers(cluster: &async_nats::jetstream::stream::ClusterInfo) -> usize {
    let mut names: std::collections::BTreeSet<&str> =
        cluster.replicas.iter().map(|r| r.name.as_str()).collect();
    names.extend(cluster.leader.as_deref());
    names.len()
}

async fn stream_info(chaos: &Chaos, stream: &str) -> Option<Info> {
    let mut s = chaos.bus.jetstream.get_stream(stream).await.ok()?;
    s.info().await.ok().cloned()
}

/// The server name of the node leading `stream` now.
async fn leader_of(chaos: &Chaos, stream: &str) -> String {
    eventually(
        &format!("a leader of {stream}"),
        Duration::from_secs(20),
        || async { stream_info(chaos, stream).await?.cluster?.leader },
    )
    .await
}

/// Every durable consumer of `stream` (the services' PBX consumers: the router's, call
/// control's, agent-session's devices) has three replicas too. The router makes its consumer
/// when it first leads, which may be a moment after the system is ready.
async fn assert_durable_consumers_replicated(chaos: &Chaos, stream: &str) {
    use futures::TryStreamExt;
    let durable = eventually(
        &format!("the services' three durable consumers of {stream}"),
        Duration::from_secs(20),
        || async {
            let s = chaos.bus.jetstream.get_stream(stream).await.ok()?;
            let consumers: Vec<async_nats::jetstream::consumer::Info> =
                s.consumers().try_collect().await.ok()?;
            let durable: Vec<_> = consumers
                .into_iter()
                .filter(|c| c.config.durable_name.is_some())
                .collect();
            (durable.len() >= 3).then_some(durable)
        },
    )
    .await;
    for c in durable {
        let replicas = c.cluster.as_ref().map_or(0, peers);
        assert_eq!(replicas, 3, "consumer {} of {stream}: {c:?}", c.name);
    }
}
