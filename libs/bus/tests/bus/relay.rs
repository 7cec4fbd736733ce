use std::time::Duration;

use cc_bus::relay::{Relay, RelayOptions};
use cc_bus::Bus;
use cc_eventstore::{
    Checkpoint, EventStore, ExpectedVersion, Metadata, NewEvent, ReadFilter, StreamName,
};
use cc_testkit::{eventually, NatsServer, TestDb};
use rand::Rng;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::bus;

async fn store() -> (TestDb, EventStore) {
    let db = TestDb::new().await;
    cc_eventstore::migrate(&db.pool, "eventstore", cc_eventstore::MIGRATIONS)
        .await
        .unwrap();
    let store = EventStore::new(db.pool.clone());
    (db, store)
}

fn options() -> RelayOptions {
    RelayOptions {
        batch_size: 50,
        lease_retry: Duration::from_millis(50),
        ..Default::default()
    }
}

/// A relay as its own "process": its own connection pool, so that killing it (abort) and
/// closing the pool drops its connections the way a crash would.
struct RelayProcess {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    pool: sqlx::PgPool,
}

impl RelayProcess {
    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
        self.pool.close().await;
    }

    async fn stop(self) {
        self.cancel.cancel();
        self.task.await.unwrap();
        self.pool.close().await;
    }
}

async fn spawn_relay(bus: &Bus, db: &TestDb) -> RelayProcess {
    spawn_relay_with(bus, db, options()).await
}

async fn spawn_relay_with(bus: &Bus, db: &TestDb, options: RelayOptions) -> RelayProcess {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(&db.url)
        .await
        .unwrap();
    let cancel = CancellationToken::new();
    let relay = Relay::new(
        EventStore::new(pool.clone()),
        bus.clone(),
        db.url.clone(),
        options,
    );
    let c = cancel.clone();
    RelayProcess {
        cancel,
        task: tokio::spawn(async move { relay.run(c).await }),
        pool,
    }
}

async fn append(store: &EventStore, stream: &str, n: usize) {
    let s = StreamName::new("acme", "agent", stream).unwrap();
    let events: Vec<NewEvent> = (0..n)
        .map(|i| {
            NewEvent::new(
                "AgentPaused",
                1,
                json!({ "i": i }),
                Metadata::new("acme", "test"),
            )
        })
        .collect();
    store
        .append(&s, ExpectedVersion::Any, &events)
        .await
        .unwrap();
}

/// Every event id in the store, in the store's global order.
async fn store_order(store: &EventStore, expected: usize) -> Vec<Uuid> {
    eventually("all events readable", Duration::from_secs(20), || async {
        let all = store
            .read_all(&ReadFilter::All, Checkpoint::START, 100_000)
            .await
            .unwrap();
        (all.len() == expected).then(|| all.iter().map(|e| e.event_id).collect())
    })
    .await
}

/// Every message in the JetStream events stream, in stream order: (event id, subject, headers).
async fn stream_messages(bus: &Bus) -> Vec<(Uuid, String, async_nats::HeaderMap)> {
    let Ok(mut stream) = bus.jetstream.get_stream(bus.subjects.events_stream()).await else {
        return vec![];
    };
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        let m = stream.get_raw_message(seq).await.unwrap();
        let id = m
            .headers
            .get("Nats-Msg-Id")
            .unwrap()
            .as_str()
            .parse()
            .unwrap();
        out.push((id, m.subject.to_string(), m.headers.clone()));
    }
    out
}

async fn wait_relayed(bus: &Bus, n: usize) -> Vec<Uuid> {
    eventually(
        "events relayed to JetStream",
        Duration::from_secs(30),
        || async {
            let msgs = stream_messages(bus).await;
            assert!(
                msgs.len() <= n,
                "more messages ({}) than events ({n}): a duplicate was stored",
                msgs.len()
            );
            (msgs.len() == n).then(|| msgs.into_iter().map(|m| m.0).collect())
        },
    )
    .await
}

