//! A promotion's live view: issued, remaining, persisted, pending, redeemed,
//! the answers to issue requests by outcome, and the units issued per second
//! over the last ten seconds, summed over every API replica.
//!
//! Each replica counts its issue answers in memory (`count`, on the hot path:
//! one short lock, no I/O) and adds them to the coupon's tally in Redis once a
//! second (`tally.lua`), so the view costs the spike one Redis call per
//! coupon per replica per second rather than one per request. A replica that
//! dies loses at most its last second of counts; the counts are a view, not
//! a promise. Only answers about a coupon Redis knows are counted, so
//! requests for made-up coupon ids cannot grow the tally.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coupon_domain::CouponId;
use coupon_infra::db::schema::{coupon as coupon_table, coupon_control, customer_coupon, revoked_issuance};
use coupon_infra::db::PgPool;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use redis::Script;
use serde::Serialize;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::catalog::{CatalogError, Phase};
use crate::store::{CouponStore, RedisUnavailable};

/// How often each replica adds its counts to Redis.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// How long a coupon's tally outlives the last answer counted.
const KEPT_FOR: Duration = Duration::from_secs(7 * 24 * 3600);
/// The seconds `issuedPerSecond` covers; the ring in Redis holds 64.
const RATE_WINDOW: i64 = 10;
const RING_SLOTS: i64 = 64;

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Redis(#[from] RedisUnavailable),
}

impl From<diesel::result::Error> for StatsError {
    fn from(err: diesel::result::Error) -> Self {
        StatsError::Catalog(err.into())
    }
}

/// One coupon's live view.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CouponStats {
    pub coupon_id: i64,
    pub name: String,
    /// Scheduled, open, paused or ended, by Redis's clock.
    pub state: Phase,
    pub total_quantity: i64,
    /// Issued by Redis so far.
    pub issued: i64,
    /// Still issuable (Redis's stock).
    pub remaining: i64,
    /// Written to PostgreSQL by coupon-writer.
    pub persisted: i64,
    /// Issued, not yet written: coupon-writer's backlog for this coupon.
    pub pending: i64,
    /// Used by an order.
    pub redeemed: i64,
    /// Revocations by support staff, of this coupon's holdings.
    pub revoked: i64,
    /// Refused issue requests by code (`SOLD_OUT`, `ALREADY_ISSUED`, …), over
    /// every replica, up to the last second.
    pub rejections: BTreeMap<String, u64>,
    /// Units issued in each of the last ten whole seconds, oldest first.
    pub issued_per_second: Vec<u64>,
    /// When this view was read (Redis's clock).
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// Issue answers counted since the last flush, by coupon and outcome.
type Counts = HashMap<CouponId, HashMap<&'static str, u64>>;

pub struct Stats {
    pool: PgPool,
    store: Arc<CouponStore>,
    tally: Script,
    counted: Mutex<Counts>,
}

impl Stats {
    pub fn new(pool: PgPool, store: Arc<CouponStore>) -> Self {
        Self { pool, store, tally: Script::new(include_str!("tally.lua")), counted: Mutex::default() }
    }

    /// Counts one answer (`ISSUED` or a refusal's code) about `coupon`.
    pub fn count(&self, coupon: CouponId, outcome: &'static str) {
        let mut counted = self.counted.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *counted.entry(coupon).or_default().entry(outcome).or_default() += 1;
    }

