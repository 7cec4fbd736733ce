//! The relay (outbox): committed events go from the store to the JetStream events stream in
//! store order.
//!
//! Guarantees, and how:
//! - **Nothing lost, nothing reordered.** JetStream itself is the record of what was
//!   published: on (re)start and after any error the relay reads the last message of the
//!   stream, whose `Cc-Checkpoint` header says where in the store it came from, and resumes
//!   right after it. Every publish carries `Nats-Expected-Last-Sequence` = the stream sequence of
//!   the message before it, so the server refuses a message that would land out of order (a
//!   failed publish in a pipelined batch makes every later one fail too). The relay is the
//!   stream's only publisher. (Not `Nats-Expected-Last-Msg-Id`: after a restart nats-server
//!   knows message ids only within the dedup window, so a relay whose last message was older
//!   refused every publish for good; the sequence survives restarts.)
//! - **No duplicates.** `Nats-Msg-Id` = event id; a duplicate within the dedup window is
//!   absorbed by JetStream, and resuming from the stream's last message avoids re-sending.
//! - **One relay at a time.** A PostgreSQL advisory lock held on a dedicated connection is the
//!   lease; a second process waits and takes over within seconds when the first dies.
//!   The expected-last-sequence check also stops a deposed relay that has not noticed yet.
//! - The store checkpoint `relay` is saved only after JetStream acked the batch, at most once
//!   a second (for monitoring the relay's lag; JetStream's last message stays the source of
//!   truth).
//! - **Every stored event is relayed as stored, never decoded.** What a consumer cannot apply
//!   is that consumer's to park (`crate::parked`); the relay skipping an event would take it
//!   from every JetStream subscriber, and stopping on one would stop every tenant's events. A
//!   type that cannot be a subject token goes out under `_` (see [`crate::Subjects::event`]).
//! - **Transfer events reach their target agent's subject too.** A call event with a
//!   `target_agent` is published twice: first a copy on
//!   `<p>.target_events.<tenant>.….<target agent>.<queue>` (header `Cc-Copy: target_agent`,
//!   `Nats-Msg-Id` `<event id>:target_agent`, `Cc-Checkpoint` that of the event before it),
//!   then the event itself on its own subject. A relay stopped between the two resumes at the
//!   event (its copy's checkpoint is the one before it) and, seeing the copy is the stream's
//!   last message, does not publish the copy again.

use std::time::Duration;

use async_nats::jetstream::stream::{Config as StreamConfig, StorageType};
use async_nats::HeaderMap;
use cc_eventstore::{
    Checkpoint, CheckpointStore, EventStore, ReadFilter, RecordedEvent, Subscription,
};
use futures::future::try_join_all;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::Bus;

/// Tunables of the relay.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    pub batch_size: i64,
    /// How often a waiting relay retries the lease.
    pub lease_retry: Duration,
    /// How long JetStream's dedup window is (duplicates inside it are absorbed).
    pub duplicate_window: Duration,
}

impl Default for RelayOptions {
    fn default() -> Self {
        Self {
            batch_size: 500,
            lease_retry: Duration::from_secs(1),
            duplicate_window: Duration::from_secs(120),
        }
    }
}

/// The JetStream configuration of the events stream: file storage, kept forever (subscribers
/// may replay from the start), dedup window for the relay's retries.
pub fn events_stream_config(bus: &Bus, duplicate_window: Duration) -> StreamConfig {
    StreamConfig {
        name: bus.subjects.events_stream(),
        subjects: vec![bus.subjects.all_events(), bus.subjects.all_target_events()],
        storage: StorageType::File,
        duplicate_window,
        allow_direct: true,
        description: Some(
            "Domain events of the call center, relayed from the event store in store order".into(),
        ),
        ..Default::default()
    }
}

/// Creates the events stream if it does not exist, and gives a stream created before the
/// target subjects existed their subjects, and one of another replica count the bus's
/// ([`Bus::ensure_stream`]; nothing else of its configuration is changed).
pub async fn ensure_events_stream(bus: &Bus, duplicate_window: Duration) -> Result<()> {
    bus.ensure_stream(events_stream_config(bus, duplicate_window))
        .await
}

/// The header that marks the copy of a transfer event on its target agent's subject.
pub const COPY_HEADER: &str = "Cc-Copy";

/// The receiving agent of a call event that names one (transfer events), for its copy.
fn target_agent(e: &RecordedEvent) -> Option<&str> {
    (e.stream.category() == "call")
        .then(|| e.data.get("target_agent").and_then(|v| v.as_str()))
        .flatten()
        .filter(|a| !a.is_empty())
}

use std::future::IntoFuture;

use anyhow::{anyhow, Result};

