//! Snapshots of a folded state (`es_snapshots`): the state a reader built from the store, with
//! the [`Checkpoint`] after the last event it folded, so that the next leader loads it and reads
//! only the events after it instead of the whole history.
//!
//! A snapshot is a cache, never a record: [`Snapshots::load`] answers `None` (a full replay)
//! for a missing row, one written in another format (the writer's `format`: a new build whose
//! state has another shape or meaning names a new one) or one that does not decode, and says
//! why in the log. Deleting every row is always safe.

use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::PgPool;

use crate::{Checkpoint, EventStore, ReadFilter, RecordedEvent, Subscription};

/// When [`Snapshots::keep`] saves by default: after this many events folded since the last
/// save...
pub const SNAPSHOT_EVERY_EVENTS: u64 = 50_000;
/// ...or this long after the last save, when anything was folded since.
pub const SNAPSHOT_EVERY: Duration = Duration::from_secs(60);

/// A state read back with the position it covers.
#[derive(Debug)]
pub struct Snapshot<T> {
    pub state: T,
    pub checkpoint: Checkpoint,
    /// Events folded into `state` since the first event of the store.
    pub events: i64,
    pub taken_at: chrono::DateTime<chrono::Utc>,
}

/// The snapshots of one state, `name` (e.g. `queue-router`), in one `format`.
#[derive(Clone)]
pub struct Snapshots {
    pool: PgPool,
    name: String,
    format: String,
    every_events: u64,
    every: Duration,
}

impl Snapshots {
    pub fn new(pool: PgPool, name: &str, format: &str) -> Self {
        Snapshots {
            pool,
            name: name.to_string(),
            format: format.to_string(),
            every_events: SNAPSHOT_EVERY_EVENTS,
            every: SNAPSHOT_EVERY,
        }
    }

    /// Saves after `events` events folded since the last save, or `every` after it.
    pub fn every(mut self, events: u64, every: Duration) -> Self {
        self.every_events = events.max(1);
        self.every = every;
        self
    }

    /// Whether a state that folded `since` events in `elapsed` since its last save is due.
    pub fn due(&self, since: u64, elapsed: Duration) -> bool {
        since >= self.every_events || (since > 0 && elapsed >= self.every)
    }

    /// The newest snapshot, or `None` when there is none this build can use.
    pub async fn load<T: DeserializeOwned>(&self) -> Result<Option<Snapshot<T>>, sqlx::Error> {
        type Row = (
            String,
            i64,
            i64,
            i64,
            chrono::DateTime<chrono::Utc>,
            Vec<u8>,
        );
        let row: Option<Row> = sqlx::query_as(
            "select format, xid, position, events, taken_at, state from es_snapshots where name = $1",
        )
        .bind(&self.name)
        .fetch_optional(&self.pool)
        .await?;
        let Some((format, xid, position, events, taken_at, state)) = row else {
            return Ok(None);
        };
        if format != self.format {
            tracing::info!(
                snapshot = %self.name,
                stored = %format,
                wanted = %self.format,
                "the snapshot was written in another format; replaying the store instead"
            );
            return Ok(None);
        }
        match serde_json::from_slice(&state) {
            Ok(state) => Ok(Some(Snapshot {
                state,
                checkpoint: Checkpoint { xid, position },
                events,
                taken_at,
            })),
            Err(error) => {
                tracing::warn!(
                    snapshot = %self.name,
                    %error,
                    "the snapshot does not decode; replaying the store instead"
                );
                Ok(None)
            }
        }
    }

