//! Delivering: the lease holder runs one worker per active subscription, each reading its own
//! durable consumer one message at a time and posting it until the receiver takes it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_nats::jetstream::{AckKind, Message};
use cc_bus::CommandError;
use cc_contracts::webhooks::Delivery;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::{Subscription, Webhooks, Worker};

/// One event as a webhook carries it: a CloudEvent in structured JSON.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: String,
    pub event_type: String,
    pub data: Value,
    /// The whole CloudEvent (attributes and `data`).
    pub body: Value,
    /// When it was recorded (retries count from here).
    pub at: DateTime<Utc>,
}

impl Event {
    /// From a relayed JetStream message: its `ce-*` headers and its body (the data).
    pub fn from_message(m: &Message) -> Option<Event> {
        let h = m.headers.as_ref()?;
        let get = |k: &str| h.get(k).map(|v| v.as_str().to_string());
        let data: Value = serde_json::from_slice(&m.payload).ok()?;
        let id = get("ce-id")?;
        let at = get("ce-time")
            .and_then(|t| t.parse::<DateTime<Utc>>().ok())
            .unwrap_or_else(Utc::now);
        let mut body = json!({
            "specversion": "1.0",
            "id": id,
            "source": get("ce-source"),
            "type": get("ce-type"),
            "subject": get("ce-subject"),
            "time": get("ce-time"),
            "datacontenttype": "application/json",
            "tenant": get("ce-tenant"),
            "correlationid": get("ce-correlationid"),
            "sequence": get("Cc-Position"),
            "data": data,
        });
        if let Some(c) = get("ce-causationid") {
            body["causationid"] = json!(c);
        }
        if let Some(t) = get("ce-traceparent") {
            body["traceparent"] = json!(t); // the distributed tracing extension
        }
        Some(Event {
            id,
            event_type: get("Cc-Event-Type")?,
            data: body["data"].clone(),
            body,
            at,
        })
    }

    /// From the store (a redelivery): the same CloudEvent the relay published.
    pub fn from_recorded(e: &cc_eventstore::RecordedEvent) -> Event {
        let h = cc_bus::relay::event_headers(e, 0);
        let get = |k: &str| h.get(k).map(|v| v.as_str().to_string());
        let mut body = json!({
            "specversion": "1.0",
            "id": e.event_id.to_string(),
            "source": get("ce-source"),
            "type": get("ce-type"),
            "subject": get("ce-subject"),
            "time": get("ce-time"),
            "datacontenttype": "application/json",
            "tenant": e.tenant(),
            "correlationid": get("ce-correlationid"),
            "sequence": e.position.to_string(),
            "data": e.data,
        });
        if let Some(c) = get("ce-causationid") {
            body["causationid"] = json!(c);
        }
        if let Some(t) = get("ce-traceparent") {
            body["traceparent"] = json!(t); // the distributed tracing extension
        }
        Event {
            id: e.event_id.to_string(),
            event_type: e.event_type.clone(),
            data: e.data.clone(),
            body,
            at: e.recorded_at,
        }
    }

    /// The test event of a subscription.
    pub fn test(tenant: &str, webhook: Uuid) -> Event {
        let id = Uuid::now_v7().to_string();
        let now = Utc::now();
        let data = json!({"webhook": webhook, "message": "A test event from the Call Center"});
        Event {
            body: json!({
                "specversion": "1.0",
                "id": id,
                "source": format!("/tenants/{tenant}/webhooks"),
                "type": "callcenter.webhook.test.v1",
                "subject": format!("webhook-{webhook}"),
                "time": now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                "datacontenttype": "application/json",
                "tenant": tenant,
                "data": data,
            }),
            id,
            event_type: "WebhookTest".into(),
            data,
            at: now,
        }
    }
}

