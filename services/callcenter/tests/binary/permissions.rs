//! NATS least privilege, checked against a real nats-server running the file that
//! `callcenter nats-config` generates: each service's credentials are refused every other
//! service's subjects and the PBX's facts, and an integrator of one tenant cannot see a single
//! event of another.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use cc_bus::permissions::{inbox_prefix, integrator_durable, integrator_user, SERVICES};
use cc_testkit::NatsSetup;
use futures::StreamExt;

use crate::system::secured_nats;

/// A client of `user` and the server errors (permission violations) it was sent.
async fn client_of(
    url: &str,
    user: &str,
    password: &str,
) -> (async_nats::Client, Arc<Mutex<Vec<String>>>) {
    let errors = Arc::new(Mutex::new(Vec::new()));
    let sink = errors.clone();
    let client = async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
        .custom_inbox_prefix(inbox_prefix(user))
        // A refused request gets no answer: do not wait long for it.
        .request_timeout(Some(Duration::from_millis(1500)))
        .event_callback(move |e| {
            let sink = sink.clone();
            async move {
                if let async_nats::Event::ServerError(e) = e {
                    sink.lock().unwrap().push(e.to_string());
                }
            }
        })
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("{user} cannot connect: {e}"));
    (client, errors)
}

fn password(env: &[(String, String)], user: &str) -> String {
    let var = cc_bus::permissions::password_var(user);
    env.iter().find(|(k, _)| *k == var).unwrap().1.clone()
}

