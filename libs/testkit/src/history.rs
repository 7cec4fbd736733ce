//! A long, realistic history for tests and benchmarks of what replays the store (rebuilds,
//! take-overs): [`generate`].

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

/// Rows for a bulk insert into es_events.
#[derive(Default)]
struct Batch {
    ids: Vec<uuid::Uuid>,
    streams: Vec<String>,
    categories: Vec<String>,
    stream_ids: Vec<String>,
    versions: Vec<i64>,
    types: Vec<String>,
    data: Vec<Value>,
    at: Vec<DateTime<Utc>>,
}

struct History {
    tenant: String,
    batch: Batch,
    versions: std::collections::HashMap<String, i64>,
    clock: DateTime<Utc>,
    total: u64,
}

impl History {
    fn push(&mut self, category: &str, id: &str, ty: &str, data: Value) {
        let stream = format!("{}/{category}-{id}", self.tenant);
        let v = self.versions.entry(stream.clone()).or_insert(0);
        *v += 1;
        self.clock += Duration::milliseconds(7);
        let b = &mut self.batch;
        b.ids.push(uuid::Uuid::now_v7());
        b.streams.push(stream);
        b.categories.push(category.into());
        b.stream_ids.push(id.into());
        b.versions.push(*v);
        b.types.push(ty.into());
        b.data.push(data);
        b.at.push(self.clock);
        self.total += 1;
    }

    async fn flush(&mut self, pool: &sqlx::PgPool) -> Result<(), sqlx::Error> {
        let b = std::mem::take(&mut self.batch);
        if b.ids.is_empty() {
            return Ok(());
        }
        let meta = json!({ "tenant": self.tenant, "actor": "history" });
        sqlx::query(
            "insert into es_events (event_id, tenant, stream, category, stream_id, version, event_type, schema_version, data, metadata, recorded_at)
             select id, $10, s, c, sid, v, t, 1, d, $9, at from unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::jsonb[], $8::timestamptz[]) as u(id, s, c, sid, v, t, d, at)",
        )
        .bind(&b.ids)
        .bind(&b.streams)
        .bind(&b.categories)
        .bind(&b.stream_ids)
        .bind(&b.versions)
        .bind(&b.types)
        .bind(&b.data)
        .bind(&b.at)
        .bind(&meta)
        .bind(&self.tenant)
        .execute(pool)
        .await?;
        Ok(())
    }
}

