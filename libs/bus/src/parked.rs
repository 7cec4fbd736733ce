//! Events a consumer cannot apply: parked, never retried forever, never skipped silently.
//!
//! A stored event that a consumer cannot apply (it does not decode, or applying it fails for a
//! reason in its data, such as a constraint) would stop that consumer for every tenant if it
//! were retried: the next read meets it again. Each consumer instead *parks* it with
//! [`park`]: one row in `bus_parked` (consumer, position, stream, version, type, reason,
//! error), one error log line naming its position, and `cc_events_parked_total{consumer,
//! reason}`; then it goes on with the next event. The event stays in the store, so a rebuild
//! or a new build that knows it reads it again.
//!
//! A JetStream message that does not parse (a PBX fact of a kind this build does not know, or
//! broken) is [`unreadable`]: logged with its stream sequence, counted in
//! `cc_messages_unreadable_total{consumer}`, and acknowledged (JetStream keeps it).
//!
//! What each consumer decides is in `docs/operations.md` ("What each consumer does with an
//! event it cannot apply").

use std::sync::LazyLock;

use cc_eventstore::RecordedEvent;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// Why an event was parked (`bus_parked.reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// It does not decode: a type this build does not know, or data that does not fit it.
    Undecodable,
    /// Applying it failed for a reason in its data (a constraint, a value out of range).
    Refused,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Undecodable => "undecodable",
            Reason::Refused => "refused",
        }
    }
}

/// Counters by label set (consumer, and reason for parked events).
pub type Counts = Family<Vec<(String, String)>, Counter>;

static PARKED: LazyLock<Counts> = LazyLock::new(Counts::default);
static UNREADABLE: LazyLock<Counts> = LazyLock::new(Counts::default);

/// The process's count of events parked, by consumer and reason (`events_parked`): one per
/// event and consumer (parking the same event again, as a re-reading consumer does, is not
/// counted again).
pub fn parked_events() -> Counts {
    PARKED.clone()
}

/// The process's count of JetStream messages a consumer could not parse and skipped, by
/// consumer (`messages_unreadable`).
pub fn unreadable_messages() -> Counts {
    UNREADABLE.clone()
}

/// Parks `event` for `consumer`: records it in `bus_parked` (once: a consumer that reads the
/// store again parks it again without a second row). Run it in the consumer's own transaction
/// where it has one, so the record and the checkpoint past the event commit together, and call
/// [`Parked::committed`] on what it returns once that transaction has committed (a rolled back
/// and redone transaction would otherwise count one event twice); [`park_now`] does both
/// outside a transaction. `None`: it was parked before.
pub async fn park<'e, E: sqlx::PgExecutor<'e>>(
    executor: E,
    consumer: &str,
    event: &RecordedEvent,
    reason: Reason,
    error: &str,
) -> Result<Option<Parked>, sqlx::Error> {
    let inserted = sqlx::query(
        "insert into bus_parked (consumer, position, xid, event_id, tenant, stream, version, event_type, reason, error)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) on conflict (consumer, position) do nothing",
    )
    .bind(consumer)
    .bind(event.position)
    .bind(event.xid)
    .bind(event.event_id)
    .bind(event.tenant())
    .bind(event.stream.key())
    .bind(event.version)
    .bind(&event.event_type)
    .bind(reason.as_str())
    .bind(error)
    .execute(executor)
    .await?
    .rows_affected()
        == 1;
    Ok(inserted.then(|| Parked {
        consumer: consumer.to_string(),
        stream: event.stream.to_string(),
        position: event.position,
        version: event.version,
        event_type: event.event_type.clone(),
        reason,
        error: error.to_string(),
    }))
}

/// [`park`] outside a transaction (the row is written at once), logged and counted.
pub async fn park_now(
    pool: &sqlx::PgPool,
    consumer: &str,
    event: &RecordedEvent,
    reason: Reason,
    error: &str,
) -> Result<(), sqlx::Error> {
    if let Some(p) = park(pool, consumer, event, reason, error).await? {
        p.committed();
    }
    Ok(())
}

/// An event just recorded in `bus_parked`, to log and count once that is committed.
#[must_use = "log and count it once its transaction has committed: `committed()`"]
#[derive(Debug)]
pub struct Parked {
    consumer: String,
    stream: String,
    position: i64,
    version: i64,
    event_type: String,
    reason: Reason,
    error: String,
}