/// The headers of one relayed event: dedup id, order guard (the stream's sequence before it),
/// CloudEvents attributes.
pub fn event_headers(e: &RecordedEvent, last_sequence: u64) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("Nats-Msg-Id", e.event_id.to_string().as_str());
    h.insert(
        "Nats-Expected-Last-Sequence",
        last_sequence.to_string().as_str(),
    );
    h.insert("ce-specversion", "1.0");
    h.insert("ce-id", e.event_id.to_string().as_str());
    h.insert(
        "ce-source",
        format!("/tenants/{}/{}", e.tenant(), e.stream.category()).as_str(),
    );
    // The type as stored, escaped: a header value cannot hold a control character.
    let event_type = e.event_type.escape_default().to_string();
    h.insert(
        "ce-type",
        format!("callcenter.{}.v{}", event_type, e.schema_version).as_str(),
    );
    h.insert(
        "ce-subject",
        format!("{}-{}", e.stream.category(), e.stream.id()).as_str(),
    );
    h.insert(
        "ce-time",
        e.recorded_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            .as_str(),
    );
    h.insert("ce-datacontenttype", "application/json");
    h.insert("ce-tenant", e.tenant());
    h.insert(
        "ce-correlationid",
        e.metadata.correlation_id.to_string().as_str(),
    );
    if let Some(c) = e.metadata.causation_id {
        h.insert("ce-causationid", c.to_string().as_str());
    }
    if let Some(a) = &e.metadata.actor {
        h.insert("ce-actor", a.as_str());
    }
    if let Some(t) = &e.metadata.traceparent {
        // W3C trace context, as the CloudEvents distributed tracing extension carries it.
        h.insert("ce-traceparent", t.as_str());
        h.insert(cc_trace::TRACEPARENT, t.as_str());
    }
    h.insert("Cc-Event-Type", event_type.as_str());
    h.insert("Cc-Schema-Version", e.schema_version.to_string().as_str());
    h.insert("Cc-Stream-Version", e.version.to_string().as_str());
    h.insert("Cc-Position", e.position.to_string().as_str());
    h.insert("Cc-Checkpoint", e.checkpoint().to_string().as_str());
    h
}

/// The relay. Run it with [`Relay::run`]; several may run, one is active.
pub struct Relay {
    store: EventStore,
    bus: Bus,
    database_url: String,
    leader: Option<crate::Leader>,
    options: RelayOptions,
}

/// Where JetStream says the relay stands.
struct Position {
    checkpoint: Checkpoint,
    /// The stream's last sequence (0: empty).
    last_sequence: u64,
    /// The event whose target copy is the stream's last message (its own message is not).
    copied: Option<Uuid>,
}

impl Relay {
    pub fn new(store: EventStore, bus: Bus, database_url: String, options: RelayOptions) -> Self {
        Self {
            store,
            bus,
            database_url,
            options,
            leader: None,
        }
    }

    /// Reports the lease and the relayed position to `leader` (metrics).
    pub fn with_leader(mut self, leader: crate::Leader) -> Self {
        self.leader = Some(leader);
        self
    }

    fn lease_key(&self) -> String {
        format!("cc-relay:{}", self.bus.subjects.events_stream())
    }

