//! Connecting to PostgreSQL and NATS: wait and retry with a clear log line, never crash-loop
//! silently; `/readyz` names what is missing meanwhile.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use tokio_util::sync::CancellationToken;

use crate::config::redact_url as redact;
use crate::{Config, Readiness};

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((250u64 << attempt.min(4)).min(5000))
}

/// Connects to PostgreSQL, creating the database when it does not exist. `None` if cancelled.
pub async fn postgres(
    config: &Config,
    readiness: &Readiness,
    cancel: &CancellationToken,
) -> anyhow::Result<Option<PgPool>> {
    readiness.expect("postgres");
    let opts: PgConnectOptions = config.database_url.parse().map_err(|e| {
        anyhow::anyhow!("database_url (CC_DATABASE_URL) is not a PostgreSQL URL: {e}")
    })?;
    // Catch-up readers read below the oldest running transaction of the whole cluster: a
    // client stuck inside a transaction must not stall them for long.
    let opts = opts.options([("idle_in_transaction_session_timeout", "30000")]);
    let mut attempt = 0;
    loop {
        // A standby is refused by name (the pool alone would report only its timeout).
        if let Ok(mut probe) = opts.connect().await {
            if refuse_read_only(&mut probe).await.is_err() {
                attempt += 1;
                readiness.down("postgres", READ_ONLY);
                tracing::warn!(
                    attempt,
                    "{READ_ONLY}; retrying ({})",
                    redact(&config.database_url)
                );
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(backoff(attempt)) => {}
                }
                continue;
            }
        }
        let pool = PgPoolOptions::new()
            .max_connections(config.database_max_connections)
            .acquire_timeout(Duration::from_secs(5))
            // No round trip to test a pooled connection before each use (it doubled the round
            // trips of every query under load). A connection that died fails its query; the
            // services retry or restart their loop, and the pool replaces it.
            .test_before_acquire(false)
            // Only the primary: a standby (or a demoted primary after a failover) accepts no
            // writes, so a connection to one is refused and the pool tries again until the
            // address (a proxy, a DNS name, a managed service's endpoint) leads to the primary.
            .after_connect(|conn, _| Box::pin(async move { refuse_read_only(conn).await }))
            .connect_with(opts.clone())
            .await;
        match pool {
            Ok(pool) => {
                readiness.ready("postgres");
                tracing::info!(
                    database = opts.get_database().unwrap_or(""),
                    "connected to PostgreSQL"
                );
                return Ok(Some(pool));
            }
            Err(e) if is_missing_database(&e) => {
                let name = opts.get_database().unwrap_or("callcenter").to_string();
                tracing::info!(database = %name, "creating the database");
                let mut admin = opts.clone().database("postgres").connect().await?;
                let q = format!("create database \"{}\"", name.replace('"', ""));
                if let Err(e) = sqlx::query(&q).execute(&mut admin).await {
                    tracing::warn!(error = %e, "could not create the database (another process may have)");
                }
                continue;
            }
            Err(e) => {
                attempt += 1;
                readiness.down("postgres", e.to_string());
                tracing::warn!(attempt, error = %e, "waiting for PostgreSQL ({}); retrying", redact(&config.database_url));
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(None),
            _ = tokio::time::sleep(backoff(attempt)) => {}
        }
    }
}

/// Why a server is no place for the product's writes: it is read-only (a standby, or
/// `default_transaction_read_only` on).
pub const READ_ONLY: &str =
    "the PostgreSQL server is read-only (a standby?): the product needs the primary";

async fn refuse_read_only(conn: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    let read_only: String = sqlx::query_scalar("show transaction_read_only")
        .fetch_one(&mut *conn)
        .await?;
    if read_only == "on" {
        return Err(sqlx::Error::Configuration(READ_ONLY.into()));
    }
    Ok(())
}

fn is_missing_database(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("3D000"))
}

/// Who a NATS connection is: a user and its password (see [`crate::NatsAuth`]).
#[derive(Clone, PartialEq, Eq)]
pub struct NatsIdentity {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for NatsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NatsIdentity({})", self.user)
    }
}

impl NatsIdentity {
    /// The identity of the process as a whole: `CC_NATS_USER` / `CC_NATS_PASSWORD`.
    pub fn of_process(config: &Config) -> Option<NatsIdentity> {
        (!config.nats.user.is_empty()).then(|| NatsIdentity {
            user: config.nats.user.clone(),
            password: config.nats.password.clone(),
        })
    }

    /// The identity of one target: the process's if set, else the target's own user with the
    /// password of `CC_NATS_PASSWORD_<TARGET>` (`env` reads the environment), else none.
    pub fn of_target(
        config: &Config,
        target: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Option<NatsIdentity> {
        Self::of_process(config).or_else(|| {
            env(&cc_bus::permissions::password_var(target)).map(|password| NatsIdentity {
                user: target.to_string(),
                password,
            })
        })
    }
}

/// The connect options of an identity with the TLS settings of `config`: user and password,
/// the user's own reply-inbox prefix (its permissions allow no other), the CA and client
/// certificate.
pub fn nats_options(
    config: &Config,
    identity: Option<&NatsIdentity>,
) -> async_nats::ConnectOptions {
    let mut o = async_nats::ConnectOptions::new();
    if let Some(id) = identity {
        o = o
            .user_and_password(id.user.clone(), id.password.clone())
            .custom_inbox_prefix(cc_bus::permissions::inbox_prefix(&id.user));
    }
    let tls = &config.nats;
    if !tls.ca_file.is_empty() {
        o = o
            .add_root_certificates(tls.ca_file.clone().into())
            .require_tls(true);
    }
    if !tls.cert_file.is_empty() {
        o = o.add_client_certificate(tls.cert_file.clone().into(), tls.key_file.clone().into());
    }
    o
}

/// The servers of `CC_NATS_URL`: one URL, or a cluster's comma-separated list (async-nats
/// parses a single string as one URL, so the list is split here). The client connects to one
/// of them and, when it is lost, reconnects to another (it also learns the cluster's other
/// servers from the one it reaches, unless the cluster hides them with `no_advertise`).
pub fn nats_servers(url: &str) -> Vec<String> {
    url.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(String::from)
        .collect()
}

/// Connects once (operator commands): no waiting, an error names the URL and the user.
pub async fn nats_once(
    config: &Config,
    identity: Option<&NatsIdentity>,
) -> anyhow::Result<async_nats::Client> {
    nats_options(config, identity)
        .connection_timeout(Duration::from_secs(5))
        .connect(nats_servers(&config.nats_url))
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot reach NATS at {} as {}: {e}",
                redact(&config.nats_url),
                identity.map_or("an anonymous user", |i| i.user.as_str())
            )
        })
}

