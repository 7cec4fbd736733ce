use std::path::Path;

use serde::{Deserialize, Serialize};

/// The configuration of one process. Every field has a default that works on a laptop.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// PostgreSQL, the event store and read models. `CC_DATABASE_URL`.
    pub database_url: String,
    /// NATS with JetStream (>= 2.10): one URL, or the comma-separated URLs of a cluster's
    /// servers (the client connects to any of them and moves to another when it is lost).
    /// `CC_NATS_URL`.
    pub nats_url: String,
    /// How many servers hold a copy of each JetStream stream the product creates: 1 to 5, or
    /// unset (`auto`): 3 when the server is part of a cluster, else 1. A stream whose count
    /// differs is updated to it on start. `CC_NATS_REPLICAS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats_replicas: Option<usize>,
    /// The first token of every subject (and of JetStream stream names). `CC_SUBJECT_PREFIX`.
    pub subject_prefix: String,
    /// Where /healthz, /readyz and /metrics listen. `CC_ADMIN_ADDR`.
    pub admin_addr: String,
    /// Where the portal (web UI and HTTP API) listens. `CC_PORTAL_ADDR`.
    pub portal_addr: String,
    /// Where the PBX simulator's control surface listens. `CC_PBX_SIM_ADDR`.
    pub pbx_sim_addr: String,
    /// The domain under which tenants are subdomains (`acme.<base_domain>`). `CC_BASE_DOMAIN`.
    pub base_domain: String,
    /// Demo mode: creates the demo tenant (agents, queues, pause reasons, simulated devices) on
    /// first start. Never on in production. `CC_DEMO`.
    pub demo: bool,
    /// `human` or `json`. `CC_LOG_FORMAT`.
    pub log_format: LogFormat,
    /// A tracing filter such as `info` or `info,cc_bus=debug`. `CC_LOG`.
    pub log: String,
    /// Where traces go: an OTLP/HTTP endpoint such as `http://otel-collector:4318` (`/v1/traces`
    /// is added when it has no path); unset, no traces are made. `CC_OTLP_ENDPOINT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// Seconds to finish in-flight work after SIGTERM. `CC_SHUTDOWN_GRACE_SECS`.
    pub shutdown_grace_secs: u64,
    /// Largest number of PostgreSQL connections of this process. `CC_DATABASE_MAX_CONNECTIONS`.
    pub database_max_connections: u32,
    /// The reverse proxies in front of the portal whose forwarding headers are believed (CIDR
    /// list; a bare address is one host; empty: none, the TCP peer is the client).
    /// `CC_TRUSTED_PROXIES`, comma-separated.
    pub trusted_proxies: Networks,
    /// Which header the trusted proxies set: `x-forwarded-for` (with `X-Forwarded-Proto`) or
    /// `forwarded` (RFC 7239). The other one is ignored, since a proxy passes on unchanged
    /// whatever the client sent in it. `CC_TRUSTED_PROXY_HEADER`.
    pub trusted_proxy_header: ProxyHeader,
    /// Seconds between two prunings of expired portal sessions and old sign-in throttle rows
    /// (by the auth service). `CC_AUTH_PRUNE_SECS`.
    pub auth_prune_secs: u64,
    /// The router, call control and the reporting fold save a snapshot of their state after
    /// this many events folded since the last one (take-overs read the newest snapshot and the
    /// events after it). `CC_SNAPSHOT_EVERY_EVENTS`.
    pub snapshot_every_events: u64,
    /// ...or this many seconds after the last one, when anything was folded since.
    /// `CC_SNAPSHOT_EVERY_SECS`.
    pub snapshot_every_secs: u64,
    /// How many partitions the tenants are spread over (the queue router leads per partition,
    /// each replica its fair share). The same for every replica and fixed for a store.
    /// `CC_PARTITIONS`, 1 to 1024.
    pub partitions: u32,
    /// The SIP gateway (target `sip-gateway`); see [`SipConfig`].
    pub sip: SipConfig,
    /// Webhook deliveries (target `webhooks`); see [`WebhookConfig`].
    pub webhooks: WebhookConfig,
    /// How this process authenticates to NATS and checks its certificate; see [`NatsAuth`].
    pub nats: NatsAuth,
}

