use cc_eventstore::{
    AppendError, Checkpoint, ExpectedVersion, Metadata, NewEvent, ReadFilter, StreamName,
};
use serde_json::json;

use crate::{event, store, stream};

#[tokio::test]
async fn appends_with_expected_versions_and_reads_the_stream_back() {
    let (_db, store) = store().await;
    let s = stream("1001");
    let r = store
        .append(&s, ExpectedVersion::NoStream, &[event(1), event(2)])
        .await
        .unwrap();
    assert_eq!(r.stream_version, 2);
    assert_eq!(r.positions.len(), 2);
    assert!(!r.duplicate);
    let r = store
        .append(&s, ExpectedVersion::Exact(2), &[event(3)])
        .await
        .unwrap();
    assert_eq!(r.stream_version, 3);
    store
        .append(&s, ExpectedVersion::Any, &[event(4)])
        .await
        .unwrap();

    let events = store.read_stream_all(&s).await.unwrap();
    let ns: Vec<i64> = events
        .iter()
        .map(|e| e.data["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, [1, 2, 3, 4]);
    assert_eq!(
        events.iter().map(|e| e.version).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    let e = &events[0];
    assert_eq!(e.event_type, "AgentPaused");
    assert_eq!(e.schema_version, 1);
    assert_eq!(e.metadata.tenant, "acme");
    assert_eq!(e.metadata.actor.as_deref(), Some("test"));
    assert_eq!(e.event_id.get_version_num(), 7, "event ids are UUIDv7");
    assert_eq!(e.stream, s);

    let from3 = store.read_stream(&s, 3, 10).await.unwrap();
    assert_eq!(from3.len(), 2);
    assert_eq!(from3[0].version, 3);
}

#[tokio::test]
async fn a_version_mismatch_is_a_typed_conflict_and_writes_nothing() {
    let (_db, store) = store().await;
    let s = stream("1002");
    store
        .append(&s, ExpectedVersion::NoStream, &[event(1)])
        .await
        .unwrap();

    match store
        .append(&s, ExpectedVersion::NoStream, &[event(2)])
        .await
    {
        Err(AppendError::Conflict {
            expected, actual, ..
        }) => {
            assert_eq!(expected, ExpectedVersion::NoStream);
            assert_eq!(actual, 1);
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    match store
        .append(&s, ExpectedVersion::Exact(5), &[event(2), event(3)])
        .await
    {
        Err(AppendError::Conflict {
            expected, actual, ..
        }) => {
            assert_eq!((expected, actual), (ExpectedVersion::Exact(5), 1));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(store.read_stream_all(&s).await.unwrap().len(), 1);
    assert_eq!(store.count(&ReadFilter::All).await.unwrap(), 1);
    assert_eq!(store.stream_version(&s).await.unwrap(), 1);
}

#[tokio::test]
async fn retrying_with_the_same_event_ids_is_idempotent() {
    let (_db, store) = store().await;
    let s = stream("1003");
    let batch = [event(1), event(2)];
    let first = store
        .append(&s, ExpectedVersion::NoStream, &batch)
        .await
        .unwrap();
    // The retry carries the same expected version as the original: still the same result.
    let retry = store
        .append(&s, ExpectedVersion::NoStream, &batch)
        .await
        .unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.positions, first.positions);
    assert_eq!(retry.stream_version, first.stream_version);
    assert_eq!(store.read_stream_all(&s).await.unwrap().len(), 2);

    // An id reused with a new one is refused, not half-written.
    let mixed = [batch[0].clone(), event(3)];
    assert!(matches!(
        store.append(&s, ExpectedVersion::Any, &mixed).await,
        Err(AppendError::EventIdReused)
    ));
    // The same id in another stream is refused too.
    assert!(matches!(
        store
            .append(&stream("other"), ExpectedVersion::Any, &batch[..1])
            .await,
        Err(AppendError::EventIdReused)
    ));
    assert_eq!(store.count(&ReadFilter::All).await.unwrap(), 2);
}

#[tokio::test]
async fn concurrent_writers_to_one_stream_never_share_a_version() {
    let (_db, store) = store().await;
    let s = stream("1004");
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (store, s) = (store.clone(), s.clone());
        tasks.push(tokio::spawn(async move {
            let v = store.stream_version(&s).await.unwrap();
            store
                .append(&s, ExpectedVersion::Exact(v), &[event(i)])
                .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(AppendError::Conflict { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    let events = store.read_stream_all(&s).await.unwrap();
    assert_eq!(events.len(), ok);
    assert!(events
        .iter()
        .enumerate()
        .all(|(i, e)| e.version == i as i64 + 1));
}

#[tokio::test]
async fn bad_appends_are_refused() {
    let (_db, store) = store().await;
    assert!(matches!(
        store.append(&stream("x"), ExpectedVersion::Any, &[]).await,
        Err(AppendError::Empty)
    ));
    let other_tenant = NewEvent::new("AgentPaused", 1, json!({}), Metadata::new("globex", "test"));
    assert!(matches!(
        store
            .append(&stream("x"), ExpectedVersion::Any, &[other_tenant])
            .await,
        Err(AppendError::TenantMismatch { .. })
    ));
    assert_eq!(
        StreamName::new("acme", "agent", "a.b").unwrap_err().field,
        "stream id"
    );
    assert_eq!(store.count(&ReadFilter::All).await.unwrap(), 0);
    assert!(store
        .read_all(&ReadFilter::All, Checkpoint::START, 10)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn upcasters_upgrade_old_schema_versions_on_read() {
    let (db, store) = store().await;
    let s = StreamName::new("acme", "agent", "1005").unwrap();
    let old = NewEvent::new(
        "AgentCreated",
        1,
        json!({ "name": "Ada" }),
        Metadata::new("acme", "test"),
    );
    store
        .append(&s, ExpectedVersion::Any, &[old])
        .await
        .unwrap();

    let upcasters = cc_eventstore::Upcasters::new()
        .register("AgentCreated", 1, |mut v| {
            let name = v["name"].take();
            serde_json::json!({ "display_name": name })
        })
        .register("AgentCreated", 2, |mut v| {
            v["enabled"] = serde_json::json!(true);
            v
        });
    let upcasting = cc_eventstore::EventStore::new(db.pool.clone()).with_upcasters(upcasters);
    let e = &upcasting.read_stream_all(&s).await.unwrap()[0];
    assert_eq!(e.schema_version, 3);
    assert_eq!(e.data, json!({ "display_name": "Ada", "enabled": true }));
    let all = cc_testkit::eventually(
        "the event to be readable",
        std::time::Duration::from_secs(20),
        || async {
            let batch = upcasting
                .read_all(&ReadFilter::All, Checkpoint::START, 10)
                .await
                .unwrap();
            (!batch.is_empty()).then_some(batch)
        },
    )
    .await;
    let e = &all[0];
    assert_eq!(e.schema_version, 3);
    // Without upcasters the stored version is unchanged.
    assert_eq!(
        store.read_stream_all(&s).await.unwrap()[0].schema_version,
        1
    );
}
