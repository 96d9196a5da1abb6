//! Grouping a batch of events by coupon, so the writer issues one decrement per
//! coupon instead of one per event.

use std::collections::BTreeMap;

use crate::{CouponId, CouponIssuedEvent};

/// The events of one coupon within a batch, in arrival order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CouponBatch<'a> {
    pub coupon_id: CouponId,
    pub events: Vec<&'a CouponIssuedEvent>,
}

/// Groups events by coupon, ordered by coupon id so concurrent writers lock the
/// coupon rows in the same order and cannot deadlock each other.
pub fn group_by_coupon<'a>(events: impl IntoIterator<Item = &'a CouponIssuedEvent>) -> Vec<CouponBatch<'a>> {
    let mut groups: BTreeMap<CouponId, Vec<&'a CouponIssuedEvent>> = BTreeMap::new();
    for event in events {
        groups.entry(event.coupon_id).or_default().push(event);
    }
    groups.into_iter().map(|(coupon_id, events)| CouponBatch { coupon_id, events }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CustomerId;
    use time::OffsetDateTime;

    fn event(coupon: i64, customer: i64) -> CouponIssuedEvent {
        CouponIssuedEvent {
            coupon_id: CouponId::new(coupon).unwrap(),
            customer_id: CustomerId::new(customer).unwrap(),
            issued_at: OffsetDateTime::UNIX_EPOCH,
            issuance: 0,
        }
    }

    #[test]
    fn groups_in_coupon_order_keeping_arrival_order() {
        let events = [event(9, 1), event(3, 2), event(9, 3), event(3, 4)];
        let groups = group_by_coupon(&events);
        let shape: Vec<(i64, Vec<i64>)> = groups
            .iter()
            .map(|g| (g.coupon_id.get(), g.events.iter().map(|e| e.customer_id.get()).collect()))
            .collect();
        assert_eq!(shape, vec![(3, vec![2, 4]), (9, vec![1, 3])]);
    }

    #[test]
    fn empty_batch_has_no_groups() {
        assert!(group_by_coupon(&[]).is_empty());
    }
}
