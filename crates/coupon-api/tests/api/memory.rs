//! Issue 38, part 2: refusals answered from memory. After a coupon sells out
//! each replica answers its requests without Redis (holders `ALREADY_ISSUED`,
//! everyone else `SOLD_OUT`) until something changes the coupon. An
//! operator's change answers once every replica answers by it.

use std::time::Duration;

use coupon_api::config::Settings;
use coupon_domain::keys::CouponKeys;
use coupon_domain::CouponId;
use coupon_testkit::redis_node::{query, RedisNode};
use coupon_testkit::wait_until;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::harness::{Isolation, TestApp};

/// Issue-script calls the app has made (merged calls: one per call).
pub async fn script_calls(app: &TestApp) -> f64 {
    app.metric("coupon_issue_batch_size_count").await
}

/// Asks as `customer` until `app` answers from memory; returns the answer.
pub async fn until_answered_from_memory(app: &TestApp, coupon: i64, customer: i64) -> Value {
    wait_until("an answer from memory", Duration::from_secs(30), || async {
        let before = app.metric("coupon_issue_answered_from_memory_total").await;
        let (_, body) = app.issue(coupon, customer).await;
        (app.metric("coupon_issue_answered_from_memory_total").await > before).then_some(body)
    })
    .await
}

/// Settings on a Redis of the test's own, with the longest check: a replica
/// answers from memory only while its last check is recent, and a test on
/// two busy cores may starve the checks.
pub async fn on_own_redis(iso: &Isolation, name: &str) -> (RedisNode, Settings) {
    let redis = RedisNode::primary(name).await.expect("a Redis of the test's own");
    let mut settings = iso.settings();
    settings.redis.url = redis.url();
    settings.issue.memory_check = Duration::from_millis(500);
    (redis, settings)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sold_out_coupon_is_refused_from_memory_until_it_changes_on_any_replica() {
    let iso = Isolation::with_usage_topics().await;
    let (_redis, settings) = on_own_redis(&iso, "api-test memory").await;
    let first = TestApp::spawn(settings.clone()).await;
    let second = TestApp::spawn(settings).await;
    let coupon = first.open_coupon(2).await;
    for customer in [1, 2] {
        assert_eq!(first.issue(coupon, customer).await.0, StatusCode::CREATED);
    }
    assert_eq!(first.issue(coupon, 3).await.1["code"], "SOLD_OUT", "Redis's answer");
    assert_eq!(until_answered_from_memory(&first, coupon, 3).await["code"], "SOLD_OUT");

    let calls = script_calls(&first).await;
    assert_eq!(first.issue(coupon, 1).await.1["code"], "ALREADY_ISSUED", "a holder is told so");
    for customer in 10..40 {
        assert_eq!(first.issue(coupon, customer).await.1["code"], "SOLD_OUT");
    }
    // Once a check came later than two intervals, a request asked Redis.
    assert!(script_calls(&first).await <= calls + 1.0, "31 refusals, at most one issue-script call");
    assert_eq!(until_answered_from_memory(&second, coupon, 3).await["code"], "SOLD_OUT");

    // A unit back in stock through the first replica: it issues at once.
    let revoke = json!({"reason": "fraud", "returnToStock": true});
    let (status, body) = first.delete_admin(&format!("/api/v1/customers/1/coupons/{coupon}"), &revoke).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(first.issue(coupon, 50).await.0, StatusCode::CREATED, "the returned unit");
    assert_eq!(until_answered_from_memory(&second, coupon, 51).await["code"], "SOLD_OUT", "sold out again");

    // A raise through the first replica: from its answer on, the second
    // replica, which remembered the coupon sold out, issues the new unit.
    let (status, body) = first.patch_admin(&format!("/api/v1/coupons/{coupon}"), &json!({"totalQuantity": 3})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(second.issue(coupon, 52).await.0, StatusCode::CREATED, "the added unit, on the other replica");
    assert_eq!(until_answered_from_memory(&second, coupon, 53).await["code"], "SOLD_OUT");

    // So with a pause, answered before sold out as the script answers.
    let (status, body) = first.post_admin(&format!("/api/v1/coupons/{coupon}/pause"), &json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(second.issue(coupon, 53).await.1["code"], "PAUSED");
    second.stop().await;
    first.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_coupon_not_started_is_refused_from_memory_until_its_start_by_the_redis_clock() {
    let iso = Isolation::new().await;
    let mut settings = iso.settings();
    settings.issue.memory_check = Duration::from_millis(500);
    let app = TestApp::spawn(settings).await;
    let now = time::OffsetDateTime::now_utc();
    // Far enough for a snapshot on two busy cores before the start.
    let coupon = app.create_coupon(1, now + time::Duration::seconds(10), now + time::Duration::hours(1)).await;
    assert_eq!(app.issue(coupon, 1).await.1["code"], "NOT_STARTED");
    assert_eq!(until_answered_from_memory(&app, coupon, 1).await["code"], "NOT_STARTED");
    wait_until("the start", Duration::from_secs(30), || async {
        (app.issue(coupon, 1).await.0 == StatusCode::CREATED).then_some(())
    })
    .await;
    app.stop().await;
}

/// A rebuild voids what replicas remember. Redis loses a sold-out coupon
/// that a replica remembers: the replica stops answering from memory, the
/// coupon is rebuilt from PostgreSQL, and the replica answers, and then
/// remembers, by the rebuilt state.
#[tokio::test(flavor = "multi_thread")]
async fn a_rebuild_voids_a_remembered_sold_out_until_it_is_learnt_again() {
    let iso = Isolation::new().await;
    let (redis, mut settings) = on_own_redis(&iso, "api-test memory rebuild").await;
    settings.recovery.sync_interval = Duration::from_millis(200);
    let app = TestApp::spawn(settings).await;
    let writer = iso.start_writer().await;
    let coupon = app.open_coupon(2).await;
    for customer in [1, 2] {
        assert_eq!(app.issue(coupon, customer).await.0, StatusCode::CREATED);
    }
    assert_eq!(app.issue(coupon, 3).await.1["code"], "SOLD_OUT", "Redis's answer");
    assert_eq!(until_answered_from_memory(&app, coupon, 3).await["code"], "SOLD_OUT");

    let keys = CouponKeys::new(&iso.key_prefix, CouponId::new(coupon).unwrap());
    let all = [&keys.meta, &keys.stock, &keys.issued, &keys.outbox, &keys.returned, &keys.reissued];
    let _: i64 = query(&redis.url(), redis::cmd("DEL").arg(&all)).await.expect("deleting the coupon's keys");
    // A replica that kept its snapshot would answer from it until the deadline.
    wait_until("an answer that is not from memory", Duration::from_secs(30), || async {
        let before = app.metric("coupon_issue_answered_from_memory_total").await;
        let _ = app.issue(coupon, 3).await;
        (app.metric("coupon_issue_answered_from_memory_total").await == before).then_some(())
    })
    .await;
    wait_until("the coupon rebuilt", Duration::from_secs(60), || async {
        (app.issue(coupon, 1).await.1["code"] == "ALREADY_ISSUED").then_some(())
    })
    .await;
    assert!(app.metric("coupon_rebuilds_total").await >= 1.0, "the lost coupon was rebuilt");
    assert_eq!(app.issue(coupon, 4).await.1["code"], "SOLD_OUT", "Redis's answer, rebuilt");
    let remembered = until_answered_from_memory(&app, coupon, 2).await;
    assert_eq!(remembered["code"], "ALREADY_ISSUED", "a holder from PostgreSQL, remembered again");
    writer.stop().await;
    app.stop().await;
}
