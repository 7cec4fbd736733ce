//! One reader of the store per process, shared by the subscriptions that are caught up.
//!
//! Without it, every subscription of a process (router, call control, projections, relay)
//! runs the same query after every commit. With it, one task follows the store and
//! broadcasts each batch; a subscription reads the store itself only to catch up, then
//! attaches. No event is skipped: a subscription creates its receiver *before* the read that
//! finds it caught up, so every batch the tail sends afterwards reaches it, and every batch
//! the tail sent before was visible to that read (the store's safe-read rule makes every
//! reader see events in one order, each only once all earlier ones are visible).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use crate::{Checkpoint, EventStore, ReadFilter, RecordedEvent, Subscription};

/// Batches the tail keeps for a subscription that is slow to take them; one that falls
/// further behind reads the store itself until it has caught up again.
const CAPACITY: usize = 1024;

pub(crate) struct TailBatch {
    /// The reader's checkpoint before the batch: a subscription behind it missed events and
    /// reads the store itself (after the reader restarted further on, say).
    pub from: Checkpoint,
    /// The checkpoint after the batch's last event.
    pub to: Checkpoint,
    pub events: Vec<RecordedEvent>,
}

pub(crate) struct Tail {
    tx: broadcast::Sender<Arc<TailBatch>>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Where the reader is: the checkpoint after the last batch it sent (or where it started).
    at: Arc<std::sync::Mutex<Checkpoint>>,
}

impl Default for Tail {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(CAPACITY).0,
            task: Default::default(),
            at: Arc::new(std::sync::Mutex::new(Checkpoint::START)),
        }
    }
}

impl Tail {
    /// A receiver of every batch from now on, and where the reader was when it was taken (every
    /// batch up to there was sent before: a read of the store after this call sees their
    /// events). (Re)starts the reader, from `from`, polling every `fallback_poll` besides the
    /// commit notifications, when it is not running.
    pub(crate) fn attach(
        &self,
        store: &EventStore,
        from: Checkpoint,
        fallback_poll: Duration,
    ) -> (broadcast::Receiver<Arc<TailBatch>>, Checkpoint) {
        let rx = self.tx.subscribe();
        let mut task = self.task.lock().expect("tail lock");
        if task.as_ref().is_none_or(|t| t.is_finished()) {
            *self.at.lock().expect("tail position") = from;
            *task = Some(tokio::spawn(follow(
                store.clone(),
                from,
                fallback_poll,
                self.tx.clone(),
                self.at.clone(),
            )));
        }
        let at = *self.at.lock().expect("tail position");
        (rx, at)
    }
}

/// Reads the store and broadcasts each batch; stops when its pool is closed or nobody
/// listens any more (the next subscription to catch up starts another).
async fn follow(
    store: EventStore,
    from: Checkpoint,
    fallback_poll: Duration,
    tx: broadcast::Sender<Arc<TailBatch>>,
    at: Arc<std::sync::Mutex<Checkpoint>>,
) {
    let mut sub = loop {
        if store.pool().is_closed() {
            return;
        }
        match Subscription::new(store.clone(), ReadFilter::All, from).await {
            Ok(s) => break s.unshared().with_fallback_poll(fallback_poll),
            Err(e) => {
                tracing::warn!(error = %e, "the store's shared reader cannot start; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    loop {
        let from = sub.checkpoint();
        match sub.next_batch().await {
            Ok(events) => {
                let Some(to) = events.last().map(|e| e.checkpoint()) else {
                    continue;
                };
                if tx.send(Arc::new(TailBatch { from, to, events })).is_err() {
                    return;
                }
                *at.lock().expect("tail position") = to;
            }
            Err(_) if store.pool().is_closed() => return,
            Err(e) => {
                tracing::warn!(error = %e, "the store's shared reader failed to read; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}