/// The NATS identity and TLS of a process.
///
/// Identity: with `user` set, every target of the process connects as that one user (an
/// operator command, an integrator, or `callcenter` for `run --target all`). Without it, each
/// target connects as the user named like the target whose password is in
/// `CC_NATS_PASSWORD_<TARGET>` (e.g. `CC_NATS_PASSWORD_QUEUE_ROUTER`), and anonymously when
/// that variable is not set (a server without authorization, on a laptop).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NatsAuth {
    /// One NATS user for the whole process. `CC_NATS_USER`.
    pub user: String,
    /// Its password. `CC_NATS_PASSWORD`.
    pub password: String,
    /// A PEM file of the CA(s) that signed the NATS server's certificate; set, the connection
    /// must be TLS (`tls://` URLs imply it too). `CC_NATS_CA_FILE`.
    pub ca_file: String,
    /// A PEM client certificate, for a server that asks for one (`verify: true`), with
    /// `key_file`. `CC_NATS_CERT_FILE`.
    pub cert_file: String,
    /// The PEM private key of `cert_file`. `CC_NATS_KEY_FILE`.
    pub key_file: String,
    /// Tenants whose integrator users `callcenter nats-config` lists (comma-separated).
    /// `CC_NATS_INTEGRATOR_TENANTS`.
    pub integrator_tenants: Vec<String>,
}

/// How the webhooks service delivers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// Allows webhook URLs on loopback, private, link-local and other non-public addresses
    /// (off: refused, against server-side request forgery). `CC_WEBHOOK_ALLOW_PRIVATE`.
    pub allow_private: bool,
    /// How long one delivery may take (milliseconds). `CC_WEBHOOK_TIMEOUT_MS`.
    pub timeout_ms: u64,
    /// The first retry's delay (milliseconds); each next one doubles, with jitter.
    /// `CC_WEBHOOK_RETRY_BASE_MS`.
    pub retry_base_ms: u64,
    /// The longest delay between two retries (milliseconds). `CC_WEBHOOK_RETRY_MAX_MS`.
    pub retry_max_ms: u64,
    /// How long an event is retried before the subscription is suspended (seconds).
    /// `CC_WEBHOOK_SUSPEND_AFTER_SECS`.
    pub suspend_after_secs: u64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            allow_private: false,
            timeout_ms: 10_000,
            retry_base_ms: 1_000,
            retry_max_ms: 600_000,
            suspend_after_secs: 86_400,
        }
    }
}

/// A list of IP networks (CIDR), such as the trusted proxies. Serialized as a list of strings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Networks(Vec<ipnet::IpNet>);

impl Networks {
    /// Parses `10.0.0.0/8, 192.0.2.7, 2001:db8::/32` (a bare address is one host).
    pub fn parse_list(s: &str) -> Result<Self, String> {
        s.split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(Self::parse_one)
            .collect::<Result<Vec<_>, _>>()
            .map(Networks)
    }

    fn parse_one(net: &str) -> Result<ipnet::IpNet, String> {
        if let Ok(ip) = net.parse::<std::net::IpAddr>() {
            return Ok(ipnet::IpNet::from(ip));
        }
        let parsed: ipnet::IpNet = net.parse().map_err(|_| {
            format!("{net:?} is not an IP address or a network in CIDR form (such as 10.0.0.0/8)")
        })?;
        if parsed.trunc() != parsed {
            return Err(format!(
                "{net:?} has host bits set after the prefix; did you mean {}?",
                parsed.trunc()
            ));
        }
        Ok(parsed)
    }

    /// Whether `ip` is in one of the networks (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Networks {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|n| n.to_string()))
    }
}

impl<'de> Deserialize<'de> for Networks {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let list = Vec::<String>::deserialize(d)?;
        list.iter()
            .map(|n| Networks::parse_one(n.trim()))
            .collect::<Result<Vec<_>, _>>()
            .map(Networks)
            .map_err(serde::de::Error::custom)
    }
}

