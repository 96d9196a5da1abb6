//! The acknowledger removes delivered outbox entries off the request path. A
//! stop does not strand what was handed to it before: it removes those
//! entries, so a restarted API does not send their events again.

use std::sync::Arc;

use coupon_api::delivery::outbox::{Acknowledger, Delivered, Outbox};
use coupon_api::store::CouponStore;
use coupon_domain::shards::CouponShard;
use coupon_domain::CouponId;
use coupon_infra::redis::SharedRedis;
use coupon_testkit::redis_settings;
use redis::streams::StreamRangeReply;
use redis::AsyncCommands;
use reqwest::StatusCode;
use tokio_util::sync::CancellationToken;

use crate::harness::{outbox_len, redis, Isolation, TestApp};
use crate::outbox::kafka_down;

#[tokio::test(flavor = "multi_thread")]
async fn entries_handed_over_before_the_stop_are_removed_even_when_the_stop_comes_first() {
    let iso = Isolation::new().await;
    // Kafka is down, so the entries stay in the outbox for this test to hand over.
    let app = TestApp::spawn(kafka_down(&iso)).await;
    let coupon = app.open_coupon(100).await;
    for customer in 1..=20 {
        assert_eq!(app.issue(coupon, customer).await.0, StatusCode::CREATED);
    }
    app.stop().await;
    let outbox_key = format!("{}coupon:{{{coupon}}}:outbox", iso.key_prefix);
    let entries: StreamRangeReply = redis().await.xrange_all(&outbox_key).await.unwrap();
    assert_eq!(entries.ids.len(), 20);

    let shared = Arc::new(SharedRedis::new(&redis_settings()).unwrap());
    let outbox = Arc::new(Outbox::new(Arc::new(CouponStore::new(shared, iso.key_prefix.to_string()))));
    let (queue, acknowledger) = Acknowledger::new(outbox);
    let shard = CouponShard::first(CouponId::new(coupon).unwrap());
    for entry in &entries.ids {
        queue.push(Delivered { shard, entry: entry.id.clone() });
    }
    let stop = CancellationToken::new();
    stop.cancel();
    acknowledger.run(stop).await;

    assert_eq!(outbox_len(&iso.key_prefix, coupon).await, 0, "every entry handed over before the stop is removed");
}
