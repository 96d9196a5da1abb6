//! Read endpoints, health, metrics and the OpenAPI document.

use reqwest::StatusCode;

use crate::harness::{Isolation, TestApp};

#[tokio::test(flavor = "multi_thread")]
async fn a_customer_sees_issued_and_then_persisted() {
    let iso = Isolation::new().await;
    let app = TestApp::spawn(iso.settings()).await;
    let coupon = app.open_coupon(5).await;
    let attempt = format!("/api/v1/coupons/{coupon}/customers/7");

    let (status, body) = app.get(&attempt).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, serde_json::json!({ "issued": false, "persisted": false }));

    assert_eq!(app.issue(coupon, 7).await.0, StatusCode::CREATED);
    assert_eq!(app.get(&attempt).await.1, serde_json::json!({ "issued": true, "persisted": false }));
    assert_eq!(app.get("/api/v1/customers/7/coupons").await.1, serde_json::json!([]));

    // What coupon-writer does with the event.
    let mut conn = iso.db.connect().await;
    diesel_async::RunQueryDsl::execute(
        diesel::sql_query(format!(
            "INSERT INTO customer_coupon (coupon_id, customer_id, issued_at) VALUES ({coupon}, 7, now())"
        )),
        &mut conn,
    )
    .await
    .unwrap();
    assert_eq!(app.get(&attempt).await.1, serde_json::json!({ "issued": true, "persisted": true }));
    let (_, held) = app.get("/api/v1/customers/7/coupons").await;
    assert_eq!(held[0]["couponId"], coupon);
    assert_eq!(held[0]["name"], "test coupon");

    let (status, body) = app.get(&format!("/api/v1/coupons/{coupon}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["remainingQuantity"], 4, "live stock from Redis");

    assert_eq!(app.get("/api/v1/coupons/999999").await.1["code"], "COUPON_NOT_FOUND");
    assert_eq!(app.get("/api/v1/customers/zero/coupons").await.0, StatusCode::BAD_REQUEST);
    assert_eq!(app.get("/no/such/route").await.0, StatusCode::NOT_FOUND);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn health_and_metrics_are_served_on_the_management_port_only_and_openapi_and_swagger_ui_on_the_api() {
    let iso = Isolation::new().await;
    let app = TestApp::spawn(iso.settings()).await;
    let coupon = app.open_coupon(1).await;
    app.issue(coupon, 1).await;
    app.issue(coupon, 2).await;

    assert_eq!(app.manage("/health/live").await.0, StatusCode::OK);
    let (status, ready) = app.manage("/health/ready").await;
    assert_eq!((status, &ready["redis"]), (StatusCode::OK, &serde_json::json!("UP")));
    // Only on the management port: the API port is the one the world reaches.
    for operational in ["/metrics", "/health/live", "/health/ready"] {
        assert_eq!(app.get(operational).await.0, StatusCode::NOT_FOUND, "{operational} on the API port");
    }

    let metrics = app.http.get(format!("{}/metrics", app.management)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"coupon_issue_requests_total{outcome="ISSUED"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"coupon_issue_requests_total{outcome="SOLD_OUT"} 1"#), "{metrics}");
    assert!(metrics.contains("coupon_outbox_depth"));

    let (status, doc) = app.get("/api-docs/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    for path in [
        "/api/v1/coupons",
        "/api/v1/coupons/{couponId}/issue",
        "/api/v1/coupons/{couponId}",
        "/api/v1/customers/{customerId}/coupons",
        "/api/v1/coupons/{couponId}/customers/{customerId}",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} documented");
    }

    // Swagger UI, from the binary, on the same document.
    let page = |path: &str| {
        let request = app.http.get(format!("{}{path}", app.base));
        async move {
            let response = request.send().await.unwrap();
            (response.status(), response.text().await.unwrap())
        }
    };
    let (status, html) = page("/swagger-ui/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("swagger-ui-bundle.js") && !html.contains("http"), "local assets only: {html}");
    let (status, init) = page("/swagger-ui/swagger-initializer.js").await;
    assert_eq!(status, StatusCode::OK);
    assert!(init.contains("/api-docs/openapi.json"), "{init}");
    assert_eq!(page("/swagger-ui/no-such-asset.js").await.0, StatusCode::NOT_FOUND);
    app.stop().await;
}

/// The public read answers from a short-lived cache: a flood of it costs
/// PostgreSQL one query per coupon per TTL. A coupon not started yet is
/// unknown to anyone but support staff.
#[tokio::test(flavor = "multi_thread")]
async fn the_public_coupon_read_is_cached_and_hides_a_coupon_not_started() {
    let iso = Isolation::new().await;
    let mut settings = iso.settings();
    settings.cache.coupon_ttl = std::time::Duration::from_secs(600);
    let app = TestApp::spawn(settings).await;
    let coupon = app.open_coupon(5).await;
    let public = || app.http.get(format!("{}/api/v1/coupons/{coupon}", app.base)).send();
    let first: serde_json::Value = public().await.unwrap().json().await.unwrap();
    assert_eq!(first["name"], "test coupon");

    // Changed behind the API's back: the cached definition is what it answers.
    let mut conn = iso.db.connect().await;
    diesel_async::RunQueryDsl::execute(
        diesel::sql_query(format!("UPDATE coupon SET name = 'renamed' WHERE id = {coupon}")),
        &mut conn,
    )
    .await
    .unwrap();
    for _ in 0..50 {
        let again: serde_json::Value = public().await.unwrap().json().await.unwrap();
        assert_eq!(again["name"], "test coupon", "answered from the cache, not PostgreSQL");
    }

    let now = time::OffsetDateTime::now_utc();
    let later = app.create_coupon(5, now + time::Duration::hours(1), now + time::Duration::hours(2)).await;
    let anonymous = app.http.get(format!("{}/api/v1/coupons/{later}", app.base)).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::NOT_FOUND, "a promotion not started yet stays secret");
    assert_eq!(app.get(&format!("/api/v1/coupons/{later}")).await.0, StatusCode::OK, "support staff see it");
    app.stop().await;
}
