//! A partition's read (PostgreSQL's reading of `cc_core::partition::of`) and a subscription to
//! it hold exactly the events of that partition's tenants, in the global order.

use cc_core::Partition;
use cc_eventstore::{
    Checkpoint, ExpectedVersion, Metadata, NewEvent, ReadFilter, StreamName, Subscription,
};
use serde_json::json;

use crate::store;

#[tokio::test]
async fn a_partitions_reads_hold_its_tenants_events_and_no_others() {
    let (_db, store) = store().await;
    let tenants: Vec<String> = (0..40).map(|i| format!("tenant-{i}")).collect();
    for (i, t) in tenants.iter().enumerate() {
        let stream = StreamName::new(t, "agent", "1").unwrap();
        let e = NewEvent::new(
            "AgentPaused",
            1,
            json!({ "n": i }),
            Metadata::new(t, "test"),
        );
        store
            .append(&stream, ExpectedVersion::NoStream, &[e])
            .await
            .unwrap();
    }
    let count = 4;
    let mut seen = 0;
    for p in Partition::all(count) {
        let read = store
            .read_all(&ReadFilter::Partition(p), Checkpoint::START, 1000)
            .await
            .unwrap();
        // Everything, filtered by the Rust reading (earlier rounds added events).
        let all = store
            .read_all(&ReadFilter::All, Checkpoint::START, 1000)
            .await
            .unwrap();
        let expected: Vec<&String> = all
            .iter()
            .map(|e| &e.metadata.tenant)
            .filter(|t| cc_core::partition::of(t, count) == p.index)
            .collect();
        let got: Vec<&String> = read.iter().map(|e| &e.metadata.tenant).collect();
        assert_eq!(got, expected, "partition {p}");
        assert_eq!(
            store.count(&ReadFilter::Partition(p)).await.unwrap(),
            expected.len() as i64
        );
        // The subscription's catch-up and the shared reader filter alike.
        let mut sub = Subscription::new(store.clone(), ReadFilter::Partition(p), Checkpoint::START)
            .await
            .unwrap();
        let batch = sub.next_batch().await.unwrap();
        assert_eq!(batch.len(), expected.len());
        let later = tenants.iter().find(|t| p.contains(t)).unwrap();
        let other = tenants.iter().find(|t| !p.contains(t)).unwrap();
        for t in [other, later] {
            let stream = StreamName::new(t, "agent", "2").unwrap();
            let e = NewEvent::new("AgentPaused", 1, json!({}), Metadata::new(t, "test"));
            store
                .append(&stream, ExpectedVersion::Any, &[e])
                .await
                .unwrap();
        }
        let next = sub.next_batch().await.unwrap();
        assert_eq!(
            next.iter()
                .map(|e| e.metadata.tenant.as_str())
                .collect::<Vec<_>>(),
            vec![later.as_str()],
            "partition {p}: only its tenant's new event"
        );
        seen += tenants.iter().filter(|t| p.contains(t)).count();
    }
    assert_eq!(seen, tenants.len(), "every tenant in one partition");
}

/// A tenant of partition `p` (`mine`) or of another one.
fn tenant_of(p: Partition, mine: bool) -> String {
    (0..100)
        .map(|i| format!("tenant-{i}"))
        .find(|t| p.contains(t) == mine)
        .unwrap()
}

/// Appends one event of `tenant`'s.
async fn append_one(store: &cc_eventstore::EventStore, tenant: &str) {
    let stream = StreamName::new(tenant, "agent", "1").unwrap();
    let e = NewEvent::new("AgentPaused", 1, json!({}), Metadata::new(tenant, "test"));
    store
        .append(&stream, ExpectedVersion::Any, &[e])
        .await
        .unwrap();
}

/// The checkpoint of the store's last event.
async fn head(store: &cc_eventstore::EventStore) -> Checkpoint {
    store
        .read_all(&ReadFilter::All, Checkpoint::START, 1000)
        .await
        .unwrap()
        .last()
        .unwrap()
        .checkpoint()
}

/// A partition's subscription with idle progress says, by an empty batch, that it has read
/// past other partitions' events (a partition's projection records that, so the portal's
/// read-your-writes for a quiet partition does not wait on it), and never returns an empty
/// batch without it, nor skips an event of its own.
#[tokio::test]
async fn a_partitions_idle_progress_moves_past_other_partitions_events() {
    let (_db, store) = store().await;
    let p = Partition { index: 1, count: 4 };
    let (mine, other) = (tenant_of(p, true), tenant_of(p, false));
    append_one(&store, &mine).await;
    let mut sub = Subscription::new(store.clone(), ReadFilter::Partition(p), Checkpoint::START)
        .await
        .unwrap()
        .with_idle_progress(std::time::Duration::from_millis(50));
    let first = sub.next_batch().await.unwrap();
    assert_eq!(first.len(), 1);
    let own = sub.checkpoint();
    // Only others' events: an empty batch, its checkpoint at the store's last event.
    for _ in 0..3 {
        append_one(&store, &other).await;
    }
    let head = head(&store).await;
    let moved = tokio::time::timeout(std::time::Duration::from_secs(10), sub.next_batch())
        .await
        .expect("an empty batch once the checkpoint moved")
        .unwrap();
    assert!(moved.is_empty(), "{moved:?}");
    assert!(sub.checkpoint() > own);
    assert_eq!(sub.checkpoint(), head);
    // Nothing new: no empty batch (it waits), then its own next event, not skipped.
    let waiting = tokio::time::timeout(std::time::Duration::from_millis(400), sub.next_batch());
    assert!(waiting.await.is_err(), "no empty batch while nothing moved");
    append_one(&store, &mine).await;
    let next = tokio::time::timeout(std::time::Duration::from_secs(10), sub.next_batch())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].metadata.tenant, mine);
}

/// A partition's subscription that starts behind the process's shared reader (its own last
/// event is older than others' events the reader already sent) attaches to the reader and
/// moves past the others' events: it used to find every batch of the reader past its own
/// checkpoint, read the store again, and never attach.
#[tokio::test]
async fn a_partitions_subscription_behind_the_shared_reader_attaches_and_moves_on() {
    let (_db, store) = store().await;
    let p = Partition { index: 2, count: 4 };
    let (mine, other) = (tenant_of(p, true), tenant_of(p, false));
    append_one(&store, &mine).await;
    // Another subscription keeps the shared reader going, past others' events.
    let mut all = Subscription::new(store.clone(), ReadFilter::All, Checkpoint::START)
        .await
        .unwrap()
        .into_feed(4);
    for _ in 0..3 {
        append_one(&store, &other).await;
    }
    let mut seen = 0;
    while seen < 4 {
        seen += all.next_batch().await.unwrap().len();
    }
    let mut sub = Subscription::new(store.clone(), ReadFilter::Partition(p), Checkpoint::START)
        .await
        .unwrap()
        .with_idle_progress(std::time::Duration::from_millis(50));
    assert_eq!(sub.next_batch().await.unwrap().len(), 1, "its own event");
    append_one(&store, &other).await;
    let head = head(&store).await;
    let moved = tokio::time::timeout(std::time::Duration::from_secs(10), sub.next_batch())
        .await
        .expect("attached to the shared reader: an empty batch once it moved")
        .unwrap();
    assert!(moved.is_empty(), "{moved:?}");
    assert_eq!(sub.checkpoint(), head);
    drop(all);
}
