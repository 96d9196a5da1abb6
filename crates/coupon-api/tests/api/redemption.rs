//! Redeem and release against the real PostgreSQL and Kafka: every answer,
//! idempotency per order, the races, and one event per change.

use std::time::Duration;

use std::collections::BTreeMap;

use coupon_domain::keys::CouponKeys;
use coupon_domain::{CouponId, CouponUsageEvent, UsageKind};
use coupon_testkit::wait_until;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures::future::join_all;
use rdkafka::Message;
use redis::AsyncCommands;
use reqwest::StatusCode;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::sync::Mutex;

use crate::harness::{redis, token, topic_reader, Isolation, TestApp};

fn at(offset: time::Duration) -> String {
    (OffsetDateTime::now_utc() + offset).format(&Rfc3339).unwrap()
}

/// Open for an hour either side of now, with `extra` fields (a discount...).
fn coupon_body(total: i64, extra: Value) -> Value {
    let mut body = json!({
        "name": "spendable",
        "totalQuantity": total,
        "startsAt": at(-time::Duration::hours(1)),
        "endsAt": at(time::Duration::hours(1)),
    });
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    body
}

/// Where the order service redeems `customer`'s coupon.
fn redeem_path(customer: i64, coupon: i64) -> String {
    format!("/api/v1/customers/{customer}/coupons/{coupon}/redeem")
}

fn release_path(customer: i64, coupon: i64) -> String {
    format!("/api/v1/customers/{customer}/coupons/{coupon}/release")
}

fn order(id: &str, amount: i64) -> Value {
    json!({ "orderId": id, "orderAmount": amount })
}

/// Reads `topic` from the beginning until `expected` events arrived.
async fn usage_events(topic: &str, expected: usize) -> Vec<CouponUsageEvent> {
    let consumer = topic_reader(topic);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut events = Vec::new();
    while events.len() < expected {
        let message = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {expected} events on {topic} in 60 s", events.len()))
            .unwrap();
        events.push(serde_json::from_slice(message.payload().unwrap()).unwrap());
    }
    events
}

/// Reads `topic` from the beginning until `last_order`'s event arrived; returns
/// the distinct events (by id) per order. One partition, published in id
/// order: every event committed before `last_order`'s is among them.
async fn usage_events_per_order(topic: &str, last_order: &str) -> BTreeMap<String, usize> {
    let consumer = topic_reader(topic);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut events = BTreeMap::new();
    while !events.values().any(|order: &String| order == last_order) {
        let message = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("no event for {last_order} on {topic} in 60 s; got {events:?}"))
            .unwrap();
        let event: CouponUsageEvent = serde_json::from_slice(message.payload().unwrap()).unwrap();
        events.insert(event.event_id, event.order_id.unwrap_or_default());
    }
    events.into_values().fold(BTreeMap::new(), |mut per_order, order| {
        *per_order.entry(order).or_default() += 1;
        per_order
    })
}

/// Sessions of this test's database waiting for a lock.
async fn lock_waiters(conn: &mut AsyncPgConnection) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Waiting {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let waiting: Waiting = diesel::sql_query(
        "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .get_result(conn)
    .await
    .unwrap();
    waiting.n
}

async fn wait_for_lock_waiters(watcher: &Mutex<AsyncPgConnection>, what: &str, n: i64) {
    wait_until(what, Duration::from_secs(30), || async {
        (lock_waiters(&mut *watcher.lock().await).await >= n).then_some(())
    })
    .await;
}

async fn remaining_in_postgres(iso: &Isolation, coupon: i64) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Remaining {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        remaining_quantity: i32,
    }
    let row: Remaining = diesel::sql_query(format!("SELECT remaining_quantity FROM coupon WHERE id = {coupon}"))
        .get_result(&mut iso.db.connect().await)
        .await
        .unwrap();
    i64::from(row.remaining_quantity)
}

/// Whether the customer's row carries coupon-api's estimate of its issuance
/// time (written before coupon-writer) rather than the event's.
async fn issued_at_estimated(iso: &Isolation, coupon: i64, customer: i64) -> bool {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        issued_at_estimated: bool,
    }
    let query = format!(
        "SELECT issued_at_estimated FROM customer_coupon WHERE coupon_id = {coupon} AND customer_id = {customer}"
    );
    let row: Row = diesel::sql_query(query).get_result(&mut iso.db.connect().await).await.unwrap();
    row.issued_at_estimated
}

