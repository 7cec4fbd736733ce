//! The chaos suite (`scripts/chaos`, docs/reliability.md): the PBX simulator's traffic
//! generator drives many logged-in agents while each fault is injected in turn: SIGKILL of
//! every service process, SIGSTOP of the router, a restart of nats-server, a restart of
//! PostgreSQL (a cluster of the test's own), the JetStream events stream full, a slow
//! PostgreSQL (a lock on the event store). Afterwards: every call placed has exactly one end
//! (the simulator's view and the store's call streams), no agent is stuck, every agent's
//! Completed / Missed / Rejected equal what the simulator's phones did, the reporting tables
//! equal a rebuild, and JetStream holds every stored event once, in store order.
//!
//! `CC_CHAOS=short` (the default; scripts/test) or `full` (`scripts/chaos --full`);
//! `CC_CHAOS_STRICT=1` (scripts/chaos) also fails on the open findings (lost calls, legs
//! ending otherwise than at the phone, counts, reporting), which are reported otherwise;
//! `CC_CHAOS_REPORT=<file>` also writes the figures there (Markdown), `CC_CHAOS_LOG=<file>`
//! keeps the services' logs.

pub mod rig;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use cc_bus::{Bus, CommandContext, Subjects};
use cc_pbx_sim::traffic::{StartTraffic, StopTraffic};
use cc_testkit::tls::PgServer;
use cc_testkit::NatsSetup;

