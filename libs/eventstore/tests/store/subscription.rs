use std::time::Duration;

use cc_eventstore::{Checkpoint, ExpectedVersion, ReadFilter, Subscription};

use crate::{event, store, stream};

#[tokio::test]
async fn a_subscription_wakes_on_notify_without_polling() {
    let (_db, store) = store().await;
    store.append(&stream("1"), ExpectedVersion::Any, &[event(1)]).await.unwrap();
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
    store.append(&stream("2"), ExpectedVersion::Any, &[event(2)]).await.unwrap();
    let (batch, cp) = tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("woken by NOTIFY").unwrap();
    assert_eq!(batch[0].data["n"], 2);
    assert_eq!(cp, batch[0].checkpoint());

    // Resuming from the stored checkpoint returns nothing old.
    let mut resumed = Subscription::new(store.clone(), ReadFilter::All, cp).await.unwrap();
    assert!(resumed.poll().await.unwrap().is_none());
}
