//! Changing a live coupon's terms: its stock, the end of its period, its name,
//! and its discount policy while nothing was issued.
//!
//! A change is one control version, recorded with its audit entry in one
//! PostgreSQL transaction under the coupon's row lock, which also holds
//! coupon-writer's batches for the coupon back. Redis hears of it in the
//! order that keeps the promises if the other step fails:
//! - a lower total goes to Redis first, inside the transaction: Redis alone
//!   knows how many units it issued, and refuses one below them
//!   (`BELOW_ISSUED`) before PostgreSQL commits anything. Should the commit
//!   fail after that, Redis sells less than PostgreSQL allows until the next
//!   change (same version) puts it right: undersold, never oversold;
//! - anything else goes to Redis after the commit, as pause does: a Redis
//!   that missed it holds the older, smaller stock until the operator sends
//!   the change again.
//!
//! PostgreSQL's `remaining_quantity` moves by the same difference as the
//! total. It stays at least the events Redis issued and coupon-writer has not
//! applied (Redis refused a total below its issued units), so the writer
//! grants every one of them and records none as sold out.

use coupon_domain::{CouponId, Discount};
use coupon_infra::db::schema::{coupon as coupon_table, coupon_control};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use serde::Serialize;
use time::OffsetDateTime;

use super::{lock_control, lock_coupon, ControlError, Controls, InRedis, Standing};
use crate::audit::{Actor, Entry};
use crate::catalog::{CatalogError, CouponRow, DiscountColumns};
use crate::store::Control;

/// What an operator asks to change; `None` keeps the current value.
#[derive(Debug, Clone, Default)]
pub struct Amendment {
    pub name: Option<String>,
    pub total_quantity: Option<i32>,
    pub ends_at: Option<OffsetDateTime>,
    pub discount: Option<Discount>,
}

/// A coupon's terms an operator may change, as the audit records them.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
struct Terms {
    name: String,
    total_quantity: i32,
    #[serde(with = "time::serde::rfc3339")]
    ends_at: OffsetDateTime,
    discount: Option<Discount>,
}

impl Terms {
    fn of(row: &CouponRow) -> Self {
        Self {
            name: row.name.clone(),
            total_quantity: row.total_quantity,
            ends_at: row.ends_at,
            discount: row.discount.policy(),
        }
    }

    fn amended(&self, amendment: &Amendment) -> Self {
        Self {
            name: amendment.name.clone().unwrap_or_else(|| self.name.clone()),
            total_quantity: amendment.total_quantity.unwrap_or(self.total_quantity),
            ends_at: amendment.ends_at.unwrap_or(self.ends_at),
            discount: amendment.discount.or(self.discount),
        }
    }
}

impl Controls {
    /// Changes `coupon`'s terms; returns the coupon as changed and its new
    /// control version.
    pub async fn amend(
        &self,
        coupon: CouponId,
        amendment: Amendment,
        actor: &Actor<'_>,
    ) -> Result<(CouponRow, Control), ControlError> {
        let now = self.store.server_now().await?;
        let mut conn = self.pool.get().await.map_err(CatalogError::from)?;
        let (row, control, lowered) = conn
            .transaction::<_, ControlError, _>(async |conn| {
                let current = lock_coupon(conn, coupon).await?;
                let before = Terms::of(&current);
                let after = before.amended(&amendment);
                self.check(&current, &after, now).await?;
                let version = lock_control(conn, coupon).await?;
                let control = Control { version: version.version + 1, ..version };
                let change = after.total_quantity - before.total_quantity;
                let row: CouponRow = diesel::update(coupon_table::table.find(coupon.get()))
                    .set((
                        coupon_table::name.eq(&after.name),
                        coupon_table::total_quantity.eq(after.total_quantity),
                        coupon_table::remaining_quantity.eq(coupon_table::remaining_quantity + change),
                        coupon_table::ends_at.eq(after.ends_at),
                        DiscountColumns::from(after.discount),
                    ))
                    .returning(CouponRow::as_returning())
                    .get_result(&mut *conn)
                    .await?;
                diesel::update(coupon_control::table.find(coupon.get()))
                    .set(coupon_control::version.eq(control.version))
                    .execute(&mut *conn)
                    .await?;
                Entry::new(actor, "change", coupon, &before, &after).insert(conn).await?;
                let lowered = change < 0;
                if lowered {
                    self.apply_lower(coupon, control, &row).await?;
                }
                Ok((row, control, lowered))
            })
            .await?;
        if !lowered {
            self.apply(coupon, control, row.ends_at, row.total_quantity).await?;
        }
        // The index says when the recovery retires the coupon.
        self.store.index(coupon, row.ends_at).await?;
        tracing::warn!(coupon = %coupon, version = control.version, actor = actor.name, "promotion changed");
        Ok((row, control))
    }

    /// Refuses a change the coupon cannot take; `now` is Redis's clock.
    async fn check(&self, current: &CouponRow, after: &Terms, now: OffsetDateTime) -> Result<(), ControlError> {
        if current.ends_at <= now {
            return Err(ControlError::AlreadyThere(Standing::Ended));
        }
        if after.ends_at != current.ends_at {
            if after.ends_at <= now {
                return Err(ControlError::InvalidPeriod("endsAt must be in the future; POST …/end ends it now"));
            }
            if after.ends_at <= current.starts_at {
                return Err(ControlError::InvalidPeriod("endsAt must be after startsAt"));
            }
            if current.valid_until.is_some_and(|until| until < after.ends_at) {
                return Err(ControlError::InvalidPeriod("endsAt must not be after validUntil"));
            }
        }
        let persisted = current.total_quantity - current.remaining_quantity;
        if after.total_quantity < persisted {
            return Err(ControlError::BelowIssued);
        }
        if after.discount != current.discount.policy() {
            // Every holder keeps the terms it was issued with.
            let stock = self.store.stock(current.id).await?.ok_or(ControlError::Rebuilding)?;
            if persisted > 0 || stock < i64::from(current.total_quantity) {
                return Err(ControlError::PolicyLocked);
            }
        }
        Ok(())
    }

    /// A lower total in Redis, before PostgreSQL commits it.
    async fn apply_lower(&self, coupon: CouponId, control: Control, row: &CouponRow) -> Result<(), ControlError> {
        match self.apply(coupon, control, row.ends_at, row.total_quantity).await? {
            InRedis::Applied | InRedis::Stale => Ok(()),
            InRedis::BelowIssued => Err(ControlError::BelowIssued),
            // Who holds the coupon is not known until it is rebuilt.
            InRedis::Missing | InRedis::Fenced => Err(ControlError::Rebuilding),
        }
    }
}
