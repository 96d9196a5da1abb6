//! The coupon state in Redis that every capability reads: each coupon's keys
//! (one hash tag per coupon, so each script touches one slot), the index of
//! coupons by end, and the incarnation record (`incarnation`). The scripts
//! that change a coupon live with the capability that calls them: issuance's
//! `issue.lua` and `create.lua`, delivery's `release.lua`, recovery's
//! `rebuild.lua`, `retire.lua`, `born_here.lua` and `unlock.lua`, promotion's
//! `control.lua` and `tally.lua`, redemption's `return.lua`.

pub mod incarnation;

use std::sync::Arc;

use coupon_domain::shards::{home_shard, CouponShard};
use coupon_domain::{CouponId, CustomerId};
use coupon_infra::redis::SharedRedis;
use futures::future::try_join_all;
use redis::{RedisError, Value};
use time::OffsetDateTime;

pub use coupon_domain::keys::{CouponKeys, SystemKeys};

/// Redis could not decide: unreachable, timed out, or answered something the
/// script never returns. In each case nothing was changed that we know of.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RedisUnavailable {
    #[error("Redis command failed: {0}")]
    Command(#[from] RedisError),
    #[error("unexpected reply from the issue script: {0:?}")]
    Reply(Value),
    /// `redis.min_replicas` replicas did not acknowledge a write in time: a
    /// primary that is being replaced may have taken it and lose it.
    #[error("the Redis replicas did not acknowledge the write in time")]
    NotReplicated,
}

/// A coupon's period and stock as Redis needs them.
#[derive(Debug, Clone)]
pub struct CouponState {
    pub id: CouponId,
    pub starts_at: OffsetDateTime,
    pub ends_at: OffsetDateTime,
    pub total_quantity: i32,
    /// Over how many shards its stock is spread (coupon_domain::shards).
    pub shards: u16,
    /// Who holds the coupon in PostgreSQL (none for a new coupon).
    pub holders: Holders,
    /// An operator's controls, as PostgreSQL has them.
    pub control: Control,
}

/// A coupon's holders, as a rebuild gives them to Redis.
#[derive(Debug, Clone, Default)]
pub struct Holders {
    /// Who holds it, revoked or not (`issued`).
    pub customers: Vec<i64>,
    /// Those whose revoked unit went back into stock (`returned`).
    pub returned: Vec<i64>,
    /// Customers with a reissue behind them, and the number their next (or
    /// current) issuance carries (`reissued`).
    pub reissued: Vec<(i64, i32)>,
}

/// An operator's controls of a coupon; `version` 0 for one never touched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Control {
    pub version: i64,
    /// Issuance paused (Redis's issue script answers `PAUSED`).
    pub paused: bool,
    /// Redemption paused with it (PostgreSQL's redeem answers `PAUSED`; Redis
    /// need not know).
    pub redemption_paused: bool,
}

/// What Redis holds for a coupon, as far as the recovery cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Ready,
    Fenced,
    /// No state at all, or only part of it (a wiped or half-created coupon).
    Missing,
}

/// One system's coupons in one Redis (standalone, sentinel or cluster), under
/// its key prefix.
pub struct CouponStore {
    redis: Arc<SharedRedis>,
    key_prefix: String,
    system: SystemKeys,
}

impl CouponStore {
    pub fn new(redis: Arc<SharedRedis>, key_prefix: String) -> Self {
        Self { redis, system: SystemKeys::new(&key_prefix), key_prefix }
    }

    pub fn redis(&self) -> &SharedRedis {
        &self.redis
    }

    pub fn key_prefix(&self) -> &str {
        &self.key_prefix
    }

    pub fn keys(&self, coupon: CouponId) -> CouponKeys {
        CouponKeys::new(&self.key_prefix, coupon)
    }

    /// The keys of one shard of a coupon (the first: `keys`).
    pub fn shard_keys(&self, shard: CouponShard) -> CouponKeys {
        CouponKeys::of_shard(&self.key_prefix, shard)
    }

