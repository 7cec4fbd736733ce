//! PBX facts queued while JetStream is away are reported once it is back, once each, in order.

use std::time::Duration;

use cc_bus::facts::{Fact, FactQueue};
use cc_testkit::{eventually, NatsServer};
use futures::StreamExt;

fn fact(bus: &cc_bus::Bus, n: usize) -> Fact {
    Fact {
        subject: bus
            .subjects
            .pbx_event("t1", "channel", &format!("ch{}", n % 7), "ChannelCreated"),
        headers: async_nats::HeaderMap::new(),
        body: format!("{n}").into(),
        span: tracing::Span::none(),
    }
}

/// Publishes fact `n` straight to JetStream (as a PBX without the queue would).
async fn publish_now(bus: &cc_bus::Bus, n: usize) {
    let f = fact(bus, n);
    bus.jetstream
        .publish(f.subject, f.body)
        .await
        .unwrap()
        .await
        .unwrap();
}

#[tokio::test]
async fn facts_queued_while_nats_is_down_arrive_once_each_and_in_order() {
    let mut nats = NatsServer::start();
    let client = async_nats::ConnectOptions::new()
        .max_reconnects(None)
        .connect(nats.url())
        .await
        .unwrap();
    let bus = cc_bus::Bus::new(client, cc_bus::Subjects::new("cc"));
    bus.ensure_pbx_stream().await.unwrap();
    let queue = FactQueue::start(bus.jetstream.clone(), 1000);
    for n in 0..30 {
        queue.send(fact(&bus, n)).unwrap();
    }
    assert!(queue.drained(Duration::from_secs(10)).await);
    nats.stop();
    for n in 30..100 {
        queue.send(fact(&bus, n)).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        queue.waiting() > 0,
        "nothing can be taken while NATS is down"
    );
    nats.restart();
    eventually(
        "every queued fact reported",
        Duration::from_secs(30),
        || async { (queue.waiting() == 0).then_some(()) },
    )
    .await;
    assert!(queue.resent() > 0, "facts were sent again");

    let stream = bus
        .jetstream
        .get_stream(bus.subjects.pbx_stream())
        .await
        .unwrap();
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut got = vec![];
    while got.len() < 100 {
        let m = tokio::time::timeout(Duration::from_secs(5), messages.next())
            .await
            .expect("the stream holds every fact")
            .unwrap()
            .unwrap();
        got.push(
            std::str::from_utf8(&m.payload)
                .unwrap()
                .parse::<usize>()
                .unwrap(),
        );
    }
    assert_eq!(
        got,
        (0..100).collect::<Vec<_>>(),
        "once each, in the order queued"
    );
    let info = stream.get_info().await.unwrap();
    assert_eq!(info.state.messages, 100, "no fact stored twice");
}

#[tokio::test]
async fn a_full_queue_refuses_the_fact_and_says_so() {
    let nats = NatsServer::start();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let bus = cc_bus::Bus::new(client, cc_bus::Subjects::new("cc"));
    // No stream: nothing is taken, so the queue fills up.
    let queue = FactQueue::start(bus.jetstream.clone(), 2);
    let mut refused = None;
    for n in 0..10 {
        if let Err(e) = queue.send(fact(&bus, n)) {
            refused = Some(e.to_string());
            break;
        }
    }
    let refused = refused.expect("a bounded queue refuses at its bound");
    assert!(refused.contains("2 PBX facts are waiting"), "{refused}");
}

