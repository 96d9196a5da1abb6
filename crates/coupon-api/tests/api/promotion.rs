//! Pausing, resuming and ending a live promotion: every replica stops
//! issuing at once, a rebuild keeps the pause, Redis losing an ended coupon
//! does not reopen it, and each change is in the audit with its author.

use std::time::Duration;

use coupon_testkit::wait_until;
use reqwest::StatusCode;
use serde_json::{json, Value};

use redis::AsyncCommands;

use crate::harness::{redis, token, Isolation, TestApp};

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

/// Ending a promotion now: from the answer on every replica answers
/// `EXPIRED`, the coupon reads with its new end, a second end and a coupon
/// not started answer 409, the audit has the end with its author and both
/// ends, and a Redis that lost the coupon's state does not reopen it:
/// PostgreSQL holds the end.
#[tokio::test(flavor = "multi_thread")]
async fn ending_a_promotion_now_stops_issuance_everywhere_and_a_redis_that_lost_it_does_not_reopen_it() {
    let iso = Isolation::new().await;
    let _writer = iso.start_writer().await;
    let first = TestApp::spawn(iso.settings()).await;
    let second = TestApp::spawn(iso.settings()).await;
    let coupon = first.open_coupon(10).await;
    assert_eq!(second.issue(coupon, 1).await.0, StatusCode::CREATED);

    let (status, ended) = first.post_admin(&control(coupon, "end"), &json!({})).await;
    assert_eq!(status, StatusCode::OK, "{ended}");
    let (status, refused) = second.issue(coupon, 2).await;
    assert_eq!((status, &refused["code"]), (StatusCode::UNPROCESSABLE_ENTITY, &json!("EXPIRED")), "{refused}");
    let (_, read) = first.get(&format!("/api/v1/coupons/{coupon}")).await;
    assert_eq!(read["endsAt"], ended["endsAt"], "{read}");

    let (status, again) = second.post_admin(&control(coupon, "end"), &json!({})).await;
    assert_eq!((status, &again["code"]), (StatusCode::CONFLICT, &json!("ALREADY_ENDED")), "{again}");
    let now = time::OffsetDateTime::now_utc();
    let later = first.create_coupon(5, now + time::Duration::hours(1), now + time::Duration::hours(2)).await;
    let (status, early) = first.post_admin(&control(later, "end"), &json!({})).await;
    assert_eq!((status, &early["code"]), (StatusCode::CONFLICT, &json!("NOT_STARTED")), "{early}");
    assert_eq!(first.post_admin(&control(999_999, "end"), &json!({})).await.0, StatusCode::NOT_FOUND);

    let (_, audit) = first.get(&format!("/api/v1/audit?couponId={coupon}")).await;
    let entries: Vec<&Value> = audit.as_array().expect("a list").iter().filter(|e| e["action"] == "end").collect();
    assert_eq!(entries.len(), 1, "{audit}");
    assert_eq!(entries[0]["actor"], "admin:admin");
    let after: Value = serde_json::from_str(entries[0]["after"].as_str().expect("JSON")).expect("JSON");
    assert_eq!(after["endsAt"], ended["endsAt"], "{audit}");

    let _: () = redis().await.del(format!("{}coupon:{{{coupon}}}:meta", iso.key_prefix)).await.unwrap();
    let (status, lost) = first.issue(coupon, 3).await;
    assert_eq!((status, &lost["code"]), (StatusCode::UNPROCESSABLE_ENTITY, &json!("EXPIRED")), "{lost}");
    first.stop().await;
    second.stop().await;
}

/// The operator's list: newest first with live counts, filtered by phase,
/// paged with `after`, refused with 400 for a bad query and to customers.
#[tokio::test(flavor = "multi_thread")]
async fn promotions_are_listed_newest_first_by_phase_with_live_counts() {
    let iso = Isolation::new().await;
    let app = TestApp::spawn(iso.settings()).await;
    let now = time::OffsetDateTime::now_utc();
    let open = app.open_coupon(10).await;
    let paused = app.open_coupon(10).await;
    let ended = app.open_coupon(10).await;
    let scheduled = app.create_coupon(10, now + time::Duration::hours(1), now + time::Duration::hours(2)).await;
    for customer in 1..=3 {
        assert_eq!(app.issue(open, customer).await.0, StatusCode::CREATED);
    }
    assert_eq!(app.post_admin(&control(paused, "pause"), &json!({})).await.0, StatusCode::OK);
    assert_eq!(app.post_admin(&control(ended, "end"), &json!({})).await.0, StatusCode::OK);

    let (status, page) = app.get("/api/v1/coupons").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let listed: Vec<(i64, &str)> = page["coupons"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|c| (c["id"].as_i64().expect("an id"), c["state"].as_str().expect("a state")))
        .collect();
    assert_eq!(listed, [(scheduled, "scheduled"), (ended, "ended"), (paused, "paused"), (open, "open")], "{page}");
    let first = &page["coupons"][3];
    assert_eq!((first["issued"].as_i64(), first["remainingQuantity"].as_i64()), (Some(3), Some(7)), "{page}");
    assert_eq!(page["next"], Value::Null);

    let (_, only_paused) = app.get("/api/v1/coupons?state=paused").await;
    assert_eq!(only_paused["coupons"].as_array().map(Vec::len), Some(1), "{only_paused}");
    assert_eq!(only_paused["coupons"][0]["id"], paused);
    let (_, head) = app.get("/api/v1/coupons?limit=2").await;
    assert_eq!(head["next"], ended, "{head}");
    let (_, tail) = app.get(&format!("/api/v1/coupons?limit=2&after={ended}")).await;
    let tail_ids: Vec<i64> =
        tail["coupons"].as_array().expect("a list").iter().filter_map(|c| c["id"].as_i64()).collect();
    assert_eq!(tail_ids, [paused, open], "{tail}");

    for bad in ["state=bogus", "limit=0", "limit=101", "after=0", "colour=red"] {
        let (status, body) = app.get(&format!("/api/v1/coupons?{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    let as_customer = app.http.get(format!("{}/api/v1/coupons", app.base)).bearer_auth(token(1)).send().await;
    assert_eq!(as_customer.expect("an answer").status(), StatusCode::UNAUTHORIZED);
    app.stop().await;
}
