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
async fn health_metrics_and_openapi_are_served() {
    let iso = Isolation::new().await;
    let app = TestApp::spawn(iso.settings()).await;
    let coupon = app.open_coupon(1).await;
    app.issue(coupon, 1).await;
    app.issue(coupon, 2).await;

    assert_eq!(app.get("/health/live").await.0, StatusCode::OK);
    let (status, ready) = app.get("/health/ready").await;
    assert_eq!((status, &ready["redis"]), (StatusCode::OK, &serde_json::json!("UP")));

    let metrics = app.http.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
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
    app.stop().await;
}
