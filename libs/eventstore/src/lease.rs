//! A lease: "exactly one of the replicas decides". A PostgreSQL session advisory lock held on a
//! connection of its own; when the holder dies its connection closes and another replica takes
//! the lease within seconds. Holders check the connection regularly and stop when it is gone.
//!
//! Each holder raises the lease's epoch (`es_lease_epochs`) as it takes it, and may fence its
//! appends with it ([`Lease::fence`], [`crate::EventStore::append_fenced`]): an append of a
//! holder that lost the lease (killed, its connection gone, but an append still on its way to
//! the database) can no longer commit once the next holder took over, so the next holder's
//! read of the store misses nothing its predecessor recorded.

use std::time::{Duration, Instant};

use sqlx::postgres::PgConnection;
use sqlx::Connection;

pub struct Lease {
    conn: PgConnection,
    last_check: Instant,
    fence: Fence,
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
        Ok(Some(Lease {
            conn,
            last_check: Instant::now(),
            fence: Fence {
                name: name.to_string(),
                epoch,
            },
        }))
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
                .fetch_optional(&mut self.conn)
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
        .execute(&mut self.conn)
        .await?;
        Ok(())
    }

    /// Fails when the lease's connection is gone (at most one round trip every 2 s).
    pub async fn check(&mut self) -> Result<(), sqlx::Error> {
        if self.last_check.elapsed() > Duration::from_secs(2) {
            sqlx::query("select 1").execute(&mut self.conn).await?;
            self.last_check = Instant::now();
        }
        Ok(())
    }
}
