//! Events beyond a coupon's stock in PostgreSQL are recorded in
//! `sold_out_at_write`, once, and never dead-lettered; a writer that waited for
//! a coupon another writer was writing never decides on what it could not see.

use coupon_domain::{CouponId, CouponIssuedEvent, CustomerId};
use coupon_testkit::wait_until;
use coupon_writer::apply::{self, Applied};
use coupon_writer::metrics::Metrics;
use coupon_writer::statements::SoldOutReason;
use diesel::sql_types::BigInt;
use diesel::QueryableByName;
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use time::{Duration, OffsetDateTime};

use crate::harness::{RunningWriter, World, TIMEOUT};

const STOCK_EXHAUSTED: &str = SoldOutReason::StockExhausted.as_str();

/// Issued `seconds` after a common start.
fn issued(coupon: CouponId, customer: i64, start: OffsetDateTime, seconds: i64) -> CouponIssuedEvent {
    CouponIssuedEvent {
        coupon_id: coupon,
        customer_id: CustomerId::new(customer).unwrap(),
        issued_at: start + Duration::seconds(seconds),
        issuance: 0,
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc().replace_nanosecond(0).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_beyond_the_stock_grants_the_earliest_and_records_the_rest_once() {
    let world = World::new(1).await;
    let coupon = world.coupon(2).await;
    let c = coupon.get();
    let start = now();
    // Customer 5 was issued first, customer 1 last; customer 5's event twice.
    let mut events: Vec<CouponIssuedEvent> =
        (1..=5).map(|customer| issued(coupon, customer, start, 10 - customer)).collect();
    events.push(events[4].clone());
    world.send(&events).await;

    // One batch holding every event.
    let mut settings = world.settings();
    settings.writer.batch_max_records = events.len();
    settings.writer.batch_ceiling_records = events.len();
    settings.writer.batch_max_wait = std::time::Duration::from_secs(20);
    let writer = RunningWriter::start(settings).await;
    world.wait_committed(6).await;

    let rows = world.rows().await;
    let sold_out = world.sold_out().await;
    assert_eq!(rows, [(c, 4), (c, 5)], "the two earliest, the duplicate counted once");
    assert_eq!(sold_out, [1, 2, 3].map(|customer| (c, customer, STOCK_EXHAUSTED.to_string())));
    assert_eq!(world.remaining(coupon).await, 0);
    assert_eq!(writer.metric("coupon_writer_batches_applied_total").await, 1.0);
    assert_eq!(writer.metric("coupon_writer_rows_inserted_total").await, 2.0);
    assert_eq!(writer.metric("coupon_writer_sold_out_at_write_total").await, 3.0);
    assert_eq!(writer.metric("coupon_writer_duplicates_skipped_total").await, 1.0);
    assert_eq!(writer.metric("coupon_writer_dead_lettered_total").await, 0.0);
    assert!(world.dlq_entries().await.is_empty(), "nothing dead-lettered");

    // The same events again: nothing changes, nothing is recorded twice.
    world.send(&events).await;
    world.wait_committed(12).await;
    assert_eq!(world.rows().await, rows);
    assert_eq!(world.sold_out().await, sold_out);
    assert_eq!(world.remaining(coupon).await, 0);
    assert_eq!(writer.metric("coupon_writer_sold_out_at_write_total").await, 3.0);
    assert_eq!(writer.metric("coupon_writer_duplicates_skipped_total").await, 7.0);
    assert!(world.dlq_entries().await.is_empty(), "nothing dead-lettered");
    writer.stop().await;
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Another writer (partition key `customer`) commits a row for the coupon
/// while this one's statement, its snapshot already taken, waits for the
/// coupon's lock. Deciding on that snapshot would record customer 4, who
/// holds a row, as sold out; the statement defers the coupon instead and the
/// next one decides on a snapshot that sees the row.
#[tokio::test(flavor = "multi_thread")]
async fn a_writer_that_waited_for_the_coupon_lock_defers_rather_than_decide_on_a_stale_snapshot() {
    let world = World::new(1).await;
    let coupon = world.coupon(3).await;
    let c = coupon.get();

    let mut other = world.db.connect().await;
    other
        .batch_execute(&format!(
            "BEGIN; \
             SELECT id FROM coupon WHERE id = {c} FOR NO KEY UPDATE; \
             INSERT INTO customer_coupon (coupon_id, customer_id, issued_at) VALUES ({c}, 4, now()); \
             UPDATE coupon SET remaining_quantity = remaining_quantity - 1 WHERE id = {c}"
        ))
        .await
        .unwrap();

    let pool = coupon_infra::db::pool(&world.db.settings()).unwrap();
    let start = now();
    let events: Vec<CouponIssuedEvent> = (1..=4).map(|customer| issued(coupon, customer, start, customer)).collect();
    let applying = tokio::spawn(async move {
        let events: Vec<&CouponIssuedEvent> = events.iter().collect();
        apply::apply(&pool, &Metrics::new(), &events).await
    });

    wait_until("the batch statement to wait for the coupon's lock", TIMEOUT, || async {
        let waiting: Count = diesel::sql_query(
            "SELECT count(*) AS n FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .get_result(&mut world.db.connect().await)
        .await
        .unwrap();
        (waiting.n > 0).then_some(())
    })
    .await;
    other.batch_execute("COMMIT").await.unwrap();

    let outcome = applying.await.unwrap().unwrap();
    assert_eq!(outcome.transactions, 2, "deferred once, then decided on a fresh snapshot");
    assert_eq!(outcome.applied, Applied { inserted: 2, sold_out: 1, duplicates: 1 });
    assert!(outcome.rejected.is_empty());
    assert_eq!(world.rows().await, [(c, 1), (c, 2), (c, 4)]);
    assert_eq!(world.sold_out().await, [(c, 3, STOCK_EXHAUSTED.to_string())], "never customer 4");
    assert_eq!(world.remaining(coupon).await, 0);
}