    /// Runs until `cancel`: waits for the lease, relays, and starts over on any error.
    pub async fn run(self, cancel: CancellationToken) {
        while !cancel.is_cancelled() {
            match self.lead(&cancel).await {
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "relay interrupted; resuming from JetStream's last message")
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = tokio::time::sleep(self.options.lease_retry) => {}
            }
        }
    }

    /// Takes the lease (or returns when it is held elsewhere) and relays while holding it.
    async fn lead(&self, cancel: &CancellationToken) -> Result<()> {
        let Some(mut lease) =
            cc_eventstore::Lease::try_acquire(&self.database_url, &self.lease_key())
                .await
                .map_err(db)?
        else {
            tracing::debug!("relay lease held by another process; standing by");
            return Ok(());
        };
        tracing::info!(stream = %self.bus.subjects.events_stream(), "relay lease taken; relaying");
        let _holding = self.leader.as_ref().map(|l| l.took(lease.fence().epoch));
        ensure_events_stream(&self.bus, self.options.duplicate_window).await?;
        let mut pos = self.resync().await?;
        if let Some(l) = &self.leader {
            l.applied(pos.checkpoint);
        }
        let mut sub = Subscription::new(self.store.clone(), ReadFilter::All, pos.checkpoint)
            .await
            .map_err(db)?
            .with_batch_size(self.options.batch_size)
            .into_feed(4);
        let checkpoints = CheckpointStore::new(self.store.pool().clone());
        // The store checkpoint is for watching the relay's lag only (JetStream's last message
        // is where it resumes): saved at most once a second, not one more commit per batch.
        let (mut saved, mut saved_at) = (pos.checkpoint, std::time::Instant::now());
        loop {
            let unsaved = pos.checkpoint != saved;
            let save_in = Duration::from_secs(1).saturating_sub(saved_at.elapsed());
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tokio::time::sleep(save_in), if unsaved => {}
                b = sub.next_batch() => {
                    let batch = b.map_err(db)?;
                    // A dead lease connection means another relay may lead now: stop.
                    lease.check().await.map_err(db)?;
                    pos = self.publish(batch, pos).await?;
                    if let Some(l) = &self.leader {
                        l.applied(pos.checkpoint);
                    }
                }
            }
            if pos.checkpoint != saved && saved_at.elapsed() >= Duration::from_secs(1) {
                checkpoints
                    .save("relay", pos.checkpoint)
                    .await
                    .map_err(db)?;
                (saved, saved_at) = (pos.checkpoint, std::time::Instant::now());
            }
        }
    }

    /// Publishes a batch pipelined, then awaits every ack in order.
    async fn publish(&self, batch: Vec<RecordedEvent>, mut pos: Position) -> Result<Position> {
        let mut acks = Vec::with_capacity(batch.len());
        // A span per traced event, from its publish to the batch's acks.
        let spans: Vec<tracing::Span> = batch
            .iter()
            .filter(|e| e.metadata.traceparent.is_some())
            .map(|e| {
                cc_trace::following(
                    tracing::info_span!(
                        "relay publish",
                        otel.kind = "producer",
                        event_type = %e.event_type,
                        position = e.position,
                    ),
                    e.metadata.traceparent.as_deref(),
                )
            })
            .collect();
        // The checkpoint before each event: its target copy's (see the module's doc).
        let mut before = pos.checkpoint;
        for e in &batch {
            let field = |k: &str| e.data.get(k).and_then(|v| v.as_str());
            if let Some(target) = target_agent(e) {
                if pos.copied.take() != Some(e.event_id) {
                    let subject = self.bus.subjects.target_event(
                        e.tenant(),
                        e.stream.category(),
                        e.stream.id(),
                        &e.event_type,
                        target,
                        field("queue"),
                    );
                    let mut headers = event_headers(e, pos.last_sequence);
                    headers.insert(
                        "Nats-Msg-Id",
                        format!("{}:target_agent", e.event_id).as_str(),
                    );
                    headers.insert("Cc-Checkpoint", before.to_string().as_str());
                    headers.insert(COPY_HEADER, "target_agent");
                    let body = serde_json::to_vec(&e.data).expect("event data serializes");
                    let ack = self
                        .bus
                        .jetstream
                        .publish_with_headers(subject, headers, body.into())
                        .await
                        .map_err(|e| anyhow!("publish failed: {e}"))?;
                    acks.push(ack.into_future());
                    pos.last_sequence += 1;
                }
            }
            pos.copied = None;
            before = e.checkpoint();
            let subject = self.bus.subjects.event(
                e.tenant(),
                e.stream.category(),
                e.stream.id(),
                &e.event_type,
                field("agent"),
                field("queue"),
            );
            let body = serde_json::to_vec(&e.data).expect("event data serializes");
            let ack = self
                .bus
                .jetstream
                .publish_with_headers(subject, event_headers(e, pos.last_sequence), body.into())
                .await
                .map_err(|e| anyhow!("publish failed: {e}"))?;
            acks.push(ack.into_future());
            pos.last_sequence += 1;
        }
        try_join_all(acks)
            .await
            .map_err(|e| anyhow!("JetStream refused or did not ack: {e}"))?;
        drop(spans);
        if let Some(last) = batch.last() {
            pos.checkpoint = last.checkpoint();
        }
        Ok(pos)
    }

    /// Reads JetStream's last message to learn where relaying stopped.
    async fn resync(&self) -> Result<Position> {
        let mut stream = self
            .bus
            .jetstream
            .get_stream(self.bus.subjects.events_stream())
            .await
            .map_err(|e| anyhow!("cannot open the events stream: {e}"))?;
        let last_seq = stream
            .info()
            .await
            .map_err(|e| anyhow!("stream info: {e}"))?
            .state
            .last_sequence;
        if last_seq == 0 {
            return Ok(Position {
                checkpoint: Checkpoint::START,
                last_sequence: 0,
                copied: None,
            });
        }
        let msg = stream
            .get_raw_message(last_seq)
            .await
            .map_err(|e| anyhow!("cannot read the last relayed message: {e}"))?;
        let header = |name: &str| msg.headers.get(name).map(|v| v.as_str().to_string());
        let checkpoint: Checkpoint = header("Cc-Checkpoint")
            .ok_or_else(|| {
                anyhow!("the last message of the events stream has no Cc-Checkpoint header")
            })?
            .parse()
            .map_err(|e: String| anyhow!(e))?;
        let copy = header(COPY_HEADER).is_some();
        let last_id: Uuid = header("Nats-Msg-Id")
            .and_then(|s| s.split(':').next().and_then(|id| id.parse().ok()))
            .ok_or_else(|| anyhow!("the last message of the events stream has no Nats-Msg-Id"))?;
        if !self.store.contains(last_id).await.map_err(db)? {
            tracing::error!(%last_id, "the events stream holds an event the store does not know: is the stream from another database?");
        }
        tracing::info!(%checkpoint, sequence = last_seq, "relay resumes after JetStream's last message");
        Ok(Position {
            checkpoint,
            last_sequence: last_seq,
            // The last message is a copy: its event comes next, without the copy again.
            copied: copy.then_some(last_id),
        })
    }
}

fn db(e: sqlx::Error) -> anyhow::Error {
    anyhow::Error::new(e).context("database")
}
