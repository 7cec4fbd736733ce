//! Event store and relay throughput, each against a baseline measured in the same run:
//!
//! - `append-1w` / `append-16w`: events appended per second by 1 / 16 writers on different
//!   streams (one event per append, expected version checked), fsync on. Baseline: plain
//!   single-row INSERTs of the same payload into a plain table with the same connections.
//! - `append-p99`: append latency p99 with 16 writers (baseline: the raw INSERT p99).
//! - `catchup`: events per second read by the catch-up reader over 1,000,000 events.
//!   Baseline: a plain SELECT streaming the same rows.
//! - `relay`: events per second from commit to JetStream ack. Baseline: the same number of
//!   pipelined JetStream publishes of the same payload, without the store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cc_bench::{env, fresh_database, percentile_ms, summary};
use cc_eventstore::{
    Checkpoint, EventStore, ExpectedVersion, Metadata, NewEvent, ReadFilter, StreamName,
};
use futures::TryStreamExt;
use serde_json::json;
use sqlx::PgPool;

fn payload() -> serde_json::Value {
    json!({ "agent": "1001", "reason": "Lunch", "device": "1001", "queues": ["sales", "support"] })
}

struct Run {
    events: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }
}

async fn appends(store: &EventStore, writers: usize, duration: Duration) -> Run {
    let start = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let stream = StreamName::new(
                    "bench",
                    "agent",
                    &format!("w{w}-{}", uuid::Uuid::now_v7().simple()),
                )
                .unwrap();
                let mut version = 0;
                let mut latencies = Vec::new();
                while start.elapsed() < duration {
                    let e =
                        NewEvent::new("AgentPaused", 1, payload(), Metadata::new("bench", "bench"));
                    let t = Instant::now();
                    let r = store
                        .append(&stream, ExpectedVersion::Exact(version), &[e])
                        .await
                        .unwrap();
                    latencies.push(t.elapsed());
                    version = r.stream_version;
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    Run {
        events: latencies.len() as u64,
        elapsed: start.elapsed(),
        latencies,
    }
}

async fn raw_inserts(pool: &PgPool, writers: usize, duration: Duration) -> Run {
    let start = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let data = payload();
                while start.elapsed() < duration {
                    let t = Instant::now();
                    sqlx::query("insert into bench_raw (stream, data) values ($1, $2)")
                        .bind(format!("w{w}"))
                        .bind(&data)
                        .execute(&pool)
                        .await
                        .unwrap();
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    Run {
        events: latencies.len() as u64,
        elapsed: start.elapsed(),
        latencies,
    }
}

/// Fills the store to `total` events quickly (server-side, 10,000 per transaction).
async fn fill(pool: &PgPool, total: i64) -> anyhow::Result<()> {
    let have: i64 = sqlx::query_scalar("select count(*) from es_events")
        .fetch_one(pool)
        .await?;
    let mut next = have;
    while next < total {
        let n = (total - next).min(10_000);
        sqlx::query(
            "insert into es_events (event_id, tenant, stream, category, stream_id, version, event_type, schema_version, data, metadata)
             select gen_random_uuid(), 'bench', 'bench/call-' || ($1 + g), 'call', ($1 + g)::text, 1, 'CallEnteredQueue', 1,
                    $2, jsonb_build_object('tenant', 'bench', 'correlation_id', gen_random_uuid())
               from generate_series(1, $3) g",
        )
        .bind(next)
        .bind(payload())
        .bind(n)
        .execute(pool)
        .await?;
        next += n;
    }
    Ok(())
}

async fn catch_up(store: &EventStore, total: usize) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut cp = Checkpoint::START;
    let mut seen = 0;
    while seen < total {
        let batch = store.read_all(&ReadFilter::All, cp, 5000).await?;
        let Some(last) = batch.last() else { break };
        cp = last.checkpoint();
        seen += batch.len();
    }
    Ok(seen as f64 / start.elapsed().as_secs_f64())
}

async fn plain_select(pool: &PgPool) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut rows = sqlx::query(
        "select position, xid, event_id, tenant, category, stream_id, version, event_type, schema_version, data, metadata, recorded_at
           from es_events order by position",
    )
    .fetch(pool);
    let mut n = 0u64;
    while let Some(_row) = rows.try_next().await? {
        n += 1;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

async fn relay_rate(
    store: &EventStore,
    url: &str,
    nats_url: &str,
    total: u64,
) -> anyhow::Result<f64> {
    let client = async_nats::connect(nats_url).await?;
    let bus = cc_bus::Bus::new(
        client,
        cc_bus::Subjects::new(&format!("bench{}", uuid::Uuid::now_v7().simple())),
    );
    cc_bus::relay::ensure_events_stream(&bus, Duration::from_secs(120)).await?;
    let cancel = tokio_util::sync::CancellationToken::new();
    let relay = cc_bus::relay::Relay::new(
        store.clone(),
        bus.clone(),
        url.to_string(),
        Default::default(),
    );
    let start = Instant::now();
    let c = cancel.clone();
    let task = tokio::spawn(async move { relay.run(c).await });
    let mut stream = bus
        .jetstream
        .get_stream(bus.subjects.events_stream())
        .await?;
    loop {
        let n = stream.info().await?.state.messages;
        if n >= total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rate = total as f64 / start.elapsed().as_secs_f64();
    cancel.cancel();
    task.await?;
    stream.purge().await?;
    bus.jetstream
        .delete_stream(bus.subjects.events_stream())
        .await?;
    Ok(rate)
}

async fn raw_publish_rate(nats_url: &str, total: u64) -> anyhow::Result<f64> {
    let client = async_nats::connect(nats_url).await?;
    let js = async_nats::jetstream::new(client);
    let name = format!("BENCH_RAW_{}", uuid::Uuid::now_v7().simple());
    let subject = format!("benchraw{}.x", uuid::Uuid::now_v7().simple());
    js.create_stream(async_nats::jetstream::stream::Config {
        name: name.clone(),
        subjects: vec![subject.clone()],
        ..Default::default()
    })
    .await?;
    let body = serde_json::to_vec(&payload())?;
    let start = Instant::now();
    let mut sent = 0;
    while sent < total {
        let mut acks = Vec::new();
        for _ in 0..500.min(total - sent) {
            let mut h = async_nats::HeaderMap::new();
            h.insert("Nats-Msg-Id", uuid::Uuid::now_v7().to_string().as_str());
            acks.push(
                js.publish_with_headers(subject.clone(), h, body.clone().into())
                    .await?,
            );
            sent += 1;
        }
        for a in acks {
            a.await?;
        }
    }
    let rate = total as f64 / start.elapsed().as_secs_f64();
    js.delete_stream(&name).await?;
    Ok(rate)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let admin = env(
        "CC_BENCH_ADMIN_URL",
        "postgres://postgres@127.0.0.1:5432/postgres",
    );
    let nats_url = env("CC_NATS_URL", "nats://127.0.0.1:4222");
    let seconds: u64 = env("CC_BENCH_SECONDS", "20").parse()?;
    let catchup_events: i64 = env("CC_BENCH_CATCHUP_EVENTS", "1000000").parse()?;
    let relay_events: i64 = env("CC_BENCH_RELAY_EVENTS", "200000").parse()?;
    let duration = Duration::from_secs(seconds);

    let (pool, _url) = fresh_database(&admin, "cc_bench_eventstore", 17).await?;
    cc_eventstore::migrate(&pool, "eventstore", cc_eventstore::MIGRATIONS).await?;
    sqlx::raw_sql("create table bench_raw (id bigserial primary key, stream text not null, data jsonb not null)")
        .execute(&pool)
        .await?;
    let fsync: String = sqlx::query_scalar("show fsync").fetch_one(&pool).await?;
    let sync_commit: String = sqlx::query_scalar("show synchronous_commit")
        .fetch_one(&pool)
        .await?;
    eprintln!("fsync = {fsync}, synchronous_commit = {sync_commit}, {seconds} s per append run");
    let store = EventStore::new(pool.clone());
    let store = Arc::new(store);

    // One writer, one connection (as one writer would hold).
    let pool1 = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&_url)
        .await?;
    let store1 = EventStore::new(pool1.clone());
    let raw1 = raw_inserts(&pool1, 1, duration).await;
    let app1 = appends(&store1, 1, duration).await;
    summary("append-1w", app1.rate(), "events/s", raw1.rate());

    let mut raw16 = raw_inserts(&pool, 16, duration).await;
    let mut app16 = appends(&store, 16, duration).await;
    summary("append-16w", app16.rate(), "events/s", raw16.rate());
    let p99 = percentile_ms(&mut app16.latencies, 99.0);
    let raw_p99 = percentile_ms(&mut raw16.latencies, 99.0);
    summary("append-p99", p99, "ms", raw_p99);
    eprintln!(
        "append latency with 16 writers: p50 {:.2} ms, p99 {p99:.2} ms, max {:.2} ms (raw INSERT p50 {:.2} ms)",
        percentile_ms(&mut app16.latencies, 50.0),
        percentile_ms(&mut app16.latencies, 100.0),
        percentile_ms(&mut raw16.latencies, 50.0),
    );

    if env("CC_BENCH_ONLY", "") == "append" {
        return Ok(());
    }
    eprintln!("filling the store to {catchup_events} events ...");
    fill(&pool, catchup_events).await?;
    sqlx::raw_sql("vacuum analyze es_events")
        .execute(&pool)
        .await?;
    let total: i64 = sqlx::query_scalar("select count(*) from es_events")
        .fetch_one(&pool)
        .await?;
    let baseline = plain_select(&pool).await?;
    let rate = catch_up(&store, total as usize).await?;
    summary("catchup", rate, "events/s", baseline);

    // The relay moves the newest `relay_events` events: a database holding just those.
    let (rpool, rurl) = fresh_database(&admin, "cc_bench_relay", 8).await?;
    cc_eventstore::migrate(&rpool, "eventstore", cc_eventstore::MIGRATIONS).await?;
    fill(&rpool, relay_events).await?;
    let rstore = EventStore::new(rpool.clone());
    let baseline = raw_publish_rate(&nats_url, relay_events as u64).await?;
    let rate = relay_rate(&rstore, &rurl, &nats_url, relay_events as u64).await?;
    summary("relay", rate, "events/s", baseline);
    Ok(())
}
