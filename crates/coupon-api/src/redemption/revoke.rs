//! Support staff revoke a customer's unused coupon (fraud, a grant made in
//! error): the holding becomes `REVOKED` and can no longer be redeemed, and
//! `inside.coupon.revoked` goes out through the outbox, in one transaction
//! with the audit entry. The customer stays a holder: a new issue request
//! answers `ALREADY_ISSUED`.
//!
//! With `returnToStock`, the unit becomes issuable again. With
//! `allowReissue` too, the customer may get the coupon again: its row stays,
//! `REVOKED` and reissuable, the revocation is kept in `revoked_issuance`,
//! and the customer's next issuance (numbered one higher) replaces the row,
//! while a late copy of the revoked issuance's event changes nothing.
//! PostgreSQL first:
//! the row says its stock returned and the coupon's remaining quantity grows
//! by one, in the same transaction. Redis after the commit (`return.lua`,
//! once per holder): its stock grows by one and its returned set names the
//! holder (or, for a reissue, the holder leaves its issued set), so a rebuild
//! counts it too. Redis missing the return (away, or the
//! coupon being rebuilt) sells one unit less until the operator sends the
//! revoke again, which tells Redis again: undersold, never oversold.
//!
//! A coupon Redis issued that coupon-writer has not written yet is written
//! first, as a redeem does; the writer's later insert of the same event then
//! does nothing, so the revocation stands.

use coupon_domain::{UsageKind, UseRejection};
use coupon_infra::db::schema::{coupon, customer_coupon, revoked_issuance};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use time::OffsetDateTime;

use super::{coupon_row, holding_row, record_event, Event, Held, RedemptionError, Redemptions};
use crate::audit::{Actor, Entry};
use crate::catalog::Holding;
use crate::store::RedisUnavailable;

/// A revoked holding.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Revocation {
    pub coupon_id: i64,
    pub customer_id: i64,
    pub reason: String,
    /// Its unit is issuable again.
    pub returned_to_stock: bool,
    /// The customer may get the coupon again.
    pub reissue_allowed: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub revoked_at: OffsetDateTime,
}

/// What becomes of a revoked holding's unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// It stays issued: nobody gets it.
    Kept,
    /// It goes back into stock, for other customers.
    Returned,
    /// It goes back into stock, and this customer may get the coupon again.
    Reissuable,
}

impl Unit {
    fn returned(self) -> bool {
        self != Unit::Kept
    }
}

impl Redemptions {
    /// Revokes `held` for `reason`, its unit as `unit` says. A used coupon:
    /// `ALREADY_USED`; one revoked before: `ALREADY_REVOKED` (a unit it
    /// returned is given to Redis again); none held: `NOT_HELD`.
    pub async fn revoke(
        &self,
        held: Held,
        reason: &str,
        unit: Unit,
        actor: &Actor<'_>,
    ) -> Result<Revocation, RedemptionError> {
        let (revocation, holding) = match self.record(held, reason, unit, actor).await? {
            Ok(revoked) => revoked,
            Err(before) => {
                // Also when Redis did not get the return the first time.
                if before.stock_returned {
                    self.give_back(held, &before).await?;
                }
                return Err(RedemptionError::Rejected(UseRejection::AlreadyRevoked));
            }
        };
        self.committed.notify_one();
        tracing::warn!(coupon = %held.coupon, customer = %held.customer, ?unit, actor = actor.name, "held coupon revoked");
        if unit.returned() {
            self.give_back(held, &holding).await?;
        }
        Ok(revocation)
    }

