//! Redis of the test's own (the shared one stays up) goes away under a running
//! coupon-api and comes back empty, and a replica that must confirm issuances
//! goes away.

use std::time::Duration;

use coupon_infra::settings::RedisMode;
use coupon_testkit::redis_node::{query, RedisNode, Sentinel};
use coupon_testkit::wait_until;
use reqwest::StatusCode;

use crate::harness::{app_on_own_redis, issue_while_redis_stalls, Isolation, TestApp};

/// While Redis is away issuance answers 503 and grants nothing; once it is
/// back the API reconnects by itself, finds the issue script missing (a new
/// incarnation), fences the coupon, and rebuilds it from PostgreSQL once
/// coupon-writer has applied what was issued before.
#[tokio::test(flavor = "multi_thread")]
async fn issuance_answers_503_while_redis_is_away_and_recovers_by_itself() {
    let iso = Isolation::new().await;
    let mut redis = RedisNode::primary("api-test redis").await.expect("a Redis of the test's own");
    let mut settings = iso.settings();
    settings.redis.url = redis.url();
    settings.recovery.sync_interval = Duration::from_millis(200);
    let app = TestApp::spawn(settings).await;
    let writer = iso.start_writer().await;
    let coupon = app.open_coupon(100).await;
    assert_eq!(app.issue(coupon, 1).await.0, StatusCode::CREATED);

    redis.kill();
    // The first request meets the broken connection: whether its script ran
    // is unknown to the API, so it may say UNCONFIRMED. The next one finds
    // no Redis to connect to: nothing changed.
    let (status, body) = app.issue(coupon, 2).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(matches!(body["code"].as_str(), Some("UNAVAILABLE" | "UNCONFIRMED")), "{body}");
    let (status, body) = app.issue(coupon, 3).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("UNAVAILABLE")));

    redis.restart_empty().await.expect("restarting Redis empty");
    let (status, _) = app.issue(coupon, 4).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "nothing is issued from a Redis that lost its data");
    let mut customer = 10;
    wait_until("issuance to work again", Duration::from_secs(30), || {
        customer += 1;
        let app = &app;
        async move { (app.issue(coupon, customer).await.0 == StatusCode::CREATED).then_some(()) }
    })
    .await;
    assert_eq!(app.issue(coupon, 1).await.1["code"], "ALREADY_ISSUED", "the holder comes back from PostgreSQL");
    writer.stop().await;
    app.stop().await;
}

/// With `redis.min_replicas = 1` a 201 means the replica has the issuance; a
/// replica that is gone turns the answer into `503 UNCONFIRMED` (issued, not
/// confirmed), and the customer can ask what became of it.
#[tokio::test(flavor = "multi_thread")]
async fn a_201_waits_for_the_replica_and_without_it_the_answer_is_unconfirmed() {
    let iso = Isolation::new().await;
    let primary = RedisNode::primary("api-test wait primary").await.expect("a primary");
    let mut replica = RedisNode::replica("api-test wait replica", &primary).await.expect("a replica");
    let mut settings = iso.settings();
    settings.redis.url = primary.url();
    settings.redis.min_replicas = 1;
    let app = TestApp::spawn(settings).await;
    let coupon = app.open_coupon(10).await;

    for customer in 1..=3 {
        assert_eq!(app.issue(coupon, customer).await.0, StatusCode::CREATED);
        let issued = format!("{}coupon:{{{coupon}}}:issued", iso.key_prefix);
        let on_replica: bool = query(&replica.url(), redis::cmd("SISMEMBER").arg(&issued).arg(customer))
            .await
            .expect("reading the replica");
        assert!(on_replica, "customer {customer}'s 201 came after the replica had it");
    }

    replica.kill();
    let (status, body) = app.issue(coupon, 4).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("UNCONFIRMED")));
    let (_, attempt) = app.get(&format!("/api/v1/coupons/{coupon}/customers/4")).await;
    assert_eq!(attempt["issued"], true, "the customer can learn that it holds the coupon");
    app.stop().await;
}

