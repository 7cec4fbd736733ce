//! The PBX's facts, reported at least once and in order.
//!
//! A PBX adapter (the SIP gateway, the simulator) reports what happened on its phones as
//! JetStream messages. A fact JetStream did not acknowledge (NATS restarting, a node lost, the
//! stream unavailable) is not dropped: [`FactQueue`] sends it again, with the same
//! `Nats-Msg-Id` (the stream's duplicate window drops a second copy when the first was stored
//! but its acknowledgement lost), until it is taken, and no later fact leaves before it. One
//! fact is in flight at a time: a later fact sent while an earlier one is being retried could
//! be stored first, and a caller's `ChannelHungUp` stored before its `ChannelCreated` is a call
//! that never ends.
//!
//! The queue is in memory and bounded ([`FactQueue::start`]'s capacity): what an adapter holds
//! when its process ends, or beyond the bound, is lost (counted), and the product's consumers
//! reconcile with the PBX's `ListChannels` when they take over.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::HeaderMap;
use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::Instrument;

/// One fact to report: its subject, its headers (a `Nats-Msg-Id` is added when missing) and
/// its body. `span` is the span its publication is recorded in.
pub struct Fact {
    pub subject: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub span: tracing::Span,
}

/// The queue was full: the fact was not taken.
#[derive(Debug, thiserror::Error)]
#[error("{0} PBX facts are waiting for JetStream already; this one is dropped")]
pub struct QueueFull(pub usize);

#[derive(Default)]
struct Counts {
    queued: AtomicU64,
    reported: AtomicU64,
    resent: AtomicU64,
}

/// Reports facts to JetStream in the order they are queued, each until JetStream takes it.
/// Cheap to clone; the sending task ends once every clone is dropped and the queue is empty.
#[derive(Clone)]
pub struct FactQueue {
    tx: mpsc::Sender<Fact>,
    capacity: usize,
    counts: Arc<Counts>,
}

/// The waits between attempts: 50 ms, doubling up to 2 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((50u64 << attempt.min(6)).min(2000))
}

impl FactQueue {
    /// Starts the sending task. At most `capacity` facts wait at once.
    pub fn start(js: jetstream::Context, capacity: usize) -> Self {
        let (tx, mut rx) = mpsc::channel::<Fact>(capacity.max(1));
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        tokio::spawn(async move {
            while let Some(mut f) = rx.recv().await {
                if f.headers.get("Nats-Msg-Id").is_none() {
                    f.headers
                        .insert("Nats-Msg-Id", uuid::Uuid::now_v7().to_string().as_str());
                }
                let mut attempt = 0u32;
                loop {
                    let sent = async {
                        js.publish_with_headers(
                            f.subject.clone(),
                            f.headers.clone(),
                            f.body.clone(),
                        )
                        .await?
                        .await
                    }
                    .instrument(f.span.clone())
                    .await;
                    match sent {
                        Ok(_) => break,
                        Err(e) => {
                            if attempt.is_multiple_of(20) {
                                tracing::warn!(error = %e, subject = f.subject, attempt, waiting = rx.len(), "JetStream did not take a PBX fact; sending it again");
                            }
                            c.resent.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(backoff(attempt)).await;
                            attempt += 1;
                        }
                    }
                }
                if attempt > 0 {
                    tracing::info!(
                        subject = f.subject,
                        attempts = attempt + 1,
                        "PBX fact reported after retries"
                    );
                }
                c.reported.fetch_add(1, Ordering::Relaxed);
            }
        });
        Self {
            tx,
            capacity,
            counts,
        }
    }

    /// Queues a fact behind the ones already queued.
    pub fn send(&self, fact: Fact) -> Result<(), QueueFull> {
        self.tx
            .try_send(fact)
            .map_err(|_| QueueFull(self.capacity))?;
        self.counts.queued.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// How many facts are queued and not yet taken by JetStream.
    pub fn waiting(&self) -> u64 {
        self.counts.queued.load(Ordering::Relaxed) - self.counts.reported.load(Ordering::Relaxed)
    }

    /// How many times a fact was sent again.
    pub fn resent(&self) -> u64 {
        self.counts.resent.load(Ordering::Relaxed)
    }

    /// Waits (at most `within`) until every queued fact was taken; false if some still wait.
    pub async fn drained(&self, within: Duration) -> bool {
        let until = tokio::time::Instant::now() + within;
        while self.waiting() > 0 {
            if tokio::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_between_attempts_doubles_up_to_two_seconds() {
        assert_eq!(backoff(0), Duration::from_millis(50));
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(5), Duration::from_millis(1600));
        assert_eq!(backoff(6), Duration::from_millis(2000));
        assert_eq!(backoff(60), Duration::from_millis(2000));
    }
}
