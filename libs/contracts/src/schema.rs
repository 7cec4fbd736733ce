//! The public contract as files: a JSON Schema (draft-07) for every event type and version,
//! every PBX event, every command's request and reply and the agent view, generated from the
//! Rust types; and the AsyncAPI 3 document describing every NATS subject, referencing them.
//!
//! `schemas/` holds the generated files; a test fails when they are stale. Regenerate with
//! `CC_UPDATE_SCHEMAS=1 cargo test -p cc-contracts schemas`: it refuses to overwrite a
//! published event schema with one that is not backward compatible ([`breaking_changes`]):
//! such a change needs a new schema version of the event (and an upcaster for the old one).

use std::collections::BTreeMap;

use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde_json::{json, Map, Value};

use crate::{auth, call, pbx, queue, session, views, EventFamily};

fn root<T: JsonSchema>() -> Value {
    SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value()
}

/// One variant of a `#[serde(tag = "type")]` enum: (type name, its object schema).
fn variants<E: JsonSchema>(keep_type: bool) -> Vec<(String, Value)> {
    let root = root::<E>();
    let defs = root.get("definitions").cloned();
    let list = match root.get("oneOf").and_then(Value::as_array) {
        Some(l) => l.clone(),
        None => vec![root.clone()],
    };
    list.into_iter()
        .map(|mut v| {
            let ty = &v["properties"]["type"];
            let name = ty
                .get("const")
                .or_else(|| ty.get("enum").and_then(|e| e.get(0)))
                .and_then(Value::as_str)
                .expect("tagged variants name their type")
                .to_string();
            let o = v.as_object_mut().expect("variants are objects");
            if !keep_type {
                o.get_mut("properties")
                    .and_then(Value::as_object_mut)
                    .map(|p| p.remove("type"));
                if let Some(r) = o.get_mut("required").and_then(Value::as_array_mut) {
                    r.retain(|x| x != "type");
                }
            }
            o.remove("definitions");
            let mut s = Map::new();
            s.insert(
                "$schema".into(),
                json!("http://json-schema.org/draft-07/schema#"),
            );
            s.insert("title".into(), json!(name));
            s.extend(o.clone());
            if let Some(d) = &defs {
                s.insert("definitions".into(), d.clone());
            }
            (name, Value::Object(s))
        })
        .collect()
}

/// A stored and published event type: its family's stream category, name, schema version, and
/// the schema of its data (the `type` is the store's `event_type` and the subject's last token).
pub struct EventSchema {
    pub category: &'static str,
    pub event_type: String,
    pub version: i32,
    pub schema: Value,
}

impl EventSchema {
    pub fn path(&self) -> String {
        format!(
            "events/{}/{}.v{}.json",
            self.category, self.event_type, self.version
        )
    }
}

pub fn events() -> Vec<EventSchema> {
    let mut out = vec![];
    macro_rules! family {
        ($($t:ty),*) => {$(
            for (name, schema) in variants::<$t>(false) {
                out.push(EventSchema { category: <$t as EventFamily>::CATEGORY, version: <$t as EventFamily>::schema_version(&name), event_type: name, schema });
            }
        )*};
    }
    family!(
        auth::TenantEvent,
        auth::AgentAccountEvent,
        auth::UserEvent,
        auth::PortalSessionEvent,
        session::AgentSessionEvent,
        session::SettingsEvent,
        queue::QueueEvent,
        call::CallEvent
    );
    out
}

/// The PBX contract's events: (kind, type, schema with its `type` field).
pub fn pbx_events() -> Vec<(&'static str, String, Value)> {
    let mut out = vec![];
    for (n, s) in variants::<pbx::DeviceEvent>(true) {
        out.push(("device", n, s));
    }
    for (n, s) in variants::<pbx::ChannelEvent>(true) {
        out.push(("channel", n, s));
    }
    for (n, s) in variants::<pbx::BridgeEvent>(true) {
        out.push(("bridge", n, s));
    }
    out
}

/// A command: its service, name, and the schemas of its request and its reply envelope.
pub struct CommandSchema {
    pub service: &'static str,
    pub name: &'static str,
    pub request: Value,
    pub reply: Value,
}

fn standalone(mut v: Value, title: &str) -> Value {
    let o = v.as_object_mut().expect("schemas of structs are objects");
    o.insert("title".into(), json!(title));
    v
}