/// Connects to NATS and checks it is >= 2.10 with JetStream. `None` if cancelled.
pub async fn nats(
    config: &Config,
    identity: Option<&NatsIdentity>,
    readiness: &Readiness,
    cancel: &CancellationToken,
) -> anyhow::Result<Option<async_nats::Client>> {
    readiness.expect("nats");
    let mut attempt = 0;
    loop {
        // One attempt, so that a failure says why (a refused certificate, a wrong password);
        // once connected, the client reconnects by itself for ever.
        let r = nats_options(config, identity)
            .connection_timeout(Duration::from_secs(3))
            .max_reconnects(None)
            .connect(nats_servers(&config.nats_url))
            .await
            .map_err(|e| format!("{e}"));
        match r {
            Ok(client) => {
                let info = client.server_info();
                if !version_at_least(&info.version, 2, 10) {
                    anyhow::bail!(
                        "NATS at {} is version {}; this product needs nats-server >= 2.10 with JetStream",
                        redact(&config.nats_url),
                        info.version
                    );
                }
                if !info.jetstream {
                    anyhow::bail!(
                        "NATS at {} runs without JetStream; start it with -js",
                        redact(&config.nats_url)
                    );
                }
                readiness.ready("nats");
                let user = identity.map_or("", |i| i.user.as_str());
                tracing::info!(version = %info.version, url = %redact(&config.nats_url), user, "connected to NATS");
                return Ok(Some(client));
            }
            Err(e) => {
                attempt += 1;
                readiness.down("nats", e.clone());
                tracing::warn!(attempt, error = %e, "waiting for NATS at {}; retrying", redact(&config.nats_url));
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(None),
            _ = tokio::time::sleep(backoff(attempt)) => {}
        }
    }
}

fn version_at_least(v: &str, major: u32, minor: u32) -> bool {
    let mut parts = v
        .trim_start_matches('v')
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (ma, mi) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (ma, mi) >= (major, minor)
}

/// Keeps `/readyz` true to the state of both connections.
pub fn watch(
    pool: PgPool,
    client: async_nats::Client,
    readiness: Readiness,
    cancel: CancellationToken,
) {
    tokio::spawn(async move {
        loop {
            // A pooled connection to a server that became a standby (a failover) is read-only:
            // not ready until the pool reaches the primary again.
            match sqlx::query_scalar::<_, String>("show transaction_read_only")
                .fetch_one(&pool)
                .await
            {
                Ok(ro) if ro == "on" => readiness.down("postgres", READ_ONLY),
                Ok(_) => readiness.ready("postgres"),
                Err(e) => readiness.down("postgres", e.to_string()),
            }
            match client.connection_state() {
                async_nats::connection::State::Connected => readiness.ready("nats"),
                s => readiness.down("nats", format!("connection {s}")),
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_lose_their_passwords() {
        use super::redact;
        assert_eq!(
            redact(
                "postgres://cc:s3cret@db:5432/callcenter?sslmode=verify-full&password=x&sslkey=/k"
            ),
            "postgres://cc:***@db:5432/callcenter?sslmode=verify-full&password=***&sslkey=/k"
        );
        assert_eq!(
            redact("nats://u:p@n1:4222,tls://n2:4222"),
            "nats://u:***@n1:4222,tls://n2:4222"
        );
        // A cluster's list: every server's password.
        assert_eq!(
            redact("nats://u:p@n1:4222,nats://u:p@n2:4222,nats://n3:4222"),
            "nats://u:***@n1:4222,nats://u:***@n2:4222,nats://n3:4222"
        );
        assert_eq!(redact("tls://127.0.0.1:4222"), "tls://127.0.0.1:4222");
        // An @ in the path or query is no password.
        assert_eq!(
            redact("postgres://db/x?sslcert=/a@b"),
            "postgres://db/x?sslcert=/a@b"
        );
    }

    #[test]
    fn a_server_list_is_split_into_its_urls() {
        assert_eq!(
            super::nats_servers(" nats://a:4222, nats://b:4222,,tls://c:4222 "),
            ["nats://a:4222", "nats://b:4222", "tls://c:4222"]
        );
        assert_eq!(super::nats_servers("nats://a:4222"), ["nats://a:4222"]);
        for list in [
            super::nats_servers("nats://a:4222,nats://b:4222"),
            super::nats_servers("nats://a:4222"),
        ] {
            assert!(async_nats::ToServerAddrs::to_server_addrs(&list).is_ok());
        }
    }

    #[test]
    fn versions() {
        assert!(super::version_at_least("2.10.0", 2, 10));
        assert!(super::version_at_least("2.15.1", 2, 10));
        assert!(!super::version_at_least("2.9.10", 2, 10));
    }
}
