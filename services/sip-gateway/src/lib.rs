//! The SIP gateway: the product's real telephone edge. A registrar (digest authentication,
//! persisted bindings) and a B2BUA that anchors every call's media (an RTP relay with music on
//! hold), implementing the PBX contract ([`cc_contracts::pbx`]) with real SIP phones and trunks.
//! queue-router and call-control cannot tell it from the simulator: they speak only the
//! contract. Which tenants it serves is configuration (`CC_SIP_TENANTS`); the simulator serves
//! the others.
//!
//! - [`stack`]: the SIP stack (rsipstack) behind a small interface of ours.
//! - [`registrar`]: REGISTER, bindings, device presence.
//! - [`pbx`], [`reginfo`]: trunk mode, a tenant whose extensions live on an existing PBX
//!   (`CC_SIP_PBX`): presence subscribed from it, agent legs sent through it.
//! - [`calls`]: channels and bridges: callers, the legs to phones, hold, hangup.
//! - [`media`], [`moh`], [`sdp`]: RTP relay, music on hold, SDP offers and answers.

pub mod calls;
pub mod digest;
pub mod media;
pub mod moh;
pub mod pbx;
pub mod reginfo;
pub mod registrar;
pub mod report;
pub mod sdp;
pub mod stack;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cc_bus::{CommandContext, CommandHandlers, TenantScope};
use cc_contracts::domain::DeviceId;
use cc_contracts::pbx::*;
use cc_contracts::sip::{ListSipDevices, ProvisionSipDevice, RemoveSipDevice};
use cc_runtime::Context;
use rsipstack::sip::{Method, StatusCode};

pub const MIGRATIONS: &[cc_eventstore::Migration] = &[cc_eventstore::Migration {
    version: 1,
    name: "sip_gateway",
    sql: include_str!("../sql/0001_sip_gateway.sql"),
}];

/// The demo devices of every SIP tenant in demo mode, and their SIP passwords (`sip<ext>`).
pub const DEMO_DEVICES: &[&str] = &["1001", "1002", "1003", "1004", "1005", "1006"];

/// The demo SIP password of a device.
pub fn demo_password(device: &str) -> String {
    format!("sip{device}")
}

/// What every part of the gateway shares. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    pub ctx: Context,
    pub stack: Arc<stack::Stack>,
    pub dialog_sender: rsipstack::dialog::dialog::DialogStateSender,
    pub registry: Arc<registrar::Registry>,
    pub calls: calls::Calls,
    pub media: Arc<media::Media>,
    pub reporter: report::Reporter,
    pub nonces: digest::Nonces,
    pub queues: Arc<Queues>,
    /// The trunk-mode tenants' PBXs (`CC_SIP_PBX`).
    pub pbx: Arc<HashMap<String, pbx::Pbx>>,
    /// What those PBXs say about their extensions.
    pub presence: Arc<pbx::Presence>,
    trunks: Arc<HashMap<String, Vec<(IpAddr, u8)>>>,
    public_ip: IpAddr,
}