use crate::system::System;
use rig::{v7, Chaos, Phase, Plan, GROUPS, QUEUE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_every_fault_under_traffic_loses_nothing() {
    let plan = Plan::from_env();
    let started = Instant::now();
    let pg = PgServer::start_plain();
    let mut sys = System::unstarted_on(Some(&pg.url()), NatsSetup::default()).await;
    sys.env = vec![
        ("CC_DATABASE_MAX_CONNECTIONS".into(), "8".into()),
        (
            "CC_LOG".into(),
            std::env::var("CC_CHAOS_LOG_FILTER").unwrap_or_else(|_| "warn".into()),
        ),
    ];
    // CC_CHAOS_LOG=<file>: the services' log lines (CC_CHAOS_LOG_FILTER: which, default warn).
    sys.log = std::env::var_os("CC_CHAOS_LOG").map(Into::into);
    let mut procs = BTreeMap::new();
    procs.insert("pbx-sim", sys.spawn_services("pbx-sim"));
    for g in GROUPS {
        procs.insert(*g, sys.spawn_services(g));
    }
    sys.wait_ready("demo").await;
    let client = sys.operator_nats().await.unwrap();
    let bus = Bus::new(client, Subjects::new(&sys.prefix));
    let mut chaos = Chaos {
        sys,
        pg,
        procs,
        bus,
        ctx: CommandContext::new("demo", "chaos"),
    };
    let agents = chaos.setup(&plan).await;
    eprintln!(
        "chaos {}: {} agents logged in, {} processes, {:.0} s",
        plan.name,
        agents.len(),
        chaos.procs.len(),
        started.elapsed().as_secs_f64()
    );

    let mut faults: Vec<String> = GROUPS.iter().map(|g| format!("kill {g}")).collect();
    faults.extend(
        [
            "stop queue-router",
            "restart nats-server",
            "restart postgresql",
            "jetstream full",
            "slow postgresql",
        ]
        .map(String::from),
    );
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
    let mut phases = vec![];
    let mut restarts: Vec<String> = vec![];
    for fault in &faults {
        let from = v7();
        let t = Instant::now();
        let extra = chaos.inject(fault, &plan).await;
        if extra > 0 {
            restarts.push(format!("{fault}: started {extra} more time(s)"));
        }
        let recovery = chaos.recovery().await;
        eprintln!(
            "chaos: {fault}: {:.1} s, recovery {recovery:?} s",
            t.elapsed().as_secs_f64()
        );
        phases.push(Phase {
            fault: fault.clone(),
            from,
            recovery,
        });
        tokio::time::sleep(plan.steady).await;
    }
    let end_of_faults = v7();
    // The traffic stops (a restart of nats-server may have cut the simulator's requests: retry).
    chaos.request(&StopTraffic {}).await;
    let settled = chaos.settle(Duration::from_secs(90)).await;
    let mut problems: Vec<String> = vec![];
    for (group, p) in chaos.procs.iter_mut() {
        if p.exited() {
            problems.push(format!("the {group} process exited"));
        }
    }

    // Calls: the simulator's callers and the store's call streams.
    let tally = chaos.tally().await;
    let pool = &chaos.sys.db.pool;
    let store_ends = chaos.store_call_ends().await;
    let phase_of = |channel: &str| {
        phases
            .iter()
            .rposition(|p| p.from.as_str() <= channel)
            .filter(|_| channel < end_of_faults.as_str())
    };
    let mut placed: HashMap<Option<usize>, usize> = HashMap::new();
    for channel in tally.inbound.keys() {
        *placed.entry(phase_of(channel)).or_default() += 1;
    }
    let entered_twice: Vec<(String, i64)> = sqlx::query_as(
        "select data->>'channel', count(*) from es_events where tenant = 'demo'
            and event_type = 'CallEnteredQueue' group by 1 having count(*) > 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    // A call the store ended whose caller the PBX still has (never hung up): counted apart.
    let (left_at_pbx, lost): (Vec<_>, Vec<_>) = chaos
        .calls_not_ended_once(&tally, &store_ends)
        .await
        .into_iter()
        .partition(|(channel, _)| {
            tally.inbound.get(channel) == Some(&0)
                && store_ends.get(channel).map(|(_, n)| *n) == Some(1)
        });
    let phased = |v: Vec<(String, String)>| -> Vec<(Option<usize>, String)> {
        v.into_iter()
            .map(|(channel, what)| (phase_of(&channel), what))
            .collect()
    };
    let (left_at_pbx, lost) = (phased(left_at_pbx), phased(lost));
    problems.extend(rig::calls_never_placed(&tally, &store_ends));

    // Agents: not stuck, and their counts are those of the simulator's phones.
    let views = chaos.agent_views().await;
    let call_channel: HashMap<String, String> = store_ends
        .iter()
        .map(|(ch, (stream, _))| (stream.trim_start_matches("call-").to_string(), ch.clone()))
        .collect();
    let stuck: Vec<(Option<usize>, String)> = rig::stuck_agents(&views)
        .into_iter()
        .map(|(call, what)| (call_channel.get(&call).and_then(|c| phase_of(c)), what))
        .collect();
    let mut miscounted: Vec<String> = vec![];
    // Leg by leg: how the store says each offer ended, against the simulator's phone.
    let offers: Vec<(String, String, String)> = sqlx::query_as(
        "select data->>'offer', data->>'agent', event_type from es_events
          where tenant = 'demo' and event_type in ('CallAnswered', 'OfferTimedOut', 'OfferRejected', 'OfferWithdrawn')",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut product_legs: HashMap<String, (String, String)> = HashMap::new();
    for (o, a, t) in offers {
        if let Some((_, first)) = product_legs.insert(o.clone(), (a, t.clone())) {
            problems.push(format!("offer {o} ended twice in the store: {first}, {t}"));
        }
    }
    // Why each withdrawn offer was withdrawn, each offer's caller channel, and the PBX's own
    // order of its reports.
    let withdrawn_for: HashMap<String, String> = sqlx::query_as(
        "select data->>'offer', data->>'reason' from es_events
          where tenant = 'demo' and event_type = 'OfferWithdrawn'",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let caller_of_leg: HashMap<String, String> = sqlx::query_as(
        "select o.data->>'offer', e.data->>'channel' from es_events o
           join es_events e on e.stream = o.stream and e.event_type = 'CallEnteredQueue'
          where o.tenant = 'demo' and o.event_type = 'CallOffered'",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    // Every offer the store recorded (rung or not, ended or not).
    let recorded_offers: std::collections::HashSet<String> =
        caller_of_leg.keys().cloned().collect();
    let pbx = chaos.pbx_reports().await;
    let mut races = 0;
    let mut unrecorded_rings = 0;
    let mut legs_differ: Vec<(Option<usize>, String)> = vec![];
    // An answer that reached the router after the ring deadline it judged by (a stalled
    // router), and a leg whose answer fact the simulator could not report (its fact queue
    // full): the agent's counts follow the store's judgement; open findings (strict).
    let mut late: Vec<(Option<usize>, String)> = vec![];
    let nats_phase = phases.iter().position(|p| p.fault == "restart nats-server");
    // What each agent's counts must be: its phone's outcomes (a late or unreported answer: as
    // the store judged it).
    let mut expected_counts: HashMap<&str, (u64, u64, u64)> = HashMap::new();
    for (leg, (device, outcome)) in &tally.legs {
        let product = product_legs.get(leg).map(|(_, t)| t.as_str());
        // The router's offer ids are `ccq-<UUIDv7>`.
        let phase = phase_of(leg.strip_prefix("ccq-").unwrap_or(leg));
        let expected = match outcome.as_str() {
            "completed" => "CallAnswered",
            "missed" | "late_answer" => "OfferTimedOut",
            "rejected" | "busy" => "OfferRejected",
            _ => "OfferWithdrawn",
        };
        let unreported = tally.unreported > 0 && phase == nats_phase && outcome == "completed";
        // A phone answering or declining just as its caller hangs up: the PBX reports both, and
        // the router judges by the order of the PBX's reports. The store must say what that
        // order says: the caller gone first, the offer withdrawn (the phone's reject or
        // answer came too late to count); the answer first, answered (the caller then gone
        // before the bridge).
        let caller_end = caller_of_leg.get(leg).and_then(|c| pbx.end(c));
        let leg_end = pbx.first(leg, &["ChannelAnswered", "ChannelHungUp"]);
        let caller_first = matches!((caller_end, leg_end), (Some(c), Some(l)) if c < l);
        let raced = match (outcome.as_str(), product) {
            ("answered_unconnected", Some("CallAnswered")) => !caller_first,
            ("answered_unconnected" | "rejected" | "missed", Some("OfferWithdrawn")) => {
                caller_first && withdrawn_for.get(leg).map(String::as_str) == Some("caller_gone")
            }
            _ => false,
        };
        if raced {
            races += 1;
        }
        // A ring whose offer could not be recorded (the store unreachable or stalled: the
        // phones of an offer ring while it is recorded) is hung up once the append failed,
        // whatever its phone did meanwhile (an answer during a stall of seconds, too), and
        // counts for nobody. An offer recorded but never ended is no such ring: it differs.
        if product.is_none() && !recorded_offers.contains(leg) {
            unrecorded_rings += 1;
            continue;
        }
        let judged = if raced {
            product.unwrap_or("")
        } else if outcome == "late_answer" || (unreported && product != Some(expected)) {
            late.push((
                phase,
                format!("leg {leg} of {device}: {outcome}, the store {product:?}"),
            ));
            product.unwrap_or("")
        } else {
            if product != Some(expected) {
                legs_differ.push((
                    phase,
                    format!("leg {leg} of {device}: the phone {outcome}, the store {product:?}"),
                ));
            }
            expected
        };
        let counts = expected_counts.entry(device.as_str()).or_default();
        match judged {
            "CallAnswered" => counts.0 += 1,
            "OfferTimedOut" => counts.1 += 1,
            "OfferRejected" => counts.2 += 1,
            _ => {}
        }
    }
    for (agent, v) in &views {
        let c = &v["counts"];
        let product = (
            c["completed"].as_u64().unwrap_or(0),
            c["missed"].as_u64().unwrap_or(0),
            c["rejected"].as_u64().unwrap_or(0),
        );
        let sim = expected_counts
            .get(agent.as_str())
            .copied()
            .unwrap_or_default();
        if product != sim {
            miscounted.push(format!(
                "agent {agent}: completed/missed/rejected {product:?}, by the simulator's phones {sim:?}"
            ));
        }
    }
    if views.len() != agents.len() {
        problems.push(format!("{} agent views of {}", views.len(), agents.len()));
    }

    let reporting_diff = chaos.reporting_against_rebuild(&mut problems).await;
    let (published, duplicated, missing) = chaos.jetstream_against_store(&mut problems).await;

    // The figures.
    let count =
        |v: &[(Option<usize>, String)], i: Option<usize>| v.iter().filter(|(p, _)| *p == i).count();
    let mut report = format!(
        "Chaos suite, {} form: {} agents, {} calls/s, {} processes; {:.0} s in all.\n\n\
         | fault | calls placed | lost | stuck agents | legs differing | late answers | recovery (s) |\n|---|---|---|---|---|---|---|\n",
        plan.name,
        agents.len(),
        plan.rate,
        chaos.procs.len(),
        started.elapsed().as_secs_f64()
    );
    let mut rows: Vec<(String, Option<usize>, Option<f64>)> =
        vec![("(steady traffic before the faults)".into(), None, Some(0.0))];
    rows.extend(
        phases
            .iter()
            .enumerate()
            .map(|(i, p)| (p.fault.clone(), Some(i), p.recovery)),
    );
    for (name, i, recovery) in rows {
        report.push_str(&format!(
            "| {name} | {} | {} | {} | {} | {} | {} |\n",
            placed.get(&i).copied().unwrap_or(0),
            count(&lost, i),
            count(&stuck, i),
            count(&legs_differ, i),
            count(&late, i),
            recovery.map_or("not within 60 s".into(), |r| format!("{r:.1}"))
        ));
    }
    report.push_str(&format!(
        "\nIn all: {} calls placed, {} lost, {} agents stuck, {} legs rung, {} ending otherwise \
         in the store than at the phone, {} late answers, {} agents miscounted, {} facts the \
         simulator could not report, reporting rows differing from a rebuild: {reporting_diff}, \
         JetStream: {} events, {duplicated} duplicated, {missing} missing; {races} legs \
         answered or declined as their caller hung up, judged in the PBX's order; {} calls \
         ended in the store whose caller the PBX kept; {unrecorded_rings} \
         rings hung up as their offer could not be recorded.\n",
        tally.inbound.len(),
        lost.len(),
        stuck.len(),
        tally.legs.len(),
        legs_differ.len(),
        late.len(),
        miscounted.len(),
        tally.unreported,
        published,
        left_at_pbx.len()
    ));
    for r in &restarts {
        report.push_str(&format!(
            "A process that exited at once on its restart, started again: {r}.\n"
        ));
    }
    eprintln!("{report}");
    if let Ok(file) = std::env::var("CC_CHAOS_REPORT") {
        std::fs::write(file, &report).unwrap();
    }
    // Findings fatal with CC_CHAOS_STRICT=1 (scripts/chaos, scripts/test), reported otherwise.
    let mut open: Vec<String> = vec![];
    open.extend(lost.iter().take(10).map(|(_, l)| l.clone()));
    open.extend(miscounted.iter().take(10).cloned());
    open.extend(late.iter().take(10).map(|(p, l)| {
        format!(
            "late answer: {l} (during {:?})",
            p.map(|i| &phases[i].fault)
        )
    }));
    open.extend(
        legs_differ
            .iter()
            .take(20)
            .map(|(p, l)| format!("{l} (during {:?})", p.map(|i| &phases[i].fault))),
    );
    // A call the store ended whose caller the PBX kept (its hangup lost), a caller entered
    // twice, a system that does not settle (what was still going on is printed).
    open.extend(left_at_pbx.iter().map(|(p, l)| {
        format!(
            "left at the PBX: {l} (during {:?})",
            p.map(|i| &phases[i].fault)
        )
    }));
    open.extend(
        entered_twice
            .iter()
            .map(|(channel, n)| format!("caller {channel} entered the queue {n} times")),
    );
    if let Err(still) = &settled {
        open.push(format!("the system did not settle within 90 s: {still}"));
    }
    if reporting_diff > 0 {
        open.push(format!(
            "reporting: {reporting_diff} rows differ from a rebuild"
        ));
    }
    problems
        .retain(|p| !p.starts_with("reporting:") && !p.starts_with("the system did not settle"));
    problems.extend(stuck.iter().take(10).map(|(_, s)| s.clone()));
    let strict = std::env::var("CC_CHAOS_STRICT").is_ok_and(|v| v == "1");
    if !open.is_empty() {
        eprintln!(
            "chaos: {} open finding(s){}:\n{}",
            open.len(),
            if strict {
                ""
            } else {
                " (not fatal without CC_CHAOS_STRICT=1)"
            },
            open.join("\n")
        );
    }
    assert!(
        problems.is_empty() && stuck.is_empty() && (!strict || open.is_empty()),
        "{report}\n{}\n{}",
        problems.join("\n"),
        open.join("\n")
    );
}
