//! Sign-in throttling. Failures are counted per login (agent number or username, whether it
//! exists or not, so the answer never reveals which) and per client address. From the 3rd
//! failure in the window each answer is slowed down; from the 5th the key is locked for a while.

use chrono::{DateTime, Duration, Utc};
use sqlx::PgPool;

pub const WINDOW_MINUTES: i64 = 15;
pub const SLOW_AFTER: i32 = 3;
pub const LOCK_AFTER: i32 = 5;
pub const LOCK_SECONDS: i64 = 300;
/// The address key locks later: several agents may share one office address.
pub const ADDRESS_FACTOR: i32 = 4;

/// The longest lock among `keys`, if any is locked now.
pub async fn locked_until(
    pool: &PgPool,
    tenant: &str,
    keys: &[String],
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar(
        "select max(locked_until) from auth_throttle where tenant = $1 and key = any($2) and locked_until > now()",
    )
    .bind(tenant)
    .bind(keys)
    .fetch_one(pool)
    .await
}

/// Records a failure for each key; returns the highest failure count and the delay to apply.
pub async fn record_failure(
    pool: &PgPool,
    tenant: &str,
    keys: &[(String, i32)],
) -> Result<std::time::Duration, sqlx::Error> {
    let mut worst = 0;
    for (key, lock_after) in keys {
        let failures: i32 = sqlx::query_scalar(
            "insert into auth_throttle (tenant, key, failures, first_failure_at) values ($1, $2, 1, now())
             on conflict (tenant, key) do update set
               failures = case when auth_throttle.first_failure_at < now() - make_interval(mins => $3)
                               then 1 else auth_throttle.failures + 1 end,
               first_failure_at = case when auth_throttle.first_failure_at < now() - make_interval(mins => $3)
                               then now() else auth_throttle.first_failure_at end
             returning failures",
        )
        .bind(tenant)
        .bind(key)
        .bind(WINDOW_MINUTES as i32)
        .fetch_one(pool)
        .await?;
        if failures >= *lock_after {
            sqlx::query(
                "update auth_throttle set locked_until = now() + $3 where tenant = $1 and key = $2",
            )
            .bind(tenant)
            .bind(key)
            .bind(Duration::seconds(LOCK_SECONDS))
            .execute(pool)
            .await?;
        }
        worst = worst.max(failures * LOCK_AFTER / (*lock_after).max(1));
    }
    let extra = (worst - SLOW_AFTER + 1).max(0) as u64;
    Ok(std::time::Duration::from_millis((extra * 500).min(2000)))
}

pub async fn clear(pool: &PgPool, tenant: &str, key: &str) -> Result<(), sqlx::Error> {
    sqlx::query("delete from auth_throttle where tenant = $1 and key = $2")
        .bind(tenant)
        .bind(key)
        .execute(pool)
        .await?;
    Ok(())
}
