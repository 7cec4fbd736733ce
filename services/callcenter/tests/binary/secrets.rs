//! No password, token, SIP secret or hash in an event, a log line or a metric: a run with known
//! secrets, then a scan of everything it produced.

use std::time::Duration;

use serde_json::{json, Value};

use crate::phones::{Phone, PhoneSpec};
use crate::system::{Custom, System};
use crate::tenant::TenantSpec;

/// Where each secret shows up in `text` (the source named `source`), with a little context.
fn findings(secrets: &[(String, String)], source: &str, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (name, secret) in secrets {
        if let Some(at) = text.find(secret.as_str()) {
            let (mut from, mut to) = (
                at.saturating_sub(120),
                (at + secret.len() + 60).min(text.len()),
            );
            while !text.is_char_boundary(from) {
                from -= 1;
            }
            while !text.is_char_boundary(to) {
                to += 1;
            }
            out.push(format!("{name} in {source}: …{}…", &text[from..to]));
        }
    }
    out
}

fn unique(what: &str) -> String {
    format!("{what}-{}", uuid::Uuid::new_v4().simple())
}

#[tokio::test]
async fn no_password_token_sip_secret_or_hash_reaches_an_event_a_log_line_or_a_metric() {
    let log =
        std::env::temp_dir().join(format!("cc-secrets-{}.log", uuid::Uuid::new_v4().simple()));
    let sys = System::start_custom(Custom {
        sip: true,
        log: Some(log.clone()),
        // Everything the services log, down to debug, as JSON lines (as in production): the
        // lines that are not JSON are the demo banner (`CC_DEMO`).
        env: vec![
            ("CC_LOG".into(), "debug".into()),
            ("CC_LOG_FORMAT".into(), "json".into()),
        ],
        ..Custom::default()
    })
    .await;
    // The test's own tenant; demo mode is on for the SIP tenant, so the demo tenant exists too.
    let t = sys.tenant(TenantSpec::call_center()).await;
    // The demo tenant's fixed credentials, which the demo banner prints for a newcomer (and
    // docs/getting-started.md shows): nowhere else.
    let demo: Vec<(String, String)> = vec![
        ("demo agent password".into(), "demo1001".into()),
        ("demo admin password".into(), "demo-admin".into()),
        ("demo SIP password".into(), "sip1001".into()),
    ];
    let mut secrets = demo.clone();
    secrets.push(("agent's password".into(), t.password("1001")));
    secrets.push(("tenant admin's password".into(), t.password("admin")));
    let (operator, password) = sys.nats.login().unwrap();
    secrets.push((format!("NATS password of {operator}"), password));
    for (var, password) in &sys.nats_env {
        secrets.push((format!("NATS password {var}"), password.clone()));
    }

    // An agent signs in with its password, works and signs out; a wrong password is tried.
    let agent = t.idle_agent("1001").await;
    secrets.push(("agent's session token".into(), agent.token.clone().unwrap()));
    agent
        .post("/api/session/pause", json!({"reason": "Lunch"}))
        .await
        .ok();
    sys.view_when(&agent, "Paused", |v| v["status"] == "paused")
        .await;
    agent.post("/api/session/unpause", json!({})).await.ok();
    let wrong = unique("Wrong-password");
    secrets.push(("a wrong password".into(), wrong.clone()));
    let r = t
        .anonymous()
        .post(
            "/api/login",
            json!({"agent_number": "1002", "password": wrong}),
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.body);

    // An admin creates an agent and a supervisor with passwords, resets the agent's password.
    let admin = t.admin().await;
    secrets.push(("admin's session token".into(), admin.token.clone().unwrap()));
    let (first, second, supervisor) = (
        unique("Agent-pass"),
        unique("Reset-pass"),
        unique("Super-pass"),
    );
    secrets.push(("new agent's password".into(), first.clone()));
    secrets.push(("reset password".into(), second.clone()));
    secrets.push(("new supervisor's password".into(), supervisor.clone()));
    admin
        .post(
            "/api/admin/agents",
            json!({"agent": "1007", "display_name": "Grace", "password": first}),
        )
        .await
        .ok();
    let grace = t.sign_in("1007", &first).await;
    secrets.push(("new agent's token".into(), grace.token.clone().unwrap()));
    let r = admin
        .post(
            "/api/admin/agents/1007/password",
            json!({"password": second}),
        )
        .await;
    assert!(r.status.is_success(), "{} {}", r.status, r.body);
    let grace = t.sign_in("1007", &second).await;
    secrets.push((
        "new agent's second token".into(),
        grace.token.clone().unwrap(),
    ));
    grace.post("/api/signout", json!({})).await;
    admin
        .post(
            "/api/admin/users",
            json!({"username": "heidi", "display_name": "Heidi", "password": supervisor, "role": "supervisor"}),
        )
        .await
        .ok();
    let heidi = t.sign_in("heidi", &supervisor).await;
    secrets.push(("supervisor's token".into(), heidi.token.clone().unwrap()));

    // A webhook subscription: its secret is shown once.
    let hook = admin
        .post(
            "/api/admin/webhooks",
            json!({"url": format!("http://127.0.0.1:{}/hook", cc_testkit::free_port()), "allow_http": true}),
        )
        .await;
    assert_eq!(hook.status, 201, "{}", hook.body);
    let hook_secret = hook.body["secret"].as_str().unwrap().to_string();
    secrets.push(("webhook secret".into(), hook_secret.clone()));
    // Without its prefix too (`whsec_<base64 key>`).
    if let Some((_, key)) = hook_secret.split_once('_') {
        secrets.push(("webhook key".into(), key.to_string()));
    }

    // The SIP tenant's admin creates a device; a phone registers with its password.
    let office_admin = sys.office_admin().await;
    secrets.push((
        "office admin's token".into(),
        office_admin.token.clone().unwrap(),
    ));
    let created = office_admin
        .post("/api/admin/devices", json!({"device": "1008"}))
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let sip_password = created.body["password"].as_str().unwrap().to_string();
    secrets.push(("SIP device password".into(), sip_password.clone()));
    let phone = Phone::start(
        sys.sip.unwrap(),
        "office.localhost",
        PhoneSpec {
            tcp: false,
            user: "1008",
            password: Some(&sip_password),
            tone: 697,
            auto_answer: true,
            codec: "PCMU",
            name: "",
        },
    )
    .await;
    phone.registration("200 OK").await;
    let office_agent = sys.office_agent("1001").await;
    sys.wait_device(&office_agent, "1008", true).await;
    drop(phone);

    // The hashes the tables hold: passwords (argon2), SIP HA1, session tokens (SHA-256).
    let hashes: Vec<String> = sqlx::query_scalar(
        "select password_hash from auth_agents union all select password_hash from auth_users
         union all select ha1 from sip_devices
         union all select encode(token_hash, 'hex') from auth_sessions",
    )
    .fetch_all(&sys.db.pool)
    .await
    .unwrap();
    assert!(hashes.len() > 10, "{hashes:?}");
    for h in hashes {
        // An argon2 PHC string: the hash itself is its last part.
        let last = h.rsplit('$').next().unwrap().to_string();
        secrets.push(("a stored hash".into(), h.clone()));
        if last != h {
            secrets.push(("a stored hash's digest".into(), last));
        }
    }
    // A moment for the last events and log lines.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut found = Vec::new();
    let events: Vec<(String, String, String, String)> = sqlx::query_as(
        "select stream, event_type, data::text, metadata::text from es_events order by position",
    )
    .fetch_all(&sys.db.pool)
    .await
    .unwrap();
    assert!(events.len() > 20, "the run produced events");
    for (stream, ty, data, metadata) in &events {
        found.extend(findings(
            &secrets,
            &format!("event {ty} of {stream} (data)"),
            data,
        ));
        found.extend(findings(
            &secrets,
            &format!("event {ty} of {stream} (metadata)"),
            metadata,
        ));
    }
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(
        logs.contains("connected to NATS"),
        "the services' log lines were captured"
    );
    let mut banner = 0;
    for line in logs.lines() {
        if serde_json::from_str::<Value>(line).is_ok() {
            found.extend(findings(&secrets, "a log line", line));
        } else {
            banner += 1;
            let others: Vec<_> = secrets
                .iter()
                .filter(|s| !demo.contains(s))
                .cloned()
                .collect();
            found.extend(findings(&others, "the demo banner", line));
        }
    }
    assert!(
        (1..40).contains(&banner),
        "only the demo banner is not JSON: {banner} lines"
    );
    let metrics = sys
        .http
        .get(sys._app.admin("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("# EOF"));
    found.extend(findings(&secrets, "/metrics", &metrics));
    // And every message JetStream keeps (events, commands' copies, if any), headers included.
    let kept = jetstream_messages(&sys).await;
    assert!(kept.len() > 20, "JetStream keeps the run's events");
    eprintln!(
        "scanned {} events, {} log lines, {} JetStream messages, /metrics for {} secrets",
        events.len(),
        logs.lines().count(),
        kept.len(),
        secrets.len()
    );
    for (subject, message) in kept {
        found.extend(findings(
            &secrets,
            &format!("JetStream {subject}"),
            &message,
        ));
    }
    let _ = std::fs::remove_file(&log);
    assert!(
        found.is_empty(),
        "{} secret(s) leaked:\n{}",
        found.len(),
        found.join("\n")
    );
}

/// Every message of every JetStream stream: (subject, headers and payload as text).
async fn jetstream_messages(sys: &System) -> Vec<(String, String)> {
    use futures::StreamExt;
    let client = sys.operator_nats().await.unwrap();
    let js = async_nats::jetstream::new(client);
    let names: Vec<String> = js.stream_names().map(|n| n.unwrap()).collect().await;
    let mut out = Vec::new();
    for name in names {
        let stream = js.get_stream(&name).await.unwrap();
        let consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
            .await
            .unwrap();
        let pending = consumer.cached_info().num_pending as usize;
        let mut messages = consumer.messages().await.unwrap();
        for _ in 0..pending {
            let m = tokio::time::timeout(Duration::from_secs(5), messages.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            let headers: Value = m
                .headers
                .iter()
                .flat_map(|h| h.iter())
                .map(|(k, v)| (k.to_string(), json!(format!("{v:?}"))))
                .collect::<serde_json::Map<_, _>>()
                .into();
            out.push((
                m.subject.to_string(),
                format!("{headers} {}", String::from_utf8_lossy(&m.payload)),
            ));
        }
    }
    out
}
