//! Offsets are stored after each batch and committed by librdkafka on an
//! interval, when partitions are revoked and when the writer stops: a bounded
//! commit rate, and nothing applied left uncommitted by a graceful handover.

use std::time::Duration;

use coupon_domain::CouponIssuedEvent;

use crate::harness::{event, RunningWriter, World};

/// Long enough that no interval commit happens during a test.
const NO_INTERVAL_COMMIT: Duration = Duration::from_secs(600);

#[tokio::test(flavor = "multi_thread")]
async fn batches_do_not_commit_each_and_a_stop_commits_what_they_applied() {
    let world = World::new(1).await;
    let coupon = world.coupon(100).await;
    let mut settings = world.settings();
    settings.writer.batch_max_records = 1;
    settings.writer.batch_ceiling_records = 1;
    settings.writer.commit_interval = NO_INTERVAL_COMMIT;
    let writer = RunningWriter::start(settings).await;
    let events: Vec<CouponIssuedEvent> = (1..=20).map(|n| event(coupon, n)).collect();
    world.send(&events).await;
    writer.wait_metric("coupon_writer_batches_applied_total", 20.0).await;
    assert_eq!(world.committed().await, Some(0), "twenty batches applied, nothing committed before the interval");
    assert_eq!(writer.metric(r#"coupon_writer_offset_commits_total{result="committed"}"#).await, 0.0);

    writer.stop().await;
    assert_eq!(world.committed().await, Some(20), "stopping commits every applied batch");
    assert_eq!(world.rows().await.len(), 20);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoke_commits_what_the_old_owner_applied() {
    let world = World::new(2).await;
    let (a, b) = (world.coupon(100).await, world.coupon(100).await);
    let mut settings = world.settings();
    settings.writer.commit_interval = NO_INTERVAL_COMMIT;
    let first = RunningWriter::start(settings.clone()).await;
    let events: Vec<CouponIssuedEvent> = (1..=10).flat_map(|n| [event(a, n), event(b, n)]).collect();
    world.send(&events).await;
    world.wait_rows(events.len()).await;
    assert_eq!(world.committed().await, Some(0));

    // A second member joins: the rebalance revokes the first one's partitions,
    // which commits its stored offsets, so the new owners start after them.
    let second = RunningWriter::start(settings).await;
    world.wait_committed(events.len() as i64).await;
    assert!(
        first.metric(r#"coupon_writer_rebalances_total{event="revoked"}"#).await >= 1.0,
        "the first lost partitions"
    );
    assert!(first.metric(r#"coupon_writer_offset_commits_total{result="committed"}"#).await >= 1.0, "on revoke");
    assert_eq!(first.metric("coupon_writer_duplicates_skipped_total").await, 0.0);
    assert_eq!(second.metric("coupon_writer_duplicates_skipped_total").await, 0.0, "nothing redelivered");
    first.stop().await;
    second.stop().await;
    assert_eq!(world.rows().await.len(), events.len());
}
