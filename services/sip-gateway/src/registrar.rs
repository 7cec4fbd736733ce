//! The registrar: REGISTER with digest authentication, one binding per device (the newest
//! REGISTER wins), expiry, a per-address throttle, and the bindings persisted so that devices
//! stay online across a gateway restart. A device coming online or going offline is reported
//! as DeviceRegistered / DeviceUnregistered on the PBX contract.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cc_bus::CommandError;
use cc_contracts::domain::DeviceId;
use cc_contracts::pbx::{DeviceEvent, DeviceState};
use cc_contracts::sip::{SipCredentials, SipDeviceInfo};
use chrono::{DateTime, Utc};
use rsipstack::sip::{typed, Header, StatusCode};
use rsipstack::transaction::Transaction;
use sqlx::Row;

use crate::digest::{self, Verdict};
use crate::report::Fact;
use crate::stack::{self, reply};
use crate::Gateway;

/// Where a registered device is reached.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    /// The Contact URI the phone registered (the Request-URI of calls to it).
    pub contact: String,
    pub transport: String,
    /// The address its REGISTER came from: calls go there (it works behind NAT).
    pub source: SocketAddr,
    pub expires_at: DateTime<Utc>,
}

impl Binding {
    /// Where requests to the phone go: its Contact when that names the address the REGISTER
    /// came from (no NAT in between), else the source address (the phone is behind NAT and
    /// its Contact is a private address).
    pub fn target(&self) -> SocketAddr {
        let contact = rsipstack::sip::Uri::try_from(self.contact.as_str()).ok();
        let named = contact.and_then(|u| {
            let ip: IpAddr = u.host_with_port.host.to_string().parse().ok()?;
            let port = u.host_with_port.port.map(|p| p.value()).unwrap_or(5060);
            Some(SocketAddr::new(ip, port))
        });
        match named {
            Some(a) if a.ip() == self.source.ip() => a,
            _ => self.source,
        }
    }
}

/// Devices, their HA1 and their bindings, in memory (written through to PostgreSQL).
#[derive(Default)]
pub struct Registry {
    devices: Mutex<HashMap<(String, String), String>>,
    bindings: Mutex<HashMap<(String, String), Binding>>,
    throttle: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

fn key(tenant: &str, device: &str) -> (String, String) {
    (tenant.to_string(), device.to_string())
}

impl Registry {
    pub fn binding(&self, tenant: &str, device: &str) -> Option<Binding> {
        self.bindings
            .lock()
            .expect("bindings")
            .get(&key(tenant, device))
            .filter(|b| b.expires_at > Utc::now())
            .cloned()
    }

    pub fn is_device(&self, tenant: &str, device: &str) -> bool {
        self.devices
            .lock()
            .expect("devices")
            .contains_key(&key(tenant, device))
    }

    pub fn ha1(&self, tenant: &str, device: &str) -> Option<String> {
        self.devices
            .lock()
            .expect("devices")
            .get(&key(tenant, device))
            .cloned()
    }

    /// Counts a REGISTER from `ip`; false once it sent more than `limit` in the last minute.
    fn allow(&self, ip: IpAddr, limit: u32) -> bool {
        let mut t = self.throttle.lock().expect("throttle");
        let now = Instant::now();
        if t.len() > 10_000 {
            t.retain(|_, (start, _)| now.duration_since(*start) < Duration::from_secs(60));
        }
        let e = t.entry(ip).or_insert((now, 0));
        if now.duration_since(e.0) >= Duration::from_secs(60) {
            *e = (now, 0);
        }
        e.1 += 1;
        e.1 <= limit
    }
}

/// Loads devices and bindings; bindings that expired while the gateway was down are reported
/// offline now.
pub async fn load(gw: &Gateway) -> anyhow::Result<()> {
    let rows = sqlx::query("select tenant, device, ha1 from sip_devices")
        .fetch_all(&gw.ctx.pool)
        .await?;
    {
        let mut d = gw.registry.devices.lock().expect("devices");
        for r in rows {
            d.insert(key(r.get(0), r.get(1)), r.get(2));
        }
    }
    let rows = sqlx::query(
        "select tenant, device, contact, transport, source, expires_at from sip_bindings",
    )
    .fetch_all(&gw.ctx.pool)
    .await?;
    let now = Utc::now();
    for r in rows {
        let (tenant, device): (String, String) = (r.get(0), r.get(1));
        let expires_at: DateTime<Utc> = r.get(5);
        let source: Option<SocketAddr> = r.get::<String, _>(4).parse().ok();
        match source {
            Some(source) if expires_at > now => {
                let b = Binding {
                    contact: r.get(2),
                    transport: r.get(3),
                    source,
                    expires_at,
                };
                gw.registry
                    .bindings
                    .lock()
                    .expect("bindings")
                    .insert(key(&tenant, &device), b);
            }
            _ => {
                sqlx::query("delete from sip_bindings where tenant = $1 and device = $2")
                    .bind(&tenant)
                    .bind(&device)
                    .execute(&gw.ctx.pool)
                    .await?;
                if let Ok(d) = DeviceId::parse(&device) {
                    gw.reporter
                        .publish(
                            &tenant,
                            vec![Fact::Device(DeviceEvent::DeviceUnregistered {
                                tenant: tenant.clone(),
                                device: d,
                                at: now,
                            })],
                        )
                        .await;
                }
            }
        }
    }
    Ok(())
}

/// Ends the bindings that expired, every second.
pub async fn expire_bindings(gw: Gateway) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = gw.ctx.cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = Utc::now();
        let expired: Vec<(String, String)> = {
            let mut b = gw.registry.bindings.lock().expect("bindings");
            let gone: Vec<_> = b
                .iter()
                .filter(|(_, v)| v.expires_at <= now)
                .map(|(k, _)| k.clone())
                .collect();
            for k in &gone {
                b.remove(k);
            }
            gone
        };
        for (tenant, device) in expired {
            tracing::info!(%tenant, %device, "registration expired");
            unbind(&gw, &tenant, &device).await;
        }
    }
}

