//! The portal's edge against a hostile client: forwarding headers believed only from a trusted
//! proxy, a sign-in throttle that neither a forged address nor a flood of failures can turn
//! against an office, pruning of what the throttle and the sessions leave behind, and the
//! browser hardening headers of every page.
//!
//! Every address of 127.0.0.0/8 is the local machine, so a test client bound to 127.0.0.2 is
//! "another office" to the portal, with no proxy involved.

use std::net::IpAddr;
use std::time::Duration;

use cc_testkit::eventually;
use serde_json::{json, Value};

use crate::process::Callcenter;
use crate::system::System;
use crate::tenant::{Tenant, TenantSpec};

/// The system with extra settings and a tenant of the test's, its database at hand.
struct Site {
    _sys: System,
    t: Tenant,
    db_pool: sqlx::PgPool,
    portal: String,
}

impl Site {
    async fn start(env: &[(&str, &str)]) -> Site {
        let sys = System::start_with_env(env).await;
        // Its agents exist before anyone signs in: the throttle counts no failure of the set-up.
        let t = sys.tenant(TenantSpec::call_center()).await;
        Site {
            db_pool: sys.db.pool.clone(),
            portal: sys.portal.clone(),
            _sys: sys,
            t,
        }
    }

    /// The password of an agent of the site's tenant.
    fn pw(&self, agent: &str) -> String {
        self.t.password(agent)
    }

    /// Signs in from `client` with extra headers: (status, body, Set-Cookie).
    async fn login(
        &self,
        client: &reqwest::Client,
        agent: &str,
        password: &str,
        headers: &[(&str, &str)],
    ) -> (u16, Value, String) {
        let mut req = client
            .post(format!("{}/api/login", self.portal))
            .header("X-Tenant", &self.t.name)
            .json(&json!({"agent_number": agent, "password": password}));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let Ok(r) = req.send().await else {
            return (503, Value::Null, String::new());
        };
        let status = r.status().as_u16();
        let cookie = r
            .headers()
            .get("set-cookie")
            .map(|c| c.to_str().unwrap().to_string())
            .unwrap_or_default();
        (status, r.json().await.unwrap_or(Value::Null), cookie)
    }

    /// Asserts a sign-in outcome: 200, or the error code with its status.
    #[track_caller]
    fn expect(&self, got: (u16, Value, String), want: u16, why: &str) -> (Value, String) {
        assert_eq!(got.0, want, "{why}: {}", got.1);
        if want == 429 {
            assert_eq!(got.1["error"], "too_many_attempts", "{why}: {}", got.1);
        }
        (got.1, got.2)
    }

    async fn throttle_keys(&self) -> Vec<(String, i32)> {
        sqlx::query_as("select key, failures from auth_throttle order by key")
            .fetch_all(&self.db_pool)
            .await
            .unwrap()
    }
}