impl Parked {
    /// Logs the parked event at error level with its position, and counts it.
    pub fn committed(self) {
        tracing::error!(
            consumer = %self.consumer,
            stream = %self.stream,
            position = self.position,
            version = self.version,
            event_type = %self.event_type,
            reason = self.reason.as_str(),
            error = %self.error,
            "an event this consumer cannot apply is parked (bus_parked) and skipped",
        );
        PARKED
            .get_or_create(&vec![
                ("consumer".to_string(), self.consumer),
                ("reason".to_string(), self.reason.as_str().to_string()),
            ])
            .inc();
    }
}

/// Reports a JetStream message that `consumer` cannot parse and skips (the caller acks it):
/// an error log line with its subject and stream sequence, and the count.
pub fn unreadable(
    consumer: &str,
    msg: &async_nats::jetstream::Message,
    error: &dyn std::fmt::Display,
) {
    let stream_sequence = msg.info().ok().map(|i| i.stream_sequence);
    tracing::error!(
        consumer,
        subject = %msg.subject,
        stream_sequence,
        %error,
        "a message this consumer cannot read is skipped (acknowledged; JetStream keeps it)",
    );
    UNREADABLE
        .get_or_create(&vec![("consumer".to_string(), consumer.to_string())])
        .inc();
}

/// Whether a failure to apply an event lies in the event's data (SQLSTATE class 22, data
/// exception, or 23, integrity constraint violation): applying it again fails again, so it is
/// parked. Anything else (a lost connection, a deadlock, a timeout) is transient: the consumer
/// stops and starts over from its checkpoint, as before.
pub fn is_data_error(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<sqlx::Error>(),
            Some(sqlx::Error::Database(db))
                if db.code().is_some_and(|c| c.starts_with("22") || c.starts_with("23"))
        )
    })
}

/// One row of `bus_parked`, as an operator lists it (`callcenter parked list`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ParkedEvent {
    pub consumer: String,
    /// The event's position in the store (with `consumer`, what identifies the row).
    pub position: i64,
    pub tenant: String,
    pub stream: String,
    pub version: i64,
    pub event_type: String,
    pub event_id: uuid::Uuid,
    /// `undecodable` or `refused` (see [`Reason`]).
    pub reason: String,
    pub error: String,
    pub parked_at: chrono::DateTime<chrono::Utc>,
}

/// The parked events, oldest position first, of one consumer and/or one tenant (`None`: all).
pub async fn list(
    pool: &sqlx::PgPool,
    consumer: Option<&str>,
    tenant: Option<&str>,
) -> Result<Vec<ParkedEvent>, sqlx::Error> {
    use sqlx::Row;
    let rows = sqlx::query(
        "select consumer, position, tenant, stream, version, event_type, event_id, reason, error, parked_at
           from bus_parked
          where ($1::text is null or consumer = $1) and ($2::text is null or tenant = $2)
          order by position, consumer",
    )
    .bind(consumer)
    .bind(tenant)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| ParkedEvent {
            consumer: r.get(0),
            position: r.get(1),
            tenant: r.get(2),
            stream: r.get(3),
            version: r.get(4),
            event_type: r.get(5),
            event_id: r.get(6),
            reason: r.get(7),
            error: r.get(8),
            parked_at: r.get(9),
        })
        .collect())
}

/// Which of a consumer's parked events to clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clearing {
    /// The one at this position.
    At(i64),
    /// All of them.
    All,
}

/// Deletes parked events of `consumer` from `bus_parked` (the events stay in the store);
/// returns how many rows were deleted.
pub async fn clear(
    pool: &sqlx::PgPool,
    consumer: &str,
    which: Clearing,
) -> Result<u64, sqlx::Error> {
    let position = match which {
        Clearing::At(p) => Some(p),
        Clearing::All => None,
    };
    Ok(sqlx::query(
        "delete from bus_parked where consumer = $1 and ($2::bigint is null or position = $2)",
    )
    .bind(consumer)
    .bind(position)
    .execute(pool)
    .await?
    .rows_affected())
}

/// The consumers that have parked events, by name.
pub async fn consumers(pool: &sqlx::PgPool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("select distinct consumer from bus_parked order by consumer")
        .fetch_all(pool)
        .await
}
