use std::path::Path;

use serde::{Deserialize, Serialize};

/// The configuration of one process. Every field has a default that works on a laptop.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// PostgreSQL, the event store and read models. `CC_DATABASE_URL`.
    pub database_url: String,
    /// NATS with JetStream (>= 2.10). `CC_NATS_URL`.
    pub nats_url: String,
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
    /// The SIP gateway (target `sip-gateway`); see [`SipConfig`].
    pub sip: SipConfig,
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
            subject_prefix: "cc".into(),
            admin_addr: "127.0.0.1:9464".into(),
            portal_addr: "127.0.0.1:8080".into(),
            pbx_sim_addr: "127.0.0.1:8090".into(),
            base_domain: "localhost".into(),
            demo: false,
            log_format: LogFormat::Human,
            log: "info,rsipstack=warn".into(),
            shutdown_grace_secs: 20,
            database_max_connections: 20,
            trusted_proxies: Networks::default(),
            trusted_proxy_header: ProxyHeader::default(),
            auth_prune_secs: 300,
            sip: SipConfig::default(),
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
    ("CC_AUTH_PRUNE_SECS", |c, v| {
        parse(&mut c.auth_prune_secs, v)?;
        if c.auth_prune_secs == 0 {
            return Err("must be at least 1".into());
        }
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
        toml::to_string_pretty(&c).expect("config serializes")
    }
}

fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
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
    fn redaction_hides_passwords_only() {
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
    }
}