pub fn commands() -> Vec<CommandSchema> {
    let mut out = vec![];
    macro_rules! commands {
        ($($t:ty),* $(,)?) => {$(
            {
                let reply = root::<<$t as cc_core::Command>::Reply>();
                let defs = reply.get("definitions").cloned();
                let mut ok = reply.clone();
                if let Some(o) = ok.as_object_mut() {
                    o.remove("definitions");
                    o.remove("$schema");
                    o.remove("title");
                }
                let mut envelope = json!({
                    "$schema": "http://json-schema.org/draft-07/schema#",
                    "title": format!("{} reply", <$t as cc_core::Command>::NAME),
                    "description": "The reply: {\"ok\": <result>} or {\"error\": {\"error\", \"message\", \"field\"}}.",
                    "oneOf": [
                        { "type": "object", "required": ["ok"], "properties": { "ok": ok }, "additionalProperties": false },
                        { "type": "object", "required": ["error"], "properties": { "error": {
                            "type": "object", "required": ["error", "message"],
                            "properties": { "error": { "type": "string" }, "message": { "type": "string" }, "field": { "type": ["string", "null"] } }
                        } }, "additionalProperties": false }
                    ]
                });
                if let Some(d) = defs {
                    envelope["definitions"] = d;
                }
                out.push(CommandSchema {
                    service: <$t as cc_core::Command>::SERVICE,
                    name: <$t as cc_core::Command>::NAME,
                    request: standalone(root::<$t>(), <$t as cc_core::Command>::NAME),
                    reply: envelope,
                });
            }
        )*};
    }
    use crate::sip::*;
    use crate::webhooks::*;
    use auth::*;
    use call::*;
    use pbx::*;
    use queue::*;
    use session::*;
    commands!(
        SignIn,
        Authenticate,
        SignOut,
        CreateAgent,
        UpdateAgent,
        SetAgentPassword,
        SetAgentEnabled,
        GetAgent,
        ListAgents,
        CreateUser,
        CreateTenant,
        CreateQueue,
        AssignAgent,
        UnassignAgent,
        ListQueues,
        GetAssignments,
        HangupCall,
        HoldCall,
        TransferCall,
        CompleteTransfer,
        CancelTransfer,
        EndWrapUp,
        ConfigureQueue,
        GetAgentCall,
        MonitorCall,
        SetMonitorMode,
        StopMonitor,
        DialOutbound,
        ListDevices,
        Originate,
        CheckRoute,
        Answer,
        Bridge,
        Unbridge,
        Hold,
        Hangup,
        CancelRing,
        ListChannels,
        SetBridgeMode,
        GetLoginOptions,
        LoginAgent,
        LogoutAgent,
        PauseAgent,
        UnpauseAgent,
        SetQueueMembership,
        GetSession,
        ListPauseReasons,
        ChangePauseReason,
        GetAgentDefaults,
        SetAgentDefaults,
        ProvisionSipDevice,
        ListSipDevices,
        RemoveSipDevice,
        CreateWebhook,
        ListWebhooks,
        DeleteWebhook,
        ResumeWebhook,
        TestWebhook,
        ListDeliveries,
        RedeliverWebhook,
        RecordDisposition,
    );
    out
}

pub fn agent_view() -> Value {
    standalone(root::<views::AgentView>(), "AgentView")
}

