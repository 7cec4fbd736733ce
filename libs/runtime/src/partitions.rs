//! Partitions shared by the replicas of a service: each replica leads its fair share of them,
//! `ceil(partitions / live replicas)`, takes those nobody alive leads, and gives up what is
//! above its share when another replica joins (a graceful stop: the partition's leader ends
//! its work and drops the lease; another takes it a second later). A replica that dies loses
//! its leases with its connections; the survivors' shares grow and they take them.
//!
//! Who leads is decided by each partition's lease (and its epoch fences the appends); the
//! table `es_members` (each replica's heartbeat and the partitions it runs) only tells a
//! replica which partitions to leave alone and how many replicas share them.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use cc_core::Partition;
use sqlx::postgres::PgConnection;
use sqlx::Connection;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Leads as `ctx.config.partitions` says until `ctx.cancel`: with one partition, the whole
/// store behind one lease ([`crate::leading::keep_leading`], `what` naming it in the logs);
/// with more, this replica's share of them ([`share`]). `lead` as for [`share`].
pub async fn lead<F, Fut>(ctx: &crate::Context, what: &str, service: &str, lease: &str, lead: F)
where
    F: Fn(Partition, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let count = ctx.config.partitions;
    if count <= 1 {
        crate::leading::keep_leading(&ctx.cancel, what, || {
            lead(Partition::WHOLE, ctx.cancel.clone())
        })
        .await;
        return;
    }
    share(
        &ctx.config.database_url,
        service,
        lease,
        count,
        ctx.cancel.clone(),
        lead,
    )
    .await
}

/// Creates every partition's durable consumer `base` of the PBX's channel facts
/// ([`consumer_name`]) before anyone may lead, so that no fact is missed while a standby
/// catches up. Retries until it succeeds; `false` when `ctx.cancel` came first.
pub async fn pbx_channel_consumers(ctx: &crate::Context, base: &str) -> bool {
    for p in Partition::all(ctx.config.partitions) {
        let name = consumer_name(base, p);
        let created = crate::leading::retry_until_ok(
            &ctx.cancel,
            "cannot create the PBX event consumer",
            || async {
                cc_bus::consumer::pbx_channels(&ctx.bus, &name, p)
                    .await
                    .map(|_| ())
            },
        )
        .await;
        if created.is_none() {
            return false;
        }
    }
    true
}

/// The durable consumer `base` of partition `p` (`base-p3`; `base` alone with one partition).
pub fn consumer_name(base: &str, p: Partition) -> String {
    if p.count <= 1 {
        base.to_string()
    } else {
        format!("{base}-p{}", p.index)
    }
}

/// Runs `lead` for this replica's share of the `count` partitions of `service` until `cancel`.
/// Partition `p`'s lease is named `Partition::name(lease)`. `lead(partition, stop)` takes
/// that lease and works while it holds it; it returns `Ok` at once when another replica holds
/// it, and ends its work when `stop` is cancelled.
pub async fn share<F, Fut>(
    database_url: &str,
    service: &str,
    lease: &str,
    count: u32,
    cancel: CancellationToken,
    lead: F,
) where
    F: Fn(Partition, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let me = Uuid::now_v7();
    let leases: Vec<String> = Partition::all(count).map(|p| p.name(lease)).collect();
    let mut member: Option<PgConnection> = None;
    let mut running: BTreeMap<u32, (CancellationToken, tokio::task::JoinHandle<()>)> =
        BTreeMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        running.retain(|_, (_, task)| !task.is_finished());
        let mine: Vec<i32> = running.keys().map(|p| *p as i32).collect();
        let (replicas, held) =
            match look_around(database_url, &mut member, service, me, &mine, &leases).await {
                Ok(o) => o,
                Err(e) => {
                    // PostgreSQL away: the leaders find out through their leases.
                    tracing::debug!(error = %e, service, "cannot share the partitions now");
                    member = None;
                    continue;
                }
            };
        let fair = (count as usize).div_ceil(replicas.max(1));
        // Above the share: the highest partitions are given up (their leaders stop).
        while running.len() > fair {
            let (p, (stop, _)) = running.pop_last().expect("more than fair");
            tracing::info!(
                service,
                partition = p,
                fair,
                replicas,
                "giving up a partition to another replica"
            );
            stop.cancel();
        }
        // Below it: the partitions whose lease nobody holds, starting after this replica's
        // own number, so that replicas starting together try different ones first.
        let start = (me.as_u128() % count as u128) as u32;
        for i in 0..count {
            if running.len() >= fair {
                break;
            }
            let p = (start + i) % count;
            if running.contains_key(&p) || held.contains(&p) {
                continue;
            }
            let stop = cancel.child_token();
            let work = lead(Partition { index: p, count }, stop.clone());
            let name = service.to_string();
            let task = tokio::spawn(async move {
                if let Err(e) = work.await {
                    tracing::warn!(error = %format!("{e:#}"), service = name, partition = p, "partition leader interrupted; starting over from the store");
                }
            });
            running.insert(p, (stop, task));
        }
    }
    for (stop, _) in running.values() {
        stop.cancel();
    }
    for (_, (_, task)) in running {
        let _ = task.await;
    }
    if let Some(mut conn) = member {
        let _ = sqlx::query("delete from es_members where service = $1 and member = $2")
            .bind(service)
            .bind(me)
            .execute(&mut conn)
            .await;
    }
}

