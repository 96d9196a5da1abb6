//! The admin endpoints: token checks, validation, the fenced rebuild (`prime`).

use std::time::Duration;

use coupon_testkit::wait_until;
use reqwest::StatusCode;
use serde_json::json;
use time::OffsetDateTime;

use crate::harness::{Isolation, TestApp, ADMIN_TOKEN};

fn coupon_body() -> serde_json::Value {
    json!({ "name": "spring sale", "totalQuantity": 10, "startsAt": "2026-01-01T00:00:00Z", "endsAt": "2036-01-01T00:00:00Z" })
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_endpoints_need_the_token() {
    let iso = Isolation::new().await;
    let app = TestApp::spawn(iso.settings()).await;
    let url = format!("{}/api/v1/coupons", app.base);

    let none = app.http.post(&url).json(&coupon_body()).send().await.unwrap();
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
    let unread = app.http.post(&url).header("content-type", "text/plain").body("?").send().await.unwrap();
    assert_eq!(unread.status(), StatusCode::UNAUTHORIZED, "the token is checked before the body");
    let wrong = app.http.post(&url).bearer_auth("guess").json(&coupon_body()).send().await.unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let right = app.http.post(&url).bearer_auth(ADMIN_TOKEN).json(&coupon_body()).send().await.unwrap();
    assert_eq!(right.status(), StatusCode::CREATED);
    let coupon: serde_json::Value = right.json().await.unwrap();
    assert_eq!(coupon["totalQuantity"], 10);
    assert_eq!(coupon["remainingQuantity"], 10);
    app.stop().await;

    let mut without_token = iso.settings();
    without_token.admin.token = None;
    let app = TestApp::spawn(without_token).await;
    let url = format!("{}/api/v1/coupons", app.base);
    let response = app.http.post(&url).bearer_auth(ADMIN_TOKEN).json(&coupon_body()).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "no configured token: admin is off");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_coupons_are_rejected_and_not_created() {
    let iso = Isolation::new().await;
    let app = TestApp::spawn(iso.settings()).await;
    let url = format!("{}/api/v1/coupons", app.base);
    let invalid = [
        json!({ "name": "", "totalQuantity": 10, "startsAt": "2026-01-01T00:00:00Z", "endsAt": "2036-01-01T00:00:00Z" }),
        json!({ "name": "x", "totalQuantity": 0, "startsAt": "2026-01-01T00:00:00Z", "endsAt": "2036-01-01T00:00:00Z" }),
        json!({ "name": "x", "totalQuantity": 1e12, "startsAt": "2026-01-01T00:00:00Z", "endsAt": "2036-01-01T00:00:00Z" }),
        json!({ "name": "x", "totalQuantity": 10, "startsAt": "tomorrow", "endsAt": "2036-01-01T00:00:00Z" }),
        json!({ "name": "x", "totalQuantity": 10 }),
        json!({ "name": "nul\u{0}inside", "totalQuantity": 10, "startsAt": "2026-01-01T00:00:00Z", "endsAt": "2036-01-01T00:00:00Z" }),
    ];
    for body in invalid {
        let response = app.http.post(&url).bearer_auth(ADMIN_TOKEN).json(&body).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
    }
    // Well-formed, but the dates are out of order.
    let out_of_order = [
        json!({ "name": "x", "totalQuantity": 10, "startsAt": "2036-01-01T00:00:00Z", "endsAt": "2026-01-01T00:00:00Z" }),
        json!({ "name": "x", "totalQuantity": 10, "startsAt": "2026-01-01T00:00:00Z", "endsAt": "2026-01-01T00:00:00Z" }),
        json!({ "name": "x", "totalQuantity": 10, "startsAt": "2026-01-01T00:00:00Z", "endsAt": "2036-01-01T00:00:00Z",
                "validUntil": "2030-01-01T00:00:00Z" }),
    ];
    for body in out_of_order {
        let response = app.http.post(&url).bearer_auth(ADMIN_TOKEN).json(&body).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(response.json::<serde_json::Value>().await.unwrap()["code"], "INVALID_PERIOD");
    }
    let created = app.http.post(&url).bearer_auth(ADMIN_TOKEN).json(&coupon_body()).send().await.unwrap();
    let coupon: serde_json::Value = created.json().await.unwrap();
    assert_eq!(coupon["id"], 1, "no invalid request consumed an id or left a row");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn prime_fences_the_coupon_and_rebuilds_it_once_the_writer_caught_up() {
    let iso = Isolation::new().await;
    let app = TestApp::spawn(iso.settings()).await;
    let coupon = app.open_coupon(3).await;
    assert_eq!(app.issue(coupon, 1).await.0, StatusCode::CREATED);
    let prime_url = format!("{}/api/v1/coupons/{coupon}/prime", app.base);

    let response = app.http.post(&prime_url).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(response.json::<serde_json::Value>().await.unwrap()["rebuilding"], true);
    // No writer has applied customer 1 yet: the coupon stays fenced.
    let (status, body) = app.issue(coupon, 2).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("UNAVAILABLE")));

    let writer = iso.start_writer().await;
    let status = wait_until("the rebuild to lift the fence", Duration::from_secs(60), || {
        let app = &app;
        async move {
            let (status, _) = app.issue(coupon, 2).await;
            (status != StatusCode::SERVICE_UNAVAILABLE).then_some(status)
        }
    })
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(app.issue(coupon, 1).await.1["code"], "ALREADY_ISSUED", "holders come back from PostgreSQL");
    assert_eq!(app.issue(coupon, 3).await.0, StatusCode::CREATED);
    assert_eq!(app.issue(coupon, 4).await.1["code"], "SOLD_OUT", "stock comes back exact");
    writer.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn prime_of_an_unknown_or_ended_coupon_changes_nothing() {
    let iso = Isolation::new().await;
    let app = TestApp::spawn(iso.settings()).await;
    let prime = |coupon: i64| {
        app.http.post(format!("{}/api/v1/coupons/{coupon}/prime", app.base)).bearer_auth(ADMIN_TOKEN).send()
    };
    assert_eq!(prime(987_654).await.unwrap().status(), StatusCode::NOT_FOUND);
    let now = OffsetDateTime::now_utc();
    let ended = app.create_coupon(5, now - time::Duration::hours(2), now - time::Duration::hours(1)).await;
    assert_eq!(prime(ended).await.unwrap().status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.issue(ended, 1).await.1["code"], "EXPIRED");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retried_creation_with_the_same_idempotency_key_makes_one_coupon() {
    let iso = Isolation::new().await;
    let app = TestApp::spawn(iso.settings()).await;
    let url = format!("{}/api/v1/coupons", app.base);
    let create = |key: &'static str| {
        app.http.post(&url).bearer_auth(ADMIN_TOKEN).header("Idempotency-Key", key).json(&coupon_body()).send()
    };

    let first = create("order-42").await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: serde_json::Value = first.json().await.unwrap();
    let retry = create("order-42").await.unwrap();
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.json::<serde_json::Value>().await.unwrap()["id"], first["id"], "the same coupon, not a second");
    let other: serde_json::Value = create("order-43").await.unwrap().json().await.unwrap();
    assert_ne!(other["id"], first["id"]);

    let bad = app.http.post(&url).bearer_auth(ADMIN_TOKEN).header("Idempotency-Key", "with space").json(&coupon_body());
    assert_eq!(bad.send().await.unwrap().status(), StatusCode::BAD_REQUEST);

    // The same key with another body is a mistake, not a retry.
    let mut other_body = coupon_body();
    other_body["totalQuantity"] = serde_json::json!(7);
    let reused = app.http.post(&url).bearer_auth(ADMIN_TOKEN).header("Idempotency-Key", "order-42").json(&other_body);
    let reused = reused.send().await.unwrap();
    assert_eq!(reused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reused.json::<serde_json::Value>().await.unwrap()["code"], "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(create("order-42").await.unwrap().json::<serde_json::Value>().await.unwrap()["id"], first["id"]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn coupon_api_alone_on_an_empty_database_migrates_it() {
    let mut iso = Isolation::new().await;
    iso.db = coupon_testkit::TestDatabase::create_empty().await;
    let app = TestApp::spawn(iso.settings()).await;
    let url = format!("{}/api/v1/coupons", app.base);
    let status = wait_until("the schema to be migrated", Duration::from_secs(30), || async {
        let response = app.http.post(&url).bearer_auth(ADMIN_TOKEN).json(&coupon_body()).send().await.ok()?;
        (response.status() != StatusCode::SERVICE_UNAVAILABLE).then_some(response.status())
    })
    .await;
    assert_eq!(status, StatusCode::CREATED);
    app.stop().await;
}
