//! A route of the API as data: its method and path, the handler that serves it, who may call
//! it, and what the OpenAPI document says of it. The router and the document are both built
//! from the one list of routes ([`crate::api::routes`]): neither can have a route the other
//! lacks, and the roles a route documents are the roles it lets in ([`Access`], enforced by
//! [`crate::identity::Authed`]).
//!
//! What a route reads and answers is not written here but taken from its handler's signature
//! ([`Described`]): each argument ([`Input`]: the tenant, the session, a [`Body`], the
//! [`PathParams`], the [`QueryParams`]) and the reply ([`Output`]: `Json<T>`, [`Created`],
//! [`NoContent`], ...) describe themselves, so a field added to a request or reply type is in
//! the document without more ado.

use std::future::Future;

use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodFilter, MethodRouter};
use cc_contracts::auth::Role;
use schemars::{Schema, SchemaGenerator};

use crate::Portal;

pub use crate::extract::{Body, LastEventId, MaybeBody, PathParams, QueryParams};
pub use crate::reply::{Accepted, Created, Events, JsonText, NoContent, SetCookie};

/// A schema of a type, made by one of the document's generators (a request's or a reply's).
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// The schema of `T` as a subschema (a reference to its component when it has one).
pub fn schema_of<T: schemars::JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<T>()
}

/// Who may call a route. Put into the request by the router; [`crate::identity::Authed`]
/// refuses (403 `forbidden`) a principal whose role is not listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No session needed (signing in).
    Public,
    /// A signed-in principal of one of these roles.
    Roles(&'static [Role]),
}

pub const ANY_ROLE: &[Role] = &[Role::Agent, Role::Supervisor, Role::Admin];
pub const AGENT: &[Role] = &[Role::Agent];
pub const SUPERVISORS: &[Role] = &[Role::Supervisor, Role::Admin];
pub const ADMIN: &[Role] = &[Role::Admin];

/// The document's groups of operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tag {
    Agent,
    Supervisor,
    Admin,
    Reports,
    Auth,
}

impl Tag {
    pub const ALL: [Tag; 5] = [
        Tag::Agent,
        Tag::Supervisor,
        Tag::Admin,
        Tag::Reports,
        Tag::Auth,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Tag::Agent => "agent",
            Tag::Supervisor => "supervisor",
            Tag::Admin => "admin",
            Tag::Reports => "reports",
            Tag::Auth => "auth",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Tag::Agent => "The agent's own session, calls and desk (agents)",
            Tag::Supervisor => "The live view of the tenant's agents and queues, forced logout, listening in (supervisors and admins)",
            Tag::Admin => "The directory: agents, queues, pause reasons, defaults, users, SIP devices, webhooks",
            Tag::Reports => "Reports from the reporting views (supervisors and admins; docs/reporting.md)",
            Tag::Auth => "Who is signed in",
        }
    }
}

/// A request header a route reads.
pub struct Header {
    pub name: &'static str,
    pub description: &'static str,
    pub schema: SchemaFn,
}

/// A successful reply.
pub struct Reply {
    pub status: u16,
    pub description: &'static str,
    /// (media type, schema of the body).
    pub content: Vec<(&'static str, SchemaFn)>,
    /// (response header, what it holds).
    pub headers: Vec<(&'static str, &'static str)>,
}

/// What a handler's signature says of its route.
#[derive(Default)]
pub struct Shape {
    /// It reads the tenant (the subdomain or `X-Tenant`).
    pub tenant: bool,
    /// It needs a session (cookie or bearer token).
    pub session: bool,
    /// The JSON body's schema and whether a body is required.
    pub body: Option<(SchemaFn, bool)>,
    /// The path parameters (an object schema, one property per parameter).
    pub path: Option<SchemaFn>,
    /// The query parameters (an object schema, one property per parameter).
    pub query: Option<SchemaFn>,
    pub headers: Vec<Header>,
    pub replies: Vec<Reply>,
    /// The error codes its arguments and its reply can be refused with.
    pub codes: Vec<&'static str>,
}

impl Shape {
    pub fn refuses(&mut self, codes: &[&'static str]) {
        for c in codes {
            if !self.codes.contains(c) {
                self.codes.push(c);
            }
        }
    }
}

/// A handler argument that describes what it reads (nothing, by default).
pub trait Input {
    fn describe(_: &mut Shape) {}
}

/// A handler's reply type, describing the replies it makes.
pub trait Output {
    fn describe(shape: &mut Shape);
}

/// A handler whose arguments are all [`Input`]s and whose reply is an [`Output`]: its
/// [`Shape`] is known from its type alone.
pub trait Described<Args> {
    fn shape() -> Shape;
}

macro_rules! described {
    ($($arg:ident),*) => {
        impl<F, Fut, $($arg,)*> Described<($($arg,)*)> for F
        where
            F: FnOnce($($arg),*) -> Fut,
            Fut: Future,
            Fut::Output: Output,
            $($arg: Input,)*
        {
            fn shape() -> Shape {
                let mut s = Shape::default();
                $(<$arg as Input>::describe(&mut s);)*
                <Fut::Output as Output>::describe(&mut s);
                s
            }
        }
    };
}
described!();
described!(A1);
described!(A1, A2);
described!(A1, A2, A3);
described!(A1, A2, A3, A4);
described!(A1, A2, A3, A4, A5);

/// One route: served by [`crate::router`], documented by [`crate::openapi::document`].
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub tag: Tag,
    pub summary: &'static str,
    pub description: Option<&'static str>,
    pub access: Access,
    /// It sends commands on the caller's behalf: an `Idempotency-Key` makes a retry take
    /// effect once (and the key reused for another action is refused, 409 `conflict`).
    pub idempotent: bool,
    /// The codes the route's commands may refuse it with (beyond its arguments').
    pub refusals: &'static [&'static str],
    /// What a reply or a refusal with this status means on this route (else the usual words).
    pub notes: &'static [(u16, &'static str)],
    pub shape: Shape,
    pub(crate) service: MethodRouter<Portal>,
}

