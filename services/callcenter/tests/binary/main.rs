//! The `callcenter` binary as an operator runs it: a real process, real PostgreSQL and NATS.

mod calls;
mod chaos;
mod contract;
mod desk;
mod edge;
mod fuzz;
mod monitor;
mod nats_cluster;
mod observability;
mod outbound;
mod permissions;
mod phones;
mod poison;
mod process;
mod queues_today;
mod races;
mod recovery;
mod replicas;
mod reporting;
mod schemathesis;
mod secrets;
mod security;
mod sessions;
mod sip;
mod subscribe;
mod system;
mod takeover;
mod tenant;
mod tls;
mod traces;
mod transfers;
mod trunk;
mod webhooks;
mod withdrawals;
use std::time::Duration;

use cc_testkit::{eventually, free_port, NatsServer, TestDb};
use process::Callcenter;

#[tokio::test]
async fn waits_for_nats_says_so_in_readyz_then_runs_and_stops_on_sigterm() {
    let db = TestDb::new().await;
    let nats_port = free_port();
    let app = Callcenter::spawn(&db.url, &format!("nats://127.0.0.1:{nats_port}"), &["run"]);
    let http = reqwest::Client::new();

    // Alive at once, not ready: NATS is missing and /readyz says so.
    let body: serde_json::Value =
        eventually("/readyz to name nats", Duration::from_secs(30), || async {
            let r = http.get(app.admin("/readyz")).send().await.ok()?;
            let status = r.status();
            let body: serde_json::Value = r.json().await.ok()?;
            (status == 503 && body["missing"].get("nats").is_some()).then_some(body)
        })
        .await;
    assert_eq!(body["status"], "not ready");
    let alive = http.get(app.admin("/healthz")).send().await.unwrap();
    assert_eq!(alive.status(), 200);

    // NATS comes up: the process connects and becomes ready.
    let _nats = NatsServer::start_on(nats_port);
    eventually("/readyz 200", Duration::from_secs(30), || async {
        let r = http.get(app.admin("/readyz")).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    let metrics = http
        .get(app.admin("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("# EOF"),
        "Prometheus/OpenMetrics text: {metrics}"
    );

    // Migrations ran on start.
    let n: i64 =
        sqlx::query_scalar("select count(*) from cc_migrations where component = 'eventstore'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(n >= 2);

    let status = app.terminate(Duration::from_secs(20));
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
}

#[tokio::test]
async fn operator_commands_show_config_and_migrate() {
    let db = TestDb::new().await;
    let out = Callcenter::output(&db.url, "nats://127.0.0.1:1", &["config"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("subject_prefix = \"t"), "{text}");

    let out = Callcenter::output(&db.url, "nats://127.0.0.1:1", &["migrate"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exists: bool = sqlx::query_scalar("select to_regclass('es_events') is not null")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(exists);

    let out = Callcenter::command(&db.url, "nats://127.0.0.1:1", &["config"])
        .env("CC_DEMO", "maybe")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("CC_DEMO"),
        "the error names the variable"
    );

    let out = Callcenter::output(
        &db.url,
        "nats://127.0.0.1:1",
        &["run", "--target", "nonsense"],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("queue-router"),
        "the error lists the targets"
    );
}

#[tokio::test]
async fn waits_for_postgres_says_so_in_readyz_and_runs_only_the_chosen_targets() {
    let nats = NatsServer::start();
    // Nothing listens on this port: PostgreSQL is "down".
    let db_url = format!("postgres://postgres@127.0.0.1:{}/cc_nowhere", free_port());
    let app = Callcenter::spawn(&db_url, &nats.url(), &["run", "--target", "portal,auth"]);
    let http = reqwest::Client::new();
    let body: serde_json::Value = eventually(
        "/readyz to name postgres",
        Duration::from_secs(30),
        || async {
            let r = http.get(app.admin("/readyz")).send().await.ok()?;
            let status = r.status();
            let body: serde_json::Value = r.json().await.ok()?;
            (status == 503 && body["missing"].get("postgres").is_some()).then_some(body)
        },
    )
    .await;
    assert!(
        body["missing"]["postgres"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "says why: {body}"
    );
    let alive: serde_json::Value = http
        .get(app.admin("/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(alive["targets"], serde_json::json!(["portal", "auth"]));
    let status = app.terminate(Duration::from_secs(20));
    assert!(
        status.success(),
        "a process still waiting stops cleanly on SIGTERM: {status:?}"
    );
}

/// The partition count is the store's (issue 16): the first replica records it, another count
/// is refused naming both, and `callcenter partitions set` changes it only with no replica
/// running partitions.
#[tokio::test]
async fn a_replica_with_another_partition_count_than_the_store_is_refused_naming_both() {
    let db = TestDb::new().await;
    let nats = NatsServer::start();
    let cli = |args: &[&str], partitions: &str| {
        let out = Callcenter::command(&db.url, &nats.url(), args)
            .env("CC_PARTITIONS", partitions)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, text) = cli(&["partitions", "show"], "4");
    assert!(ok && text.contains("not set yet"), "{text}");

    // The first replica records its count and leads the router's four partitions.
    let mut first = Callcenter::spawn_with(
        &db.url,
        &nats.url(),
        &["run", "--target", "queue-router"],
        |c| {
            c.env("CC_PARTITIONS", "4");
        },
    );
    let http = reqwest::Client::new();
    eventually(
        "the four partitions led",
        Duration::from_secs(30),
        || async {
            let text = http
                .get(first.admin("/metrics"))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            (0..4)
                .all(|k| text.contains(&format!("cc_lease_held{{lease=\"queue_router/p{k}\"}} 1")))
                .then_some(())
        },
    )
    .await;
    let (ok, text) = cli(&["partitions", "show"], "4");
    assert!(ok && text.trim().ends_with('4'), "{text}");

    // Another count: refused at the start, naming the variable and both counts.
    let (ok, text) = cli(&["run", "--target", "queue-router"], "2");
    assert!(
        !ok,
        "a replica with 2 partitions ran on a store of 4: {text}"
    );
    assert!(
        text.contains("CC_PARTITIONS is 2") && text.contains("spread over 4 partitions"),
        "{text}"
    );
    // Changing it while a replica runs partitions: refused; a count out of range: refused.
    let (ok, text) = cli(&["partitions", "set", "2"], "4");
    assert!(!ok && text.contains("stop every replica first"), "{text}");
    let (ok, text) = cli(&["partitions", "set", "0"], "4");
    assert!(!ok && text.contains("count"), "{text}");

    // With every replica stopped it changes, and the new count starts.
    first.kill();
    let (ok, text) = cli(&["partitions", "set", "2"], "4");
    assert!(ok && text.contains("4 -> 2"), "{text}");
    let (ok, text) = cli(&["partitions", "show"], "2");
    assert!(ok && text.trim().ends_with('2'), "{text}");

    // A store an older build partitioned (its tenants spread by MD5): refused until the count
    // is set again, which records today's hash.
    sqlx::query("update es_partitioning set hash = 'md5'")
        .execute(&db.pool)
        .await
        .unwrap();
    let (ok, text) = cli(&["run", "--target", "queue-router"], "2");
    assert!(
        !ok && text.contains("older build's hash (md5)")
            && text.contains("callcenter partitions set 2"),
        "{text}"
    );
    let (ok, text) = cli(&["partitions", "set", "2"], "2");
    assert!(ok, "{text}");
    let hash: String = sqlx::query_scalar("select hash from es_partitioning")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(hash, "fnv1a");
}
