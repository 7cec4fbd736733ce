//! Rebuild rate of the reporting read models (issue 7): events per second over a generated,
//! realistic history of at least 1,000,000 events (logins and pauses of 200 agents; calls
//! answered, rejected then answered, abandoned, and transferred to another agent), from the
//! first read to the rebuilt tables swapped in. Baseline in the same run: reading the same
//! events with the catch-up reader alone.
//!
//! `CC_BENCH_EVENTS` (default 1000000) sets the size of the history.

use std::time::Instant;

use cc_bench::{env, fresh_database, summary};
use cc_eventstore::{Checkpoint, EventStore, ReadFilter};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let admin = env(
        "CC_BENCH_ADMIN_URL",
        "postgres://postgres@127.0.0.1:5432/postgres",
    );
    let target: u64 = env("CC_BENCH_EVENTS", "1000000").parse()?;
    let (pool, _) = fresh_database(&admin, "cc_bench_rebuild", 8).await?;
    cc_eventstore::migrate(&pool, "eventstore", cc_eventstore::MIGRATIONS).await?;
    let t = Instant::now();
    let events = cc_testkit::history::generate(&pool, "bench", target).await?;
    sqlx::query("vacuum analyze es_events")
        .execute(&pool)
        .await?;
    eprintln!(
        "generated {events} events in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let store = EventStore::new(pool.clone());

    // Baseline: the catch-up reader alone over the same events.
    let t = Instant::now();
    let mut cp = Checkpoint::START;
    let mut read = 0u64;
    loop {
        let batch = store.read_all(&ReadFilter::All, cp, 5000).await?;
        let Some(last) = batch.last() else { break };
        cp = last.checkpoint();
        read += batch.len() as u64;
    }
    let baseline = read as f64 / t.elapsed().as_secs_f64();
    eprintln!(
        "catch-up read: {read} events in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let done =
        cc_projection::reporting::rebuild(&pool, &store, |p| eprintln!("rebuild: {p}")).await?;
    let rate = done.events as f64 / done.elapsed.as_secs_f64();
    eprintln!(
        "rebuild: {} events, {} rows in {:.1} s",
        done.events,
        done.rows,
        done.elapsed.as_secs_f64()
    );
    let calls: i64 = sqlx::query_scalar("select count(*) from reporting.calls")
        .fetch_one(&pool)
        .await?;
    eprintln!("reporting.calls: {calls} rows");
    summary("rebuild", rate, "events/s", baseline);
    Ok(())
}