    pub fn system(&self) -> &SystemKeys {
        &self.system
    }

    /// Adds `coupon` to the index, scored by the end of its period.
    pub async fn index(&self, coupon: CouponId, ends_at: OffsetDateTime) -> Result<(), RedisUnavailable> {
        let _: () = self
            .redis
            .query(redis::cmd("ZADD").arg(self.system.index()).arg(unix_ms(ends_at)).arg(coupon.get()))
            .await?;
        Ok(())
    }

    /// Carries the coupons of an index from before it was sorted by end (a
    /// plain set) into the sorted one; a no-op once done. Every replica runs
    /// it at start; running it twice at once does no harm.
    pub async fn migrate_index(&self) -> Result<usize, RedisUnavailable> {
        let legacy = SystemKeys::legacy_index(&self.key_prefix);
        let ids: Vec<i64> = self.redis.query(redis::cmd("SMEMBERS").arg(&legacy)).await?;
        let coupons = coupon_ids(ids);
        let reads: Vec<redis::Cmd> = coupons
            .iter()
            .map(|coupon| redis::cmd("HGET").arg(self.keys(*coupon).meta).arg("ends_ms").to_owned())
            .collect();
        let ends: Vec<Option<i64>> = self.redis.query_each(&reads).await?;
        for (coupon, ends) in coupons.iter().zip(&ends) {
            // A coupon without state yet gets indexed now and its state from
            // the recovery's first pass, which looks at every open coupon.
            let score = ends.unwrap_or(i64::MAX);
            let _: () =
                self.redis.query(redis::cmd("ZADD").arg(self.system.index()).arg(score).arg(coupon.get())).await?;
        }
        if !coupons.is_empty() {
            let _: () = self.redis.query(redis::cmd("DEL").arg(&legacy)).await?;
        }
        Ok(coupons.len())
    }

    /// The coupons in the index whose period ended at or before `now_ms`.
    pub async fn ended(&self, now_ms: i64) -> Result<Vec<CouponId>, RedisUnavailable> {
        let ids: Vec<i64> = self
            .redis
            .query(redis::cmd("ZRANGE").arg(self.system.index()).arg("-inf").arg(now_ms).arg("BYSCORE"))
            .await?;
        Ok(coupon_ids(ids))
    }

    /// Each coupon's presence, given with its number of shards: ready only
    /// when every shard is, fenced when any shard is.
    pub async fn presence(&self, coupons: &[(CouponId, u16)]) -> Result<Vec<Presence>, RedisUnavailable> {
        // Per shard, one slot: meta's (ends_ms, fence token), and whether stock exists.
        let shards: Vec<CouponShard> =
            coupons.iter().flat_map(|(coupon, shards)| CouponShard::all(*coupon, *shards)).collect();
        let probes: Vec<redis::Pipeline> = shards
            .iter()
            .map(|shard| {
                let keys = self.shard_keys(*shard);
                let mut pipe = redis::pipe();
                pipe.cmd("HMGET").arg(&keys.meta).arg("ends_ms").arg("fenced").cmd("EXISTS").arg(&keys.stock);
                pipe
            })
            .collect();
        type Reply = ((Option<i64>, Option<String>), bool);
        let replies: Vec<Reply> = try_join_all(probes.iter().map(|pipe| self.redis.query_pipe(pipe))).await?;
        let mut each = replies.into_iter().map(|((ends, fenced), stock)| match (ends, fenced, stock) {
            (_, Some(_), _) => Presence::Fenced,
            (Some(_), None, true) => Presence::Ready,
            _ => Presence::Missing,
        });
        Ok(coupons
            .iter()
            .map(|(_, shards)| {
                each.by_ref().take(usize::from((*shards).max(1))).fold(Presence::Ready, |whole, shard| {
                    match (whole, shard) {
                        (Presence::Fenced, _) | (_, Presence::Fenced) => Presence::Fenced,
                        (Presence::Missing, _) | (_, Presence::Missing) => Presence::Missing,
                        _ => Presence::Ready,
                    }
                })
            })
            .collect())
    }

