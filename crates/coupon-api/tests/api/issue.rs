//! The issuance decision: every outcome code, bad input, races, the period,
//! and requests merged into one script call.

use std::collections::HashSet;
use std::time::Duration;

use coupon_domain::keys::CouponKeys;
use coupon_domain::CouponId;
use coupon_testkit::redis_node::{query, stall, RedisNode};
use coupon_testkit::wait_until;
use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};
use time::OffsetDateTime;
use tokio::task::JoinHandle;

use rdkafka::message::{Headers, Message};

use crate::harness::{
    app_on_own_redis, consume_events, redis_stock, redis_stock_at, token, topic_reader, Isolation, TestApp,
};

#[tokio::test(flavor = "multi_thread")]
async fn issues_once_per_customer_until_sold_out() {
    let iso = Isolation::new().await;
    let app = TestApp::spawn(iso.settings()).await;
    let coupon = app.open_coupon(2).await;

    let (status, body) = app.issue(coupon, 1).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body, json!({ "couponId": coupon, "customerId": 1, "status": "ISSUED" }));

    let (status, body) = app.issue(coupon, 1).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::CONFLICT, Some("ALREADY_ISSUED")));

    assert_eq!(app.issue(coupon, 2).await.0, StatusCode::CREATED);
    let (status, body) = app.issue(coupon, 3).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::CONFLICT, Some("SOLD_OUT")));
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert_eq!(redis_stock(&iso.key_prefix, coupon).await, 0);

    let (status, body) = app.issue(coupon + 1_000, 1).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("COUPON_NOT_FOUND")));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_400_and_change_nothing() {
    let iso = Isolation::new().await;
    let app = TestApp::spawn(iso.settings()).await;
    let coupon = app.open_coupon(5).await;
    let url = format!("{}/api/v1/coupons/{coupon}/issue", app.base);

    let bodies = [
        "not json".to_string(),
        r#"{"customerId":"7"}"#.into(),
        r#"{"customerId":1.5}"#.into(),
        r#"{"customerId":0}"#.into(),
        r#"{"customerId":-4}"#.into(),
        r#"{"customerId":9223372036854775808}"#.into(),
        r#"{"customer":7}"#.into(),
    ];
    let seven = token(7);
    for body in bodies {
        let request = app.http.post(&url).bearer_auth(&seven).header("content-type", "application/json");
        let response = request.body(body.clone()).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body:.60}");
        let error: serde_json::Value = response.json().await.unwrap();
        assert_eq!(error["code"], "INVALID_REQUEST", "{body:.60}");
    }

    let oversized = format!(r#"{{"customerId":7,"pad":"{}"}}"#, "x".repeat(10_000));
    let request = app.http.post(&url).bearer_auth(&seven).header("content-type", "application/json");
    let response = request.body(oversized).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(response.json::<serde_json::Value>().await.unwrap()["code"], "PAYLOAD_TOO_LARGE");
    let request = app.http.post(&url).bearer_auth(&seven).header("content-type", "text/plain");
    let wrong_type = request.body(r#"{"customerId":7}"#).send().await.unwrap();
    assert_eq!(wrong_type.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(wrong_type.json::<serde_json::Value>().await.unwrap()["code"], "UNSUPPORTED_MEDIA_TYPE");

    for method in [reqwest::Method::GET, reqwest::Method::PUT, reqwest::Method::DELETE, reqwest::Method::TRACE] {
        let response = app.http.request(method.clone(), &url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(response.headers()["allow"], "POST", "{method}");
    }
    let unknown = app.http.get(format!("{}/api/v1/nothing-here", app.base)).send().await.unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);

    for path in ["abc", "0", "-1", "99999999999999999999"] {
        let response = app
            .http
            .post(format!("{}/api/v1/coupons/{path}/issue", app.base))
            .bearer_auth(&seven)
            .json(&json!({ "customerId": 7 }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "coupon id {path}");
    }

    assert_eq!(redis_stock(&iso.key_prefix, coupon).await, 5, "no bad request took stock");
    assert_eq!(app.issue(coupon, 7).await.0, StatusCode::CREATED, "customer 7 was never recorded");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_thousand_customers_race_for_one_hundred_coupons() {
    let iso = Isolation::new().await;
    let app = TestApp::spawn(iso.settings()).await;
    let coupon = app.open_coupon(100).await;

    let statuses = join_all((1..=2_000).map(|customer| {
        let app = &app;
        async move { (customer, app.issue(coupon, customer).await) }
    }))
    .await;

    let winners: HashSet<i64> = statuses
        .iter()
        .filter(|(_, (status, _))| *status == StatusCode::CREATED)
        .map(|(customer, _)| *customer)
        .collect();
    let sold_out = statuses.iter().filter(|(_, (_, body))| body["code"] == "SOLD_OUT").count();
    let other: Vec<_> = statuses
        .iter()
        .filter(|(_, (status, body))| *status != StatusCode::CREATED && body["code"] != "SOLD_OUT")
        .take(3)
        .collect();
    assert!(other.is_empty(), "{other:?}");
    assert_eq!(winners.len(), 100);
    assert_eq!(sold_out, 1_900);
    assert_eq!(redis_stock(&iso.key_prefix, coupon).await, 0, "stock ends at 0, never below");

    // Every winner's event reached Kafka, keyed by the coupon id.
    let events = consume_events(&iso.topic, 100).await;
    let delivered: HashSet<i64> = events.iter().map(|(_, _, customer)| *customer).collect();
    assert_eq!(delivered, winners);
    assert!(events.iter().all(|(key, c, _)| *key == coupon.to_string() && *c == coupon));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_customer_racing_with_itself_gets_exactly_one_coupon() {
    let iso = Isolation::new().await;
    let app = TestApp::spawn(iso.settings()).await;
    let coupon = app.open_coupon(10).await;

    let results = join_all((0..50).map(|_| app.issue(coupon, 42))).await;
    let created = results.iter().filter(|(status, _)| *status == StatusCode::CREATED).count();
    let repeated = results.iter().filter(|(_, body)| body["code"] == "ALREADY_ISSUED").count();
    assert_eq!((created, repeated), (1, 49));
    assert_eq!(redis_stock(&iso.key_prefix, coupon).await, 9);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_period_opens_and_closes_by_the_redis_clock() {
    let iso = Isolation::new().await;
    let app = TestApp::spawn(iso.settings()).await;
    let now = OffsetDateTime::now_utc();
    let later = app.create_coupon(100, now + time::Duration::hours(1), now + time::Duration::hours(2)).await;
    let (status, body) = app.issue(later, 1).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("NOT_STARTED")));

    // Opens two seconds from now and closes two seconds later: polled both
    // ways, so a slow request cannot make the test fail.
    let coupon = app.create_coupon(100_000, now + time::Duration::seconds(2), now + time::Duration::seconds(4)).await;

    let mut customer = 1;
    wait_until("the period to open", Duration::from_secs(10), || {
        customer += 1;
        let app = &app;
        async move { (app.issue(coupon, customer).await.0 == StatusCode::CREATED).then_some(()) }
    })
    .await;

    let (status, body) = wait_until("the period to close", Duration::from_secs(10), || {
        customer += 1;
        let app = &app;
        async move {
            let (status, body) = app.issue(coupon, customer).await;
            (status != StatusCode::CREATED).then_some((status, body))
        }
    })
    .await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("EXPIRED")));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sync_db_baseline_writes_before_it_answers() {
    let iso = Isolation::new().await;
    let mut settings = iso.settings();
    settings.issue.mode = coupon_api::config::IssueMode::SyncDb;
    let app = TestApp::spawn(settings).await;
    let coupon = app.open_coupon(3).await;

    assert_eq!(app.issue(coupon, 11).await.0, StatusCode::CREATED);
    assert_eq!(app.issue(coupon, 11).await.1["code"], "ALREADY_ISSUED");
    let (_, attempt) = app.get(&format!("/api/v1/coupons/{coupon}/customers/11")).await;
    assert_eq!(attempt, json!({ "issued": true, "persisted": true }), "durable when answered");
    // Written entries leave the outbox shortly after, in the acknowledger's next batch.
    wait_until("the written entry to leave the outbox", Duration::from_secs(10), || async {
        (crate::harness::outbox_len(&iso.key_prefix, coupon).await == 0).then_some(())
    })
    .await;

    let mut conn = iso.db.connect().await;
    #[derive(diesel::QueryableByName)]
    struct Remaining {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        remaining_quantity: i32,
    }
    let row: Remaining = diesel_async::RunQueryDsl::get_result(
        diesel::sql_query(format!("SELECT remaining_quantity FROM coupon WHERE id = {coupon}")),
        &mut conn,
    )
    .await
    .unwrap();
    assert_eq!(row.remaining_quantity, 2);
    app.stop().await;
}

/// The event of an issuance names the HTTP request that made it (its request
/// id, also on the request's log span), so coupon-writer's logs and dead
/// letters can be traced back to it.
#[tokio::test(flavor = "multi_thread")]
async fn each_issued_event_carries_its_request_id() {
    let iso = Isolation::new().await;
    let app = TestApp::spawn(iso.settings()).await;
    let coupon = app.open_coupon(10).await;
    for customer in 1..=2 {
        assert_eq!(app.issue(coupon, customer).await.0, StatusCode::CREATED);
    }
    let consumer = topic_reader(&iso.topic);
    let mut request_ids = HashSet::new();
    while request_ids.len() < 2 {
        let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await.expect("an event").unwrap();
        let header =
            message.headers().and_then(|headers| headers.iter().find(|h| h.key == coupon_domain::REQUEST_ID_HEADER));
        let id = std::str::from_utf8(header.and_then(|h| h.value).expect("a request-id header")).unwrap().to_string();
        assert_eq!((id.len(), id.matches('-').count()), (36, 4), "a UUID: {id}");
        request_ids.insert(id);
    }
    app.stop().await;
}

/// A coupon on a Redis of the test's own, one unit already issued (which
/// claims the coupon for the relay and proves the connection, so a stall
/// then holds back issue-script calls only).
async fn merged_call_setup(iso: &Isolation, name: &str, stock: i64) -> (RedisNode, TestApp, i64) {
    let (redis, app) = app_on_own_redis(iso, name, Duration::from_secs(10)).await;
    let coupon = app.open_coupon(stock).await;
    assert_eq!(app.issue(coupon, 100).await.0, StatusCode::CREATED);
    (redis, app, coupon)
}

/// Stalls Redis for `stall_for`, sends `first` (its call waits behind the
/// stall), then `behind` one by one, each once the app counts it queued.
/// Returns the requests, and the stall, which ends by itself.
async fn queue_behind_a_stalled_call(
    app: &TestApp,
    redis: &RedisNode,
    coupon: i64,
    stall_for: Duration,
    (first, behind): (i64, &[i64]),
) -> (JoinHandle<(StatusCode, Value)>, Vec<JoinHandle<(StatusCode, Value)>>, JoinHandle<()>) {
    let calls = app.metric("coupon_issue_batch_size_count").await;
    let stalled = stall(&redis.url(), stall_for).await;
    let first = app.issuing(coupon, first);
    app.wait_metric("coupon_issue_batch_size_count", calls + 1.0).await;
    let mut queued = Vec::new();
    for customer in behind {
        queued.push(app.issuing(coupon, *customer));
        app.wait_metric("coupon_issue_queued", queued.len() as f64).await;
    }
    (first, queued, stalled)
}

/// Requests for a coupon that arrive while its script call is in flight
/// (held back here by a stalled Redis) are decided by the next call, all at
/// once and in arrival order: a customer twice in it gets one coupon, and
/// the call crosses sell-out exactly.
#[tokio::test(flavor = "multi_thread")]
async fn requests_queued_behind_a_call_are_decided_by_one_call_in_arrival_order() {
    let iso = Isolation::new().await;
    let (redis, app, coupon) = merged_call_setup(&iso, "api-test merged calls", 4).await;
    let calls = app.metric("coupon_issue_batch_size_count").await;
    let decided = app.metric("coupon_issue_batch_size_sum").await;

    let (first, queued, stalled) =
        queue_behind_a_stalled_call(&app, &redis, coupon, Duration::from_secs(3), (1, &[2, 3, 3, 4])).await;
    stalled.await.expect("the stall ends");

    assert_eq!(first.await.unwrap().0, StatusCode::CREATED);
    let mut answers = Vec::new();
    for request in queued {
        let (status, body) = request.await.unwrap();
        answers.push((status.as_u16(), body["code"].as_str().unwrap_or("").to_string()));
    }
    let expected = [(201, ""), (201, ""), (409, "ALREADY_ISSUED"), (409, "SOLD_OUT")].map(|(s, c)| (s, c.to_string()));
    assert_eq!(answers, expected, "customers 2, 3, 3 and 4, one unit left for 4");
    assert_eq!(app.metric("coupon_issue_batch_size_count").await, calls + 2.0, "one call for the four");
    assert_eq!(app.metric("coupon_issue_batch_size_sum").await, decided + 5.0);
    assert_eq!(redis_stock_at(&redis.url(), &iso.key_prefix, coupon).await, 0);
    app.stop().await;
}

/// A call that finds its coupon fenced (being rebuilt) answers every request
/// it carried `503` and takes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_merged_call_that_finds_the_coupon_fenced_answers_each_request_unavailable() {
    let iso = Isolation::new().await;
    let (redis, app, coupon) = merged_call_setup(&iso, "api-test merged fenced", 10).await;
    let calls = app.metric("coupon_issue_batch_size_count").await;
    let meta = CouponKeys::new(&iso.key_prefix, CouponId::new(coupon).unwrap()).meta;
    let _: () = query(&redis.url(), redis::cmd("HSET").arg(&meta).arg("fenced").arg("test")).await.unwrap();

    let (first, queued, stalled) =
        queue_behind_a_stalled_call(&app, &redis, coupon, Duration::from_secs(2), (1, &[2, 3])).await;
    stalled.await.expect("the stall ends");

    for request in std::iter::once(first).chain(queued) {
        let (status, body) = request.await.unwrap();
        assert_eq!((status, body["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("UNAVAILABLE")), "{body}");
    }
    assert_eq!(app.metric("coupon_issue_batch_size_count").await, calls + 2.0);
    assert_eq!(redis_stock_at(&redis.url(), &iso.key_prefix, coupon).await, 9, "nothing taken");
    app.stop().await;
}

/// A merged call whose reply is lost (the `issue-reply-lost` fail point
/// drops it after the script ran) answers each of its requests `503
/// UNCONFIRMED`; each issuance is then delivered and written.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread")]
async fn each_request_of_a_merged_call_whose_reply_was_lost_is_unconfirmed_and_then_written() {
    let iso = Isolation::new().await;
    let (redis, app, coupon) = merged_call_setup(&iso, "api-test merged lost reply", 10).await;
    let writer = iso.start_writer().await;
    let calls = app.metric("coupon_issue_batch_size_count").await;

    let (first, queued, stalled) =
        queue_behind_a_stalled_call(&app, &redis, coupon, Duration::from_secs(2), (1, &[2, 3])).await;
    // Names this test's coupon only (by its key): the other tests' calls go on.
    let meta = CouponKeys::new(&iso.key_prefix, CouponId::new(coupon).unwrap()).meta;
    fail::cfg("issue-reply-lost", &format!("return({meta})")).unwrap();
    stalled.await.expect("the stall ends");
    let answers: Vec<(StatusCode, Value)> =
        join_all(std::iter::once(first).chain(queued)).await.into_iter().map(Result::unwrap).collect();
    fail::remove("issue-reply-lost");
    for (status, body) in &answers {
        assert_eq!((*status, body["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("UNCONFIRMED")), "{body}");
    }
    assert_eq!(app.metric("coupon_issue_batch_size_count").await, calls + 2.0, "1, then 2 and 3 in one call");

    for customer in 1..=3 {
        let attempt = app.persisted(coupon, customer).await;
        assert_eq!(attempt["issued"], true, "customer {customer}: {attempt}");
    }
    assert_eq!(redis_stock_at(&redis.url(), &iso.key_prefix, coupon).await, 6);
    writer.stop().await;
    app.stop().await;
}
