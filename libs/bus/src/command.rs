use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use tracing::Instrument;

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::Bus;

pub use cc_core::Command;

/// A structured refusal: a machine-readable code, a sentence for people, and the field at fault.
/// Also the body of every refusal of the HTTP API.
#[derive(
    Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error, schemars::JsonSchema,
)]
#[error("{error}: {message}")]
#[schemars(rename = "Error")]
pub struct CommandError {
    /// A code from the error table in docs/getting-started.md.
    #[schemars(example = &"device_offline")]
    pub error: String,
    #[schemars(
        example = &"Device 1002 is not registered; make sure the phone is online, then try again"
    )]
    pub message: String,
    /// The field at fault (a path such as target.extension, or a header such as
    /// Idempotency-Key); null when no single field is.
    #[serde(default)]
    #[schemars(example = &"device")]
    pub field: Option<String>,
}

impl CommandError {
    pub fn new(error: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            message: message.into(),
            field: None,
        }
    }

    pub fn field(
        error: impl Into<String>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            error: error.into(),
            message: message.into(),
            field: Some(field.into()),
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new("internal", message)
    }

    /// The error for a body with more after its JSON value.
    pub fn trailing(e: serde_json::Error) -> Self {
        Self::new(
            "invalid_json",
            format!("the body is not valid JSON: {e} (more after the value)"),
        )
    }

    /// The error for a command body that does not parse, naming the field at fault.
    pub fn from_json(e: serde_path_to_error::Error<serde_json::Error>) -> Self {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return Self::new(
                "invalid_json",
                format!("the body is not valid JSON: {inner}"),
            );
        }
        let msg = inner.to_string();
        // serde reports a missing field at the parent's path, with the name in the message;
        // an unknown one at its own path, but for an empty name (at the root's).
        let named = |prefix: &str| {
            msg.strip_prefix(prefix)
                .and_then(|r| r.split('`').next())
                .map(field_name)
        };
        let missing = named("missing field `");
        let field = match (&missing, path.as_str()) {
            (Some(m), "." | "") => Some(m.clone()),
            (Some(m), p) => Some(format!("{p}.{m}")),
            (None, "." | "") => named("unknown field `"),
            (None, p) => Some(p.to_string()),
        };
        let message = match &field {
            Some(f) if missing.is_some() => format!("{f} is required"),
            Some(f) => format!("{f}: {}", msg.split(" at line ").next().unwrap_or(&msg)),
            None => msg.split(" at line ").next().unwrap_or(&msg).to_string(),
        };
        Self {
            error: if missing.is_some() {
                "missing_field"
            } else {
                "invalid_field"
            }
            .into(),
            message,
            field,
        }
    }
}

/// A field's name as errors show it: an empty name (a body's `"": ...`) as `""`.
pub fn field_name(name: &str) -> String {
    if name.is_empty() {
        "\"\"".into()
    } else {
        name.to_string()
    }
}

/// Parses a JSON body into `T`, or a [`CommandError`] naming the field at fault. Nothing but
/// whitespace may follow the value (`{"a":1} x` is not a body).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CommandError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(CommandError::from_json)?;
    de.end().map_err(CommandError::trailing)?;
    Ok(value)
}

/// A header's value.
pub fn header(headers: Option<&async_nats::HeaderMap>, name: &str) -> Option<String> {
    headers
        .and_then(|h| h.get(name))
        .map(|v| v.as_str().to_string())
}

/// Adds the current span's trace context (`traceparent`) to NATS headers, when it is traced.
pub fn inject_trace(headers: &mut async_nats::HeaderMap) {
    if let Some(t) = cc_trace::current() {
        headers.insert(cc_trace::TRACEPARENT, t.as_str());
    }
}

/// The error code of a decision made on a state that another writer changed meanwhile (its
/// append named a version the stream is no longer at).
pub const CONFLICT: &str = "conflict";

/// How many times a command handler decides before a conflict is the caller's answer.
pub const DECIDE_ATTEMPTS: u32 = 8;

/// The pause before deciding again after the `attempt`th conflict: a few milliseconds, more
/// with each attempt, jittered so that writers who collided do not collide again in step.
pub fn conflict_backoff(attempt: u32) -> std::time::Duration {
    let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0] % 8);
    std::time::Duration::from_millis(u64::from(attempt) * (2 + jitter))
}