#[tokio::test(flavor = "multi_thread")]
async fn a_coupon_is_redeemed_released_and_redeemed_again_with_one_event_per_change() {
    let iso = Isolation::with_usage_topics().await;
    let app = TestApp::spawn(iso.settings()).await;
    let coupon = app
        .create_coupon_with(coupon_body(
            10,
            json!({ "discount": { "type": "FIXED", "amount": 3000 }, "minOrderAmount": 5000 }),
        ))
        .await;
    let (_, shown) = app.get(&format!("/api/v1/coupons/{coupon}")).await;
    assert_eq!(shown["discount"], json!({ "type": "FIXED", "amount": 3000 }));
    assert_eq!(shown["minOrderAmount"], 5000);
    assert_eq!(shown["validUntil"], shown["endsAt"], "usable until the period ends by default");
    assert_eq!(app.issue(coupon, 7).await.0, StatusCode::CREATED);

    // No coupon-writer runs: the coupon is only in Redis (and Kafka), and still usable.
    let (status, used) = app.post_as_service(&redeem_path(7, coupon), &order("o-1", 10_000)).await;
    assert_eq!(status, StatusCode::OK, "{used}");
    assert_eq!(
        used,
        json!({ "couponId": coupon, "customerId": 7, "orderId": "o-1", "discountAmount": 3000, "status": "USED" })
    );
    assert_eq!(remaining_in_postgres(&iso, coupon).await, 9, "the API wrote the issuance as the writer would");
    assert_eq!(
        app.post_as_service(&redeem_path(7, coupon), &order("o-1", 10_000)).await,
        (StatusCode::OK, used.clone())
    );
    let (status, body) = app.post_as_service(&redeem_path(7, coupon), &order("o-2", 10_000)).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::CONFLICT, Some("ALREADY_USED")));
    let (status, body) = app.post_as_service(&release_path(7, coupon), &json!({ "orderId": "o-2" })).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::CONFLICT, Some("NOT_USED_BY_ORDER")));

    let (status, released) = app.post_as_service(&release_path(7, coupon), &json!({ "orderId": "o-1" })).await;
    assert_eq!(status, StatusCode::OK, "{released}");
    assert_eq!(released, json!({ "couponId": coupon, "customerId": 7, "orderId": "o-1", "status": "AVAILABLE" }));
    assert_eq!(
        app.post_as_service(&release_path(7, coupon), &json!({ "orderId": "o-1" })).await,
        (StatusCode::OK, released)
    );

    let (status, again) = app.post_as_service(&redeem_path(7, coupon), &order("o-2", 20_000)).await;
    assert_eq!((status, &again["status"], &again["orderId"]), (StatusCode::OK, &json!("USED"), &json!("o-2")));
    let response =
        app.http.get(format!("{}/api/v1/customers/me/coupons", app.base)).bearer_auth(crate::harness::token(7));
    let held: Value = response.send().await.unwrap().json().await.unwrap();
    assert_eq!(held[0]["status"], "USED");
    assert_eq!(held[0]["orderId"], "o-2");
    assert_eq!(held[0]["discountAmount"], 3000);
    assert_eq!(held[0]["discount"], json!({ "type": "FIXED", "amount": 3000 }));

    // Three changes, three events, in the order they were made.
    let (used_topic, released_topic) = iso.usage_topics.as_ref().unwrap();
    let used_events = usage_events(used_topic, 2).await;
    let released_events = usage_events(released_topic, 1).await;
    assert_eq!(used_events.iter().map(|e| e.order_id.as_deref()).collect::<Vec<_>>(), [Some("o-1"), Some("o-2")]);
    assert!(used_events.iter().all(|e| e.kind == UsageKind::Used && e.discount_amount == 3000));
    assert_eq!(released_events[0].kind, UsageKind::Released);
    assert_eq!(released_events[0].order_id.as_deref(), Some("o-1"));
    assert!(used_events[0].event_id < released_events[0].event_id);
    assert!(released_events[0].event_id < used_events[1].event_id);
    app.stop().await;
}

