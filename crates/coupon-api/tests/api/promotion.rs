//! Pausing, resuming, ending and changing a live promotion: every replica
//! follows at once, a rebuild keeps the pause and the stock, Redis losing an
//! ended coupon does not reopen it, a stock changed mid-spike is issued and
//! written exactly, and each change is in the audit with its author.

use std::time::Duration;

use coupon_testkit::wait_until;
use futures::StreamExt;
use redis::AsyncCommands;
use reqwest::StatusCode;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;

use crate::harness::{redis, redis_stock, token, Isolation, TestApp, ADMIN_TOKEN};

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
    assert_eq!(actions, [("create", "admin:admin"), ("pause", "admin:admin"), ("resume", "admin:admin")], "{audit}");
    let created: Value = serde_json::from_str(audit[0]["after"].as_str().unwrap()).unwrap();
    assert_eq!((&audit[0]["before"], &created["totalQuantity"]), (&Value::Null, &json!(10)), "{audit}");
    let before: Value = serde_json::from_str(audit[1]["before"].as_str().unwrap()).unwrap();
    let after: Value = serde_json::from_str(audit[1]["after"].as_str().unwrap()).unwrap();
    assert_eq!((before["paused"].as_bool(), after["paused"].as_bool()), (Some(false), Some(true)));
    assert!(audit[1]["requestId"].as_str().is_some_and(|id| !id.is_empty()));
    assert_eq!(first.get("/api/v1/audit?limit=0").await.0, StatusCode::BAD_REQUEST);
    first.stop().await;
    second.stop().await;
}

/// A rebuild from PostgreSQL writes the coupon's Redis state anew: the pause
/// and a changed stock are part of it.
#[tokio::test(flavor = "multi_thread")]
async fn a_paused_coupon_keeps_its_pause_and_changed_stock_through_a_rebuild() {
    let iso = Isolation::new().await;
    let _writer = iso.start_writer().await;
    let app = TestApp::spawn(iso.settings()).await;
    let coupon = app.open_coupon(2).await;
    assert_eq!(app.issue(coupon, 1).await.0, StatusCode::CREATED);
    assert_eq!(app.post_admin(&control(coupon, "pause"), &json!({})).await.0, StatusCode::OK);
    let (status, raised) = app.patch_admin(&format!("/api/v1/coupons/{coupon}"), &json!({"totalQuantity": 4})).await;
    assert_eq!(status, StatusCode::OK, "{raised}");

    assert_eq!(app.post_admin(&control(coupon, "prime"), &json!({})).await.0, StatusCode::ACCEPTED);
    let answer = wait_until("the rebuild", Duration::from_secs(60), || async {
        let (_, body) = app.issue(coupon, 2).await;
        (body["code"] != "UNAVAILABLE").then_some(body)
    })
    .await;
    assert_eq!(answer["code"], "PAUSED", "{answer}");
    assert_eq!(app.post_admin(&control(coupon, "resume"), &json!({})).await.0, StatusCode::OK);
    let (_, audit) = app.get(&format!("/api/v1/audit?couponId={coupon}")).await;
    let actions: Vec<&str> = audit.as_array().expect("a list").iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(actions, ["create", "pause", "change", "prime", "resume"], "{audit}");
    let statuses: Vec<StatusCode> = futures::future::join_all((2..=5).map(|c| app.issue(coupon, c)))
        .await
        .into_iter()
        .map(|(status, _)| status)
        .collect();
    let issued = statuses.iter().filter(|s| **s == StatusCode::CREATED).count();
    assert_eq!(issued, 3, "the raised stock of 4, one held before: {statuses:?}");
    app.stop().await;
}

/// A coupon open now with a fixed discount, as support staff create it.
fn discounted(total: i64) -> Value {
    let now = time::OffsetDateTime::now_utc();
    json!({
        "name": "ten off",
        "totalQuantity": total,
        "startsAt": (now - time::Duration::hours(1)).format(&Rfc3339).unwrap(),
        "endsAt": (now + time::Duration::hours(1)).format(&Rfc3339).unwrap(),
        "discount": {"type": "FIXED", "amount": 1000},
    })
}

