//! Trunk mode: a tenant whose extensions live on an existing SIP PBX (`CC_SIP_PBX`). The PBX
//! sends queue calls to the gateway, the gateway's agent legs go out through the PBX
//! (`INVITE sip:<extension>@<pbx>`), and each extension's presence comes from the PBX: the
//! gateway keeps one subscription per extension (Event `reg`, RFC 3680, or `presence`,
//! RFC 3856) and turns what the NOTIFYs say into the same DeviceRegistered /
//! DeviceUnregistered facts its own registrar reports.
//!
//! - A subscription is refreshed in its dialog at half its lifetime; a refresh the PBX does
//!   not know (481 after a PBX restart), a failure, or a NOTIFY saying `terminated` starts a
//!   new one, whose first NOTIFY carries the whole state again.
//! - A PBX that does not answer makes its extensions offline (calls to them could not go out
//!   anyway); the gateway retries with a growing pause (2 s up to 60 s).
//! - After a gateway restart nothing is known until the first NOTIFY of each new
//!   subscription; that first state is always reported, so the portal shows the truth even if
//!   it changed while the gateway was down. NOTIFYs of the old process's subscriptions get
//!   481 and the PBX drops them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cc_contracts::domain::DeviceId;
use cc_contracts::pbx::DeviceEvent;
use cc_runtime::{PbxTrunk, PresencePackage};
use chrono::Utc;
use rsipstack::sip::{typed, Header, HeadersExt, Method, Response, SipMessage, StatusCode};
use rsipstack::transaction::key::{TransactionKey, TransactionRole};
use rsipstack::transaction::Transaction;
use rsipstack::transport::SipAddr;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::reginfo::{self, Registration};
use crate::registrar::reason;
use crate::report::Fact;
use crate::stack::{self, reply};
use crate::Gateway;

/// A tenant's PBX, resolved at start.
#[derive(Debug, Clone)]
pub struct Pbx {
    /// `host[:port]` as configured: the host part of the URIs the gateway sends to the PBX.
    pub uri_host: String,
    /// Where its SIP requests go (UDP).
    pub addr: SocketAddr,
    pub package: PresencePackage,
}

impl Pbx {
    /// `sip:<user>@<pbx>`.
    pub fn uri(&self, user: &str) -> String {
        format!("sip:{user}@{}", self.uri_host)
    }
}

/// Checks `CC_SIP_PBX` against the served tenants and resolves each PBX's address.
pub async fn resolve(
    trunks: &[PbxTrunk],
    tenants: &[String],
) -> anyhow::Result<HashMap<String, Pbx>> {
    let mut out = HashMap::new();
    for t in trunks {
        if !tenants.contains(&t.tenant) {
            anyhow::bail!(
                "CC_SIP_PBX: tenant {} is not served by the SIP gateway (add it to CC_SIP_TENANTS)",
                t.tenant
            );
        }
        let bare = t.host.trim_start_matches('[').trim_end_matches(']');
        let addr = tokio::net::lookup_host((bare, t.port))
            .await
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "CC_SIP_PBX: the PBX of tenant {} ({}) does not resolve to an address",
                    t.tenant,
                    t.host
                )
            })?;
        let uri_host = if t.port == 5060 {
            t.host.clone()
        } else {
            format!("{}:{}", t.host, t.port)
        };
        out.insert(
            t.tenant.clone(),
            Pbx {
                uri_host,
                addr,
                package: t.presence,
            },
        );
    }
    Ok(out)
}

type Key = (String, String);

/// The gateway's side of one subscription dialog.
#[derive(Debug, Clone)]
struct Dialog {
    call_id: String,
    local_tag: String,
    remote_tag: Option<String>,
    cseq: u32,
    /// The PBX's Contact: where refreshes go.
    target: Option<String>,
    routes: Vec<String>,
    /// The highest CSeq of a NOTIFY seen (older ones that arrive late change nothing).
    notify_cseq: u32,
}

