//! The NATS bus of the product.
//!
//! - [`Subjects`]: every subject name, in one place.
//! - [`Command`] / [`CommandHandlers`] / [`Bus::request`]: typed request/reply commands. A
//!   malformed or unknown command gets an error reply naming what is wrong (never a timeout,
//!   never a panic).
//! - [`consumer`]: JetStream durable consumers and the idempotency table that makes a
//!   redelivered event change nothing.
//! - [`relay`]: the outbox that moves committed events from the store to JetStream, in store
//!   order, exactly once per event id, with one active relay at a time.

mod command;
pub mod consumer;
pub mod relay;
mod subjects;

pub use command::{Command, CommandContext, CommandError, CommandHandlers, RequestError};
pub use subjects::Subjects;

use cc_eventstore::Migration;

/// The bus's own tables (consumer idempotency), component `bus`.
pub const MIGRATIONS: &[Migration] =
    &[Migration { version: 1, name: "processed_events", sql: include_str!("../sql/0001_processed.sql") }];

/// A connection to the bus: the NATS client, its JetStream context and the subject names.
#[derive(Clone)]
pub struct Bus {
    pub client: async_nats::Client,
    pub jetstream: async_nats::jetstream::Context,
    pub subjects: Subjects,
}

impl Bus {
    pub fn new(client: async_nats::Client, subjects: Subjects) -> Self {
        let jetstream = async_nats::jetstream::new(client.clone());
        Self { client, jetstream, subjects }
    }
}
