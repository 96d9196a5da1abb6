//! A customer revoked with leave to get the coupon again: its next issuance
//! (numbered one higher) replaces the revoked row, once, and a late copy of
//! the revoked issuance's event changes nothing, alone or in one batch with
//! the new one.

use coupon_domain::CouponIssuedEvent;
use coupon_infra::db::schema::customer_coupon;
use coupon_writer::apply;
use coupon_writer::metrics::Metrics;
use diesel::{ExpressionMethods, QueryDsl};
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};

use crate::harness::{event, World};

#[tokio::test(flavor = "multi_thread")]
async fn a_reissue_replaces_the_revoked_row_and_late_copies_of_the_revoked_issuance_change_nothing() {
    let world = World::new(1).await;
    let coupon = world.coupon(1).await;
    let c = coupon.get();
    let pool = coupon_infra::db::pool(&world.db.settings()).unwrap();
    let apply = async |events: &[&CouponIssuedEvent]| apply::apply(&pool, &Metrics::new(), events).await.unwrap();
    let holding = async || -> (String, i32, bool) {
        customer_coupon::table
            .filter(customer_coupon::coupon_id.eq(c))
            .select((customer_coupon::status, customer_coupon::issuance, customer_coupon::reissuable))
            .first(&mut world.db.connect().await)
            .await
            .unwrap()
    };

    let revoked = event(coupon, 7);
    assert_eq!(apply(&[&revoked]).await.applied.inserted, 1);
    // What coupon-api's revoke with returnToStock and allowReissue commits.
    world
        .db
        .connect()
        .await
        .batch_execute(&format!(
            "UPDATE customer_coupon SET status = 'REVOKED', revoked_at = now(), revoke_reason = 'wrong account', \
                 stock_returned = true, reissuable = true WHERE coupon_id = {c}; \
             UPDATE coupon SET remaining_quantity = remaining_quantity + 1 WHERE id = {c}"
        ))
        .await
        .unwrap();

    assert_eq!(apply(&[&revoked]).await.applied.inserted, 0, "a late copy");
    assert_eq!(holding().await, ("REVOKED".into(), 0, true));
    assert_eq!(world.remaining(coupon).await, 1);

    let reissued =
        CouponIssuedEvent { issuance: 1, issued_at: revoked.issued_at + time::Duration::SECOND, ..revoked.clone() };
    assert_eq!(apply(&[&revoked, &reissued]).await.applied.inserted, 1, "the new issuance, once");
    assert_eq!(holding().await, ("AVAILABLE".into(), 1, false));
    assert_eq!(world.remaining(coupon).await, 0);

    let outcome = apply(&[&reissued, &revoked]).await;
    assert_eq!((outcome.applied.inserted, outcome.applied.sold_out), (0, 0), "copies of either");
    assert_eq!(holding().await, ("AVAILABLE".into(), 1, false));
    assert_eq!((world.rows().await, world.remaining(coupon).await), (vec![(c, 7)], 0));
}