async fn unbind(gw: &Gateway, tenant: &str, device: &str) {
    if let Err(e) = sqlx::query("delete from sip_bindings where tenant = $1 and device = $2")
        .bind(tenant)
        .bind(device)
        .execute(&gw.ctx.pool)
        .await
    {
        tracing::warn!(error = %e, "could not delete a binding");
    }
    if let Ok(d) = DeviceId::parse(device) {
        let at = Utc::now();
        gw.reporter
            .publish(
                tenant,
                vec![Fact::Device(DeviceEvent::DeviceUnregistered {
                    tenant: tenant.into(),
                    device: d,
                    at,
                })],
            )
            .await;
    }
}

/// Answers one REGISTER.
pub async fn register(gw: Gateway, mut tx: Transaction) {
    let req = tx.original.clone();
    let Some(source) = stack::source(&req) else {
        return reply(&mut tx, StatusCode::BadRequest, vec![]).await;
    };
    if !gw
        .registry
        .allow(source.ip(), gw.ctx.config.sip.register_per_minute)
    {
        tracing::warn!(%source, "REGISTER flood throttled");
        return reply(
            &mut tx,
            StatusCode::ServiceUnavailable,
            vec![Header::RetryAfter("60".into())],
        )
        .await;
    }
    let Some(tenant) = gw.tenant_of_request(&req) else {
        return reply(
            &mut tx,
            StatusCode::NotFound,
            vec![reason("no such SIP domain here")],
        )
        .await;
    };
    if gw.pbx.contains_key(&tenant) {
        return reply(
            &mut tx,
            StatusCode::Forbidden,
            vec![reason("the extensions of this tenant register on its PBX")],
        )
        .await;
    }
    let realm = gw.domain(&tenant);
    let to_user = req.to_header_user();
    let device = match to_user.as_deref().map(DeviceId::parse) {
        Some(Ok(d)) => d,
        _ => {
            return reply(
                &mut tx,
                StatusCode::NotFound,
                vec![reason("the To user is no extension")],
            )
            .await
        }
    };
    let now = Utc::now().timestamp();
    let challenge = |stale: bool| {
        vec![Header::WwwAuthenticate(
            gw.nonces.challenge(&realm, now, stale).into(),
        )]
    };
    let Some(raw) = stack::header(&req, "Authorization") else {
        return reply(&mut tx, StatusCode::Unauthorized, challenge(false)).await;
    };
    let Ok(auth) = typed::Authorization::parse(&raw) else {
        return reply(
            &mut tx,
            StatusCode::BadRequest,
            vec![reason("the Authorization header does not parse")],
        )
        .await;
    };
    let raw_uri = rsipstack::dialog::authenticate::extract_digest_uri_raw(&raw)
        .unwrap_or_else(|| auth.uri.to_string());
    let verdict = match gw.registry.ha1(&tenant, device.as_str()) {
        Some(ha1) if auth.username == device.as_str() => gw
            .nonces
            .verify(&auth, &raw_uri, "REGISTER", &realm, &ha1, now),
        _ => Verdict::Invalid,
    };
    match verdict {
        Verdict::Valid => {}
        Verdict::Stale => return reply(&mut tx, StatusCode::Unauthorized, challenge(true)).await,
        Verdict::Invalid => {
            tracing::info!(%tenant, %device, %source, "REGISTER with wrong credentials");
            return reply(
                &mut tx,
                StatusCode::Forbidden,
                vec![reason("wrong user name or password")],
            )
            .await;
        }
    }
    let sip = &gw.ctx.config.sip;
    let header_expires = stack::header(&req, "Expires").and_then(|v| v.trim().parse::<u32>().ok());
    let contact_raw = stack::header(&req, "Contact");
    let previous = gw.registry.binding(&tenant, device.as_str());
    let contact = match contact_raw.as_deref().map(str::trim) {
        None => {
            // A query: the current binding.
            let headers = previous
                .map(|b| contact_header(&b.contact, seconds_left(&b)))
                .into_iter()
                .collect();
            return reply(&mut tx, StatusCode::OK, headers).await;
        }
        Some("*") => None,
        Some(c) => match typed::Contact::parse(c) {
            Ok(c) => Some(c),
            Err(_) => {
                return reply(
                    &mut tx,
                    StatusCode::BadRequest,
                    vec![reason("the Contact header does not parse")],
                )
                .await
            }
        },
    };
    let expires = contact
        .as_ref()
        .and_then(|c| c.expires())
        .or(header_expires)
        .unwrap_or(3600);
    let Some(contact) = contact.filter(|_| expires > 0) else {
        // Expires 0 (or Contact: *): the device goes offline.
        let had = gw
            .registry
            .bindings
            .lock()
            .expect("bindings")
            .remove(&key(&tenant, device.as_str()))
            .is_some();
        if had {
            unbind(&gw, &tenant, device.as_str()).await;
        }
        return reply(&mut tx, StatusCode::OK, vec![]).await;
    };
    if expires < sip.min_expires {
        return reply(
            &mut tx,
            StatusCode::IntervalTooBrief,
            vec![Header::MinExpires(sip.min_expires.to_string().into())],
        )
        .await;
    }
    let expires = expires.min(sip.max_expires);
    let binding = Binding {
        contact: contact.uri.to_string(),
        transport: stack::transport(&req).to_string(),
        source,
        expires_at: Utc::now() + chrono::Duration::seconds(expires as i64),
    };
    let stored = sqlx::query(
        "insert into sip_bindings (tenant, device, contact, transport, source, expires_at) values ($1, $2, $3, $4, $5, $6)
         on conflict (tenant, device) do update set contact = excluded.contact, transport = excluded.transport,
           source = excluded.source, expires_at = excluded.expires_at",
    )
    .bind(&tenant)
    .bind(device.as_str())
    .bind(&binding.contact)
    .bind(&binding.transport)
    .bind(binding.source.to_string())
    .bind(binding.expires_at)
    .execute(&gw.ctx.pool)
    .await;
    if let Err(e) = stored {
        tracing::error!(error = %e, "could not store a binding");
        return reply(&mut tx, StatusCode::ServerInternalError, vec![]).await;
    }
    let new = previous
        .as_ref()
        .map(|p| p.contact != binding.contact || p.source != binding.source)
        .unwrap_or(true);
    gw.registry
        .bindings
        .lock()
        .expect("bindings")
        .insert(key(&tenant, device.as_str()), binding.clone());
    if new {
        tracing::info!(%tenant, %device, %source, "device registered");
        let at = Utc::now();
        gw.reporter
            .publish(
                &tenant,
                vec![Fact::Device(DeviceEvent::DeviceRegistered {
                    tenant: tenant.clone(),
                    device: device.clone(),
                    at,
                })],
            )
            .await;
    }
    reply(
        &mut tx,
        StatusCode::OK,
        vec![
            contact_header(&binding.contact, expires),
            Header::Expires(expires.to_string().into()),
        ],
    )
    .await;
}

