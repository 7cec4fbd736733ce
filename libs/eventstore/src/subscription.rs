use std::time::Duration;

use sqlx::postgres::PgListener;

use crate::{Checkpoint, EventStore, ReadFilter, RecordedEvent};

/// Follows the store from a checkpoint: returns batches of new events in the global order,
/// waiting (without busy polling) when there are none.
///
/// NOTIFY is only a wake-up hint: after every wake the store is re-read with the safe rule of
/// [`EventStore::read_all`]. A slow fallback poll covers the case where a notification was
/// sent while an older transaction was still running (its events become readable when it
/// ends, which may send no notification if it wrote nothing to the store).
pub struct Subscription {
    store: EventStore,
    filter: ReadFilter,
    checkpoint: Checkpoint,
    listener: Option<PgListener>,
    batch_size: i64,
    fallback_poll: Duration,
    min_interval: Duration,
    last_batch: Option<std::time::Instant>,
    /// Whether, once caught up, it takes batches from the process's shared reader.
    shared: bool,
    attached: Option<tokio::sync::broadcast::Receiver<std::sync::Arc<crate::tail::TailBatch>>>,
    /// With [`Subscription::with_idle_progress`]: how long the checkpoint may move on past
    /// other events before an empty batch says so, and since when it has.
    idle_progress: Option<Duration>,
    moved_since: Option<std::time::Instant>,
    /// The last read, made with the listener's wake-ups drained just before it, returned less
    /// than a batch: it saw every commit notified until then, so the next read waits for a
    /// wake-up (one that came during the read is buffered) instead of reading again at once.
    read_to_end: bool,
}

impl Subscription {
    pub async fn new(
        store: EventStore,
        filter: ReadFilter,
        from: Checkpoint,
    ) -> Result<Self, sqlx::Error> {
        // The commit notifications' listener is connected when this subscription first waits
        // on its own: one that attaches to the shared reader never does, and a listener holds
        // a pooled connection (with a leader per partition, that was dozens of connections
        // held while they caught up, and the pool ran dry).
        Ok(Self {
            store,
            filter,
            checkpoint: from,
            listener: None,
            batch_size: 1000,
            fallback_poll: Duration::from_millis(500),
            min_interval: Duration::ZERO,
            last_batch: None,
            shared: true,
            attached: None,
            idle_progress: None,
            moved_since: None,
            read_to_end: false,
        })
    }

    /// For a filtered subscription whose reader records how far it has read (a partition's
    /// projection): once the checkpoint has moved past events of others for `after` with none
    /// of its own, [`Subscription::next_batch`] returns an empty batch, and
    /// [`Subscription::checkpoint`] says how far it has read. Without it a quiet partition's
    /// recorded position would stay at its own last event while the store moves on.
    pub fn with_idle_progress(mut self, after: Duration) -> Self {
        self.idle_progress = Some(after);
        self
    }

    pub fn with_batch_size(mut self, n: i64) -> Self {
        self.batch_size = n.max(1);
        self
    }

    pub fn with_fallback_poll(mut self, d: Duration) -> Self {
        self.fallback_poll = d;
        self
    }

    /// Returns batches at most this often: for followers that need not be quick (reports),
    /// fewer and larger reads and transactions under load.
    pub fn with_min_interval(mut self, d: Duration) -> Self {
        self.min_interval = d;
        self
    }

    /// The checkpoint after the last event returned.
    pub fn checkpoint(&self) -> Checkpoint {
        self.checkpoint
    }

    /// Moves the subscription (e.g. after the caller re-synchronised with its own store).
    pub fn seek(&mut self, to: Checkpoint) {
        self.checkpoint = to;
        self.attached = None;
        self.read_to_end = false;
    }

    /// Always reads the store itself (the shared reader's own subscription).
    pub(crate) fn unshared(mut self) -> Self {
        self.shared = false;
        self
    }

