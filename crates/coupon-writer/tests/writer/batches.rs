//! Batches land as the right rows and quantities, once, whatever is redelivered.

use std::time::Duration;

use coupon_domain::CouponIssuedEvent;

use coupon_testkit::wait_until;

use crate::harness::{event, RunningWriter, World, TIMEOUT};

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_for_several_coupons_lands_in_one_transaction() {
    let world = World::new(3).await;
    let (a, b, c) = (world.coupon(10).await, world.coupon(5).await, world.coupon(3).await);
    let mut events: Vec<CouponIssuedEvent> = (1..=4).map(|n| event(a, n)).collect();
    events.extend((1..=5).map(|n| event(b, n)));
    events.extend((1..=2).map(|n| event(c, n)));
    world.send(&events).await;

    // The batch closes by count only once every event is in it.
    let mut settings = world.settings();
    settings.writer.batch_max_records = events.len();
    settings.writer.batch_max_wait = Duration::from_secs(20);
    let writer = RunningWriter::start(settings).await;
    world.wait_committed(events.len() as i64).await;

    let mut expected: Vec<(i64, i64)> = events.iter().map(|e| (e.coupon_id.get(), e.customer_id.get())).collect();
    expected.sort();
    assert_eq!(world.rows().await, expected);
    assert_eq!((world.remaining(a).await, world.remaining(b).await, world.remaining(c).await), (6, 0, 1));
    assert_eq!(writer.metric("coupon_writer_batches_applied_total").await, 1.0);
    assert_eq!(writer.metric("coupon_writer_db_transaction_seconds_count").await, 1.0, "one transaction");
    assert_eq!(writer.metric("coupon_writer_rows_inserted_total").await, 11.0);
    assert_eq!(writer.metric("coupon_writer_duplicates_skipped_total").await, 0.0);
    writer.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redelivered_events_change_nothing() {
    let world = World::new(2).await;
    let (a, b) = (world.coupon(10).await, world.coupon(10).await);
    let events = [event(a, 1), event(b, 1), event(a, 2), event(b, 2), event(a, 3), event(b, 3)];
    world.send(&events).await;
    let writer = RunningWriter::start(world.settings()).await;
    world.wait_committed(6).await;
    let rows = world.rows().await;
    assert_eq!(rows.len(), 6);
    assert_eq!((world.remaining(a).await, world.remaining(b).await), (7, 7));

    // The same events again, as a producer retry or a replay would send them.
    world.send(&events).await;
    world.wait_committed(12).await;
    assert_eq!(world.rows().await, rows);
    assert_eq!((world.remaining(a).await, world.remaining(b).await), (7, 7));
    assert_eq!(writer.metric("coupon_writer_duplicates_skipped_total").await, 6.0);
    writer.stop().await;

    // Everything once more: the group starts again from the first offset.
    world.reset_group_to_earliest().await;
    assert_eq!(world.committed().await, Some(0));
    let writer = RunningWriter::start(world.settings()).await;
    world.wait_committed(12).await;
    assert_eq!(world.rows().await, rows);
    assert_eq!((world.remaining(a).await, world.remaining(b).await), (7, 7));
    assert_eq!(writer.metric("coupon_writer_duplicates_skipped_total").await, 12.0);
    assert_eq!(writer.metric("coupon_writer_rows_inserted_total").await, 0.0);
    writer.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn batches_close_by_count_and_a_trickle_by_the_wait_limit() {
    let world = World::new(1).await;
    let coupon = world.coupon(1_000).await;
    // Already in the topic when the writer starts: two full batches, closed
    // by count long before the wait limit (which would take a batch of less).
    let events: Vec<CouponIssuedEvent> = (1..=200).map(|n| event(coupon, n)).collect();
    world.send(&events).await;
    let mut settings = world.settings();
    settings.writer.batch_max_records = 100;
    settings.writer.batch_ceiling_records = 100;
    settings.writer.batch_max_wait = Duration::from_secs(3);
    let writer = RunningWriter::start(settings).await;
    world.wait_committed(200).await;
    assert_eq!(writer.metric("coupon_writer_batches_applied_total").await, 2.0);
    assert_eq!(writer.metric(r#"coupon_writer_batch_size_bucket{le="50"}"#).await, 0.0, "no partial batch");
    assert_eq!(writer.metric("coupon_writer_batch_size_sum").await, 200.0);

    // One event at a time, far below the count limit: only the wait closes a batch.
    for (n, customer) in (1001..=1002).enumerate() {
        world.send(&[event(coupon, customer)]).await;
        writer.wait_metric("coupon_writer_batches_applied_total", 3.0 + n as f64).await;
    }
    world.wait_committed(202).await;
    assert_eq!(writer.metric("coupon_writer_batch_size_sum").await, 202.0);
    assert_eq!(world.remaining(coupon).await, 1_000 - 202);
    // librdkafka's statistics report the partition caught up.
    let lag = r#"coupon_writer_consumer_lag{partition="0"}"#;
    wait_until("the lag gauge to read 0", TIMEOUT, || async { (writer.sample(lag).await == Some(0.0)).then_some(()) })
        .await;
    writer.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backlog_s_last_batch_closes_when_the_partition_is_read_to_its_end() {
    let world = World::new(1).await;
    let coupon = world.coupon(1_000).await;
    // The first 100 fill a batch and grow the limit; the 50 after them are all
    // there is, and waiting for the limit would take ten minutes.
    let events: Vec<CouponIssuedEvent> = (1..=150).map(|n| event(coupon, n)).collect();
    world.send(&events).await;
    let mut settings = world.settings();
    settings.writer.batch_max_records = 100;
    settings.writer.batch_ceiling_records = 1_000;
    settings.writer.batch_max_wait = Duration::from_secs(600);
    let writer = RunningWriter::start(settings).await;
    world.wait_committed(150).await;
    assert_eq!(world.rows().await.len(), 150);
    assert_eq!(writer.metric("coupon_writer_batches_applied_total").await, 2.0);
    assert_eq!(writer.metric("coupon_writer_batch_size_sum").await, 150.0);
    writer.stop().await;
}