#[tokio::test]
async fn relays_committed_events_in_store_order_with_cloudevents_headers() {
    let (db, store) = store().await;
    let nats = NatsServer::start();
    let bus = bus(&nats).await;
    append(&store, "1001", 3).await;
    append(&store, "1002", 1).await;
    let relay = spawn_relay(&bus, &db).await;
    append(&store, "1001", 2).await;

    let relayed = wait_relayed(&bus, 6).await;
    assert_eq!(relayed, store_order(&store, 6).await);
    let msgs = stream_messages(&bus).await;
    let (id, subject, h) = &msgs[0];
    assert_eq!(subject, "cc.events.acme.agent.1001.AgentPaused._._");
    assert_eq!(h.get("ce-id").unwrap().as_str(), id.to_string());
    assert_eq!(h.get("ce-specversion").unwrap().as_str(), "1.0");
    assert_eq!(
        h.get("ce-type").unwrap().as_str(),
        "callcenter.AgentPaused.v1"
    );
    assert_eq!(h.get("ce-tenant").unwrap().as_str(), "acme");
    assert_eq!(h.get("ce-source").unwrap().as_str(), "/tenants/acme/agent");
    assert!(h.get("ce-time").is_some());
    assert_eq!(h.get("Cc-Stream-Version").unwrap().as_str(), "1");

    // The checkpoint in the store follows the acks.
    let cp = cc_eventstore::CheckpointStore::new(db.pool.clone());
    eventually(
        "relay checkpoint saved",
        Duration::from_secs(10),
        || async {
            let saved = cp.load("relay").await.unwrap();
            let last = store
                .read_all(&ReadFilter::All, Checkpoint::START, 100)
                .await
                .unwrap()
                .last()
                .unwrap()
                .checkpoint();
            (saved == last).then_some(())
        },
    )
    .await;
    relay.stop().await;
}

#[tokio::test]
async fn killing_the_relay_at_any_point_loses_and_reorders_nothing() {
    let (db, store) = store().await;
    let nats = NatsServer::start();
    let bus = bus(&nats).await;

    // Concurrent writers keep appending while the relay is killed again and again.
    let writers: Vec<_> = (0..6)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..30 {
                    append(&store, &format!("w{w}"), 1 + (i % 3)).await;
                    let pause = rand::thread_rng().gen_range(0..15);
                    tokio::time::sleep(Duration::from_millis(pause * 3)).await;
                }
            })
        })
        .collect();
    for _ in 0..15 {
        let relay = spawn_relay(&bus, &db).await;
        let pause = rand::thread_rng().gen_range(5..80);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        relay.kill().await; // a crash: no graceful stop
    }
    for w in writers {
        w.await.unwrap();
    }
    let total = 6 * (10 * (1 + 2 + 3));
    let relay = spawn_relay(&bus, &db).await;
    let relayed = wait_relayed(&bus, total).await;
    assert_eq!(
        relayed,
        store_order(&store, total).await,
        "JetStream holds every event once, in store order"
    );
    relay.stop().await;
}

#[tokio::test]
async fn several_relays_at_once_publish_each_event_once_in_order() {
    let (db, store) = store().await;
    let nats = NatsServer::start();
    let bus = bus(&nats).await;
    let mut relays = Vec::new();
    for _ in 0..3 {
        relays.push(spawn_relay(&bus, &db).await);
    }
    for i in 0..40 {
        append(&store, &format!("s{}", i % 4), 2).await;
    }
    // Kill whichever relay leads; another takes over.
    tokio::time::sleep(Duration::from_millis(100)).await;
    relays.remove(0).kill().await;
    for i in 0..20 {
        append(&store, &format!("s{}", i % 4), 1).await;
    }
    let relayed = wait_relayed(&bus, 100).await;
    assert_eq!(relayed, store_order(&store, 100).await);
    for r in relays {
        r.stop().await;
    }
}

