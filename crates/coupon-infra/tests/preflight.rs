//! Start-up checks against a real Redis that is slow to give its first answer.

use std::time::Duration;

use coupon_infra::preflight::{self, Dependencies};
use coupon_infra::settings::RedisSettings;
use coupon_testkit::redis_node::{query, stall, RedisNode};
use secrecy::SecretString;

/// A wrong password behind a first answer that comes too late (a busy
/// server, a slow first TLS handshake on a busy host) still stops the
/// service: no answer in time is asked again, not taken for an outage at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_behind_a_late_first_answer_is_still_refused() {
    let redis = RedisNode::primary("preflight slow").await.expect("a Redis of its own");
    let _: String =
        query(&redis.url(), redis::cmd("CONFIG").arg("SET").arg("requirepass").arg("right")).await.expect("a password");
    let authenticated = format!("redis://:right@127.0.0.1:{}", redis.port());
    let stalled = stall(&authenticated, Duration::from_secs(3)).await;
    let settings = RedisSettings {
        url: redis.url(),
        password: Some(SecretString::from("wrong")),
        timeout: Duration::from_millis(500),
        ..Default::default()
    };
    let outcome = preflight::check(Dependencies { redis: Some(&settings), ..Default::default() }).await;
    stalled.await.expect("the stall ends");
    let refused = outcome.expect_err("a wrong password is a misconfiguration");
    assert_eq!(refused.dependency, "Redis");
    assert!(refused.reason.contains("authentication"), "{}", refused.reason);
}
