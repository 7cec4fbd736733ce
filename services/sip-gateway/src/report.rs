//! The PBX facts the gateway reports, on the same subjects as any PBX of the contract.

use cc_contracts::pbx::{BridgeEvent, ChannelEvent, DeviceEvent};
use cc_runtime::Context;
use tracing::Instrument;

/// One fact about a device, a channel or a bridge.
pub enum Fact {
    Device(DeviceEvent),
    Channel(ChannelEvent),
    Bridge(BridgeEvent),
}

impl Fact {
    fn type_name(&self) -> &'static str {
        match self {
            Fact::Device(e) => e.type_name(),
            Fact::Channel(e) => e.type_name(),
            Fact::Bridge(e) => e.type_name(),
        }
    }
}

/// Publishes facts to the PBX stream in the order given. The JetStream acks are awaited off
/// the caller's path; a lost one is logged (the consumers reconcile with ListChannels).
#[derive(Clone)]
pub struct Reporter {
    ctx: Context,
}

impl Reporter {
    pub fn new(ctx: Context) -> Self {
        Self { ctx }
    }

    pub async fn publish(&self, tenant: &str, facts: Vec<Fact>) {
        let mut acks = Vec::with_capacity(facts.len());
        for f in facts {
            let s = &self.ctx.bus.subjects;
            let (subject, body) = match &f {
                Fact::Device(e) => (
                    s.pbx_event(tenant, "device", e.device().as_str(), e.type_name()),
                    serde_json::to_vec(e),
                ),
                Fact::Channel(e) => (
                    s.pbx_event(tenant, "channel", e.channel(), e.type_name()),
                    serde_json::to_vec(e),
                ),
                Fact::Bridge(e) => (
                    s.pbx_event(tenant, "bridge", e.bridge(), e.type_name()),
                    serde_json::to_vec(e),
                ),
            };
            let span = tracing::info_span!(
                "pbx channel report",
                otel.name = format!("pbx report {}", f.type_name()),
                otel.kind = "producer",
            );
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", uuid::Uuid::now_v7().to_string().as_str());
            span.in_scope(|| cc_bus::inject_trace(&mut headers));
            match self
                .ctx
                .bus
                .jetstream
                .publish_with_headers(subject, headers, body.expect("facts serialize").into())
                .instrument(span)
                .await
            {
                Ok(ack) => acks.push(ack),
                Err(e) => tracing::error!(error = %e, "could not report a PBX fact"),
            }
        }
        tokio::spawn(async move {
            for ack in acks {
                if let Err(e) = ack.await {
                    tracing::warn!(error = %e, "JetStream did not take a PBX fact");
                }
            }
        });
    }
}
