use sqlx::{PgPool, Postgres, Transaction};

use crate::Checkpoint;

const UPSERT: &str = "insert into es_checkpoints (name, xid, position, updated_at) values ($1, $2, $3, now()) \
     on conflict (name) do update set xid = excluded.xid, position = excluded.position, updated_at = now()";

/// Begins a transaction of a read model (a projection's tables with their checkpoint) that
/// commits without waiting for the disk (`synchronous_commit = off`). Safe for what can be
/// rebuilt from the store: a database crash loses at most the last fraction of a second of
/// such commits, checkpoint and rows together, and the reader reads those events again. It
/// keeps the read models' many small commits from queueing up on the WAL flushes that the
/// event appends (the records of truth, which do wait) need.
pub async fn begin_read_model(
    pool: &PgPool,
) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("set local synchronous_commit = off")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// Named checkpoints in `es_checkpoints`, for readers that keep no table of their own.
#[derive(Clone)]
pub struct CheckpointStore {
    pool: PgPool,
}

impl CheckpointStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub async fn load(&self, name: &str) -> Result<Checkpoint, sqlx::Error> {
        let row: Option<(i64, i64)> =
            sqlx::query_as("select xid, position from es_checkpoints where name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row
            .map(|(xid, position)| Checkpoint { xid, position })
            .unwrap_or(Checkpoint::START))
    }

    pub async fn save(&self, name: &str, cp: Checkpoint) -> Result<(), sqlx::Error> {
        sqlx::query(UPSERT)
            .bind(name)
            .bind(cp.xid)
            .bind(cp.position)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Saves a checkpoint inside the caller's transaction (with the rows it covers).
    pub async fn save_in(
        tx: &mut Transaction<'_, Postgres>,
        name: &str,
        cp: Checkpoint,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(UPSERT)
            .bind(name)
            .bind(cp.xid)
            .bind(cp.position)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}