    fn wants(&self, e: &RecordedEvent) -> bool {
        e.checkpoint() > self.checkpoint
            && match &self.filter {
                ReadFilter::All => true,
                ReadFilter::Category(c) => e.stream.category() == c,
                ReadFilter::Partition(p) => p.contains(e.tenant()),
                ReadFilter::CategoryInPartition(c, p) => {
                    e.stream.category() == c && p.contains(e.tenant())
                }
            }
    }

    /// From the shared reader: the next batch with events for this subscription, with any
    /// that follow at once (up to the batch size). `None` once it fell behind (detached).
    async fn take_from_tail(&mut self) -> Option<Vec<RecordedEvent>> {
        use tokio::sync::broadcast::error::{RecvError, TryRecvError};
        let mut out = Vec::new();
        loop {
            let rx = self.attached.as_mut()?;
            let next = if out.is_empty() {
                // A quiet while: read the store once (which attaches again, restarting the
                // shared reader if it stopped). Moved on past others' events for a while:
                // an empty batch says so.
                let quiet = tokio::time::Instant::now() + self.fallback_poll * 4;
                let progress = self
                    .idle_progress
                    .zip(self.moved_since)
                    .map(|(after, since)| tokio::time::Instant::from_std(since + after));
                match tokio::time::timeout_at(progress.map_or(quiet, |p| p.min(quiet)), rx.recv())
                    .await
                {
                    Ok(Ok(b)) => Some(b),
                    Err(_) if progress.is_some_and(|p| p <= quiet) => {
                        self.moved_since = None;
                        return Some(out);
                    }
                    Ok(Err(RecvError::Lagged(_))) | Ok(Err(RecvError::Closed)) | Err(_) => None,
                }
            } else {
                match rx.try_recv() {
                    Ok(b) => Some(b),
                    Err(TryRecvError::Empty) => return Some(out),
                    Err(_) => None,
                }
            };
            let Some(batch) = next else {
                // Fell behind the shared reader: read the store again until caught up. What
                // was taken so far is returned first.
                self.attached = None;
                return (!out.is_empty()).then_some(out);
            };
            if batch.to <= self.checkpoint {
                continue;
            }
            if batch.from > self.checkpoint {
                // The reader is past events this subscription has not seen.
                self.attached = None;
                return (!out.is_empty()).then_some(out);
            }
            out.extend(batch.events.iter().filter(|e| self.wants(e)).cloned());
            self.checkpoint = batch.to;
            if out.is_empty() && self.idle_progress.is_some() && self.moved_since.is_none() {
                self.moved_since = Some(std::time::Instant::now());
            }
            if !out.is_empty() {
                self.moved_since = None;
            }
            if out.len() as i64 >= self.batch_size {
                return Some(out);
            }
        }
    }

    /// The next batch of at least one event. Waits when the subscription is caught up. With
    /// [`Subscription::with_idle_progress`], also an empty batch (only the checkpoint moved).
    pub async fn next_batch(&mut self) -> Result<Vec<RecordedEvent>, sqlx::Error> {
        if let Some(last) = self.last_batch {
            let rest = self.min_interval.saturating_sub(last.elapsed());
            if !rest.is_zero() {
                tokio::time::sleep(rest).await;
            }
        }
        let batch = self.next_batch_now().await?;
        if !self.min_interval.is_zero() {
            self.last_batch = Some(std::time::Instant::now());
        }
        Ok(batch)
    }

