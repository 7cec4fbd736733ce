//! NATS and PostgreSQL over TLS with client certificates, the certificates made by the test
//! (`openssl`): the product connects and works; without its certificate, or trusting the
//! wrong CA, it is refused and `/readyz` says why.

use std::path::Path;
use std::time::Duration;

use cc_testkit::tls::{Certs, PgServer};
use cc_testkit::{eventually, free_port, NatsServer, NatsSetup};
use serde_json::{json, Value};
use sqlx::ConnectOptions;

use crate::process::Callcenter;
use crate::system::{Custom, System};
use crate::tenant::TenantSpec;

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// What `/readyz` says is missing once `dependency` is, with a reason.
async fn missing(app: &Callcenter, dependency: &str) -> String {
    let http = reqwest::Client::new();
    eventually(
        &format!("/readyz to say why {dependency} is missing"),
        Duration::from_secs(30),
        || async {
            let r = http.get(app.admin("/readyz")).send().await.ok()?;
            let status = r.status();
            let body: Value = r.json().await.ok()?;
            let why = body["missing"][dependency].as_str()?.to_string();
            (status == 503 && !why.is_empty() && why != "not connected yet").then_some(why)
        },
    )
    .await
}

#[tokio::test]
async fn nats_over_tls_with_a_client_certificate_works_and_without_one_or_the_right_ca_is_refused()
{
    let certs = Certs::generate("callcenter");
    let tls_env = |ca: &Path, with_cert: bool| {
        let mut env = vec![("CC_NATS_CA_FILE".to_string(), path(ca))];
        if with_cert {
            env.push(("CC_NATS_CERT_FILE".into(), path(&certs.client_cert)));
            env.push(("CC_NATS_KEY_FILE".into(), path(&certs.client_key)));
        }
        env
    };
    let sys = System::start_custom(Custom {
        nats: NatsSetup::tls(&certs),
        env: tls_env(&certs.ca, true),
        ..Custom::default()
    })
    .await;
    assert!(sys.nats.url().starts_with("tls://127.0.0.1:"));
    // Every service connected over TLS: a tenant is made, an agent signs in, logs in and pauses.
    let t = sys.tenant(TenantSpec::call_center()).await;
    let agent = t.idle_agent("1001").await;
    agent
        .post("/api/session/pause", json!({"reason": "Lunch"}))
        .await
        .ok();
    sys.view_when(&agent, "Paused", |v| v["status"] == "paused")
        .await;

    // The same product without a client certificate, or trusting another CA: refused.
    for (what, env, expected) in [
        (
            "no client certificate",
            tls_env(&certs.ca, false),
            "CertificateRequired",
        ),
        (
            "the wrong CA",
            tls_env(&certs.other_ca, true),
            "invalid peer certificate: UnknownIssuer",
        ),
    ] {
        let app = Callcenter::spawn_with(
            &sys.db.url,
            &sys.nats.url(),
            &["run", "--target", "projection"],
            |c| {
                c.envs(sys.service_nats_env())
                    .envs(env)
                    .env("CC_SUBJECT_PREFIX", &sys.prefix);
            },
        );
        let why = missing(&app, "nats").await;
        eprintln!("{what}: /readyz says {why}");
        assert!(why.contains(expected), "{what}: {why}");
    }
    // A plain connection to the TLS port: refused too (the server requires TLS).
    let plain = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(3))
        .connect(format!("nats://127.0.0.1:{}", sys.nats.nodes[0].port))
        .await;
    assert!(plain.is_err(), "a plain connection was accepted");
}

/// The URL of the product's database on `pg` with the TLS parameters.
fn tls_url(pg: &PgServer, certs: &Certs, ca: &Path, with_cert: bool) -> String {
    let mut url = format!(
        "postgres://postgres@127.0.0.1:{}/callcenter?sslmode=verify-full&sslrootcert={}",
        pg.port,
        path(ca)
    );
    if with_cert {
        url.push_str(&format!(
            "&sslcert={}&sslkey={}",
            path(&certs.client_cert),
            path(&certs.client_key)
        ));
    }
    url
}

#[tokio::test]
async fn postgres_over_tls_with_a_client_certificate_migrates_and_serves_and_plain_is_refused() {
    let certs = Certs::generate("postgres");
    let pg = PgServer::start_tls(&certs);
    let nats = NatsServer::start();
    let url = tls_url(&pg, &certs, &certs.ca, true);
    let portal_port = free_port();
    let app = Callcenter::spawn_with(&url, &nats.url(), &["run"], |c| {
        c.env("CC_DEMO", "true")
            .env("CC_PORTAL_ADDR", format!("127.0.0.1:{portal_port}"));
    });
    let http = reqwest::Client::new();
    eventually("/readyz 200", Duration::from_secs(60), || async {
        let r = http.get(app.admin("/readyz")).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    // It serves: a demo agent signs in (the database was created, migrated and seeded over TLS).
    // Demo mode on purpose: this process is no `System` (its own PostgreSQL and a plain
    // nats-server), and the demo seed is what writes through the TLS connection at start.
    eventually("a demo agent signs in", Duration::from_secs(60), || async {
        let r = http
            .post(format!("http://127.0.0.1:{portal_port}/api/login"))
            .header("X-Tenant", "demo")
            .json(&json!({"agent_number": "1001", "password": "demo1001"}))
            .send()
            .await
            .ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    let opts: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let mut conn = opts.connect().await.unwrap();
    let migrations: i64 =
        sqlx::query_scalar("select count(*) from cc_migrations where component = 'eventstore'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert!(migrations >= 2);
    // Every connection of the product is encrypted (the server would refuse others anyway).
    let (all, encrypted): (i64, i64) = sqlx::query_as(
        "select count(*), count(*) filter (where s.ssl) from pg_stat_activity a
         join pg_stat_ssl s using (pid) where a.datname = 'callcenter' and a.pid <> pg_backend_pid()",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(all > 0 && encrypted == all, "{encrypted} of {all} over TLS");

    // A plain connection is refused by the server; so is one without a client certificate.
    let plain = format!(
        "postgres://postgres@127.0.0.1:{}/callcenter?sslmode=disable",
        pg.port
    );
    let e = plain
        .parse::<sqlx::postgres::PgConnectOptions>()
        .unwrap()
        .connect()
        .await
        .expect_err("a plain connection was accepted");
    assert!(e.to_string().contains("no encryption"), "{e}");
    let e = tls_url(&pg, &certs, &certs.ca, false)
        .parse::<sqlx::postgres::PgConnectOptions>()
        .unwrap()
        .connect()
        .await
        .expect_err("a connection without a client certificate was accepted");
    assert!(e.to_string().contains("certificate"), "{e}");

    // The product trusting another CA: refused, and /readyz says why.
    let wrong = Callcenter::spawn(
        &tls_url(&pg, &certs, &certs.other_ca, true),
        &nats.url(),
        &["run", "--target", "projection"],
    );
    let why = missing(&wrong, "postgres").await;
    assert!(
        why.contains("invalid peer certificate: UnknownIssuer"),
        "{why}"
    );
    // And without a certificate of its own.
    let without = Callcenter::spawn(
        &tls_url(&pg, &certs, &certs.ca, false),
        &nats.url(),
        &["run", "--target", "projection"],
    );
    let why = missing(&without, "postgres").await;
    assert!(
        why.contains("connection requires a valid client certificate"),
        "{why}"
    );
}