/// Who sends a command and on behalf of what flow: carried in NATS headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandContext {
    pub tenant: String,
    pub actor: String,
    pub correlation_id: Uuid,
    /// The same key on a retried command means one effect.
    pub idempotency_key: Option<String>,
}

impl CommandContext {
    pub fn new(tenant: &str, actor: impl Into<String>) -> Self {
        Self {
            tenant: tenant.into(),
            actor: actor.into(),
            correlation_id: Uuid::now_v7(),
            idempotency_key: None,
        }
    }

    pub fn with_idempotency_key(mut self, key: Option<String>) -> Self {
        self.idempotency_key = key;
        self
    }

    /// Metadata for the events this command appends: its tenant and correlation, the sender
    /// as the actor.
    pub fn metadata(&self) -> cc_eventstore::Metadata {
        self.metadata_as(&self.actor)
    }

    /// As [`CommandContext::metadata`], with another actor.
    pub fn metadata_as(&self, actor: &str) -> cc_eventstore::Metadata {
        cc_eventstore::Metadata {
            tenant: self.tenant.clone(),
            correlation_id: self.correlation_id,
            causation_id: None,
            actor: Some(actor.into()),
            traceparent: None,
        }
    }

    fn headers(&self) -> async_nats::HeaderMap {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Cc-Actor", self.actor.as_str());
        h.insert(
            "Cc-Correlation-Id",
            self.correlation_id.to_string().as_str(),
        );
        if let Some(k) = &self.idempotency_key {
            h.insert("Idempotency-Key", k.as_str());
        }
        inject_trace(&mut h);
        h
    }

    fn from_message(tenant: &str, headers: Option<&async_nats::HeaderMap>) -> Self {
        let get = |name: &str| header(headers, name);
        Self {
            tenant: tenant.to_string(),
            actor: get("Cc-Actor").unwrap_or_else(|| "unknown".into()),
            correlation_id: get("Cc-Correlation-Id")
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(Uuid::now_v7),
            idempotency_key: get("Idempotency-Key"),
        }
    }
}