fn seconds_left(b: &Binding) -> u32 {
    (b.expires_at - Utc::now()).num_seconds().max(0) as u32
}

fn contact_header(uri: &str, expires: u32) -> Header {
    Header::Contact(format!("<{uri}>;expires={expires}").into())
}

pub fn reason(text: &str) -> Header {
    Header::Other("Warning".into(), format!("399 cc-sip-gateway \"{text}\""))
}

trait ToUser {
    fn to_header_user(&self) -> Option<String>;
}

impl ToUser for rsipstack::sip::Request {
    fn to_header_user(&self) -> Option<String> {
        use rsipstack::sip::HeadersExt;
        self.to_header().ok()?.uri().ok()?.auth.map(|a| a.user)
    }
}

/// The contract's ListDevices: every SIP device of the tenant and whether it is registered
/// (here, or for a trunk-mode tenant on its PBX).
pub fn list(gw: &Gateway, tenant: &str) -> Vec<DeviceState> {
    let on_pbx = gw.pbx.contains_key(tenant);
    let mut v: Vec<DeviceState> = gw
        .registry
        .devices
        .lock()
        .expect("devices")
        .keys()
        .filter(|(t, _)| t == tenant)
        .filter_map(|(_, d)| DeviceId::parse(d).ok())
        .map(|device| DeviceState {
            registered: if on_pbx {
                gw.presence.is_online(tenant, device.as_str())
            } else {
                gw.registry.binding(tenant, device.as_str()).is_some()
            },
            device,
        })
        .collect();
    v.sort_by(|a, b| a.device.as_str().cmp(b.device.as_str()));
    v
}