// A test: one request and assertion per refusal.
#[allow(clippy::too_many_lines)]
#[tokio::test(flavor = "multi_thread")]
async fn every_refusal_has_its_code_and_changes_nothing() {
    let iso = Isolation::with_usage_topics().await;
    let app = TestApp::spawn(iso.settings()).await;
    let rate = json!({ "discount": { "type": "RATE", "percent": 30, "maxAmount": 5000 }, "minOrderAmount": 500 });
    let coupon = app.create_coupon_with(coupon_body(10, rate)).await;
    let plain = app.create_coupon_with(coupon_body(10, json!({}))).await;
    for c in [coupon, plain] {
        assert_eq!(app.issue(c, 7).await.0, StatusCode::CREATED);
    }
    let refused = |status: StatusCode, code: &str| (status, Some(code.to_string()));
    let outcome = |(status, body): (StatusCode, Value)| (status, body["code"].as_str().map(str::to_string));

    assert_eq!(
        outcome(app.post_as_service(&redeem_path(8, coupon), &order("o-1", 1_000)).await),
        refused(StatusCode::NOT_FOUND, "NOT_HELD")
    );
    assert_eq!(
        outcome(app.post_as_service(&redeem_path(7, 999_999), &order("o-1", 1_000)).await),
        refused(StatusCode::NOT_FOUND, "COUPON_NOT_FOUND")
    );
    assert_eq!(
        outcome(app.post_as_service(&redeem_path(7, coupon), &order("o-1", 499)).await),
        refused(StatusCode::UNPROCESSABLE_ENTITY, "BELOW_MINIMUM")
    );
    assert_eq!(
        outcome(app.post_as_service(&redeem_path(7, plain), &order("o-1", 1_000)).await),
        refused(StatusCode::UNPROCESSABLE_ENTITY, "NOT_REDEEMABLE")
    );
    assert_eq!(
        outcome(app.post_as_service(&release_path(7, coupon), &json!({ "orderId": "o-1" })).await),
        refused(StatusCode::CONFLICT, "NOT_USED_BY_ORDER")
    );
    for bad in [
        json!({ "orderId": "", "orderAmount": 1_000 }),
        json!({ "orderId": "o 1", "orderAmount": 1_000 }),
        json!({ "orderId": "o-1", "orderAmount": 0 }),
        json!({ "orderId": "o-1", "orderAmount": 1_000, "coupon": 1 }),
        json!({ "orderId": "o-1" }),
    ] {
        assert_eq!(
            outcome(app.post_as_service(&redeem_path(7, coupon), &bad).await).0,
            StatusCode::BAD_REQUEST,
            "{bad}"
        );
    }
    let anonymous = app.http.post(format!("{}{}", app.base, redeem_path(7, coupon))).json(&order("o-1", 1_000));
    assert_eq!(anonymous.send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let for_seven = redeem_path(7, coupon);

    // Refusals changed nothing: the rate discount still applies in full, rounded down.
    let (status, used) = app.post_admin(&for_seven, &order("o-1", 999)).await;
    assert_eq!((status, &used["discountAmount"]), (StatusCode::OK, &json!(299)), "{used}");
    let release_for_seven = release_path(7, coupon);
    assert_eq!(app.post_admin(&release_for_seven, &json!({ "orderId": "o-1" })).await.0, StatusCode::OK);
    let (_, capped) = app.post_as_service(&redeem_path(7, coupon), &order("o-2", 100_000)).await;
    assert_eq!(capped["discountAmount"], 5000, "30 % of 100,000 capped at 5,000");
    // Support staff's redeem and release are in the audit; the order service's are not.
    let (_, audit) = app.get(&format!("/api/v1/audit?couponId={coupon}")).await;
    let spent: Vec<(&str, &str)> = audit
        .as_array()
        .expect("a list")
        .iter()
        .map(|entry| (entry["action"].as_str().expect("an action"), entry["actor"].as_str().expect("an actor")))
        .collect();
    assert_eq!(spent, [("create", "admin:admin"), ("redeem", "admin:admin"), ("release", "admin:admin")], "{audit}");

    for bad in [
        json!({ "discount": { "type": "RATE", "percent": 0 } }),
        json!({ "discount": { "type": "RATE", "percent": 101 } }),
        json!({ "discount": { "type": "FIXED", "amount": 0 } }),
        json!({ "discount": { "type": "FIXED", "amount": 5, "percent": 5 } }),
        json!({ "discount": { "type": "BOGO" } }),
        json!({ "minOrderAmount": -1 }),
        json!({ "discunt": { "type": "FIXED", "amount": 5 } }),
    ] {
        let (status, body) = app.post_admin("/api/v1/coupons", &coupon_body(1, bad.clone())).await;
        assert_eq!((status, &body["code"]), (StatusCode::BAD_REQUEST, &json!("INVALID_REQUEST")), "{bad}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_held_coupon_past_its_validity_reads_expired_and_cannot_be_used() {
    let iso = Isolation::new().await;
    let app = TestApp::spawn(iso.settings()).await;
    let ended = app
        .create_coupon_with(json!({
            "name": "last week",
            "totalQuantity": 5,
            "startsAt": at(-time::Duration::days(7)),
            "endsAt": at(-time::Duration::days(1)),
            "discount": { "type": "FIXED", "amount": 1000 },
        }))
        .await;
    // Issued and written while it was open.
    diesel::sql_query(format!(
        "INSERT INTO customer_coupon (coupon_id, customer_id, issued_at) VALUES ({ended}, 7, now() - interval '3 days')"
    ))
    .execute(&mut iso.db.connect().await)
    .await
    .unwrap();

    let (status, body) = app.post_as_service(&redeem_path(7, ended), &order("o-1", 10_000)).await;
    assert_eq!((status, &body["code"]), (StatusCode::UNPROCESSABLE_ENTITY, &json!("EXPIRED")));
    let (_, held) = app.get("/api/v1/customers/7/coupons").await;
    assert_eq!(held[0]["status"], "EXPIRED");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn of_orders_racing_for_one_coupon_exactly_one_wins() {
    let iso = Isolation::with_usage_topics().await;
    let app = TestApp::spawn(iso.settings()).await;
    let coupon =
        app.create_coupon_with(coupon_body(10, json!({ "discount": { "type": "FIXED", "amount": 100 } }))).await;
    assert_eq!(app.issue(coupon, 7).await.0, StatusCode::CREATED);

    let (path, release_at) = (redeem_path(7, coupon), release_path(7, coupon));
    let orders: Vec<Value> = (0..16).map(|n| order(&format!("race-{n}"), 1_000)).collect();
    let answers = join_all(orders.iter().map(|body| app.post_as_service(&path, body))).await;
    let winners: Vec<&Value> = answers.iter().filter(|(s, _)| *s == StatusCode::OK).map(|(_, b)| b).collect();
    assert_eq!(winners.len(), 1, "{answers:?}");
    assert!(answers.iter().all(|(s, b)| *s == StatusCode::OK || b["code"] == "ALREADY_USED"), "{answers:?}");
    let winner = winners[0]["orderId"].as_str().unwrap().to_string();

    // A release of the winner racing a redeem by another order: either the
    // release came first (both succeed, the other order holds it) or the
    // redeem did (refused; the coupon is available).
    for round in 0..10 {
        let current = if round == 0 { winner.clone() } else { format!("round-{}", round - 1) };
        let next = format!("round-{round}");
        let (release, redeem) = (json!({ "orderId": current }), order(&next, 1_000));
        let (released, redeemed) =
            tokio::join!(app.post_as_service(&release_at, &release), app.post_as_service(&path, &redeem));
        assert_eq!(released.0, StatusCode::OK, "{released:?}");
        let (_, held) = app.get("/api/v1/customers/7/coupons").await;
        match redeemed.0 {
            StatusCode::OK => assert_eq!((&held[0]["status"], &held[0]["orderId"]), (&json!("USED"), &json!(next))),
            StatusCode::CONFLICT => {
                assert_eq!(redeemed.1["code"], "ALREADY_USED");
                assert_eq!(held[0]["status"], "AVAILABLE");
                let (status, _) = app.post_as_service(&path, &order(&next, 1_000)).await;
                assert_eq!(status, StatusCode::OK);
            }
            other => panic!("redeem answered {other}: {:?}", redeemed.1),
        }
    }

    // One event per successful change: 1 + 10 uses, 10 releases.
    let (used_topic, released_topic) = iso.usage_topics.as_ref().unwrap();
    let (used, released) = tokio::join!(usage_events(used_topic, 11), usage_events(released_topic, 10));
    let ids: std::collections::BTreeSet<i64> = used.iter().chain(&released).map(|e| e.event_id).collect();
    assert_eq!(ids.len(), 21, "distinct event ids");
    app.stop().await;
}

/// Issue 33, part 1: coupon-writer's statement for the batch that holds a
/// customer and the coupon's last units waits for the coupon's row lock (held
/// here as psql would), and the customer's redeem, finding no row yet, waits
/// behind it for the same lock. Once the writer commits, the customer holds a
/// row, and the redeem answers from it instead of `NOT_HELD`.
#[tokio::test(flavor = "multi_thread")]
async fn a_redeem_that_waited_for_the_writers_commit_answers_from_the_row_it_wrote() {
    const STOCK: i64 = 3;
    let iso = Isolation::with_usage_topics().await;
    let app = TestApp::spawn(iso.settings()).await;
    let coupon =
        app.create_coupon_with(coupon_body(STOCK, json!({ "discount": { "type": "FIXED", "amount": 100 } }))).await;
    // No coupon-writer runs yet: the issuances wait in Kafka.
    for customer in 1..=STOCK {
        assert_eq!(app.issue(coupon, customer).await.0, StatusCode::CREATED);
    }

    let mut psql = iso.db.connect().await;
    diesel::sql_query("BEGIN").execute(&mut psql).await.unwrap();
    diesel::sql_query(format!("SELECT 1 FROM coupon WHERE id = {coupon} FOR NO KEY UPDATE"))
        .execute(&mut psql)
        .await
        .unwrap();
    let writer = iso.start_writer().await;
    let watcher = Mutex::new(iso.db.connect().await);
    wait_for_lock_waiters(&watcher, "coupon-writer's statement to wait for the coupon's lock", 1).await;

    let (path, body) = (redeem_path(1, coupon), order("o-1", 1_000));
    let (redeemed, ()) = tokio::join!(app.post_as_service(&path, &body), async {
        wait_for_lock_waiters(&watcher, "the redeem to wait for the coupon's lock", 2).await;
        diesel::sql_query("COMMIT").execute(&mut psql).await.unwrap();
    });
    assert_eq!(
        redeemed,
        (
            StatusCode::OK,
            json!({ "couponId": coupon, "customerId": 1, "orderId": "o-1", "discountAmount": 100, "status": "USED" })
        )
    );
    assert_eq!(remaining_in_postgres(&iso, coupon).await, 0, "the writer took the stock; the redeem took none");
    let (_, held) = app.get("/api/v1/customers/1/coupons").await;
    assert_eq!((&held[0]["status"], &held[0]["orderId"]), (&json!("USED"), &json!("o-1")), "{held}");
    writer.stop().await;
    app.stop().await;
}

/// Issue 33, part 1, the other branch: Redis lost a coupon whose period
/// ended (it is not rebuilt: nothing is issued any more), so it cannot say
/// who holds it, and coupon-writer may still have a customer's issuance to
/// apply. While the coupon is usable and ended less than a day ago (as long as
/// Redis keeps an ended coupon), a customer without a row is answered `503`,
/// never a final `NOT_HELD`; one with a row redeems as usual.
#[tokio::test(flavor = "multi_thread")]
async fn a_customer_without_a_row_is_not_told_not_held_after_redis_lost_a_recently_ended_coupon() {
    let iso = Isolation::with_usage_topics().await;
    let app = TestApp::spawn(iso.settings()).await;
    let ended = |ago: time::Duration| {
        json!({
            "name": "ended",
            "totalQuantity": 10,
            "startsAt": at(-ago - time::Duration::hours(1)),
            "endsAt": at(-ago),
            "validUntil": at(time::Duration::days(7)),
            "discount": { "type": "FIXED", "amount": 100 },
        })
    };
    let recent = app.create_coupon_with(ended(time::Duration::hours(1))).await;
    let long_ago = app.create_coupon_with(ended(time::Duration::days(2))).await;
    let mut redis = redis().await;
    for coupon in [recent, long_ago] {
        let keys = CouponKeys::new(&iso.key_prefix.to_string(), CouponId::new(coupon).unwrap());
        let _: () = redis.del(&[keys.meta, keys.stock, keys.issued, keys.outbox]).await.unwrap();
    }
    // Customer 7's issuance was written before Redis lost the coupon.
    diesel::sql_query(format!(
        "INSERT INTO customer_coupon (coupon_id, customer_id, issued_at) VALUES ({recent}, 7, now() - interval '2 hours')"
    ))
    .execute(&mut iso.db.connect().await)
    .await
    .unwrap();

    let response = app
        .http
        .post(format!("{}{}", app.base, redeem_path(8, recent)))
        .bearer_auth(crate::harness::service_token())
        .json(&order("o-8", 1_000))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key(reqwest::header::RETRY_AFTER));
    assert_eq!(response.json::<Value>().await.unwrap()["code"], "UNAVAILABLE");
    let (status, used) = app.post_as_service(&redeem_path(7, recent), &order("o-7", 1_000)).await;
    assert_eq!((status, &used["status"]), (StatusCode::OK, &json!("USED")), "{used}");
    // Ended two days ago: the writer has had its time, and the answer is final.
    let (status, body) = app.post_as_service(&redeem_path(8, long_ago), &order("o-8", 1_000)).await;
    assert_eq!((status, &body["code"]), (StatusCode::NOT_FOUND, &json!("NOT_HELD")));
    app.stop().await;
}

/// Issue 33, part 2: an order whose use was released never uses the coupon
/// again (`ORDER_RELEASED`), however late its retry comes; a retried release
/// answers as the first; a new order id may redeem. One event per change:
/// exactly one use and one release per order.
#[tokio::test(flavor = "multi_thread")]
async fn a_released_order_never_uses_the_coupon_again_and_a_new_order_may() {
    let iso = Isolation::with_usage_topics().await;
    let app = TestApp::spawn(iso.settings()).await;
    let coupon =
        app.create_coupon_with(coupon_body(10, json!({ "discount": { "type": "FIXED", "amount": 3000 } }))).await;
    assert_eq!(app.issue(coupon, 7).await.0, StatusCode::CREATED);
    let redeem = async |order_id: &str| app.post_as_service(&redeem_path(7, coupon), &order(order_id, 10_000)).await;
    let release =
        async |order_id: &str| app.post_as_service(&release_path(7, coupon), &json!({ "orderId": order_id })).await;
    let refused = |(status, body): (StatusCode, Value)| (status, body["code"].as_str().map(str::to_string));
    let order_released = (StatusCode::CONFLICT, Some("ORDER_RELEASED".to_string()));
    let held = async || app.get("/api/v1/customers/7/coupons").await.1[0].clone();

    assert_eq!(redeem("o-1").await.0, StatusCode::OK);
    let (status, released) = release("o-1").await;
    assert_eq!(status, StatusCode::OK, "{released}");
    assert_eq!(refused(redeem("o-1").await), order_released, "a late retry of the cancelled order");
    assert_eq!(held().await["status"], "AVAILABLE", "the refusal changed nothing");
    assert_eq!(release("o-1").await, (StatusCode::OK, released.clone()), "a retried release");

    assert_eq!(redeem("o-2").await.0, StatusCode::OK);
    assert_eq!(refused(redeem("o-1").await), order_released, "also while another order uses it");
    assert_eq!(release("o-2").await.0, StatusCode::OK);
    assert_eq!(release("o-1").await, (StatusCode::OK, released), "not only the last released order");
    assert_eq!(refused(redeem("o-2").await), order_released);
    let (status, used) = redeem("o-3").await;
    assert_eq!((status, &used["orderId"]), (StatusCode::OK, &json!("o-3")), "{used}");
    let now = held().await;
    assert_eq!((&now["status"], &now["orderId"]), (&json!("USED"), &json!("o-3")));

    let (used_topic, released_topic) = iso.usage_topics.as_ref().unwrap();
    let (used, released) =
        tokio::join!(usage_events_per_order(used_topic, "o-3"), usage_events_per_order(released_topic, "o-2"));
    let once = |orders: &[&str]| orders.iter().map(|o| (o.to_string(), 1)).collect::<BTreeMap<_, _>>();
    assert_eq!(used, once(&["o-1", "o-2", "o-3"]), "one use event per order");
    assert_eq!(released, once(&["o-1", "o-2"]), "one release event per order");
    app.stop().await;
}

/// A customer can neither redeem nor release (it would set its own order
/// amount, and release and redeem again); the order service can, and only
/// with the scope for each.
#[tokio::test(flavor = "multi_thread")]
async fn only_the_order_service_and_support_staff_spend_a_coupon() {
    let iso = Isolation::with_usage_topics().await;
    let app = TestApp::spawn(iso.settings()).await;
    let coupon =
        app.create_coupon_with(coupon_body(1, json!({ "discount": { "type": "FIXED", "amount": 1000 } }))).await;
    assert_eq!(app.issue(coupon, 7).await.0, StatusCode::CREATED);
    let forbidden = |(status, body): (StatusCode, Value)| {
        assert_eq!((status, body["code"].as_str()), (StatusCode::FORBIDDEN, Some("FORBIDDEN")), "{body}");
    };
    // The customer's own credential, on the customer's own coupon, either path.
    forbidden(app.post_as(7, &redeem_path(7, coupon), &order("o-1", 10_000)).await);
    forbidden(app.post_as(7, &release_path(7, coupon), &json!({ "orderId": "o-1" })).await);
    let me = format!("/api/v1/customers/me/coupons/{coupon}/release");
    forbidden(app.post_as(7, &me, &json!({ "orderId": "o-1" })).await);
    // A service token with only one of the scopes.
    let redeem_only = crate::harness::signer()
        .service("orders", &[coupon_infra::auth::SCOPE_REDEEM], Duration::from_secs(60))
        .unwrap();
    let release = app
        .http
        .post(format!("{}{}", app.base, release_path(7, coupon)))
        .bearer_auth(redeem_only)
        .json(&json!({ "orderId": "o-1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(release.status(), StatusCode::FORBIDDEN);
    // Nothing was used by any of that; the service redeems and releases.
    let (status, used) = app.post_as_service(&redeem_path(7, coupon), &order("o-1", 10_000)).await;
    assert_eq!((status, &used["status"]), (StatusCode::OK, &json!("USED")), "{used}");
    let (status, released) = app.post_as_service(&release_path(7, coupon), &json!({ "orderId": "o-1" })).await;
    assert_eq!((status, &released["status"]), (StatusCode::OK, &json!("AVAILABLE")), "{released}");
}

/// Support staff revoke an unused coupon with its unit returned to stock,
/// even one coupon-writer has not written yet (the writer's later insert
/// leaves it revoked and counts nothing twice): it reads `REVOKED`, cannot be
/// redeemed, is not issued to that customer again, and its event and audit
/// entry go out. A used coupon, one revoked already, one not held and a bad
/// body are refused and change nothing.
#[tokio::test(flavor = "multi_thread")]
async fn support_staff_revoke_an_unused_coupon_and_it_can_no_longer_be_redeemed() {
    let iso = Isolation::with_usage_topics().await;
    let app = TestApp::spawn(iso.settings()).await;
    let coupon = app.create_coupon_with(coupon_body(5, json!({"discount": {"type": "FIXED", "amount": 1000}}))).await;
    let revoke = |customer: i64| format!("/api/v1/customers/{customer}/coupons/{coupon}");
    let fraud = json!({"reason": "  a fraudulent account ", "returnToStock": true});
    assert_eq!(app.issue(coupon, 1).await.0, StatusCode::CREATED);

    for bad in [json!({}), json!({"reason": " "}), json!({"reason": "x", "allowReissue": 1}), json!({"reason": 7})] {
        assert_eq!(app.delete_admin(&revoke(1), &bad).await.0, StatusCode::BAD_REQUEST, "{bad}");
    }
    let as_customer = app.http.delete(format!("{}{}", app.base, revoke(1))).bearer_auth(token(1)).json(&fraud);
    assert_eq!(as_customer.send().await.unwrap().status(), StatusCode::UNAUTHORIZED);

    // Not written by coupon-writer yet: Redis says the customer holds it.
    let (status, revoked) = app.delete_admin(&revoke(1), &fraud).await;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    assert_eq!((&revoked["status"], &revoked["reason"]), (&json!("REVOKED"), &json!("a fraudulent account")));
    assert!(issued_at_estimated(&iso, coupon, 1).await, "written before the writer, on coupon-api's clock");
    let writer = iso.start_writer().await;
    app.persisted(coupon, 1).await;
    assert_eq!(app.issue(coupon, 2).await.0, StatusCode::CREATED);
    // The writer has applied what came before customer 2's issuance.
    app.persisted(coupon, 2).await;
    assert!(!issued_at_estimated(&iso, coupon, 1).await, "the writer gave the row its issuance's time");
    let (_, held) = app.get("/api/v1/customers/1/coupons").await;
    assert_eq!(held[0]["status"], "REVOKED", "the writer's insert left it revoked: {held}");
    // 5 - 2 rows + 1 returned, in both stores.
    assert_eq!(remaining_in_postgres(&iso, coupon).await, 4);
    assert_eq!(app.get(&format!("/api/v1/coupons/{coupon}")).await.1["remainingQuantity"], 4);

    let (status, refused) = app.post_admin(&redeem_path(1, coupon), &order("o-1", 5000)).await;
    assert_eq!((status, &refused["code"]), (StatusCode::CONFLICT, &json!("REVOKED")), "{refused}");
    assert_eq!(app.issue(coupon, 1).await.1["code"], "ALREADY_ISSUED", "the unit stays issued");
    let (status, again) = app.delete_admin(&revoke(1), &fraud).await;
    assert_eq!((status, &again["code"]), (StatusCode::CONFLICT, &json!("ALREADY_REVOKED")), "{again}");
    assert_eq!(app.post_admin(&redeem_path(2, coupon), &order("o-2", 5000)).await.0, StatusCode::OK);
    let (status, used) = app.delete_admin(&revoke(2), &fraud).await;
    assert_eq!((status, &used["code"]), (StatusCode::CONFLICT, &json!("ALREADY_USED")), "{used}");
    let (status, not_held) = app.delete_admin(&revoke(3), &fraud).await;
    assert_eq!((status, &not_held["code"]), (StatusCode::NOT_FOUND, &json!("NOT_HELD")), "{not_held}");
    let unknown = app.delete_admin("/api/v1/customers/1/coupons/999999", &fraud).await;
    assert_eq!(unknown.0, StatusCode::NOT_FOUND);

    let events = usage_events(&iso.revoked_topic.as_ref().unwrap().to_string(), 1).await;
    assert_eq!((events[0].kind, events[0].customer_id.get()), (UsageKind::Revoked, 1));
    assert_eq!((events[0].order_id.as_deref(), events[0].reason.as_deref()), (None, Some("a fraudulent account")));
    let (_, audit) = app.get(&format!("/api/v1/audit?couponId={coupon}")).await;
    let revokes: Vec<&Value> = audit.as_array().unwrap().iter().filter(|e| e["action"] == "revoke").collect();
    assert_eq!(revokes.len(), 1, "{audit}");
    assert_eq!(revokes[0]["actor"], "admin:admin");
    writer.stop().await;
    app.stop().await;
}

/// A revoke with `returnToStock` on a sold-out coupon: the unit is issuable
/// again, to another customer only; PostgreSQL's remaining quantity and
/// Redis's stock both count it, a repeat returns nothing more, and a rebuild
/// of the coupon from PostgreSQL keeps it.
#[tokio::test(flavor = "multi_thread")]
async fn a_unit_revoked_with_return_to_stock_is_issued_once_more_to_another_customer() {
    let iso = Isolation::with_usage_topics().await;
    let _writer = iso.start_writer().await;
    let app = TestApp::spawn(iso.settings()).await;
    let coupon = app.create_coupon_with(coupon_body(2, json!({}))).await;
    for customer in [1, 2] {
        assert_eq!(app.issue(coupon, customer).await.0, StatusCode::CREATED);
    }
    assert_eq!(app.issue(coupon, 3).await.1["code"], "SOLD_OUT");

    let revoke = json!({"reason": "fraud", "returnToStock": true});
    let (status, revoked) = app.delete_admin(&format!("/api/v1/customers/1/coupons/{coupon}"), &revoke).await;
    assert_eq!((status, &revoked["returnedToStock"]), (StatusCode::OK, &json!(true)), "{revoked}");
    let (status, again) = app.delete_admin(&format!("/api/v1/customers/1/coupons/{coupon}"), &revoke).await;
    assert_eq!((status, &again["code"]), (StatusCode::CONFLICT, &json!("ALREADY_REVOKED")), "{again}");
    assert_eq!(app.issue(coupon, 1).await.1["code"], "ALREADY_ISSUED", "not to the revoked customer");
    assert_eq!(app.issue(coupon, 3).await.0, StatusCode::CREATED, "the returned unit, once");
    assert_eq!(app.issue(coupon, 4).await.1["code"], "SOLD_OUT", "a repeated revoke returned nothing more");
    let rows_and_remaining = || async {
        let (_, view) = app.get(&format!("/api/v1/coupons/{coupon}/stats")).await;
        (view["persisted"] == 2 && view["revoked"] == 1).then_some(view)
    };
    let view = wait_until("coupon-writer's rows", Duration::from_secs(60), rows_and_remaining).await;
    assert_eq!((view["remaining"].as_i64(), view["pending"].as_i64()), (Some(0), Some(0)), "{view}");
    assert_eq!(remaining_in_postgres(&iso, coupon).await, 0, "2 - 3 rows + 1 returned");

    assert_eq!(app.post_admin(&format!("/api/v1/coupons/{coupon}/prime"), &json!({})).await.0, StatusCode::ACCEPTED);
    let answer = wait_until("the rebuild", Duration::from_secs(60), || async {
        let (_, body) = app.issue(coupon, 5).await;
        (body["code"] != "UNAVAILABLE").then_some(body)
    })
    .await;
    assert_eq!(answer["code"], "SOLD_OUT", "the rebuild counts the returned unit as issued again: {answer}");
    assert_eq!(app.issue(coupon, 1).await.1["code"], "ALREADY_ISSUED");
    app.stop().await;
}

/// A revoke with `allowReissue` lets that customer get the coupon again, once
/// per revocation: the unit goes back into stock, the customer's next
/// issuance replaces the revoked row, and the revoked issuance's event,
/// arriving late, changes nothing. Also when coupon-writer has written
/// neither yet, and across a rebuild from PostgreSQL.
#[tokio::test(flavor = "multi_thread")]
async fn a_customer_revoked_with_leave_to_reissue_gets_the_coupon_again_once() {
    let iso = Isolation::with_usage_topics().await;
    let app = TestApp::spawn(iso.settings()).await;
    let coupon = app.create_coupon_with(coupon_body(2, json!({"discount": {"type": "FIXED", "amount": 1000}}))).await;
    let revoke = |customer: i64| format!("/api/v1/customers/{customer}/coupons/{coupon}");
    let reissue = json!({"reason": "wrong account", "returnToStock": true, "allowReissue": true});
    let without_return = json!({"reason": "wrong account", "allowReissue": true});
    assert_eq!(app.issue(coupon, 1).await.0, StatusCode::CREATED);
    let (status, refused) = app.delete_admin(&revoke(1), &without_return).await;
    assert_eq!((status, &refused["code"]), (StatusCode::UNPROCESSABLE_ENTITY, &json!("REISSUE_NEEDS_RETURN")));

    // coupon-writer is not running: the revoke writes the first issuance.
    let (status, revoked) = app.delete_admin(&revoke(1), &reissue).await;
    assert_eq!((status, &revoked["reissueAllowed"]), (StatusCode::OK, &json!(true)), "{revoked}");
    let (status, again) = app.delete_admin(&revoke(1), &reissue).await;
    assert_eq!((status, &again["code"]), (StatusCode::CONFLICT, &json!("ALREADY_REVOKED")), "{again}");
    assert_eq!(app.issue(coupon, 1).await.0, StatusCode::CREATED, "issued again");
    assert_eq!(app.issue(coupon, 1).await.1["code"], "ALREADY_ISSUED");
    assert_eq!(app.issue(coupon, 2).await.0, StatusCode::CREATED);
    assert_eq!(app.issue(coupon, 3).await.1["code"], "SOLD_OUT", "one unit came back, and went out once");
    // The new issuance is usable before coupon-writer writes it.
    let (status, used) = app.post_admin(&redeem_path(1, coupon), &order("o-1", 5000)).await;
    assert_eq!((status, &used["status"]), (StatusCode::OK, &json!("USED")), "{used}");

    let writer = iso.start_writer().await;
    // Customer 2's issuance came after both of customer 1's.
    app.persisted(coupon, 2).await;
    let (_, held) = app.get("/api/v1/customers/1/coupons").await;
    assert_eq!(held[0]["status"], "USED", "the late events left the new issuance alone: {held}");
    assert_eq!(remaining_in_postgres(&iso, coupon).await, 0, "2 - 2 rows");
    let (_, view) = app.get(&format!("/api/v1/coupons/{coupon}/stats")).await;
    assert_eq!((view["persisted"].as_i64(), view["revoked"].as_i64()), (Some(2), Some(1)), "{view}");

    // Revoked with leave, then rebuilt from PostgreSQL: free to get it again, once.
    assert_eq!(app.delete_admin(&revoke(2), &reissue).await.0, StatusCode::OK);
    assert_eq!(app.post_admin(&format!("/api/v1/coupons/{coupon}/prime"), &json!({})).await.0, StatusCode::ACCEPTED);
    let answer = wait_until("the rebuild", Duration::from_secs(60), || async {
        let (_, body) = app.issue(coupon, 1).await;
        (body["code"] != "UNAVAILABLE").then_some(body)
    })
    .await;
    assert_eq!(answer["code"], "ALREADY_ISSUED", "{answer}");
    assert_eq!(app.issue(coupon, 2).await.0, StatusCode::CREATED, "issued again after the rebuild");
    assert_eq!(app.issue(coupon, 3).await.1["code"], "SOLD_OUT");
    let view = wait_until("the second reissue's row", Duration::from_secs(60), || async {
        let (_, view) = app.get(&format!("/api/v1/coupons/{coupon}/stats")).await;
        (view["persisted"] == 2 && view["pending"] == 0).then_some(view)
    })
    .await;
    assert_eq!((view["revoked"].as_i64(), view["remaining"].as_i64()), (Some(2), Some(0)), "{view}");
    let (_, held) = app.get("/api/v1/customers/2/coupons").await;
    assert_eq!(held[0]["status"], "AVAILABLE", "{held}");
    writer.stop().await;
    app.stop().await;
}
