//! The webhooks service: each subscription of a tenant gets the tenant's events over HTTP, as
//! CloudEvents in structured JSON, signed as the Standard Webhooks specification says
//! ([`sign`]), in the tenant's event order, at least once (the event id is the `webhook-id`).
//!
//! - **Order and isolation.** Each subscription has a durable JetStream consumer of its own on
//!   the events stream, with one message in flight (`max_ack_pending` 1): a failed delivery is
//!   retried (`Nak` with a delay) before anything after it, and a slow or dead receiver holds up
//!   only its own subscription. The product never waits on a receiver.
//! - **Retries.** Exponential backoff with jitter from `CC_WEBHOOK_RETRY_BASE_MS` up to
//!   `CC_WEBHOOK_RETRY_MAX_MS`; an event still failing after `CC_WEBHOOK_SUSPEND_AFTER_SECS`
//!   (24 h) suspends the subscription, with the reason; a 410 Gone suspends it at once. A resumed
//!   subscription goes on from the event it stopped at.
//! - **SSRF.** A URL whose host resolves to a loopback, private, link-local or otherwise
//!   non-public address is refused (at creation and before each delivery) unless the operator
//!   allows it (`CC_WEBHOOK_ALLOW_PRIVATE`); redirects are not followed.
//! - One replica delivers at a time (a lease); every replica answers the admin commands.

pub mod deliver;
pub mod target;

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use cc_bus::{CommandContext, CommandError, CommandHandlers};
use cc_contracts::domain::{AgentNumber, QueueNumber};
use cc_contracts::webhooks::*;
use cc_eventstore::Lease;
use cc_runtime::leading::keep_leading;
use cc_runtime::Context;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const MIGRATIONS: &[cc_eventstore::Migration] = &[cc_eventstore::Migration {
    version: 1,
    name: "webhooks",
    sql: include_str!("../sql/0001_webhooks.sql"),
}];

/// The most subscriptions one tenant may have.
pub const MAX_PER_TENANT: i64 = 50;

/// What every part of the service shares. Cheap to clone.
#[derive(Clone)]
pub struct Webhooks {
    pub ctx: Context,
    pub http: reqwest::Client,
    /// `cc_webhook_deliveries_total{outcome}`: delivered, failed, suspended, redelivered, test.
    pub deliveries: Deliveries,
}

pub type Deliveries = prometheus_client::metrics::family::Family<
    Vec<(String, String)>,
    prometheus_client::metrics::counter::Counter,
>;

pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent("cc-webhooks")
        .build()?;
    let deliveries = Deliveries::default();
    // Every outcome from 0, so that an alert on its increase sees the first one.
    for outcome in ["delivered", "failed", "suspended", "redelivered", "test"] {
        let _ = deliveries.get_or_create(&vec![("outcome".to_string(), outcome.to_string())]);
    }
    ctx.metrics.register(
        "webhook_deliveries",
        "Webhook delivery attempts by outcome (delivered, failed: retried, suspended, redelivered, test)",
        deliveries.clone(),
    );
    let svc = Webhooks {
        ctx: ctx.clone(),
        http,
        deliveries,
    };
    let commands = CommandHandlers::new("webhooks", svc.clone())
        .with_metrics(ctx.metrics.commands.clone())
        .on(|w: Webhooks, c, cmd: CreateWebhook| async move { w.create(&c, cmd).await })
        .on(|w: Webhooks, c, _: ListWebhooks| async move { w.list(&c.tenant).await })
        .on(|w: Webhooks, c, cmd: DeleteWebhook| async move { w.delete(&c.tenant, cmd.id).await })
        .on(|w: Webhooks, c, cmd: ResumeWebhook| async move { w.resume(&c.tenant, cmd.id).await })
        .on(|w: Webhooks, c, cmd: TestWebhook| async move { w.test(&c.tenant, cmd.id).await })
        .on(|w: Webhooks, c, cmd: ListDeliveries| async move { w.deliveries(&c.tenant, cmd.id).await })
        .on(|w: Webhooks, c, cmd: RedeliverWebhook| async move { w.redeliver(&c.tenant, cmd).await });
    let server = tokio::spawn(commands.serve(ctx.bus.clone(), ctx.cancel.clone()));
    keep_leading(&ctx.cancel, "webhook deliveries", || deliver::lead(&svc)).await;
    let _ = server.await;
    Ok(())
}