    /// Replaces the snapshot with `state`, which covers the store up to `checkpoint`, unless the
    /// stored one (of this format) covers more: a holder that lost its lease and saves late
    /// never takes the newer one's place. Returns the size written, in bytes (0: kept the
    /// newer one).
    pub async fn save<T: Serialize>(
        &self,
        state: &T,
        checkpoint: Checkpoint,
        events: i64,
    ) -> Result<usize, SaveError> {
        let bytes = serde_json::to_vec(state).map_err(SaveError::Encode)?;
        let done = sqlx::query(
            "insert into es_snapshots (name, format, xid, position, events, taken_at, state)
             values ($1, $2, $3, $4, $5, now(), $6)
             on conflict (name) do update set format = excluded.format, xid = excluded.xid,
               position = excluded.position, events = excluded.events,
               taken_at = excluded.taken_at, state = excluded.state
             where es_snapshots.format <> excluded.format
               or (es_snapshots.xid, es_snapshots.position) <= (excluded.xid, excluded.position)",
        )
        .bind(&self.name)
        .bind(&self.format)
        .bind(checkpoint.xid)
        .bind(checkpoint.position)
        .bind(events)
        .bind(&bytes)
        .execute(&self.pool)
        .await
        .map_err(SaveError::Store)?;
        Ok(if done.rows_affected() == 0 {
            0
        } else {
            bytes.len()
        })
    }

    /// Forgets the snapshot (the next take-over replays the store).
    pub async fn clear(&self) -> Result<(), sqlx::Error> {
        sqlx::query("delete from es_snapshots where name = $1")
            .bind(&self.name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

impl Snapshots {
    /// Keeps the snapshots of a leader's state: `state` covers the store (read through
    /// `filter`) up to `from`, with `events` events folded; saved at once when `fresh` (it
    /// folded events no snapshot holds yet), then folded on with `fold` as the store grows and
    /// saved every so many events or seconds ([`Snapshots::every`]), until `stop`. Its own
    /// copy, its own reader: the leader's live state runs ahead of the store (its decisions are
    /// applied before they are stored), a snapshot holds what the stored events fold to. A
    /// failed save is logged and tried again later: snapshots only make take-overs faster.
    #[allow(clippy::too_many_arguments)]
    pub async fn keep<T, F>(
        self,
        store: EventStore,
        filter: ReadFilter,
        mut state: T,
        from: Checkpoint,
        mut events: i64,
        fresh: bool,
        mut fold: F,
        stop: impl std::future::Future<Output = ()>,
    ) where
        T: Serialize,
        F: FnMut(&mut T, &RecordedEvent),
    {
        let mut due = fresh;
        let mut since = 0u64;
        let mut last = Instant::now();
        let mut checkpoint = from;
        let sub = match Subscription::new(store, filter, from).await {
            Ok(s) => s.with_batch_size(2000),
            Err(error) => {
                tracing::warn!(snapshot = %self.name, %error, "cannot follow the store for snapshots");
                return;
            }
        };
        let mut feed = sub.into_feed(2);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tokio::pin!(stop);
        loop {
            if due || self.due(since, last.elapsed()) {
                let started = Instant::now();
                match self.save(&state, checkpoint, events).await {
                    Ok(bytes) => {
                        tracing::info!(
                            snapshot = %self.name,
                            events,
                            bytes,
                            took_ms = started.elapsed().as_millis() as u64,
                            "snapshot saved"
                        );
                        since = 0;
                        due = false;
                    }
                    Err(error) => {
                        tracing::warn!(snapshot = %self.name, %error, "cannot save a snapshot")
                    }
                }
                last = Instant::now();
            }
            tokio::select! {
                _ = &mut stop => return,
                b = feed.next_batch() => match b {
                    Ok(batch) => {
                        for e in &batch {
                            fold(&mut state, e);
                            checkpoint = e.checkpoint();
                        }
                        since += batch.len() as u64;
                        events += batch.len() as i64;
                    }
                    Err(error) => {
                        tracing::warn!(snapshot = %self.name, %error, "snapshots stopped following the store");
                        return;
                    }
                },
                _ = tick.tick() => {}
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error("the state cannot be encoded: {0}")]
    Encode(serde_json::Error),
    #[error("the snapshot cannot be stored: {0}")]
    Store(sqlx::Error),
}