/// A client whose connections come from `ip` (a loopback address).
fn client_from(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from(ip))
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_forged_forwarded_for_neither_locks_an_office_out_nor_walks_past_the_address_limit() {
    let site = Site::start(&[]).await;
    let attacker = client_from([127, 0, 0, 1]);
    let office = client_from([127, 0, 0, 2]);
    let forged = [("X-Forwarded-For", "198.51.100.7")];

    // An agent who works behind the attacker's address signed in from there before.
    let r = site.login(&attacker, "1004", &site.pw("1004"), &[]).await;
    site.expect(r, 200, "1004 from its usual address");

    // 20 failures claiming to come from the office's address, with no proxy in between.
    for n in 2001..2021 {
        let r = site
            .login(&attacker, &n.to_string(), "guess", &forged)
            .await;
        site.expect(r, 401, "a wrong guess");
    }
    let r = site.login(&office, "1002", &site.pw("1002"), &forged).await;
    site.expect(
        r,
        200,
        "the office's agent, whose address the attacker named",
    );
    assert!(
        site.throttle_keys()
            .await
            .iter()
            .all(|(k, _)| !k.contains("198.51.100.7")),
        "the forged address counts nowhere: {:?}",
        site.throttle_keys().await
    );

    // A new forged address for every guess does not walk past the per-address limit: the
    // address has had its 20 failures.
    for n in 2101..2106 {
        let rotated = format!("203.0.113.{}", n - 2100);
        let r = site
            .login(
                &attacker,
                &n.to_string(),
                "guess",
                &[("X-Forwarded-For", &rotated)],
            )
            .await;
        site.expect(r, 429, "a guess with a new forged address");
    }
    let r = site
        .login(
            &attacker,
            "1003",
            &site.pw("1003"),
            &[("X-Forwarded-For", "192.0.2.99")],
        )
        .await;
    let (body, _) = site.expect(
        r,
        429,
        "an account never signed in from the spraying address",
    );
    assert!(
        body["message"].as_str().unwrap().contains("try again in"),
        "{body}"
    );
    // Those who work behind that address are not locked out by it.
    let r = site.login(&attacker, "1004", &site.pw("1004"), &[]).await;
    site.expect(r, 200, "1004 from its usual address, after the spraying");
    let r = site.login(&office, "1003", &site.pw("1003"), &[]).await;
    site.expect(r, 200, "1003 from another address");
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_is_counted_and_https_makes_the_cookie_secure()
{
    let site = Site::start(&[("CC_TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    let proxy = client_from([127, 0, 0, 1]);
    let direct = client_from([127, 0, 0, 2]);

    // The client wrote the left entry itself; the proxy appended the address it saw.
    let via = |xff: &'static str| [("X-Forwarded-For", xff)];
    for _ in 0..5 {
        let r = site
            .login(&proxy, "1001", "guess", &via("203.0.113.50, 198.51.100.7"))
            .await;
        site.expect(r, 401, "a wrong guess through the proxy");
    }
    let r = site
        .login(&proxy, "1001", &site.pw("1001"), &via("198.51.100.7"))
        .await;
    site.expect(r, 429, "the guesser, even with the right password");
    let r = site
        .login(
            &proxy,
            "1001",
            &site.pw("1001"),
            &via("198.51.100.7, 127.0.0.1"),
        )
        .await;
    site.expect(r, 429, "the guesser through a second trusted proxy");
    let r = site
        .login(&proxy, "1001", &site.pw("1001"), &via("198.51.100.8"))
        .await;
    site.expect(
        r,
        200,
        "the agent from another client behind the same proxy",
    );
    let r = site
        .login(&proxy, "1001", &site.pw("1001"), &via("203.0.113.50"))
        .await;
    site.expect(r, 200, "the address the client forged was never counted");
    let keys = site.throttle_keys().await;
    assert!(
        keys.contains(&("pair:agent:1001@198.51.100.7".to_string(), 5))
            && !keys.iter().any(|(k, _)| k.contains("203.0.113.50")
                || k.ends_with("@127.0.0.1")
                || k == "addr:127.0.0.1"),
        "counted against the forwarded client only: {keys:?}"
    );
    // A connection that is not the proxy: its header counts for nothing.
    let r = site
        .login(&direct, "1002", "guess", &via("198.51.100.9"))
        .await;
    site.expect(r, 401, "a wrong guess from a client");
    let keys = site.throttle_keys().await;
    assert!(
        keys.iter().any(|(k, _)| k == "addr:127.0.0.2")
            && !keys.iter().any(|(k, _)| k.contains("198.51.100.9")),
        "{keys:?}"
    );

    // The session cookie is Secure when the client reached the proxy over https, and only then.
    let https = [
        ("X-Forwarded-For", "198.51.100.20"),
        ("X-Forwarded-Proto", "https"),
    ];
    let (_, cookie) = site.expect(
        site.login(&proxy, "1003", &site.pw("1003"), &https).await,
        200,
        "over https",
    );
    assert!(cookie.contains("; Secure"), "{cookie}");
    let (_, cookie) = site.expect(
        site.login(&proxy, "1003", &site.pw("1003"), &via("198.51.100.20"))
            .await,
        200,
        "over http",
    );
    assert!(!cookie.contains("Secure"), "{cookie}");
    let (_, cookie) = site.expect(
        site.login(&direct, "1003", &site.pw("1003"), &https).await,
        200,
        "a client claiming https itself",
    );
    assert!(!cookie.contains("Secure"), "{cookie}");
}

#[tokio::test]
async fn a_bad_trusted_proxy_list_stops_the_start_naming_the_variable() {
    let out = Callcenter::command("postgres://nowhere", "nats://127.0.0.1:1", &["config"])
        .env("CC_TRUSTED_PROXIES", "10.0.0.0/8, proxy.internal")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("CC_TRUSTED_PROXIES") && err.contains("proxy.internal"),
        "{err}"
    );
}

#[tokio::test]
async fn expired_sessions_and_old_throttle_rows_are_pruned_in_batches() {
    let site = Site::start(&[("CC_AUTH_PRUNE_SECS", "1")]).await;
    let c = client_from([127, 0, 0, 1]);
    let pool = &site.db_pool;
    let (kept, _) = site.expect(
        site.login(&c, "1001", &site.pw("1001"), &[]).await,
        200,
        "1001",
    );
    let (expired, _) = site.expect(
        site.login(&c, "1002", &site.pw("1002"), &[]).await,
        200,
        "1002",
    );
    let (ended, _) = site.expect(
        site.login(&c, "1003", &site.pw("1003"), &[]).await,
        200,
        "1003",
    );
    let signout = c
        .post(format!("{}/api/signout", site.portal))
        .header("X-Tenant", &site.t.name)
        .bearer_auth(ended["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(signout.status(), 204);
    site.expect(
        site.login(&c, "2001", "guess", &[]).await,
        401,
        "old failure",
    );
    site.expect(
        site.login(&c, "2002", "guess", &[]).await,
        401,
        "new failure",
    );

    let exec = |sql: &'static str| async move {
        sqlx::query(sql).execute(pool).await.unwrap();
    };
    exec("update auth_sessions set expires_at = now() - interval '1 minute' where principal = '1002'").await;
    exec("update auth_throttle set first_failure_at = now() - interval '16 minutes' where key like '%2001%'").await;
    exec("update auth_known_clients set last_success_at = now() - interval '31 days' where account = 'agent:1002'").await;
    // More than one batch of expired sessions.
    sqlx::query(
        "insert into auth_sessions (token_hash, session_id, tenant, principal, role, display_name, expires_at)
         select decode(md5('old' || i), 'hex'), gen_random_uuid(), $1, '1005', 'agent', 'Old', now() - interval '1 day'
           from generate_series(1, 2500) i",
    )
    .bind(&site.t.name)
    .execute(pool)
    .await
    .unwrap();

    let count = |sql: &'static str| async move {
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(pool)
            .await
            .unwrap()
    };
    eventually("pruned", Duration::from_secs(30), || async {
        (count(
            "select count(*) from auth_sessions where expires_at < now() or revoked_at is not null",
        )
        .await
            == 0
            && count("select count(*) from auth_throttle where key like '%2001%'").await == 0
            && count("select count(*) from auth_known_clients where account = 'agent:1002'").await
                == 0)
            .then_some(())
    })
    .await;
    // What is still in use stays.
    let live: Vec<String> = sqlx::query_scalar("select principal from auth_sessions order by 1")
        .fetch_all(pool)
        .await
        .unwrap();
    assert!(
        live.contains(&"1001".to_string()) && !live.contains(&"1002".to_string()),
        "{live:?}"
    );
    assert_eq!(
        count("select count(*) from auth_throttle where key like '%2002%'").await,
        2,
        "the failure in its window (per account and per account from the address)"
    );
    assert_eq!(
        count("select count(*) from auth_known_clients where account = 'agent:1001'").await,
        1
    );
    let me = |token: &Value| {
        c.get(format!("{}/api/me", site.portal))
            .header("X-Tenant", &site.t.name)
            .bearer_auth(token["token"].as_str().unwrap().to_string())
            .send()
    };
    assert_eq!(me(&kept).await.unwrap().status(), 200);
    assert_eq!(me(&expired).await.unwrap().status(), 401);
}

/// The pages, their scripts and styles: (URL, whether it is an HTML page).
fn pages(sys: &System, tenant: &str) -> Vec<(String, bool)> {
    let p = &sys.portal;
    let x = &sys.pbx;
    vec![
        (format!("{p}/"), true),
        (format!("{p}/supervisor"), true),
        (format!("{p}/admin"), true),
        (format!("{p}/api/docs"), true),
        (format!("{x}/phone?tenant={tenant}"), true),
        (format!("{x}/"), true),
        (format!("{p}/app.js"), false),
        (format!("{p}/api/openapi.json"), false),
        (format!("{p}/api/me"), false),
        (format!("{p}/no/such/page"), false),
    ]
}

#[tokio::test]
async fn every_page_sends_the_hardening_headers_and_has_no_inline_script_or_style() {
    let sys = System::start().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    for (url, html) in pages(&sys, &t.name) {
        let r = sys
            .http
            .get(&url)
            .header("X-Tenant", &t.name)
            .send()
            .await
            .unwrap();
        let h = |name: &str| {
            r.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default()
        };
        let csp = h("content-security-policy");
        let directives: Vec<&str> = csp.split(';').map(str::trim).collect();
        for d in [
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
            "object-src 'none'",
        ] {
            assert!(directives.contains(&d), "{url}: {d} in {csp:?}");
        }
        assert!(!csp.contains("unsafe"), "{url}: {csp}");
        assert_eq!(h("x-content-type-options"), "nosniff", "{url}");
        assert_eq!(h("referrer-policy"), "no-referrer", "{url}");
        assert_eq!(h("x-frame-options"), "DENY", "{url}");
        if !html {
            continue;
        }
        assert_eq!(r.status(), 200, "{url}");
        let base = url[..url[8..].find('/').unwrap() + 8].to_string();
        let body = r.text().await.unwrap();
        let lower = body.to_lowercase();
        // Every <script> loads a file; no handler attributes, no style attributes or blocks.
        for (i, _) in lower.match_indices("<script") {
            let tag = &lower[i..i + lower[i..].find('>').unwrap()];
            assert!(tag.contains(" src="), "{url}: inline script {tag}");
            assert!(
                lower[i..]
                    .trim_start_matches(|c| c != '>')
                    .starts_with("></script>"),
                "{url}: script body"
            );
        }
        let attr = attribute_names(&lower);
        assert!(
            !attr.iter().any(|a| a.starts_with("on") || a == "style"),
            "{url}: {attr:?}"
        );
        assert!(!lower.contains("<style"), "{url}: a <style> block");
        assert!(!lower.contains("javascript:"), "{url}");
        // The files the page loads are there, with the same headers.
        for (i, _) in lower
            .match_indices(" src=\"/")
            .chain(lower.match_indices(" href=\"/"))
        {
            let start = i + lower[i..].find('"').unwrap() + 1;
            let path = &body[start..start + body[start..].find('"').unwrap()];
            let r = sys.http.get(format!("{base}{path}")).send().await.unwrap();
            assert_eq!(r.status(), 200, "{url} loads {path}");
            assert_eq!(
                r.headers()["x-content-type-options"],
                "nosniff",
                "{url} loads {path}"
            );
        }
    }
}

/// The attribute names of every tag in an HTML text (good enough for our own pages).
fn attribute_names(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find('<') {
        rest = &rest[i + 1..];
        let end = rest.find('>').unwrap_or(rest.len());
        let tag = &rest[..end];
        if !tag.starts_with(|c: char| c.is_ascii_alphabetic()) {
            continue;
        }
        // Skip the tag name, then read name[=value] pairs, values quoted or bare.
        let mut chars = tag
            .char_indices()
            .skip_while(|(_, c)| !c.is_whitespace())
            .peekable();
        let mut name = String::new();
        while let Some((_, c)) = chars.next() {
            match c {
                '=' => {
                    out.push(std::mem::take(&mut name));
                    match chars.peek().map(|(_, c)| *c) {
                        Some(q @ ('"' | '\'')) => {
                            chars.next();
                            for (_, c) in chars.by_ref() {
                                if c == q {
                                    break;
                                }
                            }
                        }
                        _ => {
                            while chars.peek().is_some_and(|(_, c)| !c.is_whitespace()) {
                                chars.next();
                            }
                        }
                    }
                }
                c if c.is_whitespace() || c == '/' => {
                    if !name.is_empty() {
                        out.push(std::mem::take(&mut name));
                    }
                }
                c => name.push(c),
            }
        }
        if !name.is_empty() {
            out.push(name);
        }
    }
    out
}
