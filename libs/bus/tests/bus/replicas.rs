//! How many copies the product's streams get: R1 on one server, R3 on a three-node cluster
//! (libs/testkit's `Nats`), the count of `CC_NATS_REPLICAS` when set, and a stream created R1
//! earlier raised to R3 on start, its messages and durable consumers kept.

use std::time::Duration;

use async_nats::jetstream::stream::Info;
use cc_bus::{Bus, Subjects};
use cc_testkit::{eventually, Nats, NatsSetup, NatsShape};

async fn bus_on(nats: &Nats) -> Bus {
    let client = async_nats::connect(nats.urls()).await.unwrap();
    Bus::new(client, Subjects::new("cc"))
}

async fn info(bus: &Bus, stream: &str) -> Info {
    let mut s = bus.jetstream.get_stream(stream).await.unwrap();
    s.info().await.unwrap().clone()
}

/// The servers holding a stream's copies, once every one is current.
async fn current_peers(bus: &Bus, stream: &str) -> usize {
    eventually(
        &format!("{stream}'s replicas current"),
        Duration::from_secs(20),
        || async {
            let cluster = info(bus, stream).await.cluster?;
            let mut names: Vec<&str> = cluster.replicas.iter().map(|r| r.name.as_str()).collect();
            names.extend(cluster.leader.as_deref());
            names.sort();
            names.dedup();
            cluster
                .replicas
                .iter()
                .all(|r| r.current || Some(&r.name) == cluster.leader.as_ref())
                .then_some(names.len())
        },
    )
    .await
}

#[tokio::test]
async fn one_server_gets_r1_streams() {
    let nats = Nats::start(NatsShape::Single, NatsSetup::default());
    let bus = bus_on(&nats).await;
    assert_eq!(bus.stream_replicas(), 1, "auto on a server of no cluster");
    bus.ensure_pbx_stream().await.unwrap();
    cc_bus::relay::ensure_events_stream(&bus, Duration::from_secs(120))
        .await
        .unwrap();
    for s in [bus.subjects.pbx_stream(), bus.subjects.events_stream()] {
        assert_eq!(info(&bus, &s).await.config.num_replicas, 1, "{s}");
    }
    // Asked for three on one server: a clear refusal naming the stream and the count.
    let e = bus
        .clone()
        .with_stream_replicas(Some(3))
        .ensure_pbx_stream()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&bus.subjects.pbx_stream()) && e.contains("R3"),
        "{e}"
    );
}

#[tokio::test]
async fn a_cluster_gets_r3_streams_and_raises_an_r1_stream_keeping_its_messages_and_consumers() {
    let nats = Nats::start(NatsShape::Cluster3, NatsSetup::default());
    let bus = bus_on(&nats).await;
    assert_eq!(bus.stream_replicas(), 3, "auto on a cluster");
    bus.ensure_pbx_stream().await.unwrap();
    let pbx = bus.subjects.pbx_stream();
    assert_eq!(info(&bus, &pbx).await.config.num_replicas, 3);
    assert_eq!(current_peers(&bus, &pbx).await, 3);

    // The events stream as an installation created it with CC_NATS_REPLICAS=1 (or on one
    // server that later became a cluster): R1, with messages and a durable consumer.
    let events = bus.subjects.events_stream();
    cc_bus::relay::ensure_events_stream(
        &bus.clone().with_stream_replicas(Some(1)),
        Duration::from_secs(120),
    )
    .await
    .unwrap();
    assert_eq!(info(&bus, &events).await.config.num_replicas, 1);
    for i in 0..10 {
        bus.jetstream
            .publish(format!("cc.events.acme.agent.{i}"), "{}".into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let consumer = cc_bus::consumer::durable(
        &bus,
        &events,
        "reader",
        vec!["cc.events.>".into()],
        async_nats::jetstream::consumer::DeliverPolicy::All,
    )
    .await
    .unwrap();
    drop(consumer);

    // The next start (auto): R3, every message still there, the consumer replicated too.
    cc_bus::relay::ensure_events_stream(&bus, Duration::from_secs(120))
        .await
        .unwrap();
    let after = info(&bus, &events).await;
    assert_eq!(after.config.num_replicas, 3);
    assert_eq!(after.state.messages, 10);
    assert_eq!(current_peers(&bus, &events).await, 3);
    let stream = bus.jetstream.get_stream(&events).await.unwrap();
    let peers = eventually(
        "the durable consumer on three servers",
        Duration::from_secs(20),
        || async {
            let mut c = stream
                .get_consumer::<async_nats::jetstream::consumer::pull::Config>("reader")
                .await
                .ok()?;
            let cluster = c.info().await.ok()?.cluster.clone()?;
            let n = cluster.replicas.len() + usize::from(cluster.leader.is_some());
            (n == 3).then_some(n)
        },
    )
    .await;
    assert_eq!(peers, 3);

    // Asked for one: lowered again (the count of CC_NATS_REPLICAS is what the stream gets).
    cc_bus::relay::ensure_events_stream(
        &bus.clone().with_stream_replicas(Some(1)),
        Duration::from_secs(120),
    )
    .await
    .unwrap();
    assert_eq!(info(&bus, &events).await.config.num_replicas, 1);
}
