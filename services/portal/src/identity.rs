//! Who is asking: the tenant (from the subdomain, or the `X-Tenant` header for local use), the
//! signed-in principal (session cookie `cc_session` or `Authorization: Bearer <token>`) and the
//! client's address (the TCP peer, or what a trusted proxy forwarded).

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use cc_bus::{CommandContext, CommandError};
use cc_contracts::auth::{Authenticate, Principal, Role};
use cc_runtime::{Networks, ProxyHeader};

use crate::error::ApiError;
use crate::route::Access;
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
        // The route's access rule (from its entry in the route table): a role it does not
        // list is refused here, before the handler runs.
        match parts.extensions.get::<Access>() {
            Some(Access::Roles(roles)) if roles.contains(&principal.role) => {}
            Some(Access::Roles(roles)) if roles == &[Role::Agent] => {
                return Err(crate::error::forbidden(
                    "this is an agent's action; sign in as the agent",
                ));
            }
            Some(Access::Roles(_)) => {
                return Err(crate::error::forbidden("your role may not do this"));
            }
            Some(Access::Public) | None => {
                return Err(ApiError(CommandError::internal(
                    "this route has no access rule for signed-in principals",
                )));
            }
        }
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

/// Where a request came from: the client's address and whether the client reached us over
/// https. Forwarding headers are believed only from a trusted proxy (`CC_TRUSTED_PROXIES`),
/// so a client cannot pick the address its sign-in failures are counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub client: IpAddr,
    pub https: bool,
}

/// The origin of a request from TCP peer `peer`. From a trusted proxy, the client is the
/// right-most forwarded address that is not itself a trusted proxy (the left of it was written
/// by whoever the proxy talked to, so it proves nothing); otherwise the peer is the client.
pub fn origin_of(
    headers: &HeaderMap,
    peer: IpAddr,
    trusted: &Networks,
    header: ProxyHeader,
) -> Origin {
    let peer = peer.to_canonical();
    if !trusted.contains(peer) {
        return Origin {
            client: peer,
            https: false,
        };
    }
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|h| h.to_str().ok())
            .map(str::to_string)
            .collect()
    };
    // Each hop: (the address it names, if it is one; the protocol it reports).
    let hops: Vec<(Option<IpAddr>, Option<String>)> = match header {
        ProxyHeader::XForwardedFor => values("x-forwarded-for")
            .iter()
            .flat_map(|v| v.split(','))
            .map(|node| (node_address(node), None))
            .collect(),
        ProxyHeader::Forwarded => values("forwarded")
            .iter()
            .flat_map(|v| forwarded_elements(v))
            .map(|pairs| {
                let get = |key: &str| {
                    pairs
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(key))
                        .map(|(_, v)| v.clone())
                };
                (get("for").and_then(|n| node_address(&n)), get("proto"))
            })
            .collect(),
    };
    let mut client = peer;
    let mut proto = None;
    for (address, hop_proto) in hops.iter().rev() {
        // An obfuscated or unknown node ends the chain: the last proxy counts as the client.
        let Some(address) = address.map(|a| a.to_canonical()) else {
            break;
        };
        client = address;
        proto = hop_proto.clone();
        if !trusted.contains(address) {
            break;
        }
    }
    let https = match header {
        ProxyHeader::Forwarded => proto,
        // Proxies set X-Forwarded-Proto to what they saw; the nearest one is believed.
        ProxyHeader::XForwardedFor => values("x-forwarded-proto")
            .iter()
            .flat_map(|v| v.split(','))
            .map(|p| p.trim().to_string())
            .next_back(),
    }
    .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    Origin { client, https }
}

/// The address of a forwarded node: `192.0.2.7`, `192.0.2.7:4711`, `2001:db8::1`,
/// `[2001:db8::1]:4711`, possibly quoted; `None` for `unknown` or an obfuscated name.
fn node_address(node: &str) -> Option<IpAddr> {
    let node = node.trim().trim_matches('"');
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    if let Ok(ip) = node.parse() {
        return Some(ip);
    }
    match node.split_once(':') {
        Some((v4, port)) if !port.contains(':') => v4.parse().ok(),
        _ => None,
    }
}

/// The elements of a `Forwarded` header value, each as its `key=value` pairs, with quoted
/// strings unquoted (RFC 7239 section 4: elements split by `,`, pairs by `;`).
fn forwarded_elements(value: &str) -> Vec<Vec<(String, String)>> {
    let mut elements = vec![vec![]];
    let (mut pair, mut quoted, mut escaped) = (String::new(), false, false);
    let finish = |pair: &mut String, element: &mut Vec<(String, String)>| {
        if let Some((k, v)) = pair.split_once('=') {
            element.push((k.trim().to_string(), v.trim().to_string()));
        }
        pair.clear();
    };
    for c in value.chars() {
        match c {
            _ if escaped => {
                pair.push(c);
                escaped = false;
            }
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => finish(&mut pair, elements.last_mut().expect("one element")),
            ',' if !quoted => {
                finish(&mut pair, elements.last_mut().expect("one element"));
                elements.push(vec![]);
            }
            _ => pair.push(c),
        }
    }
    finish(&mut pair, elements.last_mut().expect("one element"));
    elements.retain(|e| !e.is_empty());
    elements
}

