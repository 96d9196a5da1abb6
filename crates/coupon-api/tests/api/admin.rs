//! The admin endpoints: token checks, validation, priming.

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{redis, Isolation, TestApp, ADMIN_TOKEN};

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
        json!({ "name": "x", "totalQuantity": 10, "startsAt": "2036-01-01T00:00:00Z", "endsAt": "2026-01-01T00:00:00Z" }),
        json!({ "name": "x", "totalQuantity": 10, "startsAt": "tomorrow", "endsAt": "2036-01-01T00:00:00Z" }),
        json!({ "name": "x", "totalQuantity": 10 }),
    ];
    for body in invalid {
        let response = app.http.post(&url).bearer_auth(ADMIN_TOKEN).json(&body).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
    }
    let created = app.http.post(&url).bearer_auth(ADMIN_TOKEN).json(&coupon_body()).send().await.unwrap();
    let coupon: serde_json::Value = created.json().await.unwrap();
    assert_eq!(coupon["id"], 1, "no invalid request consumed an id or left a row");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn priming_is_safe_to_repeat_and_rebuilds_a_lost_redis_state() {
    let iso = Isolation::new().await;
    let app = TestApp::spawn(iso.settings()).await;
    let coupon = app.open_coupon(3).await;
    assert_eq!(app.issue(coupon, 1).await.0, StatusCode::CREATED);
    let prime_url = format!("{}/api/v1/coupons/{coupon}/prime", app.base);

    let again: serde_json::Value =
        app.http.post(&prime_url).bearer_auth(ADMIN_TOKEN).send().await.unwrap().json().await.unwrap();
    assert_eq!(again["primed"], false, "an existing state is left alone");
    assert_eq!(app.get(&format!("/api/v1/coupons/{coupon}")).await.1["remainingQuantity"], 2);

    // The writer persisted customer 1; then Redis loses everything about the coupon.
    let mut conn = iso.db.connect().await;
    diesel_async::RunQueryDsl::execute(
        diesel::sql_query(format!(
            "WITH g AS (INSERT INTO customer_coupon (coupon_id, customer_id, issued_at) VALUES ({coupon}, 1, now()) RETURNING coupon_id) \
             UPDATE coupon SET remaining_quantity = remaining_quantity - 1 WHERE id = {coupon}"
        )),
        &mut conn,
    )
    .await
    .unwrap();
    let mut redis = redis().await;
    for key in ["meta", "stock", "issued", "outbox"] {
        let _: () = redis::AsyncCommands::del(&mut redis, format!("{}coupon:{{{coupon}}}:{key}", iso.key_prefix))
            .await
            .unwrap();
    }
    assert_eq!(app.issue(coupon, 2).await.1["code"], "COUPON_NOT_FOUND");

    let rebuilt: serde_json::Value =
        app.http.post(&prime_url).bearer_auth(ADMIN_TOKEN).send().await.unwrap().json().await.unwrap();
    assert_eq!(rebuilt["primed"], true);
    assert_eq!(app.issue(coupon, 1).await.1["code"], "ALREADY_ISSUED", "holders come back from PostgreSQL");
    assert_eq!(app.issue(coupon, 2).await.0, StatusCode::CREATED);
    assert_eq!(app.issue(coupon, 3).await.0, StatusCode::CREATED);
    assert_eq!(app.issue(coupon, 4).await.1["code"], "SOLD_OUT", "stock comes back from PostgreSQL");
    app.stop().await;
}