fn err(code: &str, field: &str, message: impl Into<String>) -> CommandError {
    CommandError::field(code, field, message)
}

/// The durable consumer of one subscription: the tenant's events, one in flight.
pub fn consumer_config(
    ctx: &Context,
    id: Uuid,
    tenant: &str,
    deliver: DeliverPolicy,
) -> pull::Config {
    let name = consumer_name(id);
    pull::Config {
        durable_name: Some(name),
        filter_subject: ctx.bus.subjects.tenant_events(tenant),
        deliver_policy: deliver,
        ack_policy: AckPolicy::Explicit,
        ack_wait: Duration::from_millis(ctx.config.webhooks.timeout_ms) + Duration::from_secs(30),
        max_ack_pending: 1,
        max_deliver: -1,
        ..Default::default()
    }
}

pub fn consumer_name(id: Uuid) -> String {
    format!("webhook-{}", id.simple())
}

/// A subscription as stored.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub id: Uuid,
    pub tenant: String,
    pub url: String,
    pub secret: String,
    pub event_types: Vec<String>,
    pub agents: Vec<String>,
    pub queues: Vec<String>,
    pub allow_http: bool,
    pub description: String,
    pub status: String,
    pub suspended_reason: Option<String>,
    pub resumed_at: Option<chrono::DateTime<chrono::Utc>>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for Subscription {
    fn from_row(r: &'r sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row;
        Ok(Self {
            id: r.try_get("id")?,
            tenant: r.try_get("tenant")?,
            url: r.try_get("url")?,
            secret: r.try_get("secret")?,
            event_types: r.try_get("event_types")?,
            agents: r.try_get("agents")?,
            queues: r.try_get("queues")?,
            allow_http: r.try_get("allow_http")?,
            description: r.try_get("description")?,
            status: r.try_get("status")?,
            suspended_reason: r.try_get("suspended_reason")?,
            resumed_at: r.try_get("resumed_at")?,
            created_at: r.try_get("created_at")?,
        })
    }
}

impl Subscription {
    pub fn public(&self) -> Webhook {
        Webhook {
            id: self.id,
            url: self.url.clone(),
            event_types: self.event_types.clone(),
            agents: self.agents.clone(),
            queues: self.queues.clone(),
            allow_http: self.allow_http,
            description: self.description.clone(),
            status: self.status.clone(),
            suspended_reason: self.suspended_reason.clone(),
            created_at: self.created_at,
        }
    }

    /// Whether an event (its type and data) is one this subscription wants.
    pub fn wants(&self, event_type: &str, data: &serde_json::Value) -> bool {
        let field = |k: &str| data.get(k).and_then(|v| v.as_str()).unwrap_or("");
        (self.event_types.is_empty() || self.event_types.iter().any(|t| t == event_type))
            && (self.agents.is_empty()
                || self
                    .agents
                    .iter()
                    .any(|a| a == field("agent") || a == field("target_agent")))
            && (self.queues.is_empty() || self.queues.iter().any(|q| q == field("queue")))
    }
}

const SELECT: &str = "select id, tenant, url, secret, event_types, agents, queues, allow_http, \
                      description, status, suspended_reason, resumed_at, created_at from wh_subscriptions";

impl Webhooks {
    pub async fn subscription(&self, tenant: &str, id: Uuid) -> Result<Subscription, CommandError> {
        sqlx::query_as::<_, Subscription>(&format!("{SELECT} where tenant = $1 and id = $2"))
            .bind(tenant)
            .bind(id)
            .fetch_optional(&self.ctx.pool)
            .await?
            .ok_or_else(|| err("not_found", "id", format!("There is no webhook {id}")))
    }