impl Gateway {
    /// The tenant whose SIP domain `host` is, if the gateway serves it.
    pub fn tenant_of_host(&self, host: &str) -> Option<String> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let suffix = format!(".{}", self.ctx.config.base_domain.to_ascii_lowercase());
        let tenant = host.strip_suffix(&suffix)?;
        self.ctx
            .config
            .sip
            .tenants
            .iter()
            .find(|t| t.as_str() == tenant)
            .cloned()
    }

    /// The tenant a request is for: its Request-URI's domain; when that is an address (a phone
    /// set up with the gateway's address as its registrar or proxy), the domain of its To
    /// (REGISTER) or From (the calling device's own domain).
    pub fn tenant_of_request(&self, req: &rsipstack::sip::Request) -> Option<String> {
        use rsipstack::sip::prelude::{HeadersExt, ToTypedHeader};
        let host = req.uri.host_with_port.host.to_string();
        if let Some(t) = self.tenant_of_host(&host) {
            return Some(t);
        }
        host.trim_matches(['[', ']']).parse::<IpAddr>().ok()?;
        let named = if req.method == Method::Register {
            req.to_header().ok()?.typed().ok()?.uri
        } else {
            req.from_header().ok()?.typed().ok()?.uri
        };
        self.tenant_of_host(&named.host_with_port.host.to_string())
    }

    /// A tenant's SIP domain (and digest realm).
    pub fn domain(&self, tenant: &str) -> String {
        format!("{tenant}.{}", self.ctx.config.base_domain)
    }

    /// Where phones reach the gateway, `ip:port`.
    pub fn public_sip_addr(&self) -> String {
        SocketAddr::new(self.public_ip, self.stack.local.port()).to_string()
    }

    /// Whether `ip` is one of the tenant's trunk sources (`CC_SIP_TRUNKS`, or its PBX).
    pub fn trunk_allows(&self, tenant: &str, ip: IpAddr) -> bool {
        self.pbx.get(tenant).is_some_and(|p| p.addr.ip() == ip)
            || self
                .trunks
                .get(tenant)
                .is_some_and(|nets| nets.iter().any(|(net, bits)| in_net(ip, *net, *bits)))
    }

    /// The tenant whose PBX is at `ip`, when exactly one is (a PBX that sends
    /// `INVITE sip:500@<gateway address>` rather than the tenant's SIP domain).
    pub fn tenant_of_pbx(&self, ip: IpAddr) -> Option<String> {
        let mut of = self.pbx.iter().filter(|(_, p)| p.addr.ip() == ip);
        match (of.next(), of.next()) {
            (Some((t, _)), None) => Some(t.clone()),
            _ => None,
        }
    }

    /// Digest for an INVITE from a device (Proxy-Authorization).
    pub fn authorize_invite(
        &self,
        tenant: &str,
        device: &str,
        req: &rsipstack::sip::Request,
    ) -> Result<(), StatusCode> {
        let Some(raw) = stack::header(req, "Proxy-Authorization") else {
            return Err(StatusCode::ProxyAuthenticationRequired);
        };
        let auth = rsipstack::sip::typed::Authorization::parse(&raw)
            .map_err(|_| StatusCode::BadRequest)?;
        let raw_uri = rsipstack::dialog::authenticate::extract_digest_uri_raw(&raw)
            .unwrap_or_else(|| auth.uri.to_string());
        let realm = self.domain(tenant);
        let ha1 = self
            .registry
            .ha1(tenant, device)
            .ok_or(StatusCode::Forbidden)?;
        if auth.username != device {
            return Err(StatusCode::Forbidden);
        }
        match self.nonces.verify(
            &auth,
            &raw_uri,
            "INVITE",
            &realm,
            &ha1,
            chrono::Utc::now().timestamp(),
        ) {
            digest::Verdict::Valid => Ok(()),
            digest::Verdict::Stale => Err(StatusCode::ProxyAuthenticationRequired),
            digest::Verdict::Invalid => Err(StatusCode::Forbidden),
        }
    }
}

fn in_net(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits.min(32))
            };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits.min(128) as u32)
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// `tenant=cidr,cidr;tenant2=cidr` (a bare address is a /32 or /128).
pub fn parse_trunks(spec: &str) -> Result<HashMap<String, Vec<(IpAddr, u8)>>, String> {
    let mut out: HashMap<String, Vec<(IpAddr, u8)>> = HashMap::new();
    for part in spec.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (tenant, nets) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not tenant=cidr,..."))?;
        for net in nets.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let (ip, bits) = match net.split_once('/') {
                Some((ip, bits)) => (ip, Some(bits)),
                None => (net, None),
            };
            let ip: IpAddr = ip
                .parse()
                .map_err(|_| format!("{net:?} is not an address or CIDR"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let bits: u8 = match bits {
                Some(b) => b
                    .parse()
                    .ok()
                    .filter(|b| *b <= max)
                    .ok_or_else(|| format!("{net:?} has a bad prefix length"))?,
                None => max,
            };
            out.entry(tenant.trim().to_string())
                .or_default()
                .push((ip, bits));
        }
    }
    Ok(out)
}

/// The tenants' queue numbers (asked of queue-router, kept for a few seconds), so an INVITE to
/// a number that is no queue gets 404 and nothing is recorded.
#[derive(Default)]
pub struct Queues {
    cache: Mutex<HashMap<String, (Instant, HashSet<String>)>>,
}

impl Queues {
    pub async fn is_queue(&self, gw: &Gateway, tenant: &str, number: &str) -> bool {
        if let Some((at, set)) = self.cache.lock().expect("queues").get(tenant) {
            if at.elapsed() < Duration::from_secs(5) {
                return set.contains(number);
            }
        }
        let c = CommandContext::new(tenant, "system:sip-gateway");
        match gw
            .ctx
            .bus
            .request(&c, &cc_contracts::queue::ListQueues {})
            .await
        {
            Ok(list) => {
                let set: HashSet<String> = list.into_iter().map(|q| q.queue.to_string()).collect();
                let found = set.contains(number);
                self.cache
                    .lock()
                    .expect("queues")
                    .insert(tenant.to_string(), (Instant::now(), set));
                found
            }
            Err(e) => {
                tracing::warn!(error = %e, %tenant, "could not list the queues; refusing the call");
                false
            }
        }
    }
}

