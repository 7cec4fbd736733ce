//! Live portal updates at scale (issue: agent sign-in and sessions):
//!
//! - `sse-memory`: KiB per idle SSE connection of the portal process (RSS growth over 10,000
//!   open agent streams / 10,000). Baseline: KiB per idle plain HTTP connection to the same
//!   process (10,000 connections that have not sent a request yet).
//! - `sse-p99`: ms from an agent event committed to the store until the agent's SSE stream
//!   delivers the changed view, while 1,000 of the 10,000 agents change state every second.
//!   Baseline: a bare NATS publish -> subscriber latency (p99), same run, same machine.
//!
//! The system under test is the release `callcenter` binary running auth, projection and portal
//! in one process. Fixtures are written straight to the database (10,000 portal sessions) and
//! the state changes are appended to the event store as the agent-session service would.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cc_bench::{env, fresh_database, percentile_ms, rss_kib, summary, wait_http_ok};
use cc_contracts::domain::AgentNumber;
use cc_contracts::encode;
use cc_contracts::session::AgentSessionEvent;
use cc_eventstore::{EventStore, ExpectedVersion, Metadata, StreamName};
use futures::StreamExt;
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Sent = Arc<Mutex<HashMap<(u32, i64), Instant>>>;

fn token(i: u32) -> String {
    format!("{:064x}", 0xbe_0000_0000u64 + i as u64)
}

async fn open_sse(
    addr: &str,
    i: u32,
    sent: Sent,
    latencies: Arc<Mutex<Vec<Duration>>>,
    opened: Arc<tokio::sync::Semaphore>,
    failed: Arc<std::sync::atomic::AtomicUsize>,
) {
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return;
    };
    let req = format!(
        "GET /api/events HTTP/1.1\r\nHost: bench\r\nX-Tenant: bench\r\nAuthorization: Bearer {}\r\nAccept: text/event-stream\r\n\r\n",
        token(i)
    );
    if s.write_all(req.as_bytes()).await.is_err() {
        return;
    }
    let mut buf = vec![0u8; 8192];
    let mut pending = String::new();
    let mut announced = false;
    loop {
        let n = match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        pending.push_str(&String::from_utf8_lossy(&buf[..n]));
        if !announced {
            announced = true;
            if !pending.starts_with("HTTP/1.1 200") {
                failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                opened.add_permits(1);
                return;
            }
            opened.add_permits(1);
        }
        while let Some(pos) = pending.find("\n\n") {
            let block: String = pending.drain(..pos + 2).collect();
            if let Some(id) = block
                .lines()
                .find_map(|l| l.strip_prefix("id:"))
                .and_then(|v| v.trim().parse::<i64>().ok())
            {
                if let Some(t) = sent.lock().unwrap().remove(&(i, id)) {
                    latencies.lock().unwrap().push(t.elapsed());
                }
            }
        }
    }
}

