//! A starting coupon-api answers its liveness probe at once and calls itself
//! ready only once it can issue: schema migrated, Redis made safe by a first
//! recovery pass, producer warm.

use std::time::Duration;

use coupon_testkit::wait_until;
use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::{Isolation, TestApp};

#[tokio::test(flavor = "multi_thread")]
async fn readiness_waits_for_the_database_schema_and_then_issuance_works_at_once() {
    let iso = Isolation::new().await;
    iso.db.set_reachable(false).await;
    let app = TestApp::spawn_starting(iso.settings()).await;
    let get = |path: &'static str| {
        let (http, url) = (app.http.clone(), format!("{}{path}", app.management));
        async move {
            let response = http.get(url).send().await.expect("coupon-api listens");
            (response.status(), response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    assert_eq!(get("/health/live").await.0, StatusCode::OK, "alive while it starts");
    let (status, body) = get("/health/ready").await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("STARTING")));
    assert!(body["waitingFor"].as_str().is_some_and(|what| what.contains("schema")), "{body}");

    iso.db.set_reachable(true).await;
    wait_until("coupon-api to be ready", Duration::from_secs(30), || async {
        (get("/health/ready").await.0 == StatusCode::OK).then_some(())
    })
    .await;
    let coupon = app.open_coupon(1).await;
    assert_eq!(app.issue(coupon, 1).await.0, StatusCode::CREATED, "the first request after readiness is served");
    app.stop().await;
}