/// Posts one event once; the outcome is `delivered` (2xx) or `failed` (`error` says why).
pub async fn post(w: &Webhooks, s: &Subscription, e: &Event, attempt: i32) -> Delivery {
    let started = Instant::now();
    let cfg = &w.ctx.config.webhooks;
    let outcome = async {
        let url = crate::target::check(&s.url, s.allow_http, cfg.allow_private).await?;
        let body = serde_json::to_vec(&e.body).expect("events serialize");
        let ts = Utc::now().timestamp();
        let r = w
            .http
            .post(url)
            .timeout(Duration::from_millis(cfg.timeout_ms))
            .header("content-type", "application/cloudevents+json")
            .header("webhook-id", &e.id)
            .header("webhook-timestamp", ts.to_string())
            .header(
                "webhook-signature",
                crate::sign::signature(&s.secret, &e.id, ts, &body),
            )
            .body(body)
            .send()
            .await
            .map_err(|err| {
                if err.is_timeout() {
                    format!("no answer within {} ms", cfg.timeout_ms)
                } else if err.is_connect() {
                    "could not connect".to_string()
                } else {
                    format!("{err}")
                }
            })?;
        Ok::<u16, String>(r.status().as_u16())
    }
    .await;
    let (status_code, error, delivered) = match outcome {
        Ok(code) if (200..300).contains(&code) => (Some(code as i32), None, true),
        Ok(code) => (
            Some(code as i32),
            Some(format!("the receiver answered {code}")),
            false,
        ),
        Err(why) => (None, Some(why), false),
    };
    Delivery {
        event_id: e.id.parse().unwrap_or_default(),
        event_type: e.event_type.clone(),
        attempt,
        outcome: if delivered { "delivered" } else { "failed" }.into(),
        status_code,
        latency_ms: started.elapsed().as_millis() as i64,
        error,
        at: Utc::now(),
    }
}

/// Records an attempt in the subscription's delivery log (the newest 1000 kept) and the metric.
pub async fn log(w: &Webhooks, subscription: Uuid, d: &Delivery) {
    w.deliveries
        .get_or_create(&vec![("outcome".to_string(), d.outcome.clone())])
        .inc();
    let r = sqlx::query(
        "insert into wh_deliveries (subscription, event_id, event_type, attempt, outcome, status_code, latency_ms, error, at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(subscription)
    .bind(d.event_id)
    .bind(&d.event_type)
    .bind(d.attempt)
    .bind(&d.outcome)
    .bind(d.status_code)
    .bind(d.latency_ms)
    .bind(&d.error)
    .bind(d.at)
    .execute(&w.ctx.pool)
    .await;
    if let Err(e) = r {
        tracing::warn!(error = %e, "could not log a webhook delivery");
    }
    if rand::random::<u8>() < 8 {
        let _ = sqlx::query(
            "delete from wh_deliveries where subscription = $1 and seq <= (
               select seq from wh_deliveries where subscription = $1 order by seq desc offset 1000 limit 1)",
        )
        .bind(subscription)
        .execute(&w.ctx.pool)
        .await;
    }
}

/// A row of `wh_deliveries` as read.
type DeliveryRow = (
    Uuid,
    String,
    i32,
    String,
    Option<i32>,
    i64,
    Option<String>,
    DateTime<Utc>,
);

/// The newest deliveries, newest first.
pub async fn recent(w: &Webhooks, subscription: Uuid) -> Result<Vec<Delivery>, CommandError> {
    let rows: Vec<DeliveryRow> = sqlx::query_as(
        "select event_id, event_type, attempt, outcome, status_code, latency_ms, error, at
               from wh_deliveries where subscription = $1 order by seq desc limit 200",
    )
    .bind(subscription)
    .fetch_all(&w.ctx.pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(event_id, event_type, attempt, outcome, status_code, latency_ms, error, at)| {
                Delivery {
                    event_id,
                    event_type,
                    attempt,
                    outcome,
                    status_code,
                    latency_ms,
                    error,
                    at,
                }
            },
        )
        .collect())
}

/// The delay before retry `attempt` (1 = after the first failure): doubling from the base, at
/// most the maximum, with ±25 % jitter so receivers that came back are not hit all at once.
pub fn backoff(base_ms: u64, max_ms: u64, attempt: i64) -> Duration {
    let exp = base_ms.saturating_mul(1u64 << (attempt.clamp(1, 32) - 1) as u32);
    let d = exp.min(max_ms) as f64;
    let jitter = 0.75 + rand::random::<f64>() * 0.5;
    Duration::from_millis((d * jitter) as u64)
}

