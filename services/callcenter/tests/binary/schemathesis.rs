//! schemathesis (PyPI, pinned; scripts/test installs it) over the API's OpenAPI document,
//! against a running system, as an agent and as an admin, with every check on (the document's
//! statuses, response schemas, valid requests accepted, invalid ones refused, 5xx never):
//! no failure. tests/schemathesis/schemathesis.toml holds the exceptions, each with its reason.

use std::path::Path;

use crate::system::System;
use crate::tenant::TenantSpec;

fn schemathesis() -> String {
    std::env::var("CC_SCHEMATHESIS_BIN").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../.tools/schemathesis-4.32.5/bin/schemathesis"
        )
        .into()
    })
}

async fn run_as(sys: &System, tenant: &str, who: &str, token: &str) {
    let config =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/schemathesis/schemathesis.toml");
    let bin = schemathesis();
    let out = tokio::process::Command::new(&bin)
        .arg("--config-file")
        .arg(&config)
        .args(["run", &format!("{}/api/openapi.json", sys.portal)])
        .args(["--url", &sys.portal])
        .args(["-H", &format!("X-Tenant: {tenant}")])
        // Every check is on by default; not `--checks all`, which would also switch back on
        // the few the configuration file turns off for one operation.
        .args(["--max-examples", "15", "--workers", "1"])
        // The same cases every run: a fixed seed and no memory of earlier runs' examples.
        .args(["--seed", "20261201", "--generation-database", "none"])
        .args(["--warnings", "off"])
        // Its cache (.schemathesis/) goes to the temporary directory, not the repository.
        .current_dir(std::env::temp_dir())
        .env("NO_COLOR", "1")
        .env("CC_TEST_TOKEN", token)
        .output()
        .await
        .unwrap_or_else(|e| panic!("{bin}: {e} (scripts/test installs schemathesis into .tools/)"));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis as {who} found failures:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("Tested: "), "{report}");
}

#[tokio::test]
async fn schemathesis_finds_nothing_as_an_agent_or_as_an_admin() {
    let sys = System::start().await;
    let t = sys.tenant(TenantSpec::call_center()).await;
    let agent = t.idle_agent("1001").await;
    let admin = t.admin().await;
    run_as(&sys, &t.name, "an agent", agent.token.as_deref().unwrap()).await;
    run_as(&sys, &t.name, "an admin", admin.token.as_deref().unwrap()).await;
}