/// Runs the gateway until `ctx.cancel`.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let sip = ctx.config.sip.clone();
    if sip.tenants.is_empty() {
        // Nothing to serve (every tenant is the simulator's): bind no port.
        tracing::info!("SIP gateway idle: no tenant is served by it (CC_SIP_TENANTS is empty)");
        ctx.cancel.cancelled().await;
        return Ok(());
    }
    ctx.bus.ensure_pbx_stream().await?;
    let addr: SocketAddr = sip
        .addr
        .parse()
        .map_err(|_| anyhow::anyhow!("CC_SIP_ADDR {:?} is not ip:port", sip.addr))?;
    let ports =
        media::Ports::parse(&sip.rtp_ports).map_err(|e| anyhow::anyhow!("CC_RTP_PORTS: {e}"))?;
    let trunks = parse_trunks(&sip.trunks).map_err(|e| anyhow::anyhow!("CC_SIP_TRUNKS: {e}"))?;
    let pbxs = pbx::resolve(&sip.pbx, &sip.tenants).await?;
    let public_ip: IpAddr = match &sip.public_ip {
        Some(ip) => ip.parse().map_err(|_| anyhow::anyhow!("CC_SIP_PUBLIC_IP {ip:?} is not an IP address"))?,
        None if addr.ip().is_unspecified() => anyhow::bail!("CC_SIP_ADDR listens on every address: set CC_SIP_PUBLIC_IP to the address phones reach"),
        None => addr.ip(),
    };
    let (stack, inbox) = stack::Stack::start(addr, ctx.cancel.clone()).await?;
    // RTP binds where SIP does; SDP names the public address.
    let media = media::Media::new(addr.ip(), public_ip, ports);
    let gw = Gateway {
        ctx: ctx.clone(),
        stack: stack.clone(),
        dialog_sender: inbox.dialog_sender.clone(),
        registry: Arc::default(),
        calls: calls::Calls::default(),
        media: Arc::new(media),
        reporter: report::Reporter::new(ctx.clone()),
        nonces: digest::Nonces::new(uuid::Uuid::new_v4().to_string()),
        queues: Arc::default(),
        pbx: Arc::new(pbxs),
        presence: Arc::default(),
        trunks: Arc::new(trunks),
        public_ip,
    };
    registrar::load(&gw).await?;
    for tenant in gw.pbx.keys() {
        for d in registrar::list(&gw, tenant) {
            gw.presence.watch(&gw, tenant, d.device.as_str());
        }
    }
    let lost = calls::report_lost_channels(&gw).await?;
    if ctx.config.demo {
        seed_demo(&gw).await?;
    }
    tracing::info!(sip = %stack.local, tenants = ?sip.tenants, pbx = ?gw.pbx, lost_channels = lost, "SIP gateway listening (udp and tcp)");

    tokio::spawn(registrar::expire_bindings(gw.clone()));
    let mut states = inbox.dialog_states;
    let g = gw.clone();
    tokio::spawn(async move {
        // In order: a dialog's changes (ringing, a re-INVITE, its end) must not overtake each
        // other. Each is quick (memory and a publish without waiting for its ack).
        while let Some(s) = states.recv().await {
            g.calls.on_dialog(&g, s).await;
        }
    });
    let mut transactions = inbox.transactions;
    let g = gw.clone();
    let cancel = ctx.cancel.clone();
    tokio::spawn(async move {
        loop {
            let tx = tokio::select! {
                _ = cancel.cancelled() => break,
                t = transactions.recv() => match t { Some(t) => t, None => break },
            };
            let g = g.clone();
            tokio::spawn(async move { dispatch(g, tx).await });
        }
    });

    let scope = TenantScope::Only(sip.tenants.clone());
    let pbx =
        CommandHandlers::new("pbx", gw.clone())
            .with_metrics(ctx.metrics.commands.clone())
            .with_tenants(scope.clone())
            .on(|g: Gateway, c, _: ListDevices| async move { Ok(registrar::list(&g, &c.tenant)) })
            .on(|g: Gateway, c, cmd: Originate| async move {
                g.calls.originate(&g, &c.tenant, cmd).await
            })
            .on(|g: Gateway, c, cmd: CheckRoute| async move {
                calls::check_route(&g, &c.tenant, &cmd.endpoint)
            })
            .on(|g: Gateway, c, cmd: Answer| async move {
                g.calls.answer(&g, &c.tenant, &cmd.channel).await
            })
            .on(|g: Gateway, c, cmd: Bridge| async move {
                g.calls
                    .bridge(&g, &c.tenant, &cmd.bridge, &cmd.channels)
                    .await
            })
            .on(|g: Gateway, c, cmd: Unbridge| async move {
                g.calls.unbridge(&g, &c.tenant, &cmd.channel).await
            })
            .on(|g: Gateway, c, cmd: Hold| async move {
                g.calls.hold(&g, &c.tenant, &cmd.channel, cmd.held).await
            })
            .on(|g: Gateway, c, cmd: Hangup| async move {
                g.calls.hangup(&g, &c.tenant, &cmd.channel, cmd.cause).await
            })
            .on(|g: Gateway, c, cmd: CancelRing| async move {
                g.calls.cancel_ring(&g, &c.tenant, &cmd.channel).await
            })
            .on(|g: Gateway, c, _: ListChannels| async move { Ok(g.calls.list(&c.tenant).await) })
            .on(|g: Gateway, c, cmd: SetBridgeMode| async move {
                g.calls
                    .set_bridge_mode(&g, &c.tenant, &cmd.channel, cmd.mode, cmd.bridge.as_deref())
                    .await
            });
    let admin = CommandHandlers::new("sip-gateway", gw.clone())
        .with_metrics(ctx.metrics.commands.clone())
        .with_tenants(scope)
        .on(|g: Gateway, c, cmd: ProvisionSipDevice| async move { registrar::provision(&g, &c.tenant, &cmd.device, None).await })
        .on(|g: Gateway, c, _: ListSipDevices| async move { Ok(registrar::list_sip(&g, &c.tenant)) })
        .on(|g: Gateway, c, cmd: RemoveSipDevice| async move { registrar::remove(&g, &c.tenant, &cmd.device).await });
    let (a, b) = tokio::join!(
        pbx.serve(ctx.bus.clone(), ctx.cancel.clone()),
        admin.serve(ctx.bus.clone(), ctx.cancel.clone())
    );
    a?;
    b?;
    // What the phones did last is reported before the process ends, when JetStream takes it.
    if !gw.reporter.drained(std::time::Duration::from_secs(5)).await {
        tracing::warn!("stopping with PBX facts JetStream has not taken");
    }
    Ok(())
}

