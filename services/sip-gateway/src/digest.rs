//! HTTP digest authentication as SIP phones speak it (RFC 2617 / RFC 8760, MD5): the registrar
//! stores only HA1 = MD5(user:realm:password), issues nonces it can check without storing them,
//! and verifies a response against HA1. The Authorization header is parsed by the SIP stack.

use md5::{Digest, Md5};
use rsipstack::sip::headers::auth::AuthQop;
use rsipstack::sip::typed::Authorization;

/// How long a nonce is accepted (seconds); older ones get a fresh challenge with `stale=true`.
pub const NONCE_LIFETIME_SECS: i64 = 300;

fn md5_hex(s: &str) -> String {
    let d = Md5::digest(s.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// HA1 of a user's password in a realm: what the registrar keeps instead of the password.
pub fn ha1(user: &str, realm: &str, password: &str) -> String {
    md5_hex(&format!("{user}:{realm}:{password}"))
}

/// Makes and checks nonces: `<unix seconds>.<MD5(secret:seconds:realm)>`, so any replica with
/// the same secret accepts them and nothing is stored per challenge.
#[derive(Clone)]
pub struct Nonces {
    secret: String,
}

/// The outcome of checking a digest response.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Valid,
    /// The response was right but the nonce is too old: challenge again with `stale=true`.
    Stale,
    Invalid,
}

impl Nonces {
    pub fn new(secret: impl Into<String>) -> Self {
        Self {
            secret: secret.into(),
        }
    }

    pub fn issue(&self, realm: &str, now: i64) -> String {
        format!(
            "{now}.{}",
            md5_hex(&format!("{}:{now}:{realm}", self.secret))
        )
    }

    /// Whether `nonce` is one of ours for `realm`, and whether it is still fresh.
    fn check(&self, nonce: &str, realm: &str, now: i64) -> Option<bool> {
        let (ts, mac) = nonce.split_once('.')?;
        let issued: i64 = ts.parse().ok()?;
        if mac != md5_hex(&format!("{}:{issued}:{realm}", self.secret)) || issued > now + 5 {
            return None;
        }
        Some(now - issued <= NONCE_LIFETIME_SECS)
    }

    /// Verifies a digest response. `raw_uri` is the `uri` parameter as the phone wrote it (the
    /// hash covers its exact text).
    pub fn verify(
        &self,
        auth: &Authorization,
        raw_uri: &str,
        method: &str,
        realm: &str,
        ha1: &str,
        now: i64,
    ) -> Verdict {
        if auth.realm != realm {
            return Verdict::Invalid;
        }
        let Some(fresh) = self.check(&auth.nonce, realm, now) else {
            return Verdict::Invalid;
        };
        let ha2 = md5_hex(&format!("{method}:{raw_uri}"));
        let expected = match &auth.qop {
            None => md5_hex(&format!("{ha1}:{}:{ha2}", auth.nonce)),
            Some(AuthQop::Auth { cnonce, nc }) => md5_hex(&format!(
                "{ha1}:{}:{nc:08x}:{cnonce}:auth:{ha2}",
                auth.nonce
            )),
            // auth-int covers the body; phones do not use it for REGISTER or INVITE.
            Some(AuthQop::AuthInt { .. }) => return Verdict::Invalid,
        };
        if !expected.eq_ignore_ascii_case(&auth.response) {
            Verdict::Invalid
        } else if fresh {
            Verdict::Valid
        } else {
            Verdict::Stale
        }
    }

    /// The value of a `WWW-Authenticate` / `Proxy-Authenticate` challenge.
    pub fn challenge(&self, realm: &str, now: i64, stale: bool) -> String {
        let nonce = self.issue(realm, now);
        let stale = if stale { ", stale=true" } else { "" };
        format!("Digest realm=\"{realm}\", nonce=\"{nonce}\", algorithm=MD5, qop=\"auth\"{stale}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authorization(
        user: &str,
        realm: &str,
        nonce: &str,
        uri: &str,
        response: &str,
        qop: Option<(&str, u8)>,
    ) -> Authorization {
        let qop = qop
            .map(|(c, nc)| format!(", qop=auth, cnonce=\"{c}\", nc={nc:08x}"))
            .unwrap_or_default();
        Authorization::parse(&format!(
            "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\", algorithm=MD5{qop}"
        ))
        .expect("parses")
    }

    #[test]
    fn a_right_password_verifies_and_a_wrong_one_does_not() {
        let n = Nonces::new("s3cret");
        let (realm, uri) = ("office.localhost", "sip:office.localhost");
        let nonce = n.issue(realm, 1000);
        let h = ha1("1001", realm, "pw");
        // RFC 2617 with qop=auth, computed the way a phone does.
        let ha2 = md5_hex(&format!("REGISTER:{uri}"));
        let good = md5_hex(&format!("{h}:{nonce}:00000001:abc:auth:{ha2}"));
        let a = authorization("1001", realm, &nonce, uri, &good, Some(("abc", 1)));
        assert_eq!(
            n.verify(&a, uri, "REGISTER", realm, &h, 1010),
            Verdict::Valid
        );
        assert_eq!(
            n.verify(
                &a,
                uri,
                "REGISTER",
                realm,
                &ha1("1001", realm, "other"),
                1010
            ),
            Verdict::Invalid
        );
        assert_eq!(
            n.verify(
                &a,
                uri,
                "REGISTER",
                realm,
                &h,
                1000 + NONCE_LIFETIME_SECS + 1
            ),
            Verdict::Stale
        );
        assert_eq!(
            n.verify(&a, uri, "REGISTER", "other.localhost", &h, 1010),
            Verdict::Invalid
        );
        // Without qop (RFC 2069 style).
        let plain = md5_hex(&format!("{h}:{nonce}:{ha2}"));
        let a = authorization("1001", realm, &nonce, uri, &plain, None);
        assert_eq!(
            n.verify(&a, uri, "REGISTER", realm, &h, 1010),
            Verdict::Valid
        );
    }

    #[test]
    fn forged_nonces_are_refused() {
        let n = Nonces::new("s3cret");
        let realm = "office.localhost";
        let h = ha1("1001", realm, "pw");
        let forged = "1000.00000000000000000000000000000000";
        let ha2 = md5_hex("REGISTER:sip:x");
        let resp = md5_hex(&format!("{h}:{forged}:{ha2}"));
        let a = authorization("1001", realm, forged, "sip:x", &resp, None);
        assert_eq!(
            n.verify(&a, "sip:x", "REGISTER", realm, &h, 1010),
            Verdict::Invalid
        );
        assert_eq!(
            Nonces::new("other").check(&n.issue(realm, 5), realm, 6),
            None
        );
    }
}