struct Watch {
    dialog: Option<Dialog>,
    /// What the PBX last said; `None` until it said anything to this process.
    known: Option<Registration>,
    cancel: CancellationToken,
    renew: Arc<Notify>,
}

#[derive(Default)]
struct State {
    watches: HashMap<Key, Watch>,
    by_call_id: HashMap<String, Key>,
}

/// Every watched extension of the trunk tenants and what its PBX says about it.
#[derive(Default)]
pub struct Presence {
    state: Mutex<State>,
    /// Held while a change is decided and reported, so facts leave in the order of the NOTIFYs.
    order: tokio::sync::Mutex<()>,
}

fn key(tenant: &str, device: &str) -> Key {
    (tenant.to_string(), device.to_string())
}

impl Presence {
    /// Whether the PBX says the extension is registered.
    pub fn is_online(&self, tenant: &str, device: &str) -> bool {
        self.registration(tenant, device)
            .is_some_and(|r| r.registered)
    }

    /// What the PBX last said about the extension.
    pub fn registration(&self, tenant: &str, device: &str) -> Option<Registration> {
        let st = self.state.lock().expect("presence");
        st.watches.get(&key(tenant, device))?.known.clone()
    }

    /// Whether a NOTIFY with this Call-ID belongs to one of the subscriptions.
    pub fn owns(&self, call_id: &str) -> bool {
        self.state
            .lock()
            .expect("presence")
            .by_call_id
            .contains_key(call_id)
    }

    /// Starts following an extension (once; a second call changes nothing).
    pub fn watch(&self, gw: &Gateway, tenant: &str, device: &str) {
        let Some(pbx) = gw.pbx.get(tenant).cloned() else {
            return;
        };
        let mut st = self.state.lock().expect("presence");
        if st.watches.contains_key(&key(tenant, device)) {
            return;
        }
        let cancel = gw.ctx.cancel.child_token();
        let renew = Arc::new(Notify::new());
        st.watches.insert(
            key(tenant, device),
            Watch {
                dialog: None,
                known: None,
                cancel: cancel.clone(),
                renew: renew.clone(),
            },
        );
        let (gw, tenant, device) = (gw.clone(), tenant.to_string(), device.to_string());
        tokio::spawn(async move { follow(gw, pbx, tenant, device, cancel, renew).await });
    }

    /// Stops following an extension (it was removed); its subscription is ended.
    pub fn unwatch(&self, gw: &Gateway, tenant: &str, device: &str) {
        let dialog = {
            let mut st = self.state.lock().expect("presence");
            let Some(w) = st.watches.remove(&key(tenant, device)) else {
                return;
            };
            w.cancel.cancel();
            let d = w.dialog.filter(|d| d.remote_tag.is_some());
            if let Some(d) = &d {
                st.by_call_id.remove(&d.call_id);
            }
            d
        };
        if let (Some(mut d), Some(pbx)) = (dialog, gw.pbx.get(tenant).cloned()) {
            let (gw, device) = (gw.clone(), device.to_string());
            tokio::spawn(async move {
                d.cseq += 1;
                let ended = subscribe(&gw, &pbx, &device, &d, 0);
                let _ = tokio::time::timeout(Duration::from_secs(5), ended).await;
            });
        }
    }

    fn set_dialog(&self, k: &Key, dialog: Option<Dialog>) {
        let mut st = self.state.lock().expect("presence");
        let Some(w) = st.watches.get_mut(k) else {
            return;
        };
        let old = std::mem::replace(&mut w.dialog, dialog.clone());
        if let Some(old) = old {
            st.by_call_id.remove(&old.call_id);
        }
        if let Some(d) = dialog {
            st.by_call_id.insert(d.call_id, k.clone());
        }
    }

    fn dialog(&self, k: &Key) -> Option<Dialog> {
        self.state
            .lock()
            .expect("presence")
            .watches
            .get(k)?
            .dialog
            .clone()
    }

    fn update_dialog(&self, k: &Key, f: impl FnOnce(&mut Dialog)) {
        let mut st = self.state.lock().expect("presence");
        if let Some(d) = st.watches.get_mut(k).and_then(|w| w.dialog.as_mut()) {
            f(d);
        }
    }

