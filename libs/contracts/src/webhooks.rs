//! Webhooks (service `webhooks`): a tenant's subscriptions to its own events, delivered over
//! HTTP as CloudEvents (structured JSON) signed as the Standard Webhooks specification says.
//! The secret is returned once, by [`CreateWebhook`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use cc_core::Command;

/// Subscribes a URL to the tenant's events. Empty `event_types`, `agents` or `queues` mean
/// all; otherwise an event is sent when its type is listed and (if given) it is about one of
/// the agents and one of the queues.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// `https://...` (or `http://` with `allow_http`), at most 2000 characters.
    #[schemars(length(max = 2000), example = &"https://crm.example.com/hooks/callcenter")]
    pub url: String,
    /// The event types to send (empty: every type).
    #[serde(default)]
    #[schemars(length(max = 100), example = serde_json::json!(["CallAnswered", "CallEnded"]))]
    pub event_types: Vec<String>,
    /// Only events about these agents (an event's agent or target_agent); empty: every agent.
    #[serde(default)]
    #[schemars(length(max = 500))]
    pub agents: Vec<String>,
    /// Only events about these queues; empty: every queue.
    #[serde(default)]
    #[schemars(length(max = 500))]
    pub queues: Vec<String>,
    /// Allows a plain `http://` URL (for testing; the deliveries are then readable on the way).
    #[serde(default)]
    pub allow_http: bool,
    /// What it is for, at most 200 characters.
    #[serde(default)]
    #[schemars(length(max = 200))]
    pub description: String,
}
impl Command for CreateWebhook {
    const SERVICE: &'static str = "webhooks";
    const NAME: &'static str = "CreateWebhook";
    type Reply = CreatedWebhook;
}

/// A subscription as listed (never with its secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Webhook {
    pub id: Uuid,
    pub url: String,
    pub event_types: Vec<String>,
    pub agents: Vec<String>,
    pub queues: Vec<String>,
    pub allow_http: bool,
    pub description: String,
    /// `active` or `suspended`.
    #[schemars(extend("enum" = ["active", "suspended"]))]
    pub status: String,
    /// Why it was suspended (deliveries failed for too long, or the receiver answered 410).
    pub suspended_reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// The reply of CreateWebhook: the subscription and its signing secret (`whsec_...`, the
/// Standard Webhooks signing secret), shown this once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CreatedWebhook {
    #[serde(flatten)]
    pub webhook: Webhook,
    pub secret: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListWebhooks {}
impl Command for ListWebhooks {
    const SERVICE: &'static str = "webhooks";
    const NAME: &'static str = "ListWebhooks";
    type Reply = Vec<Webhook>;
}

/// Removes a subscription (its deliveries stop at once).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteWebhook {
    pub id: Uuid,
}
impl Command for DeleteWebhook {
    const SERVICE: &'static str = "webhooks";
    const NAME: &'static str = "DeleteWebhook";
    type Reply = ();
}

/// Takes a suspended subscription up again, from the first event it did not deliver.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResumeWebhook {
    pub id: Uuid,
}
impl Command for ResumeWebhook {
    const SERVICE: &'static str = "webhooks";
    const NAME: &'static str = "ResumeWebhook";
    type Reply = Webhook;
}

/// Sends one test event (`callcenter.webhook.test.v1`) now, outside the event order; the
/// reply is how it went.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestWebhook {
    pub id: Uuid,
}
impl Command for TestWebhook {
    const SERVICE: &'static str = "webhooks";
    const NAME: &'static str = "TestWebhook";
    type Reply = Delivery;
}

/// One attempt to deliver one event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Delivery {
    /// The event id (the `webhook-id` header: the receiver's de-duplication key).
    pub event_id: Uuid,
    pub event_type: String,
    /// 1 for the first attempt.
    pub attempt: i32,
    /// `delivered`, `failed` (will be retried), `suspended` (the last attempt before the
    /// subscription was suspended), `redelivered`, `test`.
    #[schemars(extend("enum" = ["delivered", "failed", "suspended", "redelivered", "test"]))]
    pub outcome: String,
    /// The receiver's HTTP status, if it answered.
    pub status_code: Option<i32>,
    pub latency_ms: i64,
    /// Why it failed (timeout, connection refused, the status), if it did.
    pub error: Option<String>,
    pub at: DateTime<Utc>,
}

/// The newest deliveries of a subscription (at most 200), newest first.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListDeliveries {
    pub id: Uuid,
}
impl Command for ListDeliveries {
    const SERVICE: &'static str = "webhooks";
    const NAME: &'static str = "ListDeliveries";
    type Reply = Vec<Delivery>;
}

/// Sends again every matching event of the tenant recorded in `[from, to)` (at most 1000), in
/// order, each with its own id (a receiver de-duplicating on `webhook-id` sees no double).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeliverWebhook {
    pub id: Uuid,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}
impl Command for RedeliverWebhook {
    const SERVICE: &'static str = "webhooks";
    const NAME: &'static str = "RedeliverWebhook";
    type Reply = Redelivered;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Redelivered {
    pub matched: i64,
    pub delivered: i64,
    pub failed: i64,
}