/// Why `new` cannot replace `old` for data already published: a property removed or retyped,
/// an enum value dropped, a new required property. (Adding optional properties is fine.)
pub fn breaking_changes(old: &Value, new: &Value) -> Vec<String> {
    let mut out = vec![];
    let empty = Map::new();
    let props = |v: &Value| {
        v.get("properties")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_else(|| empty.clone())
    };
    let (op, np) = (props(old), props(new));
    for (name, o) in &op {
        match np.get(name) {
            None => out.push(format!("property {name} removed")),
            Some(n) => {
                for key in ["type", "$ref", "format"] {
                    if o.get(key) != n.get(key) {
                        out.push(format!(
                            "property {name}: {key} changed from {} to {}",
                            o.get(key).unwrap_or(&Value::Null),
                            n.get(key).unwrap_or(&Value::Null)
                        ));
                    }
                }
                if let (Some(oe), Some(ne)) = (
                    o.get("enum").and_then(Value::as_array),
                    n.get("enum").and_then(Value::as_array),
                ) {
                    for v in oe.iter().filter(|v| !ne.contains(v)) {
                        out.push(format!("property {name}: value {v} no longer allowed"));
                    }
                }
            }
        }
    }
    let req = |v: &Value| {
        v.get("required")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let (or, nr) = (req(old), req(new));
    for r in nr.iter().filter(|r| !or.contains(r)) {
        out.push(format!(
            "property {} is newly required",
            r.as_str().unwrap_or("?")
        ));
    }
    // Shared definitions (enums such as reasons, nested objects) may only grow as well.
    if let (Some(od), Some(nd)) = (
        old.get("definitions").and_then(Value::as_object),
        new.get("definitions").and_then(Value::as_object),
    ) {
        for (name, o) in od {
            match nd.get(name) {
                None => out.push(format!("definition {name} removed")),
                Some(n) => {
                    if let (Some(oe), Some(ne)) = (
                        o.get("enum").and_then(Value::as_array),
                        n.get("enum").and_then(Value::as_array),
                    ) {
                        for v in oe.iter().filter(|v| !ne.contains(v)) {
                            out.push(format!("definition {name}: value {v} no longer allowed"));
                        }
                    }
                    out.extend(
                        breaking_changes(o, n)
                            .into_iter()
                            .map(|c| format!("definition {name}: {c}")),
                    );
                }
            }
        }
    }
    out
}

/// Moves a schema's definitions into `into` (AsyncAPI components) and points its references there.
fn embed(schema: &Value, into: &mut Map<String, Value>) -> Value {
    let text = schema
        .to_string()
        .replace("#/definitions/", "#/components/schemas/");
    let mut v: Value = serde_json::from_str(&text).expect("valid JSON");
    let o = v.as_object_mut().expect("object schemas");
    o.remove("$schema");
    if let Some(Value::Object(defs)) = o.remove("definitions") {
        for (k, d) in defs {
            into.entry(k).or_insert(d);
        }
    }
    v
}

fn headers() -> Value {
    let s = |d: &str| json!({ "type": "string", "description": d });
    json!({
        "type": "object",
        "description": "CloudEvents attributes as NATS headers, and the event's place in the store.",
        "required": ["ce-specversion", "ce-id", "ce-source", "ce-type", "ce-time", "ce-tenant", "Nats-Msg-Id"],
        "properties": {
            "ce-specversion": s("1.0"),
            "ce-id": s("the event id (a UUIDv7)"),
            "ce-source": s("/tenants/<tenant>/<category>"),
            "ce-type": s("callcenter.<Type>.v<version>"),
            "ce-subject": s("<category>-<stream id>"),
            "ce-time": s("when it was recorded (RFC 3339, UTC)"),
            "ce-datacontenttype": s("application/json"),
            "ce-tenant": s("the tenant"),
            "ce-correlationid": s("the correlation id of the request that caused it"),
            "ce-causationid": s("the event that caused it, if any"),
            "ce-actor": s("who did it: agent:<number>, user:<name>, system:<service>, operator"),
            "Nats-Msg-Id": s("the event id (JetStream de-duplicates on it)"),
            "Cc-Event-Type": s("the event type"),
            "Cc-Checkpoint": s("the store position (xid.position) of the event"),
            "Cc-Stream-Version": s("the event's version in its stream")
        }
    })
}

/// The AsyncAPI 3.0 document of every subject, with every schema embedded in its components.
pub fn asyncapi() -> Value {
    let mut schemas = Map::new();
    let mut channels = Map::new();
    let mut operations = Map::new();
    let mut messages = Map::new();
    let param = |d: &str| json!({ "description": d });
    let mut add = |key: String,
                   address: String,
                   params: Value,
                   name: &str,
                   summary: String,
                   payload: Value,
                   headers: Option<Value>,
                   action: &str| {
        let mut m = json!({ "name": name, "title": name, "summary": summary, "contentType": "application/json", "payload": payload });
        if let Some(h) = headers {
            m["headers"] = h;
        }
        messages.insert(key.clone(), m);
        channels.insert(key.clone(), json!({ "address": address, "parameters": params, "messages": { name: { "$ref": format!("#/components/messages/{key}") } } }));
        operations.insert(format!("{action}.{key}"), json!({ "action": action, "channel": { "$ref": format!("#/channels/{key}") }, "messages": [{ "$ref": format!("#/channels/{key}/messages/{name}") }] }));
    };
    for e in events() {
        let key = format!("event.{}.{}.v{}", e.category, e.event_type, e.version);
        let payload = embed(&e.schema, &mut schemas);
        schemas.insert(key.clone(), payload);
        add(
            key.clone(),
            format!(
                "{{prefix}}.events.{{tenant}}.{}.{{id}}.{}",
                e.category, e.event_type
            ),
            json!({ "prefix": param("the deployment's subject prefix (cc by default)"), "tenant": param("the tenant"), "id": param("the stream id: agent number, call id, queue number, ...") }),
            &e.event_type,
            format!(
                "{} (schema version {}; file schemas/{})",
                e.event_type,
                e.version,
                e.path()
            ),
            json!({ "$ref": format!("#/components/schemas/{key}") }),
            Some(json!({ "$ref": "#/components/schemas/CloudEventHeaders" })),
            "receive",
        );
    }
    // Transfer events to an agent, again on their receiving agent's subject (docs/events.md).
    for e in events() {
        if e.category != "call" || e.schema["properties"].get("target_agent").is_none() {
            continue;
        }
        let key = format!("event.{}.{}.v{}", e.category, e.event_type, e.version);
        add(
            format!("target_event.{}.{}.v{}", e.category, e.event_type, e.version),
            format!(
                "{{prefix}}.target_events.{{tenant}}.{}.{{id}}.{}.{{target_agent}}.{{queue}}",
                e.category, e.event_type
            ),
            json!({ "prefix": param("the deployment's subject prefix (cc by default)"), "tenant": param("the tenant"), "id": param("the call id"), "target_agent": param("the receiving agent (the event's target_agent)"), "queue": param("the event's queue, _ when none") }),
            &e.event_type,
            format!(
                "{} published again for its receiving agent, right before the event itself (header Cc-Copy: target_agent)",
                e.event_type
            ),
            json!({ "$ref": format!("#/components/schemas/{key}") }),
            Some(json!({ "$ref": "#/components/schemas/CloudEventHeaders" })),
            "receive",
        );
    }
    for (kind, name, schema) in pbx_events() {
        let key = format!("pbx.{kind}.{name}");
        let payload = embed(&schema, &mut schemas);
        schemas.insert(key.clone(), payload);
        add(
            key.clone(),
            format!("{{prefix}}.pbx.evt.{{tenant}}.{kind}.{{id}}.{name}"),
            json!({ "prefix": param("subject prefix"), "tenant": param("the tenant"), "id": param("the PBX's own id of the device, channel or bridge") }),
            &name,
            format!("PBX fact {name} (schemas/pbx/{kind}/{name}.json)"),
            json!({ "$ref": format!("#/components/schemas/{key}") }),
            None,
            "receive",
        );
    }
    for c in commands() {
        let key = format!("command.{}.{}", c.service, c.name);
        let payload = embed(&c.request, &mut schemas);
        schemas.insert(key.clone(), payload);
        let reply_key = format!("{key}.reply");
        let reply = embed(&c.reply, &mut schemas);
        schemas.insert(reply_key.clone(), reply);
        add(
            key.clone(),
            format!("{{prefix}}.cmd.{}.{{tenant}}.{}", c.service, c.name),
            json!({ "prefix": param("subject prefix"), "tenant": param("the tenant") }),
            c.name,
            format!("Request/reply command to {} (schemas/commands/{}/{}.request.json; reply: {}.reply.json, schema {reply_key})", c.service, c.service, c.name, c.name),
            json!({ "$ref": format!("#/components/schemas/{key}") }),
            Some(json!({ "type": "object", "properties": { "Idempotency-Key": { "type": "string" }, "Cc-Actor": { "type": "string" }, "Cc-Correlation-Id": { "type": "string" } } })),
            "send",
        );
    }
    let view = embed(&agent_view(), &mut schemas);
    schemas.insert("view.AgentView".into(), view);
    add(
        "view.agent".into(),
        "{prefix}.views.{tenant}.agent.{agent}".into(),
        json!({ "prefix": param("subject prefix"), "tenant": param("the tenant"), "agent": param("agent number") }),
        "AgentView",
        "Every change of an agent's view, after the projection committed it (core NATS, not stored)".into(),
        json!({ "$ref": "#/components/schemas/view.AgentView" }),
        None,
        "receive",
    );
    schemas.insert("CloudEventHeaders".into(), headers());
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "Call Center Agent Platform: NATS subjects",
            "version": "1.0.0",
            "description": "Every subject of the product: domain events (relayed in store order to JetStream stream <PREFIX>_EVENTS, CloudEvents headers), the PBX contract (stream <PREFIX>_PBX), request/reply commands, and live agent views. Generated from the Rust types (libs/contracts/src/schema.rs); see docs/events.md."
        },
        "defaultContentType": "application/json",
        "servers": { "local": { "host": "127.0.0.1:4222", "protocol": "nats", "description": "A NATS server >= 2.10 with JetStream" } },
        "channels": channels,
        "operations": operations,
        "components": { "schemas": schemas, "messages": messages }
    })
}

fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).expect("JSON");
    s.push('\n');
    s
}

/// Every file of `schemas/` (relative path -> content).
pub fn files() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in events() {
        out.insert(e.path(), pretty(&e.schema));
    }
    for (kind, name, s) in pbx_events() {
        out.insert(format!("pbx/{kind}/{name}.json"), pretty(&s));
    }
    for c in commands() {
        out.insert(
            format!("commands/{}/{}.request.json", c.service, c.name),
            pretty(&c.request),
        );
        out.insert(
            format!("commands/{}/{}.reply.json", c.service, c.name),
            pretty(&c.reply),
        );
    }
    out.insert("views/AgentView.json".into(), pretty(&agent_view()));
    out.insert("asyncapi.json".into(), pretty(&asyncapi()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
    }

    fn on_disk(root: &Path) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "json") {
                    let rel = p
                        .strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .replace('\\', "/");
                    out.insert(rel, std::fs::read_to_string(&p).unwrap());
                }
            }
        }
        out
    }

    #[test]
    fn schemas_are_current_and_published_events_stay_compatible() {
        let root = dir();
        let want = files();
        let have = on_disk(&root);
        let update = std::env::var_os("CC_UPDATE_SCHEMAS").is_some();
        let mut problems = vec![];
        for (path, content) in &want {
            match have.get(path) {
                Some(old) if old == content => {}
                old => {
                    if let (Some(old), true) = (old, path.starts_with("events/")) {
                        let breaks = breaking_changes(
                            &serde_json::from_str(old).unwrap(),
                            &serde_json::from_str(content).unwrap(),
                        );
                        if !breaks.is_empty() {
                            problems.push(format!(
                                "{path}: a published event changed incompatibly ({}): give the event a new schema version (EventFamily::schema_version) and an upcaster instead",
                                breaks.join("; ")
                            ));
                            continue;
                        }
                    }
                    if update {
                        let p = root.join(path);
                        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                        std::fs::write(p, content).unwrap();
                    } else {
                        problems.push(format!(
                            "{path} is {}",
                            if old.is_some() { "stale" } else { "missing" }
                        ));
                    }
                }
            }
        }
        for path in have.keys().filter(|p| !want.contains_key(*p)) {
            if path.starts_with("events/") {
                problems.push(format!("{path}: a published event schema is no longer generated; keep its type (and an upcaster) instead of removing it"));
            } else if update {
                std::fs::remove_file(root.join(path)).unwrap();
            } else {
                problems.push(format!("{path} is no longer generated"));
            }
        }
        assert!(
            problems.is_empty(),
            "schemas/ does not match the Rust types:\n  {}\nRegenerate with: CC_UPDATE_SCHEMAS=1 cargo test -p cc-contracts schemas",
            problems.join("\n  ")
        );
    }

    #[test]
    fn every_event_type_has_a_schema_of_its_data_without_the_type() {
        let events = events();
        let call = events
            .iter()
            .find(|e| e.event_type == "CallOffered")
            .unwrap();
        assert_eq!(
            (call.category, call.version, call.path().as_str()),
            ("call", 1, "events/call/CallOffered.v1.json")
        );
        assert!(call.schema["properties"].get("type").is_none());
        assert!(call.schema["required"]
            .as_array()
            .unwrap()
            .contains(&json!("agent")));
        assert!(events.iter().any(|e| e.event_type == "TransferStarted"));
        assert!(events.iter().any(|e| e.event_type == "TenantCreated"));
        let pbx = pbx_events();
        assert!(pbx.iter().any(|(k, n, s)| *k == "channel"
            && n == "ChannelHungUp"
            && s["properties"].get("type").is_some()));
    }

    #[test]
    fn compatible_changes_are_told_from_breaking_ones() {
        let old = json!({ "properties": { "a": { "type": "string" }, "r": { "enum": ["x", "y"] } }, "required": ["a"] });
        let added_optional = json!({ "properties": { "a": { "type": "string" }, "r": { "enum": ["x", "y", "z"] }, "b": { "type": "integer" } }, "required": ["a"] });
        assert!(breaking_changes(&old, &added_optional).is_empty());
        let removed = json!({ "properties": { "r": { "enum": ["x", "y"] } }, "required": [] });
        assert_eq!(breaking_changes(&old, &removed), ["property a removed"]);
        let retyped = json!({ "properties": { "a": { "type": "integer" }, "r": { "enum": ["x"] } }, "required": ["a", "r"] });
        let b = breaking_changes(&old, &retyped);
        assert_eq!(b.len(), 3, "{b:?}");
        assert!(b.iter().any(|c| c.contains("newly required")));
        assert!(b.iter().any(|c| c.contains("\"y\" no longer allowed")));
    }
}
