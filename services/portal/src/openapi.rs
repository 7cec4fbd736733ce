//! The OpenAPI 3.1 document of the API, generated from the route table
//! ([`crate::api::routes`]): each operation's parameters, body and replies from its handler's
//! types ([`crate::route::Described`]), its error statuses from the codes it may be refused
//! with (each under the status of its kind, [`cc_bus::codes`]).
//!
//! Request bodies are described as the server reads them (serde's deserialize contract: a
//! field with a default may be left out; every body is a JSON object that refuses fields it
//! does not know), replies as it writes them (the serialize contract: a field always written
//! is required, `null` where it may be).
//!
//! `services/portal/openapi.json` holds a copy for integrators; a test fails when it is stale.
//! Regenerate it with `CC_UPDATE_OPENAPI=1 cargo test -p cc-portal openapi`.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use schemars::generate::SchemaSettings;
use schemars::SchemaGenerator;
use serde_json::{json, Map, Value};

use crate::route::{Reply, Route, Tag};

/// The document as served at `/api/openapi.json`, made once.
pub static OPENAPI: LazyLock<String> = LazyLock::new(|| pretty(&document()));

/// Doc comments are wrapped at the code's width: a description reads as one paragraph per
/// blank-line-separated block.
fn unwrapped(v: &mut Value) {
    match v {
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                match x {
                    Value::String(s) if k == "description" => {
                        *s = s
                            .split("\n\n")
                            .map(|p| p.split('\n').map(str::trim).collect::<Vec<_>>().join(" "))
                            .collect::<Vec<_>>()
                            .join("\n\n");
                    }
                    _ => unwrapped(x),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(unwrapped),
        _ => {}
    }
}

const DESCRIPTION: &str = "The HTTP API of the Agent Portal. The tenant is the subdomain (`https://<tenant>.<domain>/`) or, for local use, the `X-Tenant` header. Sign in with POST /api/login; the session is the `cc_session` cookie (browsers) or `Authorization: Bearer <token>` (API). Every error is `{error, message, field}`; each operation lists the codes it may answer under each status (the table of codes: docs/getting-started.md). Send `Idempotency-Key` to make a retried command take effect once. Generated from the handlers and their types (services/portal/src/api).";

fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).expect("JSON");
    s.push('\n');
    s
}

/// The generators of request and reply schemas: requests inline (each operation's body reads
/// on its own), replies by reference to `components/schemas`.
fn generators() -> (SchemaGenerator, SchemaGenerator) {
    let requests = SchemaSettings::draft2020_12()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .for_deserialize()
        .into_generator();
    let replies = SchemaSettings::draft2020_12()
        .with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
        })
        .for_serialize()
        .into_generator();
    (requests, replies)
}

pub fn document() -> Value {
    let (mut requests, mut replies) = generators();
    let error = replies.subschema_for::<cc_bus::CommandError>().to_value();
    let mut paths: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
    for route in crate::api::routes() {
        let op = operation(&route, &mut requests, &mut replies, &error);
        let ops = paths.entry(route.path).or_default();
        let method = route.method.as_str().to_lowercase();
        assert!(
            ops.insert(method, op).is_none(),
            "{} {} is in the route table twice",
            route.method,
            route.path
        );
    }
    let tags: Vec<Value> = Tag::ALL
        .iter()
        .map(|t| json!({ "name": t.name(), "description": t.description() }))
        .collect();
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Call Center Agent Portal API",
            "version": "1.0.0",
            "description": DESCRIPTION,
        },
        "servers": [{ "url": "/" }],
        "tags": tags,
        "security": [{ "cookie": [] }, { "bearer": [] }],
        "paths": paths,
        "components": {
            "schemas": replies.take_definitions(true),
            "securitySchemes": {
                "cookie": { "type": "apiKey", "in": "cookie", "name": crate::identity::COOKIE },
                "bearer": { "type": "http", "scheme": "bearer" },
            },
            "parameters": {
                "tenant": {
                    "name": "X-Tenant",
                    "in": "header",
                    "required": false,
                    "schema": { "type": "string" },
                    "description": "The tenant when not given by the subdomain",
                },
                "idempotency": {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": false,
                    "schema": { "type": "string" },
                    "description": "Makes a retried command take effect once: a request with a key already answered (by the same principal, within a day) gets that answer again; the key used for another action is refused (409 conflict, field Idempotency-Key)",
                },
            },
        },
    });
    unwrapped(&mut doc);
    doc
}

