//! Traces over OTLP: a receiver built on the official OpenTelemetry protobuf definitions takes
//! what the services export (`CC_OTLP_ENDPOINT`), and one pause and one queue call must each
//! be one connected trace through every hop.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde_json::json;

use crate::system::System;
use crate::tenant::TenantSpec;

#[derive(Debug, Clone)]
struct Span {
    trace: String,
    id: String,
    parent: String,
    name: String,
    service: String,
}

/// An OTLP/HTTP trace receiver on loopback, keeping every span it is sent.
struct Receiver {
    url: String,
    spans: Arc<Mutex<Vec<Span>>>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Receiver {
    async fn start() -> Receiver {
        let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
        let kept = spans.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: Bytes| {
                let kept = kept.clone();
                async move {
                    let Ok(req) = ExportTraceServiceRequest::decode(body) else {
                        return (axum::http::StatusCode::BAD_REQUEST, Vec::new());
                    };
                    let mut kept = kept.lock().unwrap();
                    for rs in req.resource_spans {
                        let service = rs
                            .resource
                            .iter()
                            .flat_map(|r| &r.attributes)
                            .find(|a| a.key == "service.name")
                            .and_then(|a| a.value.as_ref())
                            .map(|v| format!("{:?}", v.value))
                            .unwrap_or_default();
                        for ss in rs.scope_spans {
                            for s in ss.spans {
                                kept.push(Span {
                                    trace: hex(&s.trace_id),
                                    id: hex(&s.span_id),
                                    parent: hex(&s.parent_span_id),
                                    name: s.name,
                                    service: service.clone(),
                                });
                            }
                        }
                    }
                    // An empty ExportTraceServiceResponse.
                    (axum::http::StatusCode::OK, Vec::new())
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, spans }
    }

    fn trace(&self, trace: &str) -> Vec<Span> {
        let spans = self.spans.lock().unwrap();
        spans.iter().filter(|s| s.trace == trace).cloned().collect()
    }

    /// Waits until the trace holds a span named like each of `names` (a name, or a prefix
    /// ending in `*`); then returns it.
    async fn wait_for(&self, trace: &str, names: &[&str]) -> Vec<Span> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let spans = self.trace(trace);
            let missing: Vec<&str> = names
                .iter()
                .copied()
                .filter(|n| !spans.iter().any(|s| matches(&s.name, n)))
                .collect();
            if missing.is_empty() {
                return spans;
            }
            if tokio::time::Instant::now() > deadline {
                let got: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
                panic!("trace {trace}: no span {missing:?}; it has {got:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn matches(name: &str, pattern: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == pattern,
    }
}

/// Every span's parent is in the trace, but for the one whose parent is `root` (the caller's
/// span, outside): one connected tree.
fn assert_connected(spans: &[Span], root: &str) {
    let ids: HashSet<&str> = spans.iter().map(|s| s.id.as_str()).collect();
    let tops: Vec<&Span> = spans
        .iter()
        .filter(|s| !ids.contains(s.parent.as_str()))
        .collect();
    assert!(
        tops.iter().all(|s| s.parent == root),
        "spans whose parent is not in the trace: {tops:#?}"
    );
    assert_eq!(tops.len(), 1, "one span under the caller's: {tops:#?}");
}

fn traceparent(trace: &str, span: &str) -> String {
    format!("00-{trace}-{span}-01")
}

async fn traced_system(receiver: &Receiver) -> System {
    System::start_with_env(&[
        ("CC_OTLP_ENDPOINT", receiver.url.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ])
    .await
}

#[tokio::test]
async fn a_pause_is_one_trace_from_the_click_to_the_live_update() {
    let receiver = Receiver::start().await;
    let sys = traced_system(&receiver).await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    let alice = t.idle_agent("1001").await;

    // The page sends a traceparent with each request (app.js); here, one we know.
    let (trace, click) = (
        uuid::Uuid::new_v4().simple().to_string(),
        "00f067aa0ba902b7",
    );
    let r = alice
        .http
        .post(format!("{}/api/session/pause", alice.base))
        .header("X-Tenant", &alice.tenant)
        .bearer_auth(alice.token.as_deref().unwrap())
        .header("traceparent", traceparent(&trace, click))
        .json(&json!({"reason": "Lunch"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());

    let spans = receiver
        .wait_for(
            &trace,
            &[
                "POST /api/session/pause",
                "agent-session PauseAgent request",
                "agent-session PauseAgent",
                "eventstore append",
                "relay publish",
                "portal projection update",
                "portal sse push",
            ],
        )
        .await;
    assert_connected(&spans, click);
    let by_id: HashMap<&str, &Span> = spans.iter().map(|s| (s.id.as_str(), s)).collect();
    let parent = |name: &str| {
        let s = spans.iter().find(|s| s.name == name).unwrap();
        by_id.get(s.parent.as_str()).map(|p| p.name.as_str())
    };
    // The hops in their order: the command is the request's child, the append the command's,
    // and the relay, the projection and the push follow the append.
    assert_eq!(
        parent("agent-session PauseAgent request"),
        Some("POST /api/session/pause")
    );
    assert_eq!(
        parent("agent-session PauseAgent"),
        Some("agent-session PauseAgent request")
    );
    assert_eq!(parent("relay publish"), Some("eventstore append"));
    assert_eq!(
        parent("portal projection update"),
        Some("eventstore append")
    );
    assert_eq!(parent("portal sse push"), Some("portal projection update"));
    assert!(
        spans.iter().all(|s| s.service.contains("callcenter")),
        "service.name: {spans:#?}"
    );
}

#[tokio::test]
async fn a_queue_call_is_one_trace_from_the_pbx_report_to_the_ringing_phone() {
    let receiver = Receiver::start().await;
    let sys = traced_system(&receiver).await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    let _bob = t.idle_agent("1002").await;

    let (trace, pbx) = (
        uuid::Uuid::new_v4().simple().to_string(),
        "b7ad6b7169203331",
    );
    let r = sys
        .http
        .post(t.pbx_url("/calls"))
        .header("traceparent", traceparent(&trace, pbx))
        .json(&json!({"queue": "500", "caller_number": "5551234", "caller_name": "Traced"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());

    let spans = receiver
        .wait_for(
            &trace,
            &[
                "POST /tenants/{tenant}/calls",
                "pbx report ChannelCreated",
                "queue-router decide",
                "queue-router record",
                "eventstore append",
                "pbx Originate request",
                "pbx Originate",
                "phone ringing",
                "relay publish",
                "portal projection update",
            ],
        )
        .await;
    assert_connected(&spans, pbx);
    let by_id: HashMap<&str, &Span> = spans.iter().map(|s| (s.id.as_str(), s)).collect();
    let ancestors = |name: &str| {
        let mut s = spans.iter().find(|s| s.name == name).unwrap();
        let mut up = vec![];
        while let Some(p) = by_id.get(s.parent.as_str()) {
            up.push(p.name.clone());
            s = p;
        }
        up
    };
    // The ringing phone descends from the router's decision on the PBX's report.
    let up = ancestors("phone ringing");
    for hop in [
        "pbx Originate",
        "pbx Originate request",
        "queue-router record",
        "pbx report ChannelCreated",
    ] {
        assert!(up.iter().any(|n| n == hop), "phone ringing under {up:?}");
    }
}