impl Route {
    fn new<H, T, A>(method: Method, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, Portal> + Described<A>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone()).expect("a routable method");
        let shape = <H as Described<A>>::shape();
        Route {
            method,
            path,
            tag: Tag::Agent,
            summary: "",
            description: None,
            access: if shape.session {
                Access::Roles(ANY_ROLE)
            } else {
                Access::Public
            },
            idempotent: false,
            refusals: &[],
            notes: &[],
            shape,
            service: axum::routing::on(filter, handler),
        }
    }

    pub fn get<H: Handler<T, Portal> + Described<A>, T: 'static, A>(
        path: &'static str,
        h: H,
    ) -> Self {
        Self::new(Method::GET, path, h)
    }

    pub fn post<H: Handler<T, Portal> + Described<A>, T: 'static, A>(
        path: &'static str,
        h: H,
    ) -> Self {
        Self::new(Method::POST, path, h)
    }

    pub fn put<H: Handler<T, Portal> + Described<A>, T: 'static, A>(
        path: &'static str,
        h: H,
    ) -> Self {
        Self::new(Method::PUT, path, h)
    }

    pub fn patch<H: Handler<T, Portal> + Described<A>, T: 'static, A>(
        path: &'static str,
        h: H,
    ) -> Self {
        Self::new(Method::PATCH, path, h)
    }

    pub fn delete<H: Handler<T, Portal> + Described<A>, T: 'static, A>(
        path: &'static str,
        h: H,
    ) -> Self {
        Self::new(Method::DELETE, path, h)
    }

    pub fn tag(mut self, tag: Tag) -> Self {
        self.tag = tag;
        self
    }

    pub fn summary(mut self, summary: &'static str) -> Self {
        self.summary = summary;
        self
    }

    pub fn description(mut self, description: &'static str) -> Self {
        self.description = Some(description);
        self
    }

    /// Only these roles may call it.
    pub fn roles(mut self, roles: &'static [Role]) -> Self {
        self.access = Access::Roles(roles);
        self
    }

    /// It sends commands on the caller's behalf (see [`Route::idempotent`]), which may refuse
    /// it with these codes.
    pub fn commands(mut self, refusals: &'static [&'static str]) -> Self {
        self.idempotent = true;
        self.refusals = refusals;
        self
    }

    /// It may be refused with these codes (commands sent on no one's behalf, reads).
    pub fn refuses(mut self, refusals: &'static [&'static str]) -> Self {
        self.refusals = refusals;
        self
    }

    pub fn notes(mut self, notes: &'static [(u16, &'static str)]) -> Self {
        self.notes = notes;
        self
    }

    /// Every code the route may be refused with: its arguments', its reply's, its access
    /// rule's, its commands'.
    pub fn codes(&self) -> Vec<&'static str> {
        let mut s = Shape::default();
        s.refuses(&self.shape.codes);
        if matches!(self.access, Access::Roles(r) if r.len() < ANY_ROLE.len()) {
            s.refuses(&["forbidden"]);
        }
        if self.idempotent {
            s.refuses(&["conflict"]);
        }
        s.refuses(self.refusals);
        s.codes
    }
}
