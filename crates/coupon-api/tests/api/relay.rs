//! The relay's cost follows what is pending: an idle replica leaves Redis
//! alone however many coupons are open, and a dead replica's outbox entries
//! are taken over by another.

use std::time::Duration;

use coupon_domain::keys::{CouponKeys, SystemKeys};
use coupon_domain::CouponId;
use coupon_testkit::redis_node::{query, RedisNode};
use coupon_testkit::wait_until;
use reqwest::StatusCode;

use crate::harness::{consume_events, outbox_len, redis, Isolation, TestApp};

/// Commands Redis served since its statistics were last reset.
async fn commands_served(url: &str) -> u64 {
    let info: String = query(url, redis::cmd("INFO").arg("commandstats")).await.expect("INFO commandstats");
    info.lines().filter_map(|line| line.split_once("calls=")?.1.split(',').next()?.parse::<u64>().ok()).sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_replica_leaves_redis_alone_however_many_coupons_are_open() {
    const COUPONS: i64 = 300;
    /// Far below one command per open coupon: heartbeats, a periodic pass,
    /// and the test's own INFO and CONFIG.
    const IDLE_WINDOW_BUDGET: u64 = 25;
    let iso = Isolation::new().await;
    let redis = RedisNode::primary("api-test idle redis").await.expect("a Redis of the test's own");
    let mut settings = iso.settings();
    settings.redis.url = redis.url();
    let app = TestApp::spawn(settings).await;
    let mut coupons = Vec::new();
    for _ in 0..COUPONS {
        coupons.push(app.open_coupon(10).await);
    }
    for (customer, coupon) in coupons.iter().take(5).enumerate() {
        assert_eq!(app.issue(*coupon, customer as i64 + 1).await.0, StatusCode::CREATED);
    }

    // Once the relay has seen those outboxes drained, a window of two
    // seconds costs Redis a handful of commands; reading every coupon's
    // outbox every 100 ms would cost thousands.
    let url = redis.url();
    let served = wait_until("an idle window", Duration::from_secs(30), || {
        let url = url.clone();
        async move {
            let _: () = query(&url, redis::cmd("CONFIG").arg("RESETSTAT")).await.ok()?;
            tokio::time::sleep(Duration::from_secs(2)).await;
            let served = commands_served(&url).await;
            (served <= IDLE_WINDOW_BUDGET).then_some(served)
        }
    })
    .await;
    eprintln!("Redis served {served} commands in 2 s with {COUPONS} open coupons and no traffic");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_replicas_outbox_entries_are_relayed_by_another() {
    let iso = Isolation::new().await;
    let app = TestApp::spawn(iso.settings()).await;
    let coupon = app.open_coupon(10).await;

    // A replica that wrote an entry, claimed the coupon and died before
    // Kafka acknowledged: its alive key is gone, its claims remain. This
    // replica never wrote to the coupon, so only the takeover finds it.
    let system = SystemKeys::new(&iso.key_prefix);
    let outbox = CouponKeys::new(&iso.key_prefix, CouponId::new(coupon).unwrap()).outbox;
    let mut conn = redis().await;
    let issued_at = time::OffsetDateTime::now_utc().unix_timestamp() * 1_000;
    let _: String = redis::cmd("XADD")
        .arg(&outbox)
        .arg("*")
        .arg("customer")
        .arg(77)
        .arg("issued_at")
        .arg(issued_at)
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("SADD").arg(system.claims("dead")).arg(coupon).query_async(&mut conn).await.unwrap();
    let _: () = redis::cmd("SADD").arg(system.replicas()).arg("dead").query_async(&mut conn).await.unwrap();

    let events = consume_events(&iso.topic, 1).await;
    assert_eq!(events[0].1, coupon);
    assert_eq!(events[0].2, 77);
    wait_until("the taken-over outbox to drain", Duration::from_secs(30), || async {
        (outbox_len(&iso.key_prefix, coupon).await == 0).then_some(())
    })
    .await;
    let dead_known: bool =
        redis::cmd("SISMEMBER").arg(system.replicas()).arg("dead").query_async(&mut conn).await.unwrap();
    assert!(!dead_known, "the dead replica is forgotten once taken over");
    app.stop().await;
}