    /// The revocation, its event and its audit entry, in one transaction,
    /// with the holding as revoked; `Err(holding)` when it was revoked before,
    /// and nothing was written.
    async fn record(
        &self,
        held: Held,
        reason: &str,
        unit: Unit,
        actor: &Actor<'_>,
    ) -> Result<Result<(Revocation, Holding), Holding>, RedemptionError> {
        let now = OffsetDateTime::now_utc();
        let mut conn = self.pool.get().await?;
        conn.transaction::<_, RedemptionError, _>(async |conn| {
            let coupon = coupon_row(conn, held.coupon).await?;
            let holding = self.holding(conn, held, &coupon).await?;
            if holding.is_revoked() {
                return Ok(Err(holding));
            }
            if holding.used_by().is_some() {
                return Err(RedemptionError::Rejected(UseRejection::AlreadyUsed));
            }
            let reissuable = unit == Unit::Reissuable;
            diesel::update(holding_row(held))
                .set((
                    customer_coupon::status.eq("REVOKED"),
                    customer_coupon::revoked_at.eq(now),
                    customer_coupon::revoke_reason.eq(reason),
                    customer_coupon::stock_returned.eq(unit.returned()),
                    customer_coupon::reissuable.eq(reissuable),
                ))
                .execute(&mut *conn)
                .await?;
            if reissuable {
                keep_revocation(conn, held, &holding, reason, now).await?;
            }
            if unit.returned() {
                diesel::update(coupon::table.find(held.coupon.get()))
                    .set(coupon::remaining_quantity.eq(coupon::remaining_quantity + 1))
                    .execute(&mut *conn)
                    .await?;
            }
            let event =
                Event { kind: UsageKind::Revoked, held, order_id: None, discount_amount: 0, reason: Some(reason) };
            record_event(conn, event, now).await?;
            let revocation = Revocation {
                coupon_id: held.coupon.get(),
                customer_id: held.customer.get(),
                reason: reason.to_string(),
                returned_to_stock: unit.returned(),
                reissue_allowed: reissuable,
                revoked_at: now,
            };
            let before = serde_json::json!({ "customerId": held.customer.get(), "status": "AVAILABLE" });
            Entry::new(actor, "revoke", held.coupon, &before, &revocation).insert(conn).await?;
            Ok(Ok((revocation, Holding { stock_returned: unit.returned(), reissuable, ..holding })))
        })
        .await
    }

    /// Tells Redis that `revoked`'s unit went back into stock (once, however
    /// often it is told), and for a reissuable one that the customer may get
    /// the coupon again. `ReturnPending` when it could not.
    async fn give_back(&self, held: Held, revoked: &Holding) -> Result<(), RedemptionError> {
        let home = self.store.home(held.coupon, held.customer).await.map_err(|err| {
            tracing::warn!(error = %err, coupon = %held.coupon, "the returned unit has not reached Redis");
            RedemptionError::ReturnPending
        })?;
        let keys = self.store.shard_keys(home);
        let mut give_back = self.give_back.key(&keys.meta);
        give_back.key(&keys.stock).key(&keys.returned).key(&keys.issued).key(&keys.reissued).arg(held.customer.get());
        if revoked.reissuable {
            give_back.arg(revoked.issuance);
        }
        let answer: String = self.store.redis().invoke(&give_back).await.map_err(|err| {
            tracing::warn!(error = %err, coupon = %held.coupon, "the returned unit has not reached Redis");
            RedemptionError::ReturnPending
        })?;
        match answer.as_str() {
            // MISSING: no state in Redis; a rebuild takes the return from PostgreSQL.
            "APPLIED" | "ALREADY" | "MISSING" => Ok(()),
            // Being rebuilt from a read that may predate the return.
            "FENCED" => Err(RedemptionError::ReturnPending),
            _ => Err(RedisUnavailable::Reply(redis::Value::SimpleString(answer)).into()),
        }
    }
}

/// Keeps a reissuable revocation in `revoked_issuance`: the customer's next
/// issuance replaces its row.
async fn keep_revocation(
    conn: &mut AsyncPgConnection,
    held: Held,
    revoked: &Holding,
    reason: &str,
    at: OffsetDateTime,
) -> Result<(), RedemptionError> {
    diesel::insert_into(revoked_issuance::table)
        .values((
            revoked_issuance::coupon_id.eq(held.coupon.get()),
            revoked_issuance::customer_id.eq(held.customer.get()),
            revoked_issuance::issuance.eq(revoked.issuance),
            revoked_issuance::issued_at.eq(revoked.issued_at),
            revoked_issuance::revoked_at.eq(at),
            revoked_issuance::reason.eq(reason),
        ))
        .execute(conn)
        .await?;
    Ok(())
}