    /// Records what the PBX says and reports a change (and the first state this process
    /// learns) as DeviceRegistered / DeviceUnregistered.
    async fn learn(&self, gw: &Gateway, k: &Key, registration: Registration) {
        let _order = self.order.lock().await;
        let changed = {
            let mut st = self.state.lock().expect("presence");
            let Some(w) = st.watches.get_mut(k) else {
                return;
            };
            let before = w.known.replace(registration.clone());
            before.map(|b| b.registered) != Some(registration.registered)
        };
        let Ok(device) = DeviceId::parse(&k.1) else {
            return;
        };
        if !changed {
            return;
        }
        let (tenant, at) = (k.0.clone(), Utc::now());
        tracing::info!(%tenant, %device, registered = registration.registered, "presence from the PBX");
        let e = if registration.registered {
            DeviceEvent::DeviceRegistered { tenant, device, at }
        } else {
            DeviceEvent::DeviceUnregistered { tenant, device, at }
        };
        gw.reporter.publish(&k.0, vec![Fact::Device(e)]).await;
    }
}

/// Keeps one extension's subscription alive until `cancel`.
async fn follow(
    gw: Gateway,
    pbx: Pbx,
    tenant: String,
    device: String,
    cancel: CancellationToken,
    renew: Arc<Notify>,
) {
    let k = key(&tenant, &device);
    let asked = gw.ctx.config.sip.pbx_subscribe_secs;
    let mut failures: u32 = 0;
    loop {
        let dialog = Dialog {
            call_id: format!("{}@cc-sip-gateway", uuid::Uuid::new_v4().simple()),
            local_tag: uuid::Uuid::new_v4().simple().to_string()[..16].to_string(),
            remote_tag: None,
            cseq: 1,
            target: None,
            routes: vec![],
            notify_cseq: 0,
        };
        gw.presence.set_dialog(&k, Some(dialog.clone()));
        let outcome = tokio::select! {
            _ = cancel.cancelled() => return,
            r = subscribe(&gw, &pbx, &device, &dialog, asked) => r,
        };
        let mut granted = match outcome {
            Ok(resp) if resp.status_code.kind() == rsipstack::sip::StatusCodeKind::Successful => {
                failures = 0;
                gw.presence.update_dialog(&k, |d| established(d, &resp));
                granted(&resp, asked)
            }
            other => {
                let why = match other {
                    Ok(r) => r.status_code.to_string(),
                    Err(e) => e.to_string(),
                };
                tracing::warn!(%tenant, %device, pbx = %pbx.addr, %why, "the PBX refused or did not answer a presence subscription");
                gw.presence.set_dialog(&k, None);
                gw.presence
                    .learn(
                        &gw,
                        &k,
                        Registration {
                            registered: false,
                            contact: None,
                        },
                    )
                    .await;
                failures += 1;
                let pause = Duration::from_secs((1u64 << failures.min(5)).min(60));
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(pause) => continue,
                }
            }
        };
        // Refreshes in the dialog, until one fails or the PBX ends the subscription.
        loop {
            let wait = Duration::from_secs((granted / 2).max(5) as u64);
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = renew.notified() => break,
                _ = tokio::time::sleep(wait) => {}
            }
            gw.presence.update_dialog(&k, |d| d.cseq += 1);
            let Some(d) = gw.presence.dialog(&k) else {
                break;
            };
            match subscribe(&gw, &pbx, &device, &d, asked).await {
                Ok(r) if r.status_code.kind() == rsipstack::sip::StatusCodeKind::Successful => {
                    granted = self::granted(&r, asked);
                }
                Ok(r) => {
                    tracing::info!(%tenant, %device, status = %r.status_code, "presence refresh refused; subscribing anew");
                    break;
                }
                Err(e) => {
                    tracing::info!(%tenant, %device, error = %e, "presence refresh unanswered; subscribing anew");
                    break;
                }
            }
        }
    }
}