fn operation(
    r: &Route,
    requests: &mut SchemaGenerator,
    replies: &mut SchemaGenerator,
    error: &Value,
) -> Value {
    let mut op = Map::new();
    assert!(
        !r.summary.is_empty(),
        "{} {} has no summary",
        r.method,
        r.path
    );
    op.insert("summary".into(), json!(r.summary));
    if let Some(d) = r.description {
        op.insert("description".into(), json!(d));
    }
    op.insert("tags".into(), json!([r.tag.name()]));
    let mut params = vec![];
    if r.shape.tenant {
        params.push(json!({ "$ref": "#/components/parameters/tenant" }));
    }
    if r.idempotent {
        params.push(json!({ "$ref": "#/components/parameters/idempotency" }));
    }
    let names: Vec<&str> = r
        .path
        .split('/')
        .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
        .collect();
    match r.shape.path {
        Some(f) => params.extend(parameters(r, "path", f(requests).to_value(), &names)),
        None => assert!(
            names.is_empty(),
            "{} {}: the handler takes no PathParams",
            r.method,
            r.path
        ),
    }
    if let Some(f) = r.shape.query {
        params.extend(parameters(r, "query", f(requests).to_value(), &[]));
    }
    for h in &r.shape.headers {
        params.push(json!({
            "name": h.name,
            "in": "header",
            "required": false,
            "description": h.description,
            "schema": (h.schema)(requests).to_value(),
        }));
    }
    if !params.is_empty() {
        op.insert("parameters".into(), Value::Array(params));
    }
    if let Some((f, required)) = r.shape.body {
        let mut schema = f(requests).to_value();
        closed(&mut schema);
        op.insert(
            "requestBody".into(),
            json!({ "required": required, "content": { "application/json": { "schema": schema } } }),
        );
    }
    let mut responses = Map::new();
    for reply in &r.shape.replies {
        let words = note(r, reply.status).unwrap_or(reply.description);
        responses.insert(reply.status.to_string(), success(reply, words, replies));
    }
    let mut by_status: BTreeMap<u16, Vec<&str>> = BTreeMap::new();
    for code in r.codes() {
        let kind = cc_bus::codes::kind_of(code).unwrap_or_else(|| {
            panic!(
                "{} {}: {code} is not in cc_bus::codes::CODES",
                r.method, r.path
            )
        });
        by_status.entry(kind.status()).or_default().push(code);
    }
    for (status, codes) in by_status {
        let kind = cc_bus::codes::kind_of(codes[0]).expect("known");
        let words = note(r, status).unwrap_or(kind.meaning());
        responses.insert(
            status.to_string(),
            json!({
                "description": format!("{words}: {}", codes.join(", ")),
                "content": { "application/json": { "schema": error } },
            }),
        );
    }
    for (status, _) in r.notes {
        assert!(
            responses.contains_key(&status.to_string()),
            "{} {}: a note for {status}, which it does not answer",
            r.method,
            r.path
        );
    }
    op.insert("responses".into(), Value::Object(responses));
    if !r.shape.session {
        op.insert("security".into(), json!([]));
    }
    Value::Object(op)
}

/// What the route's notes say of a status.
fn note(r: &Route, status: u16) -> Option<&'static str> {
    r.notes.iter().find(|(s, _)| *s == status).map(|(_, n)| *n)
}

fn success(reply: &Reply, description: &str, g: &mut SchemaGenerator) -> Value {
    let mut out = json!({ "description": description });
    if !reply.content.is_empty() {
        let content: Map<String, Value> = reply
            .content
            .iter()
            .map(|(media, f)| (media.to_string(), json!({ "schema": f(g).to_value() })))
            .collect();
        out["content"] = Value::Object(content);
    }
    if !reply.headers.is_empty() {
        let headers: Map<String, Value> = reply
            .headers
            .iter()
            .map(|(h, d)| {
                (
                    h.to_string(),
                    json!({ "description": d, "schema": { "type": "string" } }),
                )
            })
            .collect();
        out["headers"] = Value::Object(headers);
    }
    out
}