/// The devices with their bindings, for the admin (for a trunk-mode tenant: what its PBX says).
pub fn list_sip(gw: &Gateway, tenant: &str) -> Vec<SipDeviceInfo> {
    if let Some(pbx) = gw.pbx.get(tenant) {
        return list(gw, tenant)
            .into_iter()
            .map(|d| {
                let r = gw.presence.registration(tenant, d.device.as_str());
                SipDeviceInfo {
                    registered: d.registered,
                    contact: r.and_then(|r| r.contact),
                    source: d.registered.then(|| format!("pbx {}", pbx.uri_host)),
                    expires_at: None,
                    device: d.device,
                }
            })
            .collect();
    }
    list(gw, tenant)
        .into_iter()
        .map(|d| {
            let b = gw.registry.binding(tenant, d.device.as_str());
            SipDeviceInfo {
                device: d.device,
                registered: b.is_some(),
                contact: b.as_ref().map(|b| b.contact.clone()),
                source: b.as_ref().map(|b| format!("{}:{}", b.transport, b.source)),
                expires_at: b.map(|b| b.expires_at),
            }
        })
        .collect()
}

/// Creates a device or gives it a new password; returns the password once.
pub async fn provision(
    gw: &Gateway,
    tenant: &str,
    device: &DeviceId,
    password: Option<String>,
) -> Result<SipCredentials, CommandError> {
    let password = password.unwrap_or_else(new_password);
    let realm = gw.domain(tenant);
    let ha1 = digest::ha1(device.as_str(), &realm, &password);
    let inserted: bool = sqlx::query_scalar(
        "insert into sip_devices (tenant, device, realm, ha1) values ($1, $2, $3, $4)
         on conflict (tenant, device) do update set realm = excluded.realm, ha1 = excluded.ha1, updated_at = now()
         returning (xmax = 0)",
    )
    .bind(tenant)
    .bind(device.as_str())
    .bind(&realm)
    .bind(&ha1)
    .fetch_one(&gw.ctx.pool)
    .await?;
    gw.registry
        .devices
        .lock()
        .expect("devices")
        .insert(key(tenant, device.as_str()), ha1);
    // A trunk-mode tenant's extension registers on its PBX: follow it there.
    gw.presence.watch(gw, tenant, device.as_str());
    if inserted {
        // A new extension exists, not registered yet: "offline" rather than "no such device".
        let at = Utc::now();
        gw.reporter
            .publish(
                tenant,
                vec![Fact::Device(DeviceEvent::DeviceUnregistered {
                    tenant: tenant.into(),
                    device: device.clone(),
                    at,
                })],
            )
            .await;
    }
    Ok(SipCredentials {
        device: device.clone(),
        username: device.to_string(),
        domain: realm,
        password,
        registrar: match gw.pbx.get(tenant) {
            Some(pbx) => pbx.uri_host.clone(),
            None => gw.public_sip_addr(),
        },
    })
}

/// Removes a device: credentials and binding.
pub async fn remove(gw: &Gateway, tenant: &str, device: &DeviceId) -> Result<(), CommandError> {
    let n = sqlx::query("delete from sip_devices where tenant = $1 and device = $2")
        .bind(tenant)
        .bind(device.as_str())
        .execute(&gw.ctx.pool)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(CommandError::field(
            "unknown_device",
            "device",
            format!("There is no SIP device {device}"),
        ));
    }
    gw.registry
        .devices
        .lock()
        .expect("devices")
        .remove(&key(tenant, device.as_str()));
    gw.registry
        .bindings
        .lock()
        .expect("bindings")
        .remove(&key(tenant, device.as_str()));
    gw.presence.unwatch(gw, tenant, device.as_str());
    unbind(gw, tenant, device.as_str()).await;
    Ok(())
}

fn new_password() -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut r = rand::thread_rng();
    (0..16)
        .map(|_| CHARS[r.gen_range(0..CHARS.len())] as char)
        .collect()
}