async fn violations_about(errors: &Arc<Mutex<Vec<String>>>, subject: &str) -> bool {
    for _ in 0..50 {
        if errors
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.to_lowercase().contains("permissions violation") && e.contains(subject))
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Whether a publish of `user` on `subject` reaches a subscriber (the operator) within `wait`.
async fn publish_arrives(
    operator: &async_nats::Client,
    client: &async_nats::Client,
    subject: &str,
    wait: Duration,
) -> bool {
    let mut sub = operator.subscribe(subject.to_string()).await.unwrap();
    operator.flush().await.unwrap();
    // A flush does not prove the subscription reached the server before the publish: publish
    // again until it arrives or `wait` is over.
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        client
            .publish(subject.to_string(), "forged".into())
            .await
            .unwrap();
        client.flush().await.unwrap();
        if tokio::time::timeout(Duration::from_millis(100), sub.next())
            .await
            .is_ok()
        {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
    }
}

/// A refused publish is answered by the server at once (the violation); an allowed one may
/// take a moment on a busy machine.
fn wait_for(allowed: bool) -> Duration {
    Duration::from_millis(if allowed { 5000 } else { 200 })
}

/// Whether `user` can subscribe to `subject` and read what the operator publishes there.
async fn subscription_hears(
    operator: &async_nats::Client,
    client: &async_nats::Client,
    subject: &str,
    allowed: bool,
) -> bool {
    let Ok(mut sub) = client.subscribe(subject.to_string()).await else {
        return false;
    };
    client.flush().await.unwrap();
    let deadline = tokio::time::Instant::now() + wait_for(allowed);
    loop {
        operator
            .publish(subject.to_string(), "secret".into())
            .await
            .unwrap();
        operator.flush().await.unwrap();
        if tokio::time::timeout(Duration::from_millis(100), sub.next())
            .await
            .is_ok_and(|m| m.is_some())
        {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
    }
}

#[tokio::test]
async fn each_service_is_refused_the_other_services_subjects_and_the_pbx_facts() {
    let p = format!("t{}", uuid::Uuid::new_v4().simple());
    let (nats, env) = secured_nats(&p, &[], NatsSetup::default());
    let (op_user, op_password) = nats.login().unwrap();
    let (operator, _) = client_of(&nats.url(), &op_user, &op_password).await;

    // Who may publish what, as the architecture has it (written here again on purpose: the
    // test checks the generated table against the intent, not against itself).
    let facts = format!("{p}.pbx.evt.acme.channel.c1.ChannelHungUp");
    let event = format!("{p}.events.acme.agent.1001.AgentPaused.1001._");
    let copy = format!("{p}.target_events.acme.call.c1.TransferStarted.1003.500");
    let view = format!("{p}.views.acme.agent.1001");
    let sim_control = format!("{p}.cmd.pbx-sim.acme.PlaceCall");
    let owners: &[(&str, &[&str])] = &[
        (&event, &["relay"]),
        (&copy, &["relay"]),
        (&facts, &["pbx-sim", "sip-gateway"]),
        (&view, &["projection"]),
        (&sim_control, &[]),
    ];
    // Whose commands each service answers.
    let servers: &[(&str, &[&str])] = &[
        ("auth", &["auth"]),
        ("agent-session", &["agent-session"]),
        ("queue-router", &["queue-router"]),
        ("call-control", &["call-control"]),
        ("webhooks", &["webhooks"]),
        ("pbx", &["pbx-sim", "sip-gateway"]),
        ("pbx-sim", &["pbx-sim"]),
        ("sip-gateway", &["sip-gateway"]),
    ];

    let mut checked = 0;
    for (user, _) in SERVICES {
        let (client, errors) = client_of(&nats.url(), user, &password(&env, user)).await;
        for (subject, allowed) in owners {
            let may = allowed.contains(user);
            assert_eq!(
                publish_arrives(&operator, &client, subject, wait_for(may)).await,
                may,
                "{user} publishing {subject}"
            );
            if !may {
                assert!(
                    violations_about(&errors, subject).await,
                    "the server tells {user} it refused {subject}: {:?}",
                    errors.lock().unwrap()
                );
            }
            checked += 1;
        }
        // Answering (or reading) another service's commands: refused.
        for (service, answered_by) in servers {
            let subject = format!("{p}.cmd.{service}.acme.AnyCommand");
            let may = answered_by.contains(user);
            assert_eq!(
                subscription_hears(&operator, &client, &subject, may).await,
                may,
                "{user} subscribing {subject}"
            );
            checked += 1;
        }
        // Replies meant for others, the streams' removal, another service's consumer.
        for subject in [
            format!("{}.anything", inbox_prefix("portal")),
            "_INBOX.x".to_string(),
        ] {
            if *user != "portal" || !subject.starts_with("_INBOX.portal") {
                assert!(
                    !subscription_hears(&operator, &client, &subject, false).await,
                    "{user} reads {subject}"
                );
            }
        }
        let events_stream = format!("{}_EVENTS", p.to_uppercase());
        let mut forbidden = vec![
            format!("$JS.API.STREAM.DELETE.{events_stream}"),
            format!("$JS.API.STREAM.PURGE.{events_stream}"),
            format!("$JS.API.STREAM.DELETE.{}_PBX", p.to_uppercase()),
        ];
        // Webhooks names its consumers on the events stream after the subscriptions, so it may
        // use any consumer name there (NATS permissions match whole tokens): it reads every
        // tenant's events anyway. No other service may touch an integrator's consumer.
        if *user != "webhooks" {
            forbidden.push(format!(
                "$JS.API.CONSUMER.MSG.NEXT.{events_stream}.integration-acme"
            ));
        }
        for subject in forbidden {
            assert!(
                !publish_arrives(&operator, &client, &subject, wait_for(false)).await,
                "{user} publishing {subject}"
            );
        }
    }
    assert!(checked > 100);
}

/// Publishes one event of `tenant` into the events stream (as the relay would).
async fn publish_event(js: &async_nats::jetstream::Context, p: &str, tenant: &str, n: usize) {
    js.publish(
        format!("{p}.events.{tenant}.agent.100{n}.AgentPaused.100{n}._"),
        format!("{{\"tenant\":\"{tenant}\",\"n\":{n}}}").into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
}

/// An integrator's durable consumer, as `callcenter events --durable` opens it.
async fn open_durable(
    js: &async_nats::jetstream::Context,
    stream: &str,
    name: &str,
    filter: &str,
) -> Result<async_nats::jetstream::consumer::PullConsumer, String> {
    js.create_consumer_on_stream(
        pull::Config {
            durable_name: Some(name.into()),
            filter_subject: filter.into(),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::Explicit,
            ..Default::default()
        },
        stream,
    )
    .await
    .map_err(|e| e.to_string())
}

async fn drain(consumer: &async_nats::jetstream::consumer::PullConsumer) -> Vec<String> {
    let mut out = Vec::new();
    let mut batch = consumer
        .batch()
        .max_messages(100)
        .expires(Duration::from_secs(1))
        .messages()
        .await
        .unwrap();
    while let Some(m) = batch.next().await {
        let m = m.unwrap();
        out.push(m.subject.to_string());
        m.ack().await.unwrap();
    }
    out
}

#[tokio::test]
async fn an_integrator_of_one_tenant_never_sees_an_event_of_another() {
    let p = format!("t{}", uuid::Uuid::new_v4().simple());
    let (nats, env) = secured_nats(&p, &["acme", "globex"], NatsSetup::default());
    let stream = format!("{}_EVENTS", p.to_uppercase());

    // The relay's stream, with events of both tenants, through the relay's own credentials.
    let (relay, _) = client_of(&nats.url(), "relay", &password(&env, "relay")).await;
    let relay_js = async_nats::jetstream::new(relay);
    relay_js
        .create_stream(async_nats::jetstream::stream::Config {
            name: stream.clone(),
            subjects: vec![format!("{p}.events.>"), format!("{p}.target_events.>")],
            ..Default::default()
        })
        .await
        .unwrap();
    for n in 0..3 {
        publish_event(&relay_js, &p, "acme", n).await;
        publish_event(&relay_js, &p, "globex", n).await;
    }

    let connect = |tenant: &str| {
        let user = integrator_user(tenant);
        let pw = password(&env, &user);
        let url = nats.url();
        async move { client_of(&url, &user, &pw).await }
    };
    let (acme, acme_errors) = connect("acme").await;
    let (globex, _) = connect("globex").await;
    let js = |c: async_nats::Client| {
        async_nats::jetstream::ContextBuilder::new()
            .timeout(Duration::from_millis(1500))
            .build(c)
    };
    let acme_js = js(acme.clone());
    let globex_js = js(globex);

    // Each reads its own tenant's events through its durable consumer, and only those.
    let acme_filter = format!("{p}.events.acme.>");
    let globex_filter = format!("{p}.events.globex.>");
    let mine = open_durable(&acme_js, &stream, &integrator_durable("acme"), &acme_filter)
        .await
        .unwrap();
    let seen = drain(&mine).await;
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen.iter().all(|s| s.contains(".events.acme.")), "{seen:?}");
    let theirs = open_durable(
        &globex_js,
        &stream,
        &integrator_durable("globex"),
        &globex_filter,
    )
    .await
    .unwrap();
    assert!(drain(&theirs)
        .await
        .iter()
        .all(|s| s.contains(".events.globex.")));

    // Everything else acme tries is refused.
    let refused = |r: Result<async_nats::jetstream::consumer::PullConsumer, String>, what: &str| {
        assert!(r.is_err(), "acme may {what}");
    };
    // Its own durable, widened to every tenant or pointed at globex.
    refused(
        open_durable(
            &acme_js,
            &stream,
            &integrator_durable("acme"),
            &format!("{p}.events.>"),
        )
        .await,
        "widen its consumer",
    );
    refused(
        open_durable(
            &acme_js,
            &stream,
            &integrator_durable("acme"),
            &globex_filter,
        )
        .await,
        "point its consumer at globex",
    );
    // Globex's durable, or a consumer of any other name.
    refused(
        open_durable(
            &acme_js,
            &stream,
            &integrator_durable("globex"),
            &globex_filter,
        )
        .await,
        "take globex's consumer",
    );
    refused(
        open_durable(&acme_js, &stream, "another", &acme_filter).await,
        "create another consumer",
    );
    // The crafted request: its own name and filter in the subject, every tenant in the body.
    let crafted = acme
        .request(
            format!(
                "$JS.API.CONSUMER.CREATE.{stream}.{}.{acme_filter}",
                integrator_durable("acme")
            ),
            serde_json::json!({
                "stream_name": stream,
                "config": {
                    "durable_name": integrator_durable("acme"),
                    "filter_subject": format!("{p}.events.>"),
                    "ack_policy": "explicit",
                    "deliver_policy": "all",
                }
            })
            .to_string()
            .into(),
        )
        .await
        .unwrap();
    let reply: serde_json::Value = serde_json::from_slice(&crafted.payload).unwrap();
    assert!(reply.get("error").is_some(), "{reply}");
    // Pulling from globex's consumer.
    let pull = acme
        .request(
            format!(
                "$JS.API.CONSUMER.MSG.NEXT.{stream}.{}",
                integrator_durable("globex")
            ),
            "{\"batch\":10,\"expires\":500000000}".into(),
        )
        .await;
    assert!(pull.is_err(), "acme pulled from globex's consumer");
    // Reading the stream directly, its info, or the events on core NATS.
    for subject in [
        format!("$JS.API.STREAM.MSG.GET.{stream}"),
        format!("$JS.API.DIRECT.GET.{stream}"),
        format!("$JS.API.STREAM.INFO.{stream}"),
        format!("$JS.API.CONSUMER.CREATE.{stream}"),
    ] {
        let r = tokio::time::timeout(
            Duration::from_secs(2),
            acme.request(subject.clone(), "{\"seq\":2}".into()),
        )
        .await;
        assert!(!matches!(r, Ok(Ok(_))), "acme got an answer on {subject}");
        assert!(violations_about(&acme_errors, &subject).await, "{subject}");
    }
    let mut live = acme.subscribe(format!("{p}.events.>")).await.unwrap();
    acme.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    publish_event(&relay_js, &p, "globex", 9).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(500), live.next())
            .await
            .is_err()
            || live.next().await.is_none(),
        "acme heard a globex event on core NATS"
    );
    // Publishing anything: refused.
    for subject in [
        format!("{p}.events.acme.agent.1.AgentPaused.1._"),
        format!("{p}.cmd.auth.acme.SignIn"),
        format!("{p}.pbx.evt.acme.channel.c1.ChannelHungUp"),
    ] {
        acme.publish(subject.clone(), "forged".into())
            .await
            .unwrap();
        acme.flush().await.unwrap();
        assert!(violations_about(&acme_errors, &subject).await, "{subject}");
    }

    // After all that, acme's consumer still holds acme's events only (the new globex one is not
    // there) and nothing of globex was ever delivered to acme.
    publish_event(&relay_js, &p, "acme", 7).await;
    let later = drain(&mine).await;
    assert_eq!(later.len(), 1, "{later:?}");
    assert!(later[0].contains(".events.acme."));
}

