//! A lease: "exactly one of the replicas decides". A PostgreSQL session advisory lock held on a
//! connection of its own; when the holder dies its connection closes and another replica takes
//! the lease within seconds. A task of the lease checks the connection every second; holders
//! stop when it is gone ([`Lease::check`], or at once by racing their work with
//! [`Lease::lost`]: a holder busy in a decision, an append waiting for PostgreSQL, must not
//! go on believing it leads once it cannot).
//!
//! Each holder raises the lease's epoch (`es_lease_epochs`) as it takes it, and may fence its
//! appends with it ([`Lease::fence`], [`crate::EventStore::append_fenced`]): an append of a
//! holder that lost the lease (killed, its connection gone, but an append still on its way to
//! the database) can no longer commit once the next holder took over, so the next holder's
//! read of the store misses nothing its predecessor recorded.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgConnection;
use sqlx::Connection;
use tokio::sync::Mutex;
use tokio_util::sync::{CancellationToken, DropGuard};

/// How often the lease's task checks its connection.
const WATCH_EVERY: Duration = Duration::from_secs(1);

pub struct Lease {
    conn: Arc<Mutex<PgConnection>>,
    fence: Fence,
    lost: CancellationToken,
    /// Stops the watching task with the lease, so the connection closes with it.
    _watch: DropGuard,
}

/// A holder's right to append: the lease's name and the epoch it took the lease in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub name: String,
    pub epoch: i64,
}

impl Lease {
    /// Takes the lease `name` if nobody holds it; `None` when another process does.
    pub async fn try_acquire(database_url: &str, name: &str) -> Result<Option<Lease>, sqlx::Error> {
        let mut conn = PgConnection::connect(database_url).await?;
        let got: bool = sqlx::query_scalar("select pg_try_advisory_lock(hashtext($1))")
            .bind(name)
            .fetch_one(&mut conn)
            .await?;
        if !got {
            return Ok(None);
        }
        // Raising the epoch waits for every fenced append of an earlier holder still running
        // (each holds the row FOR SHARE); those that come later find the new epoch and fail.
        let epoch: i64 = sqlx::query_scalar(
            "insert into es_lease_epochs (name, epoch) values ($1, 1)
             on conflict (name) do update set epoch = es_lease_epochs.epoch + 1
             returning epoch",
        )
        .bind(name)
        .fetch_one(&mut conn)
        .await?;
        let conn = Arc::new(Mutex::new(conn));
        let (lost, done) = (CancellationToken::new(), CancellationToken::new());
        tokio::spawn(watch(conn.clone(), lost.clone(), done.clone()));
        Ok(Some(Lease {
            conn,
            fence: Fence {
                name: name.to_string(),
                epoch,
            },
            lost,
            _watch: done.drop_guard(),
        }))
    }

    /// Cancelled once the lease's connection is found gone: the holder must stop now.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// The fence of this holding, for [`crate::EventStore::append_fenced`].
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// The JetStream ack floor [`Lease::remember_floor`] kept for the durable consumer
    /// `consumer` (`None`: never kept).
    pub async fn remembered_floor(&mut self, consumer: &str) -> Result<Option<u64>, sqlx::Error> {
        let floor: Option<i64> =
            sqlx::query_scalar("select floor from es_consumer_floors where name = $1")
                .bind(consumer)
                .fetch_optional(&mut *self.conn.lock().await)
                .await?;
        Ok(floor.map(|f| f.max(0) as u64))
    }

    /// Keeps `floor` as the ack floor of the durable consumer `consumer`, while this holding
    /// is the lease's newest (a holder that lost the lease keeps nothing).
    pub async fn remember_floor(&mut self, consumer: &str, floor: u64) -> Result<(), sqlx::Error> {
        sqlx::query(
            "insert into es_consumer_floors (name, floor)
             select $1, $2 from es_lease_epochs where name = $3 and epoch = $4
             on conflict (name) do update set floor = excluded.floor, updated_at = now()",
        )
        .bind(consumer)
        .bind(floor as i64)
        .bind(&self.fence.name)
        .bind(self.fence.epoch)
        .execute(&mut *self.conn.lock().await)
        .await?;
        Ok(())
    }

    /// Fails when the lease's connection was found gone (no round trip: the lease's task
    /// checks it every second).
    pub async fn check(&mut self) -> Result<(), sqlx::Error> {
        if self.lost.is_cancelled() {
            return Err(sqlx::Error::Protocol(format!(
                "the connection of lease {} is gone",
                self.fence.name
            )));
        }
        Ok(())
    }
}

/// Checks the lease's connection every second until the lease is dropped (`done`); cancels
/// `lost` when it is gone.
async fn watch(conn: Arc<Mutex<PgConnection>>, lost: CancellationToken, done: CancellationToken) {
    loop {
        tokio::select! {
            _ = done.cancelled() => return,
            _ = tokio::time::sleep(WATCH_EVERY) => {}
        }
        let alive = tokio::select! {
            _ = done.cancelled() => return,
            r = async { sqlx::query("select 1").execute(&mut *conn.lock().await).await } => r.is_ok(),
        };
        if !alive {
            lost.cancel();
            return;
        }
    }
}