/// The lifetime the PBX granted (its Expires, never longer than asked, at least 10 s).
fn granted(resp: &Response, asked: u32) -> u32 {
    resp.header_value("Expires")
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(asked)
        .clamp(10, asked.max(10))
}

/// The dialog as the 2xx established it: the PBX's tag, its Contact, the route set.
fn established(d: &mut Dialog, resp: &Response) {
    if let Ok(Some(tag)) = resp.to_header().and_then(|t| t.tag()) {
        d.remote_tag = Some(tag.to_string());
    }
    if let Some(c) = resp
        .contact_header()
        .ok()
        .and_then(|c| typed::Contact::parse(c.value()).ok())
    {
        d.target = Some(c.uri.to_string());
    }
    let mut routes: Vec<String> = resp
        .headers
        .iter()
        .filter_map(|h| match h {
            Header::RecordRoute(rr) => Some(rr.value().to_string()),
            _ => None,
        })
        .flat_map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .collect::<Vec<_>>()
        })
        .filter(|s| !s.is_empty())
        .collect();
    routes.reverse();
    d.routes = routes;
}

/// Sends one SUBSCRIBE (initial or refresh, `expires` 0 ends it) and waits for its final answer.
async fn subscribe(
    gw: &Gateway,
    pbx: &Pbx,
    device: &str,
    d: &Dialog,
    expires: u32,
) -> anyhow::Result<Response> {
    let uri = |s: String| {
        rsipstack::sip::Uri::try_from(s.as_str()).map_err(|e| anyhow::anyhow!("bad URI {s}: {e}"))
    };
    let aor = pbx.uri(device);
    let req_uri = uri(d.target.clone().unwrap_or_else(|| aor.clone()))?;
    let me = format!("sip:callcenter@{}", gw.public_sip_addr());
    let endpoint = &gw.stack.endpoint.inner;
    let via = endpoint.get_via(None, None)?;
    let from = typed::From {
        display_name: None,
        uri: uri(me.clone())?,
        params: vec![],
    }
    .with_tag(d.local_tag.clone().into());
    let mut to = typed::To {
        display_name: None,
        uri: uri(aor)?,
        params: vec![],
    };
    if let Some(t) = &d.remote_tag {
        to = to.with_tag(t.clone().into());
    }
    let mut req = endpoint.make_request(
        Method::Subscribe,
        req_uri,
        via,
        from,
        to,
        d.cseq,
        Some(d.call_id.clone().into()),
    );
    for r in &d.routes {
        req.headers.push(Header::Route(r.clone().into()));
    }
    req.headers.push(Header::Event(pbx.package.event().into()));
    req.headers
        .push(Header::Accept(pbx.package.content_type().into()));
    req.headers.push(Header::Expires(expires.into()));
    req.headers.push(Header::Contact(format!("<{me}>").into()));
    let key = TransactionKey::from_request(&req, TransactionRole::Client)?;
    let mut tx = Transaction::new_client(key, req, endpoint.clone(), None);
    tx.destination = Some(SipAddr {
        r#type: Some(rsipstack::sip::Transport::Udp),
        addr: pbx.addr.into(),
    });
    tx.send().await?;
    while let Some(msg) = tx.receive().await {
        if let SipMessage::Response(r) = msg {
            if r.status_code.code() >= 200 {
                return Ok(r);
            }
        }
    }
    anyhow::bail!("no final answer from the PBX")
}