/// The forwarding header a trusted proxy sets.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum ProxyHeader {
    /// `X-Forwarded-For` and `X-Forwarded-Proto` (nginx, HAProxy `option forwardfor`, most
    /// ingress controllers and cloud load balancers).
    #[default]
    #[serde(rename = "x-forwarded-for")]
    XForwardedFor,
    /// `Forwarded: for=...;proto=...` (RFC 7239).
    #[serde(rename = "forwarded")]
    Forwarded,
}

/// The SIP gateway's settings. Which PBX serves a tenant is chosen here: the tenants listed in
/// `tenants` are served by the SIP gateway, every other tenant by the PBX simulator.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SipConfig {
    /// The tenants whose PBX is the SIP gateway (their SIP domain is `<tenant>.<base_domain>`).
    /// `CC_SIP_TENANTS`, comma-separated.
    pub tenants: Vec<String>,
    /// Where SIP listens, UDP and TCP. `CC_SIP_ADDR`.
    pub addr: String,
    /// The address written into SDP and Contact headers (what phones send to); unset: the IP of
    /// `addr`. `CC_SIP_PUBLIC_IP`.
    pub public_ip: Option<String>,
    /// The UDP ports for RTP, `first-last` (`0`: chosen by the system). `CC_RTP_PORTS`.
    pub rtp_ports: String,
    /// Trunk sources per tenant, `tenant=cidr,cidr;tenant2=cidr`: INVITEs from these addresses
    /// to a queue number of that tenant need no digest. `CC_SIP_TRUNKS`.
    pub trunks: String,
    /// Shortest registration the registrar accepts (seconds; shorter gets 423). `CC_SIP_MIN_EXPIRES`.
    pub min_expires: u32,
    /// Longest registration granted (seconds). `CC_SIP_MAX_EXPIRES`.
    pub max_expires: u32,
    /// REGISTER requests one source address may send per minute before getting 503. `CC_SIP_REGISTER_PER_MINUTE`.
    pub register_per_minute: u32,
    /// Trunk mode: the tenants whose extensions live on an existing SIP PBX, and where it is.
    /// Their phones register on the PBX, agent legs go out through it, and a device is online
    /// while the PBX says its extension is registered. `CC_SIP_PBX`,
    /// `tenant=host[:port][,reg|presence];tenant2=...` (see [`parse_pbx`]).
    pub pbx: Vec<PbxTrunk>,
    /// How long each presence subscription to a PBX lasts (seconds, 10 to 86400); it is
    /// refreshed at half of it. `CC_SIP_PBX_SUBSCRIBE_SECS`.
    pub pbx_subscribe_secs: u32,
}

/// A tenant connected to an existing SIP PBX over a trunk (trunk mode).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PbxTrunk {
    /// The tenant (one of `CC_SIP_TENANTS`).
    pub tenant: String,
    /// The PBX's address, an IP address or a DNS name (resolved when the gateway starts).
    pub host: String,
    /// The PBX's SIP port (UDP).
    pub port: u16,
    /// The event package the gateway subscribes to for each extension's presence.
    #[serde(default)]
    pub presence: PresencePackage,
}

/// How a PBX tells which extensions are registered.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PresencePackage {
    /// RFC 3680 registration state (`Event: reg`, `application/reginfo+xml`): Kamailio
    /// (presence_reginfo + pua_reginfo), OpenSIPS, IMS cores.
    #[default]
    Reg,
    /// RFC 3856 presence (`Event: presence`, `application/pidf+xml`, `open` = online): Asterisk
    /// (hints on PJSIP endpoints), FreeSWITCH.
    Presence,
}

impl PresencePackage {
    /// The value of the SUBSCRIBE's Event header.
    pub fn event(self) -> &'static str {
        match self {
            PresencePackage::Reg => "reg",
            PresencePackage::Presence => "presence",
        }
    }

    /// The body type the gateway accepts in NOTIFYs.
    pub fn content_type(self) -> &'static str {
        match self {
            PresencePackage::Reg => "application/reginfo+xml",
            PresencePackage::Presence => "application/pidf+xml",
        }
    }
}

