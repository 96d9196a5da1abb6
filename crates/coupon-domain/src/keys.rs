//! Redis key names, shared by coupon-api (which writes them) and the tools that
//! read them. Each coupon's keys share the hash tag `{<id>}`, so one script call
//! touches one Redis Cluster slot.

use crate::shards::CouponShard;
use crate::CouponId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CouponKeys {
    pub meta: String,
    pub stock: String,
    pub issued: String,
    pub outbox: String,
    /// Outbox entries that could not be read as an issuance, moved here by
    /// the relay for an operator (never expires).
    pub outbox_malformed: String,
    /// The holders a rebuild stages before its script swaps them in.
    pub rebuild_staged: String,
    /// Holders whose revoked unit went back into stock (a set; each is still
    /// in `issued`): stock = total - issued + returned.
    pub returned: String,
    /// The returned holders a rebuild stages, as `rebuild_staged`.
    pub returned_staged: String,
    /// Customers whose holding was revoked with leave to get the coupon
    /// again (a hash: customer id -> the number their next issuance carries;
    /// they left `issued` when their unit went back).
    pub reissued: String,
    /// The reissued customers a rebuild stages, as `rebuild_staged`.
    pub reissued_staged: String,
    /// Issue answers by outcome, summed over every API replica (a hash).
    pub tally: String,
    /// Units issued per second, over every API replica: a ring of 64 slots,
    /// each `<unix second>:<count>`.
    pub issue_rate: String,
    /// Transfers this shard gave units to and has not yet seen received (a
    /// hash: transfer id -> `<receiving shard>:<units>`; crate::shards).
    pub transfers: String,
    /// The transfers this shard received (a set of ids), so a transfer given
    /// twice adds its units once.
    pub received: String,
}

impl CouponKeys {
    /// The keys of a coupon's first shard: all of an unsharded coupon's.
    pub fn new(prefix: &str, coupon: CouponId) -> Self {
        Self::of_shard(prefix, CouponShard::first(coupon))
    }

    /// The keys of one shard of a coupon. The first shard keeps the tag
    /// `{<id>}` coupons had before shards; shard `k` > 0 has `{<id>:<k>}`, a
    /// slot of its own.
    pub fn of_shard(prefix: &str, shard: CouponShard) -> Self {
        let base = format!("{prefix}coupon:{{{shard}}}");
        Self {
            meta: format!("{base}:meta"),
            stock: format!("{base}:stock"),
            issued: format!("{base}:issued"),
            outbox: format!("{base}:outbox"),
            outbox_malformed: format!("{base}:outbox:malformed"),
            rebuild_staged: format!("{base}:issued:rebuild"),
            returned: format!("{base}:returned"),
            returned_staged: format!("{base}:returned:rebuild"),
            reissued: format!("{base}:reissued"),
            reissued_staged: format!("{base}:reissued:rebuild"),
            tally: format!("{base}:tally"),
            issue_rate: format!("{base}:rate"),
            transfers: format!("{base}:transfers"),
            received: format!("{base}:received"),
        }
    }
}

/// The keys one system (one key prefix) shares over all its coupons and API
/// replicas. They share the hash tag `{coupons}`, so one script may touch
/// several of them on Redis Cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemKeys {
    base: String,
}

impl SystemKeys {
    pub fn new(prefix: &str) -> Self {
        Self { base: format!("{prefix}{{coupons}}") }
    }

    /// Sorted set of the coupons Redis holds, scored by the end of their
    /// period (ms), so ended ones are found without reading every coupon.
    pub fn index(&self) -> String {
        format!("{}:index", self.base)
    }

    /// Set of the coupons a recovery fenced and has not yet rebuilt.
    pub fn fenced(&self) -> String {
        format!("{}:fenced", self.base)
    }

    /// The Redis incarnation (`run_id:master_replid`) the recovery last made
    /// safe to issue from. It replicates, so a replica promoted later (a
    /// failback to a former primary included) holds an incarnation other
    /// than its own.
    pub fn trusted(&self) -> String {
        format!("{}:trusted", self.base)
    }

    /// Set of the API replicas that may hold outbox entries to relay.
    pub fn replicas(&self) -> String {
        format!("{}:replicas", self.base)
    }

    /// Exists (with a TTL) while the replica lives.
    pub fn alive(&self, replica: &str) -> String {
        format!("{}:alive:{replica}", self.base)
    }

    /// Set of the coupons whose outboxes the replica may have written to.
    pub fn claims(&self, replica: &str) -> String {
        format!("{}:claims:{replica}", self.base)
    }

    /// The recovery lock, kept outside the `{coupons}` tag as it always was,
    /// so replicas of before and after agree on it.
    pub fn recovery_lock(prefix: &str) -> String {
        format!("{prefix}recovery-lock")
    }

    /// Where the index lived before it was sorted by end (a set of ids); read
    /// once at start to carry a running system's coupons over.
    pub fn legacy_index(prefix: &str) -> String {
        format!("{prefix}coupons")
    }
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

    #[test]
    fn each_shard_has_a_tag_of_its_own_and_the_first_keeps_the_coupons() {
        let coupon = CouponId::new(42).unwrap();
        assert_eq!(CouponKeys::of_shard("t1:", CouponShard::first(coupon)), CouponKeys::new("t1:", coupon));
        let second = CouponKeys::of_shard("t1:", CouponShard { coupon, shard: 2 });
        assert_eq!(second.stock, "t1:coupon:{42:2}:stock");
        assert_eq!(second.transfers, "t1:coupon:{42:2}:transfers");
    }

    #[test]
    fn system_keys_share_one_hash_tag() {
        let keys = SystemKeys::new("t1:");
        for key in [keys.index(), keys.fenced(), keys.replicas(), keys.alive("r"), keys.claims("r")] {
            assert!(key.starts_with("t1:{coupons}:"), "{key}");
        }
    }
}
