//! The recovery's writes to a coupon's Redis state: the fence the issue script
//! answers FENCED behind, the rebuild that lifts it (`rebuild.lua`), the probe
//! for coupons born on the Redis that holds them (`born_here.lua`), and the
//! retirement of ended coupons (`retire.lua`).

use std::sync::Arc;
use std::time::Duration;

use coupon_domain::CouponId;
use futures::future::try_join_all;
use redis::{Script, ToRedisArgs};

use crate::store::incarnation::with_incarnation;
use crate::store::{coupon_ids, unix_ms, CouponState, CouponStore, RedisUnavailable};

/// SADD in chunks so one command never carries an unbounded argument list.
const HOLDERS_CHUNK: usize = 1_000;

pub struct Fences {
    store: Arc<CouponStore>,
    born_here: Script,
    rebuild: Script,
    retire: Script,
}

impl Fences {
    pub fn new(store: Arc<CouponStore>) -> Self {
        Self {
            store,
            born_here: Script::new(&with_incarnation(include_str!("born_here.lua"))),
            rebuild: Script::new(include_str!("rebuild.lua")),
            retire: Script::new(include_str!("retire.lua")),
        }
    }

    /// For each coupon, whether its state was created on the Redis incarnation
    /// that holds it now and is whole and unfenced. On a Redis without the
    /// issue script, such a coupon never issued anything, so it needs no
    /// rebuild: it is new, not lost.
    pub async fn born_here(&self, coupons: &[CouponId]) -> Result<Vec<bool>, RedisUnavailable> {
        let probes = coupons.iter().map(|coupon| async move {
            let keys = self.store.keys(*coupon);
            let mut probe = self.born_here.key(&keys.meta);
            probe.key(&keys.stock);
            self.store.redis().invoke::<i64>(&probe).await.map(|born| born == 1)
        });
        Ok(try_join_all(probes).await?)
    }

    /// Fences coupons: the issue script answers FENCED for them from now on.
    /// They are listed in the fenced set first, so a recovery that dies before
    /// it rebuilt them leaves them where the next pass of any replica looks.
    pub async fn fence(&self, coupons: &[CouponId], token: &str) -> Result<(), RedisUnavailable> {
        let redis = self.store.redis();
        if !coupons.is_empty() {
            let ids: Vec<i64> = coupons.iter().map(|c| c.get()).collect();
            let _: () = redis.query(redis::cmd("SADD").arg(self.store.system().fenced()).arg(ids)).await?;
        }
        let fences: Vec<redis::Cmd> = coupons
            .iter()
            .map(|coupon| redis::cmd("HSET").arg(self.store.keys(*coupon).meta).arg("fenced").arg(token).to_owned())
            .collect();
        let _: Vec<i64> = redis.query_each(&fences).await?;
        Ok(())
    }

    /// Replaces a fenced coupon's state with `state` plus the customers still
    /// in its outbox, and lifts the fence. Returns the stock it set, or `None`
    /// when the fence is no longer `token`'s.
    pub async fn rebuild(&self, state: &CouponState, token: &str) -> Result<Option<i64>, RedisUnavailable> {
        let redis = self.store.redis();
        let keys = self.store.keys(state.id);
        let staged = &keys.rebuild_staged;
        self.stage(staged, "SADD", &state.holders.customers).await?;
        self.stage(&keys.returned_staged, "SADD", &state.holders.returned).await?;
        self.stage(&keys.reissued_staged, "HSET", &state.holders.reissued).await?;
        self.store.index(state.id, state.ends_at).await?;
        let mut rebuild = self.rebuild.key(&keys.meta);
        rebuild
            .key(&keys.stock)
            .key(&keys.issued)
            .key(&keys.outbox)
            .key(staged)
            .key(&keys.returned)
            .key(&keys.returned_staged)
            .key(&keys.reissued)
            .key(&keys.reissued_staged)
            .arg(token)
            .arg(unix_ms(state.starts_at))
            .arg(unix_ms(state.ends_at))
            .arg(state.total_quantity)
            .arg(state.control.version)
            .arg(u8::from(state.control.paused));
        let stock: i64 = redis.invoke(&rebuild).await?;
        if stock < 0 {
            return Ok(None);
        }
        self.unlist(&[state.id]).await?;
        Ok(Some(stock))
    }

    /// Sets `key` to `members` (`add`: `SADD` for a set, `HSET` for a hash of
    /// pairs), in chunks.
    async fn stage<T: ToRedisArgs + Sync>(&self, key: &str, add: &str, members: &[T]) -> Result<(), RedisUnavailable> {
        let redis = self.store.redis();
        let _: () = redis.query(redis::cmd("DEL").arg(key)).await?;
        for chunk in members.chunks(HOLDERS_CHUNK) {
            let _: () = redis.query(redis::cmd(add).arg(key).arg(chunk)).await?;
        }
        Ok(())
    }

    /// The coupons a recovery fenced and has not rebuilt yet (as far as the
    /// fenced set knows: a coupon in it may have been rebuilt since).
    pub async fn listed(&self) -> Result<Vec<CouponId>, RedisUnavailable> {
        let ids: Vec<i64> = self.store.redis().query(redis::cmd("SMEMBERS").arg(self.store.system().fenced())).await?;
        Ok(coupon_ids(ids))
    }

    /// Takes coupons that are not fenced out of the fenced set.
    pub async fn unlist(&self, coupons: &[CouponId]) -> Result<(), RedisUnavailable> {
        if !coupons.is_empty() {
            let ids: Vec<i64> = coupons.iter().map(|c| c.get()).collect();
            let _: () = self.store.redis().query(redis::cmd("SREM").arg(self.store.system().fenced()).arg(ids)).await?;
        }
        Ok(())
    }

    /// Lets an ended coupon's keys expire after `grace` once its outbox is
    /// empty, and takes it out of the index; returns whether it did.
    pub async fn retire(&self, coupon: CouponId, grace: Duration) -> Result<bool, RedisUnavailable> {
        let redis = self.store.redis();
        let keys = self.store.keys(coupon);
        let mut retire = self.retire.key(&keys.meta);
        retire
            .key(&keys.stock)
            .key(&keys.issued)
            .key(&keys.outbox)
            .key(&keys.returned)
            .key(&keys.reissued)
            .arg(grace.as_millis() as u64);
        if redis.invoke::<i64>(&retire).await? == 0 {
            return Ok(false);
        }
        let _: () = redis.query(redis::cmd("ZREM").arg(self.store.system().index()).arg(coupon.get())).await?;
        Ok(true)
    }
}