/// Why a request got no result.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The service refused the command.
    #[error(transparent)]
    Rejected(#[from] CommandError),
    #[error("no {0} service is running")]
    NoResponders(String),
    #[error("the bus failed: {0}")]
    Transport(String),
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Reply<T> {
    Ok(T),
    Error(CommandError),
}

impl Bus {
    /// Sends a command and waits for its reply.
    pub async fn request<C: Command>(
        &self,
        ctx: &CommandContext,
        command: &C,
    ) -> Result<C::Reply, RequestError> {
        let subject = self.subjects.command(C::SERVICE, &ctx.tenant, C::NAME);
        let body = serde_json::to_vec(command).expect("commands serialize");
        let span = tracing::info_span!(
            "command request",
            otel.name = format!("{} {} request", C::SERVICE, C::NAME),
            otel.kind = "client",
            tenant = %ctx.tenant,
        );
        let reply = async {
            self.client
                .request_with_headers(subject, ctx.headers(), body.into())
                .await
        }
        .instrument(span)
        .await
        .map_err(|e| {
            if e.kind() == async_nats::RequestErrorKind::NoResponders {
                RequestError::NoResponders(C::SERVICE.to_string())
            } else {
                RequestError::Transport(e.to_string())
            }
        })?;
        match serde_json::from_slice::<Reply<C::Reply>>(&reply.payload) {
            Ok(Reply::Ok(r)) => Ok(r),
            Ok(Reply::Error(e)) => Err(RequestError::Rejected(e)),
            Err(e) => Err(RequestError::Transport(format!(
                "unreadable reply from {}: {e}",
                C::SERVICE
            ))),
        }
    }

    /// As [`Bus::request`], asked again while the service cannot be reached (NATS restarting,
    /// no responder for a moment): up to `attempts` times (`None`: until `stop`), waiting 100 ms
    /// doubling up to 2 s in between. A reply, a refusal included, is final; so is `stop`,
    /// which gives the last error.
    pub async fn request_retrying<C: Command>(
        &self,
        ctx: &CommandContext,
        command: &C,
        attempts: Option<u32>,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Result<C::Reply, RequestError> {
        let mut attempt = 0u32;
        loop {
            let e = match self.request(ctx, command).await {
                Err(e @ (RequestError::NoResponders(_) | RequestError::Transport(_))) => e,
                done => return done,
            };
            attempt += 1;
            if attempts.is_some_and(|n| attempt >= n) || stop.is_cancelled() {
                return Err(e);
            }
            if attempt == 1 || attempt.is_multiple_of(10) {
                tracing::info!(error = %e, command = C::NAME, attempt, "command not delivered yet; asking again");
            }
            tokio::select! {
                _ = stop.cancelled() => return Err(e),
                _ = tokio::time::sleep(retry_wait(attempt)) => {}
            }
        }
    }

    /// Sends raw bytes to a command subject (tests of malformed input; tools).
    pub async fn request_raw(
        &self,
        subject: String,
        body: Vec<u8>,
    ) -> Result<serde_json::Value, RequestError> {
        let reply = self
            .client
            .request(subject, body.into())
            .await
            .map_err(|e| RequestError::Transport(e.to_string()))?;
        serde_json::from_slice(&reply.payload).map_err(|e| RequestError::Transport(e.to_string()))
    }
}

/// The wait before attempt `attempt + 1` of [`Bus::request_retrying`].
fn retry_wait(attempt: u32) -> std::time::Duration {
    std::time::Duration::from_millis((100u64 << attempt.saturating_sub(1).min(5)).min(2000))
}

/// Commands one service handles at once per process.
pub const MAX_IN_FLIGHT: usize = 32;

type BoxFut = Pin<Box<dyn Future<Output = Result<serde_json::Value, CommandError>> + Send>>;
type Handler<S> = Arc<dyn Fn(S, CommandContext, Bytes) -> BoxFut + Send + Sync>;

/// The command handlers of one service. Served in a NATS queue group, so replicas share load.
pub struct CommandHandlers<S> {
    service: &'static str,
    state: S,
    handlers: HashMap<&'static str, Handler<S>>,
    idempotency: Option<sqlx::PgPool>,
    metrics: Option<CommandCounter>,
    scope: TenantScope,
}

/// Which tenants' commands a set of handlers answers. Two implementations of one service (the
/// PBX simulator and the SIP gateway both implement `pbx`) split the tenants between them:
/// each serves in a queue group of its own and leaves the other's tenants unanswered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TenantScope {
    /// Every tenant (the default).
    #[default]
    All,
    /// Only these tenants.
    Only(Vec<String>),
    /// Every tenant but these.
    Except(Vec<String>),
    /// The tenants of one partition: each partition's leader serves in a queue group of its
    /// own (`<service>.p<k>`), so every partition's leader sees each command and the one whose
    /// tenant it is answers.
    Partition(cc_core::Partition),
}

impl TenantScope {
    /// Whether a command for `tenant` is answered here.
    pub fn serves(&self, tenant: &str) -> bool {
        match self {
            TenantScope::All => true,
            TenantScope::Only(t) => t.iter().any(|x| x == tenant),
            TenantScope::Except(t) => !t.iter().any(|x| x == tenant),
            TenantScope::Partition(p) => p.contains(tenant),
        }
    }

    /// The NATS queue group: one per scope kind, so that two implementations of a service
    /// both see every command (and each answers its own tenants).
    fn queue_group(&self, service: &str) -> String {
        match self {
            TenantScope::All | TenantScope::Except(_) => service.to_string(),
            TenantScope::Only(_) => format!("{service}.only"),
            TenantScope::Partition(p) if p.count > 1 => format!("{service}.p{}", p.index),
            TenantScope::Partition(_) => service.to_string(),
        }
    }
}

/// `cc_commands_total{service, command, outcome}`: commands handled, by outcome (`ok` or the
/// error code).
pub type CommandCounter = prometheus_client::metrics::family::Family<
    Vec<(String, String)>,
    prometheus_client::metrics::counter::Counter,
>;

impl<S: Clone + Send + Sync + 'static> CommandHandlers<S> {
    pub fn new(service: &'static str, state: S) -> Self {
        Self {
            service,
            state,
            handlers: HashMap::new(),
            idempotency: None,
            metrics: None,
            scope: TenantScope::All,
        }
    }

    /// Counts every command handled in `counter`.
    pub fn with_metrics(mut self, counter: CommandCounter) -> Self {
        self.metrics = Some(counter);
        self
    }

    /// Remembers the reply of every successful command sent with an `Idempotency-Key`, so a
    /// retry with the same key (a double click, a network retry) gets the same reply and has
    /// no second effect. Kept in `bus_idempotency` for a day.
    pub fn with_idempotency(mut self, pool: sqlx::PgPool) -> Self {
        self.idempotency = Some(pool);
        self
    }

    /// Answers only the commands of the tenants in `scope`.
    pub fn with_tenants(mut self, scope: TenantScope) -> Self {
        self.scope = scope;
        self
    }

    /// Registers the handler of command `C`.
    pub fn on<C, F, Fut>(mut self, f: F) -> Self
    where
        C: Command,
        F: Fn(S, CommandContext, C) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<C::Reply, CommandError>> + Send + 'static,
    {
        assert_eq!(
            C::SERVICE,
            self.service,
            "command {} belongs to another service",
            C::NAME
        );
        let f = Arc::new(f);
        let handler: Handler<S> = Arc::new(move |state, ctx, body| {
            let f = f.clone();
            Box::pin(async move {
                // A conflict (another writer appended to a stream this decision was made on)
                // means the decision was made on a stale state: it is made again on the new
                // one, a few times, before the caller hears `conflict`.
                let mut attempt = 1;
                let reply = loop {
                    let command: C = parse_json(&body)?;
                    match f(state.clone(), ctx.clone(), command).await {
                        Err(e) if e.error == CONFLICT && attempt < DECIDE_ATTEMPTS => {
                            tracing::debug!(
                                command = C::NAME,
                                attempt,
                                "deciding again after a conflict"
                            );
                            tokio::time::sleep(conflict_backoff(attempt)).await;
                            attempt += 1;
                        }
                        r => break r?,
                    }
                };
                Ok(serde_json::to_value(reply).expect("replies serialize"))
            })
        });
        self.handlers.insert(C::NAME, handler);
        self
    }

    /// The names of the registered commands.
    pub fn names(&self) -> Vec<&'static str> {
        let mut n: Vec<_> = self.handlers.keys().copied().collect();
        n.sort();
        n
    }

    /// Serves commands until `cancel`; then stops taking new ones and finishes those in flight.
    pub async fn serve(
        self,
        bus: Bus,
        cancel: CancellationToken,
    ) -> Result<(), async_nats::SubscribeError> {
        let subject = bus.subjects.service_commands(self.service);
        let mut sub = bus
            .client
            .queue_subscribe(subject, self.scope.queue_group(self.service))
            .await?;
        let scope = self.scope.clone();
        let handlers = Arc::new(self.handlers);
        let idempotency = self.idempotency.clone();
        let metrics = self.metrics.clone();
        let mut in_flight = tokio::task::JoinSet::new();
        // A burst of commands queues here (in NATS's buffer) instead of every handler grabbing
        // a database connection at once and timing out.
        let permits = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
        loop {
            let permit = tokio::select! {
                _ = cancel.cancelled() => break,
                p = permits.clone().acquire_owned() => p.expect("never closed"),
            };
            let msg = tokio::select! {
                _ = cancel.cancelled() => break,
                m = sub.next() => match m { Some(m) => m, None => break },
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => { drop(permit); continue }
            };
            let Some(reply_to) = msg.reply.clone() else {
                continue;
            };
            if let Some((_, tenant, _)) = bus.subjects.parse_command(msg.subject.as_str()) {
                if !scope.serves(tenant) {
                    continue; // another implementation of this service answers that tenant
                }
            }
            let (bus, handlers, state, service) = (
                bus.clone(),
                handlers.clone(),
                self.state.clone(),
                self.service,
            );
            let idempotency = idempotency.clone();
            let metrics = metrics.clone();
            in_flight.spawn(async move {
                let _permit = permit;
                let mut reply_trace = None;
                let reply = match bus.subjects.parse_command(msg.subject.as_str()) {
                    None => Err(CommandError::new(
                        "invalid_subject",
                        format!("{} is not a command subject", msg.subject),
                    )),
                    Some((_, tenant, name)) => match handlers.get(name) {
                        None => {
                            let mut known: Vec<_> = handlers.keys().copied().collect();
                            known.sort();
                            Err(CommandError::new(
                                "unknown_command",
                                format!(
                                    "{service} has no command {name:?}; known: {}",
                                    known.join(", ")
                                ),
                            ))
                        }
                        Some(h) => {
                            let ctx = CommandContext::from_message(tenant, msg.headers.as_ref());
                            let span = cc_trace::following(
                                tracing::info_span!(
                                    "command",
                                    otel.name = format!("{service} {name}"),
                                    otel.kind = "server",
                                    tenant = %tenant,
                                    actor = %ctx.actor,
                                ),
                                header(msg.headers.as_ref(), cc_trace::TRACEPARENT).as_deref(),
                            );
                            reply_trace = cc_trace::of(&span);
                            // Keys are the caller's: another user reusing one gets no one else's reply.
                            let key = ctx
                                .idempotency_key
                                .as_ref()
                                .map(|k| format!("{}:{k}", ctx.actor));
                            let run = AssertUnwindSafe(
                                h(state, ctx, msg.payload.clone()).instrument(span.clone()),
                            )
                            .catch_unwind()
                            .map(|r| {
                                r.unwrap_or_else(|_| {
                                    Err(CommandError::internal(format!(
                                        "{service} failed on {name}"
                                    )))
                                })
                            });
                            match (&idempotency, &key) {
                                (Some(pool), Some(k)) => {
                                    once(pool, service, tenant, name, k, run).await
                                }
                                _ => run.await,
                            }
                        }
                    },
                };
                if let Some(m) = &metrics {
                    let name = bus
                        .subjects
                        .parse_command(msg.subject.as_str())
                        .map(|p| p.2)
                        .unwrap_or("?");
                    let outcome = match &reply {
                        Ok(_) => "ok".to_string(),
                        Err(e) => e.error.clone(),
                    };
                    m.get_or_create(&vec![
                        ("service".to_string(), service.to_string()),
                        ("command".to_string(), name.to_string()),
                        ("outcome".to_string(), outcome),
                    ])
                    .inc();
                }
                let body = match reply {
                    Ok(v) => serde_json::to_vec(&Reply::Ok(v)),
                    Err(e) => serde_json::to_vec(&Reply::<()>::Error(e)),
                }
                .expect("replies serialize");
                let sent = match reply_trace {
                    // The reply names the handler's span, so the sender may continue from it.
                    Some(t) => {
                        let mut h = async_nats::HeaderMap::new();
                        h.insert(cc_trace::TRACEPARENT, t.as_str());
                        bus.client
                            .publish_with_headers(reply_to, h, body.into())
                            .await
                    }
                    None => bus.client.publish(reply_to, body.into()).await,
                };
                if let Err(e) = sent {
                    tracing::warn!(error = %e, "could not send a command reply");
                }
            });
        }
        let _ = sub.unsubscribe().await;
        while in_flight.join_next().await.is_some() {}
        Ok(())
    }
}

