//! Reads one coupon's state from Redis and from PostgreSQL.

use std::collections::BTreeSet;

use coupon_domain::keys::CouponKeys;
use coupon_domain::CouponId;
use coupon_infra::db::schema::{coupon, customer_coupon};
use coupon_infra::db::PgPool;
use coupon_infra::redis::SharedRedis;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::compare::{DbView, RedisView};
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

    pub async fn redis_view(&self, id: CouponId) -> anyhow::Result<RedisView> {
        let keys = CouponKeys::new(&self.key_prefix, id);
        let (total, stock, outbox): (Option<i64>, Option<i64>, u64) = self
            .redis
            .query_pipe(
                redis::pipe()
                    .cmd("HGET")
                    .arg(&keys.meta)
                    .arg("total")
                    .cmd("GET")
                    .arg(&keys.stock)
                    .cmd("XLEN")
                    .arg(&keys.outbox),
            )
            .await?;
        // SSCAN in pages, not SMEMBERS: a promotion's set can hold millions of
        // customers, and one reply that size would stall Redis (which decides
        // every issuance) and outlast the client's response timeout. The pages
        // are not one snapshot; the settle loop in `run` absorbs issuances
        // that land meanwhile.
        let mut issued = BTreeSet::new();
        let mut cursor = 0u64;
        loop {
            let (next, page): (u64, Vec<i64>) =
                self.redis.query(redis::cmd("SSCAN").arg(&keys.issued).arg(cursor).arg("COUNT").arg(SCAN_PAGE)).await?;
            issued.extend(page);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        Ok(RedisView { total, stock, issued, outbox })
    }

    pub async fn db_view(&self, id: CouponId) -> anyhow::Result<Option<DbView>> {
        let mut conn = self.db.get().await?;
        let quantities: Option<(i32, i32)> = coupon::table
            .find(id.get())
            .select((coupon::total_quantity, coupon::remaining_quantity))
            .first(&mut conn)
            .await
            .optional()?;
        let Some((total, remaining)) = quantities else {
            return Ok(None);
        };
        let holders: BTreeSet<i64> = customer_coupon::table
            .filter(customer_coupon::coupon_id.eq(id.get()))
            .select(customer_coupon::customer_id)
            .load::<i64>(&mut conn)
            .await?
            .into_iter()
            .collect();
        Ok(Some(DbView { total: i64::from(total), remaining: i64::from(remaining), holders }))
    }
}
