//! coupon-api on a Redis Cluster of the test's own (three masters with a
//! replica each): coupons on every shard, and a master's failover noticed
//! (its promoted replica has no issue script), fenced and rebuilt.

use std::collections::BTreeSet;
use std::time::Duration;

use coupon_api::config::Settings;
use coupon_api::issuance::issuer::issue_script;
use coupon_infra::settings::RedisMode;
use coupon_testkit::redis_node::{query, RedisCluster};
use coupon_testkit::wait_until;
use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{issue_while_redis_stalls, Isolation, TestApp};

/// A Redis Cluster of the test's own, three masters with `replicas` each,
/// and settings in cluster mode that point at it.
pub async fn own_cluster(iso: &Isolation, name: &str, replicas: usize) -> (RedisCluster, Settings) {
    let cluster = RedisCluster::start(name, 3, replicas).await.expect("a Redis Cluster");
    let mut settings = iso.settings();
    settings.redis.mode = RedisMode::Cluster;
    settings.redis.url = cluster.seeds();
    (cluster, settings)
}

#[tokio::test(flavor = "multi_thread")]
async fn issues_on_every_shard_and_rebuilds_after_a_master_failover() {
    let iso = Isolation::new().await;
    let (mut cluster, mut settings) = own_cluster(&iso, "api-test cluster", 1).await;
    settings.recovery.sync_interval = Duration::from_millis(200);
    let app = TestApp::spawn(settings.clone()).await;
    let writer = iso.start_writer().await;

    let mut coupons = Vec::new();
    let mut masters = BTreeSet::new();
    for _ in 0..6 {
        let coupon = app.open_coupon(3).await;
        let meta = format!("{}coupon:{{{coupon}}}:meta", iso.key_prefix);
        masters.insert(cluster.master_of(&meta).await.expect("a master").port());
        assert_eq!(app.issue(coupon, 1).await.0, StatusCode::CREATED);
        assert_eq!(app.issue(coupon, 2).await.0, StatusCode::CREATED);
        assert_eq!(app.issue(coupon, 1).await.1["code"], "ALREADY_ISSUED");
        coupons.push(coupon);
    }
    assert!(masters.len() >= 2, "the coupons' slots spread over the masters: {masters:?}");
    // A replica holding the issue script would, once promoted, pass for the
    // primary it replaced.
    let issue_sha = redis::Script::new(&issue_script(&iso.key_prefix)).get_hash().to_string();
    for replica in cluster.replica_urls().await.expect("the replicas") {
        let exists: Vec<bool> =
            query(&replica, redis::cmd("SCRIPT").arg("EXISTS").arg(&issue_sha)).await.expect("SCRIPT EXISTS");
        assert_eq!(exists, [false], "{replica} holds the issue script");
    }

    let meta = format!("{}coupon:{{{}}}:meta", iso.key_prefix, coupons[0]);
    let old = cluster.master_of(&meta).await.expect("a master");
    let old_port = old.port();
    old.kill();
    wait_until("the replica to take the slot over", Duration::from_secs(60), || {
        let (cluster, meta) = (&cluster, &meta);
        async move { cluster.master_port_of(meta).await.ok().filter(|port| *port != old_port) }
    })
    .await;
    cluster.wait_ok(Duration::from_secs(60)).await.expect("the cluster is ok again");
    for &coupon in &coupons {
        let status = wait_until("issuance on the coupon again", Duration::from_secs(60), || {
            let app = &app;
            async move {
                let (status, _) = app.issue(coupon, 3).await;
                (status != StatusCode::SERVICE_UNAVAILABLE).then_some(status)
            }
        })
        .await;
        assert_eq!(status, StatusCode::CREATED, "coupon {coupon}");
        assert_eq!(app.issue(coupon, 1).await.1["code"], "ALREADY_ISSUED", "holders survive the failover");
        assert_eq!(app.issue(coupon, 4).await.1["code"], "SOLD_OUT", "stock survives the failover");
    }
    assert!(app.metric("coupon_redis_new_incarnations_total").await >= 1.0, "the promoted replica was noticed");
    writer.stop().await;
    app.stop().await;
}

