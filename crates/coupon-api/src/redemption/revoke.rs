//! Support staff revoke a customer's unused coupon (fraud, a grant made in
//! error): the holding becomes `REVOKED` and can no longer be redeemed, and
//! `inside.coupon.revoked` goes out through the outbox, in one transaction
//! with the audit entry. The customer stays a holder: a new issue request
//! answers `ALREADY_ISSUED`.
//!
//! With `returnToStock`, the unit becomes issuable again. PostgreSQL first:
//! the row says its stock returned and the coupon's remaining quantity grows
//! by one, in the same transaction. Redis after the commit (`return.lua`,
//! once per holder): its stock grows by one and its returned set names the
//! holder, so a rebuild counts it too. Redis missing the return (away, or the
//! coupon being rebuilt) sells one unit less until the operator sends the
//! revoke again, which tells Redis again: undersold, never oversold.
//!
//! A coupon Redis issued that coupon-writer has not written yet is written
//! first, as a redeem does; the writer's later insert of the same event then
//! does nothing, so the revocation stands.

use coupon_domain::{UsageKind, UseRejection};
use coupon_infra::db::schema::{coupon, customer_coupon};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use serde::Serialize;
use time::OffsetDateTime;

use super::{coupon_row, holding_row, locked_holding, record_event, Event, Held, RedemptionError, Redemptions};
use crate::audit::{Actor, Entry};
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
    #[serde(with = "time::serde::rfc3339")]
    pub revoked_at: OffsetDateTime,
}

impl Redemptions {
    /// Revokes `held` for `reason`, its unit back into stock if
    /// `return_to_stock`. A used coupon: `ALREADY_USED`; one revoked before:
    /// `ALREADY_REVOKED` (a unit it returned is given to Redis again); none
    /// held: `NOT_HELD`.
    pub async fn revoke(
        &self,
        held: Held,
        reason: &str,
        return_to_stock: bool,
        actor: &Actor<'_>,
    ) -> Result<Revocation, RedemptionError> {
        let revocation = match self.record(held, reason, return_to_stock, actor).await? {
            Ok(revocation) => revocation,
            Err(returned) => {
                // Also when Redis did not get the return the first time.
                if returned {
                    self.give_back(held).await?;
                }
                return Err(RedemptionError::Rejected(UseRejection::AlreadyRevoked));
            }
        };
        self.committed.notify_one();
        tracing::warn!(coupon = %held.coupon, customer = %held.customer, return_to_stock, actor = actor.name, "held coupon revoked");
        if return_to_stock {
            self.give_back(held).await?;
        }
        Ok(revocation)
    }

    /// The revocation, its event and its audit entry, in one transaction;
    /// `Err(returned)` when the holding was revoked before (whether its unit
    /// went back into stock), and nothing was written.
    async fn record(
        &self,
        held: Held,
        reason: &str,
        return_to_stock: bool,
        actor: &Actor<'_>,
    ) -> Result<Result<Revocation, bool>, RedemptionError> {
        let now = OffsetDateTime::now_utc();
        let mut conn = self.pool.get().await?;
        conn.transaction::<_, RedemptionError, _>(async |conn| {
            let coupon = coupon_row(conn, held.coupon).await?;
            let holding = match locked_holding(conn, held).await? {
                Some(holding) => holding,
                None => self.write_issued(conn, held, &coupon).await?,
            };
            if holding.is_revoked() {
                return Ok(Err(holding.stock_returned));
            }
            if holding.used_by().is_some() {
                return Err(RedemptionError::Rejected(UseRejection::AlreadyUsed));
            }
            diesel::update(holding_row(held))
                .set((
                    customer_coupon::status.eq("REVOKED"),
                    customer_coupon::revoked_at.eq(now),
                    customer_coupon::revoke_reason.eq(reason),
                    customer_coupon::stock_returned.eq(return_to_stock),
                ))
                .execute(&mut *conn)
                .await?;
            if return_to_stock {
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
                returned_to_stock: return_to_stock,
                revoked_at: now,
            };
            let before = serde_json::json!({ "customerId": held.customer.get(), "status": "AVAILABLE" });
            Entry::new(actor, "revoke", held.coupon, &before, &revocation).insert(conn).await?;
            Ok(Ok(revocation))
        })
        .await
    }

    /// Tells Redis that `held`'s unit went back into stock (once, however
    /// often it is told). `ReturnPending` when it could not.
    async fn give_back(&self, held: Held) -> Result<(), RedemptionError> {
        let keys = self.store.keys(held.coupon);
        let mut give_back = self.give_back.key(&keys.meta);
        give_back.key(&keys.stock).key(&keys.returned).arg(held.customer.get());
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
