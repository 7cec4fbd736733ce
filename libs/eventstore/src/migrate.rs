use sqlx::PgPool;

/// One schema change of one component, applied once, in version order.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Applies the migrations of `component` that are not applied yet, under an advisory lock so
/// several processes starting at once apply each migration once.
pub async fn migrate(
    pool: &PgPool,
    component: &str,
    migrations: &[Migration],
) -> Result<usize, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("select pg_advisory_xact_lock(7207001)")
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql(
        "create table if not exists cc_migrations (component text not null, version integer not null, \
         name text not null, applied_at timestamptz not null default now(), primary key (component, version))",
    )
    .execute(&mut *tx)
    .await?;
    let applied: Vec<i32> =
        sqlx::query_scalar("select version from cc_migrations where component = $1")
            .bind(component)
            .fetch_all(&mut *tx)
            .await?;
    let mut count = 0;
    let mut pending: Vec<&Migration> = migrations
        .iter()
        .filter(|m| !applied.contains(&m.version))
        .collect();
    pending.sort_by_key(|m| m.version);
    for m in pending {
        tracing::info!(
            component,
            version = m.version,
            name = m.name,
            "applying migration"
        );
        sqlx::raw_sql(m.sql).execute(&mut *tx).await?;
        sqlx::query("insert into cc_migrations (component, version, name) values ($1, $2, $3)")
            .bind(component)
            .bind(m.version)
            .bind(m.name)
            .execute(&mut *tx)
            .await?;
        count += 1;
    }
    tx.commit().await?;
    Ok(count)
}
