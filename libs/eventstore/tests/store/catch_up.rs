use cc_eventstore::{
    Checkpoint, CheckpointStore, ExpectedVersion, ReadFilter, RecordedEvent, StreamName,
};
use sqlx::{Postgres, Transaction};

use crate::{event, store, stream};

/// Appends one event inside an open transaction (as a concurrent writer would), returning its
/// global position.
async fn append_in(
    store: &cc_eventstore::EventStore,
    tx: &mut Transaction<'_, Postgres>,
    s: &StreamName,
    n: i64,
) -> i64 {
    let r = store
        .append_in(tx, s, cc_eventstore::ExpectedVersion::Any, &[event(n)])
        .await
        .unwrap();
    r.positions[0]
}

/// Reads after `cp` until `n` events are readable. Open transactions of *other* tests in the
/// same PostgreSQL cluster hold the snapshot's xmin back for a moment, so readers may have to
/// wait; they never skip.
async fn read_n(store: &cc_eventstore::EventStore, cp: Checkpoint, n: usize) -> Vec<RecordedEvent> {
    cc_testkit::eventually(
        "events to become readable",
        std::time::Duration::from_secs(20),
        || async {
            let batch = store.read_all(&ReadFilter::All, cp, 100).await.unwrap();
            assert!(batch.len() <= n, "more events than written");
            (batch.len() == n).then_some(batch)
        },
    )
    .await
}

fn ns(events: &[RecordedEvent]) -> Vec<i64> {
    events
        .iter()
        .map(|e| e.data["n"].as_i64().unwrap())
        .collect()
}

async fn read_everything(store: &cc_eventstore::EventStore, n: usize) -> Vec<RecordedEvent> {
    read_n(store, Checkpoint::START, n).await;
    let mut out = Vec::new();
    let mut cp = Checkpoint::START;
    loop {
        let batch = store.read_all(&ReadFilter::All, cp, 2).await.unwrap();
        match batch.last() {
            None => return out,
            Some(last) => cp = last.checkpoint(),
        }
        out.extend(batch);
    }
}

#[tokio::test]
async fn a_transaction_that_commits_late_is_never_skipped() {
    let (db, store) = store().await;
    store
        .append(&stream("a"), ExpectedVersion::Any, &[event(0)])
        .await
        .unwrap();

    let mut early = db.pool.begin().await.unwrap();
    let p_early = append_in(&store, &mut early, &stream("b"), 1).await;
    let mut late = db.pool.begin().await.unwrap();
    let p_late = append_in(&store, &mut late, &stream("c"), 2).await;
    assert!(p_late > p_early, "the second writer got the later position");
    // The later-numbered transaction commits first.
    late.commit().await.unwrap();

    let first = read_n(&store, Checkpoint::START, 1).await;
    assert_eq!(
        ns(&first),
        [0],
        "nothing past the open transaction is returned"
    );
    let cp = first.last().unwrap().checkpoint();
    let again = store.read_all(&ReadFilter::All, cp, 100).await.unwrap();
    assert!(
        again.is_empty(),
        "the checkpoint does not move past the uncommitted event"
    );

    early.commit().await.unwrap();
    let rest = read_n(&store, cp, 2).await;
    assert_eq!(
        ns(&rest),
        [1, 2],
        "both are returned once the early one commits"
    );
    // A stable order: a fresh reader sees the same sequence, in batches or not.
    assert_eq!(ns(&read_everything(&store, 3).await), [0, 1, 2]);
}

/// The nastier case: a transaction with the *lower* transaction id takes the *higher*
/// position and commits first, while the other (higher xid, lower position) is still open.
/// A reader trusting "max position seen" would skip the lower position forever.
#[tokio::test]
async fn a_lower_position_committing_after_a_higher_one_is_not_skipped() {
    let (db, store) = store().await;
    let mut a = db.pool.begin().await.unwrap();
    sqlx::query("select pg_current_xact_id()")
        .execute(&mut *a)
        .await
        .unwrap(); // a gets the lower xid
    let mut b = db.pool.begin().await.unwrap();
    let p_b = append_in(&store, &mut b, &stream("b"), 1).await; // b: higher xid, lower position
    let p_a = append_in(&store, &mut a, &stream("a"), 2).await; // a: lower xid, higher position
    assert!(p_a > p_b);
    a.commit().await.unwrap();

    let seen = read_n(&store, Checkpoint::START, 1).await;
    assert_eq!(ns(&seen), [2]);
    let cp = seen.last().unwrap().checkpoint();
    assert_eq!(cp.position, p_a, "the reader's position is past p_b...");

    b.commit().await.unwrap();
    let rest = read_n(&store, cp, 1).await;
    assert_eq!(ns(&rest), [1], "...yet p_b is still delivered");
    assert_eq!(
        ns(&read_everything(&store, 2).await),
        [2, 1],
        "in one stable order for every reader"
    );
}

#[tokio::test]
async fn an_aborted_transaction_does_not_block_readers() {
    let (db, store) = store().await;
    let mut t = db.pool.begin().await.unwrap();
    append_in(&store, &mut t, &stream("x"), 1).await;
    store
        .append(&stream("y"), ExpectedVersion::Any, &[event(2)])
        .await
        .unwrap();
    assert!(store
        .read_all(&ReadFilter::All, Checkpoint::START, 10)
        .await
        .unwrap()
        .is_empty());
    t.rollback().await.unwrap();
    assert_eq!(ns(&read_n(&store, Checkpoint::START, 1).await), [2]);
}

#[tokio::test]
async fn reads_one_category_in_batches_and_resumes_from_a_stored_checkpoint() {
    let (db, store) = store().await;
    for i in 0..5 {
        store
            .append(&stream("1001"), ExpectedVersion::Any, &[event(i)])
            .await
            .unwrap();
        let call = StreamName::new("acme", "call", &format!("c{i}")).unwrap();
        store
            .append(&call, ExpectedVersion::Any, &[event(100 + i)])
            .await
            .unwrap();
    }
    let agents = ReadFilter::Category("agent".into());
    read_n(&store, Checkpoint::START, 10).await;
    let batch = store.read_all(&agents, Checkpoint::START, 3).await.unwrap();
    assert_eq!(ns(&batch), [0, 1, 2]);
    let checkpoints = CheckpointStore::new(db.pool.clone());
    checkpoints
        .save("reader", batch.last().unwrap().checkpoint())
        .await
        .unwrap();

    let resumed = checkpoints.load("reader").await.unwrap();
    let rest = store.read_all(&agents, resumed, 10).await.unwrap();
    assert_eq!(ns(&rest), [3, 4]);
    assert_eq!(checkpoints.load("nobody").await.unwrap(), Checkpoint::START);
    assert_eq!(store.count(&agents).await.unwrap(), 5);
    assert_eq!(read_everything(&store, 10).await.len(), 10);
}