/// How long a copy of a command waits for the first copy's reply before it gives up; a claim
/// older than this was left by a process that died mid-command and is taken over.
const CLAIM_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs a command sent with an idempotency key once. The key is claimed (a row without a
/// reply) before the handler runs, so a copy sent at the same instant waits for the first and
/// gets its reply; a later copy finds the remembered reply. A refusal releases the claim: the
/// same key may be tried again. No connection is held while the handler runs.
async fn once(
    pool: &sqlx::PgPool,
    service: &str,
    tenant: &str,
    command: &str,
    key: &str,
    run: impl std::future::Future<Output = Result<serde_json::Value, CommandError>>,
) -> Result<serde_json::Value, CommandError> {
    let deadline = tokio::time::Instant::now() + CLAIM_WAIT;
    loop {
        // Claim the key, or see who has it: (claimed by us, its command, its reply).
        let row: Option<(bool, String, Option<serde_json::Value>)> = sqlx::query_as(
            "with claim as (
               insert into bus_idempotency (service, tenant, key, command, reply)
               values ($1, $2, $3, $4, null)
               on conflict (service, tenant, key) do update
                 set command = excluded.command, reply = null, created_at = now()
                 where (bus_idempotency.reply is not null
                        and bus_idempotency.created_at < now() - make_interval(secs => $5))
                    or (bus_idempotency.reply is null
                        and bus_idempotency.created_at < now() - make_interval(secs => $6))
               returning true)
             select true, $4, null::jsonb from claim
             union all
             select false, command, reply from bus_idempotency
              where service = $1 and tenant = $2 and key = $3 and not exists (select 1 from claim)",
        )
        .bind(service)
        .bind(tenant)
        .bind(key)
        .bind(command)
        .bind(86400.0_f64)
        .bind(CLAIM_WAIT.as_secs_f64())
        .fetch_optional(pool)
        .await?;
        let Some(row) = row else {
            continue; // the claim was released between the two: claim again
        };
        match row {
            (true, _, _) => break,
            (false, c, Some(reply)) if c == command => return Ok(reply),
            (false, c, Some(_)) => {
                return Err(CommandError::field(
                    "conflict",
                    "Idempotency-Key",
                    format!("this key was used for another action ({c}) in the last day"),
                ))
            }
            (false, _, None) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await
            }
            (false, _, None) => {
                return Err(CommandError::new(
                    "unavailable",
                    "the first request with this Idempotency-Key has not finished; try again",
                ))
            }
        }
    }
    let r = run.await;
    let done = match &r {
        Ok(reply) => sqlx::query(
            "update bus_idempotency set reply = $4 where service = $1 and tenant = $2 and key = $3",
        )
        .bind(service)
        .bind(tenant)
        .bind(key)
        .bind(reply)
        .execute(pool)
        .await,
        Err(_) => sqlx::query(
            "delete from bus_idempotency where service = $1 and tenant = $2 and key = $3 and reply is null",
        )
        .bind(service)
        .bind(tenant)
        .bind(key)
        .execute(pool)
        .await,
    };
    if let Err(e) = done {
        tracing::warn!(error = %e, "could not remember an idempotent reply");
    }
    r
}