impl FromRequestParts<Portal> for Origin {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut Parts,
        state: &Portal,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .ok_or_else(|| ApiError(CommandError::internal("no peer address for the request")))?;
        let config = &state.ctx.config;
        Ok(origin_of(
            &parts.headers,
            peer,
            &config.trusted_proxies,
            config.trusted_proxy_header,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(peer: &str, trusted: &str, header: ProxyHeader, hs: &[(&str, &str)]) -> Origin {
        let mut headers = HeaderMap::new();
        for (k, v) in hs {
            headers.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        origin_of(
            &headers,
            peer.parse().unwrap(),
            &Networks::parse_list(trusted).unwrap(),
            header,
        )
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    use ProxyHeader::{Forwarded, XForwardedFor};

    #[test]
    fn forwarding_headers_from_an_untrusted_peer_are_ignored() {
        let o = origin(
            "203.0.113.5",
            "",
            XForwardedFor,
            &[
                ("x-forwarded-for", "198.51.100.7"),
                ("x-forwarded-proto", "https"),
            ],
        );
        assert_eq!(
            o,
            Origin {
                client: ip("203.0.113.5"),
                https: false
            }
        );
        let o = origin(
            "203.0.113.5",
            "10.0.0.0/8",
            Forwarded,
            &[("forwarded", "for=198.51.100.7;proto=https")],
        );
        assert_eq!(
            o,
            Origin {
                client: ip("203.0.113.5"),
                https: false
            }
        );
    }

    #[test]
    fn from_a_trusted_proxy_the_right_most_untrusted_address_is_the_client() {
        let t = "10.0.0.0/8";
        // The client's own (forged) entries are left of the one the proxy appended.
        let o = origin(
            "10.0.0.2",
            t,
            XForwardedFor,
            &[
                ("x-forwarded-for", "1.1.1.1, 198.51.100.7"),
                ("x-forwarded-for", "10.0.0.9"),
            ],
        );
        assert_eq!(o.client, ip("198.51.100.7"));
        assert!(!o.https);
        let o = origin(
            "10.0.0.2",
            t,
            XForwardedFor,
            &[("x-forwarded-proto", "http, https")],
        );
        assert_eq!(
            o,
            Origin {
                client: ip("10.0.0.2"),
                https: true
            },
            "no XFF: the proxy itself"
        );
        let o = origin(
            "::ffff:10.0.0.2",
            t,
            XForwardedFor,
            &[
                ("x-forwarded-for", "[2001:db8::7]:4711"),
                ("x-forwarded-proto", "https"),
            ],
        );
        assert_eq!(
            o,
            Origin {
                client: ip("2001:db8::7"),
                https: true
            }
        );
        let o = origin(
            "10.0.0.2",
            t,
            XForwardedFor,
            &[("x-forwarded-for", "198.51.100.7:5060")],
        );
        assert_eq!(o.client, ip("198.51.100.7"));
        // Only the configured header counts: the other one passes through the proxy as the
        // client wrote it.
        let o = origin(
            "10.0.0.2",
            t,
            XForwardedFor,
            &[("forwarded", "for=198.51.100.7")],
        );
        assert_eq!(o.client, ip("10.0.0.2"));
        let o = origin(
            "10.0.0.2",
            t,
            Forwarded,
            &[("x-forwarded-for", "198.51.100.7")],
        );
        assert_eq!(o.client, ip("10.0.0.2"));
    }

    #[test]
    fn rfc_7239_elements_quoted_values_and_unknown_nodes() {
        let t = "10.0.0.0/8";
        let o = origin(
            "10.0.0.2",
            t,
            Forwarded,
            &[(
                "forwarded",
                r#"for=1.1.1.1;proto=http, For="[2001:db8:cafe::17]:4711";Proto=https;by=_lb, for=10.0.0.3"#,
            )],
        );
        assert_eq!(
            o,
            Origin {
                client: ip("2001:db8:cafe::17"),
                https: true
            }
        );
        // An obfuscated node stops the walk at the proxy that reported it.
        let o = origin(
            "10.0.0.2",
            t,
            Forwarded,
            &[(
                "forwarded",
                "for=198.51.100.7, for=_hidden, for=10.0.0.3;proto=https",
            )],
        );
        assert_eq!(
            o,
            Origin {
                client: ip("10.0.0.3"),
                https: true
            }
        );
        let o = origin(
            "10.0.0.2",
            t,
            XForwardedFor,
            &[("x-forwarded-for", "unknown")],
        );
        assert_eq!(o.client, ip("10.0.0.2"));
        // Commas and semicolons inside quotes do not split.
        assert_eq!(
            forwarded_elements(r#"for="a,b;c";proto=https"#),
            vec![vec![
                ("for".to_string(), "a,b;c".to_string()),
                ("proto".to_string(), "https".to_string())
            ]]
        );
    }
}
