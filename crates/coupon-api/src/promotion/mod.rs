//! An operator's controls of a live promotion: pause, resume, end now and
//! change its terms (`amend`), each with its record in the audit
//! (`crate::audit`); and its live view (`stats`).
//!
//! PostgreSQL decides and records, in one transaction: the control's new
//! state and version (`coupon_control`, and the coupon's row for an end or a
//! change) and the audit entry. Redis follows (`control.lua`, which carries
//! the whole state of each version): the issue script answers `PAUSED`, or
//! `EXPIRED` past the end, from the moment it has the change, on every API
//! replica alike. An end is taken at Redis's clock, the one the issue script
//! judges periods by. Each change carries a version, so a
//! rebuild from PostgreSQL that read the state before a change cannot undo it
//! (`rebuild.lua` keeps the newer one). A pause that PostgreSQL recorded but
//! Redis did not get (Redis away) answers 503; pausing again applies it to
//! Redis and answers `409 ALREADY_PAUSED`, so the operator's retry is what
//! makes it take effect.

pub mod amend;
pub mod stats;

use std::sync::Arc;

use coupon_domain::shards::CouponShard;
use coupon_domain::CouponId;
use coupon_infra::db::schema::{coupon as coupon_table, coupon_control};
use coupon_infra::db::PgPool;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use redis::Script;
use time::OffsetDateTime;

use crate::audit::{Actor, Entry};
use crate::catalog::{CatalogError, Controlled, CouponRow};
use crate::issuance::refill::{Refill, RefillCounters};
use crate::issuance::replica_wait::ReplicaWait;
use crate::store::{unix_ms, Control, CouponStore, RedisUnavailable};

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("coupon not found")]
    NotFound,
    /// The coupon already is where the operator asked it to go (after a
    /// pause or resume, Redis was told again).
    #[error("the promotion is already {0:?}")]
    AlreadyThere(Standing),
    /// Only a coupon that has started can be ended now.
    #[error("the promotion has not started")]
    NotStarted,
    #[error("{0}")]
    InvalidPeriod(&'static str),
    /// A total below the units already issued.
    #[error("the total is below the units already issued")]
    BelowIssued,
    /// The discount policy is fixed once a unit was issued.
    #[error("the discount policy cannot change once a unit was issued")]
    PolicyLocked,
    /// Redis cannot take the change yet (the coupon is being rebuilt, so who
    /// holds it is not known); nothing was changed.
    #[error("the coupon's Redis state is being rebuilt")]
    Rebuilding,
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// Recorded in PostgreSQL, not yet in Redis: issuance may go on until a retry.
    #[error(transparent)]
    Redis(#[from] RedisUnavailable),
}

impl From<diesel::result::Error> for ControlError {
    fn from(err: diesel::result::Error) -> Self {
        ControlError::Catalog(err.into())
    }
}

/// Where a promotion stands, as far as its controls go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Paused,
    Running,
    Ended,
}

/// What an operator changes.
#[derive(Clone, Copy)]
enum Change {
    Paused(Paused),
    /// The end moves to this instant (Redis's clock).
    End(OffsetDateTime),
}

/// What a pause or a resume stops.
#[derive(Clone, Copy)]
struct Paused {
    issuance: bool,
    redemption: bool,
}

impl Paused {
    /// Whether `control` already is so.
    fn of(self, control: &Control) -> bool {
        control.paused == self.issuance && control.redemption_paused == self.redemption
    }
}

/// A coupon's end, as the audit records an end-now.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Period {
    #[serde(with = "time::serde::rfc3339")]
    ends_at: OffsetDateTime,
}

pub struct Controls {
    pool: PgPool,
    store: Arc<CouponStore>,
    control: Script,
    /// Gathers a sharded coupon's units for a lower total.
    refill: Refill,
    /// A change is acknowledged by the replicas, as an issuance is, before
    /// its answer: one taken by a primary that a switchover is replacing
    /// would be lost, and the coupon would run on the old terms until rebuilt.
    replicas: ReplicaWait,
}

impl Controls {
    pub fn new(pool: PgPool, store: Arc<CouponStore>, replicas: ReplicaWait, refills: RefillCounters) -> Self {
        Self {
            refill: Refill::new(store.clone(), refills),
            pool,
            store,
            control: Script::new(include_str!("control.lua")),
            replicas,
        }
    }

    /// Stops issuance of `coupon` on every replica; redemption goes on
    /// unless `redemption` is false.
    pub async fn pause(&self, coupon: CouponId, redemption: bool, actor: &Actor<'_>) -> Result<Control, ControlError> {
        self.set_paused(coupon, Paused { issuance: true, redemption: !redemption }, actor).await
    }

