//! Take-over of the queue router whatever the history (issue 16):
//!
//! - `takeover`: seconds from the leading queue-router process's death (SIGKILL) to the standby
//!   routing again, that is to the first call placed after the kill ringing an agent's device
//!   (the PBX's `ChannelRinging` of the offer), with 10,000,000 events in the store
//!   (`cc_testkit::history`, tenant `history`) and a standby queue-router process already
//!   running. The first leader replays the history and saves a snapshot; the kill comes once
//!   the snapshot covers the store. Baseline: the same with an empty store (a fresh database),
//!   same run. Target <= 2 s.
//! - `takeover-router`, `takeover-replayed`: what the standby's metrics say of its take-over
//!   (`cc_takeover_seconds{lease="queue_router"}`: from the lease to caught up; `cc_takeover_events`: events replayed
//!   after the snapshot).
//!
//! The rest of the system runs too, in a process of its own (relay, auth, agent-session,
//! call-control, projection, portal and the PBX simulator); each queue router is a process.
//! The history is put behind the readers this benchmark does not measure (the relay's events
//! stream ends with its last event, the read models' checkpoints are at it), as a system that
//! has run for years has them; call control and the reporting projection fold it again when
//! they start, as they always do.
//!
//! `CC_BENCH_EVENTS` (default 10000000) sets the history's size, `CC_BENCH_AGENTS` (default 100)
//! the agents logged in, `CC_BENCH_LOG` the services' log filter.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use cc_bench::{cpu_ticks, env, fresh_database, http_get, metric, summary, wait_http_ok};
use cc_bus::{Bus, CommandContext, Subjects};
use cc_contracts::auth::CreateAgent;
use cc_contracts::domain::{AgentNumber, DeviceId, QueueNumber};
use cc_contracts::pbx::ChannelEvent;
use cc_contracts::queue::AssignAgent;
use cc_eventstore::{Checkpoint, CheckpointStore, EventStore, ReadFilter};
use cc_pbx_sim::calls::PhoneMode;
use cc_pbx_sim::control::{AddDevice, PlaceCall, SetPhoneMode, SetRegistered};
use futures::StreamExt;
use sqlx::PgPool;
use tokio::process::Child;
use tokio::sync::mpsc;

/// What one take-over measured.
struct TakeOver {
    /// From the kill to the first call placed after it ringing an agent.
    routing_again: Duration,
    /// The standby's own figures: seconds from the lease to routing, events replayed.
    router_seconds: f64,
    router_events: f64,
}

/// The settings of one run.
struct Setup {
    admin: String,
    nats_url: String,
    binary: String,
    log: String,
    agents: usize,
}

/// A caller's call as the PBX reports it.
enum Seen {
    Entered(String, Instant),
    Ringing(String, Instant),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let setup = Setup {
        admin: env(
            "CC_BENCH_ADMIN_URL",
            "postgres://postgres@127.0.0.1:5432/postgres",
        ),
        nats_url: env("CC_NATS_URL", "nats://127.0.0.1:4222"),
        binary: env("CC_BENCH_BINARY", "target/release/callcenter"),
        log: env("CC_BENCH_LOG", "warn"),
        agents: env("CC_BENCH_AGENTS", "100").parse()?,
    };
    let events: u64 = env("CC_BENCH_EVENTS", "10000000").parse()?;

    eprintln!("baseline: an empty store");
    let empty = run(&setup, "cc_bench_takeover_empty", 0).await?;
    eprintln!("history: {events} events");
    let long = run(&setup, "cc_bench_takeover", events).await?;

    summary(
        "takeover",
        long.routing_again.as_secs_f64(),
        "s",
        empty.routing_again.as_secs_f64(),
    );
    summary(
        "takeover-router",
        long.router_seconds,
        "s",
        empty.router_seconds,
    );
    summary(
        "takeover-replayed",
        long.router_events,
        "events",
        empty.router_events,
    );
    Ok(())
}