#[tokio::test]
async fn a_nats_restart_while_relaying_loses_nothing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("info,cc_bus=debug")
        .with_test_writer()
        .try_init();
    let (db, store) = store().await;
    let mut nats = NatsServer::start();
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connect(nats.url())
        .await
        .unwrap();
    let bus = Bus::new(client, cc_bus::Subjects::new("cc"));
    let relay = spawn_relay(&bus, &db).await;
    append(&store, "a", 20).await;
    wait_relayed(&bus, 20).await;

    nats.stop();
    append(&store, "a", 15).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    nats.restart();
    append(&store, "b", 5).await;

    let relayed = wait_relayed(&bus, 40).await;
    assert_eq!(relayed, store_order(&store, 40).await);
    relay.stop().await;
}

/// After a restart nats-server remembers message ids only within the dedup window: a relay
/// whose last message is older than that must still go on (a quiet night, then a restart).
#[tokio::test]
async fn a_nats_restart_after_a_quiet_spell_longer_than_the_dedup_window_loses_nothing() {
    let (db, store) = store().await;
    let mut nats = NatsServer::start();
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connect(nats.url())
        .await
        .unwrap();
    let bus = Bus::new(client, cc_bus::Subjects::new("cc"));
    let relay = spawn_relay_with(
        &bus,
        &db,
        RelayOptions {
            duplicate_window: Duration::from_secs(1),
            ..options()
        },
    )
    .await;
    append(&store, "a", 10).await;
    wait_relayed(&bus, 10).await;

    tokio::time::sleep(Duration::from_millis(1500)).await;
    nats.restart();
    append(&store, "a", 5).await;

    let relayed = wait_relayed(&bus, 15).await;
    assert_eq!(relayed, store_order(&store, 15).await);
    relay.stop().await;
}

/// Appends `n` transfer events of a call whose target is agent 1003 (copied to its subject),
/// each after a plain call event without a target.
async fn append_transfers(store: &EventStore, call: &str, n: usize) {
    let s = StreamName::new("acme", "call", call).unwrap();
    let mut events = Vec::new();
    for i in 0..n {
        events.push(NewEvent::new(
            "CallHeld",
            1,
            json!({ "call": call, "agent": "1002", "i": i }),
            Metadata::new("acme", "test"),
        ));
        events.push(NewEvent::new(
            "TransferStarted",
            1,
            json!({ "call": call, "agent": "1002", "target_agent": "1003", "queue": "500", "i": i }),
            Metadata::new("acme", "test"),
        ));
    }
    store
        .append(&s, ExpectedVersion::Any, &events)
        .await
        .unwrap();
}

/// Every message of the events stream as (Nats-Msg-Id, subject, Cc-Checkpoint).
async fn raw_messages(bus: &Bus) -> Vec<(String, String, String)> {
    let Ok(mut stream) = bus.jetstream.get_stream(bus.subjects.events_stream()).await else {
        return vec![];
    };
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        let m = stream.get_raw_message(seq).await.unwrap();
        let h = |k: &str| m.headers.get(k).unwrap().as_str().to_string();
        out.push((h("Nats-Msg-Id"), m.subject.to_string(), h("Cc-Checkpoint")));
    }
    out
}

/// What the stream must hold for the store's events: each event once on its subject, and
/// right before each transfer event its copy on the target agent's subject.
async fn expected_with_copies(store: &EventStore, bus: &Bus) -> Vec<(String, String)> {
    let all = store
        .read_all(&ReadFilter::All, Checkpoint::START, 100_000)
        .await
        .unwrap();
    let mut out = Vec::new();
    for e in &all {
        let field = |k: &str| e.data.get(k).and_then(|v| v.as_str());
        if let Some(t) = field("target_agent") {
            out.push((
                format!("{}:target_agent", e.event_id),
                bus.subjects.target_event(
                    e.tenant(),
                    e.stream.category(),
                    e.stream.id(),
                    &e.event_type,
                    t,
                    field("queue"),
                ),
            ));
        }
        out.push((
            e.event_id.to_string(),
            bus.subjects.event(
                e.tenant(),
                e.stream.category(),
                e.stream.id(),
                &e.event_type,
                field("agent"),
                field("queue"),
            ),
        ));
    }
    out
}