/// Issue 32, point 5a: a replica the sentinels would never promote
/// (`replica-priority 0`) can acknowledge a `WAIT`, so with
/// `redis.min_replicas = 1` it must not be the one that vouches for a `201`.
/// With the promotable replica gone, the answer is `503 UNCONFIRMED`.
#[tokio::test(flavor = "multi_thread")]
async fn a_replica_the_sentinels_would_not_promote_does_not_vouch_for_a_201() {
    let iso = Isolation::new().await;
    let primary = RedisNode::primary("api-test unpromotable primary").await.expect("a primary");
    let mut promotable = RedisNode::replica("api-test promotable replica", &primary).await.expect("a replica");
    let standby = RedisNode::replica("api-test unpromotable replica", &primary).await.expect("a replica");
    standby.config_set("replica-priority", "0").await.expect("replica-priority 0");
    let sentinel = Sentinel::start("api-test unpromotable sentinel", &primary, 2).await.expect("a sentinel");
    let mut settings = iso.settings();
    settings.redis.mode = RedisMode::Sentinel;
    settings.redis.url = sentinel.url();
    settings.redis.min_replicas = 1;
    let app = TestApp::spawn(settings).await;
    app.wait_metric("coupon_redis_unpromotable_replicas", 1.0).await;
    let coupon = app.open_coupon(10).await;
    assert_eq!(app.issue(coupon, 1).await.0, StatusCode::CREATED, "both replicas acknowledge");

    promotable.kill();
    let (status, body) = app.issue(coupon, 2).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("UNCONFIRMED")),
        "only the replica that can never become the primary has customer 2's issuance"
    );
    app.stop().await;
}

/// Two API replicas notice the same restart; exactly one rebuilds, and
/// neither issues before the rebuild.
#[tokio::test(flavor = "multi_thread")]
async fn with_two_replicas_one_rebuilds_and_neither_issues_before() {
    let iso = Isolation::new().await;
    let mut redis = RedisNode::primary("api-test two replicas").await.expect("a Redis of the test's own");
    let mut settings = iso.settings();
    settings.redis.url = redis.url();
    let apps = [TestApp::spawn(settings.clone()).await, TestApp::spawn(settings).await];
    let writer = iso.start_writer().await;
    let coupon = apps[0].open_coupon(100).await;
    let (status, body) = apps[1].issue(coupon, 1).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    redis.restart_empty().await.expect("restarting Redis empty");
    for (customer, app) in [(2, &apps[0]), (3, &apps[1])] {
        let (status, _) = app.issue(coupon, customer).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "no replica issues from the empty Redis");
    }
    let mut customer = 10;
    wait_until("issuance to work again", Duration::from_secs(30), || {
        customer += 1;
        let app = &apps[customer as usize % 2];
        async move { (app.issue(coupon, customer).await.0 == StatusCode::CREATED).then_some(()) }
    })
    .await;
    let mut rebuilds = 0.0;
    for app in &apps {
        rebuilds += app.metric("coupon_rebuilds_total").await;
    }
    assert_eq!(rebuilds, 1.0, "one rebuild for the one coupon, by one replica");
    writer.stop().await;
    for app in apps {
        app.stop().await;
    }
}

/// A coupon created on a Redis that restarted, before anything noticed the
/// restart, is new there, not lost: the recovery fences and rebuilds the
/// coupon that was there before, and lets the new one serve at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_coupon_created_on_a_restarted_redis_before_the_recovery_noticed_is_not_fenced() {
    let iso = Isolation::new().await;
    let mut redis = RedisNode::primary("api-test born here").await.expect("a Redis of the test's own");
    let mut settings = iso.settings();
    settings.redis.url = redis.url();
    // Only a request that meets the restart starts a pass.
    settings.recovery.sync_interval = Duration::from_secs(3_600);
    let app = TestApp::spawn(settings).await;
    let writer = iso.start_writer().await;
    let before = app.open_coupon(10).await;
    assert_eq!(app.issue(before, 1).await.0, StatusCode::CREATED);

    redis.restart_empty().await.expect("restarting Redis empty");
    // The readiness probe's PING meets the broken connection and the next
    // one connects anew, with no issuance that would start a pass.
    wait_until("coupon-api to reach the restarted Redis", Duration::from_secs(30), || async {
        (app.manage("/health/ready").await.0 == StatusCode::OK).then_some(())
    })
    .await;
    let created_after = app.open_coupon(10).await;
    let mut customer = 100;
    wait_until("the new coupon to issue", Duration::from_secs(30), || {
        customer += 1;
        let app = &app;
        async move { (app.issue(created_after, customer).await.0 == StatusCode::CREATED).then_some(()) }
    })
    .await;
    wait_until("the coupon from before the restart to be rebuilt", Duration::from_secs(30), || {
        customer += 1;
        let app = &app;
        async move { (app.issue(before, customer).await.0 == StatusCode::CREATED).then_some(()) }
    })
    .await;
    assert_eq!(app.issue(before, 1).await.1["code"], "ALREADY_ISSUED", "the holder comes back from PostgreSQL");
    assert_eq!(app.metric("coupon_rebuilds_total").await, 1.0, "only the coupon from before the restart is rebuilt");
    writer.stop().await;
    app.stop().await;
}

