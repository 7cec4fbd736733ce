//! The PBX facts the gateway reports, on the same subjects as any PBX of the contract.

use cc_bus::facts::FactQueue;
use cc_contracts::pbx::{BridgeEvent, ChannelEvent, DeviceEvent};
use cc_runtime::Context;

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

/// Reports facts to the PBX stream in the order given, each until JetStream takes it
/// ([`FactQueue`]): a fact reported while NATS is away is sent once it is back, never dropped
/// (unless the queue's bound is reached, which is logged).
#[derive(Clone)]
pub struct Reporter {
    ctx: Context,
    facts: FactQueue,
}

/// How many facts may wait for JetStream (about ten minutes of a busy gateway's reports).
const FACTS_WAITING: usize = 100_000;

impl Reporter {
    pub fn new(ctx: Context) -> Self {
        Self {
            facts: FactQueue::start(ctx.bus.jetstream.clone(), FACTS_WAITING),
            ctx,
        }
    }

    /// Waits (at most `within`) for the facts still on their way; false if some are left.
    pub async fn drained(&self, within: std::time::Duration) -> bool {
        self.facts.drained(within).await
    }

    pub async fn publish(&self, tenant: &str, facts: Vec<Fact>) {
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
            span.in_scope(|| cc_bus::inject_trace(&mut headers));
            let fact = cc_bus::facts::Fact {
                subject,
                headers,
                body: body.expect("facts serialize").into(),
                span,
            };
            if let Err(e) = self.facts.send(fact) {
                tracing::error!(error = %e, "could not report a PBX fact");
            }
        }
    }
}