    /// Lets issuance, and redemption, of `coupon` go on.
    pub async fn resume(&self, coupon: CouponId, actor: &Actor<'_>) -> Result<Control, ControlError> {
        self.set_paused(coupon, Paused { issuance: false, redemption: false }, actor).await
    }

    async fn set_paused(&self, coupon: CouponId, to: Paused, actor: &Actor<'_>) -> Result<Control, ControlError> {
        let paused = to.issuance;
        let (state, changed) = self.record(coupon, Change::Paused(to), actor).await?;
        let control = state.control;
        // Also when nothing changed: a pause recorded while Redis was away
        // reaches it now.
        self.apply(coupon, control, state.ends_at, state.total_quantity).await?;
        if !changed {
            return Err(ControlError::AlreadyThere(if paused { Standing::Paused } else { Standing::Running }));
        }
        tracing::warn!(coupon = %coupon, paused, version = control.version, actor = actor.name, "promotion control changed");
        Ok(control)
    }

    /// Ends issuance of `coupon` now (by Redis's clock): from then on every
    /// replica answers `EXPIRED`; holders still redeem until `validUntil`.
    /// Returns the control's version and the new end.
    pub async fn end_now(
        &self,
        coupon: CouponId,
        actor: &Actor<'_>,
    ) -> Result<(Control, OffsetDateTime), ControlError> {
        let now = self.store.server_now().await?;
        let (state, changed) = self.record(coupon, Change::End(now), actor).await?;
        let (control, ends_at) = (state.control, state.ends_at);
        // Also when it had ended: an end recorded while Redis was away reaches it now.
        self.apply(coupon, control, ends_at, state.total_quantity).await?;
        if !changed {
            return Err(ControlError::AlreadyThere(Standing::Ended));
        }
        // The index says when the recovery retires the coupon.
        self.store.index(coupon, ends_at).await?;
        tracing::warn!(coupon = %coupon, %ends_at, version = control.version, actor = actor.name, "promotion ended now");
        Ok((control, ends_at))
    }

    /// The new state and its audit entry, in one transaction, with the
    /// coupon's end and total after it; `false` when the coupon already was
    /// where the change would take it (nothing recorded).
    async fn record(
        &self,
        coupon: CouponId,
        change: Change,
        actor: &Actor<'_>,
    ) -> Result<(Controlled, bool), ControlError> {
        let mut conn = self.pool.get().await.map_err(CatalogError::from)?;
        let recorded = conn
            .transaction::<_, ControlError, _>(async |conn| {
                let CouponRow { starts_at, ends_at, total_quantity, .. } = lock_coupon(conn, coupon).await?;
                let before = lock_control(conn, coupon).await?;
                let mut after = Control { version: before.version + 1, ..before };
                let unchanged = Controlled { control: before, ends_at, total_quantity };
                let entry = match change {
                    Change::Paused(to) if to.of(&before) => return Ok((unchanged, false)),
                    Change::Paused(to) => {
                        (after.paused, after.redemption_paused) = (to.issuance, to.redemption);
                        let row = coupon_control::table.find(coupon.get());
                        // A pause that adds redemption to a running one keeps when issuance stopped.
                        if before.paused != to.issuance {
                            let paused_at = to.issuance.then(OffsetDateTime::now_utc);
                            diesel::update(row)
                                .set(coupon_control::paused_at.eq(paused_at))
                                .execute(&mut *conn)
                                .await?;
                        }
                        diesel::update(row)
                            .set(coupon_control::redemption_paused.eq(to.redemption))
                            .execute(&mut *conn)
                            .await?;
                        Entry::new(actor, if to.issuance { "pause" } else { "resume" }, coupon, &before, &after)
                    }
                    Change::End(now) if ends_at <= now => return Ok((unchanged, false)),
                    Change::End(now) if starts_at > now => return Err(ControlError::NotStarted),
                    Change::End(now) => {
                        diesel::update(coupon_table::table.find(coupon.get()))
                            .set(coupon_table::ends_at.eq(now))
                            .execute(&mut *conn)
                            .await?;
                        Entry::new(actor, "end", coupon, &Period { ends_at }, &Period { ends_at: now })
                    }
                };
                diesel::update(coupon_control::table.find(coupon.get()))
                    .set(coupon_control::version.eq(after.version))
                    .execute(&mut *conn)
                    .await?;
                entry.insert(conn).await?;
                let ends_at = if let Change::End(now) = change { now } else { ends_at };
                Ok((Controlled { control: after, ends_at, total_quantity }, true))
            })
            .await?;
        Ok(recorded)
    }

