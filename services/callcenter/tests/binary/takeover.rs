//! Take-overs whatever the history (issue 16): the router and call control save snapshots of
//! what the store folds to, and a new leader starts from the newest one, replaying only the
//! events after it.

use std::time::{Duration, Instant};

use crate::process::Callcenter;
use crate::system::System;
use cc_testkit::eventually;

/// The last take-over of `lease` by process `p`, as its metrics tell: (seconds, events
/// replayed).
async fn took_over(http: &reqwest::Client, p: &Callcenter, lease: &str) -> (f64, u64) {
    let seconds = format!("cc_takeover_seconds{{lease=\"{lease}\"}} ");
    let events = format!("cc_takeover_events{{lease=\"{lease}\"}} ");
    eventually("a take-over", Duration::from_secs(240), || async {
        let text = p.metrics(http).await?;
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.parse::<f64>().ok())
        };
        let s = value(&seconds)?;
        let n = value(&events)?;
        (s > 0.0).then_some((s, n as u64))
    })
    .await
}

async fn snapshot(pool: &sqlx::PgPool, name: &str) -> Option<i64> {
    sqlx::query_scalar("select events from es_snapshots where name = $1")
        .bind(name)
        .fetch_optional(pool)
        .await
        .unwrap()
}

/// The three leaders of a process: the router's take-over, call control's, the reporting
/// fold's.
async fn all(http: &reqwest::Client, p: &Callcenter) -> [(f64, u64); 3] {
    [
        took_over(http, p, "queue_router").await,
        took_over(http, p, "call_control").await,
        took_over(http, p, "reporting_projection").await,
    ]
}

const TARGETS: &str = "queue-router,call-control,projection";

#[tokio::test]
async fn a_take_over_after_a_snapshot_of_a_long_history_takes_as_long_as_with_a_short_one() {
    const LONG: u64 = 200_000;
    let mut sys = System::unstarted_on(None, Default::default()).await;
    sys.demo = false;
    // Snapshots a second after the last one (not a minute), so that the test need not wait.
    sys.env.push(("CC_SNAPSHOT_EVERY_SECS".into(), "1".into()));
    let http = reqwest::Client::new();
    let out = Callcenter::output(&sys.db.url, &sys.nats.url(), &["migrate"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pool = &sys.db.pool;

    // A short history: the baseline.
    cc_testkit::history::generate(pool, "short", 200)
        .await
        .unwrap();
    let mut first = sys.spawn_services(TARGETS);
    let [(short_s, short_n), (short_cc_s, _), _] = all(&http, &first).await;
    assert!(
        short_n >= 200,
        "a full replay of the short history: {short_n} events"
    );
    first.kill();

    // Years of history, and no snapshot that covers it: the next leaders replay all of it,
    // then save snapshots.
    let long = cc_testkit::history::generate(pool, "history", LONG)
        .await
        .unwrap();
    let total = long as i64 + short_n as i64;
    let mut second = sys.spawn_services(TARGETS);
    let [(full_s, full_n), (full_cc_s, full_cc_n), _] = all(&http, &second).await;
    assert!(
        full_n >= long,
        "the snapshot of the short history, then every event after it: {full_n} events"
    );
    assert!(
        full_cc_n >= long / 2,
        "call control replays the call events: {full_cc_n}"
    );
    let covered = eventually(
        "the router's snapshot of the whole store",
        Duration::from_secs(60),
        || async { snapshot(pool, "queue-router").await.filter(|n| *n >= total) },
    )
    .await;
    let calls_covered = eventually(
        "call control's snapshot of every call event",
        Duration::from_secs(60),
        || async {
            snapshot(pool, "call-control")
                .await
                .filter(|n| *n >= full_cc_n as i64)
        },
    )
    .await;
    // The reporting fold writes the history's rows as it goes (its tables' checkpoint was at
    // the start), saving snapshots of itself between batches.
    let reported = eventually(
        "the reporting fold's snapshot of the whole store",
        Duration::from_secs(400),
        || async { snapshot(pool, "reporting").await.filter(|n| *n >= total) },
    )
    .await;

    // A standby takes over from those snapshots when the leader dies.
    let third = sys.spawn_services(TARGETS);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let killed = Instant::now();
    second.kill();
    let [(snap_s, snap_n), (snap_cc_s, snap_cc_n), (snap_r_s, snap_r_n)] = all(&http, &third).await;
    let after_kill = killed.elapsed();
    println!(
        "take-over: short history {short_n} events in {short_s:.3} s (call control {short_cc_s:.3} s); \
         {full_n} events replayed in {full_s:.3} s (call control {full_cc_n} in {full_cc_s:.3} s); \
         from a snapshot of {covered} events: {snap_n} replayed in {snap_s:.3} s, call control's of \
         {calls_covered}: {snap_cc_n} in {snap_cc_s:.3} s, the reporting fold's of {reported}: \
         {snap_r_n} in {snap_r_s:.3} s ({:.1} s from the kill)",
        after_kill.as_secs_f64()
    );
    for (who, n, s, short) in [
        ("the router", snap_n, snap_s, short_s),
        ("call control", snap_cc_n, snap_cc_s, short_cc_s),
        ("the reporting fold", snap_r_n, snap_r_s, short_cc_s),
    ] {
        assert!(
            n < 1_000,
            "from the snapshot, {who} replays only the events after it: {n}"
        );
        assert!(
            s <= 5.0 * short + 1.0,
            "{who}'s take-over from a snapshot of a long history took {s:.3} s, with a short history {short:.3} s"
        );
    }

    // A snapshot that does not decode is no state at all: the next leader replays the store.
    sqlx::query("update es_snapshots set state = 'not json'::bytea where name = 'queue-router'")
        .execute(pool)
        .await
        .unwrap();
    let mut third = third;
    let fourth = sys.spawn_services(TARGETS);
    tokio::time::sleep(Duration::from_secs(1)).await;
    third.kill();
    let (_, replay_n) = took_over(&http, &fourth, "queue_router").await;
    assert!(
        replay_n as i64 >= total,
        "an unreadable snapshot means a full replay: {replay_n} of {total} events"
    );
    // ...and it saves a good one again.
    eventually("a snapshot again", Duration::from_secs(60), || async {
        let ok: Option<bool> = sqlx::query_scalar(
            "select state <> 'not json'::bytea from es_snapshots where name = 'queue-router'",
        )
        .fetch_optional(pool)
        .await
        .unwrap();
        ok.filter(|ok| *ok)
    })
    .await;
    drop(fourth);
}
