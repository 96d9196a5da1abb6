//! Redis key names, shared by coupon-api (which writes them) and the tools that
//! read them. Each coupon's keys share the hash tag `{<id>}`, so one script call
//! touches one Redis Cluster slot.

use crate::CouponId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CouponKeys {
    pub meta: String,
    pub stock: String,
    pub issued: String,
    pub outbox: String,
}

impl CouponKeys {
    pub fn new(prefix: &str, coupon: CouponId) -> Self {
        let base = format!("{prefix}coupon:{{{coupon}}}");
        Self {
            meta: format!("{base}:meta"),
            stock: format!("{base}:stock"),
            issued: format!("{base}:issued"),
            outbox: format!("{base}:outbox"),
        }
    }
}

/// The set of primed coupon ids, which the relay walks to find outboxes.
pub fn index_key(prefix: &str) -> String {
    format!("{prefix}coupons")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_one_hash_tag() {
        let keys = CouponKeys::new("t1:", CouponId::new(42).unwrap());
        assert_eq!(keys.meta, "t1:coupon:{42}:meta");
        assert_eq!(keys.stock, "t1:coupon:{42}:stock");
        assert_eq!(keys.issued, "t1:coupon:{42}:issued");
        assert_eq!(keys.outbox, "t1:coupon:{42}:outbox");
    }
}