/// A NOTIFY of one of the subscriptions: what the PBX says about the extension.
pub async fn notify(gw: Gateway, mut tx: Transaction) {
    let req = tx.original.clone();
    let call_id = req
        .call_id_header()
        .map(|c| c.value().to_string())
        .unwrap_or_default();
    let found = {
        let st = gw.presence.state.lock().expect("presence");
        st.by_call_id.get(&call_id).cloned().and_then(|k| {
            let w = st.watches.get(&k)?;
            Some((k, w.dialog.clone()?, w.renew.clone()))
        })
    };
    let Some((k, dialog, renew)) = found else {
        return reply(&mut tx, StatusCode::CallTransactionDoesNotExist, vec![]).await;
    };
    let Some(pbx) = gw.pbx.get(&k.0).cloned() else {
        return reply(&mut tx, StatusCode::CallTransactionDoesNotExist, vec![]).await;
    };
    if stack::source(&req).map(|s| s.ip()) != Some(pbx.addr.ip()) {
        return reply(
            &mut tx,
            StatusCode::Forbidden,
            vec![reason("NOTIFYs are taken from the tenant's PBX only")],
        )
        .await;
    }
    let to_tag = req.to_header().ok().and_then(|t| t.tag().ok().flatten());
    if to_tag.map(|t| t.to_string()) != Some(dialog.local_tag.clone()) {
        return reply(&mut tx, StatusCode::CallTransactionDoesNotExist, vec![]).await;
    }
    let event = req.header_value("Event").unwrap_or_default();
    let event = event.split(';').next().unwrap_or("").trim();
    if !event.eq_ignore_ascii_case(pbx.package.event()) {
        return reply(
            &mut tx,
            StatusCode::BadEvent,
            vec![reason("this subscription is for another event package")],
        )
        .await;
    }
    let cseq = req
        .cseq_header()
        .ok()
        .and_then(|c| c.seq().ok())
        .unwrap_or(0);
    let state = req
        .header_value("Subscription-State")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let terminated = state.trim_start().starts_with("terminated");
    let parsed = reginfo::parse(pbx.package, &req.body, &k.1);
    let registration = match parsed {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(tenant = %k.0, device = %k.1, error = %e, "a NOTIFY the gateway cannot read");
            return reply(
                &mut tx,
                StatusCode::BadRequest,
                vec![reason(&e.to_string())],
            )
            .await;
        }
    };
    let from_tag = req
        .from_header()
        .ok()
        .and_then(|f| f.tag().ok().flatten())
        .map(|t| t.to_string());
    let contact = req
        .contact_header()
        .ok()
        .and_then(|c| typed::Contact::parse(c.value()).ok())
        .map(|c| c.uri.to_string());
    let mut fresh = false;
    gw.presence.update_dialog(&k, |d| {
        if d.remote_tag.is_none() {
            d.remote_tag = from_tag;
        }
        if d.target.is_none() {
            d.target = contact;
        }
        if cseq > d.notify_cseq {
            d.notify_cseq = cseq;
            fresh = true;
        }
    });
    reply(&mut tx, StatusCode::OK, vec![]).await;
    // A late, older NOTIFY changes nothing; a final one without a body keeps the state (the
    // new subscription's first NOTIFY tells it again).
    let empty = req.body.iter().all(u8::is_ascii_whitespace);
    if let Some(r) = registration.filter(|_| fresh && !(terminated && empty)) {
        gw.presence.learn(&gw, &k, r).await;
    }
    if terminated {
        tracing::info!(tenant = %k.0, device = %k.1, %state, "the PBX ended a presence subscription; subscribing anew");
        renew.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pbx_not_served_or_not_resolving_is_refused_naming_the_variable() {
        let t = |tenant: &str, host: &str| PbxTrunk {
            tenant: tenant.into(),
            host: host.into(),
            port: 5080,
            presence: PresencePackage::Reg,
        };
        let served = vec!["office".to_string()];
        let e = resolve(&[t("acme", "127.0.0.1")], &served)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("CC_SIP_PBX") && e.contains("CC_SIP_TENANTS"),
            "{e}"
        );
        let e = resolve(&[t("office", "no-such-host.invalid")], &served)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("CC_SIP_PBX") && e.contains("does not resolve"),
            "{e}"
        );
        let ok = resolve(&[t("office", "127.0.0.2")], &served).await.unwrap();
        assert_eq!(ok["office"].uri("1001"), "sip:1001@127.0.0.2:5080");
        assert_eq!(ok["office"].addr, "127.0.0.2:5080".parse().unwrap());
    }
}
