//! A lease: "exactly one of the replicas decides". A PostgreSQL session advisory lock held on a
//! connection of its own; when the holder dies its connection closes and another replica takes
//! the lease within seconds. Holders check the connection regularly and stop when it is gone.

use std::time::{Duration, Instant};

use sqlx::postgres::PgConnection;
use sqlx::Connection;

pub struct Lease {
    conn: PgConnection,
    last_check: Instant,
}

impl Lease {
    /// Takes the lease `name` if nobody holds it; `None` when another process does.
    pub async fn try_acquire(database_url: &str, name: &str) -> Result<Option<Lease>, sqlx::Error> {
        let mut conn = PgConnection::connect(database_url).await?;
        let got: bool = sqlx::query_scalar("select pg_try_advisory_lock(hashtext($1))")
            .bind(name)
            .fetch_one(&mut conn)
            .await?;
        Ok(got.then(|| Lease {
            conn,
            last_check: Instant::now(),
        }))
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
