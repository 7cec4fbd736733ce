//! Who is asking: the tenant (from the subdomain, or the `X-Tenant` header for local use) and
//! the signed-in principal (session cookie `cc_session` or `Authorization: Bearer <token>`).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use cc_bus::{CommandContext, CommandError};
use cc_contracts::auth::{Authenticate, Principal, Role};

use crate::error::ApiError;
use crate::Portal;

pub const COOKIE: &str = "cc_session";

/// The tenant of a request.
#[derive(Debug, Clone)]
pub struct Tenant(pub String);

/// The tenant from `Host` (`<tenant>.<base domain>`), else from `X-Tenant`.
pub fn tenant_of(headers: &HeaderMap, base_domain: &str) -> Result<String, CommandError> {
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let host = host.split(':').next().unwrap_or("");
    let from_host = host
        .strip_suffix(base_domain)
        .and_then(|s| s.strip_suffix('.'))
        .filter(|s| !s.is_empty() && !s.contains('.'));
    let tenant = match (
        from_host,
        headers.get("x-tenant").and_then(|h| h.to_str().ok()),
    ) {
        (Some(t), _) => t.to_string(),
        (None, Some(t)) => t.trim().to_string(),
        (None, None) => {
            return Err(CommandError::new(
                "missing_tenant",
                format!(
                    "no tenant: use https://<tenant>.{base_domain}/ or send the X-Tenant header"
                ),
            ))
        }
    };
    cc_eventstore::StreamName::new(&tenant, "tenant", "x").map_err(|_| {
        CommandError::field(
            "invalid_tenant",
            "tenant",
            format!("{tenant:?} is not a tenant name"),
        )
    })?;
    Ok(tenant)
}

impl FromRequestParts<Portal> for Tenant {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut Parts,
        state: &Portal,
    ) -> Result<Self, Self::Rejection> {
        Ok(Tenant(tenant_of(
            &parts.headers,
            &state.ctx.config.base_domain,
        )?))
    }
}

/// A signed-in principal of the request's tenant.
#[derive(Debug, Clone)]
pub struct Authed {
    pub principal: Principal,
    pub token: String,
    pub idempotency_key: Option<String>,
}

impl Authed {
    /// The command context for acting on behalf of this principal.
    pub fn context(&self) -> CommandContext {
        let actor = match self.principal.role {
            Role::Agent => format!("agent:{}", self.principal.principal),
            _ => format!("user:{}", self.principal.principal),
        };
        CommandContext::new(&self.principal.tenant, actor)
            .with_idempotency_key(self.idempotency_key.clone())
    }

    pub fn tenant(&self) -> &str {
        &self.principal.tenant
    }

    /// The agent number of an agent principal, or 403.
    pub fn agent(&self) -> Result<cc_contracts::domain::AgentNumber, ApiError> {
        if self.principal.role != Role::Agent {
            return Err(crate::error::forbidden(
                "this is an agent's action; sign in as the agent",
            ));
        }
        cc_contracts::domain::AgentNumber::parse(&self.principal.principal)
            .map_err(|e| ApiError(CommandError::internal(e.message)))
    }

    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.principal.role) {
            Ok(())
        } else {
            Err(crate::error::forbidden("your role may not do this"))
        }
    }
}

pub fn token_of(headers: &HeaderMap) -> Option<String> {
    if let Some(t) = headers
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
    {
        return Some(t.trim().to_string());
    }
    headers
        .get_all("cookie")
        .iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(|h| h.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

impl FromRequestParts<Portal> for Authed {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut Parts,
        state: &Portal,
    ) -> Result<Self, Self::Rejection> {
        let Tenant(tenant) = Tenant::from_request_parts(parts, state).await?;
        let token = token_of(&parts.headers).ok_or_else(|| {
            ApiError(CommandError::new(
                "unauthenticated",
                "sign in first (no session cookie or bearer token)",
            ))
        })?;
        let principal = state
            .ctx
            .bus
            .request(
                &CommandContext::new(&tenant, "portal"),
                &Authenticate {
                    token: token.clone(),
                },
            )
            .await?;
        let idempotency_key = parts
            .headers
            .get("idempotency-key")
            .and_then(|h| h.to_str().ok())
            .map(|s| s.to_string());
        Ok(Authed {
            principal,
            token,
            idempotency_key,
        })
    }
}