/// A raised stock is issuable at once on another replica, a lower one may
/// not go below the units issued, and each change is in the audit with the
/// totals before and after.
#[tokio::test(flavor = "multi_thread")]
async fn a_stock_is_raised_at_once_on_every_replica_and_lowered_no_further_than_issued() {
    let iso = Isolation::new().await;
    let (first, second) = (TestApp::spawn(iso.settings()).await, TestApp::spawn(iso.settings()).await);
    let coupon = first.create_coupon_with(discounted(3)).await;
    let path = format!("/api/v1/coupons/{coupon}");
    for customer in 1..=3 {
        assert_eq!(first.issue(coupon, customer).await.0, StatusCode::CREATED);
    }
    assert_eq!(second.issue(coupon, 4).await.1["code"], "SOLD_OUT");

    let (status, raised) = first.patch_admin(&path, &json!({"totalQuantity": 5})).await;
    let counts = |body: &Value| (body["totalQuantity"].as_i64(), body["remainingQuantity"].as_i64());
    assert_eq!((status, counts(&raised)), (StatusCode::OK, (Some(5), Some(2))), "{raised}");
    assert_eq!(second.issue(coupon, 4).await.0, StatusCode::CREATED, "the new units, on the other replica");

    let (status, below) = second.patch_admin(&path, &json!({"totalQuantity": 3})).await;
    assert_eq!((status, &below["code"]), (StatusCode::UNPROCESSABLE_ENTITY, &json!("BELOW_ISSUED")), "{below}");
    let (status, lowered) = second.patch_admin(&path, &json!({"totalQuantity": 4})).await;
    assert_eq!((status, counts(&lowered)), (StatusCode::OK, (Some(4), Some(0))), "{lowered}");
    assert_eq!(first.issue(coupon, 5).await.1["code"], "SOLD_OUT");

    let (_, audit) = first.get(&format!("/api/v1/audit?couponId={coupon}")).await;
    let totals: Vec<(i64, i64)> = audit
        .as_array()
        .expect("a list")
        .iter()
        .filter(|entry| entry["action"] == "change" && entry["actor"] == "admin:admin")
        .map(|entry| {
            let total = |side: &str| {
                let terms: Value = serde_json::from_str(entry[side].as_str().expect("JSON")).expect("JSON");
                terms["totalQuantity"].as_i64().expect("a total")
            };
            (total("before"), total("after"))
        })
        .collect();
    assert_eq!(totals, [(3, 5), (5, 4)], "one entry per change made: {audit}");
    first.stop().await;
    second.stop().await;
}

