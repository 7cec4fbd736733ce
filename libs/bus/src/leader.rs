//! Who leads what, and how far behind the store it is: a component behind a lease tells its
//! [`Leader`] when it takes and loses the lease and which event it applied last; the runtime
//! turns that into `cc_lease_held{lease}` and `cc_consumer_lag_seconds{consumer}`.

use std::sync::{Arc, Mutex};

use cc_eventstore::Checkpoint;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::atomic::AtomicU64;

/// One lease-holding component of a process (cheap to clone).
#[derive(Clone)]
pub struct Leader {
    name: &'static str,
    held: Gauge,
    applied: Arc<Mutex<Option<Checkpoint>>>,
    takeover: Option<(Gauge<f64, AtomicU64>, Gauge)>,
    epoch: Option<Gauge>,
}

/// Held while the lease is: dropping it says the lease is gone.
#[must_use]
pub struct Holding(Leader);

impl Drop for Holding {
    fn drop(&mut self) {
        self.0.held.set(0);
        if let Some(e) = &self.0.epoch {
            e.set(0);
        }
        *self.0.applied.lock().unwrap() = None;
    }
}

impl Leader {
    pub fn new(name: &'static str, held: Gauge) -> Self {
        Self {
            name,
            held,
            applied: Arc::default(),
            takeover: None,
            epoch: None,
        }
    }

    /// With the gauge of the lease's epoch this process holds it in (`cc_lease_epoch`).
    pub fn with_epoch(mut self, epoch: Gauge) -> Self {
        self.epoch = Some(epoch);
        self
    }

    /// With the take-over gauges (`cc_takeover_seconds`, `cc_takeover_events`) of this lease.
    pub fn with_takeover(mut self, seconds: Gauge<f64, AtomicU64>, events: Gauge) -> Self {
        self.takeover = Some((seconds, events));
        self
    }

    /// The component caught up with the store after taking the lease: it took `took` (from the
    /// lease to caught up: a snapshot read, `replayed` events after it).
    pub fn caught_up(&self, replayed: i64, took: std::time::Duration) {
        if let Some((seconds, events)) = &self.takeover {
            seconds.set(took.as_secs_f64());
            events.set(replayed);
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The lease is taken, in `epoch` (see [`cc_eventstore::Lease::fence`]): `cc_lease_held` is
    /// 1 and `cc_lease_epoch` the epoch until the returned guard drops.
    pub fn took(&self, epoch: i64) -> Holding {
        self.held.set(1);
        if let Some(e) = &self.epoch {
            e.set(epoch);
        }
        Holding(self.clone())
    }

    /// The last event applied (for the lag).
    pub fn applied(&self, checkpoint: Checkpoint) {
        *self.applied.lock().unwrap() = Some(checkpoint);
    }

    /// Where the component stands while it leads and reads the store; `None` otherwise.
    pub fn position(&self) -> Option<Checkpoint> {
        if self.held.get() == 0 {
            return None;
        }
        *self.applied.lock().unwrap()
    }
}
