//! The partition count of a store: chosen once (`CC_PARTITIONS`), the same for every replica.

use sqlx::PgPool;

/// Records `count` as the store's partition count if none is yet, else checks that it is the
/// recorded one: `Err` says both (a tenant's partition is the MD5 of its id modulo the count,
/// so another count would move tenants under their running leaders).
pub async fn settle(pool: &PgPool, count: u32) -> anyhow::Result<()> {
    sqlx::query("insert into es_partitioning (partitions) values ($1) on conflict do nothing")
        .bind(count as i32)
        .execute(pool)
        .await?;
    let stored: i32 = sqlx::query_scalar("select partitions from es_partitioning")
        .fetch_one(pool)
        .await?;
    if stored as u32 != count {
        anyhow::bail!(
            "CC_PARTITIONS is {count}, but this store's tenants are spread over {stored} partitions: \
             start every replica with CC_PARTITIONS={stored} (changing the count is `callcenter \
             partitions set <n>`, with every replica stopped)"
        );
    }
    Ok(())
}

/// Changes the recorded count (every replica stopped: the leaders' snapshots and consumers of
/// the old partitions are left behind, and the new partitions' leaders replay the store).
pub async fn set(pool: &PgPool, count: u32) -> anyhow::Result<Option<u32>> {
    let before: Option<i32> = sqlx::query_scalar("select partitions from es_partitioning")
        .fetch_optional(pool)
        .await?;
    sqlx::query(
        "insert into es_partitioning (partitions) values ($1)
         on conflict (only_row) do update set partitions = excluded.partitions, set_at = now()",
    )
    .bind(count as i32)
    .execute(pool)
    .await?;
    Ok(before.map(|b| b as u32))
}