    /// Adds the counts to Redis every second until `stop`, and once more then.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(FLUSH_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = ticks.tick() => self.flush().await,
            }
        }
        self.flush().await;
    }

    async fn flush(&self) {
        let counted = std::mem::take(&mut *self.counted.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        for (coupon, outcomes) in counted {
            if let Err(err) = self.add(coupon, &outcomes).await {
                tracing::debug!(coupon = %coupon, error = %err, "issue counts kept for the next second");
                let mut counted = self.counted.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                let kept = counted.entry(coupon).or_default();
                for (outcome, n) in outcomes {
                    *kept.entry(outcome).or_default() += n;
                }
            }
        }
    }

    async fn add(&self, coupon: CouponId, outcomes: &HashMap<&'static str, u64>) -> Result<(), RedisUnavailable> {
        let keys = self.store.keys(coupon);
        let mut add = self.tally.key(&keys.tally);
        add.key(&keys.issue_rate).arg(outcomes.get("ISSUED").copied().unwrap_or(0)).arg(KEPT_FOR.as_millis() as u64);
        for (outcome, n) in outcomes {
            add.arg(*outcome).arg(*n);
        }
        let _: i64 = self.store.redis().invoke(&add).await?;
        Ok(())
    }

    /// `coupon`'s live view; `None` when there is no such coupon.
    pub async fn read(&self, coupon: CouponId) -> Result<Option<CouponStats>, StatsError> {
        let Some(row) = self.recorded(coupon).await? else { return Ok(None) };
        let live = self.live(coupon).await?;
        let now_ms = self.store.server_time_ms().await?;
        let now = crate::store::from_unix_ms(now_ms).unwrap_or_else(OffsetDateTime::now_utc);

        let persisted = i64::from(row.total - row.remaining);
        // Redis's own total: an operator's change may have reached one store first.
        let total = live.total.unwrap_or(i64::from(row.total));
        let remaining = live.stock.unwrap_or(i64::from(row.remaining));
        let issued = (total - remaining).max(persisted);
        let rejections = live.answers.into_iter().filter(|(outcome, _)| outcome != "ISSUED").collect();
        Ok(Some(CouponStats {
            coupon_id: coupon.get(),
            name: row.name,
            state: Phase::at(row.starts_at, row.ends_at, row.paused_at.is_some(), now),
            total_quantity: total,
            issued,
            remaining,
            persisted,
            pending: issued - persisted,
            redeemed: row.redeemed,
            revoked: row.revoked,
            rejections,
            issued_per_second: per_second(&live.ring, now_ms.div_euclid(1000)),
            at: now,
        }))
    }

    async fn recorded(&self, coupon: CouponId) -> Result<Option<Recorded>, StatsError> {
        let mut conn = self.pool.get().await.map_err(CatalogError::from)?;
        type Row = (String, i32, i32, OffsetDateTime, OffsetDateTime, Option<OffsetDateTime>);
        let Some((name, total, remaining, starts_at, ends_at, paused_at)): Option<Row> = coupon_table::table
            .left_join(coupon_control::table)
            .filter(coupon_table::id.eq(coupon.get()))
            .select((
                coupon_table::name,
                coupon_table::total_quantity,
                coupon_table::remaining_quantity,
                coupon_table::starts_at,
                coupon_table::ends_at,
                coupon_control::paused_at.nullable(),
            ))
            .first(&mut conn)
            .await
            .optional()?
        else {
            return Ok(None);
        };
        let by_status: HashMap<String, i64> = customer_coupon::table
            .filter(customer_coupon::coupon_id.eq(coupon.get()))
            .filter(customer_coupon::status.ne("AVAILABLE"))
            .group_by(customer_coupon::status)
            .select((customer_coupon::status, diesel::dsl::count_star()))
            .load::<(String, i64)>(&mut conn)
            .await?
            .into_iter()
            .collect();
        let count = |status: &str| by_status.get(status).copied().unwrap_or(0);
        // A revocation that let the customer get the coupon again is kept in
        // revoked_issuance; its row stays REVOKED only until that happens.
        let (archived, reissuable): (i64, i64) = diesel::select((
            revoked_issuance::table.filter(revoked_issuance::coupon_id.eq(coupon.get())).count().single_value(),
            customer_coupon::table
                .filter(customer_coupon::coupon_id.eq(coupon.get()))
                .filter(customer_coupon::reissuable)
                .count()
                .single_value(),
        ))
        .get_result::<(Option<i64>, Option<i64>)>(&mut conn)
        .await
        .map(|(archived, reissuable)| (archived.unwrap_or(0), reissuable.unwrap_or(0)))?;
        let (redeemed, revoked) = (count("USED"), count("REVOKED") - reissuable + archived);
        Ok(Some(Recorded { name, total, remaining, starts_at, ends_at, paused_at, redeemed, revoked }))
    }

    async fn live(&self, coupon: CouponId) -> Result<Live, RedisUnavailable> {
        // The total, the tally and the rate live on the first shard; the stock on every one.
        let keys = self.store.keys(coupon);
        let mut reads = redis::pipe();
        reads.cmd("HGET").arg(&keys.meta).arg("total");
        reads.cmd("HGETALL").arg(&keys.tally).cmd("HGETALL").arg(&keys.issue_rate);
        let (total, answers, ring) = self.store.redis().query_pipe(&reads).await?;
        let stock = self.store.stock(coupon).await?;
        Ok(Live { stock, total, answers, ring })
    }
}

/// What PostgreSQL holds of a coupon for its view.
struct Recorded {
    name: String,
    total: i32,
    remaining: i32,
    starts_at: OffsetDateTime,
    ends_at: OffsetDateTime,
    paused_at: Option<OffsetDateTime>,
    redeemed: i64,
    revoked: i64,
}

/// What Redis holds of a coupon for its view (`None`: not in Redis).
struct Live {
    stock: Option<i64>,
    total: Option<i64>,
    answers: HashMap<String, u64>,
    ring: HashMap<i64, String>,
}

/// The units issued in each of the `RATE_WINDOW` whole seconds before
/// `now`, oldest first, from the ring's slots.
fn per_second(ring: &HashMap<i64, String>, now: i64) -> Vec<u64> {
    (now - RATE_WINDOW..now)
        .map(|second| {
            ring.get(&second.rem_euclid(RING_SLOTS))
                .and_then(|held| held.split_once(':'))
                .filter(|(at, _)| at.parse() == Ok(second))
                .and_then(|(_, count)| count.parse().ok())
                .unwrap_or(0)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_reads_only_the_slots_of_the_last_ten_seconds() {
        let ring: HashMap<i64, String> = [
            (1_000 % 64, "1000:7".to_string()),
            // A slot last written a lap earlier holds another second.
            (995 % 64, "931:99".to_string()),
            (1_001 % 64, "1001:5".to_string()),
            (999 % 64, "999:x".to_string()),
        ]
        .into();
        let rates = per_second(&ring, 1_001);
        assert_eq!(rates.len(), 10);
        assert_eq!(rates, [0, 0, 0, 0, 0, 0, 0, 0, 0, 7], "second 1001 is not over yet");
    }
}
