//! The SIP stack under the gateway (rsipstack: parsing, transports, transactions with the
//! RFC 3261 timers, dialogs), set up once, and the small interface the rest of the gateway
//! uses for one call leg's signalling ([`Signalling`]), so the call logic does not depend on
//! the stack's API, which moves between versions.

use std::net::SocketAddr;
use std::sync::Arc;

use rsipstack::dialog::dialog::{DialogStateReceiver, DialogStateSender};
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::ToTypedHeader;
use rsipstack::sip::{Header, HeadersExt, Request, StatusCode};
use rsipstack::transaction::{Transaction, TransactionReceiver};
use rsipstack::transport::{udp::UdpConnection, TcpListenerConnection, TransportLayer};
use rsipstack::EndpointBuilder;
use tokio_util::sync::CancellationToken;

/// The running stack: UDP and TCP on one address.
pub struct Stack {
    pub endpoint: rsipstack::transaction::Endpoint,
    pub dialogs: Arc<DialogLayer>,
    /// Where SIP listens.
    pub local: SocketAddr,
}

/// What the stack hands to the gateway: new transactions and dialog state changes.
pub struct Inbox {
    pub transactions: TransactionReceiver,
    pub dialog_states: DialogStateReceiver,
    pub dialog_sender: DialogStateSender,
}

impl Stack {
    pub async fn start(
        addr: SocketAddr,
        cancel: CancellationToken,
    ) -> anyhow::Result<(Arc<Self>, Inbox)> {
        let transport = TransportLayer::new(cancel.child_token());
        let udp = UdpConnection::create_connection(addr, None, Some(cancel.child_token()))
            .await
            .map_err(|e| {
                anyhow::anyhow!("cannot listen for SIP on udp {addr} (CC_SIP_ADDR): {e}")
            })?;
        let local = udp
            .get_addr()
            .get_socketaddr()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        transport.add_transport(udp.into());
        // TCP on the same port as UDP (a system-chosen UDP port is reused for TCP).
        let tcp = TcpListenerConnection::new(local, None)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen for SIP on tcp {local}: {e}"))?;
        transport.add_transport(tcp.into());
        let endpoint = EndpointBuilder::new()
            .with_cancel_token(cancel.child_token())
            .with_transport_layer(transport)
            .with_user_agent("cc-sip-gateway")
            .build();
        let transactions = endpoint
            .incoming_transactions()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let dialogs = Arc::new(DialogLayer::new(endpoint.inner.clone()));
        let (dialog_sender, dialog_states) = dialogs.new_dialog_state_channel();
        let stack = Arc::new(Self {
            endpoint,
            dialogs,
            local,
        });
        let serving = stack.clone();
        tokio::spawn(async move { serving.endpoint.serve().await });
        Ok((
            stack,
            Inbox {
                transactions,
                dialog_states,
                dialog_sender,
            },
        ))
    }
}

/// Replies to a request outside any dialog, with extra headers.
pub async fn reply(tx: &mut Transaction, code: StatusCode, headers: Vec<Header>) {
    if let Err(e) = tx.reply_with(code, headers, None).await {
        tracing::debug!(error = %e, "could not send a SIP reply");
    }
}

/// A header's raw value, by name, case-insensitively.
pub fn header(req: &Request, name: &str) -> Option<String> {
    req.header_value(name)
}

/// Where a request really came from: the top Via's `received` / `rport` (set by the stack on
/// receipt), else its sent-by.
pub fn source(req: &Request) -> Option<SocketAddr> {
    let via = req.top_via_header().ok()?;
    let via = via.typed().ok()?;
    let sent_by = via.sent_by();
    let ip = match via.received() {
        Some(Ok(ip)) => ip,
        _ => sent_by.host.to_string().parse().ok()?,
    };
    let port = match via.rport() {
        Some(Some(p)) => p,
        _ => sent_by.port.as_ref().map(|p| p.value()).unwrap_or(5060),
    };
    Some(SocketAddr::new(ip, port))
}

/// The transport a request came over (`udp`, `tcp`).
pub fn transport(req: &Request) -> &'static str {
    match req
        .top_via_header()
        .ok()
        .and_then(|v| v.typed().ok())
        .map(|v| v.transport)
    {
        Some(rsipstack::sip::Transport::Tcp) => "tcp",
        _ => "udp",
    }
}

/// One call leg's signalling, whichever side started it.
pub trait Signalling: Send + Sync {
    /// Answers an inbound leg with our SDP.
    fn accept(&self, sdp: Vec<u8>) -> anyhow::Result<()>;
    /// Refuses an inbound leg that is not answered yet.
    fn reject(&self, code: u16);
    /// Ends the leg: CANCEL while an outbound leg rings, BYE once answered.
    fn end(&self) -> futures_end::BoxFuture;
    /// Tells the phone how its REFER goes (RFC 3515's NOTIFY with a sipfrag), `done` ending the
    /// implicit subscription.
    fn notify_refer(&self, code: u16, done: bool) -> futures_end::BoxFuture;
}

mod futures_end {
    pub type BoxFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
}

impl Signalling for InviteDialog {
    fn accept(&self, sdp: Vec<u8>) -> anyhow::Result<()> {
        let ct = Header::ContentType("application/sdp".into());
        InviteDialog::accept(self, Some(vec![ct]), Some(sdp)).map_err(|e| anyhow::anyhow!("{e}"))
    }

    fn reject(&self, code: u16) {
        let _ = InviteDialog::reject(self, Some(StatusCode::from(code)), None);
    }

    fn end(&self) -> futures_end::BoxFuture {
        let d = self.clone();
        Box::pin(async move {
            let r = if d.role() == rsipstack::transaction::key::TransactionRole::Client
                && !d.state().is_confirmed()
            {
                d.cancel().await
            } else {
                d.bye().await
            };
            if let Err(e) = r {
                tracing::debug!(error = %e, "ending a SIP dialog");
            }
        })
    }

    fn notify_refer(&self, code: u16, done: bool) -> futures_end::BoxFuture {
        let d = self.clone();
        Box::pin(async move {
            let state = if done {
                "terminated;reason=noresource"
            } else {
                "active;expires=60"
            };
            if let Err(e) = d.notify_refer(StatusCode::from(code), state).await {
                tracing::debug!(error = %e, "a REFER's NOTIFY was not taken");
            }
        })
    }
}