/// Whether the advisory lock named `n` (one bigint key, `hashtext(n)`: held as its high and
/// low halves, `classid` and `objid`) is held by anyone.
const HELD: &str = "exists (select 1 from pg_locks l where l.locktype = 'advisory' and l.granted \
                    and l.objsubid = 1 and ((l.classid::bigint << 32) | l.objid::bigint) = hashtext(n)::bigint)";

/// How many replicas of any service are alive and running partitions (for
/// `callcenter partitions set`, which needs them all stopped).
pub async fn replicas_alive(pool: &sqlx::PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "select count(*) from (select 'cc-member/' || service || '/' || member::text as n from es_members) m where {HELD}"
    ))
    .fetch_one(pool)
    .await
}

/// The advisory lock a replica holds while it is alive (on a connection of its own, so that
/// its death ends it at once, as it ends the replica's leases).
fn member_lock(service: &str, me: Uuid) -> String {
    format!("cc-member/{service}/{me}")
}

/// Says this replica runs `mine`; returns how many replicas of `service` are alive (holding
/// their member lock, this one included) and the partitions whose lease anyone holds.
async fn look_around(
    database_url: &str,
    member: &mut Option<PgConnection>,
    service: &str,
    me: Uuid,
    mine: &[i32],
    leases: &[String],
) -> Result<(usize, std::collections::HashSet<u32>), sqlx::Error> {
    if member.is_none() {
        let mut conn = PgConnection::connect(database_url).await?;
        sqlx::query("select pg_advisory_lock(hashtext($1))")
            .bind(member_lock(service, me))
            .execute(&mut conn)
            .await?;
        *member = Some(conn);
    }
    let conn = member.as_mut().expect("connected");
    sqlx::query(
        "insert into es_members (service, member, partitions, seen_at) values ($1, $2, $3, now())
         on conflict (service, member) do update set partitions = excluded.partitions, seen_at = now()",
    )
    .bind(service)
    .bind(me)
    .bind(mine)
    .execute(&mut *conn)
    .await?;
    // A held advisory lock of one bigint key is (classid, objid) = its high and low halves.
    let members: Vec<String> = sqlx::query_scalar(
        "select 'cc-member/' || service || '/' || member::text from es_members where service = $1",
    )
    .bind(service)
    .fetch_all(&mut *conn)
    .await?;
    let alive: i64 = sqlx::query_scalar(&format!(
        "select count(*) from unnest($1::text[]) n where {HELD}"
    ))
    .bind(&members)
    .fetch_one(&mut *conn)
    .await?;
    // Replicas gone for an hour are forgotten.
    sqlx::query(
        "delete from es_members where service = $1 and seen_at < now() - interval '1 hour'",
    )
    .bind(service)
    .execute(&mut *conn)
    .await?;
    let held: Vec<i64> = sqlx::query_scalar(&format!(
        "select i - 1 from unnest($1::text[]) with ordinality as u (n, i) where {HELD}"
    ))
    .bind(leases)
    .fetch_all(&mut *conn)
    .await?;
    Ok((
        alive.max(1) as usize,
        held.into_iter().map(|i| i as u32).collect(),
    ))
}
