//! Property-based fuzzing of what the outside sends: every command of every service over NATS
//! and every HTTP request body of the API, with random bytes, random JSON and JSON shaped like
//! the real bodies (their field names, hostile values: NUL and control characters, huge
//! numbers, long strings, wrong types). Whatever arrives: no panic and no internal error, a
//! structured refusal that names what is wrong, and nothing appended for a refused request.
//! The cases come from a seeded generator (`CC_FUZZ_SEED` to try others; a failure prints it).

use std::collections::BTreeSet;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::system::{Client, System};
use crate::tenant::TenantSpec;

fn seed() -> u64 {
    std::env::var("CC_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261201)
}

/// A payload as a failure shows it: at most 300 characters.
fn shown(payload: &[u8]) -> String {
    let s = String::from_utf8_lossy(payload);
    match s.char_indices().nth(300) {
        Some((i, _)) => format!("{}... ({} bytes)", &s[..i], payload.len()),
        None => s.into_owned(),
    }
}

fn runner(seed: u64) -> TestRunner {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    )
}

/// Hostile and ordinary text.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9 ]{0,12}",
        2 => any::<String>(),
        1 => Just("a\u{0}b".to_string()),
        1 => Just("\u{1b}[31m\r\n\t".to_string()),
        1 => Just("x".repeat(5000)),
        1 => Just("<img src=x onerror=alert(1)>".to_string()),
        1 => Just("1001".to_string()),
        1 => Just("500".to_string()),
        1 => Just("".to_string()),
        1 => Just("\u{202e}\u{feff}😀".to_string()),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        prop_oneof![Just(0i64), Just(-1), Just(1), Just(600), Just(i64::MAX)].prop_map(Value::from),
        prop_oneof![Just(1e300), Just(-0.5), Just(600.0), Just(2.5)].prop_map(|f| json!(f)),
        text().prop_map(Value::from),
    ]
}

