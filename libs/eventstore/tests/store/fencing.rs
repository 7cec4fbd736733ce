//! Fenced appends: a lease holder that was taken over can no longer append, and taking over
//! waits for the appends of the previous holder still in flight.

use std::time::Duration;

use cc_eventstore::{AppendError, ExpectedVersion, Lease};

use crate::{event, numbers, store, stream};

#[tokio::test]
async fn an_append_fenced_with_a_past_epoch_is_refused_and_writes_nothing() {
    let (db, store) = store().await;
    let a = Lease::try_acquire(&db.url, "router")
        .await
        .unwrap()
        .unwrap();
    assert!(Lease::try_acquire(&db.url, "router")
        .await
        .unwrap()
        .is_none());
    let s = stream("1001");
    store
        .append_fenced(a.fence(), &s, ExpectedVersion::Any, &[event(1)])
        .await
        .unwrap();
    let old = a.fence().clone();
    drop(a); // its connection closes: the lease is free
    let b = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(b) = Lease::try_acquire(&db.url, "router").await.unwrap() {
                return b;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(b.fence().epoch, old.epoch + 1);
    let r = store
        .append_fenced(&old, &s, ExpectedVersion::Any, &[event(2)])
        .await;
    assert!(
        matches!(&r, Err(AppendError::Fenced { lease, epoch }) if lease == "router" && *epoch == old.epoch),
        "{r:?}"
    );
    store
        .append_fenced(b.fence(), &s, ExpectedVersion::Any, &[event(3)])
        .await
        .unwrap();
    let ns = numbers(&store, &s).await;
    assert_eq!(ns, [1, 3], "the fenced append wrote nothing");
}

#[tokio::test]
async fn taking_over_waits_for_an_append_of_the_previous_holder_still_in_flight() {
    let (db, store) = store().await;
    let a = Lease::try_acquire(&db.url, "router")
        .await
        .unwrap()
        .unwrap();
    let s = stream("1001");
    // Another writer's insert at the stream's next version, not committed yet: holder A's
    // fenced append (one statement) takes the epoch's row FOR SHARE, then waits on that
    // version's index entry, in flight as over a slow disk.
    let mut other = db.pool.begin().await.unwrap();
    store
        .append_in(&mut other, &s, ExpectedVersion::Exact(0), &[event(0)])
        .await
        .unwrap();
    let fence = a.fence().clone();
    let appending = {
        let (store, s) = (store.clone(), s.clone());
        tokio::spawn(async move {
            store
                .append_fenced(&fence, &s, ExpectedVersion::Any, &[event(1)])
                .await
        })
    };
    let waiting_on = |what: &'static str| {
        let pool = db.pool.clone();
        move || {
            let pool = pool.clone();
            async move {
                let n: i64 = sqlx::query_scalar(
                    "select count(*) from pg_stat_activity
                      where wait_event_type = 'Lock' and query like $1",
                )
                .bind(what)
                .fetch_one(&pool)
                .await
                .unwrap();
                (n == 1).then_some(())
            }
        }
    };
    cc_testkit::eventually(
        "A's append waits on the other writer",
        Duration::from_secs(10),
        waiting_on("with fence as%"),
    )
    .await;
    drop(a); // A dies with its append on the way
    let url = db.url.clone();
    let taking = tokio::spawn(async move {
        loop {
            if let Some(b) = Lease::try_acquire(&url, "router").await.unwrap() {
                return b;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    // B has the advisory lock and waits on the epoch's row: A's append may still commit, and
    // B reads the store only after it did.
    cc_testkit::eventually(
        "the new holder waits for the row lock",
        Duration::from_secs(10),
        waiting_on("insert into es_lease_epochs%"),
    )
    .await;
    assert!(!taking.is_finished());
    other.rollback().await.unwrap();
    let appended = tokio::time::timeout(Duration::from_secs(10), appending)
        .await
        .unwrap()
        .unwrap();
    assert!(appended.is_ok(), "{appended:?}");
    let b = tokio::time::timeout(Duration::from_secs(10), taking)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.fence().epoch, 2);
    // What B reads once it holds the lease has A's event.
    let ns = numbers(&store, &s).await;
    assert_eq!(ns, [1]);
}

#[tokio::test]
async fn fenced_appends_racing_at_one_version_are_one_success_and_conflicts() {
    let (db, store) = store().await;
    let lease = Lease::try_acquire(&db.url, "router")
        .await
        .unwrap()
        .unwrap();
    let s = stream("1001");
    store
        .append_fenced(lease.fence(), &s, ExpectedVersion::Exact(0), &[event(0)])
        .await
        .unwrap();
    // Eight writers decided on version 1 at once: one is stored, the others are conflicts
    // naming the version the stream is at (never a database error).
    for round in 0..5 {
        let at = 1 + round;
        let results = futures::future::join_all((0..8).map(|i| {
            let (store, s, fence) = (store.clone(), s.clone(), lease.fence().clone());
            async move {
                store
                    .append_fenced(
                        &fence,
                        &s,
                        ExpectedVersion::Exact(at),
                        &[event(10 * at + i)],
                    )
                    .await
            }
        }))
        .await;
        let ok = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(ok, 1, "{results:?}");
        for r in results.iter().filter(|r| r.is_err()) {
            assert!(
                matches!(r, Err(AppendError::Conflict { actual, .. }) if *actual == at + 1),
                "{r:?}"
            );
        }
    }
    assert_eq!(store.read_stream_all(&s).await.unwrap().len(), 6);
}

#[tokio::test]
async fn a_holder_learns_within_seconds_that_its_leases_connection_is_gone() {
    let (db, _store) = store().await;
    let mut a = Lease::try_acquire(&db.url, "router")
        .await
        .unwrap()
        .unwrap();
    let lost = a.lost();
    a.check().await.unwrap();
    // PostgreSQL cuts the lease's connection (as a restart does); the holder is not using it.
    let admin = sqlx::PgPool::connect(&db.url).await.unwrap();
    let cut: Vec<bool> = sqlx::query_scalar(
        "select pg_terminate_backend(pid) from pg_locks where locktype = 'advisory' and granted
         and database = (select oid from pg_database where datname = current_database())",
    )
    .fetch_all(&admin)
    .await
    .unwrap();
    assert_eq!(cut, vec![true], "the lease's backend");
    tokio::time::timeout(Duration::from_secs(5), lost.cancelled())
        .await
        .expect("the lease's loss seen within 5 s");
    let e = a.check().await.unwrap_err().to_string();
    assert!(e.contains("lease router"), "{e}");
    // And another replica can take it.
    let b = Lease::try_acquire(&db.url, "router").await.unwrap();
    assert!(b.is_some());
}
