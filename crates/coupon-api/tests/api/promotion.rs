//! Pausing and resuming a live promotion: every replica stops issuing at
//! once, a rebuild keeps the pause, and each change is in the audit with its
//! author.

use std::time::Duration;

use coupon_testkit::wait_until;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::harness::{token, Isolation, TestApp};

fn control(coupon: i64, action: &str) -> String {
    format!("/api/v1/coupons/{coupon}/{action}")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pause_stops_issuance_on_every_replica_and_a_resume_lets_it_go_on() {
    let iso = Isolation::new().await;
    let (first, second) = (TestApp::spawn(iso.settings()).await, TestApp::spawn(iso.settings()).await);
    let coupon = first.open_coupon(10).await;
    assert_eq!(first.issue(coupon, 1).await.0, StatusCode::CREATED);

    let (status, paused) = first.post_admin(&control(coupon, "pause"), &json!({})).await;
    assert_eq!((status, &paused["paused"]), (StatusCode::OK, &json!(true)), "{paused}");
    // The other replica, with no word from the first: the script decides.
    for app in [&first, &second] {
        let (status, body) = app.issue(coupon, 2).await;
        assert_eq!((status, body["code"].as_str()), (StatusCode::CONFLICT, Some("PAUSED")), "{body}");
    }
    let (status, again) = second.post_admin(&control(coupon, "pause"), &json!({})).await;
    assert_eq!((status, again["code"].as_str()), (StatusCode::CONFLICT, Some("ALREADY_PAUSED")));
    assert_eq!(first.get(&format!("/api/v1/coupons/{coupon}")).await.1["remainingQuantity"], 9, "nothing taken");

    let (status, resumed) = second.post_admin(&control(coupon, "resume"), &json!({})).await;
    assert_eq!((status, &resumed["paused"]), (StatusCode::OK, &json!(false)), "{resumed}");
    assert_eq!(first.issue(coupon, 2).await.0, StatusCode::CREATED);
    let (status, again) = first.post_admin(&control(coupon, "resume"), &json!({})).await;
    assert_eq!((status, again["code"].as_str()), (StatusCode::CONFLICT, Some("NOT_PAUSED")));

    // Only support staff; an unknown coupon is unknown.
    let as_customer = first.http.post(format!("{}{}", first.base, control(coupon, "pause"))).bearer_auth(token(1));
    assert_eq!(as_customer.send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(first.post_admin(&control(999_999, "pause"), &json!({})).await.0, StatusCode::NOT_FOUND);
    assert_eq!(first.post_admin("/api/v1/coupons/zero/pause", &json!({})).await.0, StatusCode::BAD_REQUEST);

    // Each change is recorded with who made it, before and after.
    let (status, audit) = first.get(&format!("/api/v1/audit?couponId={coupon}")).await;
    assert_eq!(status, StatusCode::OK);
    let actions: Vec<(&str, &str)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| (entry["action"].as_str().unwrap(), entry["actor"].as_str().unwrap()))
        .collect();
    assert_eq!(actions, [("pause", "admin:admin"), ("resume", "admin:admin")], "{audit}");
    let before: Value = serde_json::from_str(audit[0]["before"].as_str().unwrap()).unwrap();
    let after: Value = serde_json::from_str(audit[0]["after"].as_str().unwrap()).unwrap();
    assert_eq!((before["paused"].as_bool(), after["paused"].as_bool()), (Some(false), Some(true)));
    assert!(audit[0]["requestId"].as_str().is_some_and(|id| !id.is_empty()));
    assert_eq!(first.get("/api/v1/audit?limit=0").await.0, StatusCode::BAD_REQUEST);
    first.stop().await;
    second.stop().await;
}

/// A rebuild from PostgreSQL writes the coupon's Redis state anew: the pause
/// is part of it.
#[tokio::test(flavor = "multi_thread")]
async fn a_paused_coupon_stays_paused_through_a_rebuild() {
    let iso = Isolation::new().await;
    let _writer = iso.start_writer().await;
    let app = TestApp::spawn(iso.settings()).await;
    let coupon = app.open_coupon(10).await;
    assert_eq!(app.issue(coupon, 1).await.0, StatusCode::CREATED);
    assert_eq!(app.post_admin(&control(coupon, "pause"), &json!({})).await.0, StatusCode::OK);

    assert_eq!(app.post_admin(&control(coupon, "prime"), &json!({})).await.0, StatusCode::ACCEPTED);
    let answer = wait_until("the rebuild", Duration::from_secs(60), || async {
        let (_, body) = app.issue(coupon, 2).await;
        (body["code"] != "UNAVAILABLE").then_some(body)
    })
    .await;
    assert_eq!(answer["code"], "PAUSED", "{answer}");
    assert_eq!(app.post_admin(&control(coupon, "resume"), &json!({})).await.0, StatusCode::OK);
    assert_eq!(app.issue(coupon, 2).await.0, StatusCode::CREATED);
    app.stop().await;
}
