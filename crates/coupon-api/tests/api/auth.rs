//! Customers act only for themselves: the credential names the customer,
//! and support staff (the admin token) may read anyone's holdings.

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{token, Isolation, TestApp, ADMIN_TOKEN};

#[tokio::test(flavor = "multi_thread")]
async fn a_customer_issues_and_reads_only_for_itself() {
    let iso = Isolation::new().await;
    let app = TestApp::spawn(iso.settings()).await;
    let coupon = app.open_coupon(10).await;
    let issue = format!("{}/api/v1/coupons/{coupon}/issue", app.base);

    let anonymous = app.http.post(&issue).json(&json!({ "customerId": 7 })).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.headers()["www-authenticate"], "Bearer");
    let forged = app.http.post(&issue).bearer_auth("not.a.token").json(&json!({})).send().await.unwrap();
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);

    let for_someone_else = app.http.post(&issue).bearer_auth(token(7)).json(&json!({ "customerId": 8 })).send();
    let for_someone_else = for_someone_else.await.unwrap();
    assert_eq!(for_someone_else.status(), StatusCode::FORBIDDEN);
    assert_eq!(for_someone_else.json::<serde_json::Value>().await.unwrap()["code"], "FORBIDDEN");
    let own = app.http.post(&issue).bearer_auth(token(7)).json(&json!({})).send().await.unwrap();
    assert_eq!(own.status(), StatusCode::CREATED);
    assert_eq!(own.json::<serde_json::Value>().await.unwrap()["customerId"], 7);
    assert_eq!(app.get(&format!("/api/v1/coupons/{coupon}/customers/8")).await.1["issued"], false, "8 got nothing");

    let read = |path: String, bearer: String| {
        let request = app.http.get(format!("{}{path}", app.base)).bearer_auth(bearer);
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(read("/api/v1/customers/8/coupons".into(), token(7)).await, StatusCode::FORBIDDEN);
    assert_eq!(read(format!("/api/v1/coupons/{coupon}/customers/8"), token(7)).await, StatusCode::FORBIDDEN);
    assert_eq!(read("/api/v1/customers/7/coupons".into(), token(7)).await, StatusCode::OK);
    assert_eq!(read("/api/v1/customers/me/coupons".into(), token(7)).await, StatusCode::OK);
    assert_eq!(read(format!("/api/v1/coupons/{coupon}/customers/7"), token(7)).await, StatusCode::OK);
    assert_eq!(read("/api/v1/customers/8/coupons".into(), ADMIN_TOKEN.into()).await, StatusCode::OK);
    assert_eq!(read("/api/v1/customers/me/coupons".into(), "nobody".into()).await, StatusCode::UNAUTHORIZED);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn behind_a_gateway_the_customer_comes_from_its_header() {
    let iso = Isolation::new().await;
    let mut settings = iso.settings();
    settings.auth.mode = coupon_infra::settings::AuthMode::Gateway;
    let app = TestApp::spawn(settings).await;
    let coupon = app.open_coupon(10).await;
    let issue = format!("{}/api/v1/coupons/{coupon}/issue", app.base);

    let without = app.http.post(&issue).json(&json!({})).send().await.unwrap();
    assert_eq!(without.status(), StatusCode::UNAUTHORIZED);
    let with = app.http.post(&issue).header("X-Customer-Id", "9").json(&json!({})).send().await.unwrap();
    assert_eq!(with.status(), StatusCode::CREATED);
    assert_eq!(with.json::<serde_json::Value>().await.unwrap()["customerId"], 9);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_from_one_customer_gets_429_with_retry_after() {
    let iso = Isolation::new().await;
    let mut settings = iso.settings();
    settings.limits.per_customer_per_second = 1;
    settings.limits.per_customer_burst = 3;
    let app = TestApp::spawn(settings).await;
    let coupon = app.open_coupon(10).await;

    let mut answers = Vec::new();
    for _ in 0..4 {
        answers.push(app.issue(coupon, 7).await);
    }
    let codes: Vec<_> = answers.iter().map(|(_, body)| body["code"].as_str().unwrap_or("ISSUED").to_string()).collect();
    assert_eq!(codes, ["ISSUED", "ALREADY_ISSUED", "ALREADY_ISSUED", "TOO_MANY_REQUESTS"]);
    let issue = format!("{}/api/v1/coupons/{coupon}/issue", app.base);
    let limited = app.http.post(&issue).bearer_auth(token(7)).json(&json!({})).send().await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers()["retry-after"], "1");
    assert_eq!(app.issue(coupon, 8).await.0, StatusCode::CREATED, "another customer is not limited");
    app.stop().await;
}