/// The parameters of an object schema (one per property), in `order` when given.
fn parameters(r: &Route, place: &str, v: Value, order: &[&str]) -> Vec<Value> {
    let props = v["properties"].as_object().cloned().unwrap_or_default();
    let required: Vec<&str> = v["required"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut names: Vec<String> = props.keys().cloned().collect();
    if !order.is_empty() {
        let mut want: Vec<String> = order.iter().map(|s| s.to_string()).collect();
        let mut have = names.clone();
        want.sort();
        have.sort();
        assert_eq!(
            have, want,
            "{} {}: the PathParams fields are not the path's parameters",
            r.method, r.path
        );
        names = order.iter().map(|s| s.to_string()).collect();
    }
    names
        .into_iter()
        .map(|name| {
            // An optional parameter is left out, never null.
            let mut s = non_null(props[&name].clone());
            let description = s
                .as_object_mut()
                .and_then(|o| o.remove("description"))
                .unwrap_or(Value::Null);
            let mut p = json!({
                "name": name,
                "in": place,
                "required": place == "path" || required.contains(&name.as_str()),
                "schema": s,
            });
            if !description.is_null() {
                p["description"] = description;
            }
            p
        })
        .collect()
}

/// `schema` without its `null` (of `Option<T>`).
fn non_null(mut schema: Value) -> Value {
    if let Some(Value::Array(types)) = schema.get_mut("type") {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            schema["type"] = types[0].clone();
        }
        return schema;
    }
    let any_of = schema.get("anyOf").and_then(Value::as_array).map(|a| {
        a.iter()
            .filter(|s| s.get("type") != Some(&json!("null")))
            .cloned()
            .collect::<Vec<_>>()
    });
    match any_of {
        Some(mut rest) if rest.len() == 1 => {
            let mut one = rest.remove(0);
            if let (Some(o), Some(d)) = (one.as_object_mut(), schema.get("description")) {
                o.insert("description".into(), d.clone());
            }
            one
        }
        _ => schema,
    }
}

/// Every object of a request body refuses fields it does not know ([`crate::error::body`]).
/// (Only the objects a type describes: a branch of `anyOf` or `not` constrains the object it
/// is in, and must leave its other fields alone.)
fn closed(schema: &mut Value) {
    match schema {
        Value::Object(o) => {
            let object = match o.get("type") {
                Some(Value::String(t)) => t == "object",
                Some(Value::Array(ts)) => ts.iter().any(|t| t == "object"),
                _ => false,
            };
            if object && o.contains_key("properties") && !o.contains_key("additionalProperties") {
                o.insert("additionalProperties".into(), json!(false));
            }
            for v in o.values_mut() {
                closed(v);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(closed),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_description(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                for (k, x) in o {
                    if let (true, Some(s)) = (k == "description" || k == "summary", x.as_str()) {
                        out.push(s.to_string());
                    }
                    every_description(x, out);
                }
            }
            Value::Array(a) => a.iter().for_each(|x| every_description(x, out)),
            _ => {}
        }
    }

    /// The copy for integrators is the document the server serves.
    #[test]
    fn openapi_json_is_the_generated_document() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
        let want = OPENAPI.as_str();
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        if have == want {
            return;
        }
        if std::env::var_os("CC_UPDATE_OPENAPI").is_some() {
            std::fs::write(&path, want).unwrap();
            return;
        }
        let diff = have
            .lines()
            .zip(want.lines())
            .enumerate()
            .find(|(_, (a, b))| a != b)
            .map(|(i, (a, b))| format!("line {}: {a:?} became {b:?}", i + 1))
            .unwrap_or_else(|| "one is a prefix of the other".into());
        panic!(
            "services/portal/openapi.json is stale ({diff}).\nRegenerate it with: CC_UPDATE_OPENAPI=1 cargo test -p cc-portal openapi"
        );
    }

    /// Rustdoc's syntax stays in the code: the document's words are for integrators.
    #[test]
    fn openapi_descriptions_have_no_rustdoc_links() {
        let mut all = vec![];
        every_description(&document(), &mut all);
        let leaked: Vec<_> = all.iter().filter(|d| d.contains("[`")).collect();
        assert!(leaked.is_empty(), "{leaked:#?}");
    }

    /// A route that needs a session names the roles it lets in; one that does not, none.
    #[test]
    fn openapi_every_signed_in_route_has_its_roles() {
        for r in crate::api::routes() {
            let has_roles = matches!(r.access, crate::route::Access::Roles(_));
            assert_eq!(
                has_roles, r.shape.session,
                "{} {}: roles without a session, or a session without roles",
                r.method, r.path
            );
        }
    }

    /// Every body is a JSON object that refuses unknown fields; every reply and refusal has its
    /// schema; every status is one the route's codes or replies give.
    #[test]
    fn openapi_bodies_are_closed_objects_and_every_error_has_the_error_schema() {
        let doc = document();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                if let Some(body) = op.get("requestBody") {
                    let s = &body["content"]["application/json"]["schema"];
                    assert_eq!(s["type"], "object", "{method} {path}: {s}");
                    assert_eq!(s["additionalProperties"], false, "{method} {path}: {s}");
                }
                for (status, r) in op["responses"].as_object().unwrap() {
                    if status.as_str() >= "400" {
                        assert_eq!(
                            r["content"]["application/json"]["schema"]["$ref"],
                            "#/components/schemas/Error",
                            "{method} {path} {status}"
                        );
                    }
                }
                assert!(
                    op["responses"].get("500").is_some(),
                    "{method} {path}: every route may fail"
                );
            }
        }
    }
}
