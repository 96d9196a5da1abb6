//! The recovery's writes to a coupon's Redis state: the fence the issue script
//! answers FENCED behind, the rebuild that lifts it (`rebuild.lua`), the probe
//! for coupons born on the Redis that holds them (`born_here.lua`), and the
//! retirement of ended coupons (`retire.lua`).

use std::sync::Arc;
use std::time::Duration;

use coupon_domain::shards::{home_shard, split_stock, CouponShard};
use coupon_domain::{CouponId, CustomerId};
use futures::future::try_join_all;
use redis::{FromRedisValue, Script, ToRedisArgs, Value};

use crate::store::incarnation::with_incarnation;
use crate::store::{coupon_ids, unix_ms, CouponState, CouponStore, Holders, RedisUnavailable};

/// SADD in chunks so one command never carries an unbounded argument list.
const HOLDERS_CHUNK: usize = 1_000;

pub struct Fences {
    store: Arc<CouponStore>,
    born_here: Script,
    rebuild: Script,
    open: Script,
    retire: Script,
}

impl Fences {
    pub fn new(store: Arc<CouponStore>) -> Self {
        Self {
            store,
            born_here: Script::new(&with_incarnation(include_str!("born_here.lua"))),
            rebuild: Script::new(include_str!("rebuild.lua")),
            open: Script::new(include_str!("open.lua")),
            retire: Script::new(include_str!("retire.lua")),
        }
    }

    /// For each coupon, whether its state was created on the Redis incarnation
    /// that holds it now and is whole and unfenced. On a Redis without the
    /// issue script, such a coupon never issued anything, so it needs no
    /// rebuild: it is new, not lost.
    pub async fn born_here(&self, coupons: &[(CouponId, u16)]) -> Result<Vec<bool>, RedisUnavailable> {
        let probes = coupons.iter().map(|(coupon, shards)| async move {
            // Born here only if every shard was.
            for shard in CouponShard::all(*coupon, *shards) {
                let keys = self.store.shard_keys(shard);
                let mut probe = self.born_here.key(&keys.meta);
                probe.key(&keys.stock);
                if self.store.redis().invoke::<i64>(&probe).await? != 1 {
                    return Ok(false);
                }
            }
            Ok::<_, RedisUnavailable>(true)
        });
        try_join_all(probes).await
    }

    /// Fences coupons: the issue script answers FENCED for them from now on.
    /// They are listed in the fenced set first, so a recovery that dies before
    /// it rebuilt them leaves them where the next pass of any replica looks.
    pub async fn fence(&self, coupons: &[(CouponId, u16)], token: &str) -> Result<(), RedisUnavailable> {
        let redis = self.store.redis();
        if !coupons.is_empty() {
            let ids: Vec<i64> = coupons.iter().map(|(c, _)| c.get()).collect();
            let _: () = redis.query(redis::cmd("SADD").arg(self.store.system().fenced()).arg(ids)).await?;
        }
        let fences: Vec<redis::Cmd> = coupons
            .iter()
            .flat_map(|(coupon, shards)| CouponShard::all(*coupon, *shards))
            .map(|shard| redis::cmd("HSET").arg(self.store.shard_keys(shard).meta).arg("fenced").arg(token).to_owned())
            .collect();
        let _: Vec<i64> = redis.query_each(&fences).await?;
        Ok(())
    }

    /// Replaces a fenced coupon's state with `state` plus the customers still
    /// in its outbox, and lifts the fence. Returns the stock it set, or `None`
    /// when the fence is no longer `token`'s.
    ///
    /// A sharded coupon is rebuilt whole: each shard takes the holders whose
    /// home it is and stays fenced; once every shard's holders are counted,
    /// each gets its share of what is left (open.lua).
    pub async fn rebuild(&self, state: &CouponState, token: &str) -> Result<Option<i64>, RedisUnavailable> {
        self.store.index(state.id, state.ends_at).await?;
        let rebuilt = if state.shards <= 1 {
            self.rebuild_shard(state, CouponShard::first(state.id), &state.holders, token).await?
        } else {
            self.rebuild_shards(state, token).await?
        };
        if rebuilt.is_some() {
            self.unlist(&[state.id]).await?;
        }
        Ok(rebuilt)
    }