/// Routes one new transaction: REGISTER to the registrar, requests inside a dialog to the
/// dialog, a new INVITE to the calls.
async fn dispatch(g: Gateway, mut tx: rsipstack::transaction::Transaction) {
    if tx.original.method == Method::Register {
        return registrar::register(g, tx).await;
    }
    if let Some(mut d) = g.stack.dialogs.match_dialog(&tx) {
        if let Err(e) = d.handle(&mut tx).await {
            tracing::debug!(error = %e, "in-dialog request");
        }
        return;
    }
    match tx.original.method {
        Method::Invite => g.calls.inbound(&g, tx).await,
        Method::Notify if is_presence(&g, &tx.original) => pbx::notify(g, tx).await,
        Method::Ack => {}
        Method::Options => {
            stack::reply(
                &mut tx,
                StatusCode::OK,
                vec![rsipstack::sip::Header::Allow(
                    "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, UPDATE, INFO, REFER, NOTIFY"
                        .into(),
                )],
            )
            .await
        }
        Method::Bye
        | Method::Cancel
        | Method::Update
        | Method::Info
        | Method::Refer
        | Method::Notify => {
            stack::reply(&mut tx, StatusCode::CallTransactionDoesNotExist, vec![]).await
        }
        _ => stack::reply(&mut tx, StatusCode::MethodNotAllowed, vec![]).await,
    }
}

fn is_presence(g: &Gateway, req: &rsipstack::sip::Request) -> bool {
    use rsipstack::sip::HeadersExt;
    req.call_id_header()
        .is_ok_and(|c| g.presence.owns(c.value()))
}

/// In demo mode, each SIP tenant without devices gets 1001-1006 with the password `sip<ext>`.
async fn seed_demo(gw: &Gateway) -> anyhow::Result<()> {
    for tenant in &gw.ctx.config.sip.tenants {
        if registrar::list(gw, tenant).is_empty() {
            for d in DEMO_DEVICES {
                let device = DeviceId::parse(d).expect("demo devices are valid");
                registrar::provision(gw, tenant, &device, Some(demo_password(d)))
                    .await
                    .map_err(|e| anyhow::anyhow!("{}", e.message))?;
            }
            tracing::info!(%tenant, "demo SIP devices created (password sip<extension>)");
        }
    }
    Ok(())
}