/// The delivering replica: holds the lease and keeps one worker per active subscription.
pub async fn lead(w: &Webhooks) -> anyhow::Result<()> {
    let leader = w.ctx.metrics.leader("webhooks");
    let Some(mut lease) = crate::lease(w).await? else {
        tokio::time::sleep(Duration::from_secs(1)).await;
        return Ok(());
    };
    tracing::info!("webhook deliveries lease taken");
    let _holding = leader.took(lease.fence().epoch);
    let mut workers: HashMap<Uuid, (String, Worker)> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = w.ctx.cancel.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        lease.check().await?;
        let active = crate::active(w).await?;
        workers
            .retain(|id, (version, _)| active.get(id).is_some_and(|s| *version == version_of(s)));
        for (id, s) in active {
            if workers.contains_key(&id) {
                continue;
            }
            let token = w.ctx.cancel.child_token();
            let (w2, t2) = (w.clone(), token.clone());
            let version = version_of(&s);
            tokio::spawn(async move {
                let r = work(&w2, s, t2.clone()).await;
                t2.cancel(); // stopped for whatever reason: started again next round
                if let Err(e) = r {
                    tracing::warn!(webhook = %id, error = %format!("{e:#}"), "webhook worker stopped; it starts again");
                }
            });
            workers.insert(id, (version, Worker(token)));
        }
        // A worker that stopped (an error, a suspension) is started again next round.
        workers.retain(|_, (_, worker)| !worker.0.is_cancelled());
    }
}

/// What makes a running worker stale: a resume restarts it.
fn version_of(s: &Subscription) -> String {
    format!("{:?}", s.resumed_at)
}

/// One subscription's deliveries, in order, until cancelled or suspended.
async fn work(
    w: &Webhooks,
    s: Subscription,
    cancel: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let stream = w
        .ctx
        .bus
        .jetstream
        .get_stream(w.ctx.bus.subjects.events_stream())
        .await?;
    let consumer = stream
        .get_or_create_consumer(
            &crate::consumer_name(s.id),
            crate::consumer_config(
                &w.ctx,
                s.id,
                &s.tenant,
                async_nats::jetstream::consumer::DeliverPolicy::New,
            ),
        )
        .await?;
    let mut messages = consumer.messages().await?;
    let cfg = w.ctx.config.webhooks.clone();
    loop {
        let m = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            m = messages.next() => m,
        };
        let Some(m) = m else {
            cancel.cancel();
            anyhow::bail!("the consumer ended");
        };
        let m = m.map_err(|e| anyhow::anyhow!("{e}"))?;
        // A copy of a transfer event on its target's subject is not on this filter; every
        // message here is one event.
        let Some(event) = Event::from_message(&m) else {
            tracing::error!(webhook = %s.id, subject = %m.subject, "an event without its CloudEvents headers; skipped");
            let _ = m.ack().await;
            continue;
        };
        if !s.wants(&event.event_type, &event.data) {
            let _ = m.ack().await;
            continue;
        }
        let attempt = m.info().map(|i| i.delivered).unwrap_or(1);
        let d = post(w, &s, &event, attempt as i32).await;
        if d.outcome == "delivered" {
            log(w, s.id, &d).await;
            let _ = m.ack().await;
            continue;
        }
        let since = s.resumed_at.map_or(event.at, |r| r.max(event.at));
        let failing_for = (Utc::now() - since).num_seconds().max(0) as u64;
        if d.status_code == Some(410) || failing_for >= cfg.suspend_after_secs {
            let why = match d.status_code {
                Some(410) => "the receiver answered 410 Gone".to_string(),
                _ => format!(
                    "event {} failed for {} s ({})",
                    event.id,
                    failing_for,
                    d.error.clone().unwrap_or_default()
                ),
            };
            log(
                w,
                s.id,
                &Delivery {
                    outcome: "suspended".into(),
                    ..d
                },
            )
            .await;
            crate::suspend(w, s.id, &why).await;
            // Left unacknowledged: a resume starts with it.
            let _ = m.ack_with(AckKind::Nak(Some(Duration::from_secs(1)))).await;
            cancel.cancel();
            return Ok(());
        }
        log(w, s.id, &d).await;
        let delay = backoff(cfg.retry_base_ms, cfg.retry_max_ms, attempt);
        let _ = m.ack_with(AckKind::Nak(Some(delay))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter() {
        for _ in 0..100 {
            let a = backoff(1000, 600_000, 1).as_millis();
            assert!((750..=1250).contains(&a), "{a}");
            let c = backoff(1000, 600_000, 4).as_millis();
            assert!((6000..=10_000).contains(&c), "{c}");
            let m = backoff(1000, 600_000, 40).as_millis();
            assert!((450_000..=750_000).contains(&m), "{m}");
        }
    }
}
