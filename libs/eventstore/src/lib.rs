//! The event store of record, on PostgreSQL.
//!
//! - [`EventStore::append`] writes one or more events to one stream atomically, checking an
//!   [`ExpectedVersion`]; a mismatch is [`AppendError::Conflict`] and nothing is written.
//!   Retrying with the same event ids returns the same result without writing twice.
//! - [`EventStore::read_stream`] reads one stream forward; [`EventStore::read_all`] reads every
//!   event (or one category) forward from a [`Checkpoint`], in batches.
//! - Catch-up reads never skip an event whose transaction commits after a later-numbered one:
//!   rows are read only below the oldest running transaction id and ordered by
//!   `(xid, position)` (the transaction-id snapshot technique).
//! - [`Subscription`] waits for new events with LISTEN/NOTIFY as a wake-up hint.
//! - [`Upcasters`] upgrade old schema versions of an event type on read.
//! - [`Snapshots`] keep a folded state with the position it covers (a cache for take-overs).

mod checkpoint;
mod lease;
mod migrate;
pub mod partitioning;
mod snapshot;
mod store;
mod subscription;
mod tail;
mod upcast;

pub use cc_core::{
    AppendResult, Checkpoint, ExpectedVersion, Metadata, NameError, NewEvent, RecordedEvent,
    StreamName,
};
pub use checkpoint::{begin_read_model, CheckpointStore};
pub use lease::{Fence, Lease};
pub use migrate::{migrate, Migration};
pub use snapshot::{SaveError, Snapshot, Snapshots};
pub use store::{AppendError, EventStore, ReadFilter};
pub use subscription::{Feed, Subscription};
pub use upcast::Upcasters;

/// The migrations of the event store itself, applied by [`migrate`] with component `eventstore`.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "event_store",
        sql: include_str!("../sql/0001_event_store.sql"),
    },
    Migration {
        version: 2,
        name: "append_function",
        sql: include_str!("../sql/0002_append_function.sql"),
    },
    Migration {
        version: 3,
        name: "append_statement",
        sql: include_str!("../sql/0003_append_statement.sql"),
    },
    Migration {
        version: 4,
        name: "lease_epochs",
        sql: include_str!("../sql/0004_lease_epochs.sql"),
    },
    Migration {
        version: 5,
        name: "snapshots",
        sql: include_str!("../sql/0005_snapshots.sql"),
    },
    Migration {
        version: 6,
        name: "consumer_floors",
        sql: include_str!("../sql/0006_consumer_floors.sql"),
    },
    Migration {
        version: 7,
        name: "partitioning",
        sql: include_str!("../sql/0007_partitioning.sql"),
    },
    Migration {
        version: 8,
        name: "partition_hash",
        sql: include_str!("../sql/0008_partition_hash.sql"),
    },
];