/// Parses `CC_SIP_PBX`: `tenant=host[:port][,reg|presence]`, several separated by `;`. The port
/// defaults to 5060 and the package to `reg`; an IPv6 address is written in brackets
/// (`[2001:db8::5]:5060`). Each error names the part at fault and why.
pub fn parse_pbx(spec: &str) -> Result<Vec<PbxTrunk>, String> {
    let mut out: Vec<PbxTrunk> = Vec::new();
    for part in spec.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (tenant, rest) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not tenant=host[:port][,reg|presence]"))?;
        let tenant = tenant.trim();
        if tenant.is_empty()
            || tenant.len() > 63
            || !tenant
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(format!(
                "{tenant:?} is not a tenant name (lowercase letters, digits and -, at most 63)"
            ));
        }
        if out.iter().any(|p| p.tenant == tenant) {
            return Err(format!("tenant {tenant} is given twice"));
        }
        let (addr, package) = match rest.split_once(',') {
            Some((a, p)) => (a.trim(), Some(p.trim())),
            None => (rest.trim(), None),
        };
        let presence = match package {
            None | Some("reg") => PresencePackage::Reg,
            Some("presence") => PresencePackage::Presence,
            Some(other) => {
                return Err(format!(
                    "{other:?} (tenant {tenant}) is no presence package: reg or presence"
                ))
            }
        };
        let (host, port) =
            split_host_port(addr).map_err(|why| format!("{addr:?} (tenant {tenant}): {why}"))?;
        out.push(PbxTrunk {
            tenant: tenant.to_string(),
            host,
            port,
            presence,
        });
    }
    Ok(out)
}

fn split_host_port(addr: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(v6) = addr.strip_prefix('[') {
        let (ip, rest) = v6
            .split_once(']')
            .ok_or("an IPv6 address needs its closing ]")?;
        ip.parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("{ip:?} is not an IPv6 address"))?;
        let port = match rest {
            "" => None,
            r => Some(r.strip_prefix(':').ok_or("expected :port after ]")?),
        };
        (format!("[{ip}]"), port)
    } else {
        match addr.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (addr.to_string(), None),
        }
    };
    let port = match port {
        None => 5060,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{p:?} is not a port (1-65535)"))?,
    };
    let name_ok = !host.is_empty()
        && host.len() <= 253
        && (host.starts_with('[')
            || host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'));
    if !name_ok {
        return Err("the host is no IP address or DNS name".into());
    }
    Ok((host, port))
}

impl Default for SipConfig {
    fn default() -> Self {
        Self {
            tenants: vec![],
            addr: "127.0.0.1:5060".into(),
            public_ip: None,
            rtp_ports: "30000-30999".into(),
            trunks: String::new(),
            min_expires: 60,
            max_expires: 3600,
            register_per_minute: 120,
            pbx: vec![],
            pbx_subscribe_secs: 300,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: "postgres://postgres@127.0.0.1:5432/callcenter".into(),
            nats_url: "nats://127.0.0.1:4222".into(),
            nats_replicas: None,
            subject_prefix: "cc".into(),
            admin_addr: "127.0.0.1:9464".into(),
            portal_addr: "127.0.0.1:8080".into(),
            pbx_sim_addr: "127.0.0.1:8090".into(),
            base_domain: "localhost".into(),
            demo: false,
            log_format: LogFormat::Human,
            log: "info,rsipstack=warn".into(),
            otlp_endpoint: None,
            shutdown_grace_secs: 20,
            database_max_connections: 20,
            trusted_proxies: Networks::default(),
            trusted_proxy_header: ProxyHeader::default(),
            auth_prune_secs: 300,
            snapshot_every_events: 50_000,
            snapshot_every_secs: 60,
            partitions: 1,
            sip: SipConfig::default(),
            webhooks: WebhookConfig::default(),
            nats: NatsAuth::default(),
        }
    }
}

