//! The connection to PostgreSQL against a real server: a read-only server (a standby, or a
//! demoted primary after a failover) is refused and `/readyz` says why, until the address
//! leads to a server that takes writes.

use std::time::Duration;

use cc_runtime::{connect, Config, Readiness};
use cc_testkit::TestDb;
use sqlx::ConnectOptions;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn a_read_only_server_is_refused_until_it_takes_writes_again() {
    let db = TestDb::new().await;
    let admin = |sql: String| {
        let url = db.url.clone();
        async move {
            let mut c = url
                .parse::<sqlx::postgres::PgConnectOptions>()
                .unwrap()
                .connect()
                .await
                .unwrap();
            sqlx::query("set default_transaction_read_only = off")
                .execute(&mut c)
                .await
                .unwrap();
            sqlx::query(&sql).execute(&mut c).await.unwrap();
        }
    };
    // Every new session of the database is read-only, as on a standby.
    admin(format!(
        "alter database {} set default_transaction_read_only = on",
        db.name
    ))
    .await;
    let config = Config {
        database_url: db.url.clone(),
        ..Config::default()
    };
    let readiness = Readiness::default();
    let cancel = CancellationToken::new();
    let connecting = tokio::spawn({
        let (config, readiness, cancel) = (config.clone(), readiness.clone(), cancel.clone());
        async move { connect::postgres(&config, &readiness, &cancel).await }
    });
    cc_testkit::eventually(
        "postgres not ready, as read-only",
        Duration::from_secs(20),
        || async {
            readiness
                .missing()
                .iter()
                .any(|(name, why)| name == "postgres" && why.contains("read-only"))
                .then_some(())
        },
    )
    .await;
    assert!(!connecting.is_finished(), "no pool on a read-only server");

    // The "failover" is over: the address takes writes again, and the waiting connect succeeds.
    admin(format!(
        "alter database {} reset default_transaction_read_only",
        db.name
    ))
    .await;
    let pool = tokio::time::timeout(Duration::from_secs(30), connecting)
        .await
        .expect("connected once the server takes writes")
        .unwrap()
        .unwrap()
        .expect("not cancelled");
    sqlx::query("create table t (x int)")
        .execute(&pool)
        .await
        .unwrap();
    assert!(readiness.is_ready(), "{:?}", readiness.missing());
}
