//! Sharded coupons (coupon_domain::shards): the stock spread over key sets
//! in slots of their own, which refill one another by transfers.

use std::collections::HashSet;

use futures::future::join_all;
use redis::AsyncCommands;
use reqwest::StatusCode;
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use coupon_testkit::redis_node::query;

use crate::cluster::own_cluster;
use crate::harness::{consume_events, redis, Isolation, TestApp};
use crate::memory::{on_own_redis, script_calls, until_answered_from_memory};
use crate::recovery::{settled_answer, wipe};

async fn open_sharded_coupon(app: &TestApp, total: i64, shards: i64) -> i64 {
    let now = OffsetDateTime::now_utc();
    app.create_coupon_with(json!({
        "name": "sharded coupon",
        "totalQuantity": total,
        "startsAt": (now - time::Duration::hours(1)).format(&Rfc3339).unwrap(),
        "endsAt": (now + time::Duration::hours(1)).format(&Rfc3339).unwrap(),
        "shards": shards,
    }))
    .await
}

fn shard_key(prefix: &str, coupon: i64, shard: i64, name: &str) -> String {
    match shard {
        0 => format!("{prefix}coupon:{{{coupon}}}:{name}"),
        shard => format!("{prefix}coupon:{{{coupon}:{shard}}}:{name}"),
    }
}

/// Each shard's stock, holders and transfers still open.
async fn shard_state(prefix: &str, coupon: i64, shards: i64) -> Vec<(i64, usize, usize)> {
    let mut redis = redis().await;
    let mut state = Vec::new();
    for shard in 0..shards {
        let stock: i64 = redis.get(shard_key(prefix, coupon, shard, "stock")).await.unwrap();
        let holders: usize = redis.scard(shard_key(prefix, coupon, shard, "issued")).await.unwrap();
        let open: usize = redis.hlen(shard_key(prefix, coupon, shard, "transfers")).await.unwrap();
        state.push((stock, holders, open));
    }
    state
}