/// A failback: the former primary comes back as primary holding less than
/// its successor issued, with the issue script still in its cache (a
/// demoted Redis keeps it). It is a new incarnation all the same (a new
/// replication id): fenced and rebuilt from PostgreSQL, never sold from.
#[tokio::test(flavor = "multi_thread")]
async fn a_former_primary_that_comes_back_behind_its_successor_is_fenced_and_rebuilt() {
    const STOCK: i64 = 10;
    let iso = Isolation::new().await;
    let former = RedisNode::primary("api-test failback former").await.expect("a primary");
    let successor = RedisNode::replica("api-test failback successor", &former).await.expect("a replica");
    let mut settings = iso.settings();
    settings.redis.url = former.url();
    // Only a request that meets the failback starts a pass.
    settings.recovery.sync_interval = Duration::from_secs(3_600);
    let app = TestApp::spawn(settings).await;
    let writer = iso.start_writer().await;
    let coupon = app.open_coupon(STOCK).await;
    let issued = format!("{}coupon:{{{coupon}}}:issued", iso.key_prefix);
    let holders = |url: String| {
        let issued = issued.clone();
        async move { query::<i64>(&url, redis::cmd("SCARD").arg(&issued)).await.expect("SCARD") }
    };
    for customer in 1..=5 {
        assert_eq!(app.issue(coupon, customer).await.0, StatusCode::CREATED);
    }
    wait_until("the successor to have the first five", Duration::from_secs(30), || async {
        (holders(successor.url()).await == 5).then_some(())
    })
    .await;
    let _: () = query(&successor.url(), redis::cmd("REPLICAOF").arg("NO").arg("ONE")).await.expect("promoting");
    for customer in 6..=STOCK {
        assert_eq!(app.issue(coupon, customer).await.0, StatusCode::CREATED, "issued where the successor misses it");
    }

    // Demoted, resynchronised from its successor, promoted again; each time
    // its clients are disconnected, as redis-sentinel does.
    let _: () =
        query(&former.url(), redis::cmd("REPLICAOF").arg("127.0.0.1").arg(successor.port())).await.expect("demoting");
    former.wait_replica_of(successor.port(), Duration::from_secs(30)).await.expect("resynchronised");
    let _: () = query(&former.url(), redis::cmd("REPLICAOF").arg("NO").arg("ONE")).await.expect("failing back");
    let _: i64 = query(&former.url(), redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("normal")).await.unwrap();
    assert_eq!(holders(former.url()).await, 5, "the former primary came back without the last five");

    let mut customer = 100;
    let (status, body) = wait_until("an answer other than 503 after the failback", Duration::from_secs(60), || {
        customer += 1;
        let app = &app;
        async move {
            let (status, body) = app.issue(coupon, customer).await;
            (status != StatusCode::SERVICE_UNAVAILABLE).then_some((status, body))
        }
    })
    .await;
    assert_ne!(status, StatusCode::CREATED, "nothing is sold again from the older state");
    assert_eq!(body["code"], "SOLD_OUT", "rebuilt from PostgreSQL's {STOCK} holders");
    writer.stop().await;
    app.stop().await;
}

/// The last unit's reply is lost (Redis stalls past the API's timeout with
/// the script queued behind the stall): the customer is told `503
/// UNCONFIRMED`, the script then runs, and its outbox entry, whose id the
/// API never heard, is still relayed and written, so asking for the
/// customer resolves to issued and persisted.
#[tokio::test(flavor = "multi_thread")]
async fn an_issuance_whose_reply_was_lost_is_delivered_and_written() {
    let iso = Isolation::new().await;
    let (redis, app) = app_on_own_redis(&iso, "api-test lost reply", Duration::from_secs(1)).await;
    let writer = iso.start_writer().await;
    let coupon = app.open_coupon(2).await;
    // The first issuance claims the coupon for this replica's relay, which
    // needs Redis: the stall then hits the script of the last unit only.
    assert_eq!(app.issue(coupon, 1).await.0, StatusCode::CREATED);

    let attempt = issue_while_redis_stalls(&app, coupon, 2, &redis.url()).await;
    assert_eq!((attempt["issued"].as_bool(), attempt["persisted"].as_bool()), (Some(true), Some(true)), "{attempt}");
    writer.stop().await;
    app.stop().await;
}