/// Inserts a history of at least `target` events of tenant `tenant` straight into the event
/// store (`es_events`, in 20,000-event transactions), as years of use would leave it: the
/// tenant, two queues (500, 501), 200 agents (2000-2199) logged in, then calls one after the
/// other, every one over: answered, rejected then answered, abandoned, one in ten transferred
/// (attended) to another agent, with pauses. Returns the number of events inserted.
pub async fn generate(pool: &sqlx::PgPool, tenant: &str, target: u64) -> Result<u64, sqlx::Error> {
    let mut h = History {
        tenant: tenant.to_string(),
        batch: Batch::default(),
        versions: Default::default(),
        clock: Utc::now() - Duration::days(30),
        total: 0,
    };
    h.push(
        "tenant",
        tenant,
        "TenantCreated",
        json!({ "tenant": tenant, "name": "History", "demo": false, "time_zone": "Europe/Berlin" }),
    );
    for (q, name) in [("500", "Sales"), ("501", "Support")] {
        h.push(
            "queue",
            q,
            "QueueCreated",
            json!({ "queue": q, "name": name }),
        );
    }
    let agents: Vec<String> = (2000..2200).map(|n| n.to_string()).collect();
    for a in &agents {
        h.push("agent", a, "AgentLoggedIn", json!({ "agent": a, "login_id": uuid::Uuid::now_v7(), "device": a, "queues": ["500", "501"] }));
    }
    let mut n: u64 = 0;
    while h.total < target {
        n += 1;
        let call = format!("c{n:08}");
        let queue = if n.is_multiple_of(3) { "501" } else { "500" };
        let a = &agents[(n as usize * 7) % agents.len()];
        let b = &agents[(n as usize * 13 + 1) % agents.len()];
        let offer = |k: u64| format!("o{n:08}{k}");
        h.push("call", &call, "CallEnteredQueue", json!({ "call": call, "queue": queue, "caller": { "number": format!("555{n:07}"), "name": "Caller" }, "channel": format!("ch{n}"), "priority": 0 }));
        h.push(
            "call",
            &call,
            "CallOffered",
            json!({ "call": call, "queue": queue, "agent": a, "device": a, "offer": offer(1) }),
        );
        match n % 10 {
            0 => {
                h.push(
                    "call",
                    &call,
                    "OfferWithdrawn",
                    json!({ "call": call, "agent": a, "offer": offer(1), "reason": "caller_gone" }),
                );
                h.push(
                    "call",
                    &call,
                    "CallAbandoned",
                    json!({ "call": call, "queue": queue, "wait_ms": 9000, "position": 1 }),
                );
                continue;
            }
            1 => {
                h.push(
                    "call",
                    &call,
                    "OfferRejected",
                    json!({ "call": call, "agent": a, "offer": offer(1) }),
                );
                h.push("call", &call, "CallOffered", json!({ "call": call, "queue": queue, "agent": a, "device": a, "offer": offer(2) }));
            }
            _ => {}
        }
        let o = if n % 10 == 1 { offer(2) } else { offer(1) };
        h.push(
            "call",
            &call,
            "CallAnswered",
            json!({ "call": call, "queue": queue, "agent": a, "offer": o, "wait_ms": 4000 }),
        );
        h.push(
            "call",
            &call,
            "CallConnected",
            json!({ "call": call, "agent": a, "bridge": call }),
        );
        if n % 10 == 2 && a != b {
            // An attended transfer to another agent, completed.
            let t = format!("t{n}");
            h.push("call", &call, "TransferStarted", json!({ "call": call, "transfer": t, "agent": a, "method": "attended", "target": { "agent": b }, "leg": format!("l{n}"), "target_agent": b, "queue": queue }));
            h.push(
                "call",
                &call,
                "CallHeld",
                json!({ "call": call, "agent": a }),
            );
            h.push(
                "call",
                &call,
                "TransferAnswered",
                json!({ "call": call, "transfer": t, "agent": a, "target_agent": b }),
            );
            h.push(
                "call",
                &call,
                "CallEnded",
                json!({ "call": call, "agent": a, "by": "transferred", "talk_ms": 60000 }),
            );
            h.push(
                "call",
                &call,
                "TransferCompleted",
                json!({ "call": call, "transfer": t, "agent": a, "target_agent": b }),
            );
            h.push(
                "call",
                &call,
                "CallConnected",
                json!({ "call": call, "agent": b, "bridge": call }),
            );
            h.push(
                "call",
                &call,
                "WrapUpStarted",
                json!({ "call": call, "agent": a, "seconds": 10 }),
            );
            h.push(
                "call",
                &call,
                "WrapUpEnded",
                json!({ "call": call, "agent": a, "early": false }),
            );
            h.push(
                "call",
                &call,
                "CallEnded",
                json!({ "call": call, "agent": b, "by": "caller", "talk_ms": 90000 }),
            );
            h.push(
                "call",
                &call,
                "WrapUpStarted",
                json!({ "call": call, "agent": b, "seconds": 10 }),
            );
            h.push(
                "call",
                &call,
                "WrapUpEnded",
                json!({ "call": call, "agent": b, "early": false }),
            );
        } else {
            h.push(
                "call",
                &call,
                "CallEnded",
                json!({ "call": call, "agent": a, "by": "caller", "talk_ms": 120000 }),
            );
            h.push(
                "call",
                &call,
                "WrapUpStarted",
                json!({ "call": call, "agent": a, "seconds": 10 }),
            );
            h.push(
                "call",
                &call,
                "WrapUpEnded",
                json!({ "call": call, "agent": a, "early": false }),
            );
        }
        if n.is_multiple_of(50) {
            h.push(
                "agent",
                a,
                "AgentPaused",
                json!({ "agent": a, "reason": if n.is_multiple_of(100) { "Lunch" } else { "Break" } }),
            );
            h.push(
                "agent",
                a,
                "AgentUnpaused",
                json!({ "agent": a, "reason": "Lunch" }),
            );
        }
        if h.batch.ids.len() >= 20_000 {
            h.flush(pool).await?;
        }
    }
    h.flush(pool).await?;
    Ok(h.total)
}
