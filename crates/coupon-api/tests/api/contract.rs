//! The OpenAPI document is the contract: schemathesis (installed by
//! `scripts/test-tools.sh`, which `make test` runs) generates requests from the
//! served document, with valid credentials, and fails on any answer the
//! document does not allow, any 5xx, any invalid request accepted or valid
//! one refused, and any endpoint that ignores its credentials.
//!
//! Two passes: every operation with every phase (`schemathesis.toml`), then
//! redeem and release of a coupon the customer holds (`schemathesis-held.toml`).
//! The seed is fixed so a failure reproduces; `SCHEMATHESIS_SEED` explores others.

use std::path::{Path, PathBuf};

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{service_token, token, Isolation, TestApp, ADMIN_TOKEN};

const CUSTOMER: i64 = 7;

fn schemathesis() -> PathBuf {
    let tools = std::env::var_os("TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.stack/tools"));
    let st = tools.join("schemathesis/bin/st");
    assert!(st.exists(), "{} is missing: run scripts/test-tools.sh (make test does)", st.display());
    st
}

/// Runs one pass; panics with schemathesis's report if it found anything.
async fn run(app: &TestApp, config: &str, held_coupon: i64, extra: &[&str]) {
    let seed = std::env::var("SCHEMATHESIS_SEED").unwrap_or_else(|_| "1".into());
    // schemathesis keeps a cache in its working folder: under target/, not in the source tree.
    let workdir = coupon_testkit::target_dir().join("schemathesis");
    std::fs::create_dir_all(&workdir).expect("creating schemathesis's folder");
    let output = tokio::process::Command::new(schemathesis())
        .current_dir(&workdir)
        .arg("--config-file")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api").join(config))
        .arg("--no-color")
        .args(["run", &format!("{}/api-docs/openapi.json", app.base), "--checks", "all", "--seed", &seed])
        .args(extra)
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .env("CUSTOMER_TOKEN", token(CUSTOMER))
        .env("SERVICE_TOKEN", service_token())
        .env("CUSTOMER_ID", CUSTOMER.to_string())
        .env("HELD_COUPON_ID", held_coupon.to_string())
        .output()
        .await
        .expect("running schemathesis");
    assert!(
        output.status.success(),
        "schemathesis ({config}, seed {seed}) reported failures:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_failure_against_the_served_document() {
    let iso = Isolation::with_usage_topics().await;
    let app = TestApp::spawn(iso.settings()).await;
    let held = app
        .create_coupon_with(json!({
            "name": "contract",
            "totalQuantity": 10,
            "startsAt": "2020-01-01T00:00:00Z",
            "endsAt": "2100-01-01T00:00:00Z",
            "discount": { "type": "RATE", "percent": 10, "maxAmount": 1000 },
            "minOrderAmount": 100,
        }))
        .await;
    assert_eq!(app.issue(held, CUSTOMER).await.0, StatusCode::CREATED);

    run(&app, "schemathesis.toml", held, &[]).await;
    run(&app, "schemathesis-held.toml", held, &["--phases", "fuzzing", "--include-path-regex", "/(redeem|release)$"])
        .await;
    app.stop().await;
}
