//! What the auth service deletes, and when: portal sessions that expired or were ended,
//! throttle counts whose window is over, and known clients not seen for
//! [`throttle::KNOWN_CLIENT_DAYS`]. Each table is pruned in bounded batches (short
//! transactions, no long locks on a busy table); every replica may prune, deleting a row twice
//! is impossible.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::throttle;

/// Rows deleted per statement.
pub const BATCH: i64 = 1000;

/// The deletions, each of at most `$1` rows. Sessions keep no value once unusable: their
/// events (`portal_session-*`) are the record.
const PRUNE: [(&str, &str); 3] = [
    (
        "auth_sessions",
        "delete from auth_sessions where token_hash in (
           select token_hash from auth_sessions
            where expires_at < now() or revoked_at is not null limit $1)",
    ),
    (
        "auth_throttle",
        "delete from auth_throttle where (tenant, key) in (
           select tenant, key from auth_throttle
            where first_failure_at < now() - make_interval(mins => $2) limit $1)",
    ),
    (
        "auth_known_clients",
        "delete from auth_known_clients where (tenant, account, client) in (
           select tenant, account, client from auth_known_clients
            where last_success_at < now() - make_interval(days => $3) limit $1)",
    ),
];

/// Deletes everything due, batch by batch; returns the rows deleted per table.
pub async fn prune(pool: &PgPool) -> Result<Vec<(&'static str, u64)>, sqlx::Error> {
    let mut out = Vec::new();
    for (table, sql) in PRUNE {
        let mut total = 0;
        loop {
            let n = sqlx::query(sql)
                .bind(BATCH)
                .bind(throttle::WINDOW_MINUTES as i32)
                .bind(throttle::KNOWN_CLIENT_DAYS as i32)
                .execute(pool)
                .await?
                .rows_affected();
            total += n;
            if n < BATCH as u64 {
                break;
            }
            // Let sign-ins through between batches.
            tokio::task::yield_now().await;
        }
        out.push((table, total));
    }
    Ok(out)
}

/// Prunes at start and then every `every` until `cancel`. A failure is logged and retried at
/// the next round: pruning is housekeeping, never a reason to stop signing people in.
pub async fn run(pool: PgPool, every: Duration, cancel: CancellationToken) {
    loop {
        match prune(&pool).await {
            Ok(counts) => {
                for (table, n) in counts.into_iter().filter(|(_, n)| *n > 0) {
                    tracing::info!(table, rows = n, "pruned");
                }
            }
            Err(e) => tracing::warn!(error = %e, "pruning the auth tables failed; retrying later"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}