    async fn create(
        &self,
        c: &CommandContext,
        cmd: CreateWebhook,
    ) -> Result<CreatedWebhook, CommandError> {
        let known = known_event_types();
        if let Some(t) = cmd.event_types.iter().find(|t| !known.contains(t)) {
            return Err(err(
                "invalid_field",
                "event_types",
                format!("{t:?} is no event type (see docs/events.md)"),
            ));
        }
        if cmd.event_types.len() > 100 || cmd.agents.len() > 500 || cmd.queues.len() > 500 {
            return Err(err(
                "invalid_field",
                "event_types",
                "at most 100 event types, 500 agents and 500 queues",
            ));
        }
        for a in &cmd.agents {
            AgentNumber::parse(a).map_err(|e| err("invalid_field", "agents", e.message))?;
        }
        for q in &cmd.queues {
            QueueNumber::parse(q).map_err(|e| err("invalid_field", "queues", e.message))?;
        }
        if cmd.description.chars().count() > 200 || cmd.description.chars().any(char::is_control) {
            return Err(err(
                "invalid_field",
                "description",
                "at most 200 characters, no control characters",
            ));
        }
        target::check(
            &cmd.url,
            cmd.allow_http,
            self.ctx.config.webhooks.allow_private,
        )
        .await
        .map_err(|why| err("invalid_field", "url", why))?;
        let count: i64 =
            sqlx::query_scalar("select count(*) from wh_subscriptions where tenant = $1")
                .bind(&c.tenant)
                .fetch_one(&self.ctx.pool)
                .await?;
        if count >= MAX_PER_TENANT {
            return Err(err(
                "conflict",
                "url",
                format!("A tenant has at most {MAX_PER_TENANT} webhooks"),
            ));
        }
        let id = Uuid::now_v7();
        // The consumer first, from now on: an event recorded after the reply is delivered even
        // if the delivering replica picks the subscription up a moment later.
        let stream = self
            .ctx
            .bus
            .jetstream
            .get_stream(self.ctx.bus.subjects.events_stream())
            .await
            .map_err(|e| CommandError::new("unavailable", format!("JetStream: {e}")))?;
        stream
            .create_consumer(consumer_config(
                &self.ctx,
                id,
                &c.tenant,
                DeliverPolicy::New,
            ))
            .await
            .map_err(|e| CommandError::new("unavailable", format!("JetStream consumer: {e}")))?;
        let secret = sign::new_secret();
        let row = sqlx::query_as::<_, Subscription>(
            "insert into wh_subscriptions (id, tenant, url, secret, event_types, agents, queues, allow_http, description)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             returning id, tenant, url, secret, event_types, agents, queues, allow_http, description, status, suspended_reason, resumed_at, created_at",
        )
        .bind(id)
        .bind(&c.tenant)
        .bind(&cmd.url)
        .bind(&secret)
        .bind(&cmd.event_types)
        .bind(&cmd.agents)
        .bind(&cmd.queues)
        .bind(cmd.allow_http)
        .bind(&cmd.description)
        .fetch_one(&self.ctx.pool)
        .await?;
        tracing::info!(tenant = %c.tenant, webhook = %id, "webhook created");
        Ok(CreatedWebhook {
            webhook: row.public(),
            secret,
        })
    }

    async fn list(&self, tenant: &str) -> Result<Vec<Webhook>, CommandError> {
        let rows = sqlx::query_as::<_, Subscription>(&format!(
            "{SELECT} where tenant = $1 order by created_at"
        ))
        .bind(tenant)
        .fetch_all(&self.ctx.pool)
        .await?;
        Ok(rows.iter().map(Subscription::public).collect())
    }

    async fn delete(&self, tenant: &str, id: Uuid) -> Result<(), CommandError> {
        self.subscription(tenant, id).await?;
        sqlx::query("delete from wh_subscriptions where tenant = $1 and id = $2")
            .bind(tenant)
            .bind(id)
            .execute(&self.ctx.pool)
            .await?;
        sqlx::query("delete from wh_deliveries where subscription = $1")
            .bind(id)
            .execute(&self.ctx.pool)
            .await?;
        if let Ok(stream) = self
            .ctx
            .bus
            .jetstream
            .get_stream(self.ctx.bus.subjects.events_stream())
            .await
        {
            let _ = stream.delete_consumer(&consumer_name(id)).await;
        }
        Ok(())
    }