/// The name and end change; the policy only while nothing was issued; the
/// end must stay in the future; an ended promotion is not changed; bad
/// input is refused and changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_promotions_name_end_and_policy_change_within_their_bounds_and_bad_input_changes_nothing() {
    let iso = Isolation::new().await;
    let app = TestApp::spawn(iso.settings()).await;
    let now = time::OffsetDateTime::now_utc();
    let coupon = app.create_coupon_with(discounted(3)).await;
    let path = format!("/api/v1/coupons/{coupon}");
    assert_eq!(app.issue(coupon, 1).await.0, StatusCode::CREATED);

    let (status, locked) = app.patch_admin(&path, &json!({"discount": {"type": "RATE", "percent": 50}})).await;
    assert_eq!((status, &locked["code"]), (StatusCode::CONFLICT, &json!("POLICY_LOCKED")), "{locked}");
    // Whole seconds: PostgreSQL keeps microseconds.
    let later = (now + time::Duration::hours(3)).replace_nanosecond(0).unwrap().format(&Rfc3339).unwrap();
    let (status, changed) = app.patch_admin(&path, &json!({"name": "  twenty off ", "endsAt": later})).await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!((changed["name"].as_str(), changed["totalQuantity"].as_i64()), (Some("twenty off"), Some(3)));
    let ends = |body: &Value| time::OffsetDateTime::parse(body["endsAt"].as_str().unwrap(), &Rfc3339).unwrap();
    assert_eq!(ends(&changed), time::OffsetDateTime::parse(&later, &Rfc3339).unwrap());

    let past = (now - time::Duration::minutes(1)).format(&Rfc3339).unwrap();
    let before_start = (now - time::Duration::hours(2)).format(&Rfc3339).unwrap();
    let refused = [
        (json!({}), StatusCode::BAD_REQUEST),
        (json!({"totalQuantity": 0}), StatusCode::BAD_REQUEST),
        (json!({"totalQuantity": 100_000_001}), StatusCode::BAD_REQUEST),
        (json!({"name": "  "}), StatusCode::BAD_REQUEST),
        (json!({"colour": "red"}), StatusCode::BAD_REQUEST),
        (json!({"discount": {"type": "RATE", "percent": 0}}), StatusCode::BAD_REQUEST),
        (json!({"endsAt": past}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"endsAt": before_start}), StatusCode::UNPROCESSABLE_ENTITY),
    ];
    for (body, expected) in refused {
        let (status, answer) = app.patch_admin(&path, &body).await;
        assert_eq!(status, expected, "{body}: {answer}");
    }
    assert_eq!(app.patch_admin("/api/v1/coupons/999999", &json!({"name": "x"})).await.0, StatusCode::NOT_FOUND);
    assert_eq!(app.patch_admin("/api/v1/coupons/zero", &json!({"name": "x"})).await.0, StatusCode::BAD_REQUEST);
    let as_customer = app.http.patch(format!("{}{path}", app.base)).bearer_auth(token(1)).json(&json!({"name": "x"}));
    assert_eq!(as_customer.send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let (_, unchanged) = app.get(&path).await;
    assert_eq!((unchanged["name"].as_str(), unchanged["totalQuantity"].as_i64()), (Some("twenty off"), Some(3)));
    assert_eq!(ends(&unchanged), ends(&changed), "{unchanged}");

    // Nothing issued yet: the policy may still change.
    let fresh = app.create_coupon_with(discounted(3)).await;
    let rate = json!({"type": "RATE", "percent": 30});
    let (status, repriced) = app.patch_admin(&format!("/api/v1/coupons/{fresh}"), &json!({"discount": rate})).await;
    assert_eq!((status, &repriced["discount"]), (StatusCode::OK, &rate), "{repriced}");
    assert_eq!(app.post_admin(&control(fresh, "end"), &json!({})).await.0, StatusCode::OK);
    let (status, ended) = app.patch_admin(&format!("/api/v1/coupons/{fresh}"), &json!({"totalQuantity": 9})).await;
    assert_eq!((status, &ended["code"]), (StatusCode::CONFLICT, &json!("ALREADY_ENDED")), "{ended}");
    app.stop().await;
}

/// Issues `customers` to `coupon`, alternating between two replicas, a
/// bounded number at a time; returns how many got a `201`.
async fn spike(apps: [&TestApp; 2], coupon: i64, customers: std::ops::RangeInclusive<i64>) -> usize {
    futures::stream::iter(customers)
        .map(|customer| apps[(customer % 2) as usize].issue(coupon, customer))
        .buffer_unordered(16)
        .filter(|(status, _)| futures::future::ready(*status == StatusCode::CREATED))
        .count()
        .await
}

/// Changes `coupon`'s total to `total` once Redis's stock is at most `below`.
async fn change_total_at(app: &TestApp, prefix: &str, coupon: i64, below: i64, total: i64) -> (StatusCode, Value) {
    wait_until("the spike to take stock", Duration::from_secs(60), || async {
        (redis_stock(prefix, coupon).await <= below).then_some(())
    })
    .await;
    app.patch_admin(&format!("/api/v1/coupons/{coupon}"), &json!({"totalQuantity": total})).await
}

/// PostgreSQL's rows for `coupon`, its remaining quantity, and its records of
/// customers Redis issued to but the writer found no stock for.
async fn written(iso: &Isolation, coupon: i64) -> (i64, i64, i64) {
    #[derive(diesel::QueryableByName)]
    struct Written {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        rows: i64,
        #[diesel(sql_type = diesel::sql_types::Integer)]
        remaining: i32,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        sold_out: i64,
    }
    let query = format!(
        "SELECT (SELECT count(*) FROM customer_coupon WHERE coupon_id = {coupon}) AS rows, \
         (SELECT remaining_quantity FROM coupon WHERE id = {coupon}) AS remaining, \
         (SELECT count(*) FROM sold_out_at_write WHERE coupon_id = {coupon}) AS sold_out"
    );
    let row: Written =
        diesel_async::RunQueryDsl::get_result(diesel::sql_query(query), &mut iso.db.connect().await).await.unwrap();
    (row.rows, i64::from(row.remaining), row.sold_out)
}

