use std::time::Duration;

use cc_bus::{Command, CommandContext, CommandError, CommandHandlers, RequestError};
use cc_testkit::NatsServer;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::bus;

#[derive(Debug, Serialize, Deserialize)]
struct PauseAgent {
    agent: String,
    reason: String,
}
impl Command for PauseAgent {
    const SERVICE: &'static str = "agent-session";
    const NAME: &'static str = "PauseAgent";
    type Reply = Paused;
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Paused {
    agent: String,
    reason: String,
    tenant: String,
    actor: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Explode {}
impl Command for Explode {
    const SERVICE: &'static str = "agent-session";
    const NAME: &'static str = "Explode";
    type Reply = ();
}

async fn serve(nats: &NatsServer) -> (cc_bus::Bus, CancellationToken, tokio::task::JoinHandle<()>) {
    let bus = bus(nats).await;
    let cancel = CancellationToken::new();
    let handlers = CommandHandlers::new("agent-session", ())
        .on(|_, ctx: CommandContext, c: PauseAgent| async move {
            if c.reason != "Lunch" {
                return Err(CommandError::field(
                    "unknown_pause_reason",
                    "reason",
                    "valid reasons: Lunch",
                ));
            }
            Ok(Paused {
                agent: c.agent,
                reason: c.reason,
                tenant: ctx.tenant,
                actor: ctx.actor,
            })
        })
        .on(|_, _, _: Explode| async move {
            if true {
                panic!("boom");
            }
            Ok(())
        });
    let (b, c) = (bus.clone(), cancel.clone());
    let task = tokio::spawn(async move { handlers.serve(b, c).await.unwrap() });
    // Wait until the subscription is live on the server.
    bus.client.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    (bus, cancel, task)
}

#[tokio::test]
async fn typed_commands_get_typed_replies_and_structured_refusals() {
    let nats = NatsServer::start();
    let (bus, cancel, task) = serve(&nats).await;
    let ctx = CommandContext::new("acme", "agent:1001");
    let reply = bus
        .request(
            &ctx,
            &PauseAgent {
                agent: "1001".into(),
                reason: "Lunch".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        reply,
        Paused {
            agent: "1001".into(),
            reason: "Lunch".into(),
            tenant: "acme".into(),
            actor: "agent:1001".into()
        }
    );
    match bus
        .request(
            &ctx,
            &PauseAgent {
                agent: "1001".into(),
                reason: "Nap".into(),
            },
        )
        .await
    {
        Err(RequestError::Rejected(e)) => {
            assert_eq!(e.error, "unknown_pause_reason");
            assert_eq!(e.field.as_deref(), Some("reason"));
        }
        other => panic!("{other:?}"),
    }
    cancel.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn malformed_unknown_and_panicking_commands_get_error_replies_not_timeouts() {
    let nats = NatsServer::start();
    let (bus, _cancel, _task) = serve(&nats).await;
    let subject = |name: &str| bus.subjects.command("agent-session", "acme", name);
    let quick = |f| tokio::time::timeout(Duration::from_secs(3), f);

    let r = quick(bus.request_raw(subject("PauseAgent"), b"{not json".to_vec()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r["error"]["error"], "invalid_json");

    let r = quick(bus.request_raw(subject("PauseAgent"), br#"{"agent":"1001"}"#.to_vec()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r["error"]["error"], "missing_field");
    assert_eq!(r["error"]["field"], "reason");

    let r = quick(bus.request_raw(
        subject("PauseAgent"),
        br#"{"agent":1001,"reason":"Lunch"}"#.to_vec(),
    ))
    .await
    .unwrap()
    .unwrap();
    assert_eq!(r["error"]["field"], "agent");

    let r = quick(bus.request_raw(subject("Teleport"), b"{}".to_vec()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r["error"]["error"], "unknown_command");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("PauseAgent"),
        "{r}"
    );

    let r = quick(bus.request_raw(subject("Explode"), b"{}".to_vec()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r["error"]["error"], "internal");

    // The service is still up after the panic.
    let ok = bus
        .request(
            &CommandContext::new("acme", "t"),
            &PauseAgent {
                agent: "1".into(),
                reason: "Lunch".into(),
            },
        )
        .await;
    assert!(ok.is_ok());
}

#[tokio::test]
async fn a_command_with_no_service_running_fails_fast() {
    let nats = NatsServer::start();
    let bus = bus(&nats).await;
    let r = tokio::time::timeout(
        Duration::from_secs(3),
        bus.request(
            &CommandContext::new("acme", "t"),
            &PauseAgent {
                agent: "1".into(),
                reason: "x".into(),
            },
        ),
    )
    .await
    .unwrap();
    assert!(matches!(r, Err(RequestError::NoResponders(_))), "{r:?}");
}

#[tokio::test]
async fn a_retrying_request_waits_for_a_service_that_comes_late_and_takes_a_refusal_as_final() {
    let nats = NatsServer::start();
    let bus = bus(&nats).await;
    let ctx = CommandContext::new("acme", "t");
    let stop = CancellationToken::new();
    let lunch = PauseAgent {
        agent: "1".into(),
        reason: "Lunch".into(),
    };
    // Nobody serves: two attempts, then the last error.
    let r = bus.request_retrying(&ctx, &lunch, Some(2), &stop).await;
    assert!(matches!(r, Err(RequestError::NoResponders(_))), "{r:?}");
    // The service starts while the request is being asked again.
    let asking = {
        let (bus, ctx, stop) = (bus.clone(), ctx.clone(), stop.clone());
        tokio::spawn(async move { bus.request_retrying(&ctx, &lunch, None, &stop).await })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (_served, cancel, _task) = serve(&nats).await;
    let paused = tokio::time::timeout(Duration::from_secs(10), asking)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(paused.reason, "Lunch");
    // A refusal is the answer: not asked again.
    let started = std::time::Instant::now();
    let refused = PauseAgent {
        agent: "1".into(),
        reason: "Coffee".into(),
    };
    let r = bus.request_retrying(&ctx, &refused, None, &stop).await;
    assert!(
        matches!(&r, Err(RequestError::Rejected(e)) if e.error == "unknown_pause_reason"),
        "{r:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    cancel.cancel();
}

/// Call control's partitions (issue 16): each partition's leader serves in a queue group of its
/// own, sees every command and answers its own tenants' only, so a command gets exactly one
/// reply, from the leader of its tenant's partition.
#[tokio::test]
async fn each_tenants_command_is_answered_by_its_partitions_handler_alone() {
    let nats = NatsServer::start();
    let bus = bus(&nats).await;
    let cancel = CancellationToken::new();
    for p in cc_core::Partition::all(4) {
        let handlers = CommandHandlers::new("agent-session", p.index)
            .with_tenants(cc_bus::TenantScope::Partition(p))
            .on(
                |index: u32, ctx: CommandContext, c: PauseAgent| async move {
                    Ok(Paused {
                        agent: c.agent,
                        reason: format!("partition {index}"),
                        tenant: ctx.tenant,
                        actor: ctx.actor,
                    })
                },
            );
        let (b, c) = (bus.clone(), cancel.clone());
        tokio::spawn(async move { handlers.serve(b, c).await.unwrap() });
    }
    bus.client.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut answered = std::collections::BTreeSet::new();
    for i in 0..24 {
        let tenant = format!("tenant-{i}");
        let reply = bus
            .request(
                &CommandContext::new(&tenant, "agent:1001"),
                &PauseAgent {
                    agent: "1001".into(),
                    reason: "Lunch".into(),
                },
            )
            .await
            .unwrap();
        let expected = cc_core::partition::of(&tenant, 4);
        assert_eq!(reply.reason, format!("partition {expected}"), "{tenant}");
        answered.insert(expected);
    }
    assert_eq!(answered.len(), 4, "every partition answered some tenant");
    cancel.cancel();
}