    /// One shard's stock (0 when it has none).
    pub async fn shard_stock(&self, shard: CouponShard) -> Result<i64, RedisUnavailable> {
        let stock: Option<i64> = self.redis.query(redis::cmd("GET").arg(self.shard_keys(shard).stock)).await?;
        Ok(stock.unwrap_or(0))
    }

    /// How many shards Redis holds the coupon over (its first shard's
    /// `shards`; 1 when it has none).
    pub async fn shard_count(&self, coupon: CouponId) -> Result<u16, RedisUnavailable> {
        let shards: Option<u16> =
            self.redis.query(redis::cmd("HGET").arg(self.keys(coupon).meta).arg("shards")).await?;
        Ok(shards.unwrap_or(1))
    }

    /// The shard of `coupon` that decides for `customer`.
    pub async fn home(&self, coupon: CouponId, customer: CustomerId) -> Result<CouponShard, RedisUnavailable> {
        let shards = self.shard_count(coupon).await?;
        Ok(CouponShard { coupon, shard: home_shard(customer, shards) })
    }

    /// Live stock over every shard, or `None` when Redis does not know the coupon.
    pub async fn stock(&self, coupon: CouponId) -> Result<Option<i64>, RedisUnavailable> {
        let shards = self.shard_count(coupon).await?;
        let gets: Vec<redis::Cmd> = CouponShard::all(coupon, shards)
            .map(|shard| redis::cmd("GET").arg(self.shard_keys(shard).stock).to_owned())
            .collect();
        let stocks: Vec<Option<i64>> = self.redis.query_each(&gets).await?;
        Ok(stocks.into_iter().reduce(|sum, stock| Some(sum? + stock?)).flatten())
    }

    /// [`Self::stock`] of each coupon, in order.
    pub async fn stocks(&self, coupons: &[CouponId]) -> Result<Vec<Option<i64>>, RedisUnavailable> {
        try_join_all(coupons.iter().map(|coupon| self.stock(*coupon))).await
    }

    /// Which issuance of the coupon the customer holds, if it holds one.
    pub async fn holding(&self, coupon: CouponId, customer: CustomerId) -> Result<Option<u32>, RedisUnavailable> {
        let keys = self.shard_keys(self.home(coupon, customer).await?);
        let mut reads = redis::pipe();
        reads.cmd("SISMEMBER").arg(&keys.issued).arg(customer.get());
        reads.cmd("HGET").arg(&keys.reissued).arg(customer.get());
        let (holds, issuance): (bool, Option<u32>) = self.redis.query_pipe(&reads).await?;
        Ok(holds.then_some(issuance.unwrap_or(0)))
    }

    pub async fn ping(&self) -> Result<(), RedisUnavailable> {
        let _: String = self.redis.query(&redis::cmd("PING")).await?;
        Ok(())
    }

    /// Redis's clock in milliseconds; outbox entry ids are stamped with it.
    pub async fn server_time_ms(&self) -> Result<i64, RedisUnavailable> {
        Ok(self.redis.server_time_ms().await?)
    }

    /// Redis's clock, the one the issue script judges periods by.
    pub async fn server_now(&self) -> Result<OffsetDateTime, RedisUnavailable> {
        Ok(from_unix_ms(self.server_time_ms().await?).unwrap_or_else(OffsetDateTime::now_utc))
    }
}

/// Ids read back from Redis sets; anything else there is not ours to act on.
pub fn coupon_ids(ids: Vec<i64>) -> Vec<CouponId> {
    ids.into_iter().filter_map(|id| CouponId::new(id).ok()).collect()
}

/// Milliseconds since the Unix epoch: how the scripts and the outbox write time.
pub fn unix_ms(at: OffsetDateTime) -> i64 {
    (at.unix_timestamp_nanos() / 1_000_000) as i64
}

/// The inverse of [`unix_ms`]; `None` outside the representable range.
pub fn from_unix_ms(ms: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
}
