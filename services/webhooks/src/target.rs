//! Where a webhook may be sent: `https://` (or `http://` when the subscription allows it), a
//! host that resolves only to public addresses unless the operator allows others (loopback,
//! private, link-local, unique-local, CGNAT, multicast, unspecified are refused: server-side
//! request forgery into the operator's network).

use std::net::IpAddr;

/// Checks a URL; the reason in words when it cannot be used.
pub async fn check(
    url: &str,
    allow_http: bool,
    allow_private: bool,
) -> Result<reqwest::Url, String> {
    if url.len() > 2000 {
        return Err("the URL is longer than 2000 characters".into());
    }
    let u = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    match u.scheme() {
        "https" => {}
        "http" if allow_http => {}
        "http" => {
            return Err(
                "the URL must be https:// (http:// only with allow_http, for testing)".into(),
            )
        }
        s => return Err(format!("{s}: is not http(s)")),
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err("the URL must not hold credentials".into());
    }
    let host = u.host_str().ok_or("the URL has no host")?.to_string();
    let port = u.port_or_known_default().unwrap_or(443);
    let addrs: Vec<IpAddr> = tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| format!("{host} cannot be resolved: {e}"))?
        .map(|a| a.ip())
        .collect();
    if addrs.is_empty() {
        return Err(format!("{host} resolves to no address"));
    }
    if !allow_private {
        if let Some(a) = addrs.iter().find(|a| !public(a)) {
            return Err(format!(
                "{host} resolves to {a}, which is not a public address (the operator can allow that with CC_WEBHOOK_ALLOW_PRIVATE)"
            ));
        }
    }
    Ok(u)
}

/// Whether an address is on the public Internet.
pub fn public(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || (o[0] == 198 && (o[1] == 18 || o[1] == 19))
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return public(&IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x2001 && s[1] == 0x0db8))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_public_https_targets_unless_allowed() {
        assert!(check("https://127.0.0.1/hook", false, false)
            .await
            .unwrap_err()
            .contains("not a public address"));
        assert!(check("https://10.1.2.3/hook", false, false).await.is_err());
        assert!(check("https://169.254.169.254/latest", false, false)
            .await
            .is_err());
        assert!(check("https://[::1]/hook", false, false).await.is_err());
        assert!(check("http://127.0.0.1:9/hook", false, true)
            .await
            .unwrap_err()
            .contains("https"));
        assert!(check("http://127.0.0.1:9/hook", true, true).await.is_ok());
        assert!(check("ftp://example.com/", false, true).await.is_err());
        assert!(check("https://user:pw@127.0.0.1/", false, true)
            .await
            .is_err());
        assert!(public(&"93.184.216.34".parse().unwrap()));
        assert!(!public(&"100.64.0.1".parse().unwrap()));
        assert!(!public(&"::ffff:192.168.1.1".parse().unwrap()));
    }
}