#[tokio::test]
async fn a_transfer_event_is_copied_once_to_its_target_agents_subject_even_when_the_relay_is_killed(
) {
    let (db, store) = store().await;
    let nats = NatsServer::start();
    let bus = bus(&nats).await;
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..20 {
                    append_transfers(&store, &format!("c{w}"), 1 + (i % 2)).await;
                    append(&store, &format!("a{w}"), 1).await;
                    let pause = rand::thread_rng().gen_range(0..10);
                    tokio::time::sleep(Duration::from_millis(pause * 3)).await;
                }
            })
        })
        .collect();
    for _ in 0..12 {
        let relay = spawn_relay(&bus, &db).await;
        let pause = rand::thread_rng().gen_range(5..60);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        relay.kill().await;
    }
    for w in writers {
        w.await.unwrap();
    }
    // 4 writers × (10 × 1 + 10 × 2 transfers, each 2 events and 1 copy, + 20 plain events).
    let total = 4 * (30 * 3 + 20);
    let relay = spawn_relay(&bus, &db).await;
    let msgs = eventually("everything relayed", Duration::from_secs(30), || async {
        let m = raw_messages(&bus).await;
        assert!(m.len() <= total, "a duplicate: {} > {total}", m.len());
        (m.len() == total).then_some(m)
    })
    .await;
    let got: Vec<(String, String)> = msgs
        .iter()
        .map(|(id, s, _)| (id.clone(), s.clone()))
        .collect();
    assert_eq!(got, expected_with_copies(&store, &bus).await);
    assert!(
        got.iter()
            .any(|(_, s)| s.contains(".target_events.acme.call.")
                && s.ends_with(".TransferStarted.1003.500")),
        "{got:?}"
    );
    relay.stop().await;
}