/// A configuration that cannot be used, naming the file or variable at fault.
#[derive(Debug)]
pub enum ConfigError {
    File { path: String, reason: String },
    Env { var: &'static str, reason: String },
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::File { path, reason } => write!(f, "configuration file {path}: {reason}"),
            ConfigError::Env { var, reason } => write!(f, "environment variable {var}: {reason}"),
        }
    }
}
impl std::error::Error for ConfigError {}

type Setter = fn(&mut Config, &str) -> Result<(), String>;

/// Each environment variable and how it sets its field.
pub const ENV_VARS: &[(&str, Setter)] = &[
    ("CC_DATABASE_URL", |c, v| set_string(&mut c.database_url, v)),
    ("CC_NATS_URL", |c, v| set_string(&mut c.nats_url, v)),
    ("CC_NATS_REPLICAS", |c, v| {
        c.nats_replicas = match v.trim() {
            "auto" => None,
            n => match n.parse::<usize>() {
                Ok(n @ 1..=5) => Some(n),
                _ => return Err(format!("{v:?} must be auto or a number from 1 to 5")),
            },
        };
        Ok(())
    }),
    ("CC_SUBJECT_PREFIX", |c, v| {
        set_string(&mut c.subject_prefix, v)
    }),
    ("CC_ADMIN_ADDR", |c, v| set_string(&mut c.admin_addr, v)),
    ("CC_PORTAL_ADDR", |c, v| set_string(&mut c.portal_addr, v)),
    ("CC_PBX_SIM_ADDR", |c, v| set_string(&mut c.pbx_sim_addr, v)),
    ("CC_BASE_DOMAIN", |c, v| set_string(&mut c.base_domain, v)),
    ("CC_DEMO", |c, v| parse(&mut c.demo, v)),
    ("CC_LOG_FORMAT", |c, v| match v {
        "human" => {
            let _: () = c.log_format = LogFormat::Human;
            Ok(())
        }
        "json" => {
            let _: () = c.log_format = LogFormat::Json;
            Ok(())
        }
        _ => Err("must be human or json".into()),
    }),
    ("CC_LOG", |c, v| set_string(&mut c.log, v)),
    ("CC_SHUTDOWN_GRACE_SECS", |c, v| {
        parse(&mut c.shutdown_grace_secs, v)
    }),
    ("CC_DATABASE_MAX_CONNECTIONS", |c, v| {
        parse(&mut c.database_max_connections, v)
    }),
    ("CC_TRUSTED_PROXIES", |c, v| {
        c.trusted_proxies = Networks::parse_list(v)?;
        Ok(())
    }),
    ("CC_TRUSTED_PROXY_HEADER", |c, v| {
        c.trusted_proxy_header = match v.trim().to_ascii_lowercase().as_str() {
            "x-forwarded-for" => ProxyHeader::XForwardedFor,
            "forwarded" => ProxyHeader::Forwarded,
            _ => return Err(format!("{v:?} must be x-forwarded-for or forwarded")),
        };
        Ok(())
    }),
    ("CC_SNAPSHOT_EVERY_EVENTS", |c, v| {
        parse(&mut c.snapshot_every_events, v)?;
        if c.snapshot_every_events == 0 {
            return Err("must be at least 1".into());
        }
        Ok(())
    }),
    ("CC_SNAPSHOT_EVERY_SECS", |c, v| {
        parse(&mut c.snapshot_every_secs, v)?;
        if c.snapshot_every_secs == 0 {
            return Err("must be at least 1".into());
        }
        Ok(())
    }),
    ("CC_PARTITIONS", |c, v| {
        parse(&mut c.partitions, v)?;
        if !(1..=1024).contains(&c.partitions) {
            return Err("must be 1 to 1024".into());
        }
        Ok(())
    }),
    ("CC_AUTH_PRUNE_SECS", |c, v| {
        parse(&mut c.auth_prune_secs, v)?;
        if c.auth_prune_secs == 0 {
            return Err("must be at least 1".into());
        }
        Ok(())
    }),
    ("CC_NATS_USER", |c, v| set_string(&mut c.nats.user, v)),
    ("CC_NATS_PASSWORD", |c, v| {
        set_string(&mut c.nats.password, v)
    }),
    ("CC_NATS_CA_FILE", |c, v| set_string(&mut c.nats.ca_file, v)),
    ("CC_NATS_CERT_FILE", |c, v| {
        set_string(&mut c.nats.cert_file, v)
    }),
    ("CC_NATS_KEY_FILE", |c, v| {
        set_string(&mut c.nats.key_file, v)
    }),
    ("CC_NATS_INTEGRATOR_TENANTS", |c, v| {
        c.nats.integrator_tenants = v
            .split(',')
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect();
        Ok(())
    }),
    ("CC_SIP_TENANTS", |c, v| {
        c.sip.tenants = v
            .split(',')
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect();
        Ok(())
    }),
    ("CC_SIP_ADDR", |c, v| set_string(&mut c.sip.addr, v)),
    ("CC_SIP_PUBLIC_IP", |c, v| {
        c.sip.public_ip = Some(v.to_string()).filter(|v| !v.trim().is_empty());
        Ok(())
    }),
    ("CC_RTP_PORTS", |c, v| set_string(&mut c.sip.rtp_ports, v)),
    ("CC_SIP_TRUNKS", |c, v| {
        c.sip.trunks = v.to_string();
        Ok(())
    }),
    ("CC_SIP_MIN_EXPIRES", |c, v| {
        parse(&mut c.sip.min_expires, v)
    }),
    ("CC_SIP_MAX_EXPIRES", |c, v| {
        parse(&mut c.sip.max_expires, v)
    }),
    ("CC_SIP_REGISTER_PER_MINUTE", |c, v| {
        parse(&mut c.sip.register_per_minute, v)
    }),
    ("CC_SIP_PBX", |c, v| {
        c.sip.pbx = parse_pbx(v)?;
        Ok(())
    }),
    ("CC_OTLP_ENDPOINT", |c, v| {
        c.otlp_endpoint = (!v.trim().is_empty()).then(|| v.trim().to_string());
        Ok(())
    }),
    ("CC_WEBHOOK_ALLOW_PRIVATE", |c, v| {
        parse(&mut c.webhooks.allow_private, v)
    }),
    ("CC_WEBHOOK_TIMEOUT_MS", |c, v| {
        parse(&mut c.webhooks.timeout_ms, v)
    }),
    ("CC_WEBHOOK_RETRY_BASE_MS", |c, v| {
        parse(&mut c.webhooks.retry_base_ms, v)
    }),
    ("CC_WEBHOOK_RETRY_MAX_MS", |c, v| {
        parse(&mut c.webhooks.retry_max_ms, v)
    }),
    ("CC_WEBHOOK_SUSPEND_AFTER_SECS", |c, v| {
        parse(&mut c.webhooks.suspend_after_secs, v)
    }),
    ("CC_SIP_PBX_SUBSCRIBE_SECS", |c, v| {
        parse(&mut c.sip.pbx_subscribe_secs, v)?;
        if !(10..=86_400).contains(&c.sip.pbx_subscribe_secs) {
            return Err(format!("{v} is out of range (10 to 86400 seconds)"));
        }
        Ok(())
    }),
];

