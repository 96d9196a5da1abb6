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
async fn behind_a_gateway_the_customer_comes_from_its_header_with_the_gateways_proof() {
    const GATEWAY_SECRET: &str = "the-gateway-secret-of-at-least-32-bytes";
    let iso = Isolation::new().await;
    let mut settings = iso.settings();
    settings.auth.mode = coupon_infra::settings::AuthMode::Gateway;
    settings.auth.gateway_secret = Some(secrecy::SecretString::from(GATEWAY_SECRET));
    let app = TestApp::spawn(settings).await;
    let coupon = app.open_coupon(10).await;
    let issue = format!("{}/api/v1/coupons/{coupon}/issue", app.base);

    let without = app.http.post(&issue).json(&json!({})).send().await.unwrap();
    assert_eq!(without.status(), StatusCode::UNAUTHORIZED);
    // Anyone who reaches the pod can send the header; only the gateway has the secret.
    let around_the_gateway = app.http.post(&issue).header("X-Customer-Id", "9").json(&json!({})).send().await.unwrap();
    assert_eq!(around_the_gateway.status(), StatusCode::UNAUTHORIZED);
    let wrong = app.http.post(&issue).header("X-Gateway-Token", "guess").header("X-Customer-Id", "9").json(&json!({}));
    assert_eq!(wrong.send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let twice = app
        .http
        .post(&issue)
        .header("X-Gateway-Token", GATEWAY_SECRET)
        .header("X-Customer-Id", "9")
        .header("X-Customer-Id", "10")
        .json(&json!({}));
    assert_eq!(
        twice.send().await.unwrap().status(),
        StatusCode::BAD_REQUEST,
        "a header the client added and the gateway appended to"
    );
    let with =
        app.http.post(&issue).header("X-Gateway-Token", GATEWAY_SECRET).header("X-Customer-Id", "9").json(&json!({}));
    let with = with.send().await.unwrap();
    assert_eq!(with.status(), StatusCode::CREATED);
    assert_eq!(with.json::<serde_json::Value>().await.unwrap()["customerId"], 9);
    assert_eq!(app.get(&format!("/api/v1/coupons/{coupon}/customers/10")).await.1["issued"], false, "nothing for 10");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_address_that_keeps_failing_to_authenticate_is_answered_429() {
    let iso = Isolation::new().await;
    let mut settings = iso.settings();
    settings.limits.failed_auth_per_minute = 5;
    let app = TestApp::spawn(settings).await;
    let coupon = app.open_coupon(10).await;
    let issue = format!("{}/api/v1/coupons/{coupon}/issue", app.base);
    let guess = || app.http.post(&issue).bearer_auth("a.guessed.token").json(&json!({})).send();
    for _ in 0..5 {
        assert_eq!(guess().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    }
    let limited = guess().await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers().contains_key("retry-after"));
    // A valid credential still gets in: the limit counts failures only.
    assert_eq!(app.issue(coupon, 7).await.0, StatusCode::CREATED);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_are_limited_per_customer_too() {
    let iso = Isolation::new().await;
    let mut settings = iso.settings();
    settings.limits.per_customer_per_second = 1;
    settings.limits.per_customer_burst = 2;
    let app = TestApp::spawn(settings).await;
    let read = || app.http.get(format!("{}/api/v1/customers/me/coupons", app.base)).bearer_auth(token(7)).send();
    let statuses = [read().await.unwrap().status(), read().await.unwrap().status(), read().await.unwrap().status()];
    assert_eq!(statuses, [StatusCode::OK, StatusCode::OK, StatusCode::TOO_MANY_REQUESTS]);
    let other = app.http.get(format!("{}/api/v1/customers/me/coupons", app.base)).bearer_auth(token(8)).send();
    assert_eq!(other.await.unwrap().status(), StatusCode::OK, "another customer has its own allowance");
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