/// Issue 32, point 1 in cluster mode: a master demoted in place (a manual
/// failover) keeps its script cache, so a failback to it would pass for the
/// master it replaced. coupon-api takes the issue script off replicas: once
/// demoted, the former master loses it, and the failback is noticed as a new
/// incarnation, fenced and rebuilt like any other.
#[tokio::test(flavor = "multi_thread")]
async fn a_master_demoted_in_place_loses_the_issue_script_and_its_failback_is_rebuilt() {
    let iso = Isolation::new().await;
    let (mut cluster, mut settings) = own_cluster(&iso, "api-test cluster failback", 1).await;
    settings.recovery.sync_interval = Duration::from_millis(200);
    let app = TestApp::spawn(settings).await;
    let writer = iso.start_writer().await;
    let coupon = app.open_coupon(3).await;
    assert_eq!(app.issue(coupon, 1).await.0, StatusCode::CREATED);
    let issue_sha = redis::Script::new(&issue_script(&iso.key_prefix)).get_hash().to_string();
    let holds_script = |url: String| {
        let sha = issue_sha.clone();
        async move {
            let exists: Vec<bool> = query(&url, redis::cmd("SCRIPT").arg("EXISTS").arg(&sha)).await.expect("EXISTS");
            exists == [true]
        }
    };

    let meta = format!("{}coupon:{{{coupon}}}:meta", iso.key_prefix);
    let mut failed_over = 0.0;
    for failover in ["to the replica", "back to the former master"] {
        let master = cluster.master_of(&meta).await.expect("the coupon's master");
        let (master_url, master_port) = (master.url(), master.port());
        let mut replica = None;
        for url in cluster.replica_urls().await.expect("the replicas") {
            let role: Vec<redis::Value> = query(&url, &redis::cmd("ROLE")).await.expect("ROLE");
            if role.get(2) == Some(&redis::Value::Int(i64::from(master_port))) {
                replica = Some(url);
            }
        }
        let replica = replica.expect("the master's replica");
        assert!(holds_script(master_url.clone()).await, "the master has the script before the failover {failover}");
        let _: String = query(&replica, redis::cmd("CLUSTER").arg("FAILOVER")).await.expect("CLUSTER FAILOVER");
        wait_until("the promoted replica to hold the slot", Duration::from_secs(60), || {
            let (cluster, meta) = (&cluster, &meta);
            async move { cluster.master_port_of(meta).await.ok().filter(|port| *port != master_port) }
        })
        .await;
        cluster.wait_ok(Duration::from_secs(60)).await.expect("the cluster is ok again");
        wait_until("coupon-api to take the script off the demoted master", Duration::from_secs(30), || {
            let url = master_url.clone();
            async { (!holds_script(url).await).then_some(()) }
        })
        .await;
        let status = wait_until("issuance on the coupon again", Duration::from_secs(60), || async {
            let (status, _) = app.issue(coupon, 1).await;
            (status != StatusCode::SERVICE_UNAVAILABLE).then_some(status)
        })
        .await;
        assert_eq!(status, StatusCode::CONFLICT, "customer 1 still holds it after the failover {failover}");
        let noticed = app.metric("coupon_redis_new_incarnations_total").await;
        assert!(noticed > failed_over, "the failover {failover} was noticed as a new incarnation");
        failed_over = noticed;
    }
    assert_eq!(app.issue(coupon, 2).await.0, StatusCode::CREATED);
    assert_eq!(app.issue(coupon, 3).await.0, StatusCode::CREATED);
    assert_eq!(app.issue(coupon, 4).await.1["code"], "SOLD_OUT", "the stock survives both failovers");
    writer.stop().await;
    app.stop().await;
}