/// One take-over on a fresh database `db` holding `history` generated events; the database and
/// the run's JetStream streams are dropped at the end, whatever happened.
async fn run(s: &Setup, db: &str, history: u64) -> anyhow::Result<TakeOver> {
    let (pool, url) = fresh_database(&s.admin, db, 4).await?;
    let prefix = format!("btko{}", uuid::Uuid::now_v7().simple());
    let client = async_nats::connect(&s.nats_url).await?;
    let result = take_over(s, &pool, &url, &client, &prefix, history).await;
    pool.close().await;
    if let Err(e) = cc_bench::drop_streams(&client, &prefix).await {
        eprintln!("cannot delete the run's JetStream streams: {e:#}");
    }
    if let Err(e) = cc_bench::drop_database(&s.admin, db).await {
        eprintln!("cannot drop the database {db}: {e:#}");
    }
    result
}

async fn take_over(
    s: &Setup,
    pool: &PgPool,
    url: &str,
    client: &async_nats::Client,
    prefix: &str,
    history: u64,
) -> anyhow::Result<TakeOver> {
    let spawn = |targets: &str, admin: &str| -> anyhow::Result<Child> {
        Ok(tokio::process::Command::new(&s.binary)
            .args(["run", "--target", targets])
            .env("CC_DATABASE_URL", url)
            .env("CC_NATS_URL", &s.nats_url)
            .env("CC_SUBJECT_PREFIX", prefix)
            .env("CC_PORTAL_ADDR", "127.0.0.1:18580")
            .env("CC_PBX_SIM_ADDR", "127.0.0.1:18582")
            .env("CC_ADMIN_ADDR", admin)
            .env("CC_DATABASE_MAX_CONNECTIONS", "20")
            .env("CC_LOG", &s.log)
            .kill_on_drop(true)
            .spawn()?)
    };
    let migrate = tokio::process::Command::new(&s.binary)
        .arg("migrate")
        .env("CC_DATABASE_URL", url)
        .env("CC_NATS_URL", &s.nats_url)
        .env("CC_LOG", "warn")
        .status()
        .await?;
    anyhow::ensure!(migrate.success(), "callcenter migrate failed: {migrate}");
    let bus = Bus::new(client.clone(), Subjects::new(prefix));

    if history > 0 {
        let t = Instant::now();
        let n = cc_testkit::history::generate(pool, "history", history).await?;
        let generated = t.elapsed();
        sqlx::query("vacuum analyze es_events")
            .execute(pool)
            .await?;
        let size: i64 = sqlx::query_scalar("select pg_database_size(current_database())")
            .fetch_one(pool)
            .await?;
        eprintln!(
            "generated {n} events in {:.0} s ({:.0} events/s; vacuum analyze after: {:.0} s); database {:.1} GiB",
            generated.as_secs_f64(),
            n as f64 / generated.as_secs_f64(),
            (t.elapsed() - generated).as_secs_f64(),
            size as f64 / (1u64 << 30) as f64
        );
        behind_the_readers(pool, &bus).await?;
    }

    let rest_admin = "127.0.0.1:18581";
    let (leader_admin, standby_admin) = ("127.0.0.1:18591", "127.0.0.1:18601");
    let rest = spawn(
        "relay,auth,agent-session,call-control,projection,portal,pbx-sim",
        rest_admin,
    )?;
    wait_http_ok(rest_admin, "/readyz", Duration::from_secs(600)).await?;
    let t = Instant::now();
    let mut leader = spawn("queue-router", leader_admin)?;
    wait_http_ok(leader_admin, "/readyz", Duration::from_secs(60)).await?;
    let (secs, replayed) = took_over(leader_admin, Duration::from_secs(3600)).await?;
    eprintln!(
        "first leader: replayed {replayed:.0} events in {secs:.1} s ({:.0} events/s), {:.1} s after its start",
        replayed / secs,
        t.elapsed().as_secs_f64()
    );
    let standby = spawn("queue-router", standby_admin)?;
    wait_http_ok(standby_admin, "/readyz", Duration::from_secs(60)).await?;

    // The bench tenant: ten queues, agents logged in on devices whose phones answer.
    let c = CommandContext::new("bench", "bench");
    let queues = cc_bench::bench_tenant(&bus, &c).await?;
    let number = |i: usize| format!("{}", 20000 + i);
    cc_bench::parallel(s.agents, 8, |i| {
        let (bus, c, queues) = (bus.clone(), c.clone(), queues.clone());
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
                &SetPhoneMode {
                    device: d.clone(),
                    mode: PhoneMode::Agent {
                        after_ms: 300,
                        probability: 1.0,
                        talk_ms: 500,
                    },
                },
            )
            .await?;
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
    cc_bench::log_in_agents(&bus, &c, (0..s.agents).map(number).collect()).await?;

    // Callers entering and the offers' phones ringing, from the PBX's facts.
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let mut facts = client
        .subscribe(format!("{prefix}.pbx.evt.bench.channel.>"))
        .await?;
    client.flush().await?;
    tokio::spawn(async move {
        let mut leg_caller = std::collections::HashMap::new();
        while let Some(m) = facts.next().await {
            let now = Instant::now();
            let Ok(e) = serde_json::from_slice::<ChannelEvent>(&m.payload) else {
                continue;
            };
            let seen = match e {
                ChannelEvent::ChannelCreated {
                    caller,
                    dialed: Some(_),
                    ..
                } => Seen::Entered(caller.number, now),
                ChannelEvent::ChannelCreated {
                    channel,
                    caller,
                    device: Some(_),
                    ..
                } => {
                    leg_caller.insert(channel, caller.number);
                    continue;
                }
                ChannelEvent::ChannelRinging { channel, .. } => match leg_caller.get(&channel) {
                    Some(caller) => Seen::Ringing(caller.clone(), now),
                    None => continue,
                },
                _ => continue,
            };
            if seen_tx.send(seen).is_err() {
                return;
            }
        }
    });
    let place = |caller: &str| PlaceCall {
        queue: queues[0].clone(),
        caller_number: caller.to_string(),
        caller_name: "Bench".into(),
    };

    // The leader routes.
    bus.request(&c, &place("8000001")).await?;
    let (entered, rang) = rings(&mut seen, "8000001", Duration::from_secs(60)).await?;
    eprintln!(
        "the leader routes: entered -> ringing {:.1} ms",
        (rang - entered.unwrap_or(rang)).as_secs_f64() * 1000.0
    );

    // Once the leader's snapshot covers the store and the system is quiet: the kill, and a
    // call right after it.
    let pids: Vec<u32> = [&rest, &leader, &standby]
        .iter()
        .filter_map(|c| c.id())
        .collect();
    let (events, bytes) = settled(pool, &pids, Duration::from_secs(1800)).await?;
    eprintln!(
        "snapshot of {events} events ({:.1} KiB) covers the store; the system is quiet",
        bytes as f64 / 1024.0
    );
    let killed = Instant::now();
    leader.start_kill()?;
    // Reaped: the call below cannot reach the dead leader.
    leader.wait().await?;
    bus.request(&c, &place("8000002")).await?;
    let (entered, rang) = rings(&mut seen, "8000002", Duration::from_secs(120)).await?;
    let routing_again = rang - killed;
    let (router_seconds, router_events) = took_over(standby_admin, Duration::from_secs(60)).await?;
    eprintln!(
        "kill -> ringing {:.3} s (the call entered {:.1} ms after the kill); the standby's metrics: \
         cc_takeover_seconds {router_seconds:.3}, cc_takeover_events {router_events:.0} (lease queue_router)",
        routing_again.as_secs_f64(),
        entered.map_or(f64::NAN, |e| (e - killed).as_secs_f64() * 1000.0)
    );
    for mut child in [rest, standby] {
        child.kill().await?;
    }
    Ok(TakeOver {
        routing_again,
        router_seconds,
        router_events,
    })
}

/// Puts the store's events behind the readers this benchmark does not measure, as if they had
/// followed them: the relay resumes after the events stream's last message (the store's last
/// event, published as the relay publishes it), agent-session's accounts follower and the
/// portal and reporting projections start at the store's end.
async fn behind_the_readers(pool: &PgPool, bus: &Bus) -> anyhow::Result<()> {
    let (xid, position): (i64, i64) = sqlx::query_as(
        "select xid, position from es_events order by xid desc, position desc limit 1",
    )
    .fetch_one(pool)
    .await?;
    let store = EventStore::new(pool.clone());
    let last = store
        .read_all(
            &ReadFilter::All,
            Checkpoint {
                xid,
                position: position - 1,
            },
            1,
        )
        .await?
        .pop()
        .context("the store's last event")?;
    let end = last.checkpoint();

    cc_bus::relay::ensure_events_stream(bus, Duration::from_secs(120)).await?;
    let field = |k: &str| last.data.get(k).and_then(|v| v.as_str());
    let subject = bus.subjects.event(
        last.tenant(),
        last.stream.category(),
        last.stream.id(),
        &last.event_type,
        field("agent"),
        field("queue"),
    );
    bus.jetstream
        .publish_with_headers(
            subject,
            cc_bus::relay::event_headers(&last, 0),
            serde_json::to_vec(&last.data)?.into(),
        )
        .await?
        .await?;

    let checkpoints = CheckpointStore::new(pool.clone());
    checkpoints.save("relay", end).await?;
    checkpoints.save("agent-session:accounts", end).await?;
    sqlx::query("insert into rm_checkpoints (name, xid, position) values ($1, $2, $3)")
        .bind(cc_contracts::views::PORTAL_CHECKPOINT)
        .bind(end.xid)
        .bind(end.position)
        .execute(pool)
        .await?;
    let mut conn = pool.acquire().await?;
    let schema = cc_projection::reporting::SCHEMA;
    cc_projection::reporting::tables::create(&mut conn, schema).await?;
    sqlx::query(&format!(
        "insert into {schema}.checkpoint (id, generation, xid, position) values (1, 1, $1, $2)"
    ))
    .bind(end.xid)
    .bind(end.position)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Waits for the router on `admin` to have taken over (its metrics): (seconds, events replayed).
async fn took_over(admin: &str, within: Duration) -> anyhow::Result<(f64, f64)> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(text) = http_get(admin, "/metrics").await {
            let seconds = metric(&text, "cc_takeover_seconds{lease=\"queue_router\"}");
            let events = metric(&text, "cc_takeover_events{lease=\"queue_router\"}");
            if let (Some(s), Some(e)) = (seconds, events) {
                if s > 0.0 {
                    return Ok((s, e));
                }
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the router on {admin} did not take over within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits for `caller`'s call to ring an agent: (when it entered, when it rang).
async fn rings(
    seen: &mut mpsc::UnboundedReceiver<Seen>,
    caller: &str,
    within: Duration,
) -> anyhow::Result<(Option<Instant>, Instant)> {
    let mut entered = None;
    let wait = async {
        while let Some(s) = seen.recv().await {
            match s {
                Seen::Entered(c, at) if c == caller => entered = Some(at),
                Seen::Ringing(c, at) if c == caller => return Some(at),
                _ => {}
            }
        }
        None
    };
    let rang = tokio::time::timeout(within, wait)
        .await
        .with_context(|| format!("the call of {caller} did not ring an agent within {within:?}"))?
        .context("the PBX facts' subscription ended")?;
    Ok((entered, rang))
}

/// Waits until the router's snapshot covers the store and every process of `pids` used less
/// than a tenth of a core over the last 2 s: (the snapshot's events, its size in bytes).
async fn settled(pool: &PgPool, pids: &[u32], within: Duration) -> anyhow::Result<(i64, i32)> {
    let deadline = Instant::now() + within;
    let mut before: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect();
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect();
        // Clock ticks are 10 ms: 20 ticks in 2 s are a tenth of a core.
        let quiet = now.iter().zip(&before).all(|(n, b)| n - b < 20);
        before = now;
        let covered: Option<(bool, i64, i32)> = sqlx::query_as(
            "select (s.xid, s.position) >= (e.xid, e.position), s.events, length(s.state)
               from es_snapshots s,
                    (select xid, position from es_events order by xid desc, position desc limit 1) e
              where s.name = 'queue-router'",
        )
        .fetch_optional(pool)
        .await?;
        if let Some((true, events, bytes)) = covered {
            if quiet {
                return Ok((events, bytes));
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no snapshot covering the store with the system quiet within {within:?} (snapshot: {covered:?})"
        );
    }
}
