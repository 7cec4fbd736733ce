use std::time::Duration;

use cc_eventstore::{Checkpoint, ExpectedVersion, ReadFilter, StreamName, Subscription};

use crate::{event, store, stream};

#[tokio::test]
async fn a_subscription_wakes_on_notify_without_polling() {
    let (_db, store) = store().await;
    store
        .append(&stream("1"), ExpectedVersion::Any, &[event(1)])
        .await
        .unwrap();
    // The fallback poll is an hour: only the notification can wake the subscription in time.
    let mut sub = Subscription::new(store.clone(), ReadFilter::All, Checkpoint::START)
        .await
        .unwrap()
        .with_fallback_poll(Duration::from_secs(3600));
    let first = sub.next_batch().await.unwrap();
    assert_eq!(first.len(), 1);

    let waiting = tokio::spawn(async move {
        let batch = sub.next_batch().await.unwrap();
        (batch, sub.checkpoint())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "nothing new yet");
    store
        .append(&stream("2"), ExpectedVersion::Any, &[event(2)])
        .await
        .unwrap();
    let (batch, cp) = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("woken by NOTIFY")
        .unwrap();
    assert_eq!(batch[0].data["n"], 2);
    assert_eq!(cp, batch[0].checkpoint());

    // Resuming from the stored checkpoint returns nothing old.
    let mut resumed = Subscription::new(store.clone(), ReadFilter::All, cp)
        .await
        .unwrap();
    assert!(resumed.poll().await.unwrap().is_none());
}

/// Every subscription of a process, once caught up, takes its batches from one shared reader:
/// under concurrent writers (transactions committing out of order) each still gets every
/// event of its filter exactly once, in the store's order.
#[tokio::test]
async fn caught_up_subscriptions_share_one_reader_and_miss_nothing() {
    let (_db, store) = store().await;
    let start = |filter: ReadFilter| {
        let store = store.clone();
        async move {
            Subscription::new(store, filter, Checkpoint::START)
                .await
                .unwrap()
                .into_feed(4)
        }
    };
    let mut all_a = start(ReadFilter::All).await;
    let mut all_b = start(ReadFilter::All).await;
    let mut calls = start(ReadFilter::Category("call".into())).await;

    let writers: Vec<_> = (0..8)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..40 {
                    let n = w * 1000 + i;
                    let s = if i % 3 == 0 {
                        StreamName::new("acme", "call", &format!("c{w}")).unwrap()
                    } else {
                        stream(&format!("{w}"))
                    };
                    store
                        .append(&s, ExpectedVersion::Any, &[event(n)])
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    // Readable once no older transaction of the cluster runs (other tests' included).
    let mut stored = vec![];
    for _ in 0..200 {
        stored = store
            .read_all(&ReadFilter::All, Checkpoint::START, 10_000)
            .await
            .unwrap();
        if stored.len() == 320 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stored.len(), 320);
    let ids = |events: &[cc_eventstore::RecordedEvent]| {
        events.iter().map(|e| e.event_id).collect::<Vec<_>>()
    };
    assert_eq!(ids(&take(&mut all_a, 320).await), ids(&stored));
    assert_eq!(ids(&take(&mut all_b, 320).await), ids(&stored));
    let stored_calls: Vec<_> = stored
        .iter()
        .filter(|e| e.stream.category() == "call")
        .cloned()
        .collect();
    assert_eq!(
        ids(&take(&mut calls, stored_calls.len()).await),
        ids(&stored_calls)
    );
}

/// A subscription that stops taking batches falls behind the shared reader (which keeps only
/// so many for it); when it reads again it catches up from the store, with nothing lost.
#[tokio::test]
async fn a_subscription_that_fell_behind_the_shared_reader_catches_up_from_the_store() {
    let (_db, store) = store().await;
    let mut slow = Subscription::new(store.clone(), ReadFilter::All, Checkpoint::START)
        .await
        .unwrap();
    let mut quick = Subscription::new(store.clone(), ReadFilter::All, Checkpoint::START)
        .await
        .unwrap()
        .into_feed(2000);
    // The slow one attaches (nothing to read), then takes one event from the shared reader.
    let first = tokio::spawn(async move {
        let b = slow.next_batch().await.unwrap();
        (slow, b)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    store
        .append(&stream("x"), ExpectedVersion::Any, &[event(0)])
        .await
        .unwrap();
    let (mut slow, b) = tokio::time::timeout(Duration::from_secs(10), first)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), quick.next_batch())
            .await
            .unwrap()
            .unwrap()
            .len(),
        1
    );
    // More single-event batches than the shared reader keeps, each read by it (the quick
    // subscription sees it) before the next is written.
    for n in 1..=1100 {
        store
            .append(&stream("x"), ExpectedVersion::Any, &[event(n)])
            .await
            .unwrap();
        let mut seen = 0;
        while seen < 1 {
            seen += tokio::time::timeout(Duration::from_secs(10), quick.next_batch())
                .await
                .unwrap()
                .unwrap()
                .len();
        }
    }
    let mut got = vec![];
    while got.len() < 1100 {
        got.extend(
            tokio::time::timeout(Duration::from_secs(10), slow.next_batch())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let numbers: Vec<i64> = got.iter().map(|e| e.data["n"].as_i64().unwrap()).collect();
    assert_eq!(numbers, (1..=1100).collect::<Vec<_>>());
}

async fn take(feed: &mut cc_eventstore::Feed, n: usize) -> Vec<cc_eventstore::RecordedEvent> {
    let mut got = vec![];
    while got.len() < n {
        got.extend(
            tokio::time::timeout(Duration::from_secs(10), feed.next_batch())
                .await
                .expect("all events arrive")
                .unwrap(),
        );
    }
    got
}
