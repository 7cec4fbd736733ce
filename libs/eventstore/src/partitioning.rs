//! The partition count of a store: chosen once (`CC_PARTITIONS`), the same for every replica.

use sqlx::PgPool;

/// Records `count` as the store's partition count if none is yet, else checks that it is the
/// recorded one: `Err` says both (a tenant's partition is the FNV-1a hash of its id modulo the
/// count, so another count would move tenants under their running leaders). A store spread
/// over partitions by an older build's hash (MD5) is refused too, naming how to set it again.
pub async fn settle(pool: &PgPool, count: u32) -> anyhow::Result<()> {
    sqlx::query("insert into es_partitioning (partitions) values ($1) on conflict do nothing")
        .bind(count as i32)
        .execute(pool)
        .await?;
    // With one partition the hash decides nothing: the row takes today's.
    sqlx::query(
        "update es_partitioning set hash = 'fnv1a' where partitions = 1 and hash <> 'fnv1a'",
    )
    .execute(pool)
    .await?;
    let (stored, hash): (i32, String) =
        sqlx::query_as("select partitions, hash from es_partitioning")
            .fetch_one(pool)
            .await?;
    if hash != "fnv1a" {
        anyhow::bail!(
            "this store's tenants were spread over {stored} partitions by an older build's hash ({hash}): \
             stop every replica, run `callcenter partitions set {stored}` (the partitions' leaders \
             then replay the store once), and start them again"
        );
    }
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
        "insert into es_partitioning (partitions, hash) values ($1, 'fnv1a')
         on conflict (only_row) do update set partitions = excluded.partitions, hash = excluded.hash, set_at = now()",
    )
    .bind(count as i32)
    .execute(pool)
    .await?;
    Ok(before.map(|b| b as u32))
}