fn set_string(field: &mut String, v: &str) -> Result<(), String> {
    if v.trim().is_empty() {
        return Err("must not be empty".into());
    }
    *field = v.to_string();
    Ok(())
}

fn parse<T: std::str::FromStr>(field: &mut T, v: &str) -> Result<(), String>
where
    T::Err: std::fmt::Display,
{
    *field = v
        .parse()
        .map_err(|e: T::Err| format!("{v:?} is not valid: {e}"))?;
    Ok(())
}

impl Config {
    /// Defaults, then the file (if any), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, |k| std::env::var(k).ok())
    }

    /// As [`Config::load`], with the environment given as a function (for tests).
    pub fn load_from(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut config = match file {
            None => Config::default(),
            Some(path) => {
                let file_err = |reason: String| ConfigError::File {
                    path: path.display().to_string(),
                    reason,
                };
                let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
                toml::from_str(&text).map_err(|e| file_err(e.message().to_string()))?
            }
        };
        for (var, set) in ENV_VARS {
            if let Some(v) = env(var) {
                set(&mut config, &v).map_err(|reason| ConfigError::Env { var, reason })?;
            }
        }
        Ok(config)
    }

    /// The configuration as TOML with passwords in URLs hidden.
    pub fn redacted_toml(&self) -> String {
        let mut c = self.clone();
        c.database_url = redact_url(&c.database_url);
        c.nats_url = redact_url(&c.nats_url);
        if !c.nats.password.is_empty() {
            c.nats.password = "***".into();
        }
        toml::to_string_pretty(&c).expect("config serializes")
    }
}

