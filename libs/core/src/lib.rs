//! What the contracts (libs/contracts) and the infrastructure (the event store, the bus) share,
//! with no database or bus client in it: the [`Command`] trait and the event envelope. The
//! contracts and the domain cores depend on this crate only, so they link neither sqlx nor
//! async-nats (scripts/check-contracts checks it); the event store and the bus re-export these
//! types.

mod decider;
mod event;
mod names;
pub mod pairs;
pub mod partition;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use decider::Decider;
pub use event::{AppendResult, Checkpoint, ExpectedVersion, Metadata, NewEvent, RecordedEvent};
pub use names::{NameError, StreamName};
pub use partition::Partition;

/// A typed command: its service, its name (the last subject token) and its reply.
pub trait Command: Serialize + DeserializeOwned + Send + 'static {
    const SERVICE: &'static str;
    const NAME: &'static str;
    type Reply: Serialize + DeserializeOwned + Send + 'static;
}
