//! Reads one coupon's state from Redis and from PostgreSQL.

use std::collections::BTreeSet;

use coupon_domain::keys::CouponKeys;
use coupon_domain::shards::{home_shard, CouponShard, TransferRecord};
use coupon_domain::{CouponId, CustomerId};
use coupon_infra::db::schema::{coupon, customer_coupon};
use coupon_infra::db::PgPool;
use coupon_infra::redis::SharedRedis;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use redis::streams::{StreamId, StreamRangeReply};

use crate::compare::{DbView, EntryId, RedisView};
use crate::Settings;

/// Members per SSCAN page: small replies keep Redis responsive.
const SCAN_PAGE: usize = 5_000;

pub struct Sources {
    /// Standalone, sentinel or cluster, as coupon-api: each command here
    /// touches one coupon's slot.
    redis: SharedRedis,
    db: PgPool,
    key_prefix: String,
}

impl Sources {
    pub fn connect(settings: &Settings) -> anyhow::Result<Self> {
        Ok(Self {
            redis: SharedRedis::new(&settings.redis)?,
            db: coupon_infra::db::pool(&settings.database)?,
            key_prefix: settings.redis.key_prefix.clone(),
        })
    }

    pub async fn all_coupons(&self) -> anyhow::Result<Vec<CouponId>> {
        let mut conn = self.db.get().await?;
        let ids: Vec<i64> = coupon::table.select(coupon::id).order(coupon::id).load(&mut conn).await?;
        Ok(ids.into_iter().filter_map(|id| CouponId::new(id).ok()).collect())
    }

    /// How many shards Redis spreads the coupon over (1 unless sharded).
    async fn shards(&self, id: CouponId) -> anyhow::Result<u16> {
        let first = CouponKeys::new(&self.key_prefix, id);
        let shards: Option<u16> = self.redis.query(redis::cmd("HGET").arg(&first.meta).arg("shards")).await?;
        Ok(shards.unwrap_or(1))
    }

    /// Every shard's state, summed; each shard read atomically. Units in a
    /// transfer between shards count as stock. The shards are read one after
    /// another, so a transfer may be counted twice or not at all: that is
    /// in flight, as an issuance is, and the settle time in `run` tells it
    /// from drift.
    pub async fn redis_view(&self, id: CouponId) -> anyhow::Result<RedisView> {
        let mut view = RedisView::default();
        for shard in CouponShard::all(id, self.shards(id).await?) {
            self.add_shard(&mut view, &CouponKeys::of_shard(&self.key_prefix, shard)).await?;
        }
        Ok(view)
    }

    async fn add_shard(&self, view: &mut RedisView, keys: &CouponKeys) -> anyhow::Result<()> {
        // One MULTI: the issue script changes stock and set together, so only
        // an atomic read can check that they add up while issuance goes on.
        type Counts = (Option<i64>, Option<i64>, i64, i64, u64, StreamRangeReply, StreamRangeReply, Vec<String>);
        let (total, stock, issued_count, returned_count, outbox, oldest, newest, transfers): Counts = self
            .redis
            .query_pipe(
                redis::pipe()
                    .atomic()
                    .cmd("HGET")
                    .arg(&keys.meta)
                    .arg("total")
                    .cmd("GET")
                    .arg(&keys.stock)
                    .cmd("SCARD")
                    .arg(&keys.issued)
                    .cmd("SCARD")
                    .arg(&keys.returned)
                    .cmd("XLEN")
                    .arg(&keys.outbox)
                    .cmd("XRANGE")
                    .arg(&keys.outbox)
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(1)
                    .cmd("XREVRANGE")
                    .arg(&keys.outbox)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .cmd("HVALS")
                    .arg(&keys.transfers),
            )
            .await?;
        let in_transfer: i64 = transfers
            .iter()
            .filter_map(|record| record.parse::<TransferRecord>().ok())
            .map(|record| record.units)
            .sum();
        view.total = view.total.or(total);
        view.stock = match (view.stock, stock) {
            (Some(sum), Some(stock)) => Some(sum + stock + in_transfer),
            (None, stock) => stock.map(|stock| stock + in_transfer),
            (sum, None) => sum,
        };
        view.issued_count += issued_count;
        view.returned_count += returned_count;
        view.outbox += outbox;
        if let Some((first, last)) = entry_id(&oldest).zip(entry_id(&newest)) {
            view.outbox_span = Some(match view.outbox_span {
                Some((a, b)) => (a.min(first), b.max(last)),
                None => (first, last),
            });
        }
        self.scan_issued(&keys.issued, &mut view.issued).await
    }

