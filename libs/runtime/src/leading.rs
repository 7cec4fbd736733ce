//! Loops shared by the components that run in one replica at a time (behind a lease).

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Retries `f` every second until it succeeds or `cancel`, logging each failure with `what`.
pub async fn retry_until_ok<T, F, Fut>(
    cancel: &CancellationToken,
    what: &str,
    mut f: F,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    while !cancel.is_cancelled() {
        match f().await {
            Ok(v) => return Some(v),
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "{what}; retrying"),
        }
        tokio::select! { _ = cancel.cancelled() => {}, _ = tokio::time::sleep(Duration::from_secs(1)) => {} }
    }
    None
}

/// Runs `lead` again and again until `cancel`: each run takes the lease (or returns at once when
/// another replica holds it) and works while it holds it; an error is logged with `what` and the
/// next run starts over from the store a second later.
pub async fn keep_leading<F, Fut>(cancel: &CancellationToken, what: &str, mut lead: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    while !cancel.is_cancelled() {
        if let Err(e) = lead().await {
            tracing::warn!(error = %format!("{e:#}"), "{what} interrupted; starting over from the store");
        }
        tokio::select! { _ = cancel.cancelled() => {}, _ = tokio::time::sleep(Duration::from_secs(1)) => {} }
    }
}

/// The holder of `lease`'s durable consumer `name` of the PBX's channel facts of `partition`'s
/// tenants, from the first
/// fact not acknowledged ([`cc_bus::consumer::pbx_channels_from_ack_floor`]), its ack floor
/// kept with the lease in PostgreSQL so that a consumer lost half-way is created again from
/// where it was.
pub async fn pbx_channels_for(
    bus: &cc_bus::Bus,
    lease: &mut cc_eventstore::Lease,
    name: &str,
    partition: cc_core::Partition,
) -> anyhow::Result<
    async_nats::jetstream::consumer::Consumer<async_nats::jetstream::consumer::pull::Config>,
> {
    let remembered = lease.remembered_floor(name).await?;
    let remember = |floor| async move {
        lease.remember_floor(name, floor).await?;
        Ok(())
    };
    cc_bus::consumer::pbx_channels_from_ack_floor(bus, name, partition, remembered, remember).await
}