    /// Applies a version to Redis. A sharded coupon's first shard carries its
    /// stock change (after gathering from the others the units a lower total
    /// takes away), and decides the outcome; the others follow it.
    async fn apply(
        &self,
        coupon: CouponId,
        control: Control,
        ends_at: OffsetDateTime,
        total: i32,
    ) -> Result<InRedis, RedisUnavailable> {
        let first = self.store.keys(coupon);
        let (shards, held_total): (Option<u16>, Option<i64>) =
            self.store.redis().query(redis::cmd("HMGET").arg(&first.meta).arg("shards").arg("total")).await?;
        let shards = shards.unwrap_or(1);
        let lowered_by = held_total.map_or(0, |held| held - i64::from(total));
        if shards > 1 && lowered_by > 0 {
            self.gather(coupon, shards, lowered_by).await?;
        }
        let outcome = self.apply_to(CouponShard::first(coupon), control, ends_at, total, true).await?;
        if shards > 1 && matches!(outcome, InRedis::Applied | InRedis::Stale) {
            for shard in CouponShard::all(coupon, shards).skip(1) {
                self.apply_to(shard, control, ends_at, total, false).await?;
            }
        }
        Ok(outcome)
    }

    /// Moves up to `units` into the first shard from the others.
    async fn gather(&self, coupon: CouponId, shards: u16, units: i64) -> Result<(), RedisUnavailable> {
        let mut wanted = units - self.store.shard_stock(CouponShard::first(coupon)).await?;
        for donor in 1..shards {
            if wanted <= 0 {
                break;
            }
            wanted -= self.refill.transfer(coupon, donor, 0, wanted).await?;
        }
        Ok(())
    }

    async fn apply_to(
        &self,
        shard: CouponShard,
        control: Control,
        ends_at: OffsetDateTime,
        total: i32,
        carries_stock: bool,
    ) -> Result<InRedis, RedisUnavailable> {
        let keys = self.store.shard_keys(shard);
        let mut apply = self.control.key(&keys.meta);
        apply
            .key(&keys.stock)
            .arg(control.version)
            .arg(u8::from(control.paused))
            .arg(unix_ms(ends_at))
            .arg(total)
            .arg(u8::from(carries_stock));
        let redis = self.store.redis();
        let link = redis.link().await?;
        let applied = apply.invoke_async::<String>(&mut link.conn.clone()).await;
        let applied = redis.observe(&link, applied)?;
        if !self.replicas.acknowledged(link.generation).await {
            return Err(RedisUnavailable::NotReplicated);
        }
        match applied.as_str() {
            "APPLIED" => Ok(InRedis::Applied),
            "STALE" => Ok(InRedis::Stale),
            "MISSING" => Ok(InRedis::Missing),
            "FENCED" => Ok(InRedis::Fenced),
            "BELOW_ISSUED" => Ok(InRedis::BelowIssued),
            _ => Err(RedisUnavailable::Reply(redis::Value::SimpleString(applied))),
        }
    }
}

/// What `control.lua` did with a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InRedis {
    Applied,
    Stale,
    Missing,
    Fenced,
    BelowIssued,
}

/// The coupon's row, locked until commit: every control and change of a
/// coupon takes it first.
async fn lock_coupon(conn: &mut AsyncPgConnection, coupon: CouponId) -> Result<CouponRow, ControlError> {
    coupon_table::table
        .find(coupon.get())
        .select(CouponRow::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()?
        .ok_or(ControlError::NotFound)
}

/// The coupon's controls (made at version 0 if it has none), locked until
/// commit: one change at a time per coupon.
async fn lock_control(conn: &mut AsyncPgConnection, coupon: CouponId) -> Result<Control, ControlError> {
    diesel::insert_into(coupon_control::table)
        .values((coupon_control::coupon_id.eq(coupon.get()), coupon_control::version.eq(0_i64)))
        .on_conflict_do_nothing()
        .execute(&mut *conn)
        .await?;
    let (paused_at, version, redemption_paused): (Option<OffsetDateTime>, i64, bool) = coupon_control::table
        .find(coupon.get())
        .select((coupon_control::paused_at, coupon_control::version, coupon_control::redemption_paused))
        .for_update()
        .first(conn)
        .await?;
    Ok(Control { version, paused: paused_at.is_some(), redemption_paused })
}