/// A URL (or a comma-separated list of them, as NATS takes) fit for a log line or an error:
/// the password after the user replaced by `***`, so is a `password=` parameter's value.
pub fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|one| {
            let (scheme, rest) = match one.find("://") {
                Some(i) => one.split_at(i + 3),
                None => ("", one),
            };
            let end = rest.find(['/', '?']).unwrap_or(rest.len());
            let (authority, tail) = rest.split_at(end);
            let authority = match authority.rsplit_once('@') {
                Some((userinfo, host)) => match userinfo.split_once(':') {
                    Some((user, _)) => format!("{user}:***@{host}"),
                    None => authority.to_string(),
                },
                None => authority.to_string(),
            };
            let tail = match tail.split_once('?') {
                Some((path, query)) => {
                    let query: Vec<String> = query
                        .split('&')
                        .map(|kv| match kv.split_once('=') {
                            Some((k, _)) if k.eq_ignore_ascii_case("password") => {
                                format!("{k}=***")
                            }
                            _ => kv.to_string(),
                        })
                        .collect();
                    format!("{path}?{}", query.join("&"))
                }
                None => tail.to_string(),
            };
            format!("{scheme}{authority}{tail}")
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_file_and_errors_name_the_variable() {
        let dir = std::env::temp_dir().join(format!("cc-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("cc.toml");
        std::fs::write(&file, "nats_url = \"nats://10.0.0.1:4222\"\ndemo = true\n").unwrap();
        let c = Config::load_from(Some(&file), |k| {
            (k == "CC_NATS_URL").then(|| "nats://n:1".into())
        })
        .unwrap();
        assert_eq!(c.nats_url, "nats://n:1");
        assert!(c.demo);
        assert_eq!(c.subject_prefix, "cc");

        let e = Config::load_from(None, |k| (k == "CC_DEMO").then(|| "maybe".into())).unwrap_err();
        assert!(e.to_string().contains("CC_DEMO"), "{e}");

        std::fs::write(&file, "nats_ulr = \"x\"\n").unwrap();
        let e = Config::load_from(Some(&file), |_| None).unwrap_err();
        assert!(e.to_string().contains("nats_ulr"), "{e}");
    }

    #[test]
    fn nats_replicas_are_auto_or_one_to_five() {
        let load = |v: &str| {
            let v = v.to_string();
            Config::load_from(None, move |k| (k == "CC_NATS_REPLICAS").then(|| v.clone()))
        };
        assert_eq!(Config::default().nats_replicas, None, "auto by default");
        assert_eq!(load("auto").unwrap().nats_replicas, None);
        assert_eq!(load("3").unwrap().nats_replicas, Some(3));
        assert_eq!(load("1").unwrap().nats_replicas, Some(1));
        for bad in ["0", "6", "three"] {
            let e = load(bad).unwrap_err().to_string();
            assert!(e.contains("CC_NATS_REPLICAS") && e.contains(bad), "{e}");
        }
    }

    #[test]
    fn trusted_proxies_parse_cidrs_and_bare_addresses_and_name_the_variable_at_fault() {
        let c = Config::load_from(None, |k| {
            (k == "CC_TRUSTED_PROXIES").then(|| " 10.0.0.0/8, 192.0.2.7 ,2001:db8::/32".into())
        })
        .unwrap();
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert!(c.trusted_proxies.contains(ip("10.1.2.3")));
        assert!(c.trusted_proxies.contains(ip("192.0.2.7")));
        assert!(!c.trusted_proxies.contains(ip("192.0.2.8")));
        assert!(
            c.trusted_proxies.contains(ip("::ffff:10.9.9.9")),
            "IPv4-mapped"
        );
        assert!(c.trusted_proxies.contains(ip("2001:db8:1::1")));
        assert!(
            !Config::default().trusted_proxies.contains(ip("127.0.0.1")),
            "none by default"
        );

        for bad in ["10.0.0.0/33", "proxy.example.com", "10.0.0.1/8"] {
            let e = Config::load_from(None, |k| (k == "CC_TRUSTED_PROXIES").then(|| bad.into()))
                .unwrap_err()
                .to_string();
            assert!(e.contains("CC_TRUSTED_PROXIES") && e.contains(bad), "{e}");
        }
        let e = Config::load_from(None, |k| {
            (k == "CC_TRUSTED_PROXY_HEADER").then(|| "x-real-ip".into())
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("CC_TRUSTED_PROXY_HEADER"), "{e}");

        // The same list in a file, and back.
        let text = toml::to_string(&c).unwrap();
        let again: Config = toml::from_str(&text).unwrap();
        assert_eq!(again.trusted_proxies, c.trusted_proxies);
        let e = toml::from_str::<Config>("trusted_proxies = [\"10.0.0.0/99\"]").unwrap_err();
        assert!(e.to_string().contains("10.0.0.0/99"), "{e}");
    }

    #[test]
    fn pbx_trunks_parse_with_defaults_and_errors_say_what_is_wrong() {
        let p = parse_pbx("office=127.0.0.2:5080;acme=pbx.acme.example,presence; b=[::1]").unwrap();
        assert_eq!(
            p,
            vec![
                PbxTrunk {
                    tenant: "office".into(),
                    host: "127.0.0.2".into(),
                    port: 5080,
                    presence: PresencePackage::Reg
                },
                PbxTrunk {
                    tenant: "acme".into(),
                    host: "pbx.acme.example".into(),
                    port: 5060,
                    presence: PresencePackage::Presence
                },
                PbxTrunk {
                    tenant: "b".into(),
                    host: "[::1]".into(),
                    port: 5060,
                    presence: PresencePackage::Reg
                },
            ]
        );
        assert!(parse_pbx("").unwrap().is_empty());
        for (bad, says) in [
            ("office", "tenant=host"),
            ("office=1.2.3.4:0", "not a port"),
            ("office=1.2.3.4:99999", "not a port"),
            ("office=1.2.3.4,dialog", "no presence package"),
            ("Office=1.2.3.4", "not a tenant name"),
            ("office=a b", "no IP address or DNS name"),
            ("office=[::1", "closing ]"),
            ("office=1.2.3.4;office=1.2.3.5", "given twice"),
        ] {
            let e = parse_pbx(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let e = Config::load_from(None, |k| (k == "CC_SIP_PBX").then(|| "x".into())).unwrap_err();
        assert!(e.to_string().contains("CC_SIP_PBX"), "{e}");
        let e = Config::load_from(None, |k| {
            (k == "CC_SIP_PBX_SUBSCRIBE_SECS").then(|| "5".into())
        })
        .unwrap_err();
        assert!(e.to_string().contains("CC_SIP_PBX_SUBSCRIBE_SECS"), "{e}");
        // `callcenter config` prints it, and a file may set it the same way.
        let c = Config::load_from(None, |k| {
            (k == "CC_SIP_PBX").then(|| "office=127.0.0.2:5080,presence".into())
        })
        .unwrap();
        let text = c.redacted_toml();
        assert!(text.contains("127.0.0.2"), "{text}");
        let back: Config = toml::from_str(&text).unwrap();
        assert_eq!(back.sip.pbx, c.sip.pbx);
    }

    #[test]
    fn redaction_hides_passwords_only() {
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
    }
}
