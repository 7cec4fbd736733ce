//! Who leads what, and how far behind the store it is: a component behind a lease tells its
//! [`Leader`] when it takes and loses the lease and which event it applied last; the runtime
//! turns that into `cc_lease_held{lease}` and `cc_consumer_lag_seconds{consumer}`.

use std::sync::{Arc, Mutex};

use cc_eventstore::Checkpoint;
use prometheus_client::metrics::gauge::Gauge;

/// One lease-holding component of a process (cheap to clone).
#[derive(Clone)]
pub struct Leader {
    name: &'static str,
    held: Gauge,
    applied: Arc<Mutex<Option<Checkpoint>>>,
}

/// Held while the lease is: dropping it says the lease is gone.
#[must_use]
pub struct Holding(Leader);

impl Drop for Holding {
    fn drop(&mut self) {
        self.0.held.set(0);
        *self.0.applied.lock().unwrap() = None;
    }
}

impl Leader {
    pub fn new(name: &'static str, held: Gauge) -> Self {
        Self {
            name,
            held,
            applied: Arc::default(),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The lease is taken: `cc_lease_held` is 1 until the returned guard drops.
    pub fn took(&self) -> Holding {
        self.held.set(1);
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
