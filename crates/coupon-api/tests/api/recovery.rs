//! Redis forgets while coupon-writer is behind: the coupon is fenced, and
//! issuance resumes only from state rebuilt after the writer applied every
//! earlier issuance, so only the stock that is really left is sold.

use std::time::Duration;

use coupon_testkit::wait_until;
use reqwest::StatusCode;

use crate::harness::{redis, Isolation, TestApp, ADMIN_TOKEN};

/// Removes everything Redis holds under the test's prefix, as FLUSHALL would
/// (the shared Redis serves other tests too).
pub async fn wipe(prefix: &str) {
    let mut conn = redis().await;
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut conn).await.unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL").arg(keys).query_async(&mut conn).await.unwrap();
    }
}

/// Retries one customer until the answer is not 503; returns it.
pub async fn settled_answer(app: &TestApp, coupon: i64, customer: i64) -> (StatusCode, String) {
    wait_until("an answer other than 503", Duration::from_secs(60), || async move {
        let (status, body) = app.issue(coupon, customer).await;
        let code = body["code"].as_str().unwrap_or("ISSUED").to_string();
        (status != StatusCode::SERVICE_UNAVAILABLE).then_some((status, code))
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wiped_redis_with_the_writer_behind_sells_only_what_is_left() {
    let iso = Isolation::new().await;
    let app = TestApp::spawn(iso.settings()).await;
    let coupon = app.open_coupon(10).await;
    for customer in 1..=6 {
        assert_eq!(app.issue(coupon, customer).await.0, StatusCode::CREATED);
    }

    wipe(&iso.key_prefix).await;
    let prime = app
        .http
        .post(format!("{}/api/v1/coupons/{coupon}/prime", app.base))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(prime.status(), StatusCode::ACCEPTED);
    for customer in 100..110 {
        let (status, body) = app.issue(coupon, customer).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("UNAVAILABLE")),
            "no answer from a Redis that forgot 6 issuances while the writer has not applied them"
        );
    }

    let writer = iso.start_writer().await;
    let mut answers = Vec::new();
    for customer in 100..110 {
        answers.push(settled_answer(&app, coupon, customer).await);
    }
    let issued = answers.iter().filter(|(status, _)| *status == StatusCode::CREATED).count();
    let sold_out = answers.iter().filter(|(_, code)| code == "SOLD_OUT").count();
    assert_eq!((issued, sold_out), (4, 6), "exactly the 4 left are sold: {answers:?}");
    for customer in 1..=6 {
        assert_eq!(app.issue(coupon, customer).await.1["code"], "ALREADY_ISSUED", "customer {customer}");
    }
    writer.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_coupon_redis_lost_answers_503_not_404_and_comes_back() {
    let iso = Isolation::new().await;
    let app = TestApp::spawn(iso.settings()).await;
    let writer = iso.start_writer().await;
    let coupon = app.open_coupon(2).await;
    assert_eq!(app.issue(coupon, 1).await.0, StatusCode::CREATED);

    wipe(&iso.key_prefix).await;
    let (status, body) = app.issue(coupon, 2).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("UNAVAILABLE")));
    assert_eq!(settled_answer(&app, coupon, 2).await.0, StatusCode::CREATED);
    assert_eq!(app.issue(coupon, 1).await.1["code"], "ALREADY_ISSUED");
    assert_eq!(app.issue(coupon, 3).await.1["code"], "SOLD_OUT");
    writer.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ended_coupon_leaves_the_index_and_its_keys_expire() {
    let iso = Isolation::new().await;
    let mut settings = iso.settings();
    settings.recovery.sync_interval = Duration::from_millis(200);
    settings.recovery.ended_grace = Duration::from_secs(600);
    let app = TestApp::spawn(settings).await;
    let now = time::OffsetDateTime::now_utc();
    let coupon = app.create_coupon(5, now - time::Duration::hours(1), now + time::Duration::seconds(2)).await;
    assert_eq!(app.issue(coupon, 1).await.0, StatusCode::CREATED);

    let mut conn = redis().await;
    let index = coupon_domain::keys::SystemKeys::new(&iso.key_prefix.to_string()).index();
    let meta = format!("{}coupon:{{{coupon}}}:meta", iso.key_prefix);
    let ttl_ms = wait_until("the ended coupon to retire", Duration::from_secs(30), || {
        let (mut conn, index, meta) = (conn.clone(), index.clone(), meta.clone());
        async move {
            let score: Option<i64> = redis::cmd("ZSCORE").arg(&index).arg(coupon).query_async(&mut conn).await.ok()?;
            let indexed = score.is_some();
            let ttl: i64 = redis::cmd("PTTL").arg(&meta).query_async(&mut conn).await.ok()?;
            (!indexed && ttl > 0).then_some(ttl)
        }
    })
    .await;
    assert!(ttl_ms <= 600_000, "expires within the grace period: {ttl_ms} ms");
    assert_eq!(app.issue(coupon, 2).await.1["code"], "EXPIRED");

    let _: () = redis::cmd("DEL").arg(&meta).query_async(&mut conn).await.unwrap();
    assert_eq!(app.issue(coupon, 2).await.1["code"], "EXPIRED", "an expired-and-gone coupon is EXPIRED, not 404");
    app.stop().await;
}