    async fn rebuild_shards(&self, state: &CouponState, token: &str) -> Result<Option<i64>, RedisUnavailable> {
        let mut held = 0;
        let mut total = i64::from(state.total_quantity);
        for shard in CouponShard::all(state.id, state.shards) {
            let home =
                |customer: &i64| CustomerId::new(*customer).is_ok_and(|c| home_shard(c, state.shards) == shard.shard);
            let holders = Holders {
                customers: state.holders.customers.iter().copied().filter(home).collect(),
                returned: state.holders.returned.iter().copied().filter(home).collect(),
                reissued: state.holders.reissued.iter().copied().filter(|(customer, _)| home(customer)).collect(),
            };
            let reply: Value = self.rebuild_call(state, shard, &holders, token).await?;
            match reply {
                Value::Int(-1) => return Ok(None),
                Value::Array(counts) => match counts.as_slice() {
                    [Value::Int(shard_held), Value::Int(kept_total)] => {
                        held += shard_held;
                        // Every shard keeps the same newer control, if any; the first's counts.
                        if shard.shard == 0 {
                            total = *kept_total;
                        }
                    }
                    _ => return Err(RedisUnavailable::Reply(Value::Array(counts))),
                },
                other => return Err(RedisUnavailable::Reply(other)),
            }
        }
        let left = (total - held).max(0);
        for (shard, stock) in CouponShard::all(state.id, state.shards).zip(split_stock(left, state.shards)) {
            let keys = self.store.shard_keys(shard);
            let mut open = self.open.key(&keys.meta);
            open.key(&keys.stock).key(&keys.transfers).key(&keys.received).arg(token).arg(stock);
            if self.store.redis().invoke::<i64>(&open).await? < 0 {
                return Ok(None);
            }
        }
        Ok(Some(left))
    }

    /// rebuild.lua on one shard with the holders whose home it is.
    async fn rebuild_shard(
        &self,
        state: &CouponState,
        shard: CouponShard,
        holders: &Holders,
        token: &str,
    ) -> Result<Option<i64>, RedisUnavailable> {
        let stock: i64 = self.rebuild_call(state, shard, holders, token).await?;
        Ok((stock >= 0).then_some(stock))
    }

    async fn rebuild_call<T: FromRedisValue>(
        &self,
        state: &CouponState,
        shard: CouponShard,
        holders: &Holders,
        token: &str,
    ) -> Result<T, RedisUnavailable> {
        let keys = self.store.shard_keys(shard);
        let staged = &keys.rebuild_staged;
        self.stage(staged, "SADD", &holders.customers).await?;
        self.stage(&keys.returned_staged, "SADD", &holders.returned).await?;
        self.stage(&keys.reissued_staged, "HSET", &holders.reissued).await?;
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
            .arg(u8::from(state.control.paused))
            .arg(state.shards);
        Ok(self.store.redis().invoke(&rebuild).await?)
    }

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

    /// Lets an ended coupon's keys expire after `grace` once its outboxes are
    /// empty, and takes it out of the index; returns its number of shards
    /// when it did.
    pub async fn retire(&self, coupon: CouponId, grace: Duration) -> Result<Option<u16>, RedisUnavailable> {
        let redis = self.store.redis();
        let first = self.store.keys(coupon);
        let shards: Option<u16> = redis.query(redis::cmd("HGET").arg(&first.meta).arg("shards")).await?;
        let shards = shards.unwrap_or(1);
        // The first shard last: while its keys live, the coupon is in the index.
        for shard in CouponShard::all(coupon, shards).collect::<Vec<_>>().into_iter().rev() {
            let keys = self.store.shard_keys(shard);
            let mut retire = self.retire.key(&keys.meta);
            retire
                .key(&keys.stock)
                .key(&keys.issued)
                .key(&keys.outbox)
                .key(&keys.returned)
                .key(&keys.reissued)
                .key(&keys.transfers)
                .key(&keys.received)
                .arg(grace.as_millis() as u64);
            if redis.invoke::<i64>(&retire).await? == 0 {
                return Ok(None);
            }
        }
        let _: () = redis.query(redis::cmd("ZREM").arg(self.store.system().index()).arg(coupon.get())).await?;
        Ok(Some(shards))
    }
}