#[tokio::test]
async fn a_relay_stopped_between_a_copy_and_its_event_publishes_the_event_and_not_the_copy_again() {
    let (db, store) = store().await;
    let nats = NatsServer::start();
    let bus = bus(&nats).await;
    append(&store, "a", 1).await;
    let relay = spawn_relay(&bus, &db).await;
    wait_relayed(&bus, 1).await;
    relay.stop().await;
    // A transfer event is stored, and its copy published as a relay would before dying.
    append_transfers(&store, "c", 1).await;
    // The store's safe read shows an event once no older transaction runs (in any database of
    // the server: other tests' transactions may hold the newest back for a moment).
    let all = eventually(
        "the three events readable",
        Duration::from_secs(10),
        || async {
            let all = store
                .read_all(&ReadFilter::All, Checkpoint::START, 100)
                .await
                .unwrap();
            (all.len() >= 3).then_some(all)
        },
    )
    .await;
    let (first, held, started) = (&all[0], &all[1], &all[2]);
    cc_bus::relay::ensure_events_stream(&bus, Duration::from_secs(120))
        .await
        .unwrap();
    for (e, copy, checkpoint) in [
        (held, false, held.checkpoint()),
        (started, true, held.checkpoint()),
    ] {
        let mut h = cc_bus::relay::event_headers(e, if copy { 2 } else { 1 });
        let subject = if copy {
            h.insert(
                "Nats-Msg-Id",
                format!("{}:target_agent", e.event_id).as_str(),
            );
            h.insert(cc_bus::relay::COPY_HEADER, "target_agent");
            h.insert("Cc-Checkpoint", checkpoint.to_string().as_str());
            bus.subjects
                .target_event("acme", "call", "c", "TransferStarted", "1003", Some("500"))
        } else {
            bus.subjects
                .event("acme", "call", "c", "CallHeld", Some("1002"), None)
        };
        bus.jetstream
            .publish_with_headers(subject, h, serde_json::to_vec(&e.data).unwrap().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let _ = first;
    let relay = spawn_relay(&bus, &db).await;
    let msgs = eventually(
        "the transfer event relayed",
        Duration::from_secs(20),
        || async {
            let m = raw_messages(&bus).await;
            (m.len() >= 4).then_some(m)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let msgs = if raw_messages(&bus).await.len() > msgs.len() {
        raw_messages(&bus).await
    } else {
        msgs
    };
    let got: Vec<(String, String)> = msgs
        .iter()
        .map(|(id, s, _)| (id.clone(), s.clone()))
        .collect();
    assert_eq!(
        got,
        expected_with_copies(&store, &bus).await,
        "the copy once, then its event"
    );
    relay.stop().await;
}

#[tokio::test]
async fn a_stream_created_before_the_target_subjects_gets_them_and_the_copies_flow() {
    let (db, store) = store().await;
    let nats = NatsServer::start();
    let bus = bus(&nats).await;
    // The events stream as an older build created it: its own subjects only.
    let mut old = cc_bus::relay::events_stream_config(&bus, Duration::from_secs(120));
    old.subjects = vec![bus.subjects.all_events()];
    bus.jetstream.create_stream(old).await.unwrap();
    append_transfers(&store, "c", 1).await;
    let relay = spawn_relay(&bus, &db).await;
    let msgs = eventually(
        "the copy and the events",
        Duration::from_secs(20),
        || async {
            let m = raw_messages(&bus).await;
            (m.len() == 3).then_some(m)
        },
    )
    .await;
    let got: Vec<(String, String)> = msgs.into_iter().map(|(id, s, _)| (id, s)).collect();
    assert_eq!(got, expected_with_copies(&store, &bus).await);
    let mut stream = bus
        .jetstream
        .get_stream(bus.subjects.events_stream())
        .await
        .unwrap();
    let subjects = stream.info().await.unwrap().config.subjects.clone();
    assert_eq!(
        subjects,
        [bus.subjects.all_events(), bus.subjects.all_target_events()]
    );
    relay.stop().await;
}

#[tokio::test]
async fn relays_events_no_reader_can_decode_as_stored_and_goes_on() {
    let (db, store) = store().await;
    let nats = NatsServer::start();
    let bus = bus(&nats).await;
    let relay = spawn_relay(&bus, &db).await;
    let s = StreamName::new("acme", "agent", "1001").unwrap();
    let meta = || Metadata::new("acme", "test");
    // A known type whose data fits nothing, a type no build knows, and a type that cannot be a
    // subject token (only a row written around the store's API could have one), then a good
    // event: the relay never decodes, so none of them stops it.
    let poison = [
        NewEvent::new("AgentPaused", 1, json!({"nonsense": true}), meta()),
        NewEvent::new("AgentTeleported", 1, json!({"agent": "1001"}), meta()),
        NewEvent::new("Agent.Tele ported\n", 1, json!({}), meta()),
    ];
    store
        .append(&s, ExpectedVersion::Any, &poison)
        .await
        .unwrap();
    append(&store, "1001", 1).await;

    let relayed = wait_relayed(&bus, 4).await;
    assert_eq!(
        relayed,
        store_order(&store, 4).await,
        "all of them, in order"
    );
    let msgs = stream_messages(&bus).await;
    let subjects: Vec<&str> = msgs.iter().map(|m| m.1.as_str()).collect();
    assert_eq!(
        subjects,
        [
            "cc.events.acme.agent.1001.AgentPaused._._",
            "cc.events.acme.agent.1001.AgentTeleported.1001._",
            "cc.events.acme.agent.1001._._._",
            "cc.events.acme.agent.1001.AgentPaused._._",
        ]
    );
    assert_eq!(
        msgs[2].2.get("Cc-Event-Type").unwrap().as_str(),
        "Agent.Tele ported\\n",
        "the type as stored, escaped"
    );
    relay.stop().await;
}