/// Checks that no unit is left on any shard, in stock or in a transfer;
/// returns how many customers hold the coupon.
async fn nothing_left(prefix: &str, coupon: i64, shards: i64) -> usize {
    let state = shard_state(prefix, coupon, shards).await;
    assert!(state.iter().all(|(stock, _, open)| *stock == 0 && *open == 0), "a unit left: {state:?}");
    state.iter().map(|(_, holders, _)| holders).sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spike_on_a_sharded_coupon_issues_exactly_its_stock_from_every_shard_and_strands_nothing() {
    let iso = Isolation::new().await;
    let app = TestApp::spawn(iso.settings()).await;
    let coupon = open_sharded_coupon(&app, 100, 3).await;
    let (status, created) = app.get(&format!("/api/v1/coupons/{coupon}")).await;
    let read = (status, created["shards"].as_i64(), created["remainingQuantity"].as_i64());
    assert_eq!(read, (StatusCode::OK, Some(3), Some(100)), "the stock summed over the shards: {created}");

    let answers = join_all((1..=2_000).map(|customer| {
        let app = &app;
        async move { (customer, app.issue(coupon, customer).await) }
    }))
    .await;

    let winners: HashSet<i64> = answers
        .iter()
        .filter(|(_, (status, _))| *status == StatusCode::CREATED)
        .map(|(customer, _)| *customer)
        .collect();
    let sold_out = answers.iter().filter(|(_, (_, body))| body["code"] == "SOLD_OUT").count();
    assert_eq!((winners.len(), sold_out), (100, 1_900));
    assert_eq!(nothing_left(&iso.key_prefix, coupon, 3).await, 100);
    let shards = shard_state(&iso.key_prefix, coupon, 3).await;
    assert!(shards.iter().all(|(_, holders, _)| *holders > 0), "every shard issued: {shards:?}");
    let (_, view) = app.get(&format!("/api/v1/coupons/{coupon}/stats")).await;
    assert_eq!(view["remaining"].as_i64(), Some(0), "{view}");
    // SOLD_OUT on a sharded coupon comes only from a refill that surveyed every shard.
    assert!(app.metric(r#"coupon_shard_refills_total{outcome="sold_out"}"#).await >= 1.0);

    let delivered: HashSet<i64> =
        consume_events(&iso.topic, 100).await.into_iter().map(|(_, _, customer)| customer).collect();
    assert_eq!(delivered, winners);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_customers_on_two_replicas_get_one_unit_each_at_most() {
    let iso = Isolation::new().await;
    let (a, b) = (TestApp::spawn(iso.settings()).await, TestApp::spawn(iso.settings()).await);
    let coupon = open_sharded_coupon(&a, 300, 3).await;

    let answers = join_all(
        (1..=500).flat_map(|customer| [&a, &b].map(|app| async move { (customer, app.issue(coupon, customer).await) })),
    )
    .await;

    let mut winners = HashSet::new();
    for (customer, (status, body)) in &answers {
        match status {
            &StatusCode::CREATED => assert!(winners.insert(*customer), "customer {customer} got two units"),
            _ => assert!(["ALREADY_ISSUED", "SOLD_OUT"].contains(&body["code"].as_str().unwrap_or("")), "{body}"),
        }
    }
    assert_eq!(winners.len(), 300);
    assert_eq!(nothing_left(&iso.key_prefix, coupon, 3).await, 300);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transfer_left_open_by_a_dead_replica_is_finished_and_its_units_issued() {
    let iso = Isolation::new().await;
    let app = TestApp::spawn(iso.settings()).await;
    let coupon = open_sharded_coupon(&app, 6, 3).await;
    // A replica took shard 1's two units for shard 2 and died before giving them.
    let take = redis::Script::new(include_str!("../../src/issuance/refill/take.lua"));
    let (taken, _epoch): (i64, String) = take
        .key(shard_key(&iso.key_prefix, coupon, 1, "meta"))
        .key(shard_key(&iso.key_prefix, coupon, 1, "stock"))
        .key(shard_key(&iso.key_prefix, coupon, 1, "transfers"))
        .arg("dead-replica:1")
        .arg(2)
        .arg(2)
        .invoke_async(&mut redis().await)
        .await
        .unwrap();
    assert_eq!(taken, 2);

    let mut issued = 0;
    let mut customer = 0;
    loop {
        customer += 1;
        let (status, body) = app.issue(coupon, customer).await;
        match status {
            StatusCode::CREATED => issued += 1,
            _ => {
                assert_eq!(body["code"], "SOLD_OUT", "{body}");
                break;
            }
        }
    }
    assert_eq!(issued, 6, "the two units in flight were issued too");
    assert!(app.metric("coupon_shard_units_moved_total").await >= 2.0, "this replica gave the dead one's units");
    nothing_left(&iso.key_prefix, coupon, 3).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shard_count_out_of_bounds_is_refused_and_creates_nothing() {
    let iso = Isolation::new().await;
    let app = TestApp::spawn(iso.settings()).await;
    let now = OffsetDateTime::now_utc();
    for shards in [json!(0), json!(65), json!(-1), json!("3"), json!(1.5)] {
        let (status, body) = app
            .post_admin(
                "/api/v1/coupons",
                &json!({
                    "name": "bad shards",
                    "totalQuantity": 10,
                    "startsAt": now.format(&Rfc3339).unwrap(),
                    "endsAt": (now + time::Duration::hours(1)).format(&Rfc3339).unwrap(),
                    "shards": shards,
                }),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "shards {shards}: {body}");
    }
    let (_, listed) = app.get("/api/v1/coupons").await;
    assert_eq!(listed["coupons"].as_array().map(Vec::len), Some(0), "{listed}");
    app.stop().await;
}

/// Each customer in turn, retried while the answer is 503; how many got the
/// coupon and how many were told it is sold out.
async fn issue_settled(app: &TestApp, coupon: i64, customers: std::ops::RangeInclusive<i64>) -> (usize, usize) {
    let mut answers = Vec::new();
    for customer in customers {
        answers.push(settled_answer(app, coupon, customer).await);
    }
    let issued = answers.iter().filter(|(status, _)| *status == StatusCode::CREATED).count();
    let sold_out = answers.iter().filter(|(_, code)| code == "SOLD_OUT").count();
    (issued, sold_out)
}

/// Each customer in turn, once; the customers who got the coupon.
async fn issued_to(app: &TestApp, coupon: i64, customers: std::ops::RangeInclusive<i64>) -> Vec<i64> {
    let mut winners = Vec::new();
    for customer in customers {
        if app.issue(coupon, customer).await.0 == StatusCode::CREATED {
            winners.push(customer);
        }
    }
    winners
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wiped_redis_rebuilds_a_sharded_coupon_whole_and_sells_only_what_is_left() {
    let iso = Isolation::new().await;
    let app = TestApp::spawn(iso.settings()).await;
    let coupon = open_sharded_coupon(&app, 30, 3).await;
    for customer in 1..=12 {
        assert_eq!(app.issue(coupon, customer).await.0, StatusCode::CREATED);
    }

    wipe(&iso.key_prefix).await;
    assert_eq!(app.post_admin(&format!("/api/v1/coupons/{coupon}/prime"), &json!({})).await.0, StatusCode::ACCEPTED);
    let writer = iso.start_writer().await;
    assert_eq!(issue_settled(&app, coupon, 100..=140).await, (18, 23), "exactly the 18 left are sold");
    for customer in 1..=12 {
        assert_eq!(app.issue(coupon, customer).await.1["code"], "ALREADY_ISSUED", "customer {customer}");
    }
    assert_eq!(nothing_left(&iso.key_prefix, coupon, 3).await, 30);
    writer.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_shard_lost_has_the_whole_coupon_rebuilt_and_nothing_oversold() {
    let iso = Isolation::new().await;
    let app = TestApp::spawn(iso.settings()).await;
    let writer = iso.start_writer().await;
    let coupon = open_sharded_coupon(&app, 30, 3).await;
    for customer in 1..=12 {
        assert_eq!(app.issue(coupon, customer).await.0, StatusCode::CREATED);
    }

    // The master that held shard 1 lost it; the others still hold theirs.
    let mut redis = redis().await;
    let lost: Vec<String> = redis.keys(shard_key(&iso.key_prefix, coupon, 1, "*")).await.unwrap();
    let _: () = redis.del(lost).await.unwrap();
    assert_eq!(issue_settled(&app, coupon, 100..=140).await, (18, 23), "exactly the 18 left are sold");
    nothing_left(&iso.key_prefix, coupon, 3).await;
    writer.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sharded_coupon_is_paused_resumed_and_its_stock_raised_and_lowered_on_every_shard() {
    let iso = Isolation::new().await;
    let app = TestApp::spawn(iso.settings()).await;
    let coupon = open_sharded_coupon(&app, 30, 3).await;
    for customer in 1..=6 {
        assert_eq!(app.issue(coupon, customer).await.0, StatusCode::CREATED);
    }
    let path = format!("/api/v1/coupons/{coupon}");

    assert_eq!(app.post_admin(&format!("{path}/pause"), &json!({})).await.0, StatusCode::OK);
    for customer in 100..=120 {
        assert_eq!(app.issue(coupon, customer).await.1["code"], "PAUSED", "customer {customer}, on every shard");
    }
    assert_eq!(app.post_admin(&format!("{path}/resume"), &json!({})).await.0, StatusCode::OK);

    // 24 units are left, about 8 on each shard: lowering the total by 18
    // takes units from every shard.
    let (status, lowered) = app.patch_admin(&path, &json!({"totalQuantity": 12})).await;
    assert_eq!(status, StatusCode::OK, "{lowered}");
    assert_eq!(issue_settled(&app, coupon, 100..=140).await, (6, 35));
    let (status, raised) = app.patch_admin(&path, &json!({"totalQuantity": 14})).await;
    assert_eq!(status, StatusCode::OK, "{raised}");
    assert_eq!(issue_settled(&app, coupon, 200..=210).await, (2, 9));
    let (status, below) = app.patch_admin(&path, &json!({"totalQuantity": 13})).await;
    assert_eq!((status, below["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("BELOW_ISSUED")), "{below}");

    assert_eq!(nothing_left(&iso.key_prefix, coupon, 3).await, 14);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_unit_revoked_back_to_stock_on_its_home_shard_is_issued_once_more_from_any_shard() {
    let iso = Isolation::with_usage_topics().await;
    let _writer = iso.start_writer().await;
    let app = TestApp::spawn(iso.settings()).await;
    let coupon = open_sharded_coupon(&app, 3, 3).await;
    let winners = issued_to(&app, coupon, 1..=20).await;
    assert_eq!(winners.len(), 3);

    let revoked = winners[0];
    let revoke = json!({"reason": "fraud", "returnToStock": true});
    let (status, body) = app.delete_admin(&format!("/api/v1/customers/{revoked}/coupons/{coupon}"), &revoke).await;
    assert_eq!((status, &body["returnedToStock"]), (StatusCode::OK, &json!(true)), "{body}");
    assert_eq!(app.issue(coupon, revoked).await.1["code"], "ALREADY_ISSUED", "not to the revoked customer");
    assert_eq!(issue_settled(&app, coupon, 100..=120).await, (1, 20), "the returned unit, once");

    assert_eq!(app.post_admin(&format!("/api/v1/coupons/{coupon}/prime"), &json!({})).await.0, StatusCode::ACCEPTED);
    assert_eq!(
        settled_answer(&app, coupon, 200).await.1,
        "SOLD_OUT",
        "the rebuild counts the returned unit as issued again"
    );
    assert_eq!(app.issue(coupon, revoked).await.1["code"], "ALREADY_ISSUED");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sold_out_sharded_coupon_is_refused_from_memory_until_stock_is_added() {
    let iso = Isolation::new().await;
    let (_redis, settings) = on_own_redis(&iso, "api-test sharded memory").await;
    let app = TestApp::spawn(settings).await;
    let coupon = open_sharded_coupon(&app, 3, 3).await;
    let winners = issued_to(&app, coupon, 1..=20).await;
    assert_eq!(winners.len(), 3);
    assert_eq!(until_answered_from_memory(&app, coupon, 100).await["code"], "SOLD_OUT");

    let calls = script_calls(&app).await;
    assert_eq!(app.issue(coupon, winners[2]).await.1["code"], "ALREADY_ISSUED", "a holder of any shard");
    for customer in 101..130 {
        assert_eq!(app.issue(coupon, customer).await.1["code"], "SOLD_OUT");
    }
    assert_eq!(script_calls(&app).await, calls, "answered without Redis");

    let (status, raised) = app.patch_admin(&format!("/api/v1/coupons/{coupon}"), &json!({"totalQuantity": 4})).await;
    assert_eq!(status, StatusCode::OK, "{raised}");
    assert_eq!(app.issue(coupon, 200).await.0, StatusCode::CREATED, "the added unit, from whichever shard");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn on_a_redis_cluster_a_sharded_coupon_is_decided_on_several_masters_and_sells_out_exactly() {
    let iso = Isolation::new().await;
    let (mut cluster, settings) = own_cluster(&iso, "api-test sharded cluster", 0).await;
    let app = TestApp::spawn(settings).await;
    let coupon = open_sharded_coupon(&app, 60, 3).await;
    let mut masters = std::collections::BTreeSet::new();
    for shard in 0..3 {
        let meta = shard_key(&iso.key_prefix, coupon, shard, "meta");
        masters.insert(cluster.master_of(&meta).await.expect("a master").port());
    }
    assert!(masters.len() >= 2, "the shards' slots spread over the masters: {masters:?}");

    let answers = join_all((1..=600).map(|customer| app.issue(coupon, customer))).await;
    let issued = answers.iter().filter(|(status, _)| *status == StatusCode::CREATED).count();
    let sold_out = answers.iter().filter(|(_, body)| body["code"] == "SOLD_OUT").count();
    assert_eq!((issued, sold_out), (60, 540));
    for shard in 0..3 {
        let stock_key = shard_key(&iso.key_prefix, coupon, shard, "stock");
        let transfers_key = shard_key(&iso.key_prefix, coupon, shard, "transfers");
        let node = cluster.master_of(&stock_key).await.expect("a master").url();
        let stock: i64 = query(&node, redis::cmd("GET").arg(&stock_key)).await.unwrap();
        let open: i64 = query(&node, redis::cmd("HLEN").arg(&transfers_key)).await.unwrap();
        assert_eq!((stock, open), (0, 0), "shard {shard}");
    }
    app.stop().await;
}
