//! What handlers take from a request, each describing itself to the document
//! ([`crate::route::Input`]): the JSON body, the path and query parameters, the headers read;
//! and the state, tenant, session and origin extractors, which add nothing to the body but
//! their refusals.

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, FromRequestParts, Query, RawPathParams, Request, State};
use axum::http::request::Parts;
use bytes::Bytes;
use cc_bus::CommandError;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::identity::{Authed, Origin, Tenant};
use crate::route::{schema_of, Header, Input, Shape};
use crate::Portal;

/// The codes of a body that is not the route's JSON object.
const BODY_CODES: &[&str] = &["invalid_json", "invalid_field", "missing_field"];

/// A JSON object body of type `T`, parsed by [`crate::error::body`]: every field of its type,
/// none it does not know.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Portal> for Body<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &Portal) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError(CommandError::new("invalid_json", e.body_text())))?;
        crate::error::body(&bytes).map(Body)
    }
}

impl<T: JsonSchema> Input for Body<T> {
    fn describe(s: &mut Shape) {
        s.body = Some((schema_of::<T>, true));
        s.refuses(BODY_CODES);
    }
}

/// As [`Body`], but an empty body is `T::default()`.
pub struct MaybeBody<T>(pub T);

impl<T: DeserializeOwned + Default> FromRequest<Portal> for MaybeBody<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &Portal) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError(CommandError::new("invalid_json", e.body_text())))?;
        if bytes.is_empty() {
            return Ok(MaybeBody(T::default()));
        }
        crate::error::body(&bytes).map(MaybeBody)
    }
}

impl<T: JsonSchema> Input for MaybeBody<T> {
    fn describe(s: &mut Shape) {
        s.body = Some((schema_of::<T>, false));
        s.refuses(BODY_CODES);
    }
}

/// Text parameters (path or query) as an object of strings, parsed into `T` naming the
/// parameter at fault (400 `invalid_field`, as a body's field). `T`'s fields are the
/// parameters; each must parse from a string.
fn from_strings<T: DeserializeOwned>(pairs: Vec<(String, String)>) -> Result<T, ApiError> {
    let mut map = Map::new();
    for (k, v) in pairs {
        if map.insert(k.clone(), Value::String(v)).is_some() {
            return Err(ApiError(CommandError::field(
                "invalid_field",
                &k,
                format!("{k} is given twice"),
            )));
        }
    }
    serde_path_to_error::deserialize(Value::Object(map))
        .map_err(|e| ApiError(CommandError::from_json(e)))
}

/// The path's parameters as `T` (a struct with one field per `{name}` of the path).
pub struct PathParams<T>(pub T);

impl<T: DeserializeOwned> FromRequestParts<Portal> for PathParams<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &Portal) -> Result<Self, ApiError> {
        let raw = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError(CommandError::field("invalid_field", "path", e.body_text())))?;
        let pairs = raw
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        from_strings(pairs).map(PathParams)
    }
}

impl<T: JsonSchema> Input for PathParams<T> {
    fn describe(s: &mut Shape) {
        s.path = Some(schema_of::<T>);
        s.refuses(&["invalid_field"]);
    }
}

/// The query's parameters as `T` (a struct with one field per parameter; unknown ones are
/// refused when `T` denies unknown fields).
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned> FromRequestParts<Portal> for QueryParams<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &Portal) -> Result<Self, ApiError> {
        let Query(pairs): Query<Vec<(String, String)>> = Query::from_request_parts(parts, state)
            .await
            .map_err(|e: QueryRejection| {
                ApiError(CommandError::field("invalid_field", "query", e.body_text()))
            })?;
        from_strings(pairs).map(QueryParams)
    }
}

impl<T: JsonSchema> Input for QueryParams<T> {
    fn describe(s: &mut Shape) {
        s.query = Some(schema_of::<T>);
        s.refuses(&["invalid_field"]);
    }
}

/// The `Last-Event-ID` header of a reconnecting event stream: the last version it got.
pub struct LastEventId(pub Option<i64>);

impl FromRequestParts<Portal> for LastEventId {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &Portal) -> Result<Self, Self::Rejection> {
        Ok(LastEventId(
            parts
                .headers
                .get("last-event-id")
                .and_then(|h| h.to_str().ok())
                .and_then(|s| s.trim().parse().ok()),
        ))
    }
}

impl Input for LastEventId {
    fn describe(s: &mut Shape) {
        s.headers.push(Header {
            name: "Last-Event-ID",
            description: "The id (version) of the last event received: the stream resumes after it without losing a change (an id it cannot resume from sends the current view; one that is not a whole number is ignored)",
            // Any text: a browser's EventSource sends back whatever id it got.
            schema: schema_of::<String>,
        });
    }
}

impl Input for State<Portal> {}

impl Input for Origin {}

/// The tenant's codes: no tenant given, or not a tenant's name.
const TENANT_CODES: &[&str] = &["missing_tenant", "invalid_tenant"];

impl Input for Tenant {
    fn describe(s: &mut Shape) {
        s.tenant = true;
        s.refuses(TENANT_CODES);
    }
}

impl Input for Authed {
    fn describe(s: &mut Shape) {
        s.tenant = true;
        s.session = true;
        s.refuses(TENANT_CODES);
        // The session is checked by the auth service: it may not answer, or fail.
        s.refuses(&["unauthenticated", "unavailable", "internal"]);
    }
}
