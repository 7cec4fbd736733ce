//! Snapshots are a cache: what cannot be used reads as none, and a late save never replaces a
//! newer snapshot.

use cc_eventstore::{Checkpoint, Snapshots};

use crate::store;

#[tokio::test]
async fn a_snapshot_of_another_format_or_that_does_not_decode_reads_as_none_and_a_late_save_keeps_the_newer(
) {
    let (db, _store) = store().await;
    let v1 = Snapshots::new(db.pool.clone(), "router", "router/1");
    assert!(v1.load::<Vec<u32>>().await.unwrap().is_none());

    let at = |position| Checkpoint { xid: 10, position };
    assert!(v1.save(&vec![1u32, 2], at(5), 5).await.unwrap() > 0);
    let s = v1.load::<Vec<u32>>().await.unwrap().unwrap();
    assert_eq!((s.state, s.checkpoint, s.events), (vec![1, 2], at(5), 5));

    // A late save (a holder taken over) never replaces a snapshot that covers more.
    assert_eq!(v1.save(&vec![1u32], at(4), 4).await.unwrap(), 0);
    assert_eq!(
        v1.load::<Vec<u32>>().await.unwrap().unwrap().state,
        vec![1, 2]
    );

    // Another build's format, or another shape: none (the reader replays the store).
    let v2 = Snapshots::new(db.pool.clone(), "router", "router/2");
    assert!(v2.load::<Vec<u32>>().await.unwrap().is_none());
    assert!(v1.load::<String>().await.unwrap().is_none());

    // The new format replaces the old one whatever it covers; clear forgets it.
    assert!(v2.save(&vec![7u32], at(1), 1).await.unwrap() > 0);
    assert_eq!(v2.load::<Vec<u32>>().await.unwrap().unwrap().state, vec![7]);
    v2.clear().await.unwrap();
    assert!(v2.load::<Vec<u32>>().await.unwrap().is_none());
}
