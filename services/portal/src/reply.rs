//! What handlers answer, each type naming its status and body to the document
//! ([`crate::route::Output`]).

use std::borrow::Cow;
use std::marker::PhantomData;

use axum::http::{header, StatusCode};
use axum::response::sse::Sse;
use axum::response::{IntoResponse, Response};
use axum::Json;
use schemars::{JsonSchema, Schema, SchemaGenerator};

use crate::error::ApiError;
use crate::route::{schema_of, Output, Reply, Shape};

const JSON: &str = "application/json";

/// 200 with `T` as JSON.
impl<T: JsonSchema> Output for Json<T> {
    fn describe(s: &mut Shape) {
        s.replies.push(Reply {
            status: 200,
            description: "OK",
            content: vec![(JSON, schema_of::<T>)],
            headers: vec![],
        });
    }
}

/// 201 with what was created, as JSON.
pub struct Created<T>(pub T);

impl<T: serde::Serialize> IntoResponse for Created<T> {
    fn into_response(self) -> Response {
        (StatusCode::CREATED, Json(self.0)).into_response()
    }
}

impl<T: JsonSchema> Output for Created<T> {
    fn describe(s: &mut Shape) {
        s.replies.push(Reply {
            status: 201,
            description: "Created",
            content: vec![(JSON, schema_of::<T>)],
            headers: vec![],
        });
    }
}

/// 204: done, nothing to say.
pub struct NoContent;

impl IntoResponse for NoContent {
    fn into_response(self) -> Response {
        StatusCode::NO_CONTENT.into_response()
    }
}

impl Output for NoContent {
    fn describe(s: &mut Shape) {
        s.replies.push(Reply {
            status: 204,
            description: "Done",
            content: vec![],
            headers: vec![],
        });
    }
}

/// 202: taken on; what follows comes as events.
pub struct Accepted;

impl IntoResponse for Accepted {
    fn into_response(self) -> Response {
        StatusCode::ACCEPTED.into_response()
    }
}

impl Output for Accepted {
    fn describe(s: &mut Shape) {
        s.replies.push(Reply {
            status: 202,
            description: "Accepted: what follows comes as events",
            content: vec![],
            headers: vec![],
        });
    }
}

/// A reply that sets (or clears) the session cookie.
pub struct SetCookie<R>(pub String, pub R);

impl<R: IntoResponse> IntoResponse for SetCookie<R> {
    fn into_response(self) -> Response {
        ([(header::SET_COOKIE, self.0)], self.1).into_response()
    }
}

impl<R: Output> Output for SetCookie<R> {
    fn describe(s: &mut Shape) {
        R::describe(s);
        for r in &mut s.replies {
            r.headers.push((
                "Set-Cookie",
                "The session cookie cc_session (HttpOnly, SameSite=Strict; Secure over https)",
            ));
        }
    }
}

/// A Server-Sent Events stream, its events described by `E`: an enum tagged by `event`, each
/// variant with the `data` (and `id`) of its events, as an EventSource reads them.
pub struct Events<E, S>(Sse<S>, PhantomData<E>);

impl<E, S> Events<E, S> {
    pub fn new(sse: Sse<S>) -> Self {
        Events(sse, PhantomData)
    }
}

impl<E, S> IntoResponse for Events<E, S>
where
    Sse<S>: IntoResponse,
{
    fn into_response(self) -> Response {
        self.0.into_response()
    }
}

impl<E: JsonSchema, S> Output for Events<E, S> {
    fn describe(s: &mut Shape) {
        s.replies.push(Reply {
            status: 200,
            description: "The event stream (each event as the schema says)",
            content: vec![("text/event-stream", schema_of::<E>)],
            headers: vec![],
        });
    }
}

/// A string holding `T` as JSON (an event's `data`).
pub struct JsonText<T>(PhantomData<T>);

impl<T: JsonSchema> JsonSchema for JsonText<T> {
    fn schema_name() -> Cow<'static, str> {
        format!("JsonText_{}", T::schema_name()).into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        schemars::json_schema!({
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": g.subschema_for::<T>(),
        })
    }
}

/// A reply, or a refusal: any of them may be a fault of ours (500 `internal`).
impl<R: Output> Output for Result<R, ApiError> {
    fn describe(s: &mut Shape) {
        R::describe(s);
        s.refuses(&["internal"]);
    }
}