/// In cluster mode too, a lost reply is never retried by the client (a
/// retry would answer ALREADY_ISSUED for a first attempt that issued): the
/// customer is told `503 UNCONFIRMED`, and the issuance is relayed and
/// written.
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_reply_on_a_cluster_is_unconfirmed_and_then_written() {
    let iso = Isolation::new().await;
    let (mut cluster, mut settings) = own_cluster(&iso, "api-test cluster lost reply", 0).await;
    settings.redis.timeout = Duration::from_secs(1);
    let app = TestApp::spawn(settings).await;
    let writer = iso.start_writer().await;
    let coupon = app.open_coupon(2).await;
    assert_eq!(app.issue(coupon, 1).await.0, StatusCode::CREATED);

    let meta = format!("{}coupon:{{{coupon}}}:meta", iso.key_prefix);
    let master = cluster.master_of(&meta).await.expect("the coupon's master").url();
    let attempt = issue_while_redis_stalls(&app, coupon, 2, &master).await;
    assert_eq!((attempt["issued"].as_bool(), attempt["persisted"].as_bool()), (Some(true), Some(true)), "{attempt}");
    writer.stop().await;
    app.stop().await;
}

/// An operator's controls on a Redis Cluster: coupons on every master are
/// paused, their stock raised and lowered, resumed and watched, each script
/// on its coupon's own slot.
#[tokio::test(flavor = "multi_thread")]
async fn a_promotion_is_paused_changed_and_watched_on_every_shard() {
    let iso = Isolation::new().await;
    let (mut cluster, settings) = own_cluster(&iso, "api-test cluster controls", 0).await;
    let app = TestApp::spawn(settings).await;

    let mut masters = BTreeSet::new();
    for _ in 0..6 {
        let coupon = app.open_coupon(2).await;
        let meta = format!("{}coupon:{{{coupon}}}:meta", iso.key_prefix);
        masters.insert(cluster.master_of(&meta).await.expect("a master").port());
        let path = format!("/api/v1/coupons/{coupon}");
        assert_eq!(app.issue(coupon, 1).await.0, StatusCode::CREATED);
        assert_eq!(app.post_admin(&format!("{path}/pause"), &json!({})).await.0, StatusCode::OK);
        assert_eq!(app.issue(coupon, 2).await.1["code"], "PAUSED", "coupon {coupon}");
        let (status, raised) = app.patch_admin(&path, &json!({"totalQuantity": 3})).await;
        assert_eq!((status, &raised["remainingQuantity"]), (StatusCode::OK, &json!(2)), "{raised}");
        assert_eq!(app.post_admin(&format!("{path}/resume"), &json!({})).await.0, StatusCode::OK);
        assert_eq!(app.issue(coupon, 2).await.0, StatusCode::CREATED, "coupon {coupon}");
        let (status, below) = app.patch_admin(&path, &json!({"totalQuantity": 1})).await;
        assert_eq!((status, &below["code"]), (StatusCode::UNPROCESSABLE_ENTITY, &json!("BELOW_ISSUED")));
        let (status, lowered) = app.patch_admin(&path, &json!({"totalQuantity": 2})).await;
        assert_eq!((status, &lowered["remainingQuantity"]), (StatusCode::OK, &json!(0)), "{lowered}");
        assert_eq!(app.issue(coupon, 3).await.1["code"], "SOLD_OUT", "coupon {coupon}");
        let view = wait_until("the coupon's counts", Duration::from_secs(30), || async {
            let (_, view) = app.get(&format!("{path}/stats")).await;
            (view["rejections"] == json!({"PAUSED": 1, "SOLD_OUT": 1})).then_some(view)
        })
        .await;
        assert_eq!((view["issued"].as_i64(), view["remaining"].as_i64()), (Some(2), Some(0)), "{view}");
    }
    assert!(masters.len() >= 2, "the coupons' slots spread over the masters: {masters:?}");
    let (_, page) = app.get("/api/v1/coupons?state=open").await;
    assert_eq!(page["coupons"].as_array().map(Vec::len), Some(6), "{page}");
    app.stop().await;
}