/// JSON whose objects use `keys` (the real field names) most of the time.
fn json_value(keys: Vec<String>) -> impl Strategy<Value = Value> {
    let key = {
        let keys = keys.clone();
        prop_oneof![
            4 => proptest::sample::select(if keys.is_empty() { vec!["x".to_string()] } else { keys }),
            1 => text(),
        ]
    };
    leaf().prop_recursive(3, 32, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A request body: mostly objects with the real field names, sometimes any JSON, raw bytes,
/// broken JSON.
fn body(keys: Vec<String>) -> impl Strategy<Value = Vec<u8>> {
    let object = {
        let keys = keys.clone();
        let key = proptest::sample::select(if keys.is_empty() {
            vec!["x".to_string()]
        } else {
            keys
        });
        prop::collection::vec((key, json_value(vec![]).boxed()), 0..6)
            .prop_map(|kv| Value::Object(kv.into_iter().collect()))
    };
    prop_oneof![
        6 => object.prop_map(|v| v.to_string().into_bytes()),
        2 => json_value(keys).prop_map(|v| v.to_string().into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..64),
        1 => Just(b"{\"a\":".to_vec()),
        1 => Just(b"{\"a\":\"\\ud800\"}".to_vec()),
    ]
}

/// Every property name in a JSON schema (its definitions included).
fn property_names(schema: &Value, out: &mut BTreeSet<String>) {
    match schema {
        Value::Object(o) => {
            if let Some(Value::Object(props)) = o.get("properties") {
                out.extend(props.keys().cloned());
            }
            for v in o.values() {
                property_names(v, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| property_names(v, out)),
        _ => {}
    }
}

async fn appended_with(sys: &System, correlation: &uuid::Uuid) -> i64 {
    sqlx::query_scalar("select count(*) from es_events where metadata->>'correlation_id' = $1")
        .bind(correlation.to_string())
        .fetch_one(&sys.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn every_command_of_every_service_refuses_random_input_cleanly() {
    let sys = System::start().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    let nats = sys.operator_nats().await.unwrap();
    let subjects = cc_bus::Subjects::new(&sys.prefix);
    let seed = seed();
    let mut runner = runner(seed);
    let commands = cc_contracts::schema::commands();
    assert!(commands.len() >= 50, "{} commands", commands.len());
    let mut sent = 0;
    for c in &commands {
        let mut keys = BTreeSet::new();
        property_names(&c.request, &mut keys);
        let strategy = body(keys.into_iter().collect());
        for case in 0..12 {
            let payload = strategy.new_tree(&mut runner).unwrap().current();
            let correlation = uuid::Uuid::now_v7();
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Cc-Actor", "operator");
            headers.insert("Cc-Correlation-Id", correlation.to_string().as_str());
            let subject = subjects.command(c.service, &t.name, c.name);
            let what = format!(
                "{}.{} case {case} (seed {seed}): {}",
                c.service,
                c.name,
                shown(&payload)
            );
            let reply = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                nats.request_with_headers(subject, headers, payload.clone().into()),
            )
            .await
            .unwrap_or_else(|_| panic!("no reply in 10 s to {what}"));
            let reply = match reply {
                // The SIP gateway does not run here (its commands' decoding is the same code,
                // cc_bus's, as every other service's).
                Err(e)
                    if c.service == "sip-gateway"
                        && e.kind() == async_nats::RequestErrorKind::NoResponders =>
                {
                    break
                }
                r => r.unwrap_or_else(|e| panic!("{what}: {e}")),
            };
            let reply: Value = serde_json::from_slice(&reply.payload)
                .unwrap_or_else(|e| panic!("{what}: the reply is not JSON: {e}"));
            sent += 1;
            if reply.get("ok").is_some() {
                continue; // a random body that happens to be a valid command
            }
            let e = &reply["error"];
            let (code, message) = (e["error"].as_str(), e["message"].as_str());
            assert!(
                code.is_some_and(|c| !c.is_empty()) && message.is_some_and(|m| !m.is_empty()),
                "{what}: not a structured refusal: {reply}"
            );
            assert_ne!(code, Some("internal"), "{what}: {reply}");
            assert!(
                e["field"].is_null() || e["field"].as_str().is_some_and(|f| !f.is_empty()),
                "{what}: {reply}"
            );
            assert_eq!(
                appended_with(&sys, &correlation).await,
                0,
                "{what}: refused ({reply}) but appended events"
            );
        }
    }
    assert!(sent >= 600, "{sent} commands sent");
    // Every service is still there and answers a real command.
    let admin = t.admin().await;
    admin.get("/api/admin/agents").await.ok();
}

/// Which principal may reach a route's handler (a random body to a route the principal may not
/// use tests only the permission check).
fn principal_for(path: &str) -> &'static str {
    if path.starts_with("/api/admin/") {
        "admin"
    } else if path.starts_with("/api/supervisor/") {
        "supervisor"
    } else {
        "agent"
    }
}

fn concrete(path: &str) -> String {
    path.replace("{queue}", "500")
        .replace("{agent}", "1002")
        .replace("{name}", "Lunch")
        .replace("{device}", "1003")
        .replace("{id}", "01a21464-58ec-71e3-aa8c-a51140331646")
}

async fn actor_events(sys: &System, actor: &str) -> i64 {
    sqlx::query_scalar("select count(*) from es_events where metadata->>'actor' = $1")
        .bind(actor)
        .fetch_one(&sys.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn every_http_request_body_is_refused_cleanly_and_nothing_is_appended() {
    let sys = System::start().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    let agent = t.idle_agent("1001").await;
    let admin = t.admin().await;
    let supervisor = t.supervisor().await;
    let doc = admin.get("/api/openapi.json").await.ok();
    let seed = seed();
    let mut runner = runner(seed);
    let mut sent = 0;
    let routes = cc_portal::routes();
    for (method, path) in routes
        .iter()
        .filter(|(m, p)| *m != "get" && *p != "/api/login" && *p != "/api/signout")
    {
        let op = &doc["paths"][*path][*method];
        let mut keys = BTreeSet::new();
        property_names(&op["requestBody"], &mut keys);
        // Schemas by reference: the names of the referenced component too.
        let text = op["requestBody"].to_string();
        for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
            if text.contains(&format!("/{name}\"")) {
                property_names(schema, &mut keys);
            }
        }
        let (client, actor): (&Client, &str) = match principal_for(path) {
            "admin" => (&admin, "user:admin"),
            "supervisor" => (&supervisor, "user:supervisor"),
            _ => (&agent, "agent:1001"),
        };
        let strategy = body(keys.into_iter().collect());
        let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        for case in 0..8 {
            let payload = strategy.new_tree(&mut runner).unwrap().current();
            let what = format!(
                "{method} {path} case {case} (seed {seed}): {}",
                shown(&payload)
            );
            let before = actor_events(&sys, actor).await;
            let r = client
                .http
                .request(m.clone(), format!("{}{}", client.base, concrete(path)))
                .header("X-Tenant", &client.tenant)
                .bearer_auth(client.token.as_deref().unwrap())
                .header("content-type", "application/json")
                .body(payload)
                .send()
                .await
                .unwrap();
            let status = r.status();
            let reply: Value = r.json().await.unwrap_or(Value::Null);
            sent += 1;
            assert!(!status.is_server_error(), "{what}: {status} {reply}");
            if status.is_success() {
                continue; // a random body that happens to be valid
            }
            assert!(
                reply["error"].as_str().is_some_and(|c| !c.is_empty())
                    && reply["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{what}: {status}, not a structured refusal: {reply}"
            );
            if status == StatusCode::BAD_REQUEST && reply["error"] == "invalid_field" {
                assert!(
                    reply["field"].as_str().is_some_and(|f| !f.is_empty()),
                    "{what}: an invalid field, but which? {reply}"
                );
            }
            assert_eq!(
                actor_events(&sys, actor).await,
                before,
                "{what}: refused ({status} {reply}) but appended events"
            );
        }
    }
    assert!(sent >= 250, "{sent} requests sent");
}
