//! The event store against a real PostgreSQL, one database per test.

mod append;
mod catch_up;
mod fencing;
mod partitions;
mod snapshots;
mod subscription;

use cc_eventstore::{EventStore, Metadata, NewEvent, StreamName};
use cc_testkit::TestDb;
use serde_json::json;

pub async fn store() -> (TestDb, EventStore) {
    let db = TestDb::new().await;
    cc_eventstore::migrate(&db.pool, "eventstore", cc_eventstore::MIGRATIONS)
        .await
        .unwrap();
    let store = EventStore::new(db.pool.clone());
    (db, store)
}

pub fn stream(id: &str) -> StreamName {
    StreamName::new("acme", "agent", id).unwrap()
}

pub fn event(n: i64) -> NewEvent {
    NewEvent::new(
        "AgentPaused",
        1,
        json!({ "n": n }),
        Metadata::new("acme", "test"),
    )
}

/// The `n` of each event of a stream, in order (events made by [`event`]).
pub async fn numbers(store: &EventStore, s: &StreamName) -> Vec<i64> {
    store
        .read_stream_all(s)
        .await
        .unwrap()
        .iter()
        .map(|e| e.data["n"].as_i64().unwrap())
        .collect()
}