impl From<sqlx::Error> for CommandError {
    fn from(e: sqlx::Error) -> Self {
        tracing::error!(error = %e, "database error while handling a command");
        CommandError::internal("the database failed; nothing was changed")
    }
}

impl From<cc_eventstore::AppendError> for CommandError {
    fn from(e: cc_eventstore::AppendError) -> Self {
        match e {
            cc_eventstore::AppendError::Conflict { .. } => CommandError::new(
                CONFLICT,
                "the state changed at the same moment; nothing was changed, try again",
            ),
            // Another replica took over the lease: it answers from now on.
            cc_eventstore::AppendError::Fenced { .. } => CommandError::new(
                "unavailable",
                "the service is changing hands; nothing was changed, try again",
            ),
            other => {
                tracing::error!(error = %other, "append failed while handling a command");
                CommandError::internal("the event store refused the change; nothing was changed")
            }
        }
    }
}

impl From<RequestError> for CommandError {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::Rejected(e) => e,
            RequestError::NoResponders(s) => {
                CommandError::new("unavailable", format!("the {s} service is not running"))
            }
            RequestError::Transport(m) => CommandError::new("unavailable", m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Pause {
        reason: String,
        device: Device,
    }
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Device {
        number: u32,
    }

    #[test]
    fn parse_errors_name_the_field() {
        let e = parse_json::<Pause>(br#"{"device": {"number": 1}}"#).unwrap_err();
        assert_eq!(
            (e.error.as_str(), e.field.as_deref()),
            ("missing_field", Some("reason"))
        );
        let e =
            parse_json::<Pause>(br#"{"reason": "Lunch", "device": {"number": "x"}}"#).unwrap_err();
        assert_eq!(
            (e.error.as_str(), e.field.as_deref()),
            ("invalid_field", Some("device.number"))
        );
        let e = parse_json::<Pause>(br#"{"reason": "Lunch", "device": {}}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("device.number"));
        let e = parse_json::<Pause>(b"{not json").unwrap_err();
        assert_eq!((e.error.as_str(), e.field), ("invalid_json", None));
        // Nothing but whitespace after the value.
        let valid = r#"{"reason": "Lunch", "device": {"number": 1}}"#;
        let e = parse_json::<Pause>(format!("{valid} x").as_bytes()).unwrap_err();
        assert_eq!((e.error.as_str(), e.field), ("invalid_json", None));
        assert!(parse_json::<Pause>(format!("{valid} \n").as_bytes()).is_ok());
        let e = parse_json::<serde::de::IgnoredAny>(b"1 2").unwrap_err();
        assert_eq!(e.error, "invalid_json");
    }

    #[test]
    fn an_unknown_field_is_named_even_when_its_name_is_empty() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Strict {
            held: Option<bool>,
        }
        let e = parse_json::<Strict>(br#"{"colour": 1}"#).unwrap_err();
        assert_eq!(
            (e.error.as_str(), e.field.as_deref()),
            ("invalid_field", Some("colour"))
        );
        let e = parse_json::<Strict>(br#"{"": 1}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("\"\""));
    }
}
