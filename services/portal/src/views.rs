//! Reads of the portal read model (written by the projection service).

use cc_contracts::views::AgentView;
use sqlx::PgPool;

/// Read-your-writes for the API: waits (at most `within`) until the portal read model holds
/// every event committed before the call, so a `GET` right after a command's reply shows its
/// effect. Gives up after `within` (the projection may be behind or restarting): the caller
/// then reads what the model holds.
/// With `CC_PARTITIONS` above 1 it waits on the tenant's partition's checkpoint (`portal/p3`),
/// which that partition's projection moves past other partitions' events too.
pub async fn caught_up(
    ctx: &cc_runtime::Context,
    tenant: &str,
    within: std::time::Duration,
) -> Result<(), sqlx::Error> {
    let pool = &ctx.pool;
    let name = cc_contracts::views::portal_checkpoint(tenant, ctx.config.partitions);
    let head: Option<(i64, i64)> = sqlx::query_as(
        "select xid, position from es_events order by xid desc, position desc limit 1",
    )
    .fetch_optional(pool)
    .await?;
    let Some(head) = head else { return Ok(()) };
    let until = std::time::Instant::now() + within;
    loop {
        let at: Option<(i64, i64)> =
            sqlx::query_as("select xid, position from rm_checkpoints where name = $1")
                .bind(&name)
                .fetch_optional(pool)
                .await?;
        if at.is_some_and(|at| at >= head) {
            return Ok(());
        }
        if std::time::Instant::now() >= until {
            tracing::debug!(
                ?head,
                ?at,
                "the portal read model is behind the store; answering with what it holds"
            );
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

pub async fn agent(
    pool: &PgPool,
    tenant: &str,
    agent: &str,
) -> Result<Option<AgentView>, sqlx::Error> {
    let v: Option<serde_json::Value> =
        sqlx::query_scalar("select view from rm_agents where tenant = $1 and agent = $2")
            .bind(tenant)
            .bind(agent)
            .fetch_optional(pool)
            .await?;
    Ok(v.and_then(|v| serde_json::from_value(v).ok()))
}

pub async fn agents(pool: &PgPool, tenant: &str) -> Result<Vec<AgentView>, sqlx::Error> {
    let vs: Vec<serde_json::Value> =
        sqlx::query_scalar("select view from rm_agents where tenant = $1 order by agent")
            .bind(tenant)
            .fetch_all(pool)
            .await?;
    Ok(vs
        .into_iter()
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect())
}

/// The JSON of a stored view exactly as the projection publishes it live (jsonb reorders keys).
fn as_published(v: serde_json::Value) -> String {
    match serde_json::from_value::<AgentView>(v.clone()) {
        Ok(view) => serde_json::to_string(&view).expect("views serialize"),
        Err(_) => v.to_string(),
    }
}

/// The changes of one agent's view after `version`, in order: (version, view JSON).
pub async fn changes_after(
    pool: &PgPool,
    tenant: &str,
    agent: &str,
    version: i64,
) -> Result<Vec<(i64, String)>, sqlx::Error> {
    let rows: Vec<(i64, serde_json::Value)> =
        sqlx::query_as("select version, view from rm_agent_updates where tenant = $1 and agent = $2 and version > $3 order by version")
            .bind(tenant)
            .bind(agent)
            .bind(version)
            .fetch_all(pool)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(v, j)| (v, as_published(j)))
        .collect())
}

/// The current view of one agent: (version, view JSON).
pub async fn current(
    pool: &PgPool,
    tenant: &str,
    agent: &str,
) -> Result<Option<(i64, String)>, sqlx::Error> {
    let row: Option<(i64, serde_json::Value)> =
        sqlx::query_as("select version, view from rm_agents where tenant = $1 and agent = $2")
            .bind(tenant)
            .bind(agent)
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|(v, j)| (v, as_published(j))))
}

/// The agent logged in on a device, if any.
pub async fn agent_on_device(
    pool: &PgPool,
    tenant: &str,
    device: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("select agent from rm_agents where tenant = $1 and view->>'device' = $2 and view->>'login_time' is not null limit 1")
        .bind(tenant)
        .bind(device)
        .fetch_optional(pool)
        .await
}

/// The tenant's queues: (number, name), by number.
pub async fn queues(pool: &PgPool, tenant: &str) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::query_as("select queue, name from rm_queue_names where tenant = $1 order by queue")
        .bind(tenant)
        .fetch_all(pool)
        .await
}