    async fn next_batch_now(&mut self) -> Result<Vec<RecordedEvent>, sqlx::Error> {
        while self.shared {
            if self.attached.is_some() {
                if let Some(batch) = self.take_from_tail().await {
                    return Ok(batch);
                }
                continue;
            }
            // The receiver first, then the read that finds us caught up: nothing falls between.
            let (rx, reader_at) =
                self.store
                    .tail
                    .attach(&self.store, self.checkpoint, self.fallback_poll);
            if let Some(batch) = self.poll().await? {
                return Ok(batch);
            }
            // Caught up: nothing of this filter up to where the shared reader was, so this
            // goes on from there. (A filtered subscription's checkpoint is its own last event;
            // left there, every batch of the reader would be past it, and it would read the
            // store again instead of attaching, batch after batch.)
            if reader_at > self.checkpoint {
                self.checkpoint = reader_at;
                if self.idle_progress.is_some() && self.moved_since.is_none() {
                    self.moved_since = Some(std::time::Instant::now());
                }
            }
            self.attached = Some(rx);
            // The shared reader listens for commits; a listener nobody reads would hold up
            // PostgreSQL's notification queue.
            self.listener = None;
        }
        loop {
            if self.listener.is_none() {
                // Listening before the read that finds nothing: no commit falls between.
                let mut listener = PgListener::connect_with(self.store.pool()).await?;
                listener.listen("es_events").await?;
                self.listener = Some(listener);
                self.read_to_end = false;
            }
            if !std::mem::take(&mut self.read_to_end) {
                if let Some(batch) = self.poll().await? {
                    // Under load this halves the store's reads: one per wake-up, not two.
                    self.read_to_end = (batch.len() as i64) < self.batch_size;
                    return Ok(batch);
                }
            }
            if self.wait().await {
                // Something committed, but an older transaction may still hold it back from
                // the safe read: re-read a few times quickly before waiting again.
                for delay_ms in [2, 5, 10, 20, 40, 80, 160, 320, 640, 1280] {
                    if let Some(batch) = self.poll().await? {
                        self.read_to_end = (batch.len() as i64) < self.batch_size;
                        return Ok(batch);
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
                }
            }
        }
    }

    /// Hands the subscription to a task of its own that reads ahead (up to `capacity`
    /// batches). Use the returned [`Feed`] where a `select!` waits on other sources too:
    /// dropping [`Subscription::next_batch`] half-way abandons a query, and the pool then
    /// closes that connection and opens another (under load, hundreds per second).
    pub fn into_feed(mut self, capacity: usize) -> Feed {
        let (tx, rx) = tokio::sync::mpsc::channel(capacity.max(1));
        let task = tokio::spawn(async move {
            loop {
                let batch = tokio::select! {
                    _ = tx.closed() => return,
                    b = self.next_batch() => b,
                };
                let failed = batch.is_err();
                if tx.send(batch).await.is_err() || failed {
                    return;
                }
            }
        });
        Feed { rx, task }
    }

    /// One read without waiting: `None` when caught up.
    pub async fn poll(&mut self) -> Result<Option<Vec<RecordedEvent>>, sqlx::Error> {
        // Drain wake-ups that arrived before this read: the read covers them.
        if let Some(l) = self.listener.as_mut() {
            while l.next_buffered().is_some() {}
        }
        let batch = self
            .store
            .read_all(&self.filter, self.checkpoint, self.batch_size)
            .await?;
        Ok(batch.last().map(|last| last.checkpoint()).map(|cp| {
            self.checkpoint = cp;
            batch
        }))
    }

    /// Waits for a notification (`true`) or the fallback poll (`false`).
    async fn wait(&mut self) -> bool {
        let fallback = tokio::time::sleep(self.fallback_poll);
        match self.listener.as_mut() {
            Some(l) => {
                tokio::select! {
                    r = l.recv() => match r {
                        Ok(_) => true,
                        Err(e) => {
                            tracing::warn!(error = %e, "event store notification listener failed; listening again");
                            self.listener = None;
                            false
                        }
                    },
                    _ = fallback => false,
                }
            }
            None => {
                fallback.await;
                false
            }
        }
    }
}

/// A [`Subscription`] read by its own task: [`Feed::next_batch`] can be dropped and called
/// again at no cost (it only receives from a channel). Stops the task when dropped.
pub struct Feed {
    rx: tokio::sync::mpsc::Receiver<Result<Vec<RecordedEvent>, sqlx::Error>>,
    task: tokio::task::JoinHandle<()>,
}

impl Feed {
    /// The next batch of at least one event, in store order; an error ends the feed.
    pub async fn next_batch(&mut self) -> Result<Vec<RecordedEvent>, sqlx::Error> {
        self.rx.recv().await.unwrap_or(Err(sqlx::Error::PoolClosed))
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.task.abort();
    }
}
