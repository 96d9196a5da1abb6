//! A redeem that comes before the writer: coupon-api writes the customer's
//! row itself, stamped with its own clock and marked as an estimate. The
//! event, applied later, gives the row the issuance's own time and counts
//! nothing a second time.

use coupon_infra::db::schema::customer_coupon;
use coupon_writer::apply;
use coupon_writer::metrics::Metrics;
use diesel::{ExpressionMethods, QueryDsl};
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use time::OffsetDateTime;

use crate::harness::{event, World};

#[tokio::test(flavor = "multi_thread")]
async fn a_row_written_early_gets_its_issuances_time_and_is_not_counted_again() {
    let world = World::new(1).await;
    let coupon = world.coupon(2).await;
    let c = coupon.get();
    let pool = coupon_infra::db::pool(&world.db.settings()).unwrap();
    let holding = async || -> (OffsetDateTime, bool, String) {
        customer_coupon::table
            .filter(customer_coupon::coupon_id.eq(c))
            .select((customer_coupon::issued_at, customer_coupon::issued_at_estimated, customer_coupon::status))
            .first(&mut world.db.connect().await)
            .await
            .unwrap()
    };
    let issued = event(coupon, 7);
    // What coupon-api's redeem commits when the writer has not written the
    // issuance yet (catalog::grant with an estimate), on a clock a minute ahead.
    world
        .db
        .connect()
        .await
        .batch_execute(&format!(
            "INSERT INTO customer_coupon (coupon_id, customer_id, issued_at, issuance, issued_at_estimated, \
                 status, order_id, discount_amount, used_at) \
                 VALUES ({c}, 7, now() + interval '1 minute', 0, true, 'USED', 'o-1', 100, now()); \
             UPDATE coupon SET remaining_quantity = remaining_quantity - 1 WHERE id = {c}"
        ))
        .await
        .unwrap();

    let outcome = apply::apply(&pool, &Metrics::new(), &[&issued, &issued]).await.unwrap();
    assert_eq!((outcome.applied.inserted, outcome.applied.sold_out), (0, 0), "the row was counted when written");
    assert_eq!(holding().await, (issued.issued_at, false, "USED".to_string()), "the issuance's own time, the use kept");
    assert_eq!(world.remaining(coupon).await, 1);

    let later = coupon_domain::CouponIssuedEvent { issued_at: issued.issued_at + time::Duration::SECOND, ..issued };
    apply::apply(&pool, &Metrics::new(), &[&later]).await.unwrap();
    assert_eq!(holding().await.0, issued.issued_at, "a time once taken from an event stays");
    assert_eq!((world.rows().await, world.remaining(coupon).await), (vec![(c, 7)], 1));
}