    async fn resume(&self, tenant: &str, id: Uuid) -> Result<Webhook, CommandError> {
        let s = self.subscription(tenant, id).await?;
        if s.status == "active" {
            return Ok(s.public());
        }
        sqlx::query(
            "update wh_subscriptions set status = 'active', suspended_reason = null, resumed_at = now()
              where tenant = $1 and id = $2",
        )
        .bind(tenant)
        .bind(id)
        .execute(&self.ctx.pool)
        .await?;
        Ok(self.subscription(tenant, id).await?.public())
    }

    async fn test(&self, tenant: &str, id: Uuid) -> Result<Delivery, CommandError> {
        let s = self.subscription(tenant, id).await?;
        let event = deliver::Event::test(tenant, id);
        let d = deliver::post(self, &s, &event, 1).await;
        let d = Delivery {
            outcome: "test".into(),
            ..d
        };
        deliver::log(self, id, &d).await;
        Ok(d)
    }

    async fn deliveries(&self, tenant: &str, id: Uuid) -> Result<Vec<Delivery>, CommandError> {
        self.subscription(tenant, id).await?;
        deliver::recent(self, id).await
    }

    async fn redeliver(
        &self,
        tenant: &str,
        cmd: RedeliverWebhook,
    ) -> Result<Redelivered, CommandError> {
        let s = self.subscription(tenant, cmd.id).await?;
        if cmd.to <= cmd.from {
            return Err(err("invalid_field", "to", "to must be after from"));
        }
        let events = self
            .ctx
            .store
            .read_tenant_between(tenant, cmd.from, cmd.to, 1001)
            .await?;
        if events.len() > 1000 {
            return Err(err(
                "invalid_field",
                "to",
                "more than 1000 events in that range: redeliver a shorter one",
            ));
        }
        let mut out = Redelivered {
            matched: 0,
            delivered: 0,
            failed: 0,
        };
        for e in &events {
            let event = deliver::Event::from_recorded(e);
            if !s.wants(&event.event_type, &event.data) {
                continue;
            }
            out.matched += 1;
            let d = deliver::post(self, &s, &event, 1).await;
            let ok = d.outcome == "delivered";
            deliver::log(
                self,
                s.id,
                &Delivery {
                    outcome: if ok { "redelivered" } else { "failed" }.into(),
                    ..d
                },
            )
            .await;
            if ok {
                out.delivered += 1;
            } else {
                out.failed += 1;
            }
        }
        Ok(out)
    }
}

/// Every event type a subscription may name (the published ones, from the contracts).
pub fn known_event_types() -> &'static [String] {
    static TYPES: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
        cc_contracts::schema::events()
            .into_iter()
            .map(|e| e.event_type)
            .collect()
    });
    &TYPES
}

pub mod sign;

/// Which subscriptions are active now, by id (for the delivering replica).
pub async fn active(w: &Webhooks) -> Result<HashMap<Uuid, Subscription>, sqlx::Error> {
    let rows = sqlx::query_as::<_, Subscription>(&format!("{SELECT} where status = 'active'"))
        .fetch_all(&w.ctx.pool)
        .await?;
    Ok(rows.into_iter().map(|s| (s.id, s)).collect())
}

/// Marks a subscription suspended, with why.
pub async fn suspend(w: &Webhooks, id: Uuid, reason: &str) {
    let r = sqlx::query(
        "update wh_subscriptions set status = 'suspended', suspended_reason = $2 where id = $1",
    )
    .bind(id)
    .bind(reason)
    .execute(&w.ctx.pool)
    .await;
    match r {
        Ok(_) => tracing::warn!(webhook = %id, reason, "webhook suspended"),
        Err(e) => tracing::error!(webhook = %id, error = %e, "could not suspend a webhook"),
    }
}

/// The lease of the delivering replica.
pub async fn lease(w: &Webhooks) -> anyhow::Result<Option<Lease>> {
    Ok(Lease::try_acquire(&w.ctx.config.database_url, "cc-webhooks").await?)
}

/// Cancels on drop.
pub struct Worker(pub CancellationToken);
impl Drop for Worker {
    fn drop(&mut self) {
        self.0.cancel();
    }
}
