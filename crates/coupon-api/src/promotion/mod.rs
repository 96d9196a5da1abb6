//! An operator's controls of a live promotion: pause and resume, each with
//! its record in the audit (`audit`).
//!
//! PostgreSQL decides and records, in one transaction: the control's new
//! state and version (`coupon_control`) and the audit entry. Redis follows
//! (`control.lua`): the issue script answers `PAUSED` from the moment it has
//! the flag, on every API replica alike. Each change carries a version, so a
//! rebuild from PostgreSQL that read the state before a change cannot undo it
//! (`rebuild.lua` keeps the newer one). A pause that PostgreSQL recorded but
//! Redis did not get (Redis away) answers 503; pausing again applies it to
//! Redis and answers `409 ALREADY_PAUSED`, so the operator's retry is what
//! makes it take effect.

pub mod audit;

use std::sync::Arc;

use coupon_domain::CouponId;
use coupon_infra::db::schema::{coupon as coupon_table, coupon_control};
use coupon_infra::db::PgPool;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use redis::Script;
use time::OffsetDateTime;

use crate::catalog::CatalogError;
use crate::store::{Control, CouponStore, RedisUnavailable};
use audit::Entry;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("coupon not found")]
    NotFound,
    /// The coupon already is where the operator asked it to go; Redis was told again.
    #[error("the promotion is already {0}")]
    AlreadyThere(&'static str),
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

/// Who asks, for the audit.
pub struct Actor<'a> {
    pub name: &'a str,
    pub request_id: &'a str,
}

pub struct Controls {
    pool: PgPool,
    store: Arc<CouponStore>,
    control: Script,
}

impl Controls {
    pub fn new(pool: PgPool, store: Arc<CouponStore>) -> Self {
        Self { pool, store, control: Script::new(include_str!("control.lua")) }
    }

    /// Stops issuance of `coupon` on every replica; redemption goes on.
    pub async fn pause(&self, coupon: CouponId, actor: &Actor<'_>) -> Result<Control, ControlError> {
        self.set_paused(coupon, true, actor).await
    }

    /// Lets issuance of `coupon` go on.
    pub async fn resume(&self, coupon: CouponId, actor: &Actor<'_>) -> Result<Control, ControlError> {
        self.set_paused(coupon, false, actor).await
    }

    async fn set_paused(&self, coupon: CouponId, paused: bool, actor: &Actor<'_>) -> Result<Control, ControlError> {
        let (control, changed) = self.record(coupon, paused, actor).await?;
        // Also when nothing changed: a pause recorded while Redis was away
        // reaches it now.
        self.apply(coupon, control).await?;
        if !changed {
            return Err(ControlError::AlreadyThere(if paused { "paused" } else { "running" }));
        }
        tracing::warn!(coupon = %coupon, paused, version = control.version, actor = actor.name, "promotion control changed");
        Ok(control)
    }

    /// The new state and its audit entry, in one transaction; `false` when
    /// the coupon already was there (nothing recorded).
    async fn record(&self, coupon: CouponId, paused: bool, actor: &Actor<'_>) -> Result<(Control, bool), ControlError> {
        let mut conn = self.pool.get().await.map_err(CatalogError::from)?;
        let recorded = conn
            .transaction::<_, ControlError, _>(async |conn| {
                let exists = diesel::select(diesel::dsl::exists(coupon_table::table.find(coupon.get())))
                    .get_result::<bool>(&mut *conn)
                    .await?;
                if !exists {
                    return Err(ControlError::NotFound);
                }
                // One change at a time per coupon: the row is locked until commit.
                diesel::insert_into(coupon_control::table)
                    .values((coupon_control::coupon_id.eq(coupon.get()), coupon_control::version.eq(0_i64)))
                    .on_conflict_do_nothing()
                    .execute(&mut *conn)
                    .await?;
                let (paused_at, version): (Option<OffsetDateTime>, i64) = coupon_control::table
                    .find(coupon.get())
                    .select((coupon_control::paused_at, coupon_control::version))
                    .for_update()
                    .first(&mut *conn)
                    .await?;
                let before = Control { version, paused: paused_at.is_some() };
                if before.paused == paused {
                    return Ok((before, false));
                }
                let after = Control { version: version + 1, paused };
                diesel::update(coupon_control::table.find(coupon.get()))
                    .set((
                        coupon_control::paused_at.eq(paused.then(OffsetDateTime::now_utc)),
                        coupon_control::version.eq(after.version),
                    ))
                    .execute(&mut *conn)
                    .await?;
                let action = if paused { "pause" } else { "resume" };
                Entry::new(actor, action, coupon, &before, &after).insert(conn).await?;
                Ok((after, true))
            })
            .await?;
        Ok(recorded)
    }

    /// The audit's entries after `after`, oldest first, of one coupon or all.
    pub async fn audit(
        &self,
        coupon: Option<CouponId>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<audit::Recorded>, CatalogError> {
        audit::list(&self.pool, coupon, after, limit).await
    }

    async fn apply(&self, coupon: CouponId, control: Control) -> Result<(), RedisUnavailable> {
        let mut apply = self.control.key(self.store.keys(coupon).meta);
        apply.arg(control.version).arg(u8::from(control.paused));
        let _: i64 = self.store.redis().invoke(&apply).await?;
        Ok(())
    }
}
