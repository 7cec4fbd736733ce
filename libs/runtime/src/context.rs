use cc_bus::Bus;
use cc_eventstore::EventStore;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{Config, Metrics, Readiness};

/// What a service needs to run. Cheap to clone; every service of a process shares one.
#[derive(Clone)]
pub struct Context {
    pub config: Config,
    pub pool: PgPool,
    pub store: EventStore,
    pub bus: Bus,
    /// Cancelled on shutdown: stop taking new work, finish what is in flight, return.
    pub cancel: CancellationToken,
    pub readiness: Readiness,
    pub metrics: Metrics,
}