    /// SSCAN in pages, not SMEMBERS: a promotion's set can hold millions of
    /// customers, and one reply that size would stall Redis (which decides
    /// every issuance) and outlast the client's response timeout. The pages
    /// are not one snapshot; issuances that land meanwhile are in flight,
    /// which the settle time in `run` tells from drift.
    async fn scan_issued(&self, key: &str, issued: &mut BTreeSet<i64>) -> anyhow::Result<()> {
        let mut cursor = 0u64;
        loop {
            let (next, page): (u64, Vec<i64>) =
                self.redis.query(redis::cmd("SSCAN").arg(key).arg(cursor).arg("COUNT").arg(SCAN_PAGE)).await?;
            issued.extend(page);
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// The number of the issuance Redis holds for the customer (0 unless it
    /// was revoked with leave to reissue before), so a republished event is
    /// not taken for a late copy of a revoked one.
    pub async fn issuance(&self, id: CouponId, customer: i64) -> anyhow::Result<u32> {
        let home = match CustomerId::new(customer) {
            Ok(customer) => home_shard(customer, self.shards(id).await?),
            Err(_) => 0,
        };
        let keys = CouponKeys::of_shard(&self.key_prefix, CouponShard { coupon: id, shard: home });
        let issuance: Option<u32> = self.redis.query(redis::cmd("HGET").arg(&keys.reissued).arg(customer)).await?;
        Ok(issuance.unwrap_or(0))
    }

    /// The coupon row and its holders as of one snapshot, so the remaining
    /// quantity and the rows are compared as one writer transaction left them.
    pub async fn db_view(&self, id: CouponId) -> anyhow::Result<Option<DbView>> {
        let mut conn = self.db.get().await?;
        let view = conn
            .build_transaction()
            .repeatable_read()
            .read_only()
            .run::<_, diesel::result::Error, _>(async |conn| {
                let quantities: Option<(i32, i32)> = coupon::table
                    .find(id.get())
                    .select((coupon::total_quantity, coupon::remaining_quantity))
                    .first(&mut *conn)
                    .await
                    .optional()?;
                let Some((total, remaining)) = quantities else {
                    return Ok(None);
                };
                // A row revoked with leave to reissue holds nothing in Redis
                // (the customer left its issued set) until its next issuance.
                let current = customer_coupon::coupon_id.eq(id.get()).and(customer_coupon::reissuable.eq(false));
                let holders: BTreeSet<i64> = customer_coupon::table
                    .filter(current)
                    .select(customer_coupon::customer_id)
                    .load::<i64>(conn)
                    .await?
                    .into_iter()
                    .collect();
                let returned: i64 = customer_coupon::table
                    .filter(current)
                    .filter(customer_coupon::stock_returned)
                    .count()
                    .get_result(conn)
                    .await?;
                Ok(Some(DbView { total: i64::from(total), remaining: i64::from(remaining), holders, returned }))
            })
            .await?;
        Ok(view)
    }
}

/// The id of a one-entry `XRANGE` reply, as `(milliseconds, sequence)`.
fn entry_id(reply: &StreamRangeReply) -> Option<EntryId> {
    let (ms, seq) = <[StreamId]>::first(&reply.ids)?.id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}