/// `callcenter run` as the one combined user (what scripts/run does): its services ask each
/// other over their one connection, and each answer arrives (nats-server grants no response
/// permission for a request a connection delivers to itself; the combined user replies into
/// its own inbox). Before that was allowed, every sign-in and every PBX command timed out.
#[tokio::test]
async fn one_process_as_the_combined_user_answers_its_own_requests() {
    use crate::system::{Custom, System};
    use crate::tenant::TenantSpec;
    let log =
        std::env::temp_dir().join(format!("cc-combined-{}.log", uuid::Uuid::new_v4().simple()));
    // With the SIP gateway too, as scripts/run: two implementations of `pbx` on the connection.
    let sys = System::start_custom(Custom {
        combined_user: true,
        sip: true,
        log: Some(log.clone()),
        ..Default::default()
    })
    .await; // its readiness is a sign-in: the portal asks auth
            // The operator's and the admin's requests to make the tenant are answered too.
    let t = sys.tenant(TenantSpec::call_center()).await;
    let bob = t.idle_agent("1002").await;
    t.place_caller("500", "5551234", "Combined").await;
    sys.view_when(&bob, "Ringing", |v| v["status"] == "ringing")
        .await; // the router's Originate to the PBX was answered
                // The router's and agent-session's reconciliations ask the PBX of every tenant at start:
                // each answer must be allowed (the server logs a refused one to the client).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    let refused: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("Permissions Violation") || l.contains("could not list the PBX"))
        .collect();
    assert!(refused.is_empty(), "{refused:#?}");
}