/// A stock raised, and one lowered, while two replicas issue: exactly the
/// new total is issued, and coupon-writer writes exactly that many rows,
/// none refused for want of stock, though events for the old total were
/// still on their way.
#[tokio::test(flavor = "multi_thread")]
async fn a_stock_changed_during_a_spike_on_two_replicas_is_issued_and_written_exactly() {
    let iso = Isolation::new().await;
    let _writer = iso.start_writer().await;
    let (first, second) = (TestApp::spawn(iso.settings()).await, TestApp::spawn(iso.settings()).await);
    let prefix = iso.key_prefix.to_string();

    let raised = first.open_coupon(50).await;
    let (issued, (status, body)) =
        tokio::join!(spike([&first, &second], raised, 1..=1_000), change_total_at(&second, &prefix, raised, 20, 150));
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(issued, 150, "exactly the raised total");

    let lowered = first.open_coupon(300).await;
    let (issued, (status, body)) =
        tokio::join!(spike([&first, &second], lowered, 1..=1_000), change_total_at(&first, &prefix, lowered, 250, 200));
    assert_eq!(status, StatusCode::OK, "lowered with about 50 of 300 issued: {body}");
    assert_eq!(issued, 200, "exactly the lowered total");

    for (coupon, total) in [(raised, 150), (lowered, 200)] {
        let rows = wait_until("coupon-writer's rows", Duration::from_secs(60), || async {
            let (rows, remaining, sold_out) = written(&iso, coupon).await;
            (rows == total).then_some((remaining, sold_out))
        })
        .await;
        assert_eq!(rows, (0, 0), "coupon {coupon}: nothing remaining and none refused");
    }
    first.stop().await;
    second.stop().await;
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

/// The live view sums the answers of both replicas by code, counts the
/// units issued per second, follows coupon-writer (persisted, pending) and
/// redemptions, and streams as Server-Sent Events until the service stops.
#[tokio::test(flavor = "multi_thread")]
async fn the_live_view_sums_every_replicas_answers_and_streams_until_the_service_stops() {
    let iso = Isolation::new().await;
    let _writer = iso.start_writer().await;
    let (first, second) = (TestApp::spawn(iso.settings()).await, TestApp::spawn(iso.settings()).await);
    let coupon = first.create_coupon_with(discounted(3)).await;
    let apps = [&first, &second];
    for customer in 1..=5 {
        apps[customer as usize % 2].issue(coupon, customer).await;
    }
    assert_eq!(second.issue(coupon, 1).await.1["code"], "ALREADY_ISSUED");
    assert_eq!(first.post_admin(&control(coupon, "pause"), &json!({})).await.0, StatusCode::OK);
    assert_eq!(first.issue(coupon, 6).await.1["code"], "PAUSED");
    let redeem = format!("/api/v1/customers/1/coupons/{coupon}/redeem");
    assert_eq!(first.post_admin(&redeem, &json!({"orderId": "o-1", "orderAmount": 5000})).await.0, StatusCode::OK);

    let path = format!("/api/v1/coupons/{coupon}/stats");
    let view = wait_until("both replicas' counts and the writer's rows", Duration::from_secs(30), || async {
        let (_, view) = second.get(&path).await;
        let issued_lately: i64 = view["issuedPerSecond"].as_array()?.iter().filter_map(Value::as_i64).sum();
        (view["persisted"] == 3
            && view["rejections"] == json!({"ALREADY_ISSUED": 1, "PAUSED": 1, "SOLD_OUT": 2})
            && issued_lately == 3)
            .then_some(view)
    })
    .await;
    let counts: Vec<i64> = ["totalQuantity", "issued", "remaining", "persisted", "pending", "redeemed"]
        .iter()
        .map(|field| view[field].as_i64().expect("a count"))
        .collect();
    assert_eq!(counts, [3, 3, 0, 3, 0, 1], "{view}");
    assert_eq!(first.get("/api/v1/coupons/999999/stats").await.0, StatusCode::NOT_FOUND);
    let as_customer = first.http.get(format!("{}{path}", first.base)).bearer_auth(token(1)).send().await;
    assert_eq!(as_customer.unwrap().status(), StatusCode::UNAUTHORIZED);

    let stream = |coupon: i64| {
        first.http.get(format!("{}/api/v1/coupons/{coupon}/stats/stream", first.base)).bearer_auth(ADMIN_TOKEN).send()
    };
    assert_eq!(stream(999_999).await.unwrap().status(), StatusCode::NOT_FOUND);
    let mut events = stream(coupon).await.unwrap();
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    let mut received = String::new();
    while received.matches("event: stats\n").count() < 2 {
        let chunk = events.chunk().await.unwrap().expect("the stream goes on while the service runs");
        received.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let data = received.lines().find_map(|line| line.strip_prefix("data: ")).expect("an event's data");
    assert_eq!(serde_json::from_str::<Value>(data).unwrap()["couponId"], coupon, "{received}");

    // A stream open does not hold the service's stop up: it ends.
    first.stop().await;
    while let Some(chunk) = events.chunk().await.unwrap_or(None) {
        assert!(!chunk.is_empty());
    }
    second.stop().await;
}

/// `{"redemption": false}` stops redemption along with issuance; a second
/// pause may let redemption go on while issuance stays paused; a resume
/// lets both go on; a bad body changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_pause_may_stop_redemption_too_until_the_resume() {
    let iso = Isolation::new().await;
    let app = TestApp::spawn(iso.settings()).await;
    let coupon = app.create_coupon_with(discounted(3)).await;
    assert_eq!(app.issue(coupon, 1).await.0, StatusCode::CREATED);
    let api = &app;
    let redeem = |order: &str| {
        let body = json!({"orderId": order, "orderAmount": 5000});
        async move { api.post_admin(&format!("/api/v1/customers/1/coupons/{coupon}/redeem"), &body).await }
    };

    for bad in [json!({"redemption": "no"}), json!({"redemptions": false}), json!([])] {
        let (status, body) = app.post_admin(&control(coupon, "pause"), &bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    assert_eq!(app.issue(coupon, 2).await.0, StatusCode::CREATED, "the refused pauses changed nothing");

    let (status, paused) = app.post_admin(&control(coupon, "pause"), &json!({"redemption": false})).await;
    assert_eq!(status, StatusCode::OK, "{paused}");
    let (status, refused) = redeem("o-1").await;
    assert_eq!((status, &refused["code"]), (StatusCode::CONFLICT, &json!("PAUSED")), "{refused}");
    assert_eq!(app.issue(coupon, 3).await.1["code"], "PAUSED");

    // Redemption back on, issuance still paused.
    assert_eq!(app.post_admin(&control(coupon, "pause"), &json!({})).await.0, StatusCode::OK);
    assert_eq!(redeem("o-1").await.0, StatusCode::OK);
    assert_eq!(app.issue(coupon, 3).await.1["code"], "PAUSED");
    let (status, again) = app.post_admin(&control(coupon, "pause"), &json!({"redemption": true})).await;
    assert_eq!((status, &again["code"]), (StatusCode::CONFLICT, &json!("ALREADY_PAUSED")), "{again}");

    assert_eq!(app.post_admin(&control(coupon, "pause"), &json!({"redemption": false})).await.0, StatusCode::OK);
    assert_eq!(app.post_admin(&control(coupon, "resume"), &json!({})).await.0, StatusCode::OK);
    assert_eq!(app.issue(coupon, 3).await.0, StatusCode::CREATED);
    let other = format!("/api/v1/customers/2/coupons/{coupon}/redeem");
    assert_eq!(app.post_admin(&other, &json!({"orderId": "o-2", "orderAmount": 5000})).await.0, StatusCode::OK);
    app.stop().await;
}