async fn nats_baseline(nats_url: &str, n: usize) -> anyhow::Result<Vec<Duration>> {
    let client = async_nats::connect(nats_url).await?;
    let subject = format!("benchsse.{}", uuid::Uuid::now_v7().simple());
    let mut sub = client.subscribe(subject.clone()).await?;
    client.flush().await?;
    let start = Instant::now();
    let receiver = tokio::spawn(async move {
        let mut out = Vec::new();
        while out.len() < n {
            let Some(m) = sub.next().await else { break };
            let sent_ns: u128 = std::str::from_utf8(&m.payload).unwrap().parse().unwrap();
            out.push(Duration::from_nanos(
                (start.elapsed().as_nanos() - sent_ns) as u64,
            ));
        }
        out
    });
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    for _ in 0..n {
        tick.tick().await;
        client
            .publish(
                subject.clone(),
                start.elapsed().as_nanos().to_string().into(),
            )
            .await?;
    }
    client.flush().await?;
    Ok(receiver.await?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let admin = env(
        "CC_BENCH_ADMIN_URL",
        "postgres://postgres@127.0.0.1:5432/postgres",
    );
    let nats_url = env("CC_NATS_URL", "nats://127.0.0.1:4222");
    let agents: u32 = env("CC_BENCH_AGENTS", "10000").parse()?;
    let changing: u32 = env("CC_BENCH_CHANGING", "1000").parse()?;
    let seconds: u64 = env("CC_BENCH_SECONDS", "30").parse()?;
    let binary = env("CC_BENCH_BINARY", "target/release/callcenter");
    let portal_addr = "127.0.0.1:18380";

    let (pool, url) = fresh_database(&admin, "cc_bench_sse", 16).await?;
    let prefix = format!("bsse{}", uuid::Uuid::now_v7().simple());
    let mut child = tokio::process::Command::new(&binary)
        .args(["run", "--target", "auth,projection,portal"])
        .env("CC_DATABASE_URL", &url)
        .env("CC_NATS_URL", &nats_url)
        .env("CC_SUBJECT_PREFIX", &prefix)
        .env("CC_PORTAL_ADDR", portal_addr)
        .env("CC_ADMIN_ADDR", "127.0.0.1:18381")
        .env("CC_LOG", "warn")
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().unwrap();
    wait_http_ok("127.0.0.1:18381", "/readyz", Duration::from_secs(60)).await?;

    // Fixtures: a tenant and one portal session per agent (only token hashes are stored).
    sqlx::query("insert into auth_tenants (tenant, name, demo) values ('bench', 'Bench', false)")
        .execute(&pool)
        .await?;
    for chunk in (0..agents).collect::<Vec<_>>().chunks(1000) {
        let hashes: Vec<Vec<u8>> = chunk
            .iter()
            .map(|i| sha2::Sha256::digest(token(100_000 + *i).as_bytes()).to_vec())
            .collect();
        let ids: Vec<uuid::Uuid> = chunk.iter().map(|_| uuid::Uuid::now_v7()).collect();
        let names: Vec<String> = chunk.iter().map(|i| format!("{}", 100_000 + i)).collect();
        sqlx::query(
            "insert into auth_sessions (token_hash, session_id, tenant, principal, role, display_name, expires_at)
             select h, id, 'bench', n, 'agent', n, now() + interval '1 day' from unnest($1::bytea[], $2::uuid[], $3::text[]) as u(h, id, n)",
        )
        .bind(&hashes)
        .bind(&ids)
        .bind(&names)
        .execute(&pool)
        .await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = rss_kib(pid);

    // Baseline memory: idle plain connections that have sent nothing.
    let mut plain = Vec::new();
    for _ in 0..agents {
        plain.push(tokio::net::TcpStream::connect(portal_addr).await?);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_plain = rss_kib(pid);
    let plain_kib = rss_plain.saturating_sub(rss_idle) as f64 / agents as f64;
    drop(plain);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_before = rss_kib(pid);

    // 10,000 agents' streams.
    let sent: Sent = Arc::default();
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let opened = Arc::new(tokio::sync::Semaphore::new(0));
    let failed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Agents arrive at ~1,000 per second (a shift start, compressed).
    for i in 0..agents {
        let agent = 100_000 + i;
        tokio::spawn(open_sse(
            portal_addr,
            agent,
            sent.clone(),
            latencies.clone(),
            opened.clone(),
            failed.clone(),
        ));
        if i % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let _all =
        tokio::time::timeout(Duration::from_secs(120), opened.acquire_many(agents)).await??;
    let failed = failed.load(std::sync::atomic::Ordering::Relaxed);
    if failed > 0 {
        anyhow::bail!("{failed} of {agents} SSE streams were refused");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_open = rss_kib(pid);
    let sse_kib = rss_open.saturating_sub(rss_before) as f64 / agents as f64;
    eprintln!("{agents} SSE streams open: RSS {rss_before} KiB -> {rss_open} KiB");

    let baseline = nats_baseline(&nats_url, 5000).await?;

    // 1,000 agents change state every second, appended as the agent-session service would.
    let store = EventStore::new(pool.clone());
    let mut versions: HashMap<u32, i64> = HashMap::new();
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let per_tick = (changing / 100).max(1);
    let mut next_agent = 0u32;
    let mut inflight = futures::stream::FuturesUnordered::new();
    let mut total = 0u64;
    while start.elapsed() < Duration::from_secs(seconds) {
        tick.tick().await;
        for _ in 0..per_tick {
            let agent = 100_000 + (next_agent % changing);
            next_agent += 1;
            let v = versions.entry(agent).or_insert(0);
            *v += 1;
            let version = *v;
            let a = AgentNumber::parse(&agent.to_string())?;
            let e = if version % 2 == 1 {
                AgentSessionEvent::AgentPaused {
                    agent: a,
                    reason: "Lunch".into(),
                }
            } else {
                AgentSessionEvent::AgentUnpaused {
                    agent: a,
                    reason: "Lunch".into(),
                }
            };
            let (store, sent) = (store.clone(), sent.clone());
            sent.lock()
                .unwrap()
                .insert((agent, version), Instant::now());
            inflight.push(tokio::spawn(async move {
                let stream = StreamName::new("bench", "agent", &agent.to_string()).unwrap();
                store
                    .append(
                        &stream,
                        ExpectedVersion::Exact(version - 1),
                        &[encode(&e, Metadata::new("bench", "bench"))],
                    )
                    .await
                    .unwrap();
            }));
            total += 1;
        }
    }
    while let Some(r) = inflight.next().await {
        r?;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let lost = sent.lock().unwrap().len();
    let mut l = latencies.lock().unwrap().clone();
    let mut b = baseline;
    let (p50, p99, max) = (
        percentile_ms(&mut l, 50.0),
        percentile_ms(&mut l, 99.0),
        percentile_ms(&mut l, 100.0),
    );
    eprintln!(
        "{total} changes in {seconds} s to {changing} of {agents} agents; delivered {}, not delivered within 5 s {lost}; \
         latency p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms; NATS baseline p50 {:.2} ms",
        l.len(),
        percentile_ms(&mut b, 50.0)
    );
    summary("sse-p99", p99, "ms", percentile_ms(&mut b, 99.0));
    summary("sse-memory", sse_kib, "KiB", plain_kib);
    child.kill().await?;
    cc_bench::drop_streams(&async_nats::connect(&nats_url).await?, &prefix).await?;
    Ok(())
}
