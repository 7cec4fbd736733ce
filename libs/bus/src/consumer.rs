//! JetStream durable consumers with idempotent handling.
//!
//! Delivery is at least once. A handler makes a redelivered event change nothing by recording
//! the event id in `bus_processed` inside the same transaction as its own writes:
//! [`mark_processed`] returns `false` for an id seen before, and the handler skips it.

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::{AckKind, Message};
use futures::StreamExt;
use sqlx::{Postgres, Transaction};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::Bus;

/// Records that `consumer` handled `event_id`. `false` means it was handled before: skip it.
pub async fn mark_processed(
    tx: &mut Transaction<'_, Postgres>,
    consumer: &str,
    event_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let r = sqlx::query(
        "insert into bus_processed (consumer, event_id) values ($1, $2) on conflict do nothing",
    )
    .bind(consumer)
    .bind(event_id)
    .execute(&mut **tx)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// The event id of a relayed message (its `Nats-Msg-Id`).
pub fn event_id(msg: &Message) -> Option<Uuid> {
    msg.headers
        .as_ref()?
        .get("Nats-Msg-Id")?
        .as_str()
        .parse()
        .ok()
}

/// Creates (or reuses) a durable pull consumer on the events stream for `filter_subjects`.
pub async fn durable(
    bus: &Bus,
    stream: &str,
    name: &str,
    filter_subjects: Vec<String>,
    deliver: DeliverPolicy,
) -> anyhow::Result<async_nats::jetstream::consumer::Consumer<pull::Config>> {
    let stream = bus.jetstream.get_stream(stream).await?;
    let consumer = stream
        .get_or_create_consumer(
            name,
            pull::Config {
                durable_name: Some(name.to_string()),
                filter_subjects,
                deliver_policy: deliver,
                ack_policy: AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                max_deliver: -1,
                ..Default::default()
            },
        )
        .await?;
    Ok(consumer)
}

/// Feeds every message of `consumer` to `handle` until `cancel`, one at a time in order.
/// `Ok` acks; `Err` is logged and the message is redelivered after a short delay.
pub async fn run<F, Fut>(
    consumer: async_nats::jetstream::consumer::Consumer<pull::Config>,
    cancel: CancellationToken,
    mut handle: F,
) -> anyhow::Result<()>
where
    F: FnMut(Message) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut messages = consumer.messages().await?;
    loop {
        let msg = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            m = messages.next() => match m {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    // A pull that found no JetStream (a cluster still electing its leaders, a
                    // node lost) is not pulled again until an idle heartbeat is missed, 30 s
                    // later: the consumer's messages are asked for afresh instead.
                    tracing::warn!(error = %e, "consumer stream error; pulling again");
                    drop(messages);
                    tokio::select! {
                        _ = cancel.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                    messages = loop {
                        match consumer.messages().await {
                            Ok(m) => break m,
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot pull from the consumer; retrying");
                                tokio::select! {
                                    _ = cancel.cancelled() => return Ok(()),
                                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                                }
                            }
                        }
                    };
                    continue;
                }
                None => return Ok(()),
            },
        };
        let subject = msg.subject.to_string();
        match handle(msg.clone()).await {
            Ok(()) => {
                if let Err(e) = msg.ack().await {
                    tracing::warn!(error = %e, %subject, "ack failed; the message will be redelivered");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, %subject, "handler failed; the message will be redelivered");
                let _ = msg
                    .ack_with(AckKind::Nak(Some(Duration::from_millis(500))))
                    .await;
            }
        }
    }
}

/// A durable consumer of the PBX's channel events of `partition`'s tenants (new ones from its
/// creation on; [`Bus::pbx_channel_filter`]). Services create it when they start, before they
/// may lead, so no call is missed while they catch up.
pub async fn pbx_channels(
    bus: &Bus,
    name: &str,
    partition: cc_core::Partition,
) -> anyhow::Result<async_nats::jetstream::consumer::Consumer<pull::Config>> {
    bus.ensure_pbx_stream().await?;
    let filter = bus.pbx_channel_filter(partition);
    durable(
        bus,
        &bus.subjects.pbx_stream(),
        name,
        vec![filter],
        DeliverPolicy::New,
    )
    .await
}

/// The PBX channel consumer `name`, positioned so that every fact not yet acknowledged is
/// delivered again, in stream order, before any later one: the consumer is created afresh from
/// the first unacknowledged fact (its ack floor + 1). A new leader takes over this way, so that
/// a fact its predecessor received but did not see through (its decision never committed) is
/// decided again in its place, not redelivered out of order after the ack wait. Facts above the
/// floor that were acknowledged come again too: handlers must take a fact they already
/// decided on as a redelivery.
///
/// The floor is handed to `remember` (kept outside NATS: the lease holder keeps it in PostgreSQL)
/// before the consumer is deleted; `remembered` is what was kept last time. A consumer found
/// missing (deleted by a holder that failed before creating it again, e.g. on a NATS node's
/// loss) is created from `remembered`: only a consumer never remembered starts with new facts.
pub async fn pbx_channels_from_ack_floor<F, Fut>(
    bus: &Bus,
    name: &str,
    partition: cc_core::Partition,
    remembered: Option<u64>,
    remember: F,
) -> anyhow::Result<async_nats::jetstream::consumer::Consumer<pull::Config>>
where
    F: FnOnce(u64) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    bus.ensure_pbx_stream().await?;
    let stream = bus.jetstream.get_stream(bus.subjects.pbx_stream()).await?;
    let floor = match stream.consumer_info(name).await {
        Ok(info) => {
            let floor = info.ack_floor.stream_sequence;
            remember(floor).await?;
            stream.delete_consumer(name).await?;
            Some(floor)
        }
        Err(e) if e.kind() == async_nats::jetstream::context::ConsumerInfoErrorKind::NotFound => {
            if remembered.is_some() {
                tracing::info!(consumer = name, floor = ?remembered, "the PBX consumer is missing; created again from its remembered floor");
            }
            remembered
        }
        Err(e) => return Err(e.into()),
    };
    let deliver = match floor {
        Some(floor) => DeliverPolicy::ByStartSequence {
            start_sequence: floor + 1,
        },
        None => DeliverPolicy::New,
    };
    let filter = bus.pbx_channel_filter(partition);
    durable(bus, &bus.subjects.pbx_stream(), name, vec![filter], deliver).await
}