#[tokio::test]
async fn a_new_leader_gets_every_unacknowledged_fact_again_in_order() {
    let nats = NatsServer::start();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let bus = cc_bus::Bus::new(client, cc_bus::Subjects::new("cc"));
    // Created before any fact (as a standby does): it sees the facts from then on.
    let consumer = cc_bus::consumer::pbx_channels(&bus, "router", cc_core::Partition::WHOLE)
        .await
        .unwrap();
    for n in 0..6 {
        publish_now(&bus, n).await;
    }
    let mut messages = consumer.messages().await.unwrap();
    let mut got = vec![];
    for _ in 0..6 {
        let m = tokio::time::timeout(Duration::from_secs(5), messages.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        got.push(m);
    }
    // Facts 0, 1 and 3 seen through; 2, 4 and 5 received but never acknowledged (the leader died).
    for i in [0, 1, 3] {
        got[i].double_ack().await.unwrap();
    }
    drop(messages);
    let body = |m: &async_nats::jetstream::Message| {
        std::str::from_utf8(&m.payload)
            .unwrap()
            .parse::<usize>()
            .unwrap()
    };
    let kept = std::sync::Arc::new(std::sync::Mutex::new(None));
    let keep = |floor| {
        let kept = kept.clone();
        async move {
            *kept.lock().unwrap() = Some(floor);
            Ok(())
        }
    };
    let consumer = cc_bus::consumer::pbx_channels_from_ack_floor(
        &bus,
        "router",
        cc_core::Partition::WHOLE,
        None,
        keep,
    )
    .await
    .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut again = vec![];
    for _ in 0..4 {
        let m = tokio::time::timeout(Duration::from_secs(5), messages.next())
            .await
            .expect("redelivered at once, not after the ack wait")
            .unwrap()
            .unwrap();
        again.push(body(&m));
        m.ack().await.unwrap();
    }
    assert_eq!(
        again,
        vec![2, 3, 4, 5],
        "from the first unacknowledged fact on, in order"
    );

    assert_eq!(
        *kept.lock().unwrap(),
        Some(2),
        "the floor was kept before the delete"
    );

    // A holder that deleted the consumer and failed before creating it again (a NATS node
    // lost in between): the next one creates it from the kept floor, and the facts published
    // meanwhile are not skipped.
    let stream = bus
        .jetstream
        .get_stream(bus.subjects.pbx_stream())
        .await
        .unwrap();
    stream.delete_consumer("router").await.unwrap();
    publish_now(&bus, 6).await;
    let remembered = *kept.lock().unwrap();
    let consumer = cc_bus::consumer::pbx_channels_from_ack_floor(
        &bus,
        "router",
        cc_core::Partition::WHOLE,
        remembered,
        keep,
    )
    .await
    .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), messages.next())
        .await
        .expect("delivered from the kept floor")
        .unwrap()
        .unwrap();
    assert_eq!(
        body(&m),
        2,
        "from the kept floor on, not from the newest fact"
    );
    drop(messages);

    // A consumer that does not exist yet (and was never kept) starts with new facts.
    let fresh = cc_bus::consumer::pbx_channels_from_ack_floor(
        &bus,
        "another",
        cc_core::Partition::WHOLE,
        None,
        keep,
    )
    .await
    .unwrap();
    publish_now(&bus, 7).await;
    let mut messages = fresh.messages().await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), messages.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(body(&m), 7);
}

/// With partitions the PBX stream files each channel fact under its tenant's partition (NATS's
/// partition transform, the same hash as `cc_core::partition::of`), so each partition's durable
/// consumer gets its own tenants' facts and no other's, in order; device facts and the
/// published subjects are unchanged, and a bus not told the count leaves the transform alone.
#[tokio::test]
async fn each_partitions_consumer_gets_its_own_tenants_channel_facts_only() {
    let nats = NatsServer::start();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let count = 8;
    let bus = cc_bus::Bus::new(client.clone(), cc_bus::Subjects::new("cc")).with_partitions(count);
    let mut consumers = vec![];
    for p in cc_core::Partition::all(count) {
        let c = cc_bus::consumer::pbx_channels(&bus, &format!("router-p{}", p.index), p)
            .await
            .unwrap();
        consumers.push(c);
    }
    // Core subscribers see the subjects as published.
    let mut core = client.subscribe("cc.pbx.evt.demo.>").await.unwrap();
    let tenants: Vec<String> = (0..40)
        .map(|i| format!("tenant-{i}"))
        .chain(["demo".to_string(), "acme-east".into()])
        .collect();
    for (n, t) in tenants.iter().enumerate() {
        for kind in ["channel", "device"] {
            let subject = bus.subjects.pbx_event(t, kind, &format!("c{n}"), "Created");
            bus.jetstream
                .publish(subject, format!("{t} {n}").into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    }
    let seen = tokio::time::timeout(Duration::from_secs(5), core.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen.subject.as_str(), "cc.pbx.evt.demo.channel.c40.Created");
    for (p, consumer) in cc_core::Partition::all(count).zip(&consumers) {
        let expected: Vec<&String> = tenants.iter().filter(|t| p.contains(t)).collect();
        let mut messages = consumer.messages().await.unwrap();
        let mut got = vec![];
        for _ in 0..expected.len() {
            let m = tokio::time::timeout(Duration::from_secs(5), messages.next())
                .await
                .expect("a fact of the partition")
                .unwrap()
                .unwrap();
            let tenant = bus
                .subjects
                .pbx_event_tenant(&m.subject)
                .unwrap()
                .to_string();
            assert!(
                m.subject.contains(&format!(".channel.{}.", p.index)),
                "{}",
                m.subject
            );
            got.push(tenant);
            m.ack().await.unwrap();
        }
        assert_eq!(got.iter().collect::<Vec<_>>(), expected, "partition {p}");
        let more = tokio::time::timeout(Duration::from_millis(300), messages.next()).await;
        assert!(more.is_err(), "partition {p}: another partition's fact");
    }
    // A bus of one partition (a process not told the count) keeps the transform.
    let whole = cc_bus::Bus::new(client, cc_bus::Subjects::new("cc"));
    whole.ensure_pbx_stream().await.unwrap();
    let mut stream = whole.jetstream.get_stream("CC_PBX").await.unwrap();
    let config = stream.info().await.unwrap().config.clone();
    assert!(config.subject_transform.is_some(), "{config:?}");
}
